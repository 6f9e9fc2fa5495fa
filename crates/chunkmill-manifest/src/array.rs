//! [`ManifestArray`] (Zarr metadata + a [`ChunkManifest`]) and [`VirtualDataset`] (a URL
//! table, group attributes and arrays by key).

use std::collections::BTreeMap;

use base64::Engine as _;
use chunkmill_store::DataType;
use serde_json::{Map, Value};

use crate::codecs::Codec;
use crate::error::{Error, Result};
use crate::manifest::{ChunkEntry, ChunkManifest};

/// Attributes whose value is a number of the variable's type (or of the packed type), so a
/// NaN or an infinity in them is written as a JSON number literal (`NaN`), as zarr-python
/// does, rather than as the string `"NaN"` that xarray would take for text.
const NUMERIC_CF_ATTRIBUTES: [&str; 8] = [
    "_FillValue",
    "missing_value",
    "valid_min",
    "valid_max",
    "valid_range",
    "actual_range",
    "scale_factor",
    "add_offset",
];

/// Zarr metadata of one array, v3-style, with the numpy dtype kept whole (byte order
/// included) so that Zarr v2 (kerchunk) output needs no guess.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayMetadata {
    /// Extent along each axis.
    pub shape: Vec<u64>,
    /// numpy `dtype.str`: `<f4`, `>i2`, `|u1`, `|b1`, `|S4`.
    pub dtype: String,
    /// Chunk extent along each axis (every axis ≥ 1).
    pub chunk_shape: Vec<u64>,
    /// The value of never-written elements, as Zarr JSON: a number, `"NaN"`, `"Infinity"`,
    /// `"-Infinity"`, a bool, or base64 for byte strings.
    pub fill_value: Value,
    /// The Zarr v3 codec list: `bytes` (with the byte order), then one codec per HDF5 filter.
    pub codecs: Vec<Codec>,
    /// One name per axis.
    pub dimension_names: Vec<String>,
    /// User attributes, CF ones included (`units`, `calendar`, `scale_factor`, `add_offset`,
    /// `_FillValue`, `missing_value`, …), as chunkmill-hdf5 lists them.
    pub attributes: Map<String, Value>,
    /// numpy's name of each numeric attribute's stored type (`scale_factor` → `float32`),
    /// as the scanned file stores it: JSON numbers lose it, and xarray's CF decoding depends
    /// on it. Empty for arrays read from references (JSON), whose attributes are Python
    /// floats and ints to xarray as well.
    pub attribute_types: BTreeMap<String, String>,
}

impl ArrayMetadata {
    /// Bytes of one element, from the dtype (`<f4` → 4).
    pub fn element_size(&self) -> usize {
        dtype_size(&self.dtype)
    }

