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
//! let back = Plan::from_json(&plan.to_json())?;
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
    /// Raw C-ordered pieces under `prefix` of the store at `url`, one object per chunk of
    /// `grid`, keyed by its C-order number: our intermediates, no codec and no metadata.
    Pieces {
        url: String,
        prefix: String,
        grid: Grid,
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
}

impl Endpoint {
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
            Endpoint::Pieces { url, prefix, .. } => format!("{url}/{prefix} (intermediate)"),
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

/// What a stage does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a handful per plan
pub enum StageKind {
    /// Copy blocks from one array to another.
    Copy(CopyStage),
    /// Scan files into references.
    Scan(ScanStage),
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
        }
    }

    /// The array region task `task` owns (for a scan, its range of inputs).
    #[must_use]
    pub fn task_region(&self, task: u64) -> Region {
        match &self.kind {
            StageKind::Copy(c) => c.blocks.chunk_region(&c.blocks.unravel(task)),
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
        let digest = Sha256::digest(serde_json::to_vec(&plan).unwrap_or_default());
        plan.plan_id = hex::encode(&digest[..8]);
        plan
    }

    /// The plan as pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse `plan.json`, refusing another format version.
    ///
    /// # Errors
    /// [`PlanError`] when the text is not a plan of this format.
    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PlanError::Invalid(e.to_string()))?;
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
        serde_json::from_value(value).map_err(|e| PlanError::Invalid(e.to_string()))
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

/// What can be wrong with a plan document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Not a plan.
    #[error("not a chunkmill plan: {0}")]
    Invalid(String),
    /// Written by another format version.
    #[error("plan format {got}, expected {expected}: written by another chunkmill version")]
    Version { got: u64, expected: u32 },
}
