//! The threads executor's scheduler: one pool of threads for every stage of a plan. A task is
//! ready once what it reads is written ([`crate::order`]): a task that copies from pieces waits
//! only for the tasks that write those pieces, a stage linked otherwise waits for the whole of
//! the stage it depends on, and stages that share no data (the arrays of a group) run side by
//! side. Each task reserves its own stage's projected memory before it starts, so admission
//! stays exact however stages mix.
//!
//! A task's readers are let go only once its marker is written and no copy of it (a backup
//! or the straggler it replaced) is still running, so a reader never sees a piece being
//! rewritten and a resumed run never trusts one that was not completed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::memory::{self, MemoryPool, Reservation};
use crate::order::{producers, StageWaits};
use crate::{StageRun, TaskRunner};

/// What a thread gets to do next.
enum Pick {
    /// Start task `.1` of run `.0`.
    Task(usize, u64),
    /// Nothing is ready yet, but tasks are running: look for a straggler to back up, or wait.
    Idle,
}

/// The queue every thread picks from.
struct Queue {
    /// Ready tasks, earliest stage first (so producers stay ahead of their readers).
    ready: BTreeSet<(usize, u64)>,
    /// Per run, tasks that still wait for producer tasks, with how many.
    waiting: Vec<HashMap<u64, usize>>,
    /// Per run, the readers of each of its tasks: (run, task).
    readers: Vec<HashMap<u64, Vec<(usize, u64)>>>,
    /// Per run, how many whole stages it still waits for.
    gates: Vec<usize>,
    /// Per run, the runs that wait for the whole of it.
    gated: Vec<Vec<usize>>,
    /// Per run, tasks whose producers are done but whose stage gate is still closed.
    held: Vec<Vec<u64>>,
    /// Per run, tasks not yet complete.
    left: Vec<usize>,
    /// Copies of tasks running (backups counted), or about to be claimed as backups.
    running: usize,
}

/// The stages of one run and the queue their threads share.
pub(crate) struct Scheduler<'a> {
    runs: Vec<StageRun<'a>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    pool: &'a MemoryPool,
    runner: &'a dyn TaskRunner,
    /// Per run, how many of its tasks fit the pool together: only threads numbered below it
    /// run the stage's tasks (see [`Scheduler::run`]).
    fits: Vec<usize>,
}

impl<'a> Scheduler<'a> {
    /// `runs[r]` waits for what `waits[r]` says, in run indices (`pieces_from` being the run
    /// whose pieces it reads).
    pub(crate) fn new(
        runs: Vec<StageRun<'a>>,
        waits: &[StageWaits],
        pool: &'a MemoryPool,
        runner: &'a dyn TaskRunner,
    ) -> Self {
        let n = runs.len();
        let mut queue = Queue {
            ready: BTreeSet::new(),
            waiting: vec![HashMap::new(); n],
            readers: vec![HashMap::new(); n],
            gates: vec![0; n],
            gated: vec![Vec::new(); n],
            held: vec![Vec::new(); n],
            left: runs.iter().map(|r| r.state.pending.len()).collect(),
            running: 0,
        };
        for (r, wait) in waits.iter().enumerate() {
            for &before in &wait.stages {
                if queue.left[before] > 0 {
                    queue.gates[r] += 1;
                    queue.gated[before].push(r);
                }
            }
        }
        for (r, run) in runs.iter().enumerate() {
            let from = waits[r].pieces_from.filter(|&p| queue.left[p] > 0);
            let producer_pending: Option<std::collections::HashSet<u64>> =
                from.map(|p| runs[p].state.pending.iter().copied().collect());
            for &task in &run.state.pending {
                let count = match (from, &producer_pending) {
                    (Some(p), Some(pending)) => {
                        let mut count = 0;
                        for producer in producers(runs[p].stage, run.stage, task) {
                            if pending.contains(&producer) {
                                queue.readers[p]
                                    .entry(producer)
                                    .or_default()
                                    .push((r, task));
                                count += 1;
                            }
                        }
                        count
                    }
                    _ => 0,
                };
                if count > 0 {
                    queue.waiting[r].insert(task, count);
                } else if queue.gates[r] > 0 {
                    queue.held[r].push(task);
                } else {
                    queue.ready.insert((r, task));
                }
            }
        }
        let fits = runs
            .iter()
            .map(|run| {
                let fit = pool.capacity() / run.stage.projected_mem.max(1);
                usize::try_from(fit).unwrap_or(usize::MAX).max(1)
            })
            .collect();
        Self {
            fits,
            runs,
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            pool,
            runner,
        }
    }

