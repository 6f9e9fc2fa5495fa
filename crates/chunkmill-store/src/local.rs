//! A local directory. Reads and listings go straight to zarrs' filesystem store; every write
//! lands in a uniquely named temporary file beside its destination and is renamed into place, so
//! a killed process never leaves a torn value under a real key. Values and their directory
//! entries are synced in batches ([`sync_pending`]): before every task marker and before a job
//! reports success, so a marker still means "done" after a power loss while a task's writeback
//! overlaps its encoding instead of each value waiting for its own (docs/architecture.md,
//! "Durability"). A scratch store's values (intermediates) are the exception: never synced,
//! checked when their stage is resumed instead ([`Mode::Scratch`], [`Mode::CachedScratch`]).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use zarrs_filesystem::FilesystemStore;
use zarrs_storage::byte_range::ByteRangeIterator;
use zarrs_storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// Suffix of in-flight temporary files; such files are never read as values.
pub(crate) const TEMP_MARK: &str = crate::guard::PARTIAL_SUFFIX;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Values renamed into place (and the directories that name them) not yet synced, from every
/// thread of this process. Paths, not open files: a task may write thousands of values.
static PENDING: std::sync::Mutex<Pending> = std::sync::Mutex::new(Pending {
    files: Vec::new(),
    dirs: std::collections::BTreeSet::new(),
});

struct Pending {
    files: Vec<std::path::PathBuf>,
    dirs: std::collections::BTreeSet<std::path::PathBuf>,
}

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    // A panic while holding the lock leaves only a list of paths: still usable.
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes every value written to a local store by this process so far durable: each file's
/// data, then the directories naming them. Called before a task marker is written and before
/// a job reports success (or swaps a staged target in), so nothing that says "done" outlives
/// the values after a power loss. A value erased since is skipped.
///
/// # Errors
/// The first file or directory that cannot be synced.
pub fn sync_pending() -> std::io::Result<()> {
    let (files, dirs) = {
        let mut p = pending();
        (std::mem::take(&mut p.files), std::mem::take(&mut p.dirs))
    };
    let result = (|| {
        for file in &files {
            match std::fs::File::open(file) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for dir in &dirs {
            match sync_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // Not synced: kept for the next call, which reports the error again.
        let mut p = pending();
        p.files.extend(files);
        p.dirs.extend(dirs);
    }
    result
}

/// How a local store moves values between memory and its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Through the page cache, every value synced before the next task marker.
    Buffered,
    /// Scratch data written once and read once (intermediates) that may not fit in the
    /// machine's free memory: whole values read and written with O_DIRECT, so a job whose
    /// intermediates outgrow the page cache streams them through the device at its speed
    /// instead of thrashing the cache and throttling every writer of the machine. Not synced:
    /// a lost intermediate is found missing or short when its stage is resumed, and its task
    /// redone.
    Scratch,
    /// Scratch data that fits in free memory: written and read through the page cache and
    /// never synced, so a piece removed before the kernel's writeback reaches it (the job
    /// removes each once its readers are done) never goes to the device at all. What a lost
    /// piece costs is as for [`Mode::Scratch`].
    CachedScratch,
    /// Scratch data split between the two: the values whose key hashes below
    /// `direct_percent` of 100 as [`Mode::Scratch`], the others as [`Mode::CachedScratch`]
    /// (the key decides, so a value is read the way it was written, in any process).
    SplitScratch { direct_percent: u8 },
    /// An output written once (a target's chunks): values of [`DIRECT_WRITE_MIN`] bytes or more
    /// written with O_DIRECT, still synced before the next task marker. A buffered write costs
    /// the writer a copy into the page cache and the kernel a writeback later: a third of a
    /// rechunk's CPU time went to it. Measured again against buffered writes whose writeback
    /// starts at once (`sync_file_range`) and is waited for before the marker: 3 CPU-s more
    /// system time on the 2.27 GB benchmark (docs/benchmarks.md, "Intermediates through the
    /// page cache").
    Output,
}

/// The smallest value an [`Mode::Output`] store writes with O_DIRECT: below it, metadata and
/// tiny chunks, a direct write's padding to a page and its wait for the device cost more than
/// the copy it saves.
const DIRECT_WRITE_MIN: usize = 256 << 10;

impl Mode {
    /// Whether the scratch value at `key` moves around the page cache.
    fn direct_scratch(self, key: &StoreKey) -> bool {
        match self {
            Mode::Scratch => true,
            Mode::SplitScratch { direct_percent } => {
                // FNV-1a: stable across processes and runs (std's hasher is seeded).
                let hash = key
                    .as_str()
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                    });
                hash % 100 < u64::from(direct_percent)
            }
            _ => false,
        }
    }

    fn is_scratch(self) -> bool {
        matches!(
            self,
            Mode::Scratch | Mode::CachedScratch | Mode::SplitScratch { .. }
        )
    }
}

