//! A plan is data: a list of stages, each with `n` tasks whose work is computed from
//! `(plan, stage, task index)`, so `plan.json` stays small however many tasks there are.
//!
//! Each stage writes one array (an intermediate or a final target); each task writes whole
//! chunks of it that no other task writes, and declares the bytes it holds at its peak
//! (`projected_mem`), which executors use to admit tasks within the memory budget.
//!
//! ```
//! use chunkmill_grid::Grid;
//! use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
//!
//! let grid = Grid::regular(&[100], &[10])?;
//! let stage = Stage {
//!     name: "00-a-direct".into(),
//!     label: "a: copy".into(),
//!     kind: StageKind::Copy(CopyStage {
//!         input: Endpoint::Zarr { url: "memory://src".into(), path: "a".into(), grid: grid.clone() },
//!         output: Endpoint::Zarr { url: "memory://dst".into(), path: "a".into(), grid: grid.clone() },
//!         blocks: Grid::regular(&[100], &[50])?,
//!         item_size: 4,
//!     }),
//!     projected_mem: 1000,
//!     bytes_read: 400,
//!     bytes_written: 400,
//! };
//! let plan = Plan::new("rechunk", 1 << 20, vec![stage], vec![]);
//! assert_eq!(plan.stages[0].tasks(), 2);
//! let back = Plan::from_json(&plan.to_json()?)?;
//! assert_eq!(back.plan_id, plan.plan_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chunkmill_grid::{Grid, Region};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of the `plan.json` format; a worker refuses any other.
pub const PLAN_FORMAT: u32 = 1;

/// Where a stage reads or writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoint {
    /// A Zarr array (v2 or v3) at `path` in the store at `url`.
    Zarr {
        url: String,
        path: String,
        grid: Grid,
    },
    /// C-ordered pieces under `prefix` of the store at `url`, one object per chunk of `grid`,
    /// keyed by its C-order number: our intermediates, no metadata; raw, or compressed with
    /// `codec` in a checked frame.
    Pieces {
        url: String,
        prefix: String,
        grid: Grid,
        /// How each piece is stored (raw when absent, as plans before it had one).
        #[serde(default, skip_serializing_if = "PieceCodec::is_raw")]
        codec: PieceCodec,
    },
    /// Array `path` of a virtual dataset described by the kerchunk JSON references at `url`:
    /// each chunk read by byte range from the file it points into and decoded with the
    /// array's codecs.
    References {
        url: String,
        path: String,
        grid: Grid,
    },
    /// Another endpoint seen through a window: a range of each axis (read backwards where
    /// `reverse`), its values optionally converted. `grid` cuts the window at the source's
    /// chunk boundaries, so each of its chunks lies inside one source chunk.
    Window {
        source: Box<Endpoint>,
        axes: Vec<AxisWindow>,
        values: Option<ValueMap>,
        grid: Grid,
    },
    /// Several endpoints one after another along `axis` (an existing array's last chunks,
    /// then new data). `grid` has a boundary at every join, so each of its chunks lies in one
    /// part.
    Concat {
        axis: usize,
        parts: Vec<Endpoint>,
        grid: Grid,
    },
    /// Non-overlapping tiles of `source` stacked along a new first axis (`tile`): tile `t` is
    /// the block at multi-index `unravel(t, counts)` over the tiled dimensions. Source axis `a`
    /// is cut in tiles of `sizes[a]` when set, the tile index along it being component
    /// `slots[a]`. `grid`: one tile per chunk along the first axis, whole tiles along tiled
    /// axes, the source's chunks elsewhere.
    Tiles {
        source: Box<Endpoint>,
        sizes: Vec<Option<u64>>,
        slots: Vec<Option<usize>>,
        counts: Vec<u64>,
        grid: Grid,
    },
    /// The chunks of `inner` from `chunk_offset` on, seen as chunks from 0: how an append
    /// writes the end of an existing array. `grid` is the shifted part of the inner grid.
    Shifted {
        inner: Box<Endpoint>,
        chunk_offset: Vec<u64>,
        grid: Grid,
    },
}

/// How an intermediate piece is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceCodec {
    /// The C-ordered elements as they are.
    #[default]
    Raw,
    /// LZ4 block compression in a checked frame.
    Lz4,
    /// Zstandard level 1 in a checked frame.
    Zstd1,
}

impl PieceCodec {
    /// Every codec, raw first.
    pub const ALL: [PieceCodec; 3] = [PieceCodec::Raw, PieceCodec::Lz4, PieceCodec::Zstd1];

