//! `chunkmill inspect`: what a Zarr store, kerchunk references (JSON or Parquet), an Icechunk
//! repository of virtual references or an HDF5/NetCDF file holds.

use chunkmill_ops::job::human;
use chunkmill_store::zarr::{self, Node};
use chunkmill_store::Store;
use std::path::Path;

use serde_json::{json, Value};

use crate::args::InspectArgs;
use crate::Failure;

/// What holds references: a kerchunk JSON file, a kerchunk Parquet directory, an Icechunk
/// repository.
#[derive(Clone, Copy)]
enum Kind {
    Json,
    Parquet,
    Icechunk,
}

/// References (a kerchunk JSON file or Parquet directory, an Icechunk repository): their
/// arrays and how many chunks each references, inlines and misses.
fn references(a: &InspectArgs, path: &Path, kind: Kind) -> Result<(), Failure> {
    let refs = match kind {
        Kind::Json => chunkmill_manifest::read_kerchunk_json(path),
        Kind::Parquet => chunkmill_manifest::read_kerchunk_parquet(path),
        Kind::Icechunk => chunkmill_manifest::read_icechunk(path),
    }
    .map_err(|e| Failure::failed(e.to_string()))?;
    let kind = match kind {
        Kind::Json => "kerchunk-json",
        Kind::Parquet => "kerchunk-parquet",
        Kind::Icechunk => "icechunk",
    };
    let arrays: Vec<_> = refs
        .arrays
        .iter()
        .map(|(key, array)| {
            let m = &array.metadata;
            let (references, inlined, missing) = array.manifest.counts();
            json!({
                "path": key, "shape": m.shape, "dtype": m.dtype, "chunks": m.chunk_shape,
                "fill_value": m.fill_value, "dimension_names": m.dimension_names,
                "codecs": m.codecs.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "chunk_slots": array.manifest.len(), "attributes": m.attributes,
                "references": references, "inlined": inlined, "missing": missing,
            })
        })
        .collect();
    if a.json {
        let doc = json!({"url": path.display().to_string(), "kind": kind, "files": refs.urls, "arrays": arrays});
        crate::print_json(&doc)?;
        return Ok(());
    }
    println!(
        "{} ({kind} references into {} file(s))",
        path.display(),
        refs.urls.len()
    );
    for v in &arrays {
        println!(
            "array {}  {} {}  chunks {}  dims {}  codecs {}  {} chunk slots: {} references, {} inlined, {} missing",
            v["path"].as_str().unwrap_or(""),
            v["dtype"].as_str().unwrap_or(""),
            v["shape"],
            v["chunks"],
            v["dimension_names"],
            v["codecs"],
            v["chunk_slots"],
            v["references"],
            v["inlined"],
            v["missing"]
        );
    }
    Ok(())
}

