//! The combined references of a job's virtual dataset, as kerchunk JSON in the work dir: what
//! worker processes (local, SLURM, a batch engine) read chunks through by byte range.

use chunkmill_manifest::VirtualDataset;
use chunkmill_store::Store;

use crate::{Context, OpsError};

/// `dir/name` → (`dir`, `name`): the store and key of an object URL or path.
pub(crate) fn split_url(url: &str) -> (&str, &str) {
    match url.rfind('/') {
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (".", url),
    }
}

/// Writes `dataset` as kerchunk JSON at `url` (a local path or an object URL).
///
/// # Errors
/// [`OpsError::Failed`] when it cannot be written.
pub fn write_references(dataset: &VirtualDataset, url: &str) -> Result<(), OpsError> {
    let mut text = Vec::new();
    chunkmill_manifest::kerchunk::to_kerchunk_json(dataset, &mut text).about(url)?;
    let (dir, name) = split_url(url);
    Store::open(dir)
        .and_then(|s| s.put(name, text))
        .about(format_args!("{url}: cannot write the references"))
}

/// Reads the kerchunk JSON that [`write_references`] wrote.
///
/// # Errors
/// A message naming the URL.
pub fn read_references(url: &str) -> Result<VirtualDataset, String> {
    let (dir, name) = split_url(url);
    let bytes = Store::open(dir)
        .and_then(|s| s.get(name))
        .map_err(|e| format!("{url}: {e}"))?
        .ok_or_else(|| format!("{url}: the job's references are missing"))?;
    chunkmill_manifest::kerchunk::parse_kerchunk_json(&String::from_utf8_lossy(&bytes), url)
        .map_err(|e| e.to_string())
}
