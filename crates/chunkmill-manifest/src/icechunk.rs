//! Icechunk repositories of virtual references, written and read. This is the one module that
//! uses the `icechunk` crate (pinned exactly, local filesystem storage only); its async API is
//! driven by a small tokio runtime made per call.
//!
//! [`write_icechunk`] makes a new repository (Icechunk format 2, what icechunk-python 2.x
//! reads) in a temporary directory next to the output, with one commit on `main`:
//!
//! - the root group and every group with its attributes (`zarr.json`, Zarr v3);
//! - every array with its Zarr v3 metadata ([`ArrayMetadata::to_zarr_v3`]: data type, chunk
//!   grid, fill value, codecs, dimension names), where the CF `_FillValue` attribute is encoded
//!   as xarray encodes it for Zarr v3 (the bytes of a little-endian `f8`, in base64, for
//!   floats; see [`encode_fill_value_attribute`]);
//! - every referenced chunk as a virtual reference (`file:///abs/path.nc` for local files, the
//!   `s3://…` URL for objects), inlined chunks as chunk payloads (Icechunk keeps those of up to
//!   512 bytes in the manifest and writes larger ones as its own chunk objects), missing chunks
//!   absent (they read as the fill value);
//! - one virtual chunk container per directory (or bucket prefix) the references point into,
//!   so that a reader only has to authorize those prefixes.
//!
//! Then the directory is renamed into place. [`read_icechunk`] turns a repository's `main` back
//! into a [`VirtualDataset`] (the chunk objects that Icechunk wrote for large inlined chunks
//! are read back as inlined chunks), so a write and a read give the dataset that was written.
//!
//! ```python
//! import icechunk, xarray as xr
//! repo = icechunk.Repository.open(
//!     icechunk.local_filesystem_storage("out.icechunk"),
//!     authorize_virtual_chunk_access={"file:///data/": icechunk.credentials.LocalFileSystemAccess},
//! )
//! ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use icechunk::config::{ObjectStoreConfig, RepositoryConfig};
use icechunk::format::manifest::{ChunkPayload, VirtualChunkLocation, VirtualChunkRef};
use icechunk::format::snapshot::NodeData;
use icechunk::format::{ByteRange, ChunkIndices};
use icechunk::repository::VersionInfo;
use icechunk::storage::S3Options;
use icechunk::store::SetVirtualRefsResult;
use icechunk::virtual_chunks::VirtualChunkContainer;
use icechunk::{new_local_filesystem_storage, Repository, Store};
use serde_json::{Map, Value};
use tokio::sync::RwLock;

use crate::array::{ArrayMetadata, ManifestArray, VirtualDataset};
use crate::atomic::write_dir_atomic;
use crate::codecs::Codec;
use crate::error::{Error, Result};
use crate::manifest::{ChunkEntry, ChunkManifest};
use chunkmill_store::DataType;

/// The branch written and read.
pub const BRANCH: &str = "main";

/// Whether `dir` looks like an Icechunk repository: a directory holding the objects Icechunk
/// writes at its root (`repo` in format 2, `refs/` in format 1) and a `snapshots/` directory.
pub fn is_icechunk(dir: &Path) -> bool {
    dir.join("snapshots").is_dir() && (dir.join("repo").is_file() || dir.join("refs").is_dir())
}

/// The virtual chunk container prefixes that cover `urls`: for each URL its directory
/// (`file:///data/2020/`, `s3://bucket/prefix/`), without prefixes that another one covers.
/// Local paths (no scheme) become `file://` URLs.
pub fn container_prefixes(urls: &[String]) -> Vec<String> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for u in urls {
        let url = location_url(u);
        if let Some(i) = url.rfind('/') {
            dirs.insert(url[..=i].to_string());
        }
    }
    let mut out: Vec<String> = Vec::new();
    for d in dirs {
        // BTreeSet order puts a prefix before everything it covers.
        if !out.iter().any(|p| d.starts_with(p.as_str())) {
            out.push(d);
        }
    }
    out
}

/// The URL Icechunk stores for a URL of the URL table: local absolute paths become
/// `file://` URLs (percent-encoded as needed), URLs with a scheme are kept.
fn location_url(u: &str) -> String {
    if u.contains("://") {
        return u.to_string();
    }
    url::Url::from_file_path(u).map_or_else(|()| format!("file://{u}"), |url| url.to_string())
}

