//! Properties every rechunk plan must have, checked on random shapes and chunkings by counting
//! elements, not by trusting the planner's own figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunkmill_grid::rechunk::{copy_task_memory, MediumCost, RechunkPlan, RechunkProblem};
use chunkmill_grid::{copy_region, Grid, GridError, Region};
use proptest::prelude::*;

const ZSTD: MediumCost = MediumCost {
    read_ns_per_byte: 1.0,
    write_ns_per_byte: 2.5,
    ns_per_object: 30_000.0,
};

fn problem(
    shape: &[u64],
    source: &[u64],
    target: &[u64],
    budget: u64,
    workers: u64,
) -> RechunkProblem {
    RechunkProblem {
        shape: shape.to_vec(),
        item_size: 4,
        source: Grid::regular(shape, source).unwrap(),
        target_chunks: target.to_vec(),
        budget,
        workers,
        source_cost: ZSTD,
        target_cost: ZSTD,
        intermediate_cost: MediumCost::LOCAL_RAW,
        ns_per_task: 50_000.0,
        task_overhead: 0,
        max_stages: 4,
    }
}

/// Every element lands in exactly one block per stage, every block holds whole output chunks,
/// and reads of whole input chunks cover each block.
fn check_plan(p: &RechunkProblem, plan: &RechunkPlan) {
    let total: u64 = p.shape.iter().product();
    let per_task = p.budget / plan.concurrency;
    let last = plan.stages.len() - 1;
    for (i, stage) in plan.stages.iter().enumerate() {
        assert!(
            stage.projected_mem <= per_task,
            "stage {i} needs {} > {per_task}",
            stage.projected_mem
        );
        let mut covered = 0u64;
        let mut written_chunks = 0u64;
        for t in 0..stage.tasks() {
            let block = stage.blocks.chunk_region(&stage.blocks.unravel(t));
            covered += block.num_elements();
            assert!(
                stage.output.is_aligned(&block),
                "stage {i} block {block} cuts output chunks"
            );
            for c in stage.output.chunks_in(&block) {
                assert!(block.contains(&stage.output.chunk_region(&c)));
                written_chunks += 1;
            }
            // The memory model: block + the largest input or output chunk twice.
            let in_max = stage
                .input
                .chunks_in(&block)
                .map(|c| stage.input.chunk_region(&c).num_elements())
                .max()
                .unwrap_or(0);
            let out_max = stage
                .output
                .chunks_in(&block)
                .map(|c| stage.output.chunk_region(&c).num_elements())
                .max()
                .unwrap_or(0);
            assert!(
                copy_task_memory(block.num_elements(), in_max, out_max, p.item_size, 0)
                    <= stage.projected_mem
            );
        }
        assert_eq!(
            covered, total,
            "stage {i} blocks must tile the array exactly once"
        );
        assert_eq!(
            written_chunks,
            stage.output.num_chunks(),
            "each output chunk written by exactly one task"
        );
        if i > 0 {
            assert_eq!(stage.input, plan.stages[i - 1].output);
        }
        if i == last {
            assert_eq!(
                stage.output,
                Grid::regular(&p.shape, &p.target_chunks).unwrap()
            );
        }
    }
    assert_eq!(plan.stages[0].input, p.source);
}

