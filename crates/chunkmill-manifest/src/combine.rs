//! Joining virtual datasets along a dimension, strictly.
//!
//! With `concat_dim` present in the inputs, every array that has it is concatenated along it;
//! absent, every array but the dimension coordinates is stacked along a new leading
//! dimension of that name. Arrays named in `identical_dims` must be equal in every input
//! (compared by value: they are loaded by the scan) and are taken once; other arrays without
//! the concat dimension are taken from the first input.
//!
//! Before joining an array, each input is compared with the first, and the first difference
//! is an error naming the input, the array and both values: dtype, codecs and their
//! parameters, fill value, dimension names, the CF encoding attributes (`scale_factor`,
//! `add_offset`, `_FillValue`, `missing_value`), for the concat coordinate also `units` and
//! `calendar`, the shape off the concat axis and the chunk shape. References cannot express a
//! partial chunk in the middle of an array (zarr-specs #394), so every input but the last must
//! have a length along the concat dimension that is a multiple of the chunk length. The concat
//! coordinate itself is loaded, so its values are concatenated and inlined whatever its
//! chunking (a NetCDF-4 unlimited `time` is often one 512-element chunk per file).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::array::{ManifestArray, VirtualDataset};
use crate::dense::concat_values;
use crate::error::{Error, Mismatch, Result};
use crate::manifest::ChunkManifest;

/// CF attributes that change how stored values decode: they must agree between inputs.
pub const CF_ENCODING_ATTRIBUTES: [&str; 4] =
    ["scale_factor", "add_offset", "_FillValue", "missing_value"];

/// Attributes of the concat coordinate that must agree (the values are encoded with them).
pub const CONCAT_COORDINATE_ATTRIBUTES: [&str; 2] = ["units", "calendar"];

/// How to join.
#[derive(Debug, Clone, Default)]
pub struct CombineOptions {
    /// The dimension to concatenate along (or to stack along, when no input has it).
    /// `None` only for one input.
    pub concat_dim: Option<String>,
    /// Variables that must be equal in every input (compared by value) and are taken once.
    pub identical_dims: Vec<String>,
}

enum Role {
    Concat(usize),
    Stack,
    Once,
    Identical,
}

/// The last part of an array key (`"g/air"` → `"air"`).
fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// JSON values equal, numbers by value (`1 == 1.0`).
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_string(), Value::to_string)
}

/// Orders inputs by the first value of their loaded concat coordinate (as
/// `xarray.combine_by_coords` does), keeping the given order among equal values and when any
/// input lacks a loaded numeric coordinate. Returns whether the order changed.
pub fn order_by_coordinate(parts: &mut [VirtualDataset], concat_dim: &str) -> bool {
    let keys: Option<Vec<f64>> = parts
        .iter()
        .map(|p| {
            let a = p.arrays.get(concat_dim)?;
            first_as_f64(&a.metadata.dtype, a.loaded_values()?)
        })
        .collect();
    let Some(keys) = keys else {
        return false;
    };
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    if order.iter().enumerate().all(|(i, &o)| i == o) {
        return false;
    }
    let mut taken: Vec<Option<VirtualDataset>> =
        parts.iter_mut().map(|p| Some(std::mem::take(p))).collect();
    for (slot, &o) in parts.iter_mut().zip(&order) {
        if let Some(p) = taken[o].take() {
            *slot = p;
        }
    }
    true
}

