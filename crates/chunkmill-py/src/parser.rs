//! The scan behind `chunkmill.virtualizarr.Parser`: one file's references in the shapes
//! VirtualiZarr's `ChunkManifest.from_arrays` takes, and nothing else (no readers, no
//! storage encodings, no metadata of the whole file as one JSON document).

use chunkmill_hdf5::SourceFile;
use chunkmill_manifest::{ChunkManifest, ManifestArray, INLINED, MISSING};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyTuple};
use serde_json::{json, Value};

use crate::errors;

/// The references of every array of a file, in key order: per array its key, its
/// description as JSON (the same text for arrays described alike, so the Python side builds
/// each Zarr metadata object once), its chunk grid and its inlined chunks by flat index; then
/// for all arrays' chunks one after another (each array's in C order) an index into the
/// file's path table (`u32`: the URLs, then "missing", then "inlined"), an offset and a length
/// (`u64`, little-endian; an inlined chunk's length is its size). Three buffers for the whole
/// file rather than three per array: the Python side makes three numpy arrays and views.
#[derive(Default)]
struct References {
    keys: Vec<String>,
    descriptions: Vec<String>,
    grids: Vec<Vec<u64>>,
    inlined: Vec<Vec<(usize, Vec<u8>)>>,
    paths: Vec<u8>,
    offsets: Vec<u8>,
    lengths: Vec<u8>,
}

/// The description of an array: shape, dtype, chunk shape, fill value, codecs (Zarr v3),
/// dimension names, attributes and their stored types, in that order.
fn description(array: &ManifestArray) -> String {
    let m = &array.metadata;
    json!([
        m.shape,
        m.dtype,
        m.chunk_shape,
        m.fill_value,
        m.codecs.iter().map(|c| c.to_v3()).collect::<Vec<_>>(),
        m.dimension_names,
        m.attributes,
        m.attribute_types,
    ])
    .to_string()
}

impl References {
    fn push(&mut self, key: &str, array: &ManifestArray, urls: usize) {
        let manifest: &ChunkManifest = &array.manifest;
        let (missing, inlined_at) = (urls as u32, urls as u32 + 1);
        for &id in manifest.path_ids() {
            let at = match id {
                MISSING => missing,
                INLINED => inlined_at,
                id => id,
            };
            self.paths.extend_from_slice(&at.to_le_bytes());
        }
        for o in manifest.offsets() {
            self.offsets.extend_from_slice(&o.to_le_bytes());
        }
        let inlined = manifest.inlined();
        for (flat, &l) in manifest.lengths().iter().enumerate() {
            let l = inlined.get(&flat).map_or(l, |b| b.len() as u64);
            self.lengths.extend_from_slice(&l.to_le_bytes());
        }
        self.keys.push(key.to_string());
        self.descriptions.push(description(array));
        self.grids.push(array.metadata.grid_shape());
        self.inlined.push(
            inlined
                .iter()
                .map(|(&flat, bytes)| (flat, bytes.clone()))
                .collect(),
        );
    }
}

/// What one scan gives the parser.
struct Scanned {
    urls: Vec<String>,
    groups: String,
    arrays: References,
    skipped: Vec<String>,
}

fn scan(path: &str, drop: Vec<String>) -> PyResult<Scanned> {
    let file = SourceFile::open_path_for_listing(path).map_err(errors::hdf5)?;
    // As `open_file(references=True)`: Zarr codecs only.
    let (_, scan) = crate::dataset::scan_local(&file, path, drop, false)?;
    let dataset = scan.dataset;
    let mut arrays = References::default();
    for (key, array) in &dataset.arrays {
        arrays.push(key, array, dataset.urls.len());
    }
    Ok(Scanned {
        groups: Value::from(serde_json::Map::from_iter(
            dataset
                .groups
                .iter()
                .map(|(k, v)| (k.clone(), Value::Object(v.clone()))),
        ))
        .to_string(),
        urls: dataset.urls,
        arrays,
        skipped: scan.skipped.into_iter().map(|s| s.variable).collect(),
    })
}

/// Scans the HDF5, NetCDF-4 or NetCDF-3 file at `path` for references, leaving out the
/// variables of `drop`, the GIL released. Returns `(urls, groups, keys, descriptions, grids,
/// inlined, paths, offsets, lengths, skipped)`: the path table's URLs, the group attributes
/// as JSON (by group key), the arrays as [`References`] lists them (`inlined[i]` is `None`
/// when array `i` has no inlined chunk), and the keys of the variables that cannot be
/// referenced.
#[pyfunction]
#[pyo3(signature = (path, drop = Vec::new()))]
pub fn scan_references<'py>(
    py: Python<'py>,
    path: &str,
    drop: Vec<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    let scanned = py.detach(|| scan(path, drop))?;
    let a = scanned.arrays;
    let inlined = PyList::empty(py);
    for chunks in a.inlined {
        if chunks.is_empty() {
            inlined.append(py.None())?;
            continue;
        }
        let d = PyDict::new(py);
        for (flat, bytes) in chunks {
            d.set_item(flat, PyBytes::new(py, &bytes))?;
        }
        inlined.append(d)?;
    }
    let grids = PyList::empty(py);
    for g in a.grids {
        grids.append(PyTuple::new(py, g)?)?;
    }
    PyTuple::new(
        py,
        [
            scanned.urls.into_pyobject(py)?.into_any(),
            scanned.groups.into_pyobject(py)?.into_any(),
            a.keys.into_pyobject(py)?.into_any(),
            a.descriptions.into_pyobject(py)?.into_any(),
            grids.into_any(),
            inlined.into_any(),
            PyBytes::new(py, &a.paths).into_any(),
            // Writable buffers: numpy views of them need no copy to be writable.
            PyByteArray::new(py, &a.offsets).into_any(),
            PyByteArray::new(py, &a.lengths).into_any(),
            scanned.skipped.into_pyobject(py)?.into_any(),
        ],
    )
}
