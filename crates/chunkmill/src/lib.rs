//! The `chunkmill` command: arguments ([`args`], what the user typed, then [`resolve`], the
//! typed options of the jobs), progress, and exit codes ([`failure::exit_code`], the one place
//! that gives them). Every job is a call into `chunkmill-ops`. A library so that the Python
//! package's `chunkmill` script runs the same command in-process ([`run_command`]); the binary
//! is `src/bin/chunkmill.rs`.

mod args;
mod budget;
mod compute;
mod convert;
mod demo;
mod demo_netcdf;
pub mod embed;
mod failure;
mod inspect;
mod progress;
mod rechunk;
mod recipe;
mod resolve;
mod resume;
mod virtualize;
mod work;

pub use failure::Failure;

impl Failure {
    /// The command's exit code for this failure (2 usage, 3 refused, 1 failed, 130
    /// interrupted).
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        failure::exit_code(self)
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
    let threshold = i32::try_from(chunkmill_exec::memory::MMAP_THRESHOLD).unwrap_or(i32::MAX);
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
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
/// Prints `value` as pretty JSON on stdout (`--json` output).
///
/// # Errors
/// A value that does not serialize (a failure, not an empty line).
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::failed(format!("writing the JSON output: {e}")))?;
    println!("{text}");
    Ok(())
}

pub fn default_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, usize::from)
}

/// This program, as workers are started again: `CHUNKMILL_PROGRAM` when set (the Python
/// package's `chunkmill` script sets it to itself, as its process is the Python interpreter),
/// else the running executable.
pub fn this_program() -> std::io::Result<std::path::PathBuf> {
    match std::env::var_os("CHUNKMILL_PROGRAM") {
        Some(program) => Ok(program.into()),
        None => std::env::current_exe(),
    }
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

/// Runs the command with `args` (the program name first) as the `chunkmill` binary does, and
/// exits the process with the command's exit code when it fails (clap exits by itself on a
/// malformed command line).
pub fn run_command(args: Vec<std::ffi::OsString>) {
    tame_allocator();
    default_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHUNKMILL_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(failure) = recipe::parse(args).and_then(run) {
        // Errors are one line each: `chunkmill: <what>: <why>`.
        for line in failure.to_string().lines() {
            eprintln!("chunkmill: {line}");
        }
        std::process::exit(failure::exit_code(&failure));
    }
}
