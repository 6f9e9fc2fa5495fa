//! One file → one [`VirtualDataset`]: every variable's Zarr metadata and chunk manifest.

use std::collections::BTreeMap;
use std::path::Path;

use chunkmill_hdf5::{DataRefs, SourceFile, Variable};
use serde_json::{Map, Value};

use crate::array::{ArrayMetadata, ManifestArray, VirtualDataset};
use crate::codecs;
use crate::dense;
use crate::error::{Error, Result};
use crate::manifest::ChunkManifest;

/// Largest chunk that is re-encoded and inlined because its filter mask skipped a filter
/// (16 MiB); a larger one is refused.
pub const MAX_REENCODED_CHUNK: usize = 16 * 1024 * 1024;

/// Inline threshold of kerchunk's `SingleHdf5ToZarr`, used by default: chunks (and
/// contiguous variables) stored in fewer bytes are inlined.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 500;

/// What a scan does besides listing.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Chunks stored in fewer bytes than this are read and inlined (0: never).
    pub inline_threshold: u64,
    /// Variables (by name, e.g. the concat coordinate and the identical dims) whose decoded
    /// values are loaded and inlined as one uncompressed chunk.
    pub load: Vec<String>,
    /// Keep filters no Zarr codec expresses (szip, nbit, scaleoffset) as chunkmill's own
    /// codec ([`crate::codecs::native`]) instead of refusing them: for `convert`, which decodes
    /// them; never for references others read.
    pub native_filters: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            load: Vec::new(),
            native_filters: false,
        }
    }
}

/// A scanned file.
#[derive(Debug, Clone)]
pub struct FileScan {
    /// Its arrays, with one URL (path id 0).
    pub dataset: VirtualDataset,
    /// Objects the file holds that are not in the dataset (virtual datasets, external
    /// links), each with the reason.
    pub warnings: Vec<String>,
    /// Its unlimited dimensions (a concat dimension can be inferred from them).
    pub unlimited: Vec<String>,
}

/// Opens the local file at `path` and scans it; chunks point at `url`.
///
/// # Errors
/// As [`scan`], and [`Error::Source`] when the file cannot be opened or is not HDF5/NetCDF.
pub fn scan_path(path: &Path, url: &str, options: &ScanOptions) -> Result<FileScan> {
    let file = SourceFile::open_path(path)?;
    scan(&file, url, options)
}

/// Scans an open file: every variable becomes a [`ManifestArray`].
///
/// # Errors
/// The first variable that cannot be referenced: an inexpressible filter
/// ([`Error::UnsupportedFilter`]), a filter-masked chunk that cannot be re-encoded
/// ([`Error::FilterMask`]), an unsupported type ([`Error::Unsupported`]); listing errors of
/// chunkmill-hdf5 ([`Error::Source`]).
pub fn scan(file: &SourceFile, url: &str, options: &ScanOptions) -> Result<FileScan> {
    let inventory = file.inventory()?;
    let mut groups = BTreeMap::new();
    for g in &inventory.groups {
        groups.insert(group_key(&g.path), to_map(&g.attributes));
    }
    let mut phony: Vec<u64> = Vec::new();
    let mut arrays = BTreeMap::new();
    let unlimited = netcdf4_unlimited_lengths(&inventory);
    for var in &inventory.variables {
        let key = match group_key(&var.group) {
            g if g.is_empty() => var.name.clone(),
            g => format!("{g}/{}", var.name),
        };
        let array = scan_variable(file, &netcdf_extent(var, &unlimited), options, &mut phony)?;
        arrays.insert(key, array);
    }
    let warnings = inventory
        .unlisted
        .iter()
        .map(|u| format!("{}: {}: not referenced: {}", file.name(), u.path, u.reason))
        .collect();
    Ok(FileScan {
        dataset: VirtualDataset {
            name: file.name().to_string(),
            urls: vec![url.to_string()],
            groups,
            arrays,
        },
        warnings,
        unlimited: inventory
            .dimensions
            .iter()
            .filter(|d| d.unlimited)
            .map(|d| d.name.clone())
            .collect(),
    })
}

