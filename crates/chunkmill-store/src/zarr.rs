//! The one module that talks to `zarrs` (pinned `=0.23.14`): metadata in, metadata out, whole
//! chunks decoded and encoded.
//!
//! Metadata documents are read and written as JSON by us, so what lands in `zarr.json` or
//! `.zarray` is exactly what xarray and zarr-python expect (the full chunk key encoding form,
//! `_ARRAY_DIMENSIONS`, consolidated metadata); zarrs does the codecs.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use zarrs::array::{Array, ArrayBytes};
use zarrs_codec::CodecOptions;
use zarrs_storage::ReadableWritableListableStorageTraits;

use crate::{Store, StoreError};

/// What can go wrong with a Zarr node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZarrError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing Zarr at the path.
    #[error("{url}: no Zarr array or group at '{path}'")]
    NotFound { url: String, path: String },
    /// Metadata we cannot use.
    #[error("{url}: {path}: {reason}")]
    Metadata {
        url: String,
        path: String,
        reason: String,
    },
    /// zarrs failed to read, decode, encode or store a chunk.
    #[error("{url}: {path}: chunk {chunk:?}: {source}")]
    Chunk {
        url: String,
        path: String,
        chunk: Vec<u64>,
        /// zarrs' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A compressor a user can ask for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compressor {
    /// No compression.
    None,
    /// Zstandard at a level.
    Zstd(i32),
    /// gzip at a level.
    Gzip(u32),
    /// Blosc with an inner compressor name and level.
    Blosc { cname: String, clevel: u32 },
}

impl std::str::FromStr for Compressor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("unsupported codec '{s}': expected zstd:LEVEL, gzip:LEVEL, blosc:CNAME:LEVEL or none")
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["none"] => Ok(Compressor::None),
            ["zstd"] => Ok(Compressor::Zstd(1)),
            // The levels libzstd and the Zarr codec metadata accept (zarrs refuses others
            // when it reads the metadata back, after the target was started).
            ["zstd", l] => match l.parse() {
                Ok(level) if (-131_072..=22).contains(&level) => Ok(Compressor::Zstd(level)),
                _ => Err(format!(
                    "unsupported codec '{s}': the zstd level must be an integer from -131072 to 22"
                )),
            },
            ["gzip"] => Ok(Compressor::Gzip(5)),
            ["gzip", l] => match l.parse() {
                Ok(level) if level <= 9 => Ok(Compressor::Gzip(level)),
                _ => Err(bad()),
            },
            ["blosc", cname, l] if ["lz4", "lz4hc", "blosclz", "zstd", "zlib"].contains(cname) => {
                match l.parse() {
                    Ok(level) if level <= 9 => Ok(Compressor::Blosc {
                        cname: (*cname).to_string(),
                        clevel: level,
                    }),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compressor::None => write!(f, "none"),
            Compressor::Zstd(l) => write!(f, "zstd:{l}"),
            Compressor::Gzip(l) => write!(f, "gzip:{l}"),
            Compressor::Blosc { cname, clevel } => write!(f, "blosc:{cname}:{clevel}"),
        }
    }
}

impl Compressor {
    fn v3(&self, item_size: usize) -> Option<Value> {
        match self {
            Compressor::None => None,
            Compressor::Zstd(l) => {
                Some(json!({"name": "zstd", "configuration": {"level": l, "checksum": false}}))
            }
            Compressor::Gzip(l) => Some(json!({"name": "gzip", "configuration": {"level": l}})),
            Compressor::Blosc { cname, clevel } => Some(json!({"name": "blosc", "configuration": {
                "cname": cname, "clevel": clevel,
                "shuffle": if item_size > 1 { "shuffle" } else { "noshuffle" },
                "typesize": item_size, "blocksize": 0}})),
        }
    }

