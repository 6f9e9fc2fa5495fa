//! What a combine must read from the files themselves: a digest of each variable's values
//! (to refuse inputs whose variables without the concat dimension differ), the values of a
//! coordinate that the scan did not load (an inferred concat dimension).
//!
//! Values are read through the references (decoded with the array's codecs, the part of an
//! edge chunk past the array's end left out), so the comparison is of what a reader sees,
//! whatever the compression or chunking of each file.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chunkmill_grid::{copy_region, Region};

use crate::array::{ManifestArray, VirtualDataset};
use crate::dense::MAX_LOADED_BYTES;
use crate::error::{Error, Result};
use crate::manifest::ChunkEntry;
use crate::reader::{ChunkReader, FilePool};

/// How [`digest`] reads an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The stored bytes of each chunk, not decoded: equal digests mean equal values when the
    /// inputs share codecs and chunk shape (the cheap first pass; a difference is then
    /// decoded to be sure).
    Stored,
    /// Each chunk decoded, its in-bounds values in chunk order (inputs of one chunk shape).
    Chunks,
    /// The whole array decoded, in C order (inputs chunked differently).
    Whole,
}

/// The digest of array `key` of `dataset`: of its C-order values when loaded, else as `read`
/// says.
///
/// # Errors
/// The chunks cannot be read or decoded; [`Read::Whole`] of an array over
/// [`MAX_LOADED_BYTES`].
pub(crate) fn digest(
    dataset: &VirtualDataset,
    key: &str,
    files: &Arc<FilePool>,
    read: Read,
) -> Result<u64> {
    let mut hasher = DefaultHasher::new();
    let Some(array) = dataset.arrays.get(key) else {
        return Ok(0);
    };
    if let Some(values) = array.loaded_values() {
        hasher.write(values);
        return Ok(hasher.finish());
    }
    if read == Read::Stored {
        return stored_digest(dataset, array, files);
    }
    let reader = ChunkReader::new(dataset, key, files.clone())?;
    let meta = &array.metadata;
    let elem = meta.element_size().max(1);
    let shape = &meta.shape;
    let whole_region = Region::whole(shape);
    if read == Read::Whole {
        let bytes = whole_region.num_elements().saturating_mul(elem as u64);
        if bytes > MAX_LOADED_BYTES {
            return Err(Error::Combine {
                file: dataset.name.clone(),
                variable: key.to_string(),
                reason: format!(
                    "is chunked differently in the inputs and too large ({bytes} bytes) to be compared; \
                     take the first input's values with --compat override"
                ),
            });
        }
        hasher.write(&reader.read_whole()?);
        return Ok(hasher.finish());
    }
    for flat in 0..array.manifest.len() {
        let indices = array.manifest.indices(flat);
        let chunk = reader.read_chunk(&indices)?;
        hasher.write(&in_bounds(array, &indices, &chunk));
    }
    Ok(hasher.finish())
}

/// The digest of the stored bytes of every chunk of `array`, in chunk order.
fn stored_digest(
    dataset: &VirtualDataset,
    array: &ManifestArray,
    files: &Arc<FilePool>,
) -> Result<u64> {
    let mut hasher = DefaultHasher::new();
    for (_, entry) in array.manifest.iter() {
        match entry {
            ChunkEntry::Missing => hasher.write_u8(0),
            ChunkEntry::Inlined(bytes) => {
                hasher.write_u8(1);
                hasher.write(bytes);
            }
            ChunkEntry::Reference {
                path_id,
                offset,
                length,
            } => {
                let url = dataset.urls.get(path_id as usize).ok_or_else(|| {
                    Error::Manifest(format!("{}: path id {path_id} has no URL", dataset.name))
                })?;
                let source = files.open(url)?;
                let bytes =
                    source
                        .read_range(offset, length as usize)
                        .map_err(|e| Error::Combine {
                            file: source.name().to_string(),
                            variable: String::new(),
                            reason: format!("bytes {offset}..{}: {e}", offset + length),
                        })?;
                hasher.write_u8(2);
                hasher.write(&bytes);
            }
        }
    }
    Ok(hasher.finish())
}

