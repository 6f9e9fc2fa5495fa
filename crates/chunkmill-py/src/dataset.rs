//! One opened dataset (a file or references): its metadata as JSON for the Python side, and
//! boxes of its arrays read chunk by chunk with the GIL released.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chunkmill_hdf5::{Inventory, Layout, SourceFile};
use chunkmill_manifest::reader::FilePool;
use chunkmill_manifest::{
    ChunkEntry, ChunkReader, FileScan, Input, ManifestArray, ScanOptions, VirtualDataset,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::errors;
use crate::region::{chunks_touching, copy_into_box, whole_chunk_pieces, Placed};

/// HDF5 filter ids of the compressors netCDF4-python's `Variable.filters()` reports.
const DEFLATE: u16 = 1;
const SHUFFLE: u16 = 2;
const FLETCHER32: u16 = 3;
const SZIP: u16 = 4;
const BZIP2: u16 = 307;
const BLOSC: u16 = 32001;
const ZSTD: u16 = 32015;

/// An opened dataset: every array's reader, group attributes and what the Python side shows.
#[pyclass(frozen, module = "chunkmill._native")]
pub struct NativeDataset {
    name: String,
    urls: Vec<String>,
    readers: BTreeMap<String, ChunkReader>,
    /// Arrays no [`ChunkReader`] reads (variable-length strings, held inline).
    others: BTreeMap<String, ManifestArray>,
    metadata: String,
}

impl NativeDataset {
    /// `dataset` opened for reading; `encodings` and `extra` go into the metadata as they are.
    fn new(
        dataset: VirtualDataset,
        encodings: &BTreeMap<String, Value>,
        extra: Map<String, Value>,
    ) -> Self {
        let files = Arc::new(FilePool::default());
        // Every reader shares the one dataset (its manifests are not copied per array).
        let dataset = Arc::new(dataset);
        let mut readers = BTreeMap::new();
        let mut others = BTreeMap::new();
        let mut arrays = Map::new();
        for (key, array) in &dataset.arrays {
            let m = &array.metadata;
            arrays.insert(
                key.clone(),
                json!({
                    "shape": m.shape,
                    "dtype": m.dtype,
                    "chunk_shape": m.chunk_shape,
                    "fill_value": m.fill_value,
                    "dimension_names": m.dimension_names,
                    "attributes": m.attributes,
                    "attribute_types": m.attribute_types,
                    "codecs": m.codecs.iter().map(|c| c.to_v3()).collect::<Vec<_>>(),
                    "encoding": encodings.get(key).cloned().unwrap_or(Value::Null),
                }),
            );
            match ChunkReader::shared(dataset.clone(), key, files.clone()) {
                Ok(reader) => {
                    readers.insert(key.clone(), reader);
                }
                Err(_) => {
                    others.insert(key.clone(), array.clone());
                }
            }
        }
        let mut meta = extra;
        meta.insert("name".into(), Value::from(dataset.name.clone()));
        meta.insert("groups".into(), json!(dataset.groups));
        meta.insert("arrays".into(), Value::Object(arrays));
        Self {
            name: dataset.name.clone(),
            urls: dataset.urls.clone(),
            readers,
            others,
            metadata: Value::Object(meta).to_string(),
        }
    }

    fn reader(&self, key: &str) -> PyResult<&ChunkReader> {
        self.readers.get(key).ok_or_else(|| {
            errors::usage(format!(
                "{}: no numeric array '{key}' (arrays: {})",
                self.name,
                self.readers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The reader of array `key` and the size in bytes of its box `[start, stop)`, checked
    /// to lie inside the array.
    fn box_of(&self, key: &str, start: &[u64], stop: &[u64]) -> PyResult<(&ChunkReader, usize)> {
        let reader = self.reader(key)?;
        let meta = &reader.array().metadata;
        let n = meta.shape.len();
        if start.len() != n
            || stop.len() != n
            || (0..n).any(|i| start[i] > stop[i] || stop[i] > meta.shape[i])
        {
            return Err(errors::usage(format!(
                "{key}: box {start:?}..{stop:?} is not inside the shape {:?}",
                meta.shape
            )));
        }
        let elements: u64 = start.iter().zip(stop).map(|(a, b)| b - a).product();
        Ok((reader, elements as usize * meta.element_size().max(1)))
    }
}

/// Reads the box `[start, stop)` of `reader`'s array into `out` (its elements, little-endian,
/// C order). A box made of whole chunks that each fill one contiguous run of it (dask's
/// `chunks={}` over a file's own chunks: one chunk per box) is decoded straight into `out`:
/// one chunk on the calling thread, several in parallel. Other boxes decode their chunks in
/// parallel and copy each one's part in.
fn read_box_into(
    reader: &ChunkReader,
    start: &[u64],
    stop: &[u64],
    out: &mut [u8],
) -> PyResult<()> {
    let meta = &reader.array().metadata;
    let chunks = chunks_touching(start, stop, &meta.chunk_shape);
    if chunks.is_empty() {
        return Ok(());
    }
    if let Some(mut pieces) = whole_chunk_pieces(&chunks, start, stop, &meta.chunk_shape, out) {
        if let [(indices, piece)] = pieces.as_mut_slice() {
            return reader
                .read_chunk_into(indices, piece)
                .map_err(errors::manifest);
        }
        return pieces.into_par_iter().try_for_each(|(indices, piece)| {
            reader
                .read_chunk_into(&indices, piece)
                .map_err(errors::manifest)
        });
    }
    let elem = meta.element_size().max(1);
    let read = |indices: Vec<u64>| {
        reader
            .read_chunk(&indices)
            .map(|bytes| (indices, bytes))
            .map_err(errors::manifest)
    };
    let decoded: Vec<(Vec<u64>, Vec<u8>)> = if chunks.len() == 1 {
        chunks.into_iter().map(read).collect::<PyResult<_>>()?
    } else {
        chunks.into_par_iter().map(read).collect::<PyResult<_>>()?
    };
    for (indices, bytes) in &decoded {
        let origin: Vec<u64> = indices
            .iter()
            .zip(&meta.chunk_shape)
            .map(|(i, c)| i * c)
            .collect();
        let placed = Placed {
            bytes,
            origin: &origin,
            shape: &meta.chunk_shape,
        };
        copy_into_box(out, start, stop, &placed, elem);
    }
    Ok(())
}

#[pymethods]
impl NativeDataset {
    /// The dataset's metadata as JSON: `name`, `groups` (attributes by group key), `arrays`
    /// (by key: shape, dtype, chunk_shape, fill_value, dimension_names, attributes,
    /// attribute_types, codecs, encoding), and for files `format`, `unlimited`, `warnings`.
    fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The elements of the box `[start, stop)` of array `key` (little-endian, C order), read
    /// with the GIL released: only the chunks the box touches are read.
    fn read<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        start: Vec<u64>,
        stop: Vec<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (reader, len) = self.box_of(key, &start, &stop)?;
        // The bytes object is the buffer numpy wraps (np.frombuffer): chunks are decoded
        // straight into it, with the GIL released and no lock shared between threads.
        PyBytes::new_with(py, len, |out| {
            py.detach(|| read_box_into(reader, &start, &stop, out))
        })
    }

    /// Where the chunks of array `key` are: the URL table, then per chunk in C grid order a
    /// path id (little-endian `u32`; `MISSING` and `INLINED` are reserved), an offset and a
    /// length (little-endian `u64`), and the bytes of the inlined chunks by flat index.
    #[allow(clippy::type_complexity)]
    fn manifest<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<(
        Vec<String>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        BTreeMap<usize, Bound<'py, PyBytes>>,
    )> {
        let manifest = match (self.readers.get(key), self.others.get(key)) {
            (Some(r), _) => &r.array().manifest,
            (None, Some(a)) => &a.manifest,
            (None, None) => return Err(errors::usage(format!("{}: no array '{key}'", self.name))),
        };
        let le = |words: Vec<u8>| PyBytes::new(py, &words);
        let ids: Vec<u8> = manifest
            .path_ids()
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        let offsets: Vec<u8> = manifest
            .offsets()
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        let lengths: Vec<u8> = manifest
            .lengths()
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        let inlined = manifest
            .inlined()
            .iter()
            .map(|(flat, bytes)| (*flat, PyBytes::new(py, bytes)))
            .collect();
        Ok((
            self.urls.clone(),
            le(ids),
            le(offsets),
            le(lengths),
            inlined,
        ))
    }

    /// Every element of variable-length string array `key`, C order.
    fn read_strings(&self, py: Python<'_>, key: &str) -> PyResult<Vec<String>> {
        let array = self
            .others
            .get(key)
            .ok_or_else(|| errors::usage(format!("{}: no string array '{key}'", self.name)))?;
        py.detach(|| strings_of(array))
            .map_err(|reason| errors::by_code(1, format!("{}: {key}: {reason}", self.name)))
    }
}

/// The strings of an array held as one inlined `vlen-utf8` chunk (a little-endian `u32`
/// count, then each string as a `u32` length and its UTF-8 bytes); empty when no chunk.
fn strings_of(array: &ManifestArray) -> Result<Vec<String>, String> {
    let bytes = match array.manifest.get(0) {
        Some(ChunkEntry::Inlined(b)) => b,
        None | Some(ChunkEntry::Missing) => return Ok(Vec::new()),
        Some(ChunkEntry::Reference { .. }) => {
            return Err("variable-length strings held by reference cannot be read".into())
        }
    };
    let mut at = 0usize;
    let word = |at: &mut usize| -> Result<usize, String> {
        let w = bytes.get(*at..*at + 4).ok_or("vlen-utf8 data ends early")?;
        *at += 4;
        Ok(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
    };
    let count = word(&mut at)?;
    let mut out = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let len = word(&mut at)?;
        let s = bytes.get(at..at + len).ok_or("vlen-utf8 data ends early")?;
        at += len;
        out.push(String::from_utf8_lossy(s).into_owned());
    }
    Ok(out)
}

/// The key of a variable: its group's path without the leading `/`, then its name.
fn key_of(group: &str, name: &str) -> String {
    match group.trim_start_matches('/') {
        "" => name.to_string(),
        g => format!("{g}/{name}"),
    }
}

/// Each variable's storage encoding as xarray's `netcdf4` engine reports it
/// (`Variable.filters()` and `chunking()` of netCDF4-python); none for NetCDF-3, where
/// netCDF4-python reports neither.
fn encodings(inventory: &Inventory) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let classic = !matches!(inventory.format, chunkmill_hdf5::Format::Hdf5 { .. });
    for v in &inventory.variables {
        if classic {
            continue;
        }
        let has = |id: u16| v.filters.iter().any(|f| f.id == id);
        let complevel = v
            .filters
            .iter()
            .find(|f| f.id == DEFLATE)
            .and_then(|f| f.parameters.first().copied())
            .unwrap_or(0);
        let mut e = json!({
            "zlib": has(DEFLATE),
            "szip": has(SZIP),
            "zstd": has(ZSTD),
            "bzip2": has(BZIP2),
            "blosc": has(BLOSC),
            "shuffle": has(SHUFFLE),
            "complevel": complevel,
            "fletcher32": has(FLETCHER32),
        });
        match (&v.layout, &v.chunk_shape) {
            (Layout::Chunked { .. }, Some(chunks)) => {
                e["contiguous"] = Value::Bool(false);
                e["chunksizes"] = json!(chunks);
            }
            _ => {
                e["contiguous"] = Value::Bool(true);
                e["chunksizes"] = Value::Null;
            }
        }
        out.insert(key_of(&v.group, &v.name), e);
    }
    out
}

/// The inventory and scan of the local file `file` opened at `path`: Zarr codecs only, or
/// with `native_filters` chunkmill's own for filters no Zarr codec expresses; nothing
/// inlined but what cannot be referenced; the variables in `drop` left out.
pub(crate) fn scan_local(
    file: &SourceFile,
    path: &str,
    drop: Vec<String>,
    native_filters: bool,
) -> PyResult<(Inventory, FileScan)> {
    let inventory = file.inventory().map_err(errors::hdf5)?;
    let url = Input::Local(Path::new(path).to_path_buf()).url();
    let options = ScanOptions {
        inline_threshold: 0,
        load: Vec::new(),
        native_filters,
        drop,
    };
    let scan = chunkmill_manifest::scan_listed(file, &inventory, &url, &options)
        .map_err(errors::manifest)?;
    Ok((inventory, scan))
}

/// Opens the HDF5, NetCDF-4 or NetCDF-3 file at `path` (its metadata and chunk index only),
/// leaving out the variables of `drop` (keys: `air`, `group/air`). With `references`, the
/// arrays are kept as references others can read (Zarr codecs only, nothing inlined; what
/// cannot be referenced is listed under `skipped`), as `virtualize` scans.
#[pyfunction]
#[pyo3(signature = (path, drop = Vec::new(), references = false))]
pub fn open_file(
    py: Python<'_>,
    path: &str,
    drop: Vec<String>,
    references: bool,
) -> PyResult<NativeDataset> {
    py.detach(|| {
        let file = SourceFile::open_path(path).map_err(errors::hdf5)?;
        // Filters no Zarr codec expresses stay as chunkmill's own codecs (the reader decodes
        // them), and strings are loaded whatever their size: nothing is left out.
        let (inventory, scan) = scan_local(&file, path, drop, !references)?;
        let mut extra = Map::new();
        let format = match file.format() {
            chunkmill_hdf5::Format::Hdf5 { .. } if inventory.netcdf4 => "NETCDF4",
            chunkmill_hdf5::Format::Hdf5 { .. } => "HDF5",
            _ => "NETCDF3",
        };
        extra.insert("format".into(), Value::from(format));
        let root_unlimited: Vec<&str> = inventory
            .dimensions
            .iter()
            .filter(|d| d.unlimited)
            .map(|d| d.name.as_str())
            .collect();
        extra.insert("unlimited".into(), json!(root_unlimited));
        let dims: Vec<Value> = inventory
            .dimensions
            .iter()
            .map(|d| json!({"name": d.name, "group": d.group, "length": d.length, "unlimited": d.unlimited}))
            .collect();
        extra.insert("dimensions".into(), Value::Array(dims));
        // Variables as the file lists them (netCDF4 and xarray keep that order), not sorted.
        let order: Vec<&str> = inventory
            .variables
            .iter()
            .map(|v| v.path.trim_start_matches('/'))
            .collect();
        extra.insert("order".into(), json!(order));
        extra.insert("warnings".into(), json!(scan.warnings));
        let skipped: Map<String, Value> = scan
            .skipped
            .iter()
            .map(|s| (s.variable.clone(), Value::from(s.reason.clone())))
            .collect();
        extra.insert("skipped".into(), Value::Object(skipped));
        Ok(NativeDataset::new(scan.dataset, &encodings(&inventory), extra))
    })
}

/// Opens references: kerchunk JSON (a file), kerchunk Parquet or an Icechunk repository (a
/// directory); chunks are read from the files they point into.
#[pyfunction]
pub fn open_references(py: Python<'_>, path: &str) -> PyResult<NativeDataset> {
    py.detach(|| {
        let p = Path::new(path);
        let dataset = if chunkmill_manifest::is_icechunk(p) {
            chunkmill_manifest::read_icechunk(p)
        } else if chunkmill_manifest::is_kerchunk_parquet(p) {
            chunkmill_manifest::read_kerchunk_parquet(p)
        } else if p.is_dir() {
            return Err(errors::by_code(
                3,
                format!(
                    "{path}: a directory that is neither kerchunk Parquet nor Icechunk references"
                ),
            ));
        } else {
            chunkmill_manifest::read_kerchunk_json(p)
        }
        .map_err(errors::manifest)?;
        let mut extra = Map::new();
        extra.insert("format".into(), Value::from("references"));
        Ok(NativeDataset::new(dataset, &BTreeMap::new(), extra))
    })
}

/// A dataset combined in memory (by `virtualize`'s scan and combine).
pub fn from_combined(dataset: VirtualDataset, notes: Vec<String>) -> NativeDataset {
    let mut extra = Map::new();
    extra.insert("format".into(), Value::from("virtual"));
    extra.insert("warnings".into(), json!(notes));
    NativeDataset::new(dataset, &BTreeMap::new(), extra)
}