    /// Chunks along each axis: the last one may run past the array's end.
    #[must_use]
    pub fn grid_shape(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunk_shape)
            .map(|(&s, &c)| s.div_ceil(c.max(1)))
            .collect()
    }

    /// The Zarr v3 `data_type`: `float32`, `int16`, `bool`, … (byte order lives in the
    /// `bytes` codec); byte strings are `null_terminated_bytes` as zarr-python 3 names them;
    /// a structured type is a `struct` of its fields.
    pub fn data_type_v3(&self) -> Value {
        data_type_v3(&self.dtype)
    }

    /// `zarr.json` of this array (Zarr v3), without any storage transformer: the chunk
    /// manifest is held alongside (Icechunk) or in kerchunk references.
    pub fn to_zarr_v3(&self) -> Value {
        serde_json::json!({
            "zarr_format": 3,
            "node_type": "array",
            "shape": self.shape,
            "data_type": self.data_type_v3(),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": self.chunk_shape}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": self.fill_value,
            "codecs": self.codecs.iter().map(Codec::to_v3).collect::<Vec<_>>(),
            "dimension_names": self.dimension_names,
            "attributes": self.attributes,
        })
    }

    /// `.zarray` (Zarr v2) of this array. Every codec but `bytes` goes into `filters` in
    /// pipeline order and `compressor` is null, as kerchunk writes it. The fill value is the
    /// `_FillValue` attribute when there is one (xarray reads `_FillValue` from here); else the
    /// format's fill value when some chunk is missing; else null.
    pub fn to_zarray(&self, has_missing_chunks: bool) -> Value {
        let filters: Vec<Value> = self.codecs.iter().filter_map(Codec::to_numcodecs).collect();
        let fill = match self.attributes.get("_FillValue") {
            Some(v) => v2_fill_value(&self.dtype, v),
            None if has_missing_chunks => v2_fill_value(&self.dtype, &self.fill_value),
            None => Value::Null,
        };
        // A structured type is numpy's `descr` list, not a string.
        let dtype = match structured_fields(&self.dtype) {
            Some(_) => serde_json::from_str(&self.dtype).unwrap_or(Value::Null),
            None => Value::String(self.dtype.clone()),
        };
        serde_json::json!({
            "shape": self.shape,
            "chunks": self.chunk_shape,
            "dtype": dtype,
            "fill_value": fill,
            "order": "C",
            "filters": if filters.is_empty() { Value::Null } else { Value::Array(filters) },
            "dimension_separator": ".",
            "compressor": Value::Null,
            "zarr_format": 2,
        })
    }

    /// `.zattrs` (Zarr v2) text: the attributes less `_FillValue` (it is the `.zarray` fill
    /// value), plus `_ARRAY_DIMENSIONS`. NaN and infinities of numeric CF attributes of float
    /// variables are written as the literals zarr-python writes (`NaN`, `Infinity`).
    pub fn to_zattrs(&self) -> String {
        let float = self.dtype.chars().nth(1) == Some('f');
        let mut out = String::from("{");
        let mut first = true;
        let mut push = |out: &mut String, key: &str, value: String| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&json_string(key));
            out.push(':');
            out.push_str(&value);
        };
        push(
            &mut out,
            "_ARRAY_DIMENSIONS",
            Value::from(self.dimension_names.clone()).to_string(),
        );
        for (k, v) in &self.attributes {
            if k == "_FillValue" || k == "_ARRAY_DIMENSIONS" {
                continue;
            }
            let text = if float && NUMERIC_CF_ATTRIBUTES.contains(&k.as_str()) {
                numeric_literal(v)
            } else {
                v.to_string()
            };
            push(&mut out, k, text);
        }
        out.push('}');
        out
    }
}

/// See [`ArrayMetadata::data_type_v3`]; a type we cannot name is raw bytes of its size.
fn data_type_v3(dtype: &str) -> Value {
    DataType::from_typestr(dtype).map_or_else(
        |_| Value::String(format!("r{}", dtype_size(dtype) * 8)),
        |t| t.to_v3(),
    )
}