    fn v2(&self, item_size: usize) -> Value {
        match self {
            Compressor::None => Value::Null,
            Compressor::Zstd(l) => json!({"id": "zstd", "level": l}),
            Compressor::Gzip(l) => json!({"id": "gzip", "level": l}),
            Compressor::Blosc { cname, clevel } => {
                json!({"id": "blosc", "cname": cname, "clevel": clevel,
                "shuffle": i32::from(item_size > 1), "blocksize": 0})
            }
        }
    }

    /// The compressor a codec document (v2 or v3 form) describes, if it is one we know.
    fn from_document(doc: &Value) -> Option<Compressor> {
        let (name, cfg) = match doc.get("name") {
            Some(n) => (
                n.as_str()?,
                doc.get("configuration").cloned().unwrap_or(json!({})),
            ),
            None => (doc.get("id")?.as_str()?, doc.clone()),
        };
        let level = |d: i64| cfg.get("level").and_then(Value::as_i64).unwrap_or(d);
        match name {
            "zstd" => Some(Compressor::Zstd(i32::try_from(level(1)).ok()?)),
            "gzip" | "zlib" | "numcodecs.zlib" => {
                Some(Compressor::Gzip(u32::try_from(level(5)).ok()?))
            }
            "blosc" => Some(Compressor::Blosc {
                cname: cfg.get("cname")?.as_str()?.to_string(),
                clevel: u32::try_from(cfg.get("clevel")?.as_i64()?).ok()?,
            }),
            _ => None,
        }
    }
}

/// A Zarr array's description, read from its metadata documents.
#[derive(Clone, Debug)]
pub struct ArrayInfo {
    /// Path inside the store, `""` for the root.
    pub path: String,
    /// 2 or 3.
    pub zarr_format: u8,
    /// Shape.
    pub shape: Vec<u64>,
    /// numpy name of the data type (`float32`, `int16`, `bool`…).
    pub dtype: String,
    /// Bytes per element.
    pub item_size: usize,
    /// The chunk grid's chunk shape (the shard shape for a sharded array).
    pub chunks: Vec<u64>,
    /// The inner chunk shape of a sharded array.
    pub inner_chunks: Option<Vec<u64>>,
    /// Dimension names, when the metadata has them.
    pub dimension_names: Option<Vec<Option<String>>>,
    /// The fill value as the metadata writes it (`"NaN"` for NaN).
    pub fill_value: Value,
    /// User attributes (without `_ARRAY_DIMENSIONS`).
    pub attributes: Map<String, Value>,
    /// The compressor, if one we can name, and whether other codecs are present.
    pub compressor: Option<Compressor>,
    /// Codec documents of one chunk (inner chunks for a sharded array), as written.
    pub codecs: Vec<Value>,
}

impl ArrayInfo {
    /// Bytes of the whole array, decoded.
    #[must_use]
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.item_size as u64
    }
}

/// A group's description.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Path inside the store, `""` for the root.
    pub path: String,
    /// 2 or 3.
    pub zarr_format: u8,
    /// User attributes.
    pub attributes: Map<String, Value>,
}

/// A node of a Zarr hierarchy.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a handful per store, read once
pub enum Node {
    /// An array.
    Array(ArrayInfo),
    /// A group.
    Group(GroupInfo),
    /// An array whose metadata this build cannot read (a data type or codec it lacks, or a
    /// malformed document): listed rather than failing the listing, so that a job refuses it
    /// only when it chooses it.
    Unsupported {
        /// Path inside the store.
        path: String,
        /// Why, as the metadata error says it.
        reason: String,
    },
}