    /// Whether pieces are stored as they are.
    #[must_use]
    pub fn is_raw(&self) -> bool {
        *self == PieceCodec::Raw
    }

    /// The name plans and flags use.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PieceCodec::Raw => "raw",
            PieceCodec::Lz4 => "lz4",
            PieceCodec::Zstd1 => "zstd1",
        }
    }
}

impl std::fmt::Display for PieceCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of one source axis a [`Endpoint::Window`] shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxisWindow {
    /// First source index.
    pub start: u64,
    /// Number of indices.
    pub len: u64,
    /// Output index `i` is source index `start + len - 1 - i`.
    pub reverse: bool,
}

/// A change of every value read through a window: CF unpacking and a change of data type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueMap {
    /// The source data type (numpy name: `int16`, `float32`, …), little-endian.
    pub from: String,
    /// The output data type.
    pub to: String,
    /// Source values that mean "no data" (`_FillValue`, `missing_value`): NaN in a float
    /// output.
    pub missing: Vec<f64>,
    /// Multiply by this (CF `scale_factor`).
    pub scale: Option<f64>,
    /// Then add this (CF `add_offset`).
    pub offset: Option<f64>,
    /// The type the unpacking is computed in (numpy name), as xarray computes it:
    /// `data.astype(compute) * scale + offset`, each step rounded to `compute`, then cast to
    /// `to`. float64 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
}

impl Endpoint {
    /// Whether the endpoint is consistent: as many axes as its grid everywhere, windows
    /// inside their source, array paths and prefixes inside their store.
    ///
    /// # Errors
    /// What is wrong, for [`PlanError::Field`].
    pub fn check(&self) -> Result<(), String> {
        let ndim = self.grid().ndim();
        let rank = |what: &str, n: usize| {
            if n == ndim {
                Ok(())
            } else {
                Err(format!("{what} has {n} axes, its grid {ndim}"))
            }
        };
        match self {
            Endpoint::Zarr { path, .. } | Endpoint::References { path, .. } => inside_store(path),
            Endpoint::Pieces { prefix, .. } => inside_store(prefix),
            Endpoint::Window {
                source, axes, grid, ..
            } => {
                rank("the window", axes.len())?;
                rank("the window's source", source.grid().ndim())?;
                let source_shape = source.grid().shape();
                for (i, (w, len)) in axes.iter().zip(&source_shape).enumerate() {
                    if w.start.checked_add(w.len).is_none_or(|end| end > *len)
                        || grid.shape()[i] != w.len
                    {
                        return Err(format!(
                            "window axis {i} ({}..+{}) does not fit its source of length {len} or its grid",
                            w.start, w.len
                        ));
                    }
                }
                source.check()
            }
            Endpoint::Concat { axis, parts, .. } => {
                if *axis >= ndim || parts.is_empty() {
                    return Err(format!(
                        "concat axis {axis} of {ndim}, {} parts",
                        parts.len()
                    ));
                }
                for p in parts {
                    rank("a concat part", p.grid().ndim())?;
                    p.check()?;
                }
                Ok(())
            }
            Endpoint::Tiles {
                source,
                sizes,
                slots,
                ..
            } => {
                let n = source.grid().ndim();
                if sizes.len() != n || slots.len() != n || ndim != n + 1 {
                    return Err(format!(
                        "tiles of a {n}-axis source need {n} sizes and slots and a grid of {} axes",
                        n + 1
                    ));
                }
                if sizes.iter().flatten().any(|&s| s == 0) {
                    return Err("a tile size of 0".into());
                }
                source.check()
            }
            Endpoint::Shifted {
                inner,
                chunk_offset,
                ..
            } => {
                rank("the shift", chunk_offset.len())?;
                rank("the shifted array", inner.grid().ndim())?;
                inner.check()
            }
        }
    }

