//! The bridge from our [`RangeSource`] to hdf5-reader's `Storage`.

use std::io;
use std::sync::Arc;

use hdf5_reader::error::Error as H5Error;
use hdf5_reader::{Storage, StorageBuffer};

use crate::source::RangeSource;

/// Serves hdf5-reader's reads from a [`RangeSource`], without copying the bytes it returns.
pub(crate) struct SourceStorage {
    source: Arc<dyn RangeSource>,
}

impl SourceStorage {
    pub(crate) fn new(source: Arc<dyn RangeSource>) -> Self {
        Self { source }
    }
}

impl Storage for SourceStorage {
    fn len(&self) -> u64 {
        self.source.size()
    }

    fn read_range(&self, offset: u64, len: usize) -> hdf5_reader::error::Result<StorageBuffer> {
        let bytes = self.source.read_range(offset, len).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                H5Error::UnexpectedEof {
                    offset,
                    needed: len as u64,
                    available: self.source.size().saturating_sub(offset),
                }
            } else {
                H5Error::Io(e)
            }
        })?;
        if bytes.len() != len {
            // A source that breaks its contract must not become a short buffer.
            return Err(H5Error::UnexpectedEof {
                offset,
                needed: len as u64,
                available: bytes.len() as u64,
            });
        }
        StorageBuffer::from_shared_owner(Arc::new(bytes), 0, len)
    }
}