fn dims() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, Vec<u64>)> {
    (0usize..=3).prop_flat_map(|ndim| {
        prop::collection::vec((0u64..40, 1u64..12, 1u64..12), ndim).prop_map(|axes| {
            let shape = axes.iter().map(|a| a.0).collect();
            let source = axes.iter().map(|a| a.1).collect();
            let target = axes.iter().map(|a| a.2).collect();
            (shape, source, target)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn plans_tile_fit_and_own_whole_chunks((shape, source, target) in dims(), budget_kb in 1u64..64, workers in 1u64..4) {
        let p = problem(&shape, &source, &target, budget_kb * 1024, workers);
        match p.plan() {
            Ok(plan) => check_plan(&p, &plan),
            Err(GridError::DoesNotFit { task_bytes, budget }) => {
                // Refusal is right only when the smallest task of every strategy is too big:
                // Zarr decodes and encodes chunks at their nominal size, blocks are clipped.
                let prod = |v: Vec<u64>| v.iter().product::<u64>() * 4;
                let clip = |c: &[u64]| -> Vec<u64> { c.iter().zip(&shape).map(|(&c, &l)| c.min(l.max(1))).collect() };
                let (s_nom, t_nom) = (prod(source.clone()), prod(target.clone()));
                let (s_clip, t_clip) = (prod(clip(&source)), prod(clip(&target)));
                let piece = prod(clip(&source).iter().zip(clip(&target)).map(|(a, b)| (*a).min(b)).collect());
                let direct = t_clip + 2 * s_nom.max(t_nom);
                let staged = (s_clip + 2 * s_nom.max(piece)).max(t_clip + 2 * piece.max(t_nom));
                prop_assert!(task_bytes > budget);
                prop_assert!(direct > budget && staged > budget, "refused but direct {direct} or staged {staged} fits {budget}");
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn copy_region_moves_every_element((shape, source, _t) in dims()) {
        // Copy each source chunk into a whole-array buffer and compare with the arithmetic.
        let grid = Grid::regular(&shape, &source).unwrap();
        let whole = Region::whole(&shape);
        let n = whole.num_elements() as usize;
        let mut out = vec![0u32; n];
        for c in grid.chunks_in(&whole) {
            let region = grid.chunk_region(&c);
            // The chunk's values are their C-order index in the whole array.
            let mut values = Vec::with_capacity(region.num_elements() as usize);
            for point in chunkmill_grid::CoordIter::new(region.ranges().to_vec()) {
                values.push(shape.iter().zip(&point).fold(0u64, |acc, (&l, &x)| acc * l + x) as u32);
            }
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let mut out_bytes: Vec<u8> = out.iter().flat_map(|v| v.to_ne_bytes()).collect();
            copy_region(&bytes, &region, &mut out_bytes, &whole, &region, 4);
            out = out_bytes.chunks(4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect();
        }
        let expected: Vec<u32> = (0..n as u32).collect();
        prop_assert_eq!(out, expected);
    }
}

#[test]
fn benchmark_problem_goes_through_an_intermediate() {
    // 2.27 GB float32 (8760, 180, 360), time-chunked to space-chunked, 512 MB, 2 workers.
    let p = problem(
        &[8760, 180, 360],
        &[24, 180, 360],
        &[8760, 18, 36],
        480_000_000,
        2,
    );
    let plan = p.plan().unwrap();
    check_plan(&p, &plan);
    assert_eq!(plan.stages.len(), 2, "{plan:#?}");
    // Each source chunk is read once and each intermediate piece once.
    let total = 8760u64 * 180 * 360 * 4;
    assert_eq!(plan.stages[0].bytes_read, total);
    assert_eq!(plan.stages[1].bytes_read, total);
}

#[test]
fn aligned_rechunk_is_direct() {
    let p = problem(&[100, 100], &[10, 100], &[50, 50], 1_000_000, 2);
    let plan = p.plan().unwrap();
    check_plan(&p, &plan);
    assert_eq!(plan.strategy, chunkmill_grid::rechunk::Strategy::Direct);
}

#[test]
fn too_small_budget_is_refused_with_numbers() {
    let p = problem(&[100, 100], &[100, 100], &[100, 100], 1000, 1);
    match p.plan() {
        Err(GridError::DoesNotFit { task_bytes, budget }) => {
            assert_eq!(budget, 1000);
            assert_eq!(task_bytes, 3 * 100 * 100 * 4);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn regression_small_budget_4x25() {
    for kb in 1..4 {
        let p = problem(&[4, 25], &[10, 8], &[7, 1], kb * 1024, 1);
        if let Ok(plan) = p.plan() {
            check_plan(&p, &plan);
        }
    }
}

#[test]
fn blocks_grow_from_whole_source_and_target_chunks_when_they_fit() {
    // Source rows of 50, target rows of 25: blocks grown from the target chunk alone land on
    // 175 rows for two workers, and the source chunk at 150..200 is decoded by two tasks.
    // Grown from lcm(50, 25) = 50 rows (and lcm(100, 150) = 300 columns), every source chunk
    // is decoded by one task.
    // Float64, the budget and per-task overhead of a 64 MB `convert` (as planned for h5py's
    // chunks in tests/python/test_convert.py).
    let p = RechunkProblem {
        item_size: 8,
        task_overhead: (1 << 20) + 50 * 100 * 8,
        ns_per_task: 100e3,
        ..problem(&[400, 300], &[50, 100], &[25, 150], 3_279_744, 2)
    };
    let plan = p.plan().unwrap();
    check_plan(&p, &plan);
    assert_eq!(plan.stages.len(), 1, "{plan:#?}");
    assert_eq!(plan.stages[0].bytes_read, 400 * 300 * 8, "{plan:#?}");
    for t in 0..plan.stages[0].tasks() {
        let block = plan.stages[0]
            .blocks
            .chunk_region(&plan.stages[0].blocks.unravel(t));
        assert!(p.source.is_aligned(&block), "{block} cuts source chunks");
    }
}

/// Ten days of hourly time slices to long time series: at a 64 MB task pool the write blocks
/// grew so long that the one-slice read block no longer fitted beside them, and every staged
/// plan was dropped, leaving re-reading the sources 5 times as "the only plan that fits",
/// while 40 MB (and 80 MB) still had staged plans: more memory must never lose a kind of plan.
#[test]
fn more_memory_never_loses_the_staged_plans() {
    use chunkmill_grid::rechunk::Strategy;
    let shape = [240, 180, 360];
    // Convert's tasks also hold one source chunk beside the block.
    for (mb, overhead) in (30..=90)
        .step_by(2)
        .flat_map(|mb| [(mb, 0), (mb, (1 << 20) + 180 * 360 * 4)])
    {
        let mut p = problem(&shape, &[1, 180, 360], &[240, 18, 36], mb << 20, 4);
        p.task_overhead = overhead;
        let plan = p.plan().unwrap();
        check_plan(&p, &plan);
        let kinds: Vec<Strategy> = std::iter::once(plan.strategy)
            .chain(plan.alternatives.iter().map(|k| k.strategy))
            .collect();
        assert!(
            kinds
                .iter()
                .any(|s| matches!(s, Strategy::Intermediate | Strategy::Multistage)),
            "{mb} MB, {overhead} B a task: only {kinds:?}"
        );
    }
}

/// Whether `plan` or one of its alternatives is of one of `kinds`.
fn has_kind(plan: &RechunkPlan, kinds: &[chunkmill_grid::rechunk::Strategy]) -> bool {
    std::iter::once(plan.strategy)
        .chain(plan.alternatives.iter().map(|k| k.strategy))
        .any(|s| kinds.contains(&s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// More memory for the same workers never loses the staged plans a smaller budget had:
    /// every task of a plan found at `budget` still fits at a larger one.
    #[test]
    fn a_larger_budget_keeps_the_staged_kinds(
        (shape, source, target) in dims(),
        budget_kb in 1u64..64,
        more in 1u64..8,
        workers in 1u64..4,
        overhead in prop_oneof![Just(0u64), 0u64..4096],
    ) {
        use chunkmill_grid::rechunk::Strategy;
        let mut small = problem(&shape, &source, &target, budget_kb * 1024, workers);
        small.task_overhead = overhead;
        let Ok(plan) = small.plan() else { return Ok(()) };
        if !has_kind(&plan, &[Strategy::Intermediate, Strategy::Multistage]) {
            return Ok(());
        }
        let mut large = small.clone();
        large.budget = (budget_kb + more * budget_kb.max(4) / 4) * 1024;
        let larger = large.plan().unwrap();
        check_plan(&large, &larger);
        // The staged plans stay, unless a read block grew into the write block it feeds:
        // then one stage reading each source chunk once does what they did.
        prop_assert!(
            has_kind(&larger, &[Strategy::Intermediate, Strategy::Multistage, Strategy::Direct]),
            "{} B had a staged plan, {} B only {:?}", small.budget, large.budget, larger.strategy
        );
    }
}