/// The length of each unlimited dimension of a NetCDF-4 file, as netCDF-C sees it: the
/// largest extent of any variable along it (and of its dimension scale).
fn netcdf4_unlimited_lengths(inventory: &chunkmill_hdf5::Inventory) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if !inventory.netcdf4 {
        return out;
    }
    for d in inventory.dimensions.iter().filter(|d| d.unlimited) {
        let len = out.entry(d.name.clone()).or_insert(0);
        *len = (*len).max(d.length);
    }
    for v in &inventory.variables {
        for (name, &len) in v.dimensions.iter().flatten().zip(&v.shape) {
            if let Some(l) = out.get_mut(name) {
                *l = (*l).max(len);
            }
        }
    }
    out
}

/// `var` with the NetCDF-4 extent: along an unlimited dimension, netCDF-C reports the
/// dimension's length for every variable that uses it, and reads elements past the variable's
/// own HDF5 extent as the fill value. The chunks past the HDF5 extent are missing, so the
/// manifest gives the same.
fn netcdf_extent(var: &Variable, unlimited: &BTreeMap<String, u64>) -> Variable {
    let mut v = var.clone();
    if let Some(dims) = &var.dimensions {
        for (axis, name) in dims.iter().enumerate() {
            if let (Some(&len), Some(s)) = (unlimited.get(name), v.shape.get_mut(axis)) {
                if var.max_shape.get(axis).is_some_and(Option::is_none) && len > *s {
                    *s = len;
                }
            }
        }
    }
    v
}

