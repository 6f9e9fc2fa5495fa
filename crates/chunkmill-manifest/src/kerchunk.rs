//! kerchunk reference JSON, version 1 (`{"version": 1, "refs": {…}}`), written and read.
//!
//! Keys follow Zarr v2: `.zgroup`, `.zattrs`, `<array>/.zarray`, `<array>/.zattrs` (with
//! `_ARRAY_DIMENSIONS`), and `<array>/i.j.k` chunk keys whose value is `[url, offset, length]`
//! or, for inlined chunks, `"base64:…"`. Missing chunks have no key (a read gives the fill
//! value). fsspec's `ReferenceFileSystem` serves it to zarr-python and xarray:
//!
//! ```python
//! xr.open_dataset("reference://", engine="zarr",
//!                 backend_kwargs={"consolidated": False, "storage_options": {"fo": path}})
//! ```
//!
//! The writer streams the references (no JSON tree of the whole file in memory) and writes
//! atomically. The reader accepts version 1 (with `templates`) and version 0; `gen` and
//! whole-file references (`[url]`) are refused with a clear error.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::array::{ArrayMetadata, ManifestArray, VirtualDataset};
use crate::atomic::write_atomic;
use crate::codecs::Codec;
use crate::error::{Error, Result};
use crate::manifest::{ChunkEntry, ChunkManifest};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

pub(crate) fn prefixed(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

/// The chunk key of grid indices: `i.j.k`, `0` for a scalar.
fn chunk_key(indices: &[u64]) -> String {
    if indices.is_empty() {
        return "0".into();
    }
    indices
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The `.zgroup` and `.zattrs` documents (key, JSON text) of every group of `ds`, parents
/// of arrays included, in key order.
pub(crate) fn group_documents(ds: &VirtualDataset) -> Vec<(String, String)> {
    let keys: Vec<&str> = ds.arrays.keys().map(String::as_str).collect();
    let mut groups = chunkmill_store::zarr::parent_groups(&keys);
    groups.extend(ds.groups.keys().cloned());
    let mut out = Vec::with_capacity(groups.len() * 2);
    for g in &groups {
        out.push((prefixed(g, ".zgroup"), "{\"zarr_format\":2}".to_string()));
        let attrs = ds.groups.get(g).cloned().unwrap_or_default();
        out.push((prefixed(g, ".zattrs"), Value::Object(attrs).to_string()));
    }
    out
}

/// The `.zarray` and `.zattrs` documents (key, JSON text) of the array `key`. `.zattrs` may
/// hold bare `NaN`/`Infinity` literals, as zarr-python writes them.
pub(crate) fn array_documents(key: &str, array: &ManifestArray) -> [(String, String); 2] {
    let m = &array.metadata;
    let zarray = m.to_zarray(array.manifest.has_missing());
    [
        (prefixed(key, ".zarray"), zarray.to_string()),
        (prefixed(key, ".zattrs"), m.to_zattrs()),
    ]
}

/// Writes `ds` as kerchunk JSON v1 to `w`.
///
/// # Errors
/// Only the writer's.
pub fn to_kerchunk_json(ds: &VirtualDataset, w: &mut dyn Write) -> io::Result<()> {
    w.write_all(b"{\"version\":1,\"refs\":{\n")?;
    let mut first = true;
    let mut entry = |w: &mut dyn Write, key: &str, value: &str| -> io::Result<()> {
        if !first {
            w.write_all(b",\n")?;
        }
        first = false;
        w.write_all(json_string(key).as_bytes())?;
        w.write_all(b":")?;
        w.write_all(value.as_bytes())
    };
    for (key, text) in group_documents(ds) {
        entry(w, &key, &json_string(&text))?;
    }
    for (key, array) in &ds.arrays {
        for (doc_key, text) in array_documents(key, array) {
            entry(w, &doc_key, &json_string(&text))?;
        }
        for (flat, chunk) in array.manifest.iter() {
            let value = match chunk {
                ChunkEntry::Missing => continue,
                ChunkEntry::Inlined(bytes) => json_string(&format!("base64:{}", B64.encode(bytes))),
                ChunkEntry::Reference {
                    path_id,
                    offset,
                    length,
                } => {
                    let url = ds.urls.get(path_id as usize).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{key}: path id {path_id} has no URL"),
                        )
                    })?;
                    format!("[{},{offset},{length}]", json_string(url))
                }
            };
            let chunk_name = chunk_key(&array.manifest.indices(flat));
            entry(w, &prefixed(key, &chunk_name), &value)?;
        }
    }
    w.write_all(b"\n}}\n")
}

