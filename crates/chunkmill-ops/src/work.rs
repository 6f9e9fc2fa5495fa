//! A run's work dir seen from outside the run: `chunkmill worker` runs a slice of a stage of
//! the plan stored there (the entry point for batch engines), `chunkmill status` reads its
//! markers. Both work while a run is going and after it crashed.

use std::ops::Range;

use chunkmill_exec::{run_stage_slice, Event, RunOptions, RunSummary};
use chunkmill_plan::Plan;
use chunkmill_store::markers::Markers;
use chunkmill_store::Store;
use serde::Serialize;

use crate::tasks::StageRunner;
use crate::{Context, OpsError};

/// The work dir store and key of a `plan.json` URL (`…/work/plan.json` or the work dir itself).
fn locate(plan_url: &str) -> Result<(Store, String), OpsError> {
    let trimmed = plan_url.trim_end_matches('/');
    let (dir, key) = match trimmed.rsplit_once('/') {
        Some((dir, name)) if name.ends_with(".json") => (dir.to_string(), name.to_string()),
        _ => (trimmed.to_string(), "plan.json".to_string()),
    };
    let store = Store::open(&dir)?;
    Ok((store, key))
}

/// A local path as an absolute one, symbolic links of its existing part resolved (the part
/// not created yet appended as written, `.` and `..` resolved); a URL with a scheme as it is.
/// What a plan stores, so that a worker started in any directory reads and writes the same
/// locations as the run that planned it.
#[must_use]
pub fn absolute_url(url: &str) -> String {
    if url.contains("://") || url.is_empty() {
        return url.to_string();
    }
    let Ok(absolute) = std::path::absolute(url) else {
        return url.to_string();
    };
    // Lexically first (`a/../b`), then the longest existing ancestor canonically.
    let mut clean = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let mut rest = Vec::new();
    let mut base = clean.as_path();
    let resolved = loop {
        if let Ok(real) = base.canonicalize() {
            break real;
        }
        match (base.file_name(), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => break clean.clone(),
        }
    };
    let mut out = resolved;
    for name in rest.iter().rev() {
        out.push(name);
    }
    out.to_string_lossy().into_owned()
}

/// Read the plan a URL names, refusing another format version or a plan that fails its
/// checks ([`Plan::validate`]). Relative locations in it (a hand-written plan; chunkmill
/// writes absolute ones) are taken relative to the plan's directory, never to the directory
/// the worker was started in.
///
/// # Errors
/// [`OpsError::Refused`] when there is no plan, it is of another version, or a field is
/// invalid (named).
pub fn load_plan(plan_url: &str) -> Result<(Store, Plan), OpsError> {
    let (store, key) = locate(plan_url)?;
    if let Some(dir) = store.local_path() {
        crate::work_files::check_regular(&dir.join(&key), "the plan")?;
    }
    let bytes = store
        .get(&key)?
        .ok_or_else(|| OpsError::Refused(format!("{}: no plan there", store.join(&key))))?;
    let mut plan = Plan::from_json(&String::from_utf8_lossy(&bytes)).about(store.join(&key))?;
    let base = absolute_url(store.url());
    for url in plan.urls_mut() {
        if !url.contains("://") && !std::path::Path::new(url.as_str()).is_absolute() {
            let joined = if base.contains("://") {
                format!("{}/{url}", base.trim_end_matches('/'))
            } else {
                std::path::Path::new(&base)
                    .join(url.as_str())
                    .to_string_lossy()
                    .into_owned()
            };
            *url = absolute_url(&joined);
        }
    }
    Ok((store, plan))
}

/// Parse `A..B` (B excluded), `A..=B` or a single task `A`.
///
/// # Errors
/// [`OpsError::Usage`] echoing the input.
pub fn parse_tasks(text: &str) -> Result<Range<u64>, OpsError> {
    let bad = || {
        OpsError::Usage(format!(
            "invalid task range '{text}': expected A..B (B excluded), A..=B or A"
        ))
    };
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    if let Some((a, b)) = text.split_once("..=") {
        Ok(num(a)?..num(b)?.checked_add(1).ok_or_else(bad)?)
    } else if let Some((a, b)) = text.split_once("..") {
        Ok(num(a)?..num(b)?)
    } else {
        let a = num(text)?;
        Ok(a..a + 1)
    }
}