/// A JSON value where the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (also inside arrays)
/// become the bare literals that Python's `json` reads.
fn numeric_literal(v: &Value) -> String {
    match v {
        Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(numeric_literal).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Size in bytes of a numpy dtype string (`<f4` → 4, `|S10` → 10, `|b1` → 1, a structured
/// type's fields together); 1 for a variable-length one (`|O`), whose chunks hold offsets.
pub(crate) fn dtype_size(dtype: &str) -> usize {
    DataType::from_typestr(dtype)
        .ok()
        .and_then(|t| t.size())
        .unwrap_or(1)
}

/// The fields of a structured dtype, which is held as the JSON text of numpy's packed
/// `descr` (`[["id","<i4"],["value","<f8"]]`, as Zarr v2 writes it); `None` for any other.
pub fn structured_fields(dtype: &str) -> Option<Vec<(String, String)>> {
    if !dtype.starts_with('[') {
        return None;
    }
    serde_json::from_str(dtype).ok()
}

/// A fill value as Zarr v2 writes it for `dtype`: byte strings in base64, others as given.
fn v2_fill_value(dtype: &str, value: &Value) -> Value {
    if dtype.chars().nth(1) == Some('S') {
        return match value {
            Value::String(s) => {
                let mut bytes = s.as_bytes().to_vec();
                bytes.resize(dtype_size(dtype), 0);
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => Value::Null,
        };
    }
    value.clone()
}

/// One array: its Zarr metadata and where its chunks are.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestArray {
    /// Shape, dtype, chunks, fill value, codecs, dimension names, attributes.
    pub metadata: ArrayMetadata,
    /// Where every chunk is.
    pub manifest: ChunkManifest,
}

impl ManifestArray {
    /// A loaded array: its decoded values (C order, the dtype's byte order) inlined as one
    /// uncompressed chunk of the whole shape. Small coordinates are held this way so that
    /// they can be concatenated or compared by value.
    ///
    /// # Errors
    /// [`Error::Manifest`] when `values` does not hold exactly the array's elements.
    pub fn loaded(mut metadata: ArrayMetadata, values: Vec<u8>) -> Result<Self> {
        let elements: u64 = metadata.shape.iter().product();
        let want = elements.saturating_mul(metadata.element_size() as u64);
        if values.len() as u64 != want {
            return Err(Error::Manifest(format!(
                "loaded values of shape {:?} need {want} bytes, got {}",
                metadata.shape,
                values.len()
            )));
        }
        metadata.chunk_shape = metadata.shape.iter().map(|&s| s.max(1)).collect();
        metadata.codecs.retain(Codec::is_bytes);
        let grid: Vec<u64> = metadata.shape.iter().map(|&s| u64::from(s > 0)).collect();
        let mut manifest = ChunkManifest::new(grid)?;
        if !manifest.is_empty() {
            manifest.set_inlined(0, values)?;
        }
        Ok(Self { metadata, manifest })
    }

    /// The decoded values of a loaded array (see [`ManifestArray::loaded`]), `None` if it is
    /// not one. An empty array is loaded with no values.
    pub fn loaded_values(&self) -> Option<&[u8]> {
        let m = &self.metadata;
        let whole = m
            .chunk_shape
            .iter()
            .zip(&m.shape)
            .all(|(&c, &s)| c == s.max(1));
        if !whole || !m.codecs.iter().all(Codec::is_bytes) {
            return None;
        }
        if self.manifest.is_empty() {
            return Some(&[]);
        }
        match self.manifest.get(0) {
            Some(ChunkEntry::Inlined(bytes)) if self.manifest.len() == 1 => Some(bytes),
            _ => None,
        }
    }
}

/// The last part of an array key (`"g/air"` → `"air"`).
pub(crate) fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// A virtual dataset: a URL table, group attributes and arrays. Path ids of every manifest
/// index `urls`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualDataset {
    /// What it was made from (a file path, a reference file), for error messages.
    pub name: String,
    /// Every URL a chunk points into; path id `i` is `urls[i]`.
    pub urls: Vec<String>,
    /// Attributes of each group by key: `""` for the root, `"a/b"` for `/a/b`.
    pub groups: BTreeMap<String, Map<String, Value>>,
    /// Arrays by key: `"air"`, `"a/b/air"`.
    pub arrays: BTreeMap<String, ManifestArray>,
    /// For arrays joined from inputs whose CF encoding differs (combined with
    /// [`crate::CombineOptions::decode_per_input`]): each input's part and encoding, in order
    /// along the concat axis. Arrays whose inputs agree are not listed.
    pub encodings: BTreeMap<String, Vec<InputEncoding>>,
}

/// One input's part of an array joined along the concat axis, and how that input encodes its
/// values: a job that decodes them (`convert --decode-cf`) decodes each part with its own.
#[derive(Debug, Clone, PartialEq)]
pub struct InputEncoding {
    /// The input (a file).
    pub input: String,
    /// The concat axis.
    pub axis: usize,
    /// First index along it.
    pub start: u64,
    /// Elements along it.
    pub len: u64,
    /// The input's fill value (Zarr metadata form).
    pub fill_value: Value,
    /// The input's CF encoding attributes that are present: `_FillValue`, `missing_value`,
    /// `scale_factor`, `add_offset`.
    pub attributes: Map<String, Value>,
}

/// Totals of a dataset's manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManifestStats {
    /// Arrays.
    pub arrays: usize,
    /// Chunks referenced by byte range.
    pub references: usize,
    /// Chunks held inline.
    pub inlined: usize,
    /// Bytes held inline.
    pub inlined_bytes: usize,
    /// Grid cells never written (fill value).
    pub missing: usize,
}

impl VirtualDataset {
    /// Keeps only `group` (`sub`, `/a/b/`) and what lies under it, which becomes the root:
    /// as xarray's `open_dataset(group=…)` reads one group of a file.
    ///
    /// # Errors
    /// [`Error::Usage`] when the dataset has no such group, naming those it has.
    pub fn select_group(&mut self, group: &str) -> Result<()> {
        let group = group.trim_matches('/');
        if group.is_empty() {
            return Ok(());
        }
        let prefix = format!("{group}/");
        let has_group =
            self.groups.contains_key(group) || self.arrays.keys().any(|k| k.starts_with(&prefix));
        if !has_group {
            let mut known: Vec<String> = self
                .groups
                .keys()
                .filter(|g| !g.is_empty())
                .map(|g| format!("/{g}"))
                .collect();
            known.sort();
            let known = if known.is_empty() {
                "it has only the root group".to_string()
            } else {
                format!("it has {}", known.join(", "))
            };
            return Err(Error::Usage(format!(
                "--group {group}: {} has no group /{group} ({known})",
                self.name
            )));
        }
        let strip = |key: &str| -> Option<String> {
            if key == group {
                Some(String::new())
            } else {
                key.strip_prefix(&prefix).map(str::to_string)
            }
        };
        self.arrays = std::mem::take(&mut self.arrays)
            .into_iter()
            .filter_map(|(k, a)| Some((strip(&k)?, a)))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        self.groups = std::mem::take(&mut self.groups)
            .into_iter()
            .filter_map(|(k, attrs)| Some((strip(&k)?, attrs)))
            .collect();
        self.groups.entry(String::new()).or_default();
        Ok(())
    }

    /// Totals over every array.
    pub fn stats(&self) -> ManifestStats {
        let mut s = ManifestStats {
            arrays: self.arrays.len(),
            ..ManifestStats::default()
        };
        for a in self.arrays.values() {
            let (r, i, m) = a.manifest.counts();
            s.references += r;
            s.inlined += i;
            s.missing += m;
            s.inlined_bytes += a.manifest.inlined().values().map(Vec::len).sum::<usize>();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ArrayMetadata {
        let mut attributes = Map::new();
        attributes.insert("_FillValue".into(), Value::from("NaN"));
        attributes.insert("missing_value".into(), Value::from("NaN"));
        attributes.insert("units".into(), Value::from("K"));
        ArrayMetadata {
            shape: vec![3],
            dtype: "<f4".into(),
            chunk_shape: vec![2],
            fill_value: Value::from("NaN"),
            codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
            dimension_names: vec!["x".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        }
    }

    #[test]
    fn selecting_a_group_makes_it_the_root() -> Result<()> {
        let values = vec![0u8; 12];
        let a = ManifestArray::loaded(meta(), values)?;
        let mut d = VirtualDataset {
            name: "f.nc".into(),
            ..VirtualDataset::default()
        };
        for key in ["v", "sub/w", "sub/deeper/z", "subway/q"] {
            d.arrays.insert(key.into(), a.clone());
        }
        for g in ["", "sub", "sub/deeper", "subway"] {
            d.groups.insert(g.into(), Map::new());
        }
        let mut picked = d.clone();
        picked.select_group("/sub/")?;
        assert_eq!(picked.arrays.keys().collect::<Vec<_>>(), ["deeper/z", "w"]);
        assert_eq!(picked.groups.keys().collect::<Vec<_>>(), ["", "deeper"]);
        let err = d.select_group("nope").err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("/nope") && err.contains("/sub, /sub/deeper, /subway"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn zattrs_moves_fill_value_out_and_writes_nan_literals() {
        let m = meta();
        assert_eq!(m.to_zarray(false)["fill_value"], Value::from("NaN"));
        assert_eq!(m.to_zarray(false)["filters"], Value::Null);
        assert_eq!(
            m.to_zattrs(),
            r#"{"_ARRAY_DIMENSIONS":["x"],"missing_value":NaN,"units":"K"}"#
        );
        assert_eq!(m.data_type_v3(), Value::from("float32"));
    }

    #[test]
    fn loaded_arrays_are_one_inline_chunk() -> Result<()> {
        let a = ManifestArray::loaded(meta(), vec![0; 12])?;
        assert_eq!(a.metadata.chunk_shape, vec![3]);
        assert_eq!(a.loaded_values().map(<[u8]>::len), Some(12));
        assert!(ManifestArray::loaded(meta(), vec![0; 5]).is_err());
        Ok(())
    }

    #[test]
    fn structured_and_string_types_in_v2_and_v3() {
        let mut m = meta();
        m.dtype = r#"[["id","<i4"],["value","<f8"],["flag","|S2"]]"#.into();
        assert_eq!(m.element_size(), 14);
        assert_eq!(
            m.to_zarray(false)["dtype"],
            serde_json::json!([["id", "<i4"], ["value", "<f8"], ["flag", "|S2"]])
        );
        assert_eq!(
            m.data_type_v3(),
            serde_json::json!({"name": "struct", "configuration": {"fields": [
                {"name": "id", "data_type": "int32"},
                {"name": "value", "data_type": "float64"},
                {"name": "flag", "data_type": {"name": "null_terminated_bytes", "configuration": {"length_bytes": 2}}},
            ]}})
        );
        m.dtype = "|O".into();
        assert_eq!(m.data_type_v3(), Value::from("string"));
        assert_eq!(m.to_zarray(false)["dtype"], Value::from("|O"));
        assert_eq!(structured_fields("<f4"), None);
    }

    #[test]
    fn byte_string_fill_values_are_base64() {
        assert_eq!(v2_fill_value("|S2", &Value::from("a")), Value::from("YQA="));
        assert_eq!(dtype_size("|S10"), 10);
    }
}
