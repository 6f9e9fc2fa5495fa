//! `chunkmill._native`, the Rust half of the `chunkmill` Python package (its Python half is
//! `python/chunkmill/`): files opened through chunkmill-hdf5 and chunkmill-manifest and read
//! chunk by chunk with the GIL released, `virtualize`, and the exceptions every call raises.
//!
//! Everything here is called from the Python modules, which own the public API and its
//! documentation; the names below are private to the package (`chunkmill._native`).

mod cancel;
mod dataset;
mod errors;
mod jobs;
mod parser;
mod region;
mod run;
mod views;

use pyo3::prelude::*;

/// Runs the `chunkmill` command with `argv` (the program name first) in this process, the GIL
/// released; returns when it succeeds and exits the process with the command's exit code
/// when it fails.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) {
    py.detach(|| chunkmill::run_command(argv.into_iter().map(Into::into).collect()));
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<dataset::NativeDataset>()?;
    m.add_function(wrap_pyfunction!(dataset::open_file, m)?)?;
    m.add_function(wrap_pyfunction!(dataset::open_references, m)?)?;
    m.add_function(wrap_pyfunction!(parser::scan_references, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::virtualize, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::combine, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(run::plan_job, m)?)?;
    m.add_function(wrap_pyfunction!(run::run_job, m)?)?;
    m.add_function(wrap_pyfunction!(run::run_worker, m)?)?;
    m.add_function(wrap_pyfunction!(views::plan_html, m)?)?;
    m.add("MISSING", chunkmill_manifest::MISSING)?;
    m.add("INLINED", chunkmill_manifest::INLINED)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