/// Which tasks of a stage a worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskSelection {
    /// These tasks.
    Range(Range<u64>),
    /// The `index`-th batch of `size` tasks (the last one shorter): what an array element of a
    /// batch engine runs, its index taken from `SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`
    /// or `AWS_BATCH_JOB_ARRAY_INDEX`.
    Batch { size: u64, index: u64 },
}

impl TaskSelection {
    /// The batch named by the environment variable `var`.
    ///
    /// # Errors
    /// [`OpsError::Usage`] when the variable is unset or not a number, or `size` is 0.
    pub fn batch_from_env(size: u64, var: &str) -> Result<Self, OpsError> {
        if size == 0 {
            return Err(OpsError::Usage("--batch must be at least 1".into()));
        }
        let value = std::env::var(var)
            .map_err(|_| OpsError::Usage(format!("--index-env {var}: the variable is not set")))?;
        let index = value.trim().parse().map_err(|_| {
            OpsError::Usage(format!("--index-env {var}: '{value}' is not a task index"))
        })?;
        Ok(Self::Batch { size, index })
    }

    /// The task range in a stage of `tasks` tasks; a batch past the end is refused.
    ///
    /// # Errors
    /// [`OpsError::Refused`] for a batch that starts past the stage's last task.
    pub fn resolve(&self, tasks: u64) -> Result<Range<u64>, OpsError> {
        match self {
            Self::Range(r) if r.start >= r.end || r.end > tasks => Err(OpsError::Refused(format!(
                "--tasks {}..{}: the stage has tasks 0..{tasks}",
                r.start, r.end
            ))),
            Self::Range(r) => Ok(r.clone()),
            Self::Batch { size, index } => {
                let start = index.saturating_mul(*size);
                if start >= tasks {
                    return Err(OpsError::Refused(format!(
                        "batch {index} of {size} tasks starts at task {start}, but the stage has {tasks} tasks"
                    )));
                }
                Ok(start..start.saturating_add(*size).min(tasks))
            }
        }
    }
}

/// Run `tasks` of stage `stage` (its name or index) of the plan at `plan_url`, skipping
/// those already marked done, with the plan's memory budget for this process.
///
/// # Errors
/// [`OpsError::Refused`] for a missing plan, another plan version, an unknown stage or range;
/// [`OpsError::Failed`] when tasks fail after `retries`.
pub fn run_worker(
    plan_url: &str,
    stage: &str,
    tasks: &TaskSelection,
    workers: usize,
    retries: u32,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, OpsError> {
    let (work, plan) = load_plan(plan_url)?;
    let index = plan
        .stages
        .iter()
        .position(|s| s.name == stage)
        .or_else(|| {
            stage
                .parse::<usize>()
                .ok()
                .filter(|&i| i < plan.stages.len())
        })
        .ok_or_else(|| {
            let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
            OpsError::Refused(format!(
                "plan {}: no stage '{stage}'; stages: {}",
                plan.plan_id,
                names.join(", ")
            ))
        })?;
    let tasks = tasks.resolve(plan.stages[index].tasks())?;
    let budget = chunkmill_exec::budget::Budget::measured(plan.max_mem);
    budget
        .admit(plan.stages[index].projected_mem)
        .map_err(|e| {
            OpsError::Refused(format!(
                "plan {}: stage '{}': {e}",
                plan.plan_id, plan.stages[index].name
            ))
        })?;
    let capacity = budget.task_budget;
    let mut options = RunOptions::new(workers, capacity);
    options.retries = retries;
    let markers = Markers::new(work, &plan.plan_id);
    run_stage_slice(
        &plan,
        index,
        tasks,
        // A copy of a task may run in another worker: pieces stay until the job's cleanup.
        &StageRunner::for_plan(&plan, false),
        &markers,
        &options,
        on_event,
    )
    .about(format_args!("plan {}", plan.plan_id))
}

/// Progress of one stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    /// Stage name (markers live under it).
    pub name: String,
    /// What it does.
    pub label: String,
    /// Tasks in the stage.
    pub tasks: u64,
    /// Tasks marked done.
    pub done: u64,
    /// Tasks not yet done.
    pub pending: u64,
}

/// Progress of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunStatus {
    /// The plan id.
    pub plan_id: String,
    /// The job.
    pub job: String,
    /// True when the run finished (its completion record exists).
    pub complete: bool,
    /// Per stage.
    pub stages: Vec<StageStatus>,
}

