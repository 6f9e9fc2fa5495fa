//! Any bytes, opened as a file by the HDF5/NetCDF adapter: detecting the format, listing
//! groups, variables and attributes, and every variable's chunk references must return a
//! value or an error, never panic, hang or read out of bounds.
#![no_main]

use std::sync::Arc;

use chunkmill_hdf5::{MemorySource, RangeSource, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source: Arc<dyn RangeSource> = Arc::new(MemorySource::new("fuzz.nc", data.to_vec()));
    let Ok(file) = SourceFile::open(source) else {
        return;
    };
    let Ok(inventory) = file.inventory() else {
        return;
    };
    for variable in &inventory.variables {
        let _ = file.data_refs(variable);
    }
});