#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: FilesystemStore,
    mode: Mode,
}

/// The alignment a local store's direct writes and reads need of a caller's memory, file
/// offsets and lengths: a value starting on it moves with no copy through a bounce buffer.
pub const PAGE: usize = 4096;

/// Bytes moved per direct read or write: the size of each thread's bounce buffer.
const BOUNCE: usize = 1 << 20;

thread_local! {
    /// This thread's page-aligned buffer for direct I/O, reused by every value it reads or
    /// writes: values come and go in buffers the allocator does not align, and a fresh aligned
    /// copy of each cost a page fault and a page clear per page.
    static BOUNCE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's page-aligned bounce buffer of [`BOUNCE`] bytes.
fn with_bounce<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE_BUFFER.with(|cell| {
        let mut buffer = cell.borrow_mut();
        if buffer.len() < BOUNCE + PAGE {
            *buffer = vec![0u8; BOUNCE + PAGE];
        }
        let offset = buffer.as_ptr().align_offset(PAGE);
        f(&mut buffer[offset..offset + BOUNCE])
    })
}

#[cfg(target_os = "linux")]
fn open_direct(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_DIRECT)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    options
}

impl LocalStore {
    pub(crate) fn new(path: &str, mode: Mode) -> Result<Self, String> {
        let inner = FilesystemStore::new(path).map_err(|e| e.to_string())?;
        Ok(Self { inner, mode })
    }