    fn urls_mut<'a>(&'a mut self, out: &mut Vec<&'a mut String>) {
        match self {
            Endpoint::Zarr { url, .. }
            | Endpoint::Pieces { url, .. }
            | Endpoint::References { url, .. } => out.push(url),
            Endpoint::Window { source, .. } | Endpoint::Tiles { source, .. } => {
                source.urls_mut(out);
            }
            Endpoint::Shifted { inner, .. } => inner.urls_mut(out),
            Endpoint::Concat { parts, .. } => {
                for p in parts {
                    p.urls_mut(out);
                }
            }
        }
    }

    /// The chunk grid.
    #[must_use]
    pub fn grid(&self) -> &Grid {
        match self {
            Endpoint::Zarr { grid, .. }
            | Endpoint::Pieces { grid, .. }
            | Endpoint::References { grid, .. }
            | Endpoint::Window { grid, .. }
            | Endpoint::Concat { grid, .. }
            | Endpoint::Shifted { grid, .. }
            | Endpoint::Tiles { grid, .. } => grid,
        }
    }

    /// A short description for plans and errors.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Zarr { url, path, .. } => {
                if path.is_empty() {
                    url.clone()
                } else {
                    format!("{url}/{path}")
                }
            }
            Endpoint::Pieces {
                url, prefix, codec, ..
            } => {
                if codec.is_raw() {
                    format!("{url}/{prefix} (intermediate)")
                } else {
                    format!("{url}/{prefix} (intermediate, {codec} pieces)")
                }
            }
            Endpoint::References { url, path, .. } => format!("{url}#{path}"),
            Endpoint::Window {
                source,
                axes,
                values,
                ..
            } => {
                let ranges: Vec<String> = axes
                    .iter()
                    .map(|a| {
                        let range = format!("{}:{}", a.start, a.start + a.len);
                        if a.reverse {
                            format!("{range} reversed")
                        } else {
                            range
                        }
                    })
                    .collect();
                let mut text = format!("{}[{}]", source.describe(), ranges.join(", "));
                if let Some(v) = values {
                    text.push_str(&format!(" as {}", v.to));
                }
                text
            }
            Endpoint::Concat { axis, parts, .. } => {
                let parts: Vec<String> = parts.iter().map(Endpoint::describe).collect();
                format!("concat(axis {axis}: {})", parts.join(" + "))
            }
            Endpoint::Shifted {
                inner,
                chunk_offset,
                ..
            } => format!("{} from chunk {chunk_offset:?}", inner.describe()),
            Endpoint::Tiles { source, sizes, .. } => {
                let sizes: Vec<String> = sizes
                    .iter()
                    .map(|s| s.map_or_else(|| "·".to_string(), |s| s.to_string()))
                    .collect();
                format!("{} in tiles of [{}]", source.describe(), sizes.join(", "))
            }
        }
    }
}

/// A stage that copies one array into another, block by block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyStage {
    /// What it reads.
    pub input: Endpoint,
    /// What it writes; its grid holds every block boundary.
    pub output: Endpoint,
    /// Task `i` copies block `i` of this grid.
    pub blocks: Grid,
    /// Bytes per element.
    pub item_size: u64,
}

/// A stage that scans files for `virtualize` as map tasks: task `i` scans files
/// `i × files_per_task ..` of the list at `inputs_url` and writes, per file, its references
/// (or the reason it failed) under `output_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStage {
    /// A text object, one input (path or URL) per line, in input order.
    pub inputs_url: String,
    /// Number of inputs.
    pub files: u64,
    /// Inputs per task.
    pub files_per_task: u64,
    /// Where results go: `<output_url>/<input index>.json`.
    pub output_url: String,
    /// Chunks stored in fewer bytes are inlined.
    pub inline_threshold: u64,
    /// Variables whose values are loaded (the concat coordinate, identical dims).
    pub load: Vec<String>,
}

/// A stage of `chunkmill compute`: task `i` computes block `i` of `blocks` from `inputs` and
/// writes its part of `output`. `kernel` says how (a fused expression, a partial or combining
/// reduction step); it is data that `chunkmill-compute` reads and checks, so this crate stays
/// free of the expression language.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeStage {
    /// What the kernel reads, by position.
    pub inputs: Vec<Endpoint>,
    /// What it writes (arrays of the target, or intermediate pieces), by position: the
    /// kernel names which; several when outputs that read the same input share its reads.
    pub outputs: Vec<Endpoint>,
    /// Task `i` computes block `i` of this grid (the kernel's domain).
    pub blocks: Grid,
    /// The work, as `chunkmill_compute::Kernel` writes it.
    pub kernel: serde_json::Value,
}

/// What a stage does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a handful per plan
pub enum StageKind {
    /// Copy blocks from one array to another.
    Copy(CopyStage),
    /// Scan files into references.
    Scan(ScanStage),
    /// Compute blocks of an array expression.
    Compute(ComputeStage),
}

