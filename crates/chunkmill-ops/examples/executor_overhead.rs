//! Per-task overhead of the executors on real copy tasks: a plan of N tasks, each copying one
//! 4-byte chunk between two local Zarr arrays (a read that finds no chunk, an encode, an atomic
//! write, a marker), run on the threads executor and, when a `chunkmill` binary is given, on the
//! processes executor (child `chunkmill worker` processes reading plan.json).
//!
//! ```text
//! cargo build --release -p chunkmill
//! cargo run --release -p chunkmill-ops --example executor_overhead -- 10000 4 target/release/chunkmill
//! ```

use std::path::PathBuf;
use std::time::Instant;

use chunkmill_exec::processes::{run_plan_processes, WorkerCommand};
use chunkmill_exec::{run_plan, RunOptions};
use chunkmill_grid::Grid;
use chunkmill_ops::tasks::StageRunner;
use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
use chunkmill_store::markers::Markers;
use chunkmill_store::zarr::{create_array, ArraySpec, Compressor, Encoding};
use chunkmill_store::Store;

fn array(store: &Store, path: &str, tasks: u64) -> Result<(), Box<dyn std::error::Error>> {
    create_array(
        store,
        &ArraySpec {
            path: path.into(),
            zarr_format: 3,
            shape: vec![tasks],
            dtype: chunkmill_store::DataType::Float(4),
            chunks: vec![1],
            inner_chunks: None,
            fill_value: serde_json::json!(0.0),
            encoding: Encoding::Compressor(Compressor::None),
            dimension_names: None,
            attributes: serde_json::Map::new(),
        },
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let workers: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let program: Option<PathBuf> = args.next().map(PathBuf::from);

    let dir = std::env::temp_dir().join(format!("chunkmill-overhead-{}", std::process::id()));
    let root = dir.to_string_lossy().to_string();
    let store = Store::open(&root)?;
    array(&store, "in", tasks)?;
    let grid = Grid::regular(&[tasks], &[1])?;
    let endpoint = |path: &str| Endpoint::Zarr {
        url: root.clone(),
        path: path.into(),
        grid: grid.clone(),
    };
    let stage = Stage {
        name: "s".into(),
        label: "copy one chunk".into(),
        kind: StageKind::Copy(CopyStage {
            input: endpoint("in"),
            output: endpoint("out"),
            blocks: grid.clone(),
            item_size: 4,
        }),
        projected_mem: 1 << 20,
        bytes_read: 4 * tasks,
        bytes_written: 4 * tasks,
    };
    let plan = Plan::new("overhead", 1 << 30, vec![stage], vec![]);

    let mut executors = vec!["threads"];
    if program.is_some() {
        executors.push("processes");
    }
    for name in executors {
        store.erase_prefix("out/")?;
        array(&store, "out", tasks)?;
        let work = Store::open(&format!("{root}/work-{name}"))?;
        work.put("plan.json", plan.to_json()?.into_bytes())?;
        let markers = Markers::new(work.clone(), &plan.plan_id);
        let start = Instant::now();
        let summary = match &program {
            Some(program) if name == "processes" => {
                let command = WorkerCommand {
                    program: program.clone(),
                    plan_url: work.join("plan.json"),
                };
                run_plan_processes(&plan, &command, &markers, workers, 0, None, &|_| {})?
            }
            _ => run_plan(
                &plan,
                &StageRunner::new(),
                &markers,
                &RunOptions::new(workers, 1 << 30),
                &|_| {},
            )?,
        };
        let done = summary.tasks_run;
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{name}: {done} tasks on {workers} workers in {seconds:.3} s: {:.3} ms per task (plan.json {} bytes)",
            seconds * 1000.0 / tasks as f64,
            plan.to_json()?.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