/// The URL table entry for a location Icechunk returns: `file://` URLs back to paths.
fn table_url(location: &str) -> String {
    if location.starts_with("file://") {
        if let Ok(path) = url::Url::parse(location).and_then(|u| {
            u.to_file_path()
                .map_err(|()| url::ParseError::RelativeUrlWithoutBase)
        }) {
            return path.display().to_string();
        }
    }
    location.to_string()
}

/// The object store a container of `prefix` reads through: the local file system, or S3
/// with the region and endpoint of `AWS_REGION` and `AWS_ENDPOINT_URL` (an S3-compatible
/// server when an endpoint is set).
fn container_store(prefix: &str) -> std::result::Result<ObjectStoreConfig, String> {
    if let Some(rest) = prefix.strip_prefix("file://") {
        return Ok(ObjectStoreConfig::LocalFileSystem(PathBuf::from(
            table_url(&format!("file://{rest}")),
        )));
    }
    if prefix.starts_with("s3://") {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT_URL_S3"));
        let mut options = S3Options::default();
        options.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
        options.allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        options.force_path_style = endpoint.is_some();
        options.endpoint_url.clone_from(&endpoint);
        return Ok(if endpoint.is_some() {
            ObjectStoreConfig::S3Compatible(options)
        } else {
            ObjectStoreConfig::S3(options)
        });
    }
    Err(format!(
        "{prefix}: no Icechunk virtual chunk container for this scheme (file:// and s3:// are)"
    ))
}

/// Runs `f` to completion on a small runtime of its own.
fn block_on<T>(f: impl Future<Output = T>) -> io::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// The CF `_FillValue` attribute as xarray writes it in Zarr v3 attributes (its
/// `FillValueCoder`): for floats the bytes of the value as a little-endian `f8`, in base64;
/// for integers and booleans the value; for byte strings the bytes in base64.
pub fn encode_fill_value_attribute(dtype: &str, value: &Value) -> Value {
    match dtype.chars().nth(1) {
        Some('f') => {
            let x = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => match s.as_str() {
                    "NaN" => Some(f64::NAN),
                    "Infinity" => Some(f64::INFINITY),
                    "-Infinity" => Some(f64::NEG_INFINITY),
                    _ => None,
                },
                _ => None,
            };
            x.map_or_else(
                || value.clone(),
                |x| {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(x.to_le_bytes()))
                },
            )
        }
        Some('S') => match value {
            Value::String(s) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
            }
            other => other.clone(),
        },
        _ => value.clone(),
    }
}

/// The inverse of [`encode_fill_value_attribute`].
fn decode_fill_value_attribute(dtype: &str, value: &Value) -> Value {
    let Value::String(s) = value else {
        return value.clone();
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) else {
        return value.clone();
    };
    match dtype.chars().nth(1) {
        Some('f') => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(b) => {
                let x = f64::from_le_bytes(b);
                if x.is_nan() {
                    Value::from("NaN")
                } else if x.is_infinite() {
                    Value::from(if x > 0.0 { "Infinity" } else { "-Infinity" })
                } else {
                    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
                }
            }
            Err(_) => value.clone(),
        },
        Some('S') => String::from_utf8(bytes).map_or_else(|_| value.clone(), Value::String),
        _ => value.clone(),
    }
}

/// `zarr.json` of an array as written to Icechunk.
fn array_zarr_json(m: &ArrayMetadata) -> Value {
    let mut doc = m.to_zarr_v3();
    if let Some(fill) = m.attributes.get("_FillValue") {
        doc["attributes"]["_FillValue"] = encode_fill_value_attribute(&m.dtype, fill);
    }
    doc
}

fn group_zarr_json(attributes: &Map<String, Value>) -> Value {
    serde_json::json!({"zarr_format": 3, "node_type": "group", "attributes": attributes})
}

/// The Zarr key of chunk `indices` of array `key` (default v3 chunk key encoding).
fn chunk_key(key: &str, indices: &[u64]) -> String {
    let mut out = format!("{key}/c");
    for i in indices {
        out.push('/');
        out.push_str(&i.to_string());
    }
    out
}

fn icechunk_path(key: &str) -> std::result::Result<icechunk::format::Path, String> {
    icechunk::format::Path::try_from(format!("/{key}").as_str())
        .map_err(|e| format!("{key}: not an Icechunk node path: {e}"))
}