/// One stage of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// A name that is safe in a path; markers live under it.
    pub name: String,
    /// What a person reads in the plan.
    pub label: String,
    /// The work.
    pub kind: StageKind,
    /// Bytes one task holds at its peak.
    pub projected_mem: u64,
    /// Decoded bytes the stage reads.
    pub bytes_read: u64,
    /// Decoded bytes the stage writes.
    pub bytes_written: u64,
}

impl Stage {
    /// Number of tasks.
    #[must_use]
    pub fn tasks(&self) -> u64 {
        match &self.kind {
            StageKind::Copy(c) => c.blocks.num_chunks(),
            StageKind::Scan(s) => s.files.div_ceil(s.files_per_task.max(1)),
            StageKind::Compute(c) => c.blocks.num_chunks(),
        }
    }

    /// The array region task `task` owns (for a scan, its range of inputs).
    #[must_use]
    pub fn task_region(&self, task: u64) -> Region {
        match &self.kind {
            StageKind::Copy(c) => c.blocks.chunk_region(&c.blocks.unravel(task)),
            StageKind::Compute(c) => c.blocks.chunk_region(&c.blocks.unravel(task)),
            StageKind::Scan(s) => {
                let per = s.files_per_task.max(1);
                let files = task * per..((task + 1) * per).min(s.files);
                Region::new(std::iter::once(files).collect())
            }
        }
    }
}

/// A whole job: stages run in order, each after the previous one is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`] of the writer.
    pub format: u32,
    /// The chunkmill version that wrote it.
    pub chunkmill_version: String,
    /// A digest of everything below: two runs of the same job have the same id.
    pub plan_id: String,
    /// What job made it (`rechunk`, …).
    pub job: String,
    /// The memory budget of one worker process, bytes.
    pub max_mem: u64,
    /// The stages.
    pub stages: Vec<Stage>,
    /// Store URLs and prefixes to delete once every stage is complete (intermediates).
    pub cleanup: Vec<(String, String)>,
}

impl Plan {
    /// A plan with its id computed from its content.
    #[must_use]
    pub fn new(
        job: &str,
        max_mem: u64,
        stages: Vec<Stage>,
        cleanup: Vec<(String, String)>,
    ) -> Self {
        let mut plan = Plan {
            format: PLAN_FORMAT,
            chunkmill_version: env!("CARGO_PKG_VERSION").to_string(),
            plan_id: String::new(),
            job: job.to_string(),
            max_mem,
            stages,
            cleanup,
        };
        // The id only has to follow the content: a plan that does not serialize (none that
        // chunkmill builds) is refused when it is written ([`Plan::to_json`]), so its Debug
        // form, which shows the same content, stands in here rather than an empty input.
        let content =
            serde_json::to_vec(&plan).unwrap_or_else(|_| format!("{plan:?}").into_bytes());
        let digest = Sha256::digest(content);
        plan.plan_id = hex::encode(&digest[..8]);
        plan
    }

