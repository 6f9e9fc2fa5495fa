//! Reading the data a virtual array points to: each chunk fetched by byte range from its file
//! (local, `s3://`) or taken from the manifest when inlined, decoded with the array's Zarr
//! codecs, and returned as little-endian elements in C order. Never-written chunks read as
//! the fill value.
//!
//! Files are opened once per [`FilePool`], which the readers of every array of a dataset share
//! with every thread; a range read is one `pread` locally and one ranged GET in an object
//! store, with no lock held while it runs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chunkmill_hdf5::{LocalFile, RangeSource};
use serde_json::Value;

use crate::array::{ManifestArray, VirtualDataset};
use crate::codecs;
use crate::error::{Error, Result};
use crate::manifest::ChunkEntry;
use crate::remote;

/// Files that chunk references point into, each opened once (by URL) for every reader that
/// shares the pool.
#[derive(Default)]
pub struct FilePool {
    // Read-locked on every chunk read by every thread, write-locked once per file opened.
    opened: RwLock<HashMap<String, Arc<dyn RangeSource>>>,
}

impl std::fmt::Debug for FilePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePool").finish_non_exhaustive()
    }
}

impl FilePool {
    /// The file at `url`, opened now if no reader has opened it yet.
    ///
    /// # Errors
    /// The file cannot be opened (missing, unreadable, no such object).
    pub fn open(&self, url: &str) -> Result<Arc<dyn RangeSource>> {
        let found = match self.opened.read() {
            Ok(g) => g.get(url).cloned(),
            Err(poisoned) => poisoned.into_inner().get(url).cloned(),
        };
        if let Some(found) = found {
            return Ok(found);
        }
        // Opened without the lock (a remote open is a request): two threads may both open
        // the same file once, and the first to finish is kept.
        let source: Arc<dyn RangeSource> = if remote::is_remote(url) {
            remote::open_object(url)?
        } else {
            Arc::new(LocalFile::open(url.strip_prefix("file://").unwrap_or(url))?)
        };
        let mut opened = match self.opened.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(opened.entry(url.to_string()).or_insert(source).clone())
    }
}

/// Reads the chunks of one array of a [`VirtualDataset`].
pub struct ChunkReader {
    name: String,
    /// Shared with every other reader of the same dataset (a copy of one array's manifest
    /// only when made by [`ChunkReader::new`]); holds `name`, checked when made.
    dataset: Arc<VirtualDataset>,
    fill: Vec<u8>,
    files: Arc<FilePool>,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("array", &self.name)
            .finish_non_exhaustive()
    }
}