/// Writes `ds` as a new Icechunk repository in the directory `dir` (one commit on `main`),
/// atomically: on any error nothing is left at `dir` (with `overwrite`, what was there is
/// kept). Returns the bytes written.
///
/// # Errors
/// [`Error::OutputExists`] unless `overwrite`; [`Error::Write`] naming the output and what
/// Icechunk (or the file system) said, for instance a URL no container can hold.
pub fn write_icechunk(ds: &VirtualDataset, dir: &Path, overwrite: bool) -> Result<u64> {
    let write_err = |reason: String| Error::Write {
        path: dir.to_path_buf(),
        source: io::Error::other(reason),
    };
    write_dir_atomic(dir, overwrite, |tmp| {
        block_on(write_repository(ds, tmp))
            .map_err(|e| write_err(format!("cannot start the Icechunk runtime: {e}")))?
            .map_err(write_err)?;
        Ok(dir_size(tmp))
    })
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

async fn write_repository(ds: &VirtualDataset, tmp: &Path) -> std::result::Result<(), String> {
    let storage = new_local_filesystem_storage(tmp)
        .await
        .map_err(|e| format!("icechunk storage: {e}"))?;
    let mut config = RepositoryConfig::default();
    for prefix in container_prefixes(&ds.urls) {
        let store = container_store(&prefix)?;
        let container = VirtualChunkContainer::new(prefix.clone(), store)
            .map_err(|e| format!("virtual chunk container {prefix}: {e}"))?;
        config
            .set_virtual_chunk_container(container)
            .map_err(|e| format!("virtual chunk container {prefix}: {e}"))?;
    }
    let repo = Repository::create(storage)
        .config(config)
        .execute()
        .await
        .map_err(|e| format!("cannot create the Icechunk repository: {e}"))?;
    let session = repo
        .writable_session(BRANCH)
        .await
        .map_err(|e| format!("icechunk session: {e}"))?;
    let session = Arc::new(RwLock::new(session));
    let store = Store::from_session(Arc::clone(&session)).await;

    // Groups: the root, every group of the dataset, and the parents of every array.
    let mut groups: BTreeMap<String, Map<String, Value>> = ds.groups.clone();
    groups.entry(String::new()).or_default();
    for key in ds.arrays.keys().chain(ds.groups.keys()) {
        let mut parent = key.as_str();
        while let Some(i) = parent.rfind('/') {
            parent = &parent[..i];
            groups.entry(parent.to_string()).or_default();
        }
    }
    for (key, attributes) in &groups {
        let name = if key.is_empty() {
            "zarr.json".to_string()
        } else {
            format!("{key}/zarr.json")
        };
        store
            .set(&name, Bytes::from(group_zarr_json(attributes).to_string()))
            .await
            .map_err(|e| format!("group {key:?}: {e}"))?;
    }

    // URL table → locations, once per URL.
    let locations: Vec<VirtualChunkLocation> = ds
        .urls
        .iter()
        .map(|u| {
            VirtualChunkLocation::from_url(&location_url(u))
                .map_err(|e| format!("{u}: not a virtual chunk location: {e}"))
        })
        .collect::<std::result::Result<_, _>>()?;

    for (key, array) in &ds.arrays {
        let doc = array_zarr_json(&array.metadata);
        store
            .set(&format!("{key}/zarr.json"), Bytes::from(doc.to_string()))
            .await
            .map_err(|e| format!("{key}: zarr.json: {e}"))?;
        let manifest = &array.manifest;
        let mut refs = Vec::new();
        for (flat, entry) in manifest.iter() {
            match entry {
                ChunkEntry::Missing => {}
                ChunkEntry::Inlined(bytes) => {
                    let k = chunk_key(key, &manifest.indices(flat));
                    store
                        .set(&k, Bytes::copy_from_slice(bytes))
                        .await
                        .map_err(|e| format!("{k}: {e}"))?;
                }
                ChunkEntry::Reference {
                    path_id,
                    offset,
                    length,
                } => {
                    let location = locations.get(path_id as usize).ok_or_else(|| {
                        format!(
                            "{key}: chunk {flat} names URL {path_id}, which is not in the table"
                        )
                    })?;
                    let coords = manifest
                        .indices(flat)
                        .iter()
                        .map(|&i| u32::try_from(i))
                        .collect::<std::result::Result<Vec<u32>, _>>()
                        .map_err(|_| format!("{key}: chunk {flat}: index beyond 2^32"))?;
                    refs.push((
                        ChunkIndices(coords),
                        VirtualChunkRef {
                            location: location.clone(),
                            offset,
                            length,
                            checksum: None,
                        },
                    ));
                }
            }
        }
        if !refs.is_empty() {
            let path = icechunk_path(key)?;
            match store
                .set_virtual_refs(&path, true, refs)
                .await
                .map_err(|e| format!("{key}: {e}"))?
            {
                SetVirtualRefsResult::Done => {}
                SetVirtualRefsResult::FailedRefs(failed) => {
                    return Err(format!(
                    "{key}: {} chunk(s) point outside every virtual chunk container, first {:?}",
                    failed.len(),
                    failed.first().map(|c| c.0.clone()).unwrap_or_default()
                ))
                }
            }
        }
    }
    drop(store);
    let mut session = session.write().await;
    session
        .commit("chunkmill virtualize")
        .execute()
        .await
        .map_err(|e| format!("icechunk commit: {e}"))?;
    Ok(())
}

/// Reads the tip of `main` of the Icechunk repository in `dir` as a virtual dataset: groups,
/// arrays (Zarr v3 metadata back to [`ArrayMetadata`]), virtual references, inlined chunks
/// (inline payloads and Icechunk's own chunk objects alike) and missing chunks.
///
/// # Errors
/// [`Error::Reference`] naming `dir` and what could not be read.
pub fn read_icechunk(dir: &Path) -> Result<VirtualDataset> {
    let err = |reason: String| Error::Reference {
        path: dir.display().to_string(),
        reason,
    };
    block_on(read_repository(dir))
        .map_err(|e| err(format!("cannot start the Icechunk runtime: {e}")))?
        .map_err(err)
}

async fn read_repository(dir: &Path) -> std::result::Result<VirtualDataset, String> {
    let storage = new_local_filesystem_storage(dir)
        .await
        .map_err(|e| format!("icechunk storage: {e}"))?;
    let repo = Repository::open(storage)
        .execute()
        .await
        .map_err(|e| format!("not an Icechunk repository: {e}"))?;
    let session = repo
        .readonly_session(&VersionInfo::BranchTipRef(BRANCH.to_string()))
        .await
        .map_err(|e| format!("branch {BRANCH}: {e}"))?;
    let mut ds = VirtualDataset {
        name: dir.display().to_string(),
        ..VirtualDataset::default()
    };
    let mut url_ids: HashMap<String, u32> = HashMap::new();
    let nodes: Vec<_> = session
        .list_nodes(&icechunk::format::Path::root())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("listing nodes: {e}"))?;
    let session = Arc::new(RwLock::new(session));
    let store = Store::from_session(Arc::clone(&session)).await;
    for node in nodes {
        let key = node.path.to_string().trim_start_matches('/').to_string();
        let doc: Value =
            serde_json::from_slice(&node.user_data).map_err(|e| format!("{key}/zarr.json: {e}"))?;
        let attributes = doc
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match node.node_data {
            NodeData::Group => {
                ds.groups.insert(key, attributes);
            }
            NodeData::Array { .. } => {
                let metadata = array_metadata(&doc, attributes)
                    .map_err(|e| format!("{key}/zarr.json: {e}"))?;
                let mut manifest =
                    ChunkManifest::new(metadata.grid_shape()).map_err(|e| format!("{key}: {e}"))?;
                let chunks: Vec<_> = session
                    .read()
                    .await
                    .array_chunk_iterator(&node.path)
                    .await
                    .try_collect()
                    .await
                    .map_err(|e| format!("{key}: chunks: {e}"))?;
                for chunk in chunks {
                    let indices: Vec<u64> = chunk.coord.0.iter().map(|&i| u64::from(i)).collect();
                    let flat = manifest.flat_index(&indices).ok_or_else(|| {
                        format!(
                            "{key}: chunk {indices:?} outside the grid {:?}",
                            manifest.grid_shape()
                        )
                    })?;
                    match chunk.payload {
                        ChunkPayload::Virtual(r) => {
                            let url = table_url(r.location.url());
                            let next = u32::try_from(ds.urls.len())
                                .map_err(|_| "too many URLs".to_string())?;
                            let id = *url_ids.entry(url.clone()).or_insert_with(|| {
                                ds.urls.push(url);
                                next
                            });
                            manifest
                                .set_reference(flat, id, r.offset, r.length)
                                .map_err(|e| format!("{key}: {e}"))?;
                        }
                        ChunkPayload::Inline(bytes) => {
                            manifest
                                .set_inlined(flat, bytes.to_vec())
                                .map_err(|e| format!("{key}: {e}"))?;
                        }
                        _ => {
                            let k = chunk_key(&key, &indices);
                            let bytes = store
                                .get(&k, &ByteRange::ALL)
                                .await
                                .map_err(|e| format!("{k}: {e}"))?;
                            manifest
                                .set_inlined(flat, bytes.to_vec())
                                .map_err(|e| format!("{key}: {e}"))?;
                        }
                    }
                }
                ds.arrays.insert(key, ManifestArray { metadata, manifest });
            }
        }
    }
    Ok(ds)
}

