//! `--resume` with other run flags than the first run.
//!
//! A plan's tasks are cut for the budget of one task, `--max-mem` shared by up to `--workers`
//! tasks; both are in the plan id. Resuming with fewer (or more) workers is normal, and the
//! stored plan stays valid: memory admission keeps any number of its tasks within the budget.
//! So a resume whose plan differs from the stored one looks for the worker count the stored
//! plan was cut for, plans with it, and runs that plan with the workers asked for now. Only a
//! job that differs in anything else is refused, and the message says what differs.

use chunkmill_ops::job::{human, JobOptions};
use chunkmill_plan::{Plan, StageKind};

use crate::Failure;

/// Worker counts tried when looking for the one a stored plan was made with: every count up
/// to 64, then powers of two (the counts people type).
fn candidates() -> impl Iterator<Item = usize> {
    (1..=64).chain((7..=12).map(|p| 1usize << p))
}

/// The job to run: `planned`, unless `run` resumes (without `--overwrite`) a work dir whose
/// plan (`stored`, read only then) is the same job cut for another worker count — then that
/// job planned again with that count (the run keeps the workers asked for). `replan(w)` plans
/// the job as asked but with `w` workers. Every job's plan may follow its workers (blocks,
/// folds, concurrency), so every job goes through here.
///
/// # Errors
/// A refusal (exit 3) naming what differs, when no worker count gives the stored plan.
pub fn reconcile<J>(
    planned: J,
    run: &JobOptions,
    stored: impl FnOnce() -> Option<Plan>,
    id_of: impl Fn(&J) -> &Plan,
    replan: impl Fn(usize) -> Result<J, Failure>,
) -> Result<J, Failure> {
    if !run.resume || run.overwrite {
        return Ok(planned);
    }
    let Some(stored) = stored() else {
        return Ok(planned);
    };
    let stored = &stored;
    let workers = run.workers;
    if id_of(&planned).plan_id == stored.plan_id {
        return Ok(planned);
    }
    for w in candidates().filter(|&w| w != workers) {
        let Ok(job) = replan(w) else {
            continue;
        };
        if id_of(&job).plan_id == stored.plan_id {
            eprintln!(
                "chunkmill: resuming plan {}: it was cut for another worker count (--workers {w} gives the same plan); running {workers} at once",
                stored.plan_id
            );
            return Ok(job);
        }
    }
    let new = id_of(&planned);
    let differences = differences(stored, new);
    Err(Failure::refused(format!(
        "cannot resume: the work dir holds plan {} and this command plans {}; what differs (stored → now): {}. Rerun with the flags of the first run (--max-mem {} and its --workers, --chunks, --codec, …), or give another --work-dir, or --overwrite to start over",
        stored.plan_id,
        new.plan_id,
        if differences.is_empty() {
            "the plan's content (another chunkmill version?)".to_string()
        } else {
            differences.join("; ")
        },
        human(stored.max_mem).replace(' ', ""),
    )))
}

/// What differs between two plans, in words, stored value first.
pub fn differences(stored: &Plan, new: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if stored.job != new.job {
        out.push(format!("job {} → {}", stored.job, new.job));
    }
    if stored.max_mem != new.max_mem {
        out.push(format!(
            "--max-mem {} → {}",
            human(stored.max_mem),
            human(new.max_mem)
        ));
    }
    if stored.chunkmill_version != new.chunkmill_version {
        out.push(format!(
            "chunkmill version {} → {}",
            stored.chunkmill_version, new.chunkmill_version
        ));
    }
    if stored.stages.len() != new.stages.len() {
        out.push(format!(
            "{} stages → {} (the strategy, chosen for the budget and workers)",
            stored.stages.len(),
            new.stages.len()
        ));
    }
    for (a, b) in stored.stages.iter().zip(&new.stages) {
        let (StageKind::Copy(ca), StageKind::Copy(cb)) = (&a.kind, &b.kind) else {
            if a.name != b.name {
                out.push(format!("stage {} → {}", a.name, b.name));
            }
            continue;
        };
        let name = &a.name;
        if ca.input.describe() != cb.input.describe() {
            out.push(format!(
                "stage {name} reads {} → {}",
                ca.input.describe(),
                cb.input.describe()
            ));
        }
        if ca.output.describe() != cb.output.describe() {
            out.push(format!(
                "stage {name} writes {} → {}",
                ca.output.describe(),
                cb.output.describe()
            ));
        }
        let (ga, gb) = (ca.output.grid(), cb.output.grid());
        if ga != gb {
            out.push(format!(
                "stage {name} writes chunks {:?} of {:?} → {:?} of {:?}",
                ga.max_chunk_shape(),
                ga.shape(),
                gb.max_chunk_shape(),
                gb.shape()
            ));
        }
        let (ba, bb) = (ca.blocks.max_chunk_shape(), cb.blocks.max_chunk_shape());
        if ba != bb {
            out.push(format!(
                "stage {name} task blocks {ba:?} → {bb:?} ({} → {} tasks; blocks follow --max-mem and --workers)",
                a.tasks(),
                b.tasks()
            ));
        }
    }
    out
}
