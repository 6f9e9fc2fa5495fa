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
pub struct LocalFile {
    name: String,
    file: File,
    size: u64,
    /// The file's first bytes, read once when it was opened for listing: HDF5 metadata is
    /// read in tens of pieces of a few bytes, most of them near the start of the file.
    head: Bytes,
}

/// How much of a file [`LocalFile::open_for_listing`] reads at once: the superblock, root
/// group, object headers and chunk indexes of a NetCDF-4 file written in one go lie in its
/// first tens of KiB.
pub const LISTING_HEAD: usize = 64 * 1024;

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
        Ok(Self {
            name,
            file,
            size,
            head: Bytes::new(),
        })
    }

    /// Opens `path` and reads its first [`LISTING_HEAD`] bytes (the whole file when smaller)
    /// in one read: a listing's many small reads there are served from memory, the others
    /// are read as by [`LocalFile::open`]. For a file opened to list it, not one held open to
    /// read chunks (that would keep the head in memory for nothing).
    ///
    /// # Errors
    /// As [`LocalFile::open`], and [`Error::Open`] if the head cannot be read.
    pub fn open_for_listing(path: impl AsRef<Path>) -> Result<Self> {
        let mut file = Self::open(path)?;
        let len = LISTING_HEAD.min(usize::try_from(file.size).unwrap_or(LISTING_HEAD));
        let mut head = vec![0u8; len];
        read_exact_at(&file.file, &mut head, 0).map_err(|source| Error::Open {
            file: file.name.clone(),
            source,
        })?;
        file.head = Bytes::from(head);
        Ok(file)
    }
}

impl fmt::Debug for LocalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("head", &self.head.len())
            .finish()
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
        if let Some(end) = offset.checked_add(len as u64) {
            if end <= self.head.len() as u64 {
                // Inside the head, so both fit in usize.
                return Ok(self.head.slice(offset as usize..end as usize));
            }
        }
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
        // Opened for listing: the head is served from memory, the rest read, both alike.
        let listed = LocalFile::open_for_listing(&path)?;
        assert_eq!(listed.head.len(), 100);
        assert_eq!(listed.read_range(98, 2)?.as_ref(), &[98, 99]);
        assert_eq!(
            listed.read_range(0, 100)?.as_ref(),
            file.read_range(0, 100)?.as_ref()
        );
        assert!(listed.read_range(99, 2).is_err());
        std::fs::remove_file(&path)?;
        let missing = LocalFile::open(&path).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|m| m.contains("cannot open")));
        Ok(())
    }
}
