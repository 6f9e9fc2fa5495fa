//! `chunkmill.rechunk` and `chunkmill.convert`: the command's jobs (the `chunkmill` library's
//! [`chunkmill::embed`]) run with the GIL released, their progress reported to a Python
//! callable from the calling thread, and Ctrl-C stopping them between tasks.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chunkmill_exec::Event;
use pyo3::prelude::*;

use crate::cancel::interruptible_polled;
use crate::errors;

fn recipe_value(recipe: Option<&str>) -> PyResult<Option<serde_json::Value>> {
    recipe
        .map(|text| serde_json::from_str(text).map_err(|e| errors::usage(format!("recipe: {e}"))))
        .transpose()
}

fn words(argv: Vec<String>) -> Vec<OsString> {
    argv.into_iter().map(Into::into).collect()
}

/// The plan of the command line `argv` (`["chunkmill", "rechunk", …]`) as JSON.
#[pyfunction]
#[pyo3(signature = (argv, recipe=None))]
pub fn plan_job(py: Python<'_>, argv: Vec<String>, recipe: Option<&str>) -> PyResult<String> {
    let recipe = recipe_value(recipe)?;
    let cancel = AtomicBool::new(false);
    let value = interruptible_polled(
        py,
        &cancel,
        |_| Ok(()),
        || chunkmill::embed::plan(words(argv), recipe.as_ref()),
    )?
    .map_err(|f| errors::failure(&f))?;
    Ok(value.to_string())
}

/// What the progress callable is told: tasks and decoded bytes done so far, of the totals.
#[derive(Default)]
struct Counters {
    tasks_done: AtomicU64,
    tasks_total: AtomicU64,
    bytes_done: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn on_event(&self, event: &Event) {
        match event {
            Event::StageStarted {
                tasks, done_before, ..
            } => {
                self.tasks_total.fetch_add(*tasks, Ordering::Relaxed);
                self.tasks_done.fetch_add(*done_before, Ordering::Relaxed);
            }
            Event::TaskFinished { decoded_bytes, .. } => {
                self.tasks_done.fetch_add(1, Ordering::Relaxed);
                self.bytes_done.fetch_add(*decoded_bytes, Ordering::Relaxed);
            }
            Event::TaskRetrying { .. } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            Event::StageFinished { .. } => {}
        }
    }

    fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.tasks_done.load(Ordering::Relaxed),
            self.tasks_total.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }
}

/// Runs the job of `argv`; returns its report as JSON. `progress(tasks_done, tasks_total,
/// bytes_done, retries)` is called from this thread while it runs and once at the end.
#[pyfunction]
#[pyo3(signature = (argv, recipe=None, progress=None))]
pub fn run_job(
    py: Python<'_>,
    argv: Vec<String>,
    recipe: Option<&str>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let recipe = recipe_value(recipe)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    let counters = Counters::default();
    let mut last = None;
    let mut report = |py: Python<'_>| -> PyResult<()> {
        let now = counters.snapshot();
        if let Some(callable) = &progress {
            if last != Some(now) {
                last = Some(now);
                callable.call1(py, now)?;
            }
        }
        Ok(())
    };
    let outcome = interruptible_polled(py, &interrupt, &mut report, || {
        chunkmill::embed::run(words(argv), recipe.as_ref(), interrupt.clone(), &|e| {
            counters.on_event(e)
        })
    })?;
    report(py)?;
    let value = outcome.map_err(|f| errors::failure(&f))?;
    Ok(value.to_string())
}

/// Runs tasks `start..end` of one stage of a stored plan (`chunkmill worker`); returns the
/// summary as JSON.
#[pyfunction]
#[pyo3(signature = (plan, stage, start, end, workers=1, retries=2))]
pub fn run_worker(
    py: Python<'_>,
    plan: &str,
    stage: &str,
    start: u64,
    end: u64,
    workers: usize,
    retries: u32,
) -> PyResult<String> {
    let value = py
        .detach(|| chunkmill::embed::worker(plan, stage, start, end, workers, retries))
        .map_err(|f| errors::failure(&f))?;
    Ok(value.to_string())
}
