//! `chunkmill inspect`: what a Zarr store holds.

use chunkmill_ops::rechunk::human;
use chunkmill_store::zarr::{self, Node};
use chunkmill_store::Store;
use serde_json::json;

use crate::args::InspectArgs;
use crate::Failure;

/// Print the store's groups and arrays.
pub fn run(a: &InspectArgs) -> Result<(), Failure> {
    let store = Store::open(&a.path).map_err(|e| Failure::usage(e.to_string()))?;
    let nodes = zarr::list_nodes(&store).map_err(|e| Failure {
        code: 1,
        message: e.to_string(),
    })?;
    if nodes.is_empty() {
        return Err(Failure {
            code: 1,
            message: format!("{}: no Zarr array or group found", store.url()),
        });
    }
    let mut arrays = Vec::new();
    let mut groups = Vec::new();
    for node in &nodes {
        match node {
            Node::Group(g) => groups.push(
                json!({"path": g.path, "zarr_format": g.zarr_format, "attributes": g.attributes}),
            ),
            Node::Array(info) => {
                let (chunks, shards) = match &info.inner_chunks {
                    Some(inner) => (inner.clone(), Some(info.chunks.clone())),
                    None => (info.chunks.clone(), None),
                };
                let stored: u64 = store
                    .list(&if info.path.is_empty() {
                        String::new()
                    } else {
                        format!("{}/", info.path)
                    })
                    .ok()
                    .map(|keys| keys.len() as u64)
                    .unwrap_or(0);
                arrays.push(json!({
                    "path": info.path, "zarr_format": info.zarr_format, "shape": info.shape,
                    "dtype": info.dtype, "chunks": chunks, "shards": shards,
                    "dimension_names": info.dimension_names, "fill_value": info.fill_value,
                    "codecs": info.codecs, "compressor": info.compressor.as_ref().map(ToString::to_string),
                    "nbytes": info.nbytes(), "attributes": info.attributes, "stored_objects": stored,
                }));
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"url": store.url(), "groups": groups, "arrays": arrays})
            )
            .unwrap_or_default()
        );
        return Ok(());
    }
    println!("{}", store.url());
    for g in &groups {
        println!(
            "group {}  (zarr v{})",
            if g["path"] == "" {
                "/".into()
            } else {
                g["path"].to_string()
            },
            g["zarr_format"]
        );
    }
    for (a, node) in arrays.iter().zip(nodes.iter().filter_map(|n| match n {
        Node::Array(i) => Some(i),
        Node::Group(_) => None,
    })) {
        println!(
            "array {}  v{}  {} {:?}  chunks {}{}  dims {}  fill {}  codec {}  {}",
            if node.path.is_empty() {
                "/"
            } else {
                &node.path
            },
            node.zarr_format,
            node.dtype,
            node.shape,
            a["chunks"],
            if a["shards"].is_null() {
                String::new()
            } else {
                format!(" shards {}", a["shards"])
            },
            node.dimension_names.as_ref().map_or("-".to_string(), |d| d
                .iter()
                .map(|n| n.clone().unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join(",")),
            node.fill_value,
            node.compressor.as_ref().map_or_else(
                || serde_json::Value::Array(node.codecs.clone()).to_string(),
                ToString::to_string
            ),
            human(node.nbytes()),
        );
    }
    Ok(())
}
