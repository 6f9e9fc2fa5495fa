use std::sync::Arc;

use zarrs_storage::byte_range::ByteRange;
use zarrs_storage::{
    Bytes, ReadableStorageTraits, ReadableWritableListableStorage, StoreKey, StorePrefix,
};

pub use crate::local::ReadInto;
use crate::{local, memory, s3, StoreError};

/// How a local scratch store (intermediates) moves its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScratchIo {
    /// Around the page cache (O_DIRECT where the filesystem allows it): the device's speed,
    /// and no pressure on the machine's memory, for intermediates larger than it can hold.
    Direct,
    /// Through the page cache, never synced: intermediates that fit in free memory, and are
    /// removed before the kernel writes them back, never reach the device.
    PageCache,
    /// This many percent of the values (chosen by their key, the same in every process) around
    /// the page cache, the others through it: the device moves its share while the cores
    /// copy theirs.
    Split { direct_percent: u8 },
}

/// Which backend a store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A directory on a local filesystem.
    Local,
    /// An S3 bucket and prefix.
    S3,
    /// A named in-process memory store (tests and one-process pipelines).
    Memory,
}

/// A store opened from a URL: what zarrs reads and writes through, and our own keys.
#[derive(Clone)]
pub struct Store {
    url: String,
    kind: StoreKind,
    storage: ReadableWritableListableStorage,
    /// The same storage when it is a local directory: for reads into a caller's buffer and
    /// writes from a borrowed one, which zarrs' storage traits cannot express.
    local: Option<Arc<local::LocalStore>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Store {
    /// Open the store a URL names: a local path, `file:///path`, `s3://bucket/prefix` or
    /// `memory://name`. Nothing is created until something is written.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] for an unknown scheme or a malformed URL.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, local::Mode::Buffered)
    }

    /// Open a store for scratch data that is written once and read once (intermediates): a
    /// local one bypasses the page cache where the filesystem allows it, and does not sync
    /// its values (a lost one is found when its stage resumes, and redone). The same as
    /// [`Store::open_scratch_with`] and [`ScratchIo::Direct`].
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_scratch(url: &str) -> Result<Store, StoreError> {
        Self::open_scratch_with(url, ScratchIo::Direct)
    }

