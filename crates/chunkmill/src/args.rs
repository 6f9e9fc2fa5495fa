//! What the user typed: clap definitions, no I/O (the first layer of the arguments; a
//! `--recipe` is read in by [`crate::recipe::parse`], and [`crate::resolve`] is the second
//! layer).

use clap::{Args, Parser, Subcommand};

/// Archival scientific data to analysis-ready Zarr, in parallel, with memory known before the
/// work starts.
#[derive(Debug, Parser)]
#[command(name = "chunkmill", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Rechunk a Zarr v2/v3 array or group into a new Zarr store within a memory budget.
    Rechunk(RechunkArgs),
    /// Convert NetCDF/HDF5 files, references or a Zarr store into an analysis-ready Zarr
    /// store: new chunks, a selection, renames, CF decoding, casts, reversed axes.
    ///
    /// An array no task can hold whole moves through intermediate pieces (raw, or compressed
    /// with LZ4 or Zstandard level 1) or by re-reading its sources, whichever a cost model
    /// prices cheapest within --max-mem. Its coefficients (decode MB/s per codec, piece write
    /// and read MB/s) are measured once per machine and filesystem and cached in
    /// $XDG_CACHE_HOME/chunkmill (else ~/.cache/chunkmill), or given with
    /// CHUNKMILL_COSTS=KEY=MBPS,... (keys zlib_decode, zstd_decode, lz4_decode, shuffle,
    /// lz4_encode, zstd1_encode, write, read; `defaults` measures nothing). `chunkmill plan
    /// convert` shows the choice, the alternatives' priced costs and why.
    Convert(ConvertArgs),
    /// Compute array expressions over Zarr arrays (xarray semantics: named dimensions,
    /// NaN-skipping reductions) into a new Zarr group within a memory budget.
    Compute(ComputeArgs),
    /// Show the plan of a job without running it: stages, tasks, projected memory per task,
    /// bytes read, written and held in intermediates.
    Plan {
        #[command(subcommand)]
        job: PlanJob,
    },
    /// Write virtual Zarr references (kerchunk JSON or Parquet, or an Icechunk repository) to
    /// every chunk of NetCDF/HDF5 files, local or in S3, combined along a dimension with strict
    /// checks; no data is copied.
    Virtualize(VirtualizeArgs),
    /// Describe a Zarr store: arrays, shapes, data types, chunks, shards, codecs, dimension
    /// names, fill values, sizes.
    Inspect(InspectArgs),
    /// Run a slice of one stage of a stored plan: the entry point for batch engines (SLURM
    /// arrays, Kubernetes indexed jobs, AWS Batch, Dask, Lithops).
    Worker(WorkerArgs),
    /// Progress of a run from its work dir: done and pending tasks per stage.
    Status(StatusArgs),
    /// Build a demo dataset and rechunk it, with the plan, a progress bar and a verification.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum PlanJob {
    /// The plan of `chunkmill rechunk` with the same arguments.
    Rechunk(RechunkArgs),
    /// The plan of `chunkmill convert` with the same arguments.
    Convert(ConvertArgs),
    /// The plan of `chunkmill compute` with the same arguments: stages before and after fusion.
    Compute(ComputeArgs),
}

