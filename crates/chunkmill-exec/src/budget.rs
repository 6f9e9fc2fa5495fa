//! The memory model of a job, one for the planner and the run: `--max-mem` is the process's
//! resident memory at its peak, and splits into
//!
//! ```text
//!  max_mem = baseline + reserve + what the tasks may hold together (task budget)
//! ```
//!
//! - **baseline**: what the process holds before any task (code and libraries mapped in,
//!   runtime, what reading the inputs left). The planner counts a fixed
//!   [`BASELINE_ALLOWANCE`], so the same request always gives the same plan (and plan id,
//!   which `--resume` relies on). The run, and `plan` after planning, measure the process
//!   ([`crate::memory::held_memory`]) and count that instead when it is more; both then refuse
//!   the same way, before anything is written.
//! - **reserve**: [`RESERVE_FIXED`] plus a [`RESERVE_SHARE`]th of the budget, kept free of task
//!   reservations for what no task owns (allocator slack, progress, listings).
//! - **task budget**: the [`crate::MemoryPool`] admits tasks while their projections (each
//!   stage's `projected_mem`) fit in it together.
//!
//! A task that cannot fit the task budget alone is refused with the smallest budget that
//! would fit it ([`max_mem_for`]).

/// Bytes kept free of task reservations for what no task owns: allocator slack, progress,
/// listing buffers; plus [`RESERVE_SHARE`] of the budget.
pub const RESERVE_FIXED: u64 = 24 << 20;
/// The share of `--max-mem` (1/32) kept free besides [`RESERVE_FIXED`].
pub const RESERVE_SHARE: u64 = 32;

/// What the planner assumes the process holds before any task. Measured on the binary before
/// its first task (Linux, glibc): the release build 13 MB (2.3 MB anonymous, the rest code and
/// libraries mapped in), the debug build 20 MB, the Python package's `chunkmill` script about
/// 25 MB; the allowance covers them with room for what reading the inputs leaves.
pub const BASELINE_ALLOWANCE: u64 = 32 << 20;
/// Bytes a task holds besides its buffers: codec contexts, bookkeeping.
pub const TASK_OVERHEAD: u64 = 1 << 20;

/// The baseline of a process that holds `held` before any task: the allowance, or its
/// anonymous memory when that is more. Its pages mapped from files (code, libraries) are left
/// to the allowance and the reserve: how many are resident after the same work varies by a
/// megabyte or more with the page cache, which made `plan` and the run disagree near the
/// allowance (the wheel's script with the debug extension measured 34.5 MB in `plan` and less
/// than 33.6 MB in the run), and once made a convert fit on one machine and not on CI.
#[must_use]
pub fn measured_baseline(held: crate::memory::Held) -> u64 {
    BASELINE_ALLOWANCE.max(held.anonymous)
}

/// Budgets suggested to the user are whole decimal megabytes, rounded up, so that the figure
/// printed is one `--max-mem` accepts and that fits.
const SUGGESTION_STEP: u64 = 1_000_000;

/// Bytes of `max_mem` kept free of task reservations.
#[must_use]
pub fn reserve(max_mem: u64) -> u64 {
    RESERVE_FIXED + max_mem / RESERVE_SHARE
}

/// How `--max-mem` splits into a baseline, a reserve and what the tasks may hold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The budget, bytes (`--max-mem`).
    pub max_mem: u64,
    /// Bytes the tasks may hold together.
    pub task_budget: u64,
    /// Process memory before any task.
    pub baseline: u64,
    /// Bytes kept free of task reservations.
    pub reserve: u64,
}

impl Budget {
    /// The split of `max_mem` when the process holds `baseline` before any task.
    #[must_use]
    pub fn with_baseline(max_mem: u64, baseline: u64) -> Self {
        let reserve = reserve(max_mem);
        Self {
            max_mem,
            task_budget: max_mem.saturating_sub(baseline + reserve),
            baseline,
            reserve,
        }
    }

    /// The planner's split: the fixed [`BASELINE_ALLOWANCE`], so that a request always gives
    /// the same plan.
    #[must_use]
    pub fn for_max_mem(max_mem: u64) -> Self {
        Self::with_baseline(max_mem, BASELINE_ALLOWANCE)
    }

    /// The run's split, with the baseline [`measured_baseline`] gives. For the binary this is
    /// exactly the planner's split, so every task the planner accepted is admitted.
    #[must_use]
    pub fn measured(max_mem: u64) -> Self {
        Self::with_baseline(max_mem, measured_baseline(crate::memory::held_memory()))
    }