    /// Open a store for scratch data that is written once and read once, moved as `io` says
    /// (a local store's; the others have no page cache of ours). Its values are never synced
    /// either way: a lost one is found when its stage resumes, and redone.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_scratch_with(url: &str, io: ScratchIo) -> Result<Store, StoreError> {
        Self::open_with(
            url,
            match io {
                ScratchIo::Direct => local::Mode::Scratch,
                ScratchIo::PageCache => local::Mode::CachedScratch,
                ScratchIo::Split { direct_percent } => local::Mode::SplitScratch {
                    direct_percent: direct_percent.min(100),
                },
            },
        )
    }

    /// Open a store a job writes its output to, chunks written once each: a local one writes
    /// large values around the page cache where the filesystem allows it (still made durable
    /// before each task marker, as every store's values are).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_output(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, local::Mode::Output)
    }

    fn open_with(url: &str, mode: local::Mode) -> Result<Store, StoreError> {
        let url = match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
            None if url.len() > 1 => url.trim_end_matches('/').to_string(),
            None => url.to_string(),
        };
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.clone(),
            reason: reason.to_string(),
        };
        let mut local = None;
        let mut open_local = |path: &str| {
            let opened = Arc::new(local::LocalStore::new(path, mode).map_err(|e| bad(&e))?);
            local = Some(opened.clone());
            Ok::<ReadableWritableListableStorage, StoreError>(opened)
        };
        let (kind, storage): (StoreKind, ReadableWritableListableStorage) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket name"));
                }
                (
                    StoreKind::S3,
                    s3::open(bucket, prefix).map_err(|e| bad(&e))?,
                )
            } else if let Some(name) = url.strip_prefix("memory://") {
                (StoreKind::Memory, memory::open(name))
            } else if let Some(path) = url.strip_prefix("file://") {
                (StoreKind::Local, open_local(path)?)
            } else if url.contains("://") {
                return Err(bad(
                    "unsupported scheme; use a path, file://, s3:// or memory://",
                ));
            } else {
                let path = if url.is_empty() { "/" } else { url.as_str() };
                (StoreKind::Local, open_local(path)?)
            };
        Ok(Store {
            url,
            kind,
            storage,
            local,
        })
    }

    /// The URL the store was opened from (never holds credentials).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    #[must_use]
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The directory of a local store (`None` for object and memory stores).
    #[must_use]
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        if self.kind != StoreKind::Local {
            return None;
        }
        let path = self.url.strip_prefix("file://").unwrap_or(&self.url);
        Some(std::path::PathBuf::from(if path.is_empty() {
            "/"
        } else {
            path
        }))
    }

    /// The storage zarrs reads and writes through.
    #[must_use]
    pub fn storage(&self) -> ReadableWritableListableStorage {
        self.storage.clone()
    }

    fn key(&self, key: &str) -> Result<StoreKey, StoreError> {
        StoreKey::new(key).map_err(|e| StoreError::BadUrl {
            url: self.url.clone(),
            reason: format!("invalid key {key}: {e}"),
        })
    }

    fn backend(
        &self,
        operation: &'static str,
        key: &str,
    ) -> impl FnOnce(zarrs_storage::StorageError) -> StoreError + '_ {
        let key = key.to_string();
        move |source| StoreError::Backend {
            url: self.url.clone(),
            operation,
            key,
            source,
        }
    }

    /// The value at `key`, or `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let k = self.key(key)?;
        match self.storage.get(&k) {
            Ok(value) => Ok(value),
            // object_store asks for the byte range 0..0 of an empty object and fails on it.
            Err(e) if self.kind == StoreKind::S3 => match self.storage.size_key(&k) {
                Ok(Some(0)) => Ok(Some(Bytes::new())),
                _ => Err(self.backend("get", key)(e)),
            },
            Err(e) => Err(self.backend("get", key)(e)),
        }
    }

    /// The `len` bytes of the value at `key` starting at `offset`, or `None` when there is no
    /// value. Asking for bytes past the end of the value is an error of the backend.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails or the range passes the end.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Bytes>, StoreError> {
        let k = self.key(key)?;
        if len == 0 {
            // object_store refuses an empty range; an empty read only needs the key to exist.
            return Ok(self
                .storage
                .size_key(&k)
                .map_err(self.backend("stat", key))?
                .map(|_| Bytes::new()));
        }
        let bytes = self
            .storage
            .get_partial(&k, ByteRange::FromStart(offset, Some(len)))
            .map_err(self.backend("get_range", key))?;
        match bytes {
            Some(b) if b.len() as u64 != len => Err(self.backend("get_range", key)(
                zarrs_storage::StorageError::Other(format!(
                    "bytes {offset}..{} asked, {} returned (past the end of the value?)",
                    offset.saturating_add(len),
                    b.len()
                )),
            )),
            other => Ok(other),
        }
    }

    /// The size in bytes of the value at `key`, or `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let k = self.key(key)?;
        self.storage.size_key(&k).map_err(self.backend("stat", key))
    }

    /// The JSON value at `key`, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Json`] when the value is not JSON, [`StoreError::Backend`] otherwise.
    pub fn get_json(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                let hint = if bare_non_finite_at(&bytes, source.line(), source.column()) {
                    " (a bare NaN or Infinity, as Python's json writes a float('nan') attribute; \
                     JSON has no such value: write it as the string \"NaN\" or remove it)"
                } else {
                    ""
                };
                StoreError::Json {
                    url: self.url.clone(),
                    key: key.to_string(),
                    source,
                    hint,
                }
            }),
        }
    }

    /// Write `value` at `key` atomically.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.storage
            .set(&k, value.into())
            .map_err(self.backend("put", key))
    }

    /// Write `value` at `key` atomically from a borrowed buffer, which the caller may reuse:
    /// a local store writes it without a copy of its own.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn put_slice(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = self.key(key)?;
        match &self.local {
            Some(local) => local.write(&k, value),
            None => self.storage.set(&k, Bytes::copy_from_slice(value)),
        }
        .map_err(self.backend("put", key))
    }

    /// Reads the value at `key` into `dest` when it is exactly `dest.len()` bytes long: into
    /// the caller's buffer, with no buffer of its own where the store is local.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn read_exact_into(&self, key: &str, dest: &mut [u8]) -> Result<ReadInto, StoreError> {
        let k = self.key(key)?;
        if let Some(local) = &self.local {
            return local
                .read_exact_into(&k, dest)
                .map_err(|e| self.backend("get", key)(e.into()));
        }
        Ok(match self.get(key)? {
            None => ReadInto::Missing,
            Some(value) if value.len() != dest.len() => ReadInto::Size(value.len() as u64),
            Some(value) => {
                dest.copy_from_slice(&value);
                ReadInto::Read
            }
        })
    }

    /// Write a JSON document at `key`, pretty-printed.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let mut text = self.json_bytes(key, value, true)?;
        text.push(b'\n');
        self.put(key, text)
    }

    /// `value` as the JSON text to store at `key` (indented when `pretty`).
    ///
    /// # Errors
    /// [`StoreError::Json`] when `value` cannot be written as JSON (a map with non-text keys).
    pub fn json_bytes(
        &self,
        key: &str,
        value: &impl serde::Serialize,
        pretty: bool,
    ) -> Result<Vec<u8>, StoreError> {
        let text = if pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        };
        text.map_err(|source| StoreError::Json {
            url: self.url.clone(),
            key: key.to_string(),
            source,
            hint: "",
        })
    }

    /// True when `key` holds a value.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let k = self.key(key)?;
        Ok(self
            .storage
            .size_key(&k)
            .map_err(self.backend("stat", key))?
            .is_some())
    }

    /// Every key under `prefix` (`""` for all, otherwise ending in `/`).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = StorePrefix::new(prefix).map_err(|e| StoreError::BadUrl {
            url: self.url.clone(),
            reason: format!("invalid prefix {prefix}: {e}"),
        })?;
        let keys = self
            .storage
            .list_prefix(&p)
            .map_err(self.backend("list", prefix))?;
        Ok(keys.into_iter().map(|k| k.as_str().to_string()).collect())
    }

    /// True when the store holds nothing.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.list("")?.is_empty())
    }

    /// Remove every key under `prefix` (`""` for everything).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn erase_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let p = StorePrefix::new(prefix).map_err(|e| StoreError::BadUrl {
            url: self.url.clone(),
            reason: format!("invalid prefix {prefix}: {e}"),
        })?;
        self.storage
            .erase_prefix(&p)
            .map_err(self.backend("erase", prefix))
    }

    /// Remove one key (absent keys are fine).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub fn erase(&self, key: &str) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.storage.erase(&k).map_err(self.backend("erase", key))
    }

    /// A URL for `path` below this store.
    #[must_use]
    pub fn join(&self, path: &str) -> String {
        let path = path.trim_matches('/');
        if path.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, path)
        }
    }
}

