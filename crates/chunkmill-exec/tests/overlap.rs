//! The threads executor starts a task once what it reads is written, not at a stage barrier:
//! readers of intermediate pieces wait only for the tasks that write their pieces, independent
//! arrays run side by side, and every running task's projection stays within the budget.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chunkmill_exec::{run_plan, Cancel, ExecError, RunOptions, TaskError, TaskRunner, TaskStats};
use chunkmill_grid::Grid;
use chunkmill_plan::{CopyStage, Endpoint, PieceCodec, Plan, Stage, StageKind};
use chunkmill_store::{markers::Markers, Store};
use parking_lot::{Condvar, Mutex};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn zarr(url: &str, path: &str, grid: &Grid) -> Endpoint {
    Endpoint::Zarr {
        url: url.into(),
        path: path.into(),
        grid: grid.clone(),
    }
}

fn copy(name: &str, input: Endpoint, output: Endpoint, blocks: Grid, mem: u64) -> Stage {
    Stage {
        name: name.into(),
        label: name.into(),
        projected_mem: mem,
        bytes_read: 0,
        bytes_written: 0,
        kind: StageKind::Copy(CopyStage {
            input,
            output,
            blocks,
            item_size: 4,
        }),
    }
}

/// Array `array` copied through pieces: 2 producer tasks (rows 0..50, 50..100), then 4 reader
/// tasks (rows 0..50 × 2 columns: tasks 0 and 1 read producer 0 only, 2 and 3 producer 1).
fn through_pieces(array: &str, mems: (u64, u64)) -> Result<Vec<Stage>, chunkmill_grid::GridError> {
    let source = Grid::regular(&[100, 20], &[10, 20])?;
    let scratch = Endpoint::Pieces {
        url: "memory://scratch".into(),
        prefix: array.into(),
        grid: Grid::regular(&[100, 20], &[25, 10])?,
        codec: PieceCodec::Raw,
    };
    Ok(vec![
        copy(
            &format!("{array}-0"),
            zarr("memory://src", array, &source),
            scratch.clone(),
            Grid::regular(&[100, 20], &[50, 20])?,
            mems.0,
        ),
        copy(
            &format!("{array}-1"),
            scratch,
            zarr("memory://dst", array, &source),
            Grid::regular(&[100, 20], &[50, 10])?,
            mems.1,
        ),
    ])
}

/// Records what runs when; the task `hold` waits (up to 20 s) until task `until` has ended.
struct Recorder {
    projected: HashMap<String, u64>,
    hold: Option<((String, u64), (String, u64))>,
    fail: Option<(String, u64)>,
    state: Mutex<Seen>,
    changed: Condvar,
}

#[derive(Default)]
struct Seen {
    ended: Vec<(String, u64)>,
    /// For each task as it started: the tasks that had ended.
    ended_at_start: HashMap<(String, u64), HashSet<(String, u64)>>,
    held_now: u64,
    held_most: u64,
}

impl Recorder {
    fn new(plan: &Plan) -> Self {
        Self {
            projected: plan
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.projected_mem))
                .collect(),
            hold: None,
            fail: None,
            state: Mutex::new(Seen::default()),
            changed: Condvar::new(),
        }
    }

    fn position(&self, task: &(String, u64)) -> Option<usize> {
        self.state.lock().ended.iter().position(|t| t == task)
    }
}

