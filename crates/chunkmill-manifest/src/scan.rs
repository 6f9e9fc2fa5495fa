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
    /// Keep filters no Zarr codec expresses (szip, nbit, scaleoffset, LZF) as chunkmill's own
    /// codec ([`crate::codecs::native`]) instead of inlining or skipping the variable: for
    /// `convert`, which decodes them; never for references others read. With it, a variable
    /// that cannot be referenced (strings, a compound) is loaded whatever its size (up to
    /// [`dense::MAX_LOADED_BYTES`]) and one that cannot be loaded fails the file, as
    /// `convert` must not lose a variable silently.
    pub native_filters: bool,
    /// Variables (by key: `air`, `group/air`) left out without being read.
    pub drop: Vec<String>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            load: Vec::new(),
            native_filters: false,
            drop: Vec::new(),
        }
    }
}

/// A variable a scan left out because it can be neither referenced nor inlined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedVariable {
    /// The file.
    pub file: String,
    /// Its key (`station_name`, `group/air`).
    pub variable: String,
    /// Why it cannot be referenced, and why it was not inlined.
    pub reason: String,
}

/// A scanned file.
#[derive(Debug, Clone)]
pub struct FileScan {
    /// Its arrays, with one URL (path id 0).
    pub dataset: VirtualDataset,
    /// Objects the file holds that are not in the dataset (virtual datasets, external
    /// links), each with the reason.
    pub warnings: Vec<String>,
    /// Variables that could be neither referenced nor inlined.
    pub skipped: Vec<SkippedVariable>,
    /// Keys of [`ScanOptions::drop`] that this file has.
    pub dropped: Vec<String>,
    /// Its unlimited dimensions (a concat dimension can be inferred from them).
    pub unlimited: Vec<String>,
}

/// Opens the local file at `path` and scans it; chunks point at `url`.
///
/// # Errors
/// As [`scan`], and [`Error::Source`] when the file cannot be opened or is not HDF5/NetCDF.
pub fn scan_path(path: &Path, url: &str, options: &ScanOptions) -> Result<FileScan> {
    let file = SourceFile::open_path_for_listing(path)?;
    scan(&file, url, options)
}

/// Scans an open file: every variable becomes a [`ManifestArray`], one by one. A variable
/// that cannot be referenced (a type or filter no Zarr codec reads, a pipeline order numcodecs
/// cannot undo, a filter-masked chunk that cannot be re-encoded) is decoded and inlined when
/// it holds fewer than [`ScanOptions::inline_threshold`] bytes (strings as `vlen-utf8`), and
/// otherwise left out and listed in [`FileScan::skipped`]: never the whole file.
///
/// # Errors
/// Errors of the file rather than of one variable: listing errors of chunkmill-hdf5
/// ([`Error::Source`]), a chunk that does not decode ([`Error::Decode`]).
pub fn scan(file: &SourceFile, url: &str, options: &ScanOptions) -> Result<FileScan> {
    scan_listed(file, &file.inventory()?, url, options)
}

/// [`scan`] of a file whose [`SourceFile::inventory`] the caller already holds (the Python
/// package lists it for the storage encodings it reports), so that it is not read twice.
///
/// # Errors
/// As [`scan`].
pub fn scan_listed(
    file: &SourceFile,
    inventory: &chunkmill_hdf5::Inventory,
    url: &str,
    options: &ScanOptions,
) -> Result<FileScan> {
    let mut groups = BTreeMap::new();
    for g in &inventory.groups {
        groups.insert(group_key(&g.path), to_map(&g.attributes));
    }
    let mut phony: Vec<u64> = Vec::new();
    let mut arrays = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut dropped = Vec::new();
    let unlimited = netcdf4_unlimited_lengths(inventory);
    for var in &inventory.variables {
        let key = match group_key(&var.group) {
            g if g.is_empty() => var.name.clone(),
            g => format!("{g}/{}", var.name),
        };
        if options.drop.contains(&key) {
            dropped.push(key);
            continue;
        }
        let var = netcdf_extent(var, &unlimited);
        match scan_variable(file, &var, options, &mut phony) {
            Ok(array) => {
                arrays.insert(key, array);
            }
            Err(e) => {
                let Some(why) = variable_reason(&e) else {
                    return Err(e);
                };
                match inline_decoded(file, &var, options, &mut phony) {
                    Ok(array) => {
                        arrays.insert(key, array);
                    }
                    // convert reads every variable it is given: one it can neither reference
                    // nor load stays an error there rather than vanishing.
                    Err(_) if options.native_filters => return Err(e),
                    Err(not_inlined) => skipped.push(SkippedVariable {
                        file: file.name().to_string(),
                        variable: key,
                        reason: format!("{why}; {not_inlined}"),
                    }),
                }
            }
        }
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
            encodings: BTreeMap::new(),
        },
        warnings,
        skipped,
        dropped,
        unlimited: inventory
            .dimensions
            .iter()
            .filter(|d| d.unlimited)
            .map(|d| d.name.clone())
            .collect(),
    })
}