/// Whether the JSON text at 1-based `line` and `column` (where serde_json stopped) is a bare
/// `NaN`, `Infinity` or `-Infinity`, which Python's `json` writes and the JSON standard lacks.
fn bare_non_finite_at(text: &[u8], line: usize, column: usize) -> bool {
    let Some(row) = text.split(|&b| b == b'\n').nth(line.saturating_sub(1)) else {
        return false;
    };
    // serde_json points at the first character it could not take, or just past it.
    [column.saturating_sub(1), column]
        .iter()
        .filter_map(|&at| row.get(at..))
        .any(|rest| {
            [b"NaN".as_slice(), b"Infinity", b"-Infinity"]
                .iter()
                .any(|t| rest.starts_with(t))
        })
}

#[cfg(test)]
mod json_hint_tests {
    use super::bare_non_finite_at;

    fn hinted(text: &str) -> bool {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(_) => false,
            Err(e) => bare_non_finite_at(text.as_bytes(), e.line(), e.column()),
        }
    }

    #[test]
    fn a_bare_nan_or_infinity_is_told_from_other_bad_json() {
        assert!(hinted("{\"attributes\": {\"valid_min\": NaN}}"));
        assert!(hinted("{\n  \"a\": 1,\n  \"b\": [1, Infinity]\n}"));
        assert!(hinted("{\"a\": -Infinity}"));
        assert!(!hinted("{\"a\": nan}"));
        assert!(!hinted("{\"a\": 1,}"));
        assert!(!hinted("{\"a\": \"NaN\"}"));
    }
}