impl TaskRunner for Recorder {
    fn run(&self, stage: &Stage, task: u64, _cancel: &Cancel) -> Result<TaskStats, TaskError> {
        let me = (stage.name.clone(), task);
        let mem = self.projected[&stage.name];
        {
            let mut seen = self.state.lock();
            let ended = seen.ended.iter().cloned().collect();
            seen.ended_at_start.insert(me.clone(), ended);
            seen.held_now += mem;
            seen.held_most = seen.held_most.max(seen.held_now);
        }
        if let Some((held, until)) = &self.hold {
            if *held == me {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut seen = self.state.lock();
                while !seen.ended.contains(until) && Instant::now() < deadline {
                    self.changed.wait_for(&mut seen, Duration::from_millis(50));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        let mut seen = self.state.lock();
        seen.held_now -= mem;
        if self.fail.as_ref() == Some(&me) {
            return Err(TaskError::failed("disk on fire"));
        }
        seen.ended.push(me);
        self.changed.notify_all();
        Ok(TaskStats::default())
    }
}

fn task(stage: &str, task: u64) -> (String, u64) {
    (stage.to_string(), task)
}

#[test]
fn a_reader_of_pieces_starts_once_its_producers_are_done_not_the_whole_stage() -> TestResult {
    let plan = Plan::new("overlap", 1000, through_pieces("a", (10, 10))?, vec![]);
    let markers = Markers::new(Store::open("memory://overlap-pieces")?, &plan.plan_id);
    let mut runner = Recorder::new(&plan);
    // Producer 1 ends only once reader 0 (which needs producer 0 alone) has: a barrier
    // between the stages would hold reader 0 back until producer 1's wait runs out.
    runner.hold = Some((task("a-0", 1), task("a-1", 0)));
    run_plan(&plan, &runner, &markers, &RunOptions::new(2, 1000), &|_| {})?;
    let reader = runner
        .position(&task("a-1", 0))
        .ok_or("reader 0 never ran")?;
    let producer = runner
        .position(&task("a-0", 1))
        .ok_or("producer 1 never ran")?;
    assert!(
        reader < producer,
        "reader 0 waited for producer 1, which writes none of its pieces"
    );
    // And no reader started before the producer of its pieces had ended.
    let seen = runner.state.lock();
    for (reader, producer) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        assert!(
            seen.ended_at_start[&task("a-1", reader)].contains(&task("a-0", producer)),
            "reader {reader} started before producer {producer} ended"
        );
    }
    assert_eq!(markers.marked("a-1")?.len(), 4);
    Ok(())
}

#[test]
fn independent_arrays_overlap_within_the_budget() -> TestResult {
    // Stage projections 60 and 50 of a budget of 120: any two tasks fit, three never do.
    let mut stages = through_pieces("a", (60, 50))?;
    stages.extend(through_pieces("b", (60, 50))?);
    let plan = Plan::new("overlap", 1000, stages, vec![]);
    let markers = Markers::new(Store::open("memory://overlap-arrays")?, &plan.plan_id);
    let mut runner = Recorder::new(&plan);
    // Array a's first task ends only once array b's first has: b must not wait for a.
    runner.hold = Some((task("a-0", 0), task("b-0", 0)));
    run_plan(&plan, &runner, &markers, &RunOptions::new(4, 120), &|_| {})?;
    let b = runner.position(&task("b-0", 0)).ok_or("b never ran")?;
    let a = runner.position(&task("a-0", 0)).ok_or("a never ran")?;
    assert!(b < a, "array b waited for array a's stage");
    let seen = runner.state.lock();
    assert!(
        seen.held_most <= 120,
        "tasks projecting {} bytes ran at once within a budget of 120",
        seen.held_most
    );
    assert_eq!(seen.ended.len(), 12);
    Ok(())
}

#[test]
fn a_failed_producer_holds_back_only_its_readers() -> TestResult {
    let plan = Plan::new("overlap", 1000, through_pieces("a", (10, 10))?, vec![]);
    let markers = Markers::new(Store::open("memory://overlap-failure")?, &plan.plan_id);
    let mut runner = Recorder::new(&plan);
    runner.fail = Some(task("a-0", 1));
    let mut options = RunOptions::new(2, 1000);
    options.retries = 0;
    let error = run_plan(&plan, &runner, &markers, &options, &|_| {})
        .err()
        .ok_or("a failed task let the run succeed")?;
    assert!(
        matches!(&error, ExecError::TaskFailed { stage, task: 1, .. } if stage == "a-0"),
        "{error}"
    );
    // Readers 0 and 1 read producer 0 only: they ran and are marked; 2 and 3 never started.
    let mut marked: Vec<u64> = markers.marked("a-1")?.into_iter().collect();
    marked.sort_unstable();
    assert_eq!(marked, [0, 1]);
    Ok(())
}