/// The part of decoded chunk `indices` that lies inside the array (an edge chunk's padding
/// holds whatever the writer left there).
fn in_bounds(array: &ManifestArray, indices: &[u64], chunk: &[u8]) -> Vec<u8> {
    let meta = &array.metadata;
    let elem = meta.element_size().max(1);
    let held = Region::new(
        indices
            .iter()
            .zip(&meta.chunk_shape)
            .map(|(&i, &c)| i * c..i * c + c)
            .collect(),
    );
    match Region::whole(&meta.shape).intersect(&held) {
        Some(what) if what != held => {
            let mut out = vec![0u8; what.num_elements() as usize * elem];
            if chunk.len() >= held.num_elements() as usize * elem {
                copy_region(chunk, &held, &mut out, &what, &what, elem);
            }
            out
        }
        Some(_) => chunk.to_vec(),
        None => Vec::new(),
    }
}

/// Digests of `keys` (each with how to read it, see [`digest`]) of every input, read on
/// `threads` threads: `out[i][k]` for input `i` and `keys[k]`.
///
/// Each input's files are opened for its own keys and closed before the thread moves on, so
/// that a combine of thousands of files holds as many open files as it has threads, not one
/// per input (the usual limit of 1024 open files per process would otherwise fail it).
///
/// # Errors
/// The first read error.
pub(crate) fn digests(
    parts: &[VirtualDataset],
    keys: &[(String, Read)],
    threads: usize,
) -> Result<Vec<Vec<Option<u64>>>> {
    let out: Mutex<Vec<Vec<Option<u64>>>> = Mutex::new(vec![vec![None; keys.len()]; parts.len()]);
    if keys.is_empty() {
        return out
            .into_inner()
            .map_err(|_| Error::Manifest("a comparing thread panicked".into()));
    }
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, parts.len().max(1)) {
            s.spawn(|| loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                let Some(part) = parts.get(p) else { break };
                if !matches!(first_error.lock().as_deref(), Ok(None)) {
                    break;
                }
                let files = Arc::new(FilePool::default());
                let found: Result<Vec<u64>> = keys
                    .iter()
                    .map(|(key, read)| digest(part, key, &files, *read))
                    .collect();
                match found {
                    Ok(d) => {
                        if let Ok(mut o) = out.lock() {
                            o[p] = d.into_iter().map(Some).collect();
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    out.into_inner()
        .map_err(|_| Error::Manifest("a comparing thread panicked".into()))
}

/// Replaces array `key` of `dataset` by its values, read through its references, so that the
/// combine can order and check the inputs by them (the scan loads only the coordinate of a
/// concat dimension given before it ran).
///
/// # Errors
/// The chunks cannot be read, or the array is over [`MAX_LOADED_BYTES`].
pub(crate) fn load_values(dataset: &mut VirtualDataset, key: &str) -> Result<()> {
    let Some(array) = dataset.arrays.get(key) else {
        return Ok(());
    };
    if array.loaded_values().is_some() {
        return Ok(());
    }
    let meta = array.metadata.clone();
    let elem = meta.element_size().max(1);
    let elements: u64 = meta.shape.iter().product();
    if elements.saturating_mul(elem as u64) > MAX_LOADED_BYTES {
        return Err(Error::Combine {
            file: dataset.name.clone(),
            variable: key.to_string(),
            reason: "too large to load as the concat coordinate".into(),
        });
    }
    let out = ChunkReader::new(dataset, key, Arc::new(FilePool::default()))?.read_whole()?;
    // The reader gives little-endian elements: the loaded array says so.
    let mut meta = meta;
    if let Some(rest) = meta.dtype.strip_prefix('>') {
        meta.dtype = format!("<{rest}");
    }
    meta.codecs = vec![crate::codecs::Codec::bytes(Some(
        chunkmill_hdf5::ByteOrder::Little,
    ))];
    let loaded = ManifestArray::loaded(meta, out)?;
    dataset.arrays.insert(key.to_string(), loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::ArrayMetadata;
    use crate::codecs::Codec;

    fn loaded(values: &[i16]) -> Result<ManifestArray> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        ManifestArray::loaded(
            ArrayMetadata {
                shape: vec![values.len() as u64],
                dtype: "<i2".into(),
                chunk_shape: vec![values.len() as u64],
                fill_value: serde_json::Value::from(0),
                codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
                dimension_names: vec!["x".into()],
                attributes: serde_json::Map::new(),
                attribute_types: std::collections::BTreeMap::new(),
            },
            bytes,
        )
    }

    #[test]
    fn an_edge_chunk_is_cut_to_the_array() -> Result<()> {
        let mut a = loaded(&[1, 2, 3])?;
        a.metadata.chunk_shape = vec![2];
        let chunk: Vec<u8> = [3i16, 99].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(in_bounds(&a, &[1], &chunk), 3i16.to_le_bytes().to_vec());
        Ok(())
    }
}
