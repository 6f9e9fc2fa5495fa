//! Inputs in object stores: `s3://bucket/key` URLs and globs (`s3://bucket/data/air_*.nc`),
//! and `memory://name/key` for tests, read through chunkmill-store.
//!
//! A glob is expanded by listing the keys under its literal directory prefix (`data/`) and
//! matching each against the pattern, `*` not crossing a `/`; the URLs come back sorted. An
//! object is read through a [`BlockCache`], so the many small metadata reads of an HDF5 file
//! become few aligned range requests, and chunk data (large reads) bypass it. References keep
//! the URL as given (`s3://bucket/key`), which fsspec reads with `remote_protocol="s3"`.
//!
//! One [`Store`] (one S3 client) is shared by every object of a bucket.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chunkmill_hdf5::{BlockCache, RangeSource, SourceFile};
use chunkmill_store::Store;

use crate::error::{Error, Result};

/// URL schemes read as objects of a [`Store`].
const SCHEMES: [&str; 2] = ["s3://", "memory://"];

/// Whether `input` names an object in a store rather than a local file.
pub(crate) fn is_remote(input: &str) -> bool {
    SCHEMES.iter().any(|s| input.starts_with(s))
}

/// `s3://bucket/a/b.nc` → (`s3://bucket`, `a/b.nc`).
fn split(url: &str) -> Option<(&str, &str)> {
    let scheme = SCHEMES.iter().find(|s| url.starts_with(**s))?;
    let rest = &url[scheme.len()..];
    let slash = rest.find('/')?;
    let (root, key) = url.split_at(scheme.len() + slash);
    Some((root, &key[1..]))
}

/// The store of a bucket, opened once per process.
fn store_of(root: &str) -> std::result::Result<Store, String> {
    static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
    let stores = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut stores = match stores.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(s) = stores.get(root) {
        return Ok(s.clone());
    }
    let store = Store::open(root).map_err(|e| e.to_string())?;
    stores.insert(root.to_string(), store.clone());
    Ok(store)
}

/// Expands one remote input: a glob becomes the sorted URLs of the matching objects, a
/// plain URL itself (whether it exists is found out when it is scanned).
///
/// # Errors
/// [`Error::Usage`] for a bad pattern; [`Error::Input`] for a URL without a key, a listing
/// that fails, or a glob that matches nothing.
pub(crate) fn expand(input: &str, out: &mut Vec<String>) -> Result<()> {
    let err = |reason: String| Error::Input {
        input: input.to_string(),
        reason,
    };
    let (root, key) = split(input)
        .filter(|(_, k)| !k.is_empty())
        .ok_or_else(|| err("no object key after the bucket".into()))?;
    if !key.contains(['*', '?', '[']) {
        out.push(input.to_string());
        return Ok(());
    }
    // A malformed pattern is a usage error, as for a local glob.
    let pattern =
        glob::Pattern::new(key).map_err(|e| Error::Usage(format!("{input}: bad pattern: {e}")))?;
    let literal = &key[..key.find(['*', '?', '[']).unwrap_or(key.len())];
    let prefix = &literal[..literal.rfind('/').map_or(0, |i| i + 1)];
    let store = store_of(root).map_err(&err)?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut matched: Vec<String> = store
        .list(prefix)
        .map_err(|e| err(format!("cannot list: {e}")))?
        .into_iter()
        .filter(|k| pattern.matches_with(k, options))
        .map(|k| format!("{root}/{k}"))
        .collect();
    if matched.is_empty() {
        return Err(err("matches no object".into()));
    }
    matched.sort();
    out.extend(matched);
    Ok(())
}

/// One object of a store, as a byte-range source.
struct StoreObject {
    url: String,
    store: Store,
    key: String,
    size: u64,
}

impl fmt::Debug for StoreObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreObject")
            .field("url", &self.url)
            .field("size", &self.size)
            .finish()
    }
}