fn no_array(dataset: &VirtualDataset, key: &str) -> Error {
    Error::Reference {
        path: dataset.name.clone(),
        reason: format!(
            "no array '{key}'; arrays: {}",
            dataset
                .arrays
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl ChunkReader {
    /// A reader of array `key` of `dataset`, opening files through `files`. It copies that
    /// array's manifest and the URL table; readers of a dataset held in an `Arc` share it
    /// instead ([`ChunkReader::shared`]).
    ///
    /// # Errors
    /// [`Error::Reference`] when the dataset has no such array, or its data type or fill value
    /// cannot be read.
    pub fn new(dataset: &VirtualDataset, key: &str, files: Arc<FilePool>) -> Result<Self> {
        let array = dataset
            .arrays
            .get(key)
            .ok_or_else(|| no_array(dataset, key))?
            .clone();
        let one = VirtualDataset {
            name: dataset.name.clone(),
            urls: dataset.urls.clone(),
            groups: std::collections::BTreeMap::new(),
            arrays: std::collections::BTreeMap::from([(key.to_string(), array)]),
            encodings: std::collections::BTreeMap::new(),
        };
        Self::shared(Arc::new(one), key, files)
    }

    /// A reader of array `key` of a shared `dataset`: nothing is copied.
    ///
    /// # Errors
    /// As [`ChunkReader::new`].
    pub fn shared(dataset: Arc<VirtualDataset>, key: &str, files: Arc<FilePool>) -> Result<Self> {
        let array = dataset
            .arrays
            .get(key)
            .ok_or_else(|| no_array(&dataset, key))?;
        let fill =
            fill_bytes(&array.metadata.dtype, &array.metadata.fill_value).ok_or_else(|| {
                Error::Reference {
                    path: dataset.name.clone(),
                    reason: format!(
                        "{key}: fill value {} cannot be read as {}",
                        array.metadata.fill_value, array.metadata.dtype
                    ),
                }
            })?;
        Ok(Self {
            name: key.to_string(),
            dataset,
            fill,
            files,
        })
    }

    /// The array read.
    pub fn array(&self) -> &ManifestArray {
        // Checked present when the reader was made; the dataset cannot change behind the Arc.
        &self.dataset.arrays[&self.name]
    }

    /// The fill value, little-endian.
    pub fn fill_value(&self) -> &[u8] {
        &self.fill
    }

    fn source(&self, path_id: u32) -> Result<Arc<dyn RangeSource>> {
        let url = self.dataset.urls.get(path_id as usize).ok_or_else(|| {
            Error::Manifest(format!("{}: path id {path_id} has no URL", self.name))
        })?;
        self.files.open(url)
    }

    /// The stored bytes of chunk `indices` and the file they come from; `None` for a chunk
    /// never written (it reads as the fill value).
    fn stored(&self, indices: &[u64]) -> Result<Option<(String, Vec<u8>)>> {
        let flat = self
            .array()
            .manifest
            .flat_index(indices)
            .ok_or_else(|| Error::Manifest(format!("{}: no chunk {indices:?}", self.name)))?;
        Ok(match self.array().manifest.get(flat) {
            None | Some(ChunkEntry::Missing) => None,
            Some(ChunkEntry::Inlined(bytes)) => Some(("(inlined)".to_string(), bytes.to_vec())),
            Some(ChunkEntry::Reference {
                path_id,
                offset,
                length,
            }) => {
                let source = self.source(path_id)?;
                let bytes =
                    source
                        .read_range(offset, length as usize)
                        .map_err(|e| Error::Decode {
                            file: source.name().to_string(),
                            variable: self.name.clone(),
                            chunk: indices.to_vec(),
                            reason: format!("bytes {offset}..{}: {e}", offset + length),
                        })?;
                // The buffer the read allocated, taken back without a copy.
                Some((source.name().to_string(), Vec::from(bytes)))
            }
        })
    }

    fn decode_error(&self, file: String, indices: &[u64], reason: String) -> Error {
        Error::Decode {
            file,
            variable: self.name.clone(),
            chunk: indices.to_vec(),
            reason,
        }
    }

    /// The decoded size of one (nominal) chunk, in bytes.
    pub fn chunk_bytes(&self) -> usize {
        let meta = &self.array().metadata;
        meta.chunk_shape.iter().product::<u64>() as usize * meta.element_size()
    }

    /// The decoded elements of chunk `indices` (its whole nominal extent, little-endian).
    ///
    /// # Errors
    /// [`Error::Decode`] naming the file, the array and the chunk when the bytes cannot be
    /// read or decoded, or decode to the wrong size.
    pub fn read_chunk(&self, indices: &[u64]) -> Result<Vec<u8>> {
        let meta = &self.array().metadata;
        let expected = self.chunk_bytes();
        let Some((file, stored)) = self.stored(indices)? else {
            let elements: u64 = meta.chunk_shape.iter().product();
            return Ok(self.fill.repeat(elements as usize));
        };
        let decoded = codecs::decode_zarr(&meta.codecs, meta.element_size(), stored, expected)
            .map_err(|reason| self.decode_error(file.clone(), indices, reason))?;
        if decoded.len() != expected {
            return Err(self.decode_error(
                file,
                indices,
                format!("decoded to {} bytes, expected {expected}", decoded.len()),
            ));
        }
        Ok(decoded)
    }

    /// [`ChunkReader::read_chunk`] into `out`, which holds exactly one chunk
    /// ([`ChunkReader::chunk_bytes`]): decoded straight into it, without a buffer between.
    ///
    /// # Errors
    /// As [`ChunkReader::read_chunk`]; a `Manifest` error when `out` is not one chunk long.
    pub fn read_chunk_into(&self, indices: &[u64], out: &mut [u8]) -> Result<()> {
        let meta = &self.array().metadata;
        if out.len() != self.chunk_bytes() {
            return Err(Error::Manifest(format!(
                "{}: a chunk is {} bytes, not {}",
                self.name,
                self.chunk_bytes(),
                out.len()
            )));
        }
        let Some((file, stored)) = self.stored(indices)? else {
            for element in out.chunks_exact_mut(self.fill.len().max(1)) {
                element.copy_from_slice(&self.fill);
            }
            return Ok(());
        };
        codecs::decode_zarr_into(&meta.codecs, meta.element_size(), stored, out)
            .map_err(|reason| self.decode_error(file, indices, reason))
    }

    /// Every element of the array, decoded, in C order (little-endian); the caller bounds
    /// its size.
    ///
    /// # Errors
    /// As [`ChunkReader::read_chunk`].
    pub fn read_whole(&self) -> Result<Vec<u8>> {
        let meta = &self.array().metadata;
        let elements: u64 = meta.shape.iter().product();
        let mut out = self.fill.repeat(elements as usize);
        for flat in 0..self.array().manifest.len() {
            let indices = self.array().manifest.indices(flat);
            let chunk = self.read_chunk(&indices)?;
            let origin: Vec<u64> = indices
                .iter()
                .zip(&meta.chunk_shape)
                .map(|(i, c)| i * c)
                .collect();
            crate::dense::copy_block(
                &mut out,
                &meta.shape,
                &chunk,
                &meta.chunk_shape,
                &origin,
                meta.element_size().max(1),
            );
        }
        Ok(out)
    }
}

/// The little-endian bytes of fill value `value` (Zarr JSON) for numpy dtype `dtype`, of a
/// fixed-size type.
pub fn fill_bytes(dtype: &str, value: &Value) -> Option<Vec<u8>> {
    let dtype = chunkmill_store::DataType::from_typestr(dtype).ok()?;
    dtype.size()?;
    dtype.fill_bytes(value)
}