/// A Zarr v3 array `zarr.json` (as [`array_zarr_json`] writes it) back to metadata.
fn array_metadata(
    doc: &Value,
    mut attributes: Map<String, Value>,
) -> std::result::Result<ArrayMetadata, String> {
    let u64s = |v: Option<&Value>, what: &str| -> std::result::Result<Vec<u64>, String> {
        v.and_then(Value::as_array)
            .ok_or_else(|| format!("no {what}"))?
            .iter()
            .map(|x| x.as_u64().ok_or_else(|| format!("{what} holds {x}")))
            .collect()
    };
    let shape = u64s(doc.get("shape"), "shape")?;
    let chunk_shape = u64s(
        doc.pointer("/chunk_grid/configuration/chunk_shape"),
        "regular chunk grid",
    )?;
    if chunk_shape.len() != shape.len() || chunk_shape.contains(&0) {
        return Err(format!("chunks {chunk_shape:?} do not fit shape {shape:?}"));
    }
    let codecs: Vec<Codec> = serde_json::from_value(
        doc.get("codecs")
            .cloned()
            .ok_or_else(|| "no codecs".to_string())?,
    )
    .map_err(|e| format!("codecs: {e}"))?;
    let endian = codecs
        .iter()
        .find(|c| c.is_bytes())
        .and_then(|c| c.configuration.get("endian"))
        .and_then(Value::as_str);
    let order = match endian {
        Some("big") => '>',
        Some("little") => '<',
        _ => '|',
    };
    let data_type = doc.get("data_type").ok_or("no data_type")?;
    let dtype = numpy_in_order(
        &DataType::from_v3(data_type).map_err(|e| e.to_string())?,
        order,
    );
    let dimension_names: Vec<String> = match doc.get("dimension_names") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.as_str()
                    .map_or_else(|| format!("dim_{i}"), str::to_string)
            })
            .collect(),
        _ => (0..shape.len()).map(|i| format!("dim_{i}")).collect(),
    };
    if dimension_names.len() != shape.len() {
        return Err(format!(
            "dimension names {dimension_names:?} do not fit shape {shape:?}"
        ));
    }
    if let Some(fill) = attributes.get_mut("_FillValue") {
        *fill = decode_fill_value_attribute(&dtype, fill);
    }
    Ok(ArrayMetadata {
        shape,
        dtype,
        chunk_shape,
        fill_value: doc.get("fill_value").cloned().unwrap_or(Value::Null),
        codecs,
        dimension_names,
        attributes,
        attribute_types: BTreeMap::new(),
    })
}

