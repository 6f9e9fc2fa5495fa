//! The `chunkmill` command: argument parsing, progress, exit codes. Every job is a call into
//! `chunkmill-ops`.

mod args;
mod budget;
mod compute;
mod convert;
mod demo;
mod demo_netcdf;
mod inspect;
mod progress;
mod rechunk;
mod recipe;
mod resume;
mod virtualize;
mod work;

use clap::Parser;

/// The exit codes, the same for every command (README, "Exit codes").
pub mod exit {
    /// The job is done.
    pub const DONE: i32 = 0;
    /// Failed while running, after retries; `--resume` continues.
    pub const FAILED: i32 = 1;
    /// The command line is malformed: a flag, a value, a spec (nothing was read or written).
    pub const USAGE: i32 = 2;
    /// Refused before anything was written: an input that does not exist or does not fit, a
    /// target that exists, a plan that does not fit the budget.
    pub const REFUSED: i32 = 3;
    /// Stopped by Ctrl-C (or SIGTERM) after cancelling what it started; `--resume` continues.
    pub const INTERRUPTED: i32 = 130;
}

/// A failure with the exit code it maps to (see [`exit`]).
#[derive(Debug)]
pub struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    fn refused(message: impl Into<String>) -> Self {
        Self {
            code: exit::REFUSED,
            message: message.into(),
        }
    }
}

impl From<chunkmill_manifest::Error> for Failure {
    fn from(e: chunkmill_manifest::Error) -> Self {
        Self {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

/// The flag that fixes an error whose message does not name it (messages of the libraries
/// speak of dimensions and files, not of flags).
fn hint(message: &str) -> Option<&'static str> {
    if message.contains("no concat dimension") && !message.contains("--concat-dim") {
        return Some("give the dimension to concatenate along with --concat-dim DIM");
    }
    None
}

impl From<chunkmill_ops::OpsError> for Failure {
    fn from(e: chunkmill_ops::OpsError) -> Self {
        Self {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: exit::FAILED,
            message: format!("{e:#}"),
        }
    }
}

/// Keep resident memory close to what the tasks hold, and page faults rare. Buffers up to
/// 32 MiB (chunks, pieces) come from the heap and are reused there: the heap is not trimmed
/// below 128 MiB of free space, since every trim made the next chunk fault its pages in again
/// (1.9 M faults and 8.7 s of system time on the benchmark, against 0.18 M and 4 s). Larger
/// buffers (task blocks) are mapped and returned on free. glibc would otherwise move its
/// thresholds by itself, and a block freed to the heap could stay resident.
#[allow(unsafe_code)]
fn tame_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// End quietly, as command-line tools do, when the reader of our output goes away
/// (`chunkmill status WORK | head -1`), instead of panicking on the failed print. Only writes to
/// stdout and stderr can raise SIGPIPE here: sockets are written with MSG_NOSIGNAL by the
/// standard library, and child processes get no stdin from us.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal before any other thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Tasks at once when `--workers` is not given: twice the CPUs. Tasks wait on storage (reads,
/// writes, the kernel's page cache), and a second task per core keeps the core busy meanwhile
/// (on the rechunk benchmark: 9.3 s with 2 workers on 2 cores, 6.4–7.0 s with 4–6); memory
/// admission still keeps them all within `--max-mem`.
pub fn default_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, usize::from)
}

fn run(cli: args::Cli) -> Result<(), Failure> {
    match cli.command {
        args::Command::Rechunk(a) => rechunk::run(&a),
        args::Command::Convert(a) => convert::run(&a),
        args::Command::Compute(a) => compute::run(&a),
        args::Command::Plan {
            job: args::PlanJob::Compute(a),
        } => compute::plan(&a),
        args::Command::Plan {
            job: args::PlanJob::Convert(a),
        } => convert::plan(&a),
        args::Command::Plan {
            job: args::PlanJob::Rechunk(a),
        } => rechunk::plan(&a),
        args::Command::Virtualize(a) => virtualize::run(&a),
        args::Command::Inspect(a) => inspect::run(&a),
        args::Command::Worker(a) => work::worker(&a),
        args::Command::Status(a) => work::status(&a),
        args::Command::Demo(a) => demo::run(&a),
    }
}

fn main() {
    tame_allocator();
    default_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHUNKMILL_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = args::Cli::parse();
    if let Err(failure) = run(cli) {
        let mut message = failure.message;
        if let Some(hint) = hint(&message) {
            // Errors are one line: the hint follows the reason.
            message = format!("{message}; {hint}");
        }
        for line in message.lines() {
            eprintln!("chunkmill: {line}");
        }
        std::process::exit(failure.code);
    }
}
