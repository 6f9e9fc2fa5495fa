//! Where the bytes come from: the [`RangeSource`] trait and its local implementations.
//!
//! Everything this crate reads goes through `RangeSource::read_range`, so any store that can
//! serve a byte range (a local file, memory, an object store) can be listed. Remote sources
//! should be wrapped in a [`BlockCache`](crate::BlockCache), which turns the many small reads
//! of HDF5 metadata into few aligned block reads.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Random-access, immutable bytes: read `len` bytes at `offset`, and the total size.
///
/// Implementations must be cheap to call from many threads at once (`&self`, `Send + Sync`)
/// and must return exactly `len` bytes or an error (a short read is an
/// [`io::ErrorKind::UnexpectedEof`] error).
pub trait RangeSource: Send + Sync + fmt::Debug {
    /// The path or URL, used in error messages.
    fn name(&self) -> &str;

    /// Total size in bytes.
    fn size(&self) -> u64;

    /// The `len` bytes at `offset`.
    ///
    /// # Errors
    /// An I/O error, or `UnexpectedEof` when `offset + len` passes the end.
    fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes>;
}

/// The error a source returns for a range past its end.
pub(crate) fn eof_error(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "bytes {offset}..{} are past the end of the source ({size} bytes)",
            offset.saturating_add(len as u64)
        ),
    )
}

/// Checks that `offset..offset+len` lies inside `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(eof_error(offset, len, size)),
    }
}

/// A local file read with positional reads (`pread`), no memory map and no lock: every
/// thread reads its own ranges.
#[derive(Debug)]
pub struct LocalFile {
    name: String,
    file: File,
    size: u64,
}

impl LocalFile {
    /// Opens `path` for reading.
    ///
    /// # Errors
    /// [`Error::Open`] if the file cannot be opened or its size read, or if it is not a
    /// regular file (a FIFO would block the open until some writer came, forever; a
    /// directory or a device is no data file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let open = || -> io::Result<(File, u64)> {
            // Checked before the open, which is what blocks on a FIFO.
            let kind = std::fs::metadata(path)?.file_type();
            if !kind.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a regular file ({})", file_kind(kind)),
                ));
            }
            let file = File::open(path)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        };
        let (file, size) = open().map_err(|source| Error::Open {
            file: name.clone(),
            source,
        })?;
        Ok(Self { name, file, size })
    }
}

/// What a non-regular file is, in words.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

impl RangeSource for LocalFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        check_range(offset, len, self.size)?;
        let mut buf = vec![0u8; len];
        read_exact_at(&self.file, &mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = file.seek_read(buf, offset)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        offset += n as u64;
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Bytes already in memory (a downloaded object, a test fixture). Reads are zero-copy slices.
#[derive(Clone)]
pub struct MemorySource {
    name: String,
    bytes: Bytes,
}

impl MemorySource {
    /// A source named `name` (used in error messages) over `bytes`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySource")
            .field("name", &self.name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

impl RangeSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        check_range(offset, len, self.size())?;
        // In range, so both conversions fit in usize.
        let start = offset as usize;
        Ok(self.bytes.slice(start..start + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_serves_exact_ranges_and_refuses_past_the_end() -> io::Result<()> {
        let source = MemorySource::new("mem", (0u8..32).collect::<Vec<_>>());
        assert_eq!(source.read_range(4, 3)?.as_ref(), &[4, 5, 6]);
        assert_eq!(source.read_range(32, 0)?.len(), 0);
        let err = source.read_range(30, 3).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
        assert!(source.read_range(u64::MAX, 2).is_err());
        Ok(())
    }

    #[test]
    fn local_file_reads_ranges_and_names_itself(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let path = std::env::temp_dir().join(format!("chunkmill-hdf5-src-{}", std::process::id()));
        std::fs::write(&path, (0u8..100).collect::<Vec<_>>())?;
        let file = LocalFile::open(&path)?;
        assert_eq!(file.size(), 100);
        assert_eq!(file.read_range(98, 2)?.as_ref(), &[98, 99]);
        assert!(file.read_range(99, 2).is_err());
        assert!(file.name().contains("chunkmill-hdf5-src"));
        std::fs::remove_file(&path)?;
        let missing = LocalFile::open(&path).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|m| m.contains("cannot open")));
        Ok(())
    }
}
