//! The scan behind `chunkmill.virtualizarr.Parser`: one file's references in the shapes
//! VirtualiZarr's `ChunkManifest.from_arrays` takes, and nothing else (no readers, no
//! storage encodings, no metadata of the whole file as one JSON document).

use std::path::Path;

use chunkmill_hdf5::SourceFile;
use chunkmill_manifest::{ChunkManifest, Input, ManifestArray, ScanOptions, INLINED, MISSING};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde_json::{json, Value};

use crate::errors;

/// One array's references: its key, its description as JSON (the same text for arrays
/// described alike, so the Python side builds each Zarr metadata object once), its chunk
/// grid, then per chunk in C order an index into the file's path table (`u32`: the URLs, then
/// "missing", then "inlined"), an offset and a length (`u64`, little-endian; an inlined
/// chunk's length is its size), and the inlined chunks by flat index.
struct ArrayReferences {
    key: String,
    description: String,
    grid: Vec<u64>,
    paths: Vec<u8>,
    offsets: Vec<u8>,
    lengths: Vec<u8>,
    inlined: Vec<(usize, Vec<u8>)>,
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

fn references(key: &str, array: &ManifestArray, urls: usize) -> ArrayReferences {
    let manifest: &ChunkManifest = &array.manifest;
    let (missing, inlined_at) = (urls as u32, urls as u32 + 1);
    let paths = manifest
        .path_ids()
        .iter()
        .flat_map(|&id| {
            let at = match id {
                MISSING => missing,
                INLINED => inlined_at,
                id => id,
            };
            at.to_le_bytes()
        })
        .collect();
    let offsets = manifest
        .offsets()
        .iter()
        .flat_map(|o| o.to_le_bytes())
        .collect();
    let mut lengths: Vec<u64> = manifest.lengths().to_vec();
    let inlined: Vec<(usize, Vec<u8>)> = manifest
        .inlined()
        .iter()
        .map(|(&flat, bytes)| (flat, bytes.clone()))
        .collect();
    for (flat, bytes) in &inlined {
        if let Some(l) = lengths.get_mut(*flat) {
            *l = bytes.len() as u64;
        }
    }
    ArrayReferences {
        key: key.to_string(),
        description: description(array),
        grid: array.metadata.grid_shape(),
        paths,
        offsets,
        lengths: lengths.iter().flat_map(|l| l.to_le_bytes()).collect(),
        inlined,
    }
}

/// What one scan gives the parser.
struct Scanned {
    urls: Vec<String>,
    groups: String,
    arrays: Vec<ArrayReferences>,
    skipped: Vec<String>,
}

fn scan(path: &str, drop: Vec<String>) -> PyResult<Scanned> {
    let file = SourceFile::open_path_for_listing(path).map_err(errors::hdf5)?;
    let inventory = file.inventory().map_err(errors::hdf5)?;
    let url = Input::Local(Path::new(path).to_path_buf()).url();
    // As `open_file(references=True)`: Zarr codecs only, nothing inlined but what cannot be
    // referenced.
    let options = ScanOptions {
        inline_threshold: 0,
        load: Vec::new(),
        native_filters: false,
        drop,
    };
    let scan = chunkmill_manifest::scan_listed(&file, &inventory, &url, &options)
        .map_err(errors::manifest)?;
    let dataset = scan.dataset;
    let arrays = dataset
        .arrays
        .iter()
        .map(|(key, array)| references(key, array, dataset.urls.len()))
        .collect();
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
/// variables of `drop`, the GIL released. Returns `(urls, groups, arrays, skipped)`: the
/// path table's URLs, the group attributes as JSON (by group key), per array a tuple
/// `(key, description, grid, paths, offsets, lengths, inlined)` (see [`ArrayReferences`]),
/// and the keys of the variables that cannot be referenced.
#[pyfunction]
#[pyo3(signature = (path, drop = Vec::new()))]
pub fn scan_references<'py>(
    py: Python<'py>,
    path: &str,
    drop: Vec<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    let scanned = py.detach(|| scan(path, drop))?;
    let arrays = PyList::empty(py);
    for a in scanned.arrays {
        let inlined = PyDict::new(py);
        for (flat, bytes) in a.inlined {
            inlined.set_item(flat, PyBytes::new(py, &bytes))?;
        }
        arrays.append((
            a.key,
            a.description,
            PyTuple::new(py, a.grid)?,
            PyBytes::new(py, &a.paths),
            PyBytes::new(py, &a.offsets),
            PyBytes::new(py, &a.lengths),
            inlined,
        ))?;
    }
    PyTuple::new(
        py,
        [
            scanned.urls.into_pyobject(py)?.into_any(),
            scanned.groups.into_pyobject(py)?.into_any(),
            arrays.into_any(),
            scanned.skipped.into_pyobject(py)?.into_any(),
        ],
    )
}
