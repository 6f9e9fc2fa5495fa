//! The one module that talks to `zarrs` (pinned `=0.23.14`): metadata in, metadata out, whole
//! chunks decoded and encoded.
//!
//! Metadata documents are read and written as JSON by us, so what lands in `zarr.json` or
//! `.zarray` is exactly what xarray and zarr-python expect (the full chunk key encoding form,
//! `_ARRAY_DIMENSIONS`, consolidated metadata); zarrs does the codecs.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use zarrs::array::{Array, ArrayBytes, ArrayBytesOffsets, ArrayMetadata};
use zarrs_codec::CodecOptions;
use zarrs_storage::ReadableWritableListableStorageTraits;

use crate::{DataType, ReadInto, Store, StoreError};

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
    /// A group's metadata we cannot use. Unlike an array's, this is never left out with a
    /// warning: the arrays under it would be copied into a hierarchy that says otherwise.
    #[error("{url}: {path}: {reason}")]
    Group {
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
    /// The data type.
    pub dtype: DataType,
    /// Bytes per element as [`ZarrArray::read_chunk`] returns them; for a variable-length
    /// type, the record width [`measured`] finds (0 until measured).
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
    if let Some(doc) = store.get_json(&key(path, ".zgroup"))? {
        // A group whose metadata says something else is not one we understand: copying its
        // members as if it were a v2 group would silently drop whatever it meant.
        if doc.get("zarr_format").and_then(Value::as_u64) != Some(2) {
            return Err(ZarrError::Group {
                url: store.url().to_string(),
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.to_string()
                },
                reason: ".zgroup does not say zarr_format 2".into(),
            });
        }
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
    let dtype = DataType::from_v3(doc.get("data_type").unwrap_or(&Value::Null))
        .map_err(|e| meta_err(store, path, e.to_string()))?;
    let item_size = dtype.size().unwrap_or(0);
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
        is_vlen(c)
            || matches!(
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

/// Whether a codec document (v2 or v3) is the `vlen-utf8`/`vlen-bytes` codec that turns
/// variable-length elements into bytes: it comes with the data type, not the compression.
fn is_vlen(codec: &Value) -> bool {
    codec
        .get("name")
        .or_else(|| codec.get("id"))
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with("vlen-"))
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
    let dtype = DataType::from_v2(doc.get("dtype").unwrap_or(&Value::Null), &codecs)
        .map_err(|e| meta_err(store, path, e.to_string()))?;
    let item_size = dtype.size().unwrap_or(0);
    let compressor = compressor_of(&codecs, is_vlen);
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

/// Every node of the hierarchy in `store`, parents before children. Variable-length arrays
/// are read whole once, to measure their longest element.
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
        match read_node(store, &path).and_then(|node| measured(store, node)) {
            Ok(Some(node)) => nodes.push(node),
            Ok(None) => {}
            Err(e @ (ZarrError::Metadata { .. } | ZarrError::Chunk { .. })) => {
                nodes.push(Node::Unsupported {
                    path,
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(nodes)
}

/// `node` opened as a task opens it: an array whose codecs or data type zarrs cannot handle
/// is found here, before anything is written (and left out, or refused when chosen), not when
/// its task runs; a variable-length array gets its record width measured (see
/// [`ZarrArray::read_chunk`]), so that a plan counts an element's real bytes.
fn measured(store: &Store, node: Option<Node>) -> Result<Option<Node>, ZarrError> {
    match node {
        Some(Node::Array(info)) => {
            let opened = ZarrArray::with_info(store, info, None)?;
            Ok(Some(Node::Array(opened.info)))
        }
        other => Ok(other),
    }
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
    /// The data type.
    pub dtype: DataType,
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
    let float = matches!(source.dtype, DataType::Float(_));
    if to == 3 {
        if fill.is_null() {
            // v3 has no "no fill value": the one zarr-python reads a missing v2 chunk as.
            let zeros = vec![0; source.dtype.size().unwrap_or(0)];
            return (
                source.dtype.fill_json(&zeros).unwrap_or(json!(0)),
                attributes,
            );
        }
        if !attributes.contains_key("_FillValue") && source.dtype.is_numeric() {
            let encoded = if float {
                // xarray stores a float _FillValue as the 8 bytes of a double, whatever the dtype.
                DataType::Float(8)
                    .fill_bytes(&fill)
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
        Some(Value::String(s)) if float => {
            if let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .ok()
                .and_then(|b| DataType::Float(8).fill_json(&b))
            {
                attributes.remove("_FillValue");
                return (decoded, attributes);
            }
        }
        Some(number) if number.is_number() => return (number, attributes),
        _ => {}
    }
    // Without a fill value a v2 target stores every chunk; a NaN fill (floats) and the fill of
    // a type whose zero is not a value (NaT, text) are kept, as zarr-python reads them so.
    let numeric_zero = source.dtype.is_numeric() && !(float && fill == json!("NaN"));
    (if numeric_zero { Value::Null } else { fill }, attributes)
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

/// The array-to-bytes codec zarr-python writes for `dtype` in Zarr v3.
fn v3_array_to_bytes(dtype: &DataType) -> Value {
    match dtype {
        DataType::String => json!({"name": "vlen-utf8", "configuration": {}}),
        DataType::VarBytes => json!({"name": "vlen-bytes", "configuration": {}}),
        DataType::Bool
        | DataType::Int(1)
        | DataType::UInt(1)
        | DataType::Bytes(_)
        | DataType::Raw(_)
        | DataType::Struct(_) => json!({"name": "bytes"}),
        _ => json!({"name": "bytes", "configuration": {"endian": "little"}}),
    }
}

fn v3_document(spec: &ArraySpec, item_size: usize) -> Value {
    let bytes = v3_array_to_bytes(&spec.dtype);
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
        "data_type": spec.dtype.to_v3(),
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

fn v2_documents(spec: &ArraySpec, item_size: usize) -> (Value, Map<String, Value>) {
    let vlen = match spec.dtype {
        DataType::String => Some(json!([{"id": "vlen-utf8"}])),
        DataType::VarBytes => Some(json!([{"id": "vlen-bytes"}])),
        _ => None,
    };
    let (compressor, filters) = match &spec.encoding {
        Encoding::Compressor(c) => (c.v2(item_size), vlen.unwrap_or(Value::Null)),
        Encoding::Documents(docs) => match docs.split_last() {
            None => (Value::Null, Value::Null),
            // A vlen codec is a filter: the chain has no compressor.
            Some((last, _)) if is_vlen(last) => (Value::Null, Value::Array(docs.clone())),
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
        "dtype": spec.dtype.v2_dtype(),
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
    (doc, attrs)
}

/// Write the metadata of a new array (no chunks).
///
/// # Errors
/// [`ZarrError`] when the spec cannot be expressed or the store fails.
pub fn create_array(store: &Store, spec: &ArraySpec) -> Result<(), ZarrError> {
    // Blosc's typesize and shuffle: text shuffles as bytes.
    let item_size = spec.dtype.size().unwrap_or(1);
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
        let (doc, attrs) = v2_documents(spec, item_size);
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

/// Bytes of the length that starts each record of a variable-length element.
const RECORD_LEN: usize = 4;

fn meta_err_url(url: &str, path: &str, reason: &str) -> ZarrError {
    ZarrError::Metadata {
        url: url.to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The zarrs array for `info`, from its metadata document. zarrs 0.23 lacks some types
/// zarr-python writes (v2 `<M8`, `|S`; v3 `null_terminated_bytes`): every fixed-size type
/// that is not a number is handed to zarrs as one of the same bytes (int64 for datetimes,
/// raw bytes for the rest), whose codecs (bytes, compressors) do the same; the fill value
/// is ours, from [`DataType::fill_bytes`].
///
/// Also says whether the stand-in's bytes are big-endian (UTF-32 text or a struct stored
/// big-endian), which zarrs does not swap for raw bytes: [`ZarrArray`] swaps them.
fn open_zarrs(
    store: &Store,
    info: &ArrayInfo,
) -> Result<(Array<dyn ReadableWritableListableStorageTraits>, bool), ZarrError> {
    let path = &info.path;
    let name = if info.zarr_format == 3 {
        "zarr.json"
    } else {
        ".zarray"
    };
    let mut doc = store
        .get_json(&key(path, name))?
        .ok_or_else(|| ZarrError::NotFound {
            url: store.url().to_string(),
            path: path.to_string(),
        })?;
    let size = info.dtype.size().unwrap_or(0);
    let fill = info.dtype.fill_bytes(&info.fill_value);
    let big_endian = doc
        .get("dtype")
        .is_some_and(|d| d.to_string().contains('>'));
    let raw_big_endian = matches!(info.dtype, DataType::Unicode(_) | DataType::Struct(_))
        && (big_endian
            || doc
                .get("codecs")
                .and_then(Value::as_array)
                .is_some_and(|c| any_big_endian(c)));
    // zarrs fills never-written chunks with the stand-in's fill as stored.
    let fill = fill.map(|mut bytes| {
        if raw_big_endian {
            info.dtype.swap_byte_order(&mut bytes);
        }
        bytes
    });
    let stand_in = match &info.dtype {
        DataType::DateTime(_) | DataType::TimeDelta(_) => Some((
            if info.zarr_format == 3 {
                json!("int64")
            } else {
                json!(if big_endian { ">i8" } else { "<i8" })
            },
            fill.map(|b| json!(i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))),
        )),
        DataType::Bytes(_) | DataType::Unicode(_) | DataType::Raw(_) | DataType::Struct(_) => {
            // A v2 structured type may mix byte orders field by field, which the type we
            // hold does not say.
            if big_endian && matches!(info.dtype, DataType::Struct(_)) {
                return Err(meta_err(
                    store,
                    path,
                    format!(
                        "a structured type with big-endian fields ({}) is not supported",
                        doc.get("dtype").unwrap_or(&Value::Null)
                    ),
                ));
            }
            if info.zarr_format == 3 {
                Some((json!(format!("r{}", 8 * size)), fill.map(|b| json!(b))))
            } else {
                Some((
                    json!(format!("|V{size}")),
                    fill.map(|b| json!(base64::engine::general_purpose::STANDARD.encode(b))),
                ))
            }
        }
        _ => None,
    };
    if let Some((data_type, fill)) = stand_in {
        let v2 = info.zarr_format == 2;
        doc[if v2 { "dtype" } else { "data_type" }] = data_type;
        // A v2 null fill (no fill value) is zeros to zarrs' stand-in, which needs one; such
        // an array stores every chunk (see the codec options in `ZarrArray::open`).
        doc["fill_value"] =
            fill.ok_or_else(|| meta_err(store, path, "fill value does not match the data type"))?;
        // zarrs wants a byte order for any multi-byte type; raw bytes are not swapped by it.
        if let Some(codecs) = doc.get_mut("codecs").and_then(Value::as_array_mut) {
            default_endian(codecs);
        }
    }
    let metadata: ArrayMetadata =
        serde_json::from_value(doc).map_err(|e| meta_err(store, path, e.to_string()))?;
    let storage: Arc<dyn ReadableWritableListableStorageTraits> = store.storage();
    let array = Array::new_with_metadata(storage, &format!("/{path}"), metadata)
        .map_err(|e| meta_err(store, path, e.to_string()))?;
    Ok((array, raw_big_endian))
}

/// Whether a `bytes` codec of `codecs` (inside a sharding codec too) stores big-endian.
fn any_big_endian(codecs: &[Value]) -> bool {
    codecs.iter().any(|codec| {
        codec
            .pointer("/configuration/endian")
            .and_then(Value::as_str)
            == Some("big")
            || codec
                .pointer("/configuration/codecs")
                .and_then(Value::as_array)
                .is_some_and(|inner| any_big_endian(inner))
    })
}

/// Give the `bytes` codec (inside a sharding codec too) a byte order where it has none: a
/// stand-in of several bytes needs one, which zarrs does not apply to raw bytes.
fn default_endian(codecs: &mut [Value]) {
    for codec in codecs {
        match codec.get("name").and_then(Value::as_str) {
            Some("bytes") if codec.pointer("/configuration/endian").is_none() => {
                codec["configuration"] = json!({"endian": "little"});
            }
            Some("sharding_indexed") => {
                if let Some(inner) = codec
                    .pointer_mut("/configuration/codecs")
                    .and_then(Value::as_array_mut)
                {
                    default_endian(inner);
                }
            }
            _ => {}
        }
    }
}

/// An open array whose whole chunks we decode and encode.
pub struct ZarrArray {
    info: ArrayInfo,
    url: String,
    array: Array<dyn ReadableWritableListableStorageTraits>,
    fill: Vec<u8>,
    options: CodecOptions,
    /// Whether chunks hold big-endian elements that zarrs leaves as they are (see
    /// [`open_zarrs`]): swapped on reading and writing, so callers see native order.
    swap_bytes: bool,
    /// How a stored chunk turns into its elements when that is one zstd frame or the bytes
    /// themselves (no filter, no transpose, native order): then [`ZarrArray::read_chunk_into`]
    /// decodes it straight into the caller's buffer.
    direct: Option<DirectCodec>,
    /// The store, when it is a local directory: [`ZarrArray::read_chunk_into_reusing`] reads
    /// stored chunks from it into the caller's buffer.
    local: Option<Store>,
}

/// A codec chain simple enough to decode without zarrs' intermediate buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirectCodec {
    /// The stored bytes are the elements.
    Raw,
    /// One zstd frame of the elements.
    Zstd,
}

thread_local! {
    /// This thread's zstd decompression context, reused from chunk to chunk.
    static ZSTD_DECODER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The chain of `array` when it is `bytes` (little-endian, or a one-byte type) then at most
/// one zstd: what the elements are, stored.
fn direct_codec(array: &Array<dyn ReadableWritableListableStorageTraits>) -> Option<DirectCodec> {
    if cfg!(target_endian = "big") {
        return None;
    }
    let codecs = array
        .codecs()
        .create_metadatas(&zarrs_codec::CodecMetadataOptions::default());
    let docs: Vec<Value> = codecs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .ok()?;
    let native_bytes = |doc: &Value| {
        doc.get("name").and_then(Value::as_str) == Some("bytes")
            && doc
                .pointer("/configuration/endian")
                .is_none_or(|e| e.as_str() == Some("little"))
    };
    match docs.as_slice() {
        [bytes] if native_bytes(bytes) => Some(DirectCodec::Raw),
        [bytes, zstd]
            if native_bytes(bytes) && zstd.get("name").and_then(Value::as_str) == Some("zstd") =>
        {
            Some(DirectCodec::Zstd)
        }
        _ => None,
    }
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
        Self::open_with_width(store, path, None)
    }

    /// [`ZarrArray::open`], with a variable-length array's record width already known (a
    /// plan's, measured when the job listed the array): it is not read whole to measure it
    /// again. A chunk holding a longer element is refused when read. `None` measures it;
    /// a fixed-size type ignores it.
    ///
    /// # Errors
    /// As [`ZarrArray::open`].
    pub fn open_with_width(
        store: &Store,
        path: &str,
        record_width: Option<usize>,
    ) -> Result<ZarrArray, ZarrError> {
        match read_node(store, path)? {
            Some(Node::Array(info)) => Self::with_info(store, info, record_width),
            _ => Err(ZarrError::NotFound {
                url: store.url().to_string(),
                path: path.to_string(),
            }),
        }
    }

    /// The array `info` describes (as [`read_node`] read it), without reading its metadata
    /// again.
    ///
    /// # Errors
    /// As [`ZarrArray::open`], less `NotFound`.
    fn with_info(
        store: &Store,
        info: ArrayInfo,
        record_width: Option<usize>,
    ) -> Result<ZarrArray, ZarrError> {
        let (array, swap_bytes) = open_zarrs(store, &info)?;
        let element = info.dtype.fill_bytes(&info.fill_value).ok_or_else(|| {
            meta_err(store, &info.path, "fill value does not match the data type")
        })?;
        // One task decodes one chunk at a time: parallelism comes from tasks, memory stays known.
        let options = CodecOptions::default()
            .with_concurrent_target(1)
            .with_store_empty_chunks(info.zarr_format == 2 && info.fill_value.is_null());
        let direct = if swap_bytes || info.dtype.is_variable() {
            None
        } else {
            direct_codec(&array)
        };
        let mut opened = ZarrArray {
            info,
            url: store.url().to_string(),
            array,
            fill: element.clone(),
            options,
            swap_bytes,
            direct,
            local: store.local_path().is_some().then(|| store.clone()),
        };
        if opened.info.dtype.is_variable() {
            let width = match record_width {
                Some(w) => w,
                None => opened.measure_width()?,
            };
            opened.info.item_size = width.max(RECORD_LEN + element.len());
            opened.fill = opened.record(&[element]);
        }
        Ok(opened)
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

    /// One element's fill value as [`ZarrArray::write_chunk`] takes it in records of `width`
    /// bytes: [`ZarrArray::fill_bytes`] for a fixed-size type; for a variable-length one, the
    /// fill record at that width (an empty element if the fill does not fit it).
    #[must_use]
    pub fn fill_element(&self, width: usize) -> Vec<u8> {
        if !self.info.dtype.is_variable() || width == self.fill.len() {
            return self.fill.clone();
        }
        let mut record = vec![0; width.max(RECORD_LEN)];
        let len = self
            .fill
            .get(..RECORD_LEN)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if RECORD_LEN + len <= width {
            record[..RECORD_LEN + len].copy_from_slice(&self.fill[..RECORD_LEN + len]);
        }
        record
    }

    /// `source`: zarrs' error, or what is wrong in words.
    fn chunk_err(
        &self,
        chunk: &[u64],
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ZarrError {
        ZarrError::Chunk {
            url: self.url.clone(),
            path: self.info.path.clone(),
            chunk: chunk.to_vec(),
            source: source.into(),
        }
    }

    /// The decoded bytes (native order) of the whole chunk at `chunk`, at its full nominal shape
    /// even at the array's edge; a chunk never written decodes to the fill value. Elements of
    /// a variable-length type come as records of [`ArrayInfo::item_size`] bytes: the length
    /// (u32, little-endian), then the bytes, padded with zeros.
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when the chunk cannot be read or decoded.
    pub fn read_chunk(&self, chunk: &[u64]) -> Result<Vec<u8>, ZarrError> {
        let bytes: ArrayBytes<'static> = self
            .array
            .retrieve_chunk_opt(chunk, &self.options)
            .map_err(|e| self.chunk_err(chunk, e))?;
        if !self.info.dtype.is_variable() {
            let mut raw = bytes
                .into_fixed()
                .map_err(|e| self.chunk_err(chunk, e))?
                .into_owned();
            if self.swap_bytes {
                self.info.dtype.swap_byte_order(&mut raw);
            }
            return Ok(raw);
        }
        let (raw, offsets) = bytes
            .into_variable()
            .map_err(|e| self.chunk_err(chunk, e))?
            .into_parts();
        let elements: Vec<&[u8]> = offsets.windows(2).map(|w| &raw[w[0]..w[1]]).collect();
        if let Some(long) = elements
            .iter()
            .find(|e| RECORD_LEN + e.len() > self.info.item_size)
        {
            // The array changed since it was measured: refuse rather than cut an element.
            return Err(self.chunk_err(
                chunk,
                format!(
                    "an element of {} bytes is longer than the {} measured when the array was opened",
                    long.len(),
                    self.info.item_size - RECORD_LEN
                ),
            ));
        }
        Ok(self.record(&elements))
    }

    /// [`ZarrArray::read_chunk`] decoded straight into `dest` (the whole nominal chunk, native
    /// order), without a buffer of its own, when the chunk is stored and its codecs are
    /// `bytes` and at most one zstd. Returns false, with `dest` untouched, when it cannot
    /// (other codecs, a chunk never written): the caller then reads it with
    /// [`ZarrArray::read_chunk`].
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when the chunk cannot be read, does not decode, or decodes to
    /// another length than `dest`'s.
    pub fn read_chunk_into(&self, chunk: &[u64], dest: &mut [u8]) -> Result<bool, ZarrError> {
        let Some(direct) = self.direct else {
            return Ok(false);
        };
        let Some(stored) = self
            .array
            .retrieve_encoded_chunk(chunk)
            .map_err(|e| self.chunk_err(chunk, e))?
        else {
            return Ok(false);
        };
        self.decode_direct(direct, chunk, &stored, dest)?;
        Ok(true)
    }

    /// [`ZarrArray::read_chunk_into`], reading the stored bytes of a chunk of a local store
    /// into `stored` (resized to fit), a buffer the caller reuses from chunk to chunk, rather
    /// than into one allocated, faulted in and freed again for every chunk.
    ///
    /// # Errors
    /// As [`ZarrArray::read_chunk_into`].
    pub fn read_chunk_into_reusing(
        &self,
        chunk: &[u64],
        dest: &mut [u8],
        stored: &mut Vec<u8>,
    ) -> Result<bool, ZarrError> {
        let (Some(direct), Some(store)) = (self.direct, &self.local) else {
            return self.read_chunk_into(chunk, dest);
        };
        let key = self.array.chunk_key(chunk);
        // The stored length is known by asking: a read at the wrong length reads nothing and
        // says the length (a chunk rewritten meanwhile says it again).
        for _ in 0..4 {
            match store
                .read_exact_into(key.as_str(), stored)
                .map_err(|e| self.chunk_err(chunk, e))?
            {
                ReadInto::Missing => return Ok(false),
                ReadInto::Size(n) => {
                    let n = usize::try_from(n).map_err(|e| self.chunk_err(chunk, e))?;
                    stored.resize(n, 0);
                }
                ReadInto::Read => {
                    self.decode_direct(direct, chunk, stored, dest)?;
                    return Ok(true);
                }
            }
        }
        self.read_chunk_into(chunk, dest)
    }

    /// Decode a chunk's stored bytes of a direct codec into `dest`, which they must fill.
    fn decode_direct(
        &self,
        direct: DirectCodec,
        chunk: &[u64],
        stored: &[u8],
        dest: &mut [u8],
    ) -> Result<(), ZarrError> {
        let len = match direct {
            DirectCodec::Raw => {
                if stored.len() == dest.len() {
                    dest.copy_from_slice(stored);
                }
                stored.len()
            }
            DirectCodec::Zstd => ZSTD_DECODER.with(|slot| {
                let mut slot = slot.borrow_mut();
                let decoder = match slot.as_mut() {
                    Some(d) => d,
                    None => slot.insert(
                        zstd::bulk::Decompressor::new().map_err(|e| self.chunk_err(chunk, e))?,
                    ),
                };
                decoder
                    .decompress_to_buffer(stored, dest)
                    .map_err(|e| self.chunk_err(chunk, e))
            })?,
        };
        if len != dest.len() {
            return Err(self.chunk_err(
                chunk,
                format!("decodes to {len} bytes, expected {}", dest.len()),
            ));
        }
        Ok(())
    }

    /// Records of [`ArrayInfo::item_size`] bytes for variable-length `elements`.
    fn record<E: AsRef<[u8]>>(&self, elements: &[E]) -> Vec<u8> {
        let width = self.info.item_size;
        let mut out = vec![0; elements.len() * width];
        for (slot, e) in out.chunks_exact_mut(width).zip(elements) {
            let e = e.as_ref();
            // Lengths fit u32: read_chunk refuses an element longer than the record.
            slot[..RECORD_LEN].copy_from_slice(&(e.len() as u32).to_le_bytes());
            slot[RECORD_LEN..RECORD_LEN + e.len()].copy_from_slice(e);
        }
        out
    }

    /// The longest element of a variable-length array, measured over every chunk, as a
    /// record width (the length prefix included).
    fn measure_width(&self) -> Result<usize, ZarrError> {
        let grid: Vec<u64> = self
            .info
            .shape
            .iter()
            .zip(&self.info.chunks)
            .map(|(s, c)| s.div_ceil((*c).max(1)))
            .collect();
        let total: u64 = grid.iter().product();
        let mut longest = 0;
        for flat in 0..total {
            let mut rest = flat;
            let mut indices = vec![0; grid.len()];
            for (i, n) in indices.iter_mut().zip(&grid).rev() {
                *i = rest % n;
                rest /= n;
            }
            let bytes: ArrayBytes<'static> = self
                .array
                .retrieve_chunk_opt(&indices, &self.options)
                .map_err(|e| self.chunk_err(&indices, e))?;
            let variable = bytes
                .into_variable()
                .map_err(|e| self.chunk_err(&indices, e))?;
            let offsets = variable.offsets();
            longest = offsets
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(longest, usize::max);
        }
        if u32::try_from(longest).is_err() {
            return Err(meta_err_url(
                &self.url,
                &self.info.path,
                "an element longer than 4 GiB",
            ));
        }
        Ok(RECORD_LEN + longest)
    }

    /// Encode and store the whole chunk at `chunk` from `bytes` (native order, full nominal
    /// shape). A chunk equal to the fill value everywhere is erased instead, as zarr-python does.
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when encoding or storing fails.
    pub fn write_chunk(&self, chunk: &[u64], bytes: Vec<u8>) -> Result<(), ZarrError> {
        self.write_chunk_cow(chunk, std::borrow::Cow::Owned(bytes))
    }

    /// [`ZarrArray::write_chunk`] from a borrowed buffer, which the caller may then reuse.
    ///
    /// # Errors
    /// [`ZarrError::Chunk`] when encoding or storing fails.
    pub fn write_chunk_slice(&self, chunk: &[u64], bytes: &[u8]) -> Result<(), ZarrError> {
        self.write_chunk_cow(chunk, std::borrow::Cow::Borrowed(bytes))
    }

    fn write_chunk_cow(
        &self,
        chunk: &[u64],
        bytes: std::borrow::Cow<'_, [u8]>,
    ) -> Result<(), ZarrError> {
        let bytes = if self.info.dtype.is_variable() {
            self.records_to_elements(chunk, &bytes)?
        } else if self.swap_bytes {
            let mut bytes = bytes.into_owned();
            self.info.dtype.swap_byte_order(&mut bytes);
            ArrayBytes::new_flen(bytes)
        } else {
            ArrayBytes::new_flen(bytes)
        };
        self.array
            .store_chunk_opt(chunk, bytes, &self.options)
            .map_err(|e| self.chunk_err(chunk, e))
    }

    /// Variable-length elements from records of any one width (the chunk's bytes divided by
    /// its elements): a writer's records come from its source, measured there.
    fn records_to_elements(
        &self,
        chunk: &[u64],
        records: &[u8],
    ) -> Result<ArrayBytes<'static>, ZarrError> {
        let elements: u64 = self.info.chunks.iter().product();
        let width = usize::try_from(elements)
            .ok()
            .filter(|n| *n > 0 && records.len().is_multiple_of(*n))
            .map(|n| records.len() / n)
            .filter(|w| *w >= RECORD_LEN)
            .ok_or_else(|| self.chunk_err(chunk, "chunk bytes are not whole records"))?;
        let mut raw = Vec::with_capacity(records.len());
        let mut offsets = Vec::with_capacity(records.len() / width + 1);
        offsets.push(0);
        for record in records.chunks_exact(width) {
            let (len, body) = record.split_at(RECORD_LEN);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let element = body
                .get(..len)
                .ok_or_else(|| self.chunk_err(chunk, "a record longer than its width"))?;
            raw.extend_from_slice(element);
            offsets.push(raw.len());
        }
        let offsets = ArrayBytesOffsets::new(offsets).map_err(|e| self.chunk_err(chunk, e))?;
        ArrayBytes::new_vlen(raw, offsets).map_err(|e| self.chunk_err(chunk, e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{parent_groups, read_node, Node};
    use crate::Store;

    #[test]
    fn a_group_whose_metadata_is_not_a_v2_group_is_refused() {
        let store = Store::open("memory://zgroup-refused").unwrap();
        store
            .put(".zgroup", b"{\"zarr_format\": 2}".to_vec())
            .unwrap();
        assert!(matches!(read_node(&store, ""), Ok(Some(Node::Group(_)))));
        for bad in [&b"not json"[..], b"[]", b"{\"zarr_format\": 3}", b"{}"] {
            store.put(".zgroup", bad.to_vec()).unwrap();
            assert!(
                read_node(&store, "").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parent_groups_lists_every_group_above_an_array_once() {
        let groups: Vec<String> = parent_groups(&["v", "sub/w", "sub/deeper/x", "other/y"])
            .into_iter()
            .collect();
        assert_eq!(groups, ["", "other", "sub", "sub/deeper"]);
        assert_eq!(parent_groups(&[]).into_iter().collect::<Vec<_>>(), [""]);
    }
}