/// `"/"` → `""`, `"/a/b"` → `"a/b"`.
fn group_key(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

fn to_map(attributes: &[chunkmill_hdf5::Attribute]) -> Map<String, Value> {
    attributes
        .iter()
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect()
}

/// The Zarr fill value when the file sets none: zero of the type.
fn default_fill(dtype: &str) -> Value {
    match dtype.chars().nth(1) {
        Some('f') => Value::from(0.0),
        Some('b') => Value::Bool(false),
        Some('S') => Value::String(String::new()),
        _ => Value::from(0),
    }
}

fn scan_variable(
    file: &SourceFile,
    var: &Variable,
    options: &ScanOptions,
    phony: &mut Vec<u64>,
) -> Result<ManifestArray> {
    let unsupported = |reason: String| Error::Unsupported {
        file: file.name().to_string(),
        variable: var.path.clone(),
        reason,
    };
    if matches!(
        var.dtype.class,
        "vlen_string" | "vlen" | "compound" | "opaque" | "array" | "reference"
    ) {
        return Err(unsupported(format!(
            "{} type ({}) cannot be referenced: Zarr v2 readers of kerchunk references have no codec for HDF5's layout of it",
            var.dtype.class, var.dtype.numpy
        )));
    }
    let codecs = codecs::zarr_codecs_with(&var.filters, &var.dtype, options.native_filters)
        .map_err(|e| Error::UnsupportedFilter {
            file: file.name().to_string(),
            variable: var.path.clone(),
            filter: e.filter,
            id: e.id,
            reason: e.reason,
        })?;
    let dimension_names = var.dimensions.clone().unwrap_or_else(|| {
        // As h5netcdf names axes without dimension scales: one phony dimension per length.
        var.shape
            .iter()
            .map(|len| {
                let k = phony.iter().position(|l| l == len).unwrap_or_else(|| {
                    phony.push(*len);
                    phony.len() - 1
                });
                format!("phony_dim_{k}")
            })
            .collect()
    });
    let fill_value = var
        .fill_value
        .as_ref()
        .map_or_else(|| default_fill(&var.dtype.numpy), |f| f.value.clone());
    let whole: Vec<u64> = var.shape.iter().map(|&s| s.max(1)).collect();
    let mut metadata = ArrayMetadata {
        shape: var.shape.clone(),
        dtype: var.dtype.numpy.clone(),
        chunk_shape: whole.clone(),
        fill_value,
        codecs,
        dimension_names,
        attributes: to_map(&var.attributes),
    };
    let refs = file.data_refs(var)?;
    if options.load.contains(&var.name) {
        let values = dense::load(file, var, &refs)?;
        return ManifestArray::loaded(metadata, values);
    }
    let elem = var.dtype.size as u64;
    let elements: u64 = var.shape.iter().product();
    let total_bytes = elements.saturating_mul(elem);
    let whole_grid: Vec<u64> = var.shape.iter().map(|&s| u64::from(s > 0)).collect();
    let threshold = options.inline_threshold;
    let manifest = match refs {
        DataRefs::Chunked {
            chunk_shape,
            grid_shape,
            chunks,
        } => {
            metadata.chunk_shape = chunk_shape.iter().map(|&c| c.max(1)).collect();
            // The grid of the NetCDF extent, which can pass the HDF5 one (see netcdf_extent).
            let grid: Vec<u64> = var
                .shape
                .iter()
                .zip(&metadata.chunk_shape)
                .zip(&grid_shape)
                .map(|((&s, &c), &g)| s.div_ceil(c).max(g))
                .collect();
            let mut m = ChunkManifest::new(grid)?;
            let chunk_bytes = chunk_shape.iter().product::<u64>().saturating_mul(elem);
            for c in chunks {
                let flat = m.flat_index(&c.indices).ok_or_else(|| {
                    unsupported(format!(
                        "chunk {:?} lies outside the chunk grid {:?}",
                        c.indices,
                        m.grid_shape()
                    ))
                })?;
                if c.filter_mask != 0 {
                    let bytes = reencode_masked(
                        file,
                        var,
                        &c.indices,
                        c.offset,
                        c.length,
                        c.filter_mask,
                        chunk_bytes,
                    )?;
                    m.set_inlined(flat, bytes)?;
                } else if c.length < threshold {
                    m.set_inlined(flat, file.read_range(c.offset, c.length)?.to_vec())?;
                } else {
                    m.set_reference(flat, 0, c.offset, c.length)?;
                }
            }
            m
        }
        DataRefs::Contiguous { range } => {
            let mut m = ChunkManifest::new(whole_grid)?;
            if let (Some(r), false) = (range, m.is_empty()) {
                if r.length < threshold {
                    m.set_inlined(0, file.read_range(r.offset, r.length)?.to_vec())?;
                } else {
                    m.set_reference(0, 0, r.offset, r.length)?;
                }
            }
            m
        }
        DataRefs::Compact { bytes } => {
            let mut m = ChunkManifest::new(whole_grid)?;
            if !m.is_empty() {
                let n = usize::try_from(total_bytes).unwrap_or(usize::MAX);
                let data = bytes.get(..n).ok_or_else(|| {
                    unsupported(format!(
                        "compact data holds {} bytes, expected {total_bytes}",
                        bytes.len()
                    ))
                })?;
                m.set_inlined(0, data.to_vec())?;
            }
            m
        }
    };
    Ok(ManifestArray { metadata, manifest })
}

/// A chunk whose filter mask skipped filters, made readable by the array's codecs: decoded
/// (undoing only the filters that were applied) and encoded again through the whole
/// pipeline, to be inlined.
fn reencode_masked(
    file: &SourceFile,
    var: &Variable,
    indices: &[u64],
    offset: u64,
    length: u64,
    mask: u32,
    chunk_bytes: u64,
) -> Result<Vec<u8>> {
    let refuse = |reason: String| Error::FilterMask {
        file: file.name().to_string(),
        variable: var.path.clone(),
        chunk: indices.to_vec(),
        mask,
        skipped: var
            .filters
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 32 && mask & (1 << i) != 0)
            .map(|(_, f)| f.name.clone())
            .collect(),
        reason,
    };
    if !codecs::can_reencode(&var.filters) {
        return Err(refuse(
            "referencing it as if fully filtered would decode it wrongly, and only deflate, shuffle \
             and fletcher32 pipelines can be re-encoded here to inline it"
                .into(),
        ));
    }
    if chunk_bytes > MAX_REENCODED_CHUNK as u64 {
        return Err(refuse(format!(
            "the chunk is {chunk_bytes} bytes decoded, more than the {MAX_REENCODED_CHUNK} bytes re-encoded and inlined"
        )));
    }
    let decoded = dense::decode_chunk(file, var, indices, offset, length, mask)?;
    if decoded.len() as u64 != chunk_bytes {
        return Err(refuse(format!(
            "decodes to {} bytes, expected {chunk_bytes}",
            decoded.len()
        )));
    }
    codecs::encode(&var.filters, var.dtype.size, decoded).map_err(refuse)
}