/// Why `e` keeps one variable, not the file, from being referenced (`None`: a file error).
fn variable_reason(e: &Error) -> Option<String> {
    match e {
        Error::UnsupportedFilter {
            filter, id, reason, ..
        } => Some(format!(
            "filter {filter} (HDF5 id {id}) has no Zarr codec: {reason}"
        )),
        Error::Unsupported { reason, .. }
        | Error::Source(chunkmill_hdf5::Error::Unsupported { reason, .. }) => Some(reason.clone()),
        Error::FilterMask {
            chunk,
            skipped,
            reason,
            ..
        } => Some(format!(
            "chunk {chunk:?} skipped filters {skipped:?}: {reason}"
        )),
        _ => None,
    }
}

/// The metadata every array of `var` starts from: its shape, dtype, fill value, dimension
/// names and attributes, one chunk of the whole shape, and `codecs`.
fn base_metadata(
    var: &Variable,
    codecs: Vec<codecs::Codec>,
    phony: &mut Vec<u64>,
) -> ArrayMetadata {
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
    ArrayMetadata {
        shape: var.shape.clone(),
        dtype: var.dtype.numpy.clone(),
        chunk_shape: var.shape.iter().map(|&s| s.max(1)).collect(),
        fill_value,
        codecs,
        dimension_names,
        attributes: to_map(&var.attributes),
        attribute_types: var
            .attributes
            .iter()
            .filter_map(|a| Some((a.name.clone(), a.dtype.clone()?)))
            .collect(),
    }
}

/// `var` decoded and held inline as one uncompressed chunk, when it is smaller than the
/// inline threshold (or is loaded anyway, see [`ScanOptions::load`]); `Err` says why not.
fn inline_decoded(
    file: &SourceFile,
    var: &Variable,
    options: &ScanOptions,
    phony: &mut Vec<u64>,
) -> std::result::Result<ManifestArray, String> {
    // convert (native_filters) loads any variable it can, up to dense::MAX_LOADED_BYTES.
    let threshold = if options.native_filters {
        u64::MAX
    } else {
        options.inline_threshold
    };
    let too_large = |bytes: u64| {
        format!(
            "not inlined: {bytes} bytes decoded, and only variables of fewer than \
             --inline-threshold {threshold} bytes are"
        )
    };
    let elements: u64 = var.shape.iter().product();
    match var.dtype.class {
        "vlen_string" => {
            let mut strings = file.read_strings(var).map_err(|e| e.to_string())?;
            // Elements past the HDF5 extent (a NetCDF-4 unlimited dimension, see
            // netcdf_extent) read as netCDF-C's empty-string fill.
            strings.resize(
                usize::try_from(elements).unwrap_or(usize::MAX),
                String::new(),
            );
            let bytes = codecs::encode_vlen_utf8(&strings)?;
            if bytes.len() as u64 >= threshold {
                return Err(too_large(bytes.len() as u64));
            }
            let mut metadata = base_metadata(var, vec![codecs::Codec::vlen_utf8()], phony);
            metadata.dtype = "|O".into();
            metadata.fill_value = Value::String(String::new());
            let grid: Vec<u64> = var.shape.iter().map(|&s| u64::from(s > 0)).collect();
            let mut manifest = ChunkManifest::new(grid).map_err(|e| e.to_string())?;
            if !manifest.is_empty() {
                manifest.set_inlined(0, bytes).map_err(|e| e.to_string())?;
            }
            Ok(ManifestArray { metadata, manifest })
        }
        "compound" => {
            let packed = structured(var)?;
            let bytes = elements.saturating_mul(packed.size as u64);
            if bytes >= threshold && !options.load.contains(&var.name) {
                return Err(too_large(bytes));
            }
            let refs = file.data_refs(var).map_err(|e| e.to_string())?;
            let values = dense::load(file, var, &refs).map_err(|e| e.to_string())?;
            let mut metadata = base_metadata(var, vec![codecs::Codec::bytes(packed.order)], phony);
            metadata.dtype.clone_from(&packed.descr);
            // Zarr v3's struct fill value is an object of field values; never written chunks
            // do not occur (the variable is one inlined chunk).
            metadata.fill_value = Value::Object(
                var.fields
                    .iter()
                    .map(|f| (f.name.clone(), default_fill(&f.dtype.numpy)))
                    .collect(),
            );
            ManifestArray::loaded(metadata, packed.pack(&values, var.dtype.size))
                .map_err(|e| e.to_string())
        }
        "vlen" | "opaque" | "array" | "reference" => Err(format!(
            "not inlined: chunkmill writes no Zarr data type for the {} type {}",
            var.dtype.class, var.dtype.numpy
        )),
        _ => {
            let bytes = elements.saturating_mul(var.dtype.size as u64);
            if bytes >= threshold && !options.load.contains(&var.name) {
                return Err(too_large(bytes));
            }
            let refs = file.data_refs(var).map_err(|e| e.to_string())?;
            let values = dense::load(file, var, &refs).map_err(|e| e.to_string())?;
            let endian = match var.dtype.byte_order {
                chunkmill_hdf5::ByteOrder::NotApplicable => None,
                o => Some(o),
            };
            let metadata = base_metadata(var, vec![codecs::Codec::bytes(endian)], phony);
            ManifestArray::loaded(metadata, values).map_err(|e| e.to_string())
        }
    }
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
    let mut metadata = base_metadata(var, codecs, phony);
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
            if let Some(e) = codecs::inexpressible_order(&var.filters, var.dtype.size, chunk_bytes)
            {
                return Err(unsupported(format!(
                    "filter {} (HDF5 id {}) cannot be read by Zarr in this pipeline ({}): {}",
                    e.filter,
                    e.id,
                    var.filters
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" → "),
                    e.reason
                )));
            }
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