    /// The runs, for their summaries once every thread has ended.
    pub(crate) fn into_runs(self) -> (Vec<StageRun<'a>>, Vec<usize>) {
        let left = self.queue.into_inner().left;
        (self.runs, left)
    }

    /// Runs the tasks on `threads` threads until none is ready and none is running.
    ///
    /// Thread `k` runs a stage's tasks only when `k` is below the number of them that fit the
    /// pool together. glibc gives each thread its own arena and keeps what a task freed there
    /// for the thread's next task; threads that took turns at the one task that fits would
    /// each keep a task's worth resident beyond what the pool admits (121 MB at `--max-mem
    /// 96MB` with 33 MB tasks). Other stages' tasks still use every thread.
    pub(crate) fn run(&self, threads: usize) {
        for (r, run) in self.runs.iter().enumerate() {
            if self.queue.lock().left[r] == 0 {
                run.finished();
            }
        }
        std::thread::scope(|scope| {
            for k in 0..threads {
                scope.spawn(move || self.work(k));
            }
        });
        memory::return_free_heap();
    }

    fn stopped(&self) -> bool {
        self.runs
            .iter()
            .any(|r| r.state.stop.load(Ordering::Relaxed) || r.options.interrupted())
    }

    /// The first ready task thread `k` may run.
    fn eligible(&self, queue: &Queue, k: usize) -> Option<(usize, u64)> {
        queue.ready.iter().copied().find(|&(r, _)| k < self.fits[r])
    }

    fn next(&self, k: usize) -> Option<Pick> {
        let mut queue = self.queue.lock();
        if self.stopped() {
            return None;
        }
        if let Some(pick) = self.eligible(&queue, k) {
            queue.ready.remove(&pick);
            queue.running += 1;
            return Some(Pick::Task(pick.0, pick.1));
        }
        // Ready tasks this thread may not run are another thread's (thread 0 may run all);
        // this one stays for the tasks they make ready.
        (queue.running > 0 || !queue.ready.is_empty()).then_some(Pick::Idle)
    }

    /// One thread: tasks as they become ready, backups of stragglers while nothing is. A
    /// thread keeps its reservation from one task to the next of the same stage (what it
    /// keeps for reuse between them, a spare block, is then always reserved); before a task
    /// of another stage, or while it waits, it gives both back.
    fn work(&self, k: usize) {
        let mut kept = None;
        while let Some(pick) = self.next(k) {
            match pick {
                Pick::Task(r, task) => {
                    let run = &self.runs[r];
                    let reservation = match kept.take() {
                        Some((same, reservation)) if same == r => reservation,
                        Some((_, reservation)) => self.switch_stage(reservation, run),
                        None => self.pool.reserve(run.stage.projected_mem),
                    };
                    run.start(task);
                    kept = Some((r, reservation));
                    self.copy_ended(r, task);
                }
                Pick::Idle => {
                    if let Some(reservation) = kept.take() {
                        self.runner.release_idle();
                        drop(reservation);
                    }
                    if !self.backup(k) {
                        let mut queue = self.queue.lock();
                        if self.eligible(&queue, k).is_none()
                            && (queue.running > 0 || !queue.ready.is_empty())
                        {
                            self.wake.wait_for(&mut queue, Duration::from_millis(10));
                        }
                    }
                }
            }
        }
        self.runner.release_idle();
        drop(kept);
        self.wake.notify_all();
    }