/// Read the progress of the run whose work dir is `work_dir`.
///
/// # Errors
/// [`OpsError::Refused`] when there is no plan there.
pub fn status(work_dir: &str) -> Result<RunStatus, OpsError> {
    let (work, plan) = load_plan(work_dir)?;
    // After the plan (a plan.json path is not a work dir), before the markers are read.
    crate::work_files::check_work_dir(work.url())?;
    let complete = work.exists(&format!("{}/complete.json", plan.plan_id))?;
    let markers = Markers::new(work, &plan.plan_id);
    let mut stages = Vec::new();
    for stage in &plan.stages {
        let done = if complete {
            stage.tasks()
        } else {
            markers.marked(&stage.name)?.len() as u64
        };
        stages.push(StageStatus {
            name: stage.name.clone(),
            label: stage.label.clone(),
            tasks: stage.tasks(),
            done,
            pending: stage.tasks().saturating_sub(done),
        });
    }
    Ok(RunStatus {
        plan_id: plan.plan_id.clone(),
        job: plan.job.clone(),
        complete,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A copy stage from `input_url` to `output_url`, 10 elements in chunks and blocks of 5.
    fn copy_plan(input_url: &str, output_url: &str) -> Result<Plan, Box<dyn std::error::Error>> {
        use chunkmill_grid::Grid;
        use chunkmill_plan::{CopyStage, Endpoint, Stage, StageKind};
        let grid = Grid::regular(&[10], &[5])?;
        let zarr = |url: &str| Endpoint::Zarr {
            url: url.into(),
            path: "a".into(),
            grid: grid.clone(),
        };
        let stage = Stage {
            name: "000-0".into(),
            label: "a".into(),
            kind: StageKind::Copy(CopyStage {
                input: zarr(input_url),
                output: zarr(output_url),
                blocks: grid.clone(),
                item_size: 4,
            }),
            projected_mem: 100,
            bytes_read: 40,
            bytes_written: 40,
        };
        Ok(Plan::new("rechunk", 1 << 30, vec![stage], vec![]))
    }

    #[test]
    fn plan_relative_urls_resolve_against_the_plan_directory_not_the_worker_cwd() -> TestResult {
        let dir = tempfile::tempdir()?;
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work)?;
        std::fs::write(
            work.join("plan.json"),
            copy_plan("../src.zarr", "t.zarr")?.to_json()?,
        )?;
        let (_, plan) = load_plan(&work.to_string_lossy())?;
        let urls: Vec<String> = plan
            .clone()
            .urls_mut()
            .into_iter()
            .map(|u| u.clone())
            .collect();
        let root = dir.path().canonicalize()?;
        assert_eq!(
            urls,
            vec![
                root.join("src.zarr").to_string_lossy().into_owned(),
                root.join("work")
                    .join("t.zarr")
                    .to_string_lossy()
                    .into_owned(),
            ]
        );
        Ok(())
    }

    #[test]
    fn worker_refuses_a_hand_edited_plan_with_block_size_0() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_string_lossy().into_owned();
        let json = copy_plan(&format!("{root}/s.zarr"), &format!("{root}/t.zarr"))?
            .to_json()?
            .replacen("\"size\": 5", "\"size\": 0", 1);
        std::fs::write(dir.path().join("plan.json"), json)?;
        let result = run_worker(&root, "000-0", &TaskSelection::Range(0..1), 1, 0, &|_| {});
        assert!(
            matches!(&result, Err(e) if e.kind() == crate::ErrorKind::Refused
                && e.to_string().contains("chunk size 0")),
            "{result:?}"
        );
        // Nothing was written beside the plan.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn absolute_urls_resolve_dot_dot_and_keep_schemes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = dir.path().canonicalize()?;
        let messy = format!("{}/a/../b/./c.zarr", dir.path().display());
        assert_eq!(
            absolute_url(&messy),
            root.join("b/c.zarr").to_string_lossy()
        );
        assert_eq!(absolute_url("s3://bucket/x.zarr"), "s3://bucket/x.zarr");
        assert_eq!(absolute_url("memory://m"), "memory://m");
        Ok(())
    }

    #[test]
    fn task_ranges() -> TestResult {
        assert_eq!(parse_tasks("3..7")?, 3..7);
        assert_eq!(parse_tasks("3..=7")?, 3..8);
        assert_eq!(parse_tasks("5")?, 5..6);
        assert!(parse_tasks("x..2").is_err());
        Ok(())
    }
}
