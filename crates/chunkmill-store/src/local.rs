//! A local directory. Reads and listings go straight to zarrs' filesystem store; every write
//! lands in a uniquely named temporary file beside its destination and is renamed into place, so
//! a killed process never leaves a torn value under a real key.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use zarrs_filesystem::FilesystemStore;
use zarrs_storage::byte_range::ByteRangeIterator;
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// Suffix of in-flight temporary files; such files are never read as values.
pub(crate) const TEMP_MARK: &str = ".chunkmill-partial";

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: FilesystemStore,
}

impl LocalStore {
    pub(crate) fn new(path: &str) -> Result<Self, String> {
        let inner = FilesystemStore::new(path).map_err(|e| e.to_string())?;
        Ok(Self { inner })
    }
}

impl ReadableStorageTraits for LocalStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.inner.get_partial_many(key, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl ListableStorageTraits for LocalStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .filter(|k| !k.as_str().ends_with(TEMP_MARK))
            .collect())
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        Ok(self
            .inner
            .list_prefix(prefix)?
            .into_iter()
            .filter(|k| !k.as_str().ends_with(TEMP_MARK))
            .collect())
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(prefix)
    }
}

impl WritableStorageTraits for LocalStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.inner.key_to_fspath(key);
        let dir = path
            .parent()
            .ok_or_else(|| StorageError::Other(format!("{key}: no parent directory")))?;
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            ".{name}.{}.{}{TEMP_MARK}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&value)?;
            std::fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        Ok(result?)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        // Partial writes are never atomic; assemble the whole value and write it once.
        let mut value = self.inner.get(key)?.map(|b| b.to_vec()).unwrap_or_default();
        for (offset, bytes) in offset_values {
            let offset = usize::try_from(offset).map_err(|e| StorageError::Other(e.to_string()))?;
            if value.len() < offset + bytes.len() {
                value.resize(offset + bytes.len(), 0);
            }
            value[offset..offset + bytes.len()].copy_from_slice(&bytes);
        }
        self.set(key, value.into())
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}