    /// The plan as pretty JSON.
    ///
    /// # Errors
    /// [`PlanError::Invalid`] if it does not serialize.
    pub fn to_json(&self) -> Result<String, PlanError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parse `plan.json`, refusing another format version.
    ///
    /// # Errors
    /// [`PlanError`] when the text is not a plan of this format.
    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let format = value
            .get("format")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if format != u64::from(PLAN_FORMAT) {
            return Err(PlanError::Version {
                got: format,
                expected: PLAN_FORMAT,
            });
        }
        let plan: Plan = serde_json::from_value(value)?;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks what `plan.json` could get wrong, edited by hand or written by another tool, so
    /// that no task divides by zero, writes chunks it does not own or puts a marker outside
    /// the work dir: stage names are plain path segments and unique; a copy stage's blocks,
    /// input and output cut arrays of one shape, and every block starts and ends on output
    /// chunk boundaries; endpoints have as many axes as their grids; array paths, prefixes
    /// and cleanup prefixes stay inside their store (no `..`, not absolute). Grids are
    /// checked as they are read ([`chunkmill_grid::AxisChunks`]).
    ///
    /// # Errors
    /// [`PlanError::Field`] naming the field and what is wrong.
    pub fn validate(&self) -> Result<(), PlanError> {
        let field = |at: String, why: String| {
            Err(PlanError::Field {
                field: at,
                reason: why,
            })
        };
        for (i, stage) in self.stages.iter().enumerate() {
            let at = |name: &str| format!("stages[{i}].{name}");
            if let Err(why) = plain_segment(&stage.name) {
                return field(at("name"), why);
            }
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                return field(at("name"), format!("'{}' names two stages", stage.name));
            }
            match &stage.kind {
                StageKind::Copy(copy) => {
                    check_copy(copy).or_else(|(name, why)| field(at(&name), why))?;
                }
                StageKind::Scan(scan) => {
                    if scan.files_per_task == 0 {
                        return field(at("files_per_task"), "must be at least 1".into());
                    }
                }
                StageKind::Compute(compute) => {
                    for (k, input) in compute.inputs.iter().enumerate() {
                        input
                            .check()
                            .or_else(|why| field(at(&format!("inputs[{k}]")), why))?;
                    }
                    if compute.outputs.is_empty() {
                        return field(at("outputs"), "a compute stage writes something".into());
                    }
                    for (k, output) in compute.outputs.iter().enumerate() {
                        output
                            .check()
                            .or_else(|why| field(at(&format!("outputs[{k}]")), why))?;
                    }
                }
            }
        }
        for (i, (_, prefix)) in self.cleanup.iter().enumerate() {
            if prefix.is_empty() {
                return field(
                    format!("cleanup[{i}]"),
                    "an empty prefix would delete the whole store".into(),
                );
            }
            inside_store(prefix).or_else(|why| field(format!("cleanup[{i}]"), why))?;
        }
        Ok(())
    }

    /// The same plan with every location passed through `f` (made absolute, say), its id
    /// computed again from the new content.
    #[must_use]
    pub fn with_urls(mut self, mut f: impl FnMut(&str) -> String) -> Plan {
        for url in self.urls_mut() {
            *url = f(url);
        }
        let mut plan = Plan::new(&self.job, self.max_mem, self.stages, self.cleanup);
        plan.chunkmill_version = self.chunkmill_version;
        plan
    }

    /// Every location the plan reads or writes: endpoint URLs, scan inputs and outputs,
    /// cleanup stores.
    pub fn urls_mut(&mut self) -> Vec<&mut String> {
        let mut out = Vec::new();
        for stage in &mut self.stages {
            match &mut stage.kind {
                StageKind::Copy(copy) => {
                    copy.input.urls_mut(&mut out);
                    copy.output.urls_mut(&mut out);
                }
                StageKind::Scan(scan) => {
                    out.push(&mut scan.inputs_url);
                    out.push(&mut scan.output_url);
                }
                StageKind::Compute(compute) => {
                    for input in &mut compute.inputs {
                        input.urls_mut(&mut out);
                    }
                    for output in &mut compute.outputs {
                        output.urls_mut(&mut out);
                    }
                }
            }
        }
        for (url, _) in &mut self.cleanup {
            out.push(url);
        }
        out
    }

    /// Total tasks over all stages.
    #[must_use]
    pub fn total_tasks(&self) -> u64 {
        self.stages.iter().map(Stage::tasks).sum()
    }

    /// The largest projected memory of any task.
    #[must_use]
    pub fn max_projected_mem(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| s.projected_mem)
            .max()
            .unwrap_or(0)
    }
}

/// A stage name is a directory of the work dir: one plain segment.
fn plain_segment(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a plain name (letters, digits, '-', '_', '.'; no '/' or '..'): markers live under it"
        ))
    }
}

/// A key prefix or array path that stays inside its store.
fn inside_store(path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.split(['/', '\\']).any(|s| s == "..") {
        return Err(format!(
            "'{path}' leaves its store (absolute, or with '..')"
        ));
    }
    Ok(())
}

fn check_copy(copy: &CopyStage) -> Result<(), (String, String)> {
    let out = copy.output.grid();
    let shape = out.shape();
    if copy.item_size == 0 {
        return Err(("item_size".into(), "must be at least 1".into()));
    }
    if copy.blocks.shape() != shape {
        return Err((
            "blocks".into(),
            format!(
                "cut an array of shape {:?}, the output is {shape:?}",
                copy.blocks.shape()
            ),
        ));
    }
    if copy.input.grid().shape() != shape {
        return Err((
            "input".into(),
            format!(
                "reads an array of shape {:?}, the output is {shape:?}",
                copy.input.grid().shape()
            ),
        ));
    }
    for (axis, (blocks, chunks)) in copy.blocks.axes().iter().zip(out.axes()).enumerate() {
        if let Some(b) = (0..blocks.count()).find(|&b| !chunks.is_aligned(&blocks.chunk(b))) {
            return Err((
                "blocks".into(),
                format!(
                    "block {b} of axis {axis} ({:?}) does not start and end on output chunk boundaries: two tasks would write one chunk",
                    blocks.chunk(b)
                ),
            ));
        }
    }
    copy.input
        .check()
        .map_err(|why| ("input".to_string(), why))?;
    copy.output
        .check()
        .map_err(|why| ("output".to_string(), why))
}

