//! Work that runs with the GIL released and stops on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::JobError;

/// How often Python's signal handlers are run while the work goes on.
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` on a thread of its own with the GIL released, running Python's signal handlers
/// every [`POLL`]: Ctrl-C (a `KeyboardInterrupt` from them) sets `cancel`, which the work
/// checks between its steps; the work is waited for (so nothing it started is left behind)
/// and the `KeyboardInterrupt` is raised.
///
/// # Errors
/// The signal handler's exception, or a [`JobError`] when the work panicked.
pub fn interruptible<T: Send>(
    py: Python<'_>,
    cancel: &AtomicBool,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    interruptible_polled(py, cancel, |_| Ok(()), work)
}

/// [`interruptible`], calling `on_poll` with the GIL every [`POLL`] as well (progress): an
/// exception it raises stops the work as Ctrl-C does, and is raised in the end.
///
/// # Errors
/// As [`interruptible`], and the exception of `on_poll`.
pub fn interruptible_polled<T: Send>(
    py: Python<'_>,
    cancel: &AtomicBool,
    mut on_poll: impl FnMut(Python<'_>) -> PyResult<()>,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(1);
        let worker = s.spawn(move || {
            // The receiver may be gone only if the waiting thread unwound; nothing to tell.
            let _ = tx.send(work());
        });
        let mut rx = rx;
        let mut interrupted: Option<PyErr> = None;
        let outcome = loop {
            let (back, got) = py.detach(move || {
                let got = rx.recv_timeout(POLL);
                (rx, got)
            });
            rx = back;
            match got {
                Ok(value) => break Some(value),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if interrupted.is_none() {
                if let Err(e) = py.check_signals().and_then(|()| on_poll(py)) {
                    cancel.store(true, Ordering::SeqCst);
                    interrupted = Some(e);
                }
            }
        };
        let panicked = worker.join().is_err();
        if let Some(e) = interrupted {
            return Err(e);
        }
        match outcome {
            Some(value) if !panicked => Ok(value),
            _ => Err(JobError::new_err(
                "internal error: chunkmill's worker thread panicked (please report it)",
            )),
        }
    })
}