/// A compound type as a packed numpy structured type.
struct Packed {
    /// numpy's `descr` as JSON text (see [`crate::array::structured_fields`]).
    descr: String,
    /// The fields' byte order (one for all), `None` when every field is one byte.
    order: Option<chunkmill_hdf5::ByteOrder>,
    /// Each field's offset in the stored element and size.
    fields: Vec<(usize, usize)>,
    /// Bytes of a packed element.
    size: usize,
}

impl Packed {
    /// Stored elements of `stored_size` bytes (fields at their offsets, maybe padded) as
    /// packed ones.
    fn pack(&self, values: &[u8], stored_size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() / stored_size.max(1) * self.size);
        for element in values.chunks_exact(stored_size.max(1)) {
            for &(offset, size) in &self.fields {
                out.extend_from_slice(element.get(offset..offset + size).unwrap_or(&[]));
            }
        }
        out
    }
}

/// `var`'s compound type as a packed structured type, or why Zarr cannot hold it: a member
/// that is not a number, a boolean or a fixed-length byte string, members of mixed byte
/// order (one `bytes` codec carries the order), members outside the element.
fn structured(var: &Variable) -> std::result::Result<Packed, String> {
    let mut descr = Vec::new();
    let mut fields = Vec::new();
    let mut order = None;
    for f in &var.fields {
        let plain = matches!(
            f.dtype.class,
            "integer" | "float" | "bool" | "string" | "char"
        ) && !f.dtype.numpy.starts_with("|O");
        if !plain || f.offset + f.dtype.size > var.dtype.size {
            return Err(format!(
                "not inlined: compound member {} of type {} has no Zarr struct field type",
                f.name, f.dtype.numpy
            ));
        }
        if f.dtype.byte_order != chunkmill_hdf5::ByteOrder::NotApplicable {
            if order.is_some_and(|o| o != f.dtype.byte_order) {
                return Err("not inlined: compound members of both byte orders".into());
            }
            order = Some(f.dtype.byte_order);
        }
        descr.push(Value::from(vec![
            Value::from(f.name.clone()),
            Value::from(f.dtype.numpy.clone()),
        ]));
        fields.push((f.offset, f.dtype.size));
    }
    if fields.is_empty() {
        return Err("not inlined: a compound type without members".into());
    }
    Ok(Packed {
        descr: Value::Array(descr).to_string(),
        order,
        size: fields.iter().map(|(_, s)| s).sum(),
        fields,
    })
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