/// The first element of C-order values of numpy `dtype` as f64.
fn first_as_f64(dtype: &str, bytes: &[u8]) -> Option<f64> {
    let size = crate::array::dtype_size(dtype);
    let b = bytes.get(..size)?;
    let mut le = b.to_vec();
    if dtype.starts_with('>') {
        le.reverse();
    }
    let mut buf = [0u8; 8];
    buf[..size.min(8)].copy_from_slice(&le[..size.min(8)]);
    let kind = dtype.chars().nth(1)?;
    Some(match (kind, size) {
        ('f', 4) => f64::from(f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
        ('f', 8) => f64::from_le_bytes(buf),
        ('i', n @ (1 | 2 | 4 | 8)) => {
            let shift = 64 - 8 * n as u32;
            ((i64::from_le_bytes(buf) << shift) >> shift) as f64
        }
        ('u', 1 | 2 | 4 | 8) => u64::from_le_bytes(buf) as f64,
        _ => return None,
    })
}

/// Joins `parts` as `options` says (see the module documentation).
///
/// # Errors
/// [`Error::Usage`] for no input, or several without a concat dimension;
/// [`Error::Mismatch`] for the first difference between an input and the first;
/// [`Error::Combine`] for a partial chunk before the last input or an identical-dims variable
/// that was not loaded.
pub fn combine(parts: Vec<VirtualDataset>, options: &CombineOptions) -> Result<VirtualDataset> {
    let Some(dim) = options.concat_dim.as_deref() else {
        let mut parts = parts;
        return match parts.len() {
            0 => Err(Error::Usage("no input to combine".into())),
            1 => Ok(parts.remove(0)),
            n => Err(Error::Usage(format!(
                "{n} inputs and no concat dimension: name the dimension to concatenate (or stack) along"
            ))),
        };
    };
    let first = parts
        .first()
        .ok_or_else(|| Error::Usage("no input to combine".into()))?;

    // Same variables everywhere.
    for p in &parts[1..] {
        let mismatch = |key: &str, got: &str, expected: &str| {
            Error::Mismatch(Box::new(Mismatch {
                file: p.name.clone(),
                variable: key.to_string(),
                what: "presence".into(),
                got: got.into(),
                expected: expected.into(),
                first: first.name.clone(),
            }))
        };
        if let Some(key) = first.arrays.keys().find(|k| !p.arrays.contains_key(*k)) {
            return Err(mismatch(key, "absent", "present"));
        }
        if let Some(key) = p.arrays.keys().find(|k| !first.arrays.contains_key(*k)) {
            return Err(mismatch(key, "present", "absent"));
        }
    }

    let concat_mode = first
        .arrays
        .values()
        .any(|a| a.metadata.dimension_names.iter().any(|d| d == dim));
    let mut urls = Vec::new();
    let mut url_offsets = Vec::with_capacity(parts.len());
    for p in &parts {
        url_offsets
            .push(u32::try_from(urls.len()).map_err(|_| Error::Manifest("too many URLs".into()))?);
        urls.extend(p.urls.iter().cloned());
    }

    let mut arrays = BTreeMap::new();
    for key in first.arrays.keys() {
        let all: Vec<&ManifestArray> = parts.iter().filter_map(|p| p.arrays.get(key)).collect();
        let name = base_name(key);
        let dims = &all[0].metadata.dimension_names;
        if dims.len() != all[0].metadata.shape.len() {
            return Err(Error::Combine {
                file: parts[0].name.clone(),
                variable: key.clone(),
                reason: format!(
                    "{} dimension names for {} axes",
                    dims.len(),
                    all[0].metadata.shape.len()
                ),
            });
        }
        let role = if options.identical_dims.iter().any(|d| d == name) {
            Role::Identical
        } else if concat_mode {
            match dims.iter().position(|d| d == dim) {
                Some(axis) => Role::Concat(axis),
                None => Role::Once,
            }
        } else if dims.len() == 1 && dims[0] == name {
            Role::Once
        } else {
            Role::Stack
        };
        let joined = match role {
            Role::Once => {
                let mut a = all[0].clone();
                a.manifest.shift_paths(url_offsets[0])?;
                a
            }
            Role::Identical => identical(&parts, key, &all)?,
            Role::Concat(axis) => {
                check_common(&parts, key, &all, name == dim)?;
                concat(&parts, key, &all, axis, dim, &url_offsets)?
            }
            Role::Stack => {
                check_common(&parts, key, &all, false)?;
                stack(&parts, key, &all, dim, &url_offsets)?
            }
        };
        arrays.insert(key.clone(), joined);
    }
    Ok(VirtualDataset {
        name: format!("{} inputs joined along {dim}", parts.len()),
        urls,
        groups: first.groups.clone(),
        arrays,
    })
}

fn mismatch(
    parts: &[VirtualDataset],
    i: usize,
    key: &str,
    what: &str,
    got: String,
    expected: String,
) -> Error {
    Error::Mismatch(Box::new(Mismatch {
        file: parts[i].name.clone(),
        variable: key.to_string(),
        what: what.to_string(),
        got,
        expected,
        first: parts[0].name.clone(),
    }))
}

/// dtype, codecs, fill value, dimension names and CF encoding attributes agree with the first.
fn check_common(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    concat_coordinate: bool,
) -> Result<()> {
    let f = &all[0].metadata;
    for (i, a) in all.iter().enumerate().skip(1) {
        let m = &a.metadata;
        let err = |what: &str, got: String, expected: String| {
            mismatch(parts, i, key, what, got, expected)
        };
        if m.dtype != f.dtype {
            return Err(err("dtype", m.dtype.clone(), f.dtype.clone()));
        }
        if m.codecs != f.codecs {
            let show = |c: &[crate::codecs::Codec]| {
                Value::from(
                    c.iter()
                        .map(crate::codecs::Codec::to_v3)
                        .collect::<Vec<_>>(),
                )
                .to_string()
            };
            return Err(err("codecs", show(&m.codecs), show(&f.codecs)));
        }
        if m.dimension_names != f.dimension_names {
            return Err(err(
                "dimension names",
                format!("{:?}", m.dimension_names),
                format!("{:?}", f.dimension_names),
            ));
        }
        let mut attributes: Vec<&str> = CF_ENCODING_ATTRIBUTES.to_vec();
        if concat_coordinate {
            attributes.extend(CONCAT_COORDINATE_ATTRIBUTES);
        }
        for name in attributes {
            let (got, want) = (m.attributes.get(name), f.attributes.get(name));
            let same = match (got, want) {
                (Some(x), Some(y)) => same_value(x, y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Err(err(&format!("attribute {name}"), show(got), show(want)));
            }
        }
        if !same_value(&m.fill_value, &f.fill_value) {
            return Err(err(
                "fill value",
                m.fill_value.to_string(),
                f.fill_value.to_string(),
            ));
        }
    }
    Ok(())
}

fn concat(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    axis: usize,
    dim: &str,
    url_offsets: &[u32],
) -> Result<ManifestArray> {
    let f = &all[0].metadata;
    let mut shape = f.shape.clone();
    shape[axis] = 0;
    for (i, a) in all.iter().enumerate() {
        let s = &a.metadata.shape;
        let same_off_axis = s.len() == f.shape.len()
            && s.iter()
                .zip(&f.shape)
                .enumerate()
                .all(|(d, (x, y))| d == axis || x == y);
        if !same_off_axis {
            return Err(mismatch(
                parts,
                i,
                key,
                &format!("shape off the {dim} axis"),
                format!("{s:?}"),
                format!("{:?}", f.shape),
            ));
        }
        shape[axis] += s[axis];
    }
    let loaded: Option<Vec<&[u8]>> = all.iter().map(|a| a.loaded_values()).collect();
    if let Some(values) = loaded {
        let shapes: Vec<Vec<u64>> = all.iter().map(|a| a.metadata.shape.clone()).collect();
        let joined = concat_values(&values, &shapes, axis, f.element_size());
        let mut metadata = f.clone();
        metadata.shape = shape;
        return ManifestArray::loaded(metadata, joined);
    }
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.chunk_shape != f.chunk_shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "chunk shape",
                format!("{:?}", a.metadata.chunk_shape),
                format!("{:?}", f.chunk_shape),
            ));
        }
    }
    let chunk = f.chunk_shape[axis];
    for (i, a) in all.iter().enumerate().take(all.len() - 1) {
        let len = a.metadata.shape[axis];
        if len % chunk != 0 {
            return Err(Error::Combine {
                file: parts[i].name.clone(),
                variable: key.to_string(),
                reason: format!(
                    "{len} elements along {dim} is not a multiple of the chunk length {chunk}: only the \
                     last input may end in a partial chunk (references cannot express a partial chunk \
                     in the middle of an array); put this input last, or rechunk/copy this variable"
                ),
            });
        }
    }
    let mut manifests = Vec::with_capacity(all.len());
    for (a, &off) in all.iter().zip(url_offsets) {
        let mut m = a.manifest.clone();
        m.shift_paths(off)?;
        manifests.push(m);
    }
    let refs: Vec<&ChunkManifest> = manifests.iter().collect();
    let manifest = ChunkManifest::concat(&refs, axis)?;
    let mut metadata = f.clone();
    metadata.shape = shape;
    Ok(ManifestArray { metadata, manifest })
}

