//! The memory policy of a job: how `--max-mem` splits into what the tasks may hold together
//! (planned against, and admitted by the [`crate::MemoryPool`]), the process baseline and a
//! reserve kept free of task reservations.

/// Bytes kept free of task reservations for what no task owns: allocator slack, progress,
/// listing buffers; plus [`RESERVE_SHARE`] of the budget.
pub const RESERVE_FIXED: u64 = 24 << 20;
/// The share of `--max-mem` (1/32) kept free besides [`RESERVE_FIXED`].
pub const RESERVE_SHARE: u64 = 32;

/// Bytes of `max_mem` kept free of task reservations.
#[must_use]
pub fn reserve(max_mem: u64) -> u64 {
    RESERVE_FIXED + max_mem / RESERVE_SHARE
}

/// The smallest budget that leaves `held` bytes (baseline and tasks) beside its reserve.
#[must_use]
pub fn budget_for(held: u64) -> u64 {
    (held + RESERVE_FIXED) * RESERVE_SHARE / (RESERVE_SHARE - 1) + 1
}

/// What the planner assumes the process holds before any task (code, runtime, thread stacks).
/// A fixed figure, not the measured one, so the same request always gives the same plan (and
/// plan id, which `--resume` relies on); the run measures the real baseline and admits tasks
/// within what is really left.
pub const BASELINE_ALLOWANCE: u64 = 32 << 20;
/// Bytes a task holds besides its buffers: codec contexts, bookkeeping.
pub const TASK_OVERHEAD: u64 = 1 << 20;

/// The memory split of a job: what its tasks may hold together, beside the process baseline
/// and a reserve.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Bytes the tasks may hold together.
    pub task_budget: u64,
    /// Process memory before any task.
    pub baseline: u64,
    /// Bytes kept free of task reservations.
    pub reserve: u64,
}

impl Budget {
    /// The split of `max_mem`. The planner counts a fixed baseline allowance, not the
    /// measured one, so the same request always gives the same plan (and plan id).
    #[must_use]
    pub fn for_max_mem(max_mem: u64) -> Self {
        let reserve = reserve(max_mem);
        Self {
            task_budget: max_mem.saturating_sub(BASELINE_ALLOWANCE + reserve),
            baseline: baseline(),
            reserve,
        }
    }
}

/// What the process counts as held before any task: the planner's allowance, or what it holds
/// now if that is more (anonymous memory, measured once the allocator has given back its free
/// pages). The allowance also covers the executable's resident code, which is not measured
/// because how much of it is resident depends on the page cache.
fn baseline() -> u64 {
    BASELINE_ALLOWANCE.max(crate::memory::held_memory())
}

/// What the tasks of this process may reserve together under `max_mem`: what is left after the
/// [`baseline`], measured now, and the reserve. Returns the baseline too, for the error that
/// refuses a run.
#[must_use]
pub fn task_capacity(max_mem: u64) -> (u64, u64) {
    let baseline = baseline();
    let capacity = max_mem.saturating_sub(baseline + reserve(max_mem));
    (baseline, capacity)
}
