//! What every job is asked besides its own request: where the tasks run.

use chunkmill_store::zarr::Compressor;

use crate::spec::ChunkSpec;

/// Where the tasks run.
#[derive(Clone, Debug, Default)]
pub enum Executor {
    /// Threads of this process.
    #[default]
    Threads,
    /// Child `chunkmill worker` processes of this program, so a crash in one task never takes
    /// the run down.
    Processes { program: std::path::PathBuf },
    /// SLURM job arrays of `chunkmill worker`, one per stage, chained with `afterok`.
    Slurm(SlurmExecutor),
}

/// What the SLURM executor needs besides the plan.
#[derive(Clone, Debug)]
pub struct SlurmExecutor {
    /// The `chunkmill` executable, at a path the compute nodes see.
    pub program: std::path::PathBuf,
    /// Options for every `sbatch` (`--account=x --partition=y --time=00:30:00`).
    pub sbatch_options: Vec<String>,
    /// Tasks per array element (default: about four elements per concurrent slot).
    pub tasks_per_job: Option<u64>,
    /// Where the elements' logs go (default: `slurm-logs` in a local work dir, else
    /// `chunkmill-slurm-logs` in the current directory).
    pub log_dir: Option<std::path::PathBuf>,
    /// Set by a Ctrl-C handler: the run cancels its jobs and stops.
    pub interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What every job is asked besides what it reads and how it lays out the target: where it
/// writes, within what memory, on which executor, and how it resumes, replaces and reports.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Target store URL.
    pub target: String,
    /// Memory budget of the process, bytes.
    pub max_mem: u64,
    /// Where intermediates go (default: under the work dir).
    pub temp: Option<String>,
    /// Most tasks at once.
    pub workers: usize,
    /// Extra attempts per failed task.
    pub retries: u32,
    /// Skip tasks whose markers exist.
    pub resume: bool,
    /// Replace an existing target.
    pub overwrite: bool,
    /// Work dir URL (default `<target>.work`, removed after success).
    pub work_dir: Option<String>,
    /// Keep the default work dir (plan and record of completion) after success.
    pub keep_work: bool,
    /// Where the tasks run.
    pub executor: Executor,
    /// Write a self-contained HTML report of the run here.
    pub report: Option<std::path::PathBuf>,
    /// Stop after writing plan.json and the target's metadata: the tasks are left to
    /// `chunkmill worker` processes of a batch engine.
    pub prepare_only: bool,
    /// Set from outside to stop a run on threads between tasks (Ctrl-C in the Python
    /// package); the run then fails with [`crate::OpsError::Interrupted`] and resumes later.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl JobOptions {
    /// The paths the safety checks judge.
    pub(crate) fn paths(&self) -> crate::safety::JobPaths<'_> {
        crate::safety::JobPaths {
            target: &self.target,
            temp: self.temp.as_deref(),
            overwrite: self.overwrite,
        }
    }
}

/// How the target's arrays are laid out: what every job that writes Zarr arrays is asked.
#[derive(Clone, Debug)]
pub struct TargetLayout {
    /// Target chunks.
    pub chunks: ChunkSpec,
    /// Target shard shape (v3 only).
    pub shards: Option<ChunkSpec>,
    /// Target compressor; `None` keeps the source's.
    pub codec: Option<Compressor>,
    /// Target Zarr format.
    pub zarr_format: u8,
}
