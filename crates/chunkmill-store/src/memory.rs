//! `memory://name`: named in-process stores, shared by everything in the process that opens the
//! same name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use zarrs_storage::store::MemoryStore;
use zarrs_storage::ReadableWritableListableStorage;

static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();

pub(crate) fn open(name: &str) -> ReadableWritableListableStorage {
    let stores = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut stores = match stores.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(MemoryStore::new()))
        .clone()
}