    /// The reservation of a thread going from a task of one stage to one of `run`'s. Resized
    /// in place when the pool allows it now, the thread keeping its spare buffers within the
    /// new size: a block of the last stage's size is reshaped in place, where a fresh one
    /// cost a page fault and a page clear per page each time a thread went from one array's
    /// stage to another's. Otherwise everything is given back and the thread waits for the
    /// new size as any other.
    fn switch_stage<'p>(
        &'p self,
        mut reservation: Reservation<'p>,
        run: &StageRun,
    ) -> Reservation<'p> {
        let bytes = run.stage.projected_mem;
        if bytes <= reservation.bytes() {
            // Trimmed before the reservation shrinks: what the thread keeps is always reserved.
            self.runner.keep_idle_within(bytes);
            reservation.try_resize(bytes);
            return reservation;
        }
        if reservation.try_resize(bytes) {
            self.runner.keep_idle_within(bytes);
            return reservation;
        }
        self.runner.release_idle();
        drop(reservation);
        // The spare buffers of the last stage's sizes are nobody's now.
        memory::return_free_heap();
        self.pool.reserve(bytes)
    }

    /// Runs a backup of a straggling task of any stage, on memory that is free now; false
    /// when there is none to run.
    fn backup(&self, k: usize) -> bool {
        // Counted as running before it is claimed, so no thread sees the run as over while
        // the straggler it backs up ends in between.
        self.queue.lock().running += 1;
        for (r, run) in self.runs.iter().enumerate() {
            if k >= self.fits[r] {
                continue;
            }
            let claim = run
                .state
                .straggler(|| self.pool.try_reserve(run.stage.projected_mem));
            if let Ok(Some((task, cancel, reservation))) = claim {
                tracing::info!(stage = %run.stage.name, task, "backup of a straggling task");
                run.run_copy(task, true, &cancel);
                drop(reservation);
                self.runner.release_idle();
                self.copy_ended(r, task);
                return true;
            }
        }
        self.queue.lock().running -= 1;
        false
    }

    /// A copy of task `task` of run `r` ended: once the task is complete (marker written, no
    /// copy left running), the tasks that read it may start.
    fn copy_ended(&self, r: usize, task: u64) {
        let mut finished_runs = Vec::new();
        let complete = {
            let mut queue = self.queue.lock();
            queue.running -= 1;
            let complete = self.runs[r].state.complete(task);
            if complete {
                release(&mut queue, r, task, &mut finished_runs);
            }
            complete
        };
        self.wake.notify_all();
        if complete {
            self.runner.task_complete(self.runs[r].stage, task);
        }
        for done in finished_runs {
            self.runs[done].finished();
        }
    }
}

/// Task `task` of run `r` is complete: its readers and, once its run is, the runs gated on it
/// may go. Runs that are now complete are added to `finished`.
fn release(queue: &mut Queue, r: usize, task: u64, finished: &mut Vec<usize>) {
    queue.left[r] -= 1;
    for (reader, t) in queue.readers[r].remove(&task).unwrap_or_default() {
        let Some(count) = queue.waiting[reader].get_mut(&t) else {
            continue;
        };
        *count -= 1;
        if *count == 0 {
            queue.waiting[reader].remove(&t);
            if queue.gates[reader] > 0 {
                queue.held[reader].push(t);
            } else {
                queue.ready.insert((reader, t));
            }
        }
    }
    if queue.left[r] > 0 {
        return;
    }
    finished.push(r);
    for g in std::mem::take(&mut queue.gated[r]) {
        queue.gates[g] -= 1;
        if queue.gates[g] == 0 {
            let held = std::mem::take(&mut queue.held[g]);
            queue.ready.extend(held.into_iter().map(|t| (g, t)));
        }
    }
}