    /// Write `value` to `temp` with O_DIRECT, a page-aligned bounce buffer at a time; `Ok(None)`
    /// when the filesystem refuses it (the caller then writes it buffered).
    fn write_direct(
        temp: &std::path::Path,
        value: &[u8],
    ) -> std::io::Result<Option<std::fs::File>> {
        let file = open_direct(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .open(temp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A page-aligned value (a piece cut into an aligned buffer, or a view of an aligned
        // block) goes out from where it is, whole pages at once: only its last part page is
        // copied to be padded. The copy into the bounce buffer was a tenth of the memory
        // traffic of a convert whose intermediates went direct.
        let aligned = if value.as_ptr().align_offset(PAGE) == 0 {
            value.len() / PAGE * PAGE
        } else {
            0
        };
        match file.write_all(&value[..aligned]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        }
        let written = with_bounce(|bounce| {
            for part in value[aligned..].chunks(BOUNCE) {
                bounce[..part.len()].copy_from_slice(part);
                // The last part goes out padded to a whole page, cut off again below.
                let padded = part.len().next_multiple_of(PAGE);
                bounce[part.len()..padded].fill(0);
                file.write_all(&bounce[..padded])?;
            }
            Ok::<(), std::io::Error>(())
        });
        match written {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        }
        file.set_len(value.len() as u64)?;
        Ok(Some(file))
    }

    /// Reads the value at `key` into `dest` when it has exactly `dest.len()` bytes, with
    /// O_DIRECT in a scratch store: no buffer of its own, no copy through the page cache.
    pub(crate) fn read_exact_into(
        &self,
        key: &StoreKey,
        dest: &mut [u8],
    ) -> std::io::Result<ReadInto> {
        use std::io::Read;
        use std::os::unix::fs::FileExt;
        let path = self.inner.key_to_fspath(key);
        let direct = self.mode.direct_scratch(key);
        let opened = if direct {
            match open_direct(std::fs::OpenOptions::new().read(true)).open(&path) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => std::fs::File::open(&path),
                other => other,
            }
        } else {
            std::fs::File::open(&path)
        };
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if absent(&e) => return Ok(ReadInto::Missing),
            Err(e) => return Err(e),
        };
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Ok(ReadInto::Missing);
        }
        if metadata.len() != dest.len() as u64 {
            return Ok(ReadInto::Size(metadata.len()));
        }
        let short = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{}: short read", path.display()),
            )
        };
        if !direct {
            file.read_exact(dest).map_err(|_| short())?;
            return Ok(ReadInto::Read);
        }
        let mut filled = read_aligned_direct(&file, dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                short()
            } else {
                e
            }
        })?;
        with_bounce(|bounce| {
            while filled < dest.len() {
                // Whole pages each time: the last read stops at the end of the file.
                let want = (dest.len() - filled).min(BOUNCE).next_multiple_of(PAGE);
                let n = file.read_at(&mut bounce[..want], filled as u64)?;
                if n == 0 {
                    return Err(short());
                }
                let n = n.min(dest.len() - filled);
                dest[filled..filled + n].copy_from_slice(&bounce[..n]);
                filled += n;
            }
            Ok(ReadInto::Read)
        })
    }

    /// Read a whole value with O_DIRECT; `Ok(None)` when it does not exist.
    fn read_direct(&self, key: &StoreKey) -> std::io::Result<Option<Bytes>> {
        loop {
            let len = match std::fs::metadata(self.inner.key_to_fspath(key)) {
                Ok(m) if m.is_file() => usize::try_from(m.len()).map_err(std::io::Error::other)?,
                Ok(_) => return Ok(None),
                Err(e) if absent(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut value = vec![0u8; len];
            match self.read_exact_into(key, &mut value)? {
                ReadInto::Read => return Ok(Some(Bytes::from(value))),
                ReadInto::Missing => return Ok(None),
                // Replaced between the stat and the read: read the new value.
                ReadInto::Size(_) => {}
            }
        }
    }
}

/// Reads the whole pages of a file opened with O_DIRECT straight into `dest` when `dest` starts
/// on a boundary direct I/O accepts ([`DIRECT_MEMORY_ALIGN`]): a piece read into its place in a
/// page-aligned block then needs no bounce buffer and no copy. Returns the bytes read from the
/// file's start, a multiple of [`PAGE`] (0 when `dest` is not aligned, or the filesystem
/// refuses the read); the rest is the caller's to read.
fn read_aligned_direct(file: &std::fs::File, dest: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    if dest.as_ptr().align_offset(DIRECT_MEMORY_ALIGN) != 0 {
        return Ok(0);
    }
    let whole = dest.len() / PAGE * PAGE;
    let mut filled = 0;
    while filled < whole {
        let want = (whole - filled).min(DIRECT_READ_MAX);
        let n = match file.read_at(&mut dest[filled..filled + want], filled as u64) {
            Ok(n) => n,
            // Memory aligned to less than this device accepts: the bounce buffer reads it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && filled == 0 => return Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n % PAGE != 0 {
            // Short of a whole page before the file's stated end: it changed under us.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(filled)
}

/// The memory alignment a direct read into the caller's buffer asks for: the logical block
/// size of most devices (the kernel refuses less with EINVAL, and the bounce buffer serves).
const DIRECT_MEMORY_ALIGN: usize = 512;

/// Bytes asked of one direct read into the caller's buffer.
const DIRECT_READ_MAX: usize = 16 << 20;

/// What [`LocalStore::read_exact_into`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadInto {
    /// No value at the key.
    Missing,
    /// A value of this many bytes, not the length asked for; nothing was read.
    Size(u64),
    /// The value, read whole.
    Read,
}

/// Flushes a directory's entries (names created or renamed in it) to disk. Filesystems that
/// cannot sync a directory keep their entries as they do.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    // The parent of a relative `t.zarr` is the empty path: the current directory.
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    match std::fs::File::open(dir)?.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Creates `dir` and its missing ancestors, each durably named in its parent.
fn create_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.exists()) {
        created.push(d);
        missing = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in created {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// A value that is not there: no file, or a directory (the prefix of other keys).
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
    )
}

impl LocalStore {
    /// True when `key` names a directory: a prefix of other keys, not a value.
    fn is_prefix(&self, key: &StoreKey) -> bool {
        self.inner.key_to_fspath(key).is_dir()
    }
}

impl ReadableStorageTraits for LocalStore {
    fn get(&self, key: &StoreKey) -> Result<zarrs_storage::MaybeBytes, StorageError> {
        if self.mode.direct_scratch(key) {
            return Ok(self.read_direct(key)?);
        }
        match self.inner.get(key) {
            Err(_) if self.is_prefix(key) => Ok(None),
            other => other,
        }
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        match self.inner.get_partial_many(key, byte_ranges) {
            Err(_) if self.is_prefix(key) => Ok(None),
            other => other,
        }
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        match std::fs::metadata(self.inner.key_to_fspath(key)) {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
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

impl LocalStore {
    /// Writes `value` at `key` atomically (see the module's doc), from a borrowed buffer.
    pub(crate) fn write(&self, key: &StoreKey, value: &[u8]) -> Result<(), StorageError> {
        let path = self.inner.key_to_fspath(key);
        let dir = path
            .parent()
            .ok_or_else(|| StorageError::Other(format!("{key}: no parent directory")))?;
        create_dirs(dir)?;
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
            let direct = match self.mode {
                Mode::Output if value.len() >= DIRECT_WRITE_MIN => {
                    Self::write_direct(&temp, value)?
                }
                mode if mode.direct_scratch(key) => Self::write_direct(&temp, value)?,
                _ => None,
            };
            let file = match direct {
                Some(file) => file,
                None => {
                    let mut file = std::fs::File::create(&temp)?;
                    file.write_all(value)?;
                    file
                }
            };
            drop(file);
            std::fs::rename(&temp, &path)?;
            if self.mode.is_scratch() {
                // Not synced: see `Mode::Scratch`.
                return Ok(());
            }
            // Synced with the task's other values before its marker (see `sync_pending`).
            let mut p = pending();
            p.files.push(path.clone());
            p.dirs.insert(dir.to_path_buf());
            Ok::<(), std::io::Error>(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        Ok(result?)
    }
}

impl WritableStorageTraits for LocalStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.write(key, &value)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_sends_about_its_share_of_keys_around_the_page_cache() {
        let keys: Vec<StoreKey> = (0..2000)
            .filter_map(|i| StoreKey::new(format!("pieces/{}.{}.0", i / 40, i % 40)).ok())
            .collect();
        assert_eq!(keys.len(), 2000);
        let direct = |direct_percent| {
            keys.iter()
                .filter(|k| Mode::SplitScratch { direct_percent }.direct_scratch(k))
                .count()
        };
        assert_eq!(direct(0), 0);
        assert_eq!(direct(100), 2000);
        let half = direct(50);
        assert!((800..=1200).contains(&half), "{half} of 2000");
        // The same key goes the same way every time (a reader finds it as it was written).
        assert!(keys.iter().all(
            |k| Mode::SplitScratch { direct_percent: 50 }.direct_scratch(k)
                == Mode::SplitScratch { direct_percent: 50 }.direct_scratch(k)
        ));
    }
}