fn stack(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    dim: &str,
    url_offsets: &[u32],
) -> Result<ManifestArray> {
    let f = &all[0].metadata;
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.shape != f.shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "shape",
                format!("{:?}", a.metadata.shape),
                format!("{:?}", f.shape),
            ));
        }
        if a.metadata.chunk_shape != f.chunk_shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "chunk shape",
                format!("{:?}", a.metadata.chunk_shape),
                format!("{:?}", f.chunk_shape),
            ));
        }
    }
    let mut manifests = Vec::with_capacity(all.len());
    for (a, &off) in all.iter().zip(url_offsets) {
        let mut m = a.manifest.clone();
        m.shift_paths(off)?;
        manifests.push(m);
    }
    let refs: Vec<&ChunkManifest> = manifests.iter().collect();
    let manifest = ChunkManifest::stack(&refs)?;
    let mut metadata = f.clone();
    metadata.shape.insert(0, all.len() as u64);
    metadata.chunk_shape.insert(0, 1);
    metadata.dimension_names.insert(0, dim.to_string());
    Ok(ManifestArray { metadata, manifest })
}

fn identical(parts: &[VirtualDataset], key: &str, all: &[&ManifestArray]) -> Result<ManifestArray> {
    let f = all[0];
    let first_values = f.loaded_values().ok_or_else(|| Error::Combine {
        file: parts[0].name.clone(),
        variable: key.to_string(),
        reason: "an identical-dims variable must be loaded to be compared (scan with it in ScanOptions::load)".into(),
    })?;
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.dtype != f.metadata.dtype {
            return Err(mismatch(
                parts,
                i,
                key,
                "dtype",
                a.metadata.dtype.clone(),
                f.metadata.dtype.clone(),
            ));
        }
        if a.metadata.shape != f.metadata.shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "shape",
                format!("{:?}", a.metadata.shape),
                format!("{:?}", f.metadata.shape),
            ));
        }
        let values = a.loaded_values().ok_or_else(|| Error::Combine {
            file: parts[i].name.clone(),
            variable: key.to_string(),
            reason: "an identical-dims variable must be loaded to be compared".into(),
        })?;
        if values != first_values {
            let elem = f.metadata.element_size().max(1);
            let at = values
                .iter()
                .zip(first_values)
                .position(|(x, y)| x != y)
                .map_or(0, |b| b / elem);
            return Err(mismatch(
                parts,
                i,
                key,
                "values",
                format!("a different value at element {at}"),
                "the same values".into(),
            ));
        }
    }
    Ok(f.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::ArrayMetadata;
    use crate::codecs::Codec;
    use serde_json::Map;

    fn array(shape: u64, chunk: u64, scale: f64) -> Result<ManifestArray> {
        let mut attributes = Map::new();
        attributes.insert("scale_factor".into(), Value::from(scale));
        let metadata = ArrayMetadata {
            shape: vec![shape, 2],
            dtype: "<i2".into(),
            chunk_shape: vec![chunk, 2],
            fill_value: Value::from(-1),
            codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
            dimension_names: vec!["time".into(), "x".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        };
        let mut manifest = ChunkManifest::new(vec![shape.div_ceil(chunk), 1])?;
        for i in 0..manifest.len() {
            manifest.set_reference(i, 0, 100 * i as u64, 8)?;
        }
        Ok(ManifestArray { metadata, manifest })
    }

    fn dataset(name: &str, a: ManifestArray) -> VirtualDataset {
        let mut arrays = BTreeMap::new();
        arrays.insert("v".to_string(), a);
        VirtualDataset {
            name: name.into(),
            urls: vec![name.into()],
            groups: BTreeMap::new(),
            arrays,
        }
    }

    fn opts() -> CombineOptions {
        CombineOptions {
            concat_dim: Some("time".into()),
            identical_dims: vec![],
        }
    }

    #[test]
    fn concat_joins_manifests_and_url_tables() -> Result<()> {
        let out = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(3, 2, 0.1)?),
            ],
            &opts(),
        )?;
        let v = &out.arrays["v"];
        assert_eq!(v.metadata.shape, vec![7, 2]);
        assert_eq!(v.manifest.path_ids(), &[0, 0, 1, 1]);
        assert_eq!(out.urls, vec!["a", "b"]);
        Ok(())
    }

    #[test]
    fn differing_scale_factor_is_named() -> Result<()> {
        let err = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(4, 2, 0.2)?),
            ],
            &opts(),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("b: v: attribute scale_factor differs: got 0.2, expected 0.1 (as in a)")
        );
        Ok(())
    }

    #[test]
    fn a_partial_chunk_before_the_last_input_is_refused() -> Result<()> {
        let err = combine(
            vec![
                dataset("a", array(3, 2, 0.1)?),
                dataset("b", array(4, 2, 0.1)?),
            ],
            &opts(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("a: v: 3 elements along time is not a multiple of the chunk length 2"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn stacking_adds_the_dimension() -> Result<()> {
        let o = CombineOptions {
            concat_dim: Some("member".into()),
            identical_dims: vec![],
        };
        let out = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(4, 2, 0.1)?),
            ],
            &o,
        )?;
        let v = &out.arrays["v"];
        assert_eq!(v.metadata.shape, vec![2, 4, 2]);
        assert_eq!(v.metadata.chunk_shape, vec![1, 2, 2]);
        assert_eq!(v.metadata.dimension_names[0], "member");
        Ok(())
    }

    #[test]
    fn first_values_decode() {
        assert_eq!(first_as_f64(">f8", &2.5f64.to_be_bytes()), Some(2.5));
        assert_eq!(first_as_f64("<i2", &(-3i16).to_le_bytes()), Some(-3.0));
        assert_eq!(first_as_f64("|u1", &[7]), Some(7.0));
    }
}