/// An HDF5, NetCDF-4 or NetCDF-3 file: its variables, dimensions and chunk byte ranges. A
/// file that cannot be opened, or whose variables' data cannot all be located (truncated,
/// corrupt), is a bad input: exit 3, as `virtualize` and `convert` refuse it, after what
/// could be listed is shown.
fn archive(a: &InspectArgs, path: &Path) -> Result<(), Failure> {
    let file = chunkmill_hdf5::SourceFile::open_path(path)?;
    let inventory = file.inventory()?;
    let mut damage = Vec::new();
    let ranges: Vec<Value> = inventory
        .variables
        .iter()
        .map(|v| match file.data_refs(v) {
            Ok(refs) => refs.range_count().into(),
            Err(e) => {
                damage.push(e.to_string());
                e.to_string().into()
            }
        })
        .collect();
    let damaged = || match damage.first() {
        None => Ok(()),
        Some(first) => Err(Failure::refused(format!(
            "{}: damaged: the data of {} of {} variable(s) cannot be located; first: {first}",
            path.display(),
            damage.len(),
            inventory.variables.len()
        ))),
    };
    if a.json {
        let mut doc = serde_json::to_value(&inventory)
            .map_err(|e| Failure::failed(format!("writing the JSON output: {e}")))?;
        for (out, n) in doc["variables"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .zip(&ranges)
        {
            out["byte_ranges"] = n.clone();
        }
        crate::print_json(&doc)?;
        return damaged();
    }
    println!("{} ({:?})", path.display(), inventory.format);
    for d in &inventory.dimensions {
        println!(
            "dimension {}{}  {}{}",
            if d.group.is_empty() || d.group == "/" {
                ""
            } else {
                &d.group
            },
            d.name,
            d.length,
            if d.unlimited { " (unlimited)" } else { "" }
        );
    }
    for (v, n) in inventory.variables.iter().zip(&ranges) {
        println!(
            "variable {}  {} {:?}  chunks {}  dims {}  filters {}  byte ranges {}",
            v.path,
            v.dtype.name,
            v.shape,
            v.chunk_shape
                .as_ref()
                .map_or("-".to_string(), |c| format!("{c:?}")),
            v.dimensions
                .as_ref()
                .map_or("-".to_string(), |d| d.join(",")),
            if v.filters.is_empty() {
                "-".to_string()
            } else {
                v.filters
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            n
        );
    }
    for u in &inventory.unlisted {
        println!("not listed {}: {}", u.path, u.reason);
    }
    damaged()
}

/// Print what a path holds: a Zarr store's groups and arrays, the arrays of kerchunk
/// references or of an Icechunk repository, or an HDF5/NetCDF file's variables.
pub fn run(a: &InspectArgs) -> Result<(), Failure> {
    let path = Path::new(&a.path);
    // A FIFO, socket or device is no store or data file (and opening a FIFO would wait for a
    // writer): refused as virtualize and convert refuse it.
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() && !m.is_dir() {
            return Err(Failure::refused(format!(
                "{}: not a regular file or directory",
                path.display()
            )));
        }
    }
    if path.is_file() {
        // Only the first bytes tell JSON from HDF5/NetCDF; a data file may be gigabytes.
        let mut head = Vec::with_capacity(64);
        if let Ok(file) = std::fs::File::open(path) {
            use std::io::Read;
            let _ = file.take(64).read_to_end(&mut head);
        }
        let text = String::from_utf8_lossy(&head);
        return if text.trim_start().starts_with('{') {
            references(a, path, Kind::Json)
        } else {
            archive(a, path)
        };
    }
    if path.is_dir() && chunkmill_manifest::is_kerchunk_parquet(path) {
        return references(a, path, Kind::Parquet);
    }
    if path.is_dir() && chunkmill_manifest::is_icechunk(path) {
        return references(a, path, Kind::Icechunk);
    }
    let local = a.path.strip_prefix("file://").unwrap_or(&a.path);
    if !local.contains("://") && !Path::new(local).exists() {
        return Err(Failure::refused(format!(
            "{}: no such file or directory",
            a.path
        )));
    }
    let store = Store::open(&a.path).map_err(|e| Failure::usage(e.to_string()))?;
    let nodes = zarr::list_nodes(&store).map_err(|e| Failure::refused(e.to_string()))?;
    if nodes.is_empty() {
        return Err(Failure::refused(format!(
            "{}: no Zarr array or group found (not a Zarr store)",
            store.url()
        )));
    }
    let mut arrays = Vec::new();
    let mut groups = Vec::new();
    let mut unsupported = Vec::new();
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
            Node::Unsupported { path, reason } => unsupported.push(json!({
                "path": path, "unsupported": reason,
            })),
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"url": store.url(), "groups": groups, "arrays": arrays, "unsupported": unsupported})
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
        Node::Group(_) | Node::Unsupported { .. } => None,
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
    for u in &unsupported {
        println!("array {}  unsupported: {}", u["path"], u["unsupported"]);
    }
    Ok(())
}