/// What can be wrong with a plan document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Not a plan: not JSON, or JSON of another shape.
    #[error("not a chunkmill plan: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A field that no plan chunkmill writes could hold.
    #[error("invalid plan: {field}: {reason}")]
    Field { field: String, reason: String },
    /// Written by another format version.
    #[error("plan format {got}, expected {expected}: written by another chunkmill version")]
    Version { got: u64, expected: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A one-stage copy of 100 elements in output chunks of 10, blocks of 20.
    fn plan() -> Result<Plan, Box<dyn std::error::Error>> {
        let out = Grid::regular(&[100], &[10])?;
        let stage = Stage {
            name: "000-0".into(),
            label: "a: copy".into(),
            kind: StageKind::Copy(CopyStage {
                input: Endpoint::Zarr {
                    url: "/data/src.zarr".into(),
                    path: "a".into(),
                    grid: Grid::regular(&[100], &[25])?,
                },
                output: Endpoint::Zarr {
                    url: "/data/t.zarr".into(),
                    path: "a".into(),
                    grid: out,
                },
                blocks: Grid::regular(&[100], &[20])?,
                item_size: 4,
            }),
            projected_mem: 1000,
            bytes_read: 400,
            bytes_written: 400,
        };
        Ok(Plan::new("rechunk", 1 << 20, vec![stage], vec![]))
    }

    /// The plan's JSON edited by `edit`, read back.
    fn edited(edit: impl Fn(&mut serde_json::Value)) -> Result<Plan, PlanError> {
        let built = plan().map_err(|e| PlanError::Field {
            field: "test plan".into(),
            reason: e.to_string(),
        })?;
        let mut value: serde_json::Value = serde_json::from_str(&built.to_json()?)?;
        edit(&mut value);
        Plan::from_json(&value.to_string())
    }

    fn refused(result: Result<Plan, PlanError>, words: &str) -> bool {
        matches!(result, Err(e) if e.to_string().contains(words))
    }

    #[test]
    fn a_plan_chunkmill_writes_is_valid() -> TestResult {
        plan()?.validate()?;
        assert!(edited(|_| {}).is_ok());
        Ok(())
    }

    #[test]
    fn plan_block_size_0_is_refused_when_read() {
        let r = edited(|p| p["stages"][0]["kind"]["blocks"]["axes"][0]["size"] = 0.into());
        assert!(refused(r, "chunk size 0"));
    }

    #[test]
    fn plan_blocks_not_aligned_to_output_chunks_are_refused() {
        let r = edited(|p| p["stages"][0]["kind"]["blocks"]["axes"][0]["size"] = 15.into());
        assert!(refused(r, "stages[0].blocks: block 0 of axis 0 (0..15)"));
        let r = edited(|p| p["stages"][0]["kind"]["blocks"]["axes"][0]["len"] = 90.into());
        assert!(refused(r, "stages[0].blocks"));
    }

    #[test]
    fn plan_stage_names_with_dotdot_or_slash_are_refused() {
        for name in ["../../x", "a/b", "..", "", ".hidden", "a\\b"] {
            let r = edited(|p| p["stages"][0]["name"] = name.into());
            assert!(refused(r, "stages[0].name"), "{name}");
        }
    }

    #[test]
    fn plan_paths_and_cleanup_prefixes_stay_in_their_store() {
        let r = edited(|p| p["stages"][0]["kind"]["output"]["path"] = "../../etc".into());
        assert!(refused(r, "stages[0].output"));
        let r = edited(|p| p["cleanup"] = serde_json::json!([["/data/t.zarr", ""]]));
        assert!(refused(r, "cleanup[0]"));
        let r = edited(|p| p["cleanup"] = serde_json::json!([["/tmp/x", "../y/"]]));
        assert!(refused(r, "cleanup[0]"));
    }

    #[test]
    fn urls_are_rewritten_and_the_id_follows() -> TestResult {
        let plan = plan()?;
        let moved = plan.clone().with_urls(|u| u.replace("/data", "/elsewhere"));
        assert_ne!(moved.plan_id, plan.plan_id);
        assert!(moved.to_json()?.contains("/elsewhere/src.zarr"));
        assert_eq!(
            moved.clone().with_urls(str::to_string).plan_id,
            moved.plan_id
        );
        Ok(())
    }
}