fn key(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

fn meta_err(store: &Store, path: &str, reason: impl Into<String>) -> ZarrError {
    ZarrError::Metadata {
        url: store.url().to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
        reason: reason.into(),
    }
}

fn u64_list(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

fn v2_dtype(store: &Store, path: &str, typestr: &str) -> Result<(String, usize), ZarrError> {
    let bad = || meta_err(store, path, format!("unsupported data type '{typestr}'"));
    let body = typestr.trim_start_matches(['<', '>', '|', '=']);
    let (kind, size) = body.split_at(1);
    let size: usize = size.parse().map_err(|_| bad())?;
    let name = match kind {
        "b" if size == 1 => "bool".to_string(),
        "i" => format!("int{}", size * 8),
        "u" => format!("uint{}", size * 8),
        "f" => format!("float{}", size * 8),
        "c" => format!("complex{}", size * 8),
        _ => return Err(bad()),
    };
    Ok((name, size))
}

fn v3_item_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "bool" | "int8" | "uint8" => 1,
        "int16" | "uint16" | "float16" => 2,
        "int32" | "uint32" | "float32" => 4,
        "int64" | "uint64" | "float64" | "complex64" => 8,
        "complex128" => 16,
        _ => return None,
    })
}

fn v2_typestr(dtype: &str) -> Option<String> {
    let size = v3_item_size(dtype)?;
    Some(match dtype {
        "bool" => "|b1".into(),
        d if size == 1 => format!("|{}1", &d[..1]),
        d if d.starts_with("uint") => format!("<u{size}"),
        d if d.starts_with("int") => format!("<i{size}"),
        d if d.starts_with("float") => format!("<f{size}"),
        _ => format!("<c{size}"),
    })
}

/// Read the node at `path`, if any.
///
/// # Errors
/// [`ZarrError`] when the metadata is unreadable or uses what we do not support.
pub fn read_node(store: &Store, path: &str) -> Result<Option<Node>, ZarrError> {
    if let Some(doc) = store.get_json(&key(path, "zarr.json"))? {
        let node_type = doc.get("node_type").and_then(Value::as_str).unwrap_or("");
        let attributes = doc
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if node_type == "group" {
            return Ok(Some(Node::Group(GroupInfo {
                path: path.to_string(),
                zarr_format: 3,
                attributes,
            })));
        }
        return read_v3_array(store, path, &doc, attributes).map(|a| Some(Node::Array(a)));
    }
    let attributes = store
        .get_json(&key(path, ".zattrs"))?
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    if let Some(doc) = store.get_json(&key(path, ".zarray"))? {
        return read_v2_array(store, path, &doc, attributes).map(|a| Some(Node::Array(a)));
    }
    if store.exists(&key(path, ".zgroup"))? {
        return Ok(Some(Node::Group(GroupInfo {
            path: path.to_string(),
            zarr_format: 2,
            attributes,
        })));
    }
    Ok(None)
}

fn read_v3_array(
    store: &Store,
    path: &str,
    doc: &Value,
    attributes: Map<String, Value>,
) -> Result<ArrayInfo, ZarrError> {
    let shape = u64_list(doc.get("shape")).ok_or_else(|| meta_err(store, path, "no shape"))?;
    let dtype = doc
        .get("data_type")
        .and_then(Value::as_str)
        .ok_or_else(|| meta_err(store, path, "data_type is not a simple name"))?
        .to_string();
    let item_size = v3_item_size(&dtype)
        .ok_or_else(|| meta_err(store, path, format!("unsupported data type '{dtype}'")))?;
    let grid = doc.get("chunk_grid").cloned().unwrap_or(Value::Null);
    if grid.get("name").and_then(Value::as_str) != Some("regular") {
        return Err(meta_err(
            store,
            path,
            format!("unsupported chunk grid {grid}"),
        ));
    }
    let chunks = u64_list(grid.pointer("/configuration/chunk_shape"))
        .ok_or_else(|| meta_err(store, path, "no chunk_shape"))?;
    let mut codecs: Vec<Value> = doc
        .get("codecs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut inner_chunks = None;
    if let Some(sharding) = codecs
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))
        .cloned()
    {
        inner_chunks = u64_list(sharding.pointer("/configuration/chunk_shape"));
        codecs = sharding
            .pointer("/configuration/codecs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    }
    let compressor = compressor_of(&codecs, |c| {
        matches!(
            c.get("name").and_then(Value::as_str),
            Some("bytes" | "transpose")
        )
    });
    let dimension_names = doc
        .get("dimension_names")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect()
        });
    Ok(ArrayInfo {
        path: path.to_string(),
        zarr_format: 3,
        shape,
        dtype,
        item_size,
        chunks,
        inner_chunks,
        dimension_names,
        fill_value: doc.get("fill_value").cloned().unwrap_or(Value::Null),
        attributes,
        compressor,
        codecs,
    })
}