/// How a job reports.
#[derive(Debug, Args, Clone)]
pub struct Output {
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

/// Where tasks run, for every job that runs tasks.
#[derive(Debug, Args, Clone)]
pub struct ExecutorArgs {
    /// Where tasks run: `threads` of this process; `processes`: child `chunkmill worker`
    /// processes, each within the job's memory budget (--max-mem of rechunk and convert, 1 GB
    /// per scanning process of virtualize), so a crash in one task never takes the run down;
    /// `slurm`: one SLURM job array of `chunkmill worker` per stage, chained with afterok.
    #[arg(long, default_value = "threads", value_parser = ["threads", "processes", "slurm"])]
    pub executor: String,
    /// Options for every sbatch of --executor slurm, as one string:
    /// `--slurm-opt "--account=x --partition=y --time=00:30:00"`.
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub slurm_opt: Option<String>,
    /// Tasks per SLURM array element (default: about four elements per concurrent element,
    /// never more elements than the cluster's MaxArraySize).
    #[arg(long, value_name = "N")]
    pub slurm_tasks_per_job: Option<u64>,
    /// Directory for the SLURM array elements' logs (default: `slurm-logs` in the work dir).
    #[arg(long, value_name = "DIR")]
    pub slurm_log_dir: Option<String>,
    /// Extra attempts for a failed task, with exponential backoff.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
}

/// Flags every running job shares.
#[derive(Debug, Args, Clone)]
pub struct Common {
    #[command(flatten)]
    pub run: ExecutorArgs,
    /// Most tasks at once (default: twice the number of CPUs, so storage waits overlap work);
    /// with --executor slurm, most array elements running at once (`--array=…%N`).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Continue a run that stopped: skip tasks whose markers say done.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing target.
    #[arg(long)]
    pub overwrite: bool,
    /// Write a self-contained HTML report: the plan, a timeline of every task, each task's
    /// peak memory against its projection and the budget.
    #[arg(long = "report", value_name = "FILE")]
    pub report_file: Option<String>,
    /// Work dir for plan.json and task markers (default: `<TARGET>.work`, removed after
    /// success; one given here is kept, with a record of completion).
    #[arg(long, value_name = "URL")]
    pub work_dir: Option<String>,
    /// Keep the default work dir after success (its plan and record of completion, for
    /// `chunkmill status` and a later `--resume` that finds the job complete).
    #[arg(long)]
    pub keep_work: bool,
    #[command(flatten)]
    pub report: Output,
}

/// What the target of a job looks like and how the job is planned (rechunk and convert).
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Target chunks: `time=8760,lat=18,lon=36` by dimension name or `8760,18,36` by axis;
    /// -1 is the whole axis. Dimensions not named keep the source's chunks; rechunk without
    /// --chunks keeps every array's chunks (to change --codec, --shards or --zarr-format).
    /// Required by convert (here or in the recipe).
    #[arg(long, value_name = "SPEC")]
    pub chunks: Option<String>,
    /// Memory budget of the process: `512MB`, `2GiB`, `1.5GB` (MB and GB are decimal, MiB
    /// and GiB binary). Default: half of the available memory (MemAvailable, or what the
    /// cgroup allows if less), rounded down to 64 MB; with --resume, the budget of the plan
    /// being resumed. The plan shows which was used.
    #[arg(long, value_name = "SIZE")]
    pub max_mem: Option<String>,
    /// Where intermediates go (default: inside the work dir); deleted after success.
    #[arg(long, value_name = "URL")]
    pub temp: Option<String>,
    /// Target compressor: zstd:LEVEL, gzip:LEVEL, blosc:CNAME:LEVEL or none (default: the
    /// source's for rechunk, zstd:1 for convert).
    #[arg(long, value_name = "CODEC")]
    pub codec: Option<String>,
    /// Target shard shape (Zarr v3), same form as --chunks; whole multiples of the chunks.
    #[arg(long, value_name = "SPEC")]
    pub shards: Option<String>,
    /// Target Zarr format: 2 or 3 (default 3).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub zarr_format: Option<u8>,
    /// Only write plan.json and the target's metadata, and stop: the tasks are for
    /// `chunkmill worker` on a batch engine; `--resume` afterwards finishes the job.
    #[arg(long)]
    pub prepare: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RechunkArgs {
    /// Source Zarr store: a path, file://, s3://bucket/key or memory://name.
    pub source: String,
    /// Target Zarr store (must not exist unless --overwrite or --resume).
    pub target: String,
    /// Only this array (and the coordinates of its dimensions); repeatable.
    #[arg(long = "array", value_name = "NAME")]
    pub arrays: Vec<String>,
    /// Chunks of one array, instead of what --chunks gives it: `air:time=100,lat=5` or
    /// `air:100,5,5` (a coordinate gets exactly these too, not one whole chunk). Repeatable.
    #[arg(long = "array-chunks", value_name = "NAME:SPEC")]
    pub array_chunks: Vec<String>,
    #[command(flatten)]
    pub plan: TargetArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args, Clone)]