impl RangeSource for StoreObject {
    fn name(&self) -> &str {
        &self.url
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.size);
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}..{} are past the end of the object ({} bytes)",
                    offset.saturating_add(len as u64),
                    self.size
                ),
            ));
        }
        match self.store.get_range(&self.key, offset, len as u64) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the object disappeared while it was read",
            )),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

/// Opens the object at `url` (its size is asked once) behind a block cache.
///
/// # Errors
/// [`Error::Source`] (`cannot open`) when the store cannot be opened, the object does not
/// exist or its size cannot be read; [`Error::Source`] from [`SourceFile::open`] when it is
/// not HDF5/NetCDF.
pub(crate) fn open(url: &str) -> Result<SourceFile> {
    Ok(SourceFile::open(Arc::new(BlockCache::new(open_object(
        url,
    )?)))?)
}

/// The object at `url` for range reads, without a cache (chunk data is read once).
///
/// # Errors
/// [`Error::Source`] (`cannot open`) when the store cannot be opened, the object does not
/// exist or its size cannot be read.
pub(crate) fn open_object(url: &str) -> Result<Arc<dyn RangeSource>> {
    let open_err = |e: io::Error| {
        Error::Source(chunkmill_hdf5::Error::Open {
            file: url.to_string(),
            source: e,
        })
    };
    let (root, key) = split(url)
        .filter(|(_, k)| !k.is_empty())
        .ok_or_else(|| open_err(io::Error::other("no object key after the bucket")))?;
    let store = store_of(root).map_err(|e| open_err(io::Error::other(e)))?;
    let size = store
        .size(key)
        .map_err(|e| open_err(io::Error::other(e.to_string())))?
        .ok_or_else(|| open_err(io::Error::new(io::ErrorKind::NotFound, "no such object")))?;
    Ok(Arc::new(StoreObject {
        url: url.to_string(),
        store,
        key: key.to_string(),
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_store_and_key() {
        assert_eq!(split("s3://b/a/c.nc"), Some(("s3://b", "a/c.nc")));
        assert_eq!(split("memory://m/x"), Some(("memory://m", "x")));
        assert_eq!(split("s3://b"), None);
        assert_eq!(split("/local"), None);
        assert!(is_remote("s3://b/k") && !is_remote("file:///x"));
    }

    #[test]
    fn globs_list_by_prefix_and_do_not_cross_slashes(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let store = Store::open("memory://remote-glob")?;
        for k in [
            "d/air_2.nc",
            "d/air_1.nc",
            "d/sub/air_3.nc",
            "d/sst_1.nc",
            "e/air_4.nc",
        ] {
            store.put(k, vec![0; 4])?;
        }
        let mut out = Vec::new();
        expand("memory://remote-glob/d/air_*.nc", &mut out)?;
        assert_eq!(
            out,
            [
                "memory://remote-glob/d/air_1.nc",
                "memory://remote-glob/d/air_2.nc"
            ]
        );
        out.clear();
        expand("memory://remote-glob/*/air_?.nc", &mut out)?;
        assert_eq!(out.len(), 3);
        let none = expand("memory://remote-glob/d/nothing*", &mut out);
        assert!(none.is_err_and(|e| e.to_string().ends_with("matches no object")));
        assert!(expand("s3://bucket-only", &mut out).is_err());
        Ok(())
    }

    #[test]
    fn objects_serve_ranges_and_missing_ones_are_named(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let store = Store::open("memory://remote-open")?;
        store.put("junk.nc", b"not a netcdf file at all".to_vec())?;
        let err = open("memory://remote-open/junk.nc")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("junk.nc") && e.contains("not an HDF5")));
        let err = open("memory://remote-open/none.nc")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("none.nc") && e.contains("no such object")));
        let object = StoreObject {
            url: "memory://remote-open/junk.nc".into(),
            store: store.clone(),
            key: "junk.nc".into(),
            size: 25,
        };
        assert_eq!(object.read_range(4, 3)?.as_ref(), b"a n");
        assert!(object.read_range(24, 2).is_err());
        Ok(())
    }
}