/// The single compressor in a codec list whose other members `ignorable` accepts.
fn compressor_of(codecs: &[Value], ignorable: impl Fn(&Value) -> bool) -> Option<Compressor> {
    let rest: Vec<&Value> = codecs.iter().filter(|c| !ignorable(c)).collect();
    match rest.as_slice() {
        [] => Some(Compressor::None),
        [one] => Compressor::from_document(one),
        _ => None,
    }
}

fn read_v2_array(
    store: &Store,
    path: &str,
    doc: &Value,
    mut attributes: Map<String, Value>,
) -> Result<ArrayInfo, ZarrError> {
    let shape = u64_list(doc.get("shape")).ok_or_else(|| meta_err(store, path, "no shape"))?;
    let chunks = u64_list(doc.get("chunks")).ok_or_else(|| meta_err(store, path, "no chunks"))?;
    let typestr = doc
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| meta_err(store, path, "dtype is not a simple type"))?;
    let (dtype, item_size) = v2_dtype(store, path, typestr)?;
    let dimension_names = attributes.remove("_ARRAY_DIMENSIONS").and_then(|v| {
        v.as_array()
            .map(|a| a.iter().map(|n| n.as_str().map(str::to_string)).collect())
    });
    let mut codecs: Vec<Value> = doc
        .get("filters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = doc.get("compressor").filter(|c| !c.is_null()) {
        codecs.push(c.clone());
    }
    let compressor = compressor_of(&codecs, |_| false);
    Ok(ArrayInfo {
        path: path.to_string(),
        zarr_format: 2,
        shape,
        dtype,
        item_size,
        chunks,
        inner_chunks: None,
        dimension_names,
        fill_value: doc.get("fill_value").cloned().unwrap_or(Value::Null),
        attributes,
        compressor,
        codecs,
    })
}

