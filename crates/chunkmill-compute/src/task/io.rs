//! Where a compute task's values come from and go to, opened once per run of a plan and
//! shared by every task on every thread: the inputs buffered, the output arrays as outputs
//! written once ([`Store::open_output`]: large chunks around the page cache, still synced
//! before each task marker) and the intermediate pieces as scratch moved as the run chose
//! ([`Store::open_scratch_with`]: never synced, a lost one found when its stage resumes) —
//! the same stores a rechunk's copy stages write through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chunkmill_store::zarr::ZarrArray;
use chunkmill_store::{ScratchIo, Store};

/// The stores and arrays of a run's compute tasks.
#[derive(Debug)]
pub struct Io {
    scratch: ScratchIo,
    /// By (written, url, path): an array a task reads, or one it writes.
    arrays: Mutex<HashMap<(bool, String, String), Arc<ZarrArray>>>,
    /// Intermediate pieces' stores, by URL.
    pieces: Mutex<HashMap<String, Store>>,
}

impl Default for Io {
    /// Pieces around the page cache: what a run that did not measure its machine does.
    fn default() -> Self {
        Io::new(ScratchIo::Direct)
    }
}

impl Io {
    /// Nothing opened yet; intermediate pieces moved as `scratch` says (see
    /// `chunkmill_ops::tasks::intermediates::scratch_io`).
    #[must_use]
    pub fn new(scratch: ScratchIo) -> Io {
        Io {
            scratch,
            arrays: Mutex::default(),
            pieces: Mutex::default(),
        }
    }

    /// The Zarr array at `url`/`path` that tasks read.
    pub(crate) fn input(&self, url: &str, path: &str) -> Result<Arc<ZarrArray>, String> {
        self.array(false, url, path)
    }

    /// The Zarr array at `url`/`path` that tasks write, each chunk once.
    pub(crate) fn output(&self, url: &str, path: &str) -> Result<Arc<ZarrArray>, String> {
        self.array(true, url, path)
    }

    fn array(&self, written: bool, url: &str, path: &str) -> Result<Arc<ZarrArray>, String> {
        let key = (written, url.to_string(), path.to_string());
        if let Some(found) = lock(&self.arrays).get(&key) {
            return Ok(found.clone());
        }
        let store = if written {
            Store::open_output(url)
        } else {
            Store::open(url)
        }
        .map_err(|e| e.to_string())?;
        let array = Arc::new(ZarrArray::open(&store, path).map_err(|e| e.to_string())?);
        // Threads that opened it at the same time all use the first one kept.
        Ok(lock(&self.arrays).entry(key).or_insert(array).clone())
    }

    /// The store of the intermediate pieces at `url`.
    pub(crate) fn pieces(&self, url: &str) -> Result<Store, String> {
        if let Some(found) = lock(&self.pieces).get(url) {
            return Ok(found.clone());
        }
        let store = Store::open_scratch_with(url, self.scratch).map_err(|e| e.to_string())?;
        Ok(lock(&self.pieces)
            .entry(url.to_string())
            .or_insert(store)
            .clone())
    }
}

/// A map of opened things: a panic while it was held left it whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