/// numpy's `dtype.str` of `dtype` in byte order `order` (`<`, `>`; `|` when the `bytes`
/// codec names none), a structured type as its packed `descr` text.
fn numpy_in_order(dtype: &DataType, order: char) -> String {
    match dtype {
        DataType::Struct(fields) => Value::Array(
            fields
                .iter()
                .map(|(name, t)| {
                    Value::from(vec![
                        Value::from(name.as_str()),
                        Value::from(numpy_in_order(t, order)),
                    ])
                })
                .collect(),
        )
        .to_string(),
        other => {
            let t = other.typestr();
            match t.strip_prefix('<') {
                Some(rest) => format!("{order}{rest}"),
                None => t,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkmill_hdf5::ByteOrder;

    fn dataset() -> Result<VirtualDataset> {
        let mut attributes = Map::new();
        attributes.insert("_FillValue".into(), Value::from(-32767));
        attributes.insert("scale_factor".into(), Value::from(0.01));
        attributes.insert("units".into(), Value::from("K"));
        let air = ArrayMetadata {
            shape: vec![5, 4],
            dtype: "<i2".into(),
            chunk_shape: vec![2, 4],
            fill_value: Value::from(-32767),
            codecs: vec![
                Codec::bytes(Some(ByteOrder::Little)),
                Codec::numcodecs(
                    "shuffle",
                    Map::from_iter([("elementsize".into(), 2.into())]),
                ),
                Codec::numcodecs("zlib", Map::from_iter([("level".into(), 4.into())])),
            ],
            dimension_names: vec!["time".into(), "lon".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        };
        let mut manifest = ChunkManifest::new(vec![3, 1])?;
        manifest.set_reference(0, 0, 100, 40)?;
        manifest.set_reference(1, 1, 2000, 36)?;
        manifest.set_inlined(2, vec![1, 2, 3])?; // chunk 2 inlined; none missing yet
        let mut sparse = ChunkManifest::new(vec![3, 1])?;
        sparse.set_reference(2, 1, 7, 9)?; // chunks 0 and 1 missing
        let mut t_attrs = Map::new();
        t_attrs.insert("units".into(), Value::from("hours since 2020-01-01"));
        t_attrs.insert("_FillValue".into(), Value::from("NaN"));
        let time = ArrayMetadata {
            shape: vec![5],
            dtype: ">f8".into(),
            chunk_shape: vec![5],
            fill_value: Value::from("NaN"),
            codecs: vec![Codec::bytes(Some(ByteOrder::Big))],
            dimension_names: vec!["time".into()],
            attributes: t_attrs,
            attribute_types: BTreeMap::new(),
        };
        // 5 doubles = 40 bytes inline; a big loaded array goes to a chunk object.
        let big = ManifestArray::loaded(
            ArrayMetadata {
                shape: vec![1000],
                dtype: "|u1".into(),
                chunk_shape: vec![1000],
                fill_value: Value::from(0),
                codecs: vec![Codec::bytes(None)],
                dimension_names: vec!["x".into()],
                attributes: Map::new(),
                attribute_types: BTreeMap::new(),
            },
            (0..1000).map(|i| (i % 251) as u8).collect(),
        )?;
        let mut groups = BTreeMap::new();
        groups.insert(
            String::new(),
            Map::from_iter([("title".to_string(), Value::from("t"))]),
        );
        groups.insert("g".to_string(), Map::new());
        let mut arrays = BTreeMap::new();
        arrays.insert(
            "air".into(),
            ManifestArray {
                metadata: air.clone(),
                manifest,
            },
        );
        arrays.insert(
            "g/sparse".into(),
            ManifestArray {
                metadata: air,
                manifest: sparse,
            },
        );
        arrays.insert(
            "time".into(),
            ManifestArray::loaded(
                time,
                (0..5).flat_map(|i| f64::to_be_bytes(i as f64)).collect(),
            )?,
        );
        arrays.insert("big".into(), big);
        Ok(VirtualDataset {
            name: "test".into(),
            urls: vec!["/data/a b/day0.nc".into(), "s3://bucket/p/day1.nc".into()],
            groups,
            arrays,
            encodings: BTreeMap::new(),
        })
    }

    #[test]
    fn write_then_read_gives_the_dataset_back(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = dataset()?;
        let root = std::env::temp_dir().join(format!("chunkmill-icechunk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let out = root.join("repo.icechunk");
        let written = write_icechunk(&ds, &out, false)?;
        assert!(written > 0 && is_icechunk(&out));
        assert!(matches!(
            write_icechunk(&ds, &out, false),
            Err(Error::OutputExists { .. })
        ));
        let back = read_icechunk(&out)?;
        // URLs come back in the order the chunks are met.
        let mut want = ds.clone();
        want.name = back.name.clone();
        let mut got = back;
        // map[id in got] = id in want
        let map: Vec<u32> = got
            .urls
            .iter()
            .map(|u| want.urls.iter().position(|w| w == u).map(|p| p as u32))
            .collect::<Option<_>>()
            .ok_or("a URL that was not written came back")?;
        for a in got.arrays.values_mut() {
            a.manifest.remap_paths(&map)?;
        }
        got.urls = want.urls.clone();
        assert_eq!(got.groups, want.groups);
        for (key, a) in &want.arrays {
            assert_eq!(got.arrays.get(key), Some(a), "array {key}");
        }
        assert_eq!(got, want);
        assert_eq!(got.stats(), ds.stats());
        write_icechunk(&ds, &out, true)?;
        assert!(read_icechunk(&out).is_ok());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }

    /// What a scan inlines for a variable no codec reads: strings and a compound.
    fn inlined_only() -> Result<VirtualDataset> {
        let meta = |dtype: &str, codecs: Vec<Codec>, fill: Value| ArrayMetadata {
            shape: vec![2],
            dtype: dtype.into(),
            chunk_shape: vec![2],
            fill_value: fill,
            codecs,
            dimension_names: vec!["station".into()],
            attributes: Map::new(),
            attribute_types: std::collections::BTreeMap::new(),
        };
        let mut names = ManifestArray::loaded(
            meta("|O", vec![Codec::bytes(None)], Value::from("")),
            vec![0; 2],
        )?;
        names.metadata.codecs = vec![Codec::vlen_utf8()];
        let strings =
            crate::codecs::encode_vlen_utf8(&["a".into(), "bc".into()]).map_err(Error::Manifest)?;
        names.manifest.set_inlined(0, strings)?;
        let records = ManifestArray::loaded(
            meta(
                r#"[["id","<i4"],["value","<f8"]]"#,
                vec![Codec::bytes(Some(ByteOrder::Little))],
                serde_json::json!({"id": 0, "value": 0.0}),
            ),
            vec![7; 24],
        )?;
        Ok(VirtualDataset {
            name: "inlined".into(),
            urls: Vec::new(),
            groups: BTreeMap::from([(String::new(), Map::new())]),
            arrays: BTreeMap::from([("names".into(), names), ("records".into(), records)]),
            encodings: BTreeMap::new(),
        })
    }

    #[test]
    fn inlined_strings_and_structs_read_back_from_icechunk_and_kerchunk(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = inlined_only()?;
        let root =
            std::env::temp_dir().join(format!("chunkmill-icechunk-inl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let out = root.join("repo.icechunk");
        write_icechunk(&ds, &out, false)?;
        let back = read_icechunk(&out)?;
        for key in ["names", "records"] {
            assert_eq!(back.arrays.get(key), ds.arrays.get(key), "{key}");
        }
        let mut json = Vec::new();
        crate::kerchunk::to_kerchunk_json(&ds, &mut json)?;
        let back = crate::kerchunk::parse_kerchunk_json(std::str::from_utf8(&json)?, "mem")?;
        assert_eq!(
            back.arrays["records"].metadata.dtype,
            ds.arrays["records"].metadata.dtype
        );
        assert_eq!(
            back.arrays["records"].metadata.codecs,
            ds.arrays["records"].metadata.codecs
        );
        assert_eq!(back.arrays["names"].metadata.codecs[1], Codec::vlen_utf8());
        assert_eq!(back.arrays["names"].manifest, ds.arrays["names"].manifest);
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }

    #[test]
    fn containers_are_directories_not_covered_by_another() {
        let urls = vec![
            "/data/x/a.nc".to_string(),
            "/data/x/y/b.nc".to_string(),
            "/other/c.nc".to_string(),
            "s3://bucket/p/d.nc".to_string(),
        ];
        assert_eq!(
            container_prefixes(&urls),
            vec!["file:///data/x/", "file:///other/", "s3://bucket/p/"]
        );
    }

    #[test]
    fn float_fill_values_are_xarray_base64() {
        let v = encode_fill_value_attribute("<f4", &Value::from("NaN"));
        assert_eq!(v, Value::from("AAAAAAAA+H8="));
        assert_eq!(decode_fill_value_attribute("<f4", &v), Value::from("NaN"));
        let v = encode_fill_value_attribute("<f8", &Value::from(-999.0));
        assert_eq!(decode_fill_value_attribute("<f8", &v), Value::from(-999.0));
        assert_eq!(
            encode_fill_value_attribute("<i2", &Value::from(-1)),
            Value::from(-1)
        );
    }
}