/// Every node of the hierarchy in `store`, parents before children.
///
/// # Errors
/// [`ZarrError`] when the store cannot be listed or a document is unreadable.
pub fn list_nodes(store: &Store) -> Result<Vec<Node>, ZarrError> {
    let mut paths: Vec<String> = store
        .list("")?
        .into_iter()
        .filter_map(|k| {
            let (dir, name) = k.rsplit_once('/').unwrap_or(("", k.as_str()));
            matches!(name, "zarr.json" | ".zarray" | ".zgroup").then(|| dir.to_string())
        })
        .collect();
    paths.sort();
    paths.dedup();
    let mut nodes = Vec::new();
    for path in paths {
        match read_node(store, &path) {
            Ok(Some(node)) => nodes.push(node),
            Ok(None) => {}
            Err(e @ ZarrError::Metadata { .. }) => nodes.push(Node::Unsupported {
                path,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(nodes)
}

/// How to encode the chunks of a new array.
#[derive(Clone, Debug)]
pub enum Encoding {
    /// These codec documents, copied from a source of the same Zarr format.
    Documents(Vec<Value>),
    /// A compressor we write ourselves.
    Compressor(Compressor),
}

/// Everything needed to create an array.
#[derive(Clone, Debug)]
pub struct ArraySpec {
    /// Path inside the store, `""` for the root.
    pub path: String,
    /// 2 or 3.
    pub zarr_format: u8,
    /// Shape.
    pub shape: Vec<u64>,
    /// numpy name of the data type.
    pub dtype: String,
    /// Chunk shape, or shard shape when `inner_chunks` is set.
    pub chunks: Vec<u64>,
    /// Inner chunk shape of a sharded (v3) array.
    pub inner_chunks: Option<Vec<u64>>,
    /// Fill value, as metadata writes it.
    pub fill_value: Value,
    /// Chunk encoding.
    pub encoding: Encoding,
    /// Dimension names.
    pub dimension_names: Option<Vec<Option<String>>>,
    /// User attributes.
    pub attributes: Map<String, Value>,
}

/// The bytes (little-endian) of a fill value written as JSON for `dtype`.
fn fill_le_bytes(value: &Value, dtype: &str) -> Option<Vec<u8>> {
    let float = |v: &Value| -> Option<f64> {
        match v {
            Value::String(s) if s == "NaN" => Some(f64::NAN),
            Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
            Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.as_f64(),
        }
    };
    Some(match dtype {
        "float32" => (float(value)? as f32).to_le_bytes().to_vec(),
        "float64" => float(value)?.to_le_bytes().to_vec(),
        "bool" => vec![u8::from(value.as_bool()?)],
        d if d.starts_with("int") => {
            let size = v3_item_size(d)?;
            value.as_i64()?.to_le_bytes()[..size].to_vec()
        }
        d if d.starts_with("uint") => {
            let size = v3_item_size(d)?;
            value.as_u64()?.to_le_bytes()[..size].to_vec()
        }
        _ => return None,
    })
}

/// The JSON fill value of little-endian `bytes` of `dtype`.
fn fill_from_le_bytes(bytes: &[u8], dtype: &str) -> Option<Value> {
    let special = |f: f64| -> Value {
        if f.is_nan() {
            json!("NaN")
        } else if f.is_infinite() {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(f)
        }
    };
    Some(match (dtype, bytes.len()) {
        ("float32", 4) => special(f64::from(f32::from_le_bytes(bytes.try_into().ok()?))),
        ("float64", 8) => special(f64::from_le_bytes(bytes.try_into().ok()?)),
        _ => return None,
    })
}

/// The fill value and attributes a target of format `to` needs so that zarr-python reads the
/// same values and xarray decodes the same variable as from `source`.
///
/// xarray takes a v2 array's `fill_value` as its `_FillValue`, but in v3 reads only the
/// `_FillValue` attribute (base64 of the value's bytes for floats). So v2 → v3 adds that
/// attribute, and v3 → v2 moves the attribute into `fill_value` (or, without one, keeps a NaN
/// fill, and otherwise writes `null` and stores every chunk, as zarr-python reads a missing v2
/// chunk as zeros then).
#[must_use]
pub fn translate_fill(source: &ArrayInfo, to: u8) -> (Value, Map<String, Value>) {
    let mut attributes = source.attributes.clone();
    let fill = source.fill_value.clone();
    if source.zarr_format == to {
        return (fill, attributes);
    }
    if to == 3 {
        if fill.is_null() {
            return (
                if source.dtype == "bool" {
                    json!(false)
                } else {
                    json!(0)
                },
                attributes,
            );
        }
        if !attributes.contains_key("_FillValue") {
            let encoded = if source.dtype.starts_with("float") {
                // xarray stores a float _FillValue as the 8 bytes of a double, whatever the dtype.
                fill_le_bytes(&fill, "float64")
                    .map(|b| json!(base64::engine::general_purpose::STANDARD.encode(b)))
            } else {
                Some(fill.clone())
            };
            if let Some(encoded) = encoded {
                attributes.insert("_FillValue".into(), encoded);
            }
        }
        return (fill, attributes);
    }
    match attributes.get("_FillValue").cloned() {
        // A base64 float means nothing to xarray in v2: it becomes the fill value itself.
        Some(Value::String(s)) if source.dtype.starts_with("float") => {
            if let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .ok()
                .and_then(|b| fill_from_le_bytes(&b, "float64"))
            {
                attributes.remove("_FillValue");
                return (decoded, attributes);
            }
        }
        Some(number) if number.is_number() => return (number, attributes),
        _ => {}
    }
    let keep_nan = source.dtype.starts_with("float") && fill == json!("NaN");
    (if keep_nan { fill } else { Value::Null }, attributes)
}

/// Encoding of `source` as a target of format `to`: the same codecs when the formats agree,
/// otherwise the same compressor.
///
/// # Errors
/// A message naming the codecs when they cannot be carried over.
pub fn inherit_encoding(source: &ArrayInfo, to: u8) -> Result<Encoding, String> {
    if source.zarr_format == to {
        return Ok(Encoding::Documents(source.codecs.clone()));
    }
    source
        .compressor
        .clone()
        .map(Encoding::Compressor)
        .ok_or_else(|| {
            format!(
                "the codecs of '{}' ({}) cannot be written in Zarr v{to}; choose one with --codec",
                source.path,
                Value::Array(source.codecs.clone())
            )
        })
}

fn v3_document(spec: &ArraySpec, item_size: usize) -> Value {
    let bytes = if item_size > 1 {
        json!({"name": "bytes", "configuration": {"endian": "little"}})
    } else {
        json!({"name": "bytes"})
    };
    let chunk_codecs: Vec<Value> = match &spec.encoding {
        Encoding::Documents(docs) => docs.clone(),
        Encoding::Compressor(c) => std::iter::once(bytes.clone())
            .chain(c.v3(item_size))
            .collect(),
    };
    let codecs = match &spec.inner_chunks {
        None => chunk_codecs,
        Some(inner) => vec![json!({"name": "sharding_indexed", "configuration": {
            "chunk_shape": inner,
            "codecs": chunk_codecs,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end"}})],
    };
    let mut doc = json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": spec.shape,
        "data_type": spec.dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": spec.chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": spec.fill_value,
        "codecs": codecs,
        "attributes": spec.attributes,
    });
    if let Some(names) = &spec.dimension_names {
        doc["dimension_names"] = json!(names);
    }
    doc
}

fn v2_documents(spec: &ArraySpec, item_size: usize) -> Result<(Value, Map<String, Value>), String> {
    let typestr = v2_typestr(&spec.dtype)
        .ok_or_else(|| format!("data type {} has no Zarr v2 form", spec.dtype))?;
    let (compressor, filters) = match &spec.encoding {
        Encoding::Compressor(c) => (c.v2(item_size), Value::Null),
        Encoding::Documents(docs) => match docs.split_last() {
            None => (Value::Null, Value::Null),
            Some((last, rest)) => (
                last.clone(),
                if rest.is_empty() {
                    Value::Null
                } else {
                    Value::Array(rest.to_vec())
                },
            ),
        },
    };
    let doc = json!({
        "zarr_format": 2,
        "shape": spec.shape,
        "chunks": spec.chunks,
        "dtype": typestr,
        "compressor": compressor,
        "filters": filters,
        "fill_value": spec.fill_value,
        "order": "C",
        "dimension_separator": ".",
    });
    let mut attrs = spec.attributes.clone();
    if let Some(names) = &spec.dimension_names {
        attrs.insert("_ARRAY_DIMENSIONS".into(), json!(names));
    }
    Ok((doc, attrs))
}

/// Write the metadata of a new array (no chunks).
///
/// # Errors
/// [`ZarrError`] when the spec cannot be expressed or the store fails.
pub fn create_array(store: &Store, spec: &ArraySpec) -> Result<(), ZarrError> {
    let item_size = v3_item_size(&spec.dtype).ok_or_else(|| {
        meta_err(
            store,
            &spec.path,
            format!("unsupported data type {}", spec.dtype),
        )
    })?;
    if spec.zarr_format == 3 {
        store.put_json(&key(&spec.path, "zarr.json"), &v3_document(spec, item_size))?;
    } else {
        if spec.inner_chunks.is_some() {
            return Err(meta_err(
                store,
                &spec.path,
                "shards need Zarr v3 (--zarr-format 3)",
            ));
        }
        let (doc, attrs) =
            v2_documents(spec, item_size).map_err(|e| meta_err(store, &spec.path, e))?;
        store.put_json(&key(&spec.path, ".zarray"), &doc)?;
        store.put_json(&key(&spec.path, ".zattrs"), &Value::Object(attrs))?;
    }
    // Let zarrs validate what we wrote now, not in the middle of the run.
    ZarrArray::open(store, &spec.path).map(|_| ())
}

/// Change the shape of an existing array (v2 or v3), keeping everything else of its
/// metadata: how an append grows an array before writing its new chunks.
///
/// # Errors
/// [`ZarrError::NotFound`] when no array is at `path`; [`ZarrError`] when the store fails.
pub fn resize(store: &Store, path: &str, shape: &[u64]) -> Result<(), ZarrError> {
    for name in ["zarr.json", ".zarray"] {
        let k = key(path, name);
        if let Some(mut doc) = store.get_json(&k)? {
            if name == "zarr.json" && doc.get("node_type").and_then(Value::as_str) != Some("array")
            {
                continue;
            }
            doc["shape"] = json!(shape);
            store.put_json(&k, &doc)?;
            return ZarrArray::open(store, path).map(|_| ());
        }
    }
    Err(ZarrError::NotFound {
        url: store.url().to_string(),
        path: path.to_string(),
    })
}

/// Write the metadata of a group.
///
/// # Errors
/// [`ZarrError`] when the store fails.
pub fn create_group(
    store: &Store,
    path: &str,
    zarr_format: u8,
    attributes: &Map<String, Value>,
) -> Result<(), ZarrError> {
    if zarr_format == 3 {
        store.put_json(
            &key(path, "zarr.json"),
            &json!({"zarr_format": 3, "node_type": "group", "attributes": attributes}),
        )?;
    } else {
        store.put_json(&key(path, ".zgroup"), &json!({"zarr_format": 2}))?;
        store.put_json(&key(path, ".zattrs"), &Value::Object(attributes.clone()))?;
    }
    Ok(())
}

/// The root (`""`) and every group above one of `array_paths`, sorted, parents first.
#[must_use]
pub fn parent_groups(array_paths: &[&str]) -> std::collections::BTreeSet<String> {
    let mut groups = std::collections::BTreeSet::from([String::new()]);
    for path in array_paths {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            groups.insert(path[..end].to_string());
            end += 1;
        }
    }
    groups
}

/// Write consolidated metadata for the hierarchy rooted at the store's root group, in the form
/// zarr-python and xarray read by default (`consolidated_metadata` inline in v3, `.zmetadata`
/// in v2). A root that is an array needs none.
///
/// # Errors
/// [`ZarrError`] when the store fails.
pub fn write_consolidated(store: &Store) -> Result<(), ZarrError> {
    let keys = store.list("")?;
    if let Some(mut root) = store.get_json("zarr.json")? {
        if root.get("node_type").and_then(Value::as_str) != Some("group") {
            return Ok(());
        }
        let mut metadata = Map::new();
        for k in &keys {
            if let Some(dir) = k.strip_suffix("/zarr.json") {
                if let Some(mut doc) = store.get_json(k)? {
                    if let Some(obj) = doc.as_object_mut() {
                        obj.remove("consolidated_metadata");
                    }
                    metadata.insert(dir.to_string(), doc);
                }
            }
        }
        root["consolidated_metadata"] =
            json!({"kind": "inline", "must_understand": false, "metadata": metadata});
        store.put_json("zarr.json", &root)?;
    } else if store.exists(".zgroup")? {
        let mut metadata = Map::new();
        for k in &keys {
            let name = k.rsplit('/').next().unwrap_or("");
            if matches!(name, ".zarray" | ".zattrs" | ".zgroup") {
                if let Some(doc) = store.get_json(k)? {
                    metadata.insert(k.clone(), doc);
                }
            }
        }
        store.put_json(
            ".zmetadata",
            &json!({"zarr_consolidated_format": 1, "metadata": metadata}),
        )?;
    }
    Ok(())
}

/// An open array whose whole chunks we decode and encode.
pub struct ZarrArray {
    info: ArrayInfo,
    url: String,
    array: Array<dyn ReadableWritableListableStorageTraits>,
    fill: Vec<u8>,
    options: CodecOptions,
}

impl std::fmt::Debug for ZarrArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrArray")
            .field("url", &self.url)
            .field("path", &self.info.path)
            .finish()
    }
}

impl ZarrArray {
    /// Open the array at `path`.
    ///
    /// # Errors
    /// [`ZarrError::NotFound`] when there is none, [`ZarrError::Metadata`] when zarrs refuses it.
    pub fn open(store: &Store, path: &str) -> Result<ZarrArray, ZarrError> {
        let info = match read_node(store, path)? {
            Some(Node::Array(info)) => info,
            _ => {
                return Err(ZarrError::NotFound {
                    url: store.url().to_string(),
                    path: path.to_string(),
                })
            }
        };
        let node_path = format!("/{path}");
        let storage: Arc<dyn ReadableWritableListableStorageTraits> = store.storage();
        let array =
            Array::open(storage, &node_path).map_err(|e| meta_err(store, path, e.to_string()))?;
        let fill = array.fill_value().as_ne_bytes().to_vec();
        if fill.len() != info.item_size {
            return Err(meta_err(
                store,
                path,
                "fill value does not match the data type",
            ));
        }
        // One task decodes one chunk at a time: parallelism comes from tasks, memory stays known.
        let options = CodecOptions::default()
            .with_concurrent_target(1)
            .with_store_empty_chunks(info.zarr_format == 2 && info.fill_value.is_null());
        Ok(ZarrArray {
            info,
            url: store.url().to_string(),
            array,
            fill,
            options,
        })
    }

    /// The array's description.
    #[must_use]
    pub fn info(&self) -> &ArrayInfo {
        &self.info
    }

    /// One element's fill value, native byte order.
    #[must_use]
    pub fn fill_bytes(&self) -> &[u8] {
        &self.fill
    }

    fn chunk_err(
        &self,
        chunk: &[u64],
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ZarrError {
        ZarrError::Chunk {
            url: self.url.clone(),
            path: self.info.path.clone(),
            chunk: chunk.to_vec(),
            source: Box::new(source),
        }
    }

    /// The decoded bytes (native order) of the whole chunk at `chunk`, at its full nominal shape
    /// even at the array's edge; a chunk never written decodes to the fill value.
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when the chunk cannot be read or decoded.
    pub fn read_chunk(&self, chunk: &[u64]) -> Result<Vec<u8>, ZarrError> {
        let bytes: ArrayBytes<'static> = self
            .array
            .retrieve_chunk_opt(chunk, &self.options)
            .map_err(|e| self.chunk_err(chunk, e))?;
        let raw = bytes.into_fixed().map_err(|e| self.chunk_err(chunk, e))?;
        Ok(raw.into_owned())
    }

    /// Encode and store the whole chunk at `chunk` from `bytes` (native order, full nominal
    /// shape). A chunk equal to the fill value everywhere is erased instead, as zarr-python does.
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when encoding or storing fails.
    pub fn write_chunk(&self, chunk: &[u64], bytes: Vec<u8>) -> Result<(), ZarrError> {
        self.array
            .store_chunk_opt(chunk, ArrayBytes::new_flen(bytes), &self.options)
            .map_err(|e| self.chunk_err(chunk, e))
    }
}

#[cfg(test)]
mod tests {
    use super::parent_groups;

    #[test]
    fn parent_groups_lists_every_group_above_an_array_once() {
        let groups: Vec<String> = parent_groups(&["v", "sub/w", "sub/deeper/x", "other/y"])
            .into_iter()
            .collect();
        assert_eq!(groups, ["", "other", "sub", "sub/deeper"]);
        assert_eq!(parent_groups(&[]).into_iter().collect::<Vec<_>>(), [""]);
    }
}
