//! Per-task overhead of the threads executor: a plan of N tasks that do nothing, run with real
//! markers in a local work dir (what every task pays: scheduling, memory admission, the marker
//! write, events).
//!
//! ```text
//! cargo run --release -p chunkmill-exec --example task_overhead -- [TASKS] [WORKERS]
//! ```

use std::time::Instant;

use chunkmill_exec::{run_plan, Cancel, RunOptions, TaskError, TaskRunner, TaskStats};
use chunkmill_grid::Grid;
use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
use chunkmill_store::markers::Markers;
use chunkmill_store::Store;

struct Nothing;

impl TaskRunner for Nothing {
    fn run(&self, _stage: &Stage, _task: u64, _cancel: &Cancel) -> Result<TaskStats, TaskError> {
        Ok(TaskStats::default())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let workers: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let grid = Grid::regular(&[tasks], &[1])?;
    let endpoint = Endpoint::Zarr {
        url: "memory://none".into(),
        path: String::new(),
        grid: grid.clone(),
    };
    let stage = Stage {
        name: "s".into(),
        label: "no-op".into(),
        kind: StageKind::Copy(CopyStage {
            input: endpoint.clone(),
            output: endpoint,
            blocks: grid,
            item_size: 1,
        }),
        projected_mem: 1,
        bytes_read: 0,
        bytes_written: 0,
    };
    let plan = Plan::new("overhead", 1 << 30, vec![stage], vec![]);
    let dir = std::env::temp_dir().join(format!("chunkmill-overhead-{}", std::process::id()));
    let markers = Markers::new(
        Store::open(dir.to_str().unwrap_or("/tmp/chunkmill-overhead"))?,
        &plan.plan_id,
    );
    let start = Instant::now();
    let summary = run_plan(
        &plan,
        &Nothing,
        &markers,
        &RunOptions::new(workers, 1 << 30),
        &|_| {},
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} tasks on {workers} threads in {seconds:.3} s: {:.3} ms per task (plan.json {} bytes)",
        summary.tasks_run,
        seconds * 1000.0 / tasks as f64,
        plan.to_json()?.len()
    );
    Ok(())
}