    /// Whether a task projected to hold `task_bytes` fits; if not, why, with the budget
    /// that would fit it.
    ///
    /// # Errors
    /// [`DoesNotFit`] when `task_bytes` is more than the task budget.
    pub fn admit(&self, task_bytes: u64) -> Result<(), DoesNotFit> {
        if task_bytes <= self.task_budget {
            return Ok(());
        }
        Err(DoesNotFit {
            task_bytes,
            budget: *self,
            fits: max_mem_for(task_bytes, self.baseline),
        })
    }
}

/// A task larger than what `--max-mem` leaves for tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "one task needs {task} but --max-mem {max_mem} leaves {tasks} for tasks (process baseline {baseline}, reserve {reserve}); --max-mem {fits_mb}MB would fit",
    task = mb(*task_bytes),
    max_mem = mb(budget.max_mem),
    tasks = mb(budget.task_budget),
    baseline = mb(budget.baseline),
    reserve = mb(budget.reserve),
    fits_mb = fits / SUGGESTION_STEP
)]
pub struct DoesNotFit {
    /// The task's projected memory.
    pub task_bytes: u64,
    /// The split that refused it.
    pub budget: Budget,
    /// The smallest budget in whole megabytes whose split, with the same baseline, holds it.
    pub fits: u64,
}

/// Bytes as decimal megabytes with one decimal, as the command prints sizes.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The smallest budget, in whole decimal megabytes (returned in bytes), whose split leaves
/// `task_bytes` for tasks beside `baseline` and the reserve.
#[must_use]
pub fn max_mem_for(task_bytes: u64, baseline: u64) -> u64 {
    // max_mem - max_mem / SHARE ≥ held, and max_mem - max_mem / SHARE grows with max_mem.
    let held = task_bytes + baseline + RESERVE_FIXED;
    let exact = (held * RESERVE_SHARE).div_ceil(RESERVE_SHARE - 1);
    let mut fits = exact.div_ceil(SUGGESTION_STEP) * SUGGESTION_STEP;
    while Budget::with_baseline(fits, baseline).task_budget < task_bytes {
        fits += SUGGESTION_STEP;
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn a_process_holding_more_than_the_allowance_counts_what_it_holds() {
        use crate::memory::Held;
        let binary = Held {
            anonymous: 3 * MB,
            file: 31 * MB,
        };
        assert_eq!(measured_baseline(binary), BASELINE_ALLOWANCE);
        let python = Held {
            anonymous: 58 * MB,
            file: 33 * MB,
        };
        assert_eq!(measured_baseline(python), 58 * MB);
    }

    #[test]
    fn the_parts_add_up_to_the_budget() {
        for max_mem in [64 * MB, 96 * MB, 512 * MB, 4 << 30] {
            let b = Budget::for_max_mem(max_mem);
            assert_eq!(b.baseline + b.reserve + b.task_budget, max_mem);
            assert_eq!(b.baseline, BASELINE_ALLOWANCE);
        }
    }

    #[test]
    fn a_budget_below_baseline_and_reserve_leaves_nothing() {
        let b = Budget::for_max_mem(40 * MB);
        assert_eq!(b.task_budget, 0);
        assert!(b.admit(1).is_err());
    }

    #[test]
    fn the_suggested_budget_fits_and_one_megabyte_less_does_not() {
        for baseline in [BASELINE_ALLOWANCE, 58 * MB, 200 * MB] {
            for task in [1, 9_100_000, 33_400_000, 187 * MB, 3 << 30] {
                let fits = max_mem_for(task, baseline);
                assert_eq!(fits % MB, 0, "whole megabytes");
                assert!(Budget::with_baseline(fits, baseline).admit(task).is_ok());
                assert!(Budget::with_baseline(fits - MB, baseline)
                    .admit(task)
                    .is_err());
            }
        }
    }

    #[test]
    fn a_refusal_names_the_budget_that_fits() {
        let budget = Budget::with_baseline(70 * MB, 58 * MB);
        let refused = budget.admit(9_100_000).unwrap_err();
        assert_eq!(refused.fits, max_mem_for(9_100_000, 58 * MB));
        let message = refused.to_string();
        assert!(
            message.contains(&format!("--max-mem {}MB would fit", refused.fits / MB)),
            "{message}"
        );
        assert!(message.contains("process baseline 58.0 MB"), "{message}");
    }

    #[test]
    fn the_run_admits_what_the_planner_planned_while_the_process_is_within_its_allowance() {
        // The binary holds far less than the allowance before any task, so its run splits the
        // budget exactly as the planner did.
        assert!(crate::memory::held_memory().anonymous <= BASELINE_ALLOWANCE);
        for max_mem in [64 * MB, 80 * MB, 96 * MB, 256 * MB] {
            assert_eq!(Budget::measured(max_mem), Budget::for_max_mem(max_mem));
        }
    }
}