/// Writes `ds` as kerchunk JSON v1 at `path`, atomically (temporary file + rename): on any
/// error nothing is left at `path`. Returns the bytes written.
///
/// # Errors
/// [`Error::OutputExists`] unless `overwrite`; [`Error::Write`].
pub fn write_kerchunk_json(ds: &VirtualDataset, path: &Path, overwrite: bool) -> Result<u64> {
    write_atomic(path, overwrite, |w| to_kerchunk_json(ds, w))
}

/// Reads kerchunk JSON (v1 or v0) from `path`.
///
/// # Errors
/// [`Error::Reference`] for a file that cannot be read or parsed, or uses `gen` or whole-file
/// references.
pub fn read_kerchunk_json(path: &Path) -> Result<VirtualDataset> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReferenceRead {
        path: name.clone(),
        source,
    })?;
    parse_kerchunk_json(&text, &name)
}

/// Python's `json` writes NaN and the infinities as bare literals (zarr-python does, in
/// `.zattrs`); serde_json refuses them. They become the strings Zarr uses.
pub(crate) fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        if let Some(word) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w))
        {
            out.push('"');
            out.push_str(word);
            out.push('"');
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Parses kerchunk JSON text; `name` is used in errors and becomes the dataset's name.
///
/// # Errors
/// As [`read_kerchunk_json`].
pub fn parse_kerchunk_json(text: &str, name: &str) -> Result<VirtualDataset> {
    let bad = |reason: String| reference_error(name, reason);
    let top: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let top = top
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let (refs, templates) = refs_and_templates(top).map_err(bad)?;
    let RefsByKind {
        mut groups,
        zarrays,
        zattrs,
        mut chunks,
    } = RefsByKind::sort(refs).map_err(bad)?;

    let mut urls = UrlTable::default();
    let mut arrays = BTreeMap::new();
    for (key, zarray) in zarrays {
        let attrs = zattrs
            .get(&key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let metadata = array_metadata(&key, &zarray, attrs).map_err(bad)?;
        let mut manifest = ChunkManifest::new(metadata.grid_shape())?;
        for (leaf, v) in chunks.remove(&key).unwrap_or_default() {
            let indices: Option<Vec<u64>> = if metadata.shape.is_empty() {
                (leaf == "0").then(Vec::new)
            } else {
                leaf.split(['.', '/']).map(|p| p.parse().ok()).collect()
            };
            let flat = indices
                .and_then(|i| manifest.flat_index(&i))
                .ok_or_else(|| {
                    bad(format!(
                        "{key}/{leaf}: not a chunk key of the grid {:?}",
                        manifest.grid_shape()
                    ))
                })?;
            match chunk_value(v, &templates).map_err(|e| bad(format!("{key}/{leaf}: {e}")))? {
                ChunkValue::Inline(bytes) => manifest.set_inlined(flat, bytes)?,
                ChunkValue::Reference {
                    url,
                    offset,
                    length,
                } => manifest.set_reference(flat, urls.id(url).map_err(bad)?, offset, length)?,
            }
        }
        arrays.insert(key, ManifestArray { metadata, manifest });
    }
    if let Some((key, _)) = chunks
        .iter()
        .find(|(k, _)| !k.is_empty() && !groups.contains_key(*k))
    {
        return Err(bad(format!("{key}: chunks without a .zarray")));
    }
    groups.entry(String::new()).or_insert_with(Map::new);
    Ok(VirtualDataset {
        name: name.to_string(),
        urls: urls.urls,
        groups,
        arrays,
        encodings: BTreeMap::new(),
    })
}

fn reference_error(name: &str, reason: String) -> Error {
    Error::Reference {
        path: name.to_string(),
        reason,
    }
}

/// The references of a document and its URL templates (by name).
type RefsAndTemplates<'a> = (&'a Map<String, Value>, HashMap<String, String>);

/// The references of a version 0 or 1 document, and the URL templates of version 1.
fn refs_and_templates(
    top: &Map<String, Value>,
) -> std::result::Result<RefsAndTemplates<'_>, String> {
    match top.get("version") {
        Some(v) if v.as_u64() == Some(1) => {
            if top
                .get("gen")
                .and_then(Value::as_array)
                .is_some_and(|g| !g.is_empty())
            {
                return Err("`gen` references are not supported".into());
            }
            let refs = top
                .get("refs")
                .and_then(Value::as_object)
                .ok_or("version 1 without a `refs` object")?;
            let templates: HashMap<String, String> = top
                .get("templates")
                .and_then(Value::as_object)
                .map(|t| {
                    t.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Ok((refs, templates))
        }
        Some(v) => Err(format!("unsupported version {v}")),
        None => Ok((top, HashMap::new())),
    }
}

/// A metadata value: a JSON string, an object (v0), or base64 JSON text.
fn metadata_value(key: &str, v: &Value) -> std::result::Result<Value, String> {
    let text = match v {
        Value::String(s) => match s.strip_prefix("base64:") {
            Some(b) => String::from_utf8(B64.decode(b).map_err(|e| format!("{key}: {e}"))?)
                .map_err(|e| format!("{key}: {e}"))?,
            None => s.clone(),
        },
        Value::Object(_) => return Ok(v.clone()),
        _ => return Err(format!("{key}: metadata is neither text nor an object")),
    };
    serde_json::from_str(&quote_non_finite(&text)).map_err(|e| format!("{key}: not JSON: {e}"))
}

/// The references sorted by what their keys name, each under its node's path.
struct RefsByKind<'a> {
    /// Group attributes (filled from `.zattrs`) by group path.
    groups: BTreeMap<String, Map<String, Value>>,
    zarrays: BTreeMap<String, Value>,
    zattrs: BTreeMap<String, Value>,
    /// Chunk key leaves and their references, by array path.
    chunks: BTreeMap<String, Vec<(String, &'a Value)>>,
}

impl<'a> RefsByKind<'a> {
    fn sort(refs: &'a Map<String, Value>) -> std::result::Result<Self, String> {
        let mut sorted = RefsByKind {
            groups: BTreeMap::new(),
            zarrays: BTreeMap::new(),
            zattrs: BTreeMap::new(),
            chunks: BTreeMap::new(),
        };
        for (key, v) in refs {
            let (prefix, leaf) = match key.rsplit_once('/') {
                Some((p, l)) => (p.to_string(), l),
                None => (String::new(), key.as_str()),
            };
            match leaf {
                ".zgroup" => {
                    sorted.groups.entry(prefix).or_default();
                }
                ".zarray" => {
                    sorted.zarrays.insert(prefix, metadata_value(key, v)?);
                }
                ".zattrs" => {
                    sorted.zattrs.insert(prefix, metadata_value(key, v)?);
                }
                ".zmetadata" => {}
                _ => sorted
                    .chunks
                    .entry(prefix)
                    .or_default()
                    .push((leaf.to_string(), v)),
            }
        }
        for (prefix, attrs) in &sorted.zattrs {
            if let (Some(g), Some(a)) = (sorted.groups.get_mut(prefix), attrs.as_object()) {
                *g = a.clone();
            }
        }
        Ok(sorted)
    }
}

/// One chunk's reference.
enum ChunkValue {
    Inline(Vec<u8>),
    Reference {
        url: String,
        offset: u64,
        length: u64,
    },
}

fn chunk_value(
    v: &Value,
    templates: &HashMap<String, String>,
) -> std::result::Result<ChunkValue, String> {
    match v {
        Value::String(s) => Ok(ChunkValue::Inline(match s.strip_prefix("base64:") {
            Some(b) => B64.decode(b).map_err(|e| e.to_string())?,
            None => s.as_bytes().to_vec(),
        })),
        Value::Array(a) if a.len() == 3 => {
            let url = a[0].as_str().ok_or("URL is not text")?;
            let (Some(offset), Some(length)) = (a[1].as_u64(), a[2].as_u64()) else {
                return Err("offset and length must be integers".into());
            };
            Ok(ChunkValue::Reference {
                url: expand_template(url, templates),
                offset,
                length,
            })
        }
        Value::Array(a) if a.len() == 1 => Err("whole-file references are not supported".into()),
        _ => Err("not a reference".into()),
    }
}

/// The dataset's URLs, each once, in order of first use.
#[derive(Default)]
struct UrlTable {
    urls: Vec<String>,
    ids: HashMap<String, u32>,
}

impl UrlTable {
    fn id(&mut self, url: String) -> std::result::Result<u32, String> {
        if let Some(&id) = self.ids.get(&url) {
            return Ok(id);
        }
        let id = u32::try_from(self.urls.len()).map_err(|_| "too many URLs".to_string())?;
        self.ids.insert(url.clone(), id);
        self.urls.push(url);
        Ok(id)
    }
}

fn expand_template(url: &str, templates: &HashMap<String, String>) -> String {
    if !url.contains("{{") {
        return url.to_string();
    }
    let mut out = url.to_string();
    for (k, v) in templates {
        out = out.replace(&format!("{{{{{k}}}}}", k = k), v);
    }
    out
}

/// `.zarray` + `.zattrs` → metadata. A non-null v2 fill value becomes the `_FillValue`
/// attribute again (the writer moves it out), as xarray reads it.
pub(crate) fn array_metadata(
    key: &str,
    zarray: &Value,
    mut attrs: Map<String, Value>,
) -> std::result::Result<ArrayMetadata, String> {
    let z = zarray
        .as_object()
        .ok_or_else(|| format!("{key}/.zarray: not an object"))?;
    let u64s = |field: &str| -> std::result::Result<Vec<u64>, String> {
        z.get(field)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{key}/.zarray: no {field}"))?
            .iter()
            .map(|x| {
                x.as_u64()
                    .ok_or_else(|| format!("{key}/.zarray: {field} holds a non-integer"))
            })
            .collect()
    };
    let shape = u64s("shape")?;
    let chunk_shape = u64s("chunks")?;
    if chunk_shape.len() != shape.len() || chunk_shape.contains(&0) {
        return Err(format!(
            "{key}/.zarray: chunks {chunk_shape:?} do not fit shape {shape:?}"
        ));
    }
    let dtype = match z.get("dtype") {
        Some(Value::String(s)) => s.clone(),
        // A structured type, numpy's packed `descr` as chunkmill writes it (its own inlined
        // compound variables).
        Some(d @ Value::Array(_)) => Some(d.to_string())
            .filter(|t| crate::array::structured_fields(t).is_some())
            .ok_or_else(|| format!("{key}/.zarray: dtype {d} is not a list of [name, type]"))?,
        _ => return Err(format!("{key}/.zarray: dtype is not a simple type string")),
    };
    // A structured type's byte order is its fields' (all alike, see scan).
    let first_order = crate::array::structured_fields(&dtype).and_then(|f| {
        f.iter()
            .find_map(|(_, t)| t.chars().next().filter(|c| matches!(c, '<' | '>')))
    });
    let endian = match first_order.or_else(|| dtype.chars().next()) {
        Some('<') => Some(chunkmill_hdf5::ByteOrder::Little),
        Some('>') => Some(chunkmill_hdf5::ByteOrder::Big),
        _ => None,
    };
    let mut codecs = vec![Codec::bytes(endian)];
    for f in z
        .get("filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        codecs.push(
            Codec::from_numcodecs(f)
                .ok_or_else(|| format!("{key}/.zarray: filter {f} has no id"))?,
        );
    }
    if let Some(c) = z.get("compressor").filter(|c| !c.is_null()) {
        codecs.push(
            Codec::from_numcodecs(c)
                .ok_or_else(|| format!("{key}/.zarray: compressor {c} has no id"))?,
        );
    }
    let fill_value = z.get("fill_value").cloned().unwrap_or(Value::Null);
    let dimension_names: Vec<String> = match attrs.remove("_ARRAY_DIMENSIONS") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}/.zattrs: _ARRAY_DIMENSIONS holds {d}"))
            })
            .collect::<std::result::Result<_, _>>()?,
        _ => (0..shape.len()).map(|i| format!("dim_{i}")).collect(),
    };
    if dimension_names.len() != shape.len() {
        return Err(format!(
            "{key}/.zattrs: _ARRAY_DIMENSIONS {dimension_names:?} do not fit shape {shape:?}"
        ));
    }
    if !fill_value.is_null() {
        attrs.insert("_FillValue".into(), fill_value.clone());
    }
    Ok(ArrayMetadata {
        shape,
        dtype,
        chunk_shape,
        fill_value,
        codecs,
        dimension_names,
        attributes: attrs,
        attribute_types: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Result<VirtualDataset> {
        let mut attributes = Map::new();
        attributes.insert("units".into(), Value::from("K"));
        attributes.insert("_FillValue".into(), Value::from("NaN"));
        let metadata = ArrayMetadata {
            shape: vec![3, 4],
            dtype: ">f4".into(),
            chunk_shape: vec![2, 4],
            fill_value: Value::from("NaN"),
            codecs: vec![
                Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Big)),
                Codec::from_numcodecs(&serde_json::json!({"id": "zlib", "level": 4}))
                    .ok_or_else(|| Error::Manifest("codec".into()))?,
            ],
            dimension_names: vec!["time".into(), "x".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        };
        let mut manifest = ChunkManifest::new(vec![2, 1])?;
        manifest.set_reference(0, 0, 4096, 100)?;
        manifest.set_inlined(1, vec![1, 2, 3])?;
        let mut arrays = BTreeMap::new();
        arrays.insert("g/air".to_string(), ManifestArray { metadata, manifest });
        let mut groups = BTreeMap::new();
        groups.insert(
            String::new(),
            Map::from_iter([("title".to_string(), Value::from("t"))]),
        );
        Ok(VirtualDataset {
            name: "mem".into(),
            urls: vec!["/data/a \"b\".nc".into()],
            groups,
            arrays,
            encodings: BTreeMap::new(),
        })
    }

    #[test]
    fn writes_the_keys_kerchunk_writes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        to_kerchunk_json(&dataset()?, &mut out)?;
        let v: Value = serde_json::from_slice(&out)?;
        let refs = &v["refs"];
        assert_eq!(v["version"], 1);
        assert_eq!(refs[".zgroup"], "{\"zarr_format\":2}");
        assert_eq!(refs["g/.zgroup"], "{\"zarr_format\":2}");
        assert_eq!(
            refs["g/air/0.0"],
            serde_json::json!(["/data/a \"b\".nc", 4096, 100])
        );
        assert_eq!(refs["g/air/1.0"], "base64:AQID");
        let zarray: Value =
            serde_json::from_str(refs["g/air/.zarray"].as_str().unwrap_or_default())?;
        assert_eq!(zarray["dtype"], ">f4");
        assert_eq!(zarray["fill_value"], "NaN");
        assert_eq!(
            zarray["filters"],
            serde_json::json!([{"id": "zlib", "level": 4}])
        );
        assert_eq!(
            refs["g/air/.zattrs"],
            "{\"_ARRAY_DIMENSIONS\":[\"time\",\"x\"],\"units\":\"K\"}"
        );
        Ok(())
    }

    #[test]
    fn reads_back_what_it_writes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = dataset()?;
        let mut out = Vec::new();
        to_kerchunk_json(&ds, &mut out)?;
        let back = parse_kerchunk_json(std::str::from_utf8(&out)?, "mem")?;
        let (a, b) = (&ds.arrays["g/air"], &back.arrays["g/air"]);
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.metadata, b.metadata);
        assert_eq!(back.urls, ds.urls);
        assert_eq!(back.groups[""], ds.groups[""]);
        Ok(())
    }

    #[test]
    fn bare_nan_literals_are_read() -> Result<()> {
        let text = r#"{"version":1,"refs":{".zgroup":"{\"zarr_format\":2}",
            "v/.zarray":"{\"shape\":[],\"chunks\":[],\"dtype\":\"<f8\",\"fill_value\":NaN,\"filters\":null,\"compressor\":null,\"zarr_format\":2,\"order\":\"C\"}",
            "v/.zattrs":"{\"_ARRAY_DIMENSIONS\":[],\"missing_value\":-Infinity,\"note\":\"NaN is fine\"}",
            "v/0":"base64:AAAAAAAA+H8="}}"#;
        let ds = parse_kerchunk_json(text, "t")?;
        let v = &ds.arrays["v"];
        assert_eq!(v.metadata.attributes["missing_value"], "-Infinity");
        assert_eq!(v.metadata.attributes["note"], "NaN is fine");
        assert_eq!(v.metadata.fill_value, "NaN");
        assert_eq!(
            v.manifest.get(0),
            Some(ChunkEntry::Inlined(&f64::NAN.to_le_bytes()))
        );
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_represent() {
        let whole = r#"{"version":1,"refs":{"v/.zarray":"{\"shape\":[1],\"chunks\":[1],\"dtype\":\"<i4\",\"fill_value\":0,\"zarr_format\":2}","v/0":["s3://b/k"]}}"#;
        let err = parse_kerchunk_json(whole, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("whole-file references"), "{err}");
        assert!(parse_kerchunk_json("[]", "t").is_err());
    }
}