pub struct ConvertArgs {
    /// Inputs, then the target: NetCDF-4/HDF5/NetCDF-3 files (paths, quoted globs, s3://
    /// URLs and globs, @file lists), or one kerchunk JSON file, kerchunk Parquet directory,
    /// Icechunk repository or Zarr store; the last path is the target Zarr store.
    /// With --recipe, the paths may be left out (the recipe's inputs and target are used) or
    /// be just the target.
    #[arg(value_name = "INPUT... TARGET")]
    pub paths: Vec<String>,
    /// A TOML (.toml) or YAML (.yaml, .yml) file with the conversion: inputs, target and every
    /// flag below by its long name (`max_mem`, `select = ["lat=-30:30"]`, `decode_cf = true`),
    /// so a cache can be rebuilt from one file. Flags given here as well override its values
    /// (lists add to them).
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<String>,
    /// Only these variables (and the coordinates of their dimensions): `air,uwnd`.
    #[arg(long, value_name = "V,...", value_delimiter = ',')]
    pub variables: Vec<String>,
    /// Select by coordinate value, both ends included: `lat=-30:30`,
    /// `time=2020-01-01:2020-06-30` (CF times in the coordinate's units and calendar); an end
    /// may be left empty. Repeatable.
    #[arg(long, value_name = "DIM=START:STOP")]
    pub select: Vec<String>,
    /// Select by index, Python style (stop excluded, negative from the end): `time=0:24`.
    #[arg(long, value_name = "DIM=I:J")]
    pub isel: Vec<String>,
    /// Rename a variable or dimension: `air=temperature`. Repeatable.
    #[arg(long, value_name = "OLD=NEW")]
    pub rename: Vec<String>,
    /// Leave a variable out. Repeatable.
    #[arg(long, value_name = "VAR")]
    pub drop: Vec<String>,
    /// Convert only this group of the inputs (`sub`, `a/b`), as xarray's `group=`: it becomes
    /// the target's root. Without it every group is converted.
    #[arg(long, value_name = "PATH")]
    pub group: Option<String>,
    /// Unpack CF-packed values (scale_factor, add_offset) to floats, with _FillValue and
    /// missing_value as NaN.
    #[arg(long)]
    pub decode_cf: bool,
    /// Store a variable as another numeric type: `air=float32`. Repeatable.
    #[arg(long, value_name = "VAR=DTYPE")]
    pub cast: Vec<String>,
    /// Read a dimension backwards (descending latitudes become ascending). Repeatable.
    #[arg(long, value_name = "DIM")]
    pub reverse: Vec<String>,
    /// Concatenate the input files along this dimension (default: inferred when one
    /// dimension is unlimited in every file, or the only one whose coordinate differs).
    #[arg(long, value_name = "DIM")]
    pub concat_dim: Option<String>,
    /// Stack the input files along --concat-dim, a new dimension none of them has.
    #[arg(long)]
    pub stack: bool,
    /// Variables that must be equal in every input file, compared by value and taken once.
    #[arg(long, value_name = "DIM,...")]
    pub identical_dims: Option<String>,
    /// Variables without the concat dimension: `equals` (default) refuses files where they
    /// differ; `override` takes the first file's without comparing.
    #[arg(long, value_name = "MODE", value_parser = ["equals", "override"])]
    pub compat: Option<String>,
    /// Refuse a selection that cuts through source chunks instead of warning.
    #[arg(long)]
    pub strict_alignment: bool,
    /// Cut dimensions in non-overlapping tiles stacked along a new first dimension `tile`,
    /// one tile per chunk (machine-learning caches): `lat=32,lon=32`. Each tile keeps its
    /// coordinates as `tile_lat(tile, lat)`; a remainder shorter than a tile is left out.
    #[arg(long, value_name = "DIM=SIZE,...")]
    pub tile: Option<String>,
    /// Add the inputs to the existing target along this dimension (give the same transform
    /// flags as the conversion that made it); inputs already in the target change nothing,
    /// overlapping or earlier ones are refused.
    #[arg(long, value_name = "DIM")]
    pub append: Option<String>,
    /// With --append: add the new data even when it does not start one step after the
    /// cache's end (a gap in an evenly spaced coordinate).
    #[arg(long)]
    pub allow_gap: bool,
    /// Follow the chunk references of a reference input (kerchunk JSON or Parquet, Icechunk)
    /// under this path or URL prefix too; by default only those under the directory holding
    /// the reference file are followed. Repeatable: `--allow-refs /gws/archive/
    /// --allow-refs s3://bucket/era5/`.
    #[arg(long, value_name = "PREFIX")]
    pub allow_refs: Vec<String>,
    #[command(flatten)]
    pub plan: TargetArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct VirtualizeArgs {
    /// Input files: paths, globs (quoted), s3://bucket/key URLs and globs
    /// (s3://bucket/data/*.nc), or @file listing one per line.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Where the references go (local path): a file for kerchunk-json, a directory for
    /// kerchunk-parquet and icechunk (an Icechunk repository, one commit on main).
    #[arg(long, value_name = "PATH")]
    pub output: String,
    /// Reference format.
    #[arg(long, default_value = "kerchunk-json", value_parser = ["kerchunk-json", "kerchunk-parquet", "icechunk"])]
    pub format: String,
    /// Chunks per Parquet file (kerchunk-parquet only).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub record_size: u64,
    /// Concatenate along this dimension (default: inferred when one dimension is unlimited
    /// in every file, or the only one whose coordinate differs).
    #[arg(long, value_name = "DIM")]
    pub concat_dim: Option<String>,
    /// Stack the files along --concat-dim, a new dimension none of them has.
    #[arg(long, requires = "concat_dim")]
    pub stack: bool,
    /// Variables that must be equal in every file, compared by value and taken once.
    #[arg(long, value_name = "DIM,...")]
    pub identical_dims: Option<String>,
    /// Variables without the concat dimension: `equals` (default) refuses files where they
    /// differ; `override` takes the first file's without comparing.
    #[arg(long, value_name = "MODE", value_parser = ["equals", "override"])]
    pub compat: Option<String>,
    /// Inline chunks stored in fewer bytes than this (default 500); a variable no Zarr reader
    /// could read by reference (strings, LZF, szip, …) is decoded and inlined when it
    /// decodes to fewer bytes, and otherwise left out with a warning.
    #[arg(long, value_name = "BYTES")]
    pub inline_threshold: Option<u64>,
    /// Leave a variable out of the references (`station_name`, `group/air`). Repeatable.
    #[arg(long, value_name = "VAR")]
    pub drop: Vec<String>,
    /// Reference only this group of the files (`sub`, `a/b`), as xarray's `group=`: it
    /// becomes the root of the references. Without it every group is referenced.
    #[arg(long, value_name = "PATH")]
    pub group: Option<String>,
    /// Continue past files that cannot be opened or referenced, and list them.
    #[arg(long)]
    pub skip_bad: bool,
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
    /// Scanning threads (default: the number of CPUs; four per CPU when some input is in S3);
    /// with another executor, most tasks (or SLURM array elements) at once.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Work dir of a scan on `processes` or `slurm` (default: `<OUTPUT>.work`): the input list,
    /// the plan, markers and each file's result; cleaned up afterwards.
    #[arg(long, value_name = "URL")]
    pub work_dir: Option<String>,
    /// Files per task of a scan on `processes` or `slurm` (default: about four tasks per
    /// worker).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub files_per_task: Option<u64>,
    #[command(flatten)]
    pub run: ExecutorArgs,
    #[command(flatten)]
    pub report: Output,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The plan: `<work-dir>/plan.json` (local path or URL), or the work dir.
    #[arg(long, value_name = "URL")]
    pub plan: String,
    /// Stage name (as `chunkmill status` lists it) or index.
    #[arg(long)]
    pub stage: String,
    /// Tasks to run: A..B (B excluded), A..=B or A.
    #[arg(
        long,
        value_name = "A..B",
        required_unless_present = "batch",
        conflicts_with = "batch"
    )]
    pub tasks: Option<String>,
    /// Run the index-th batch of N tasks, the index read from --index-env (for array jobs).
    #[arg(long, value_name = "N", requires = "index_env")]
    pub batch: Option<u64>,
    /// Environment variable holding the batch index: SLURM_ARRAY_TASK_ID,
    /// JOB_COMPLETION_INDEX (Kubernetes), AWS_BATCH_JOB_ARRAY_INDEX.
    #[arg(long, value_name = "VAR", requires = "batch")]
    pub index_env: Option<String>,
    /// Most tasks at once in this process (default: twice the CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Extra attempts for a failed task.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    #[command(flatten)]
    pub report: Output,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run's work dir (default of a rechunk: `<TARGET>.work`).
    pub work_dir: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A Zarr store (path or URL), a kerchunk JSON file or Parquet directory, an Icechunk
    /// repository, or an HDF5/NetCDF file.
    pub path: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo data (created; replaced if it holds an earlier demo).
    #[arg(long, default_value = "chunkmill-demo")]
    pub dir: String,
    /// Memory budget for the demo rechunk.
    #[arg(long, default_value = "128MB")]
    pub max_mem: String,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `chunkmill compute` (see docs/compute.md).
#[derive(Debug, Args, Clone)]
pub struct ComputeArgs {
    /// Assignments `NAME = EXPRESSION`, one per argument (or several separated by `;`); each
    /// assigned name becomes an array of the output. See docs/compute.md for the language.
    #[arg(value_name = "NAME = EXPR")]
    pub assignments: Vec<String>,
    /// An input: `NAME=URL#ARRAY` names one array of a Zarr store; `NAME=URL` opens all its
    /// arrays by their own names. Repeatable.
    #[arg(long = "input", value_name = "NAME=URL[#ARRAY]")]
    pub inputs: Vec<String>,
    /// Read the assignments from a file (one per line), after those given as arguments.
    #[arg(long, value_name = "FILE")]
    pub script: Option<String>,
    /// The output Zarr group (must not exist unless --overwrite or --resume).
    #[arg(long, value_name = "URL")]
    pub output: String,
    #[command(flatten)]
    pub plan: TargetArgs,
    #[command(flatten)]
    pub common: Common,
}
