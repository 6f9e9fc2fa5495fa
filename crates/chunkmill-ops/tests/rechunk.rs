//! Rechunks checked by arithmetic: every source element holds its own C-order index, so the
//! target must hold exactly that index at every position, whatever plan the planner chose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunkmill_grid::{CoordIter, Grid};
use chunkmill_ops::job::{JobOptions, TargetLayout};
use chunkmill_ops::rechunk::{plan_rechunk, run_rechunk, RechunkOptions};
use chunkmill_ops::spec::ChunkSpec;
use chunkmill_ops::ErrorKind;
use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::Store;
use serde_json::json;

fn make_source(url: &str, shape: &[u64], chunks: &[u64], skip_some: bool) {
    let store = Store::open(url).unwrap();
    store.erase_prefix("").unwrap();
    zarr::create_array(
        &store,
        &ArraySpec {
            path: String::new(),
            zarr_format: 3,
            shape: shape.to_vec(),
            dtype: chunkmill_store::DataType::Int(8),
            chunks: chunks.to_vec(),
            inner_chunks: None,
            fill_value: json!(-1),
            encoding: Encoding::Compressor(Compressor::Zstd(1)),
            dimension_names: None,
            attributes: serde_json::Map::new(),
        },
    )
    .unwrap();
    let array = ZarrArray::open(&store, "").unwrap();
    let grid = Grid::regular(shape, chunks).unwrap();
    for (n, c) in CoordIter::new(grid.counts().into_iter().map(|k| 0..k).collect()).enumerate() {
        if skip_some && n % 3 == 1 {
            continue; // never written: reads as the fill value -1
        }
        let nominal: Vec<_> = c
            .iter()
            .zip(chunks)
            .map(|(&i, &s)| i * s..(i + 1) * s)
            .collect();
        let bytes: Vec<u8> = CoordIter::new(nominal)
            .flat_map(|p| {
                let inside = p.iter().zip(shape).all(|(x, n)| x < n);
                let v = if inside {
                    p.iter()
                        .zip(shape)
                        .fold(0i64, |a, (&x, &n)| a * n as i64 + x as i64)
                } else {
                    -1
                };
                v.to_ne_bytes()
            })
            .collect();
        array.write_chunk(&c, bytes).unwrap();
    }
}

fn check_target(url: &str, shape: &[u64], source_chunks: &[u64], chunks: &[u64], skip_some: bool) {
    let store = Store::open(url).unwrap();
    let array = ZarrArray::open(&store, "").unwrap();
    assert_eq!(array.info().chunks, chunks);
    let source_grid = Grid::regular(shape, source_grid_chunks(source_chunks)).unwrap();
    let grid = Grid::regular(shape, chunks).unwrap();
    for c in CoordIter::new(grid.counts().into_iter().map(|k| 0..k).collect()) {
        let bytes = array.read_chunk(&c).unwrap();
        let nominal: Vec<_> = c
            .iter()
            .zip(chunks)
            .map(|(&i, &s)| i * s..(i + 1) * s)
            .collect();
        for (i, p) in CoordIter::new(nominal).enumerate() {
            if p.iter().zip(shape).any(|(x, n)| x >= n) {
                continue;
            }
            let got = i64::from_ne_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
            let src_chunk: Vec<u64> = p.iter().zip(source_chunks).map(|(x, s)| x / s).collect();
            let skipped = skip_some && source_grid.ravel(&src_chunk) % 3 == 1;
            let want = if skipped {
                -1
            } else {
                p.iter()
                    .zip(shape)
                    .fold(0i64, |a, (&x, &n)| a * n as i64 + x as i64)
            };
            assert_eq!(got, want, "at {p:?}");
        }
    }
}

fn source_grid_chunks(c: &[u64]) -> &[u64] {
    c
}

fn options(source: &str, target: &str, chunks: &str, max_mem: u64) -> RechunkOptions {
    RechunkOptions {
        source: source.into(),
        arrays: vec![],
        array_chunks: vec![],
        layout: TargetLayout {
            chunks: chunks.parse::<ChunkSpec>().unwrap(),
            codec: None,
            shards: None,
            zarr_format: 3,
        },
        job: JobOptions {
            target: target.into(),
            max_mem,
            temp: None,
            workers: 2,
            retries: 0,
            resume: false,
            overwrite: false,
            work_dir: None,
            keep_work: false,
            executor: chunkmill_ops::job::Executor::Threads,
            report: None,
            prepare_only: false,
            interrupt: None,
        },
    }
}

/// A budget that leaves `task_mib` MiB for tasks above this process's baseline.
fn budget(task_mib: u64) -> u64 {
    let base = chunkmill_exec::budget::measured_baseline(chunkmill_exec::memory::held_memory())
        + (24 << 20);
    ((base + (task_mib << 20)) as f64 * 1.04) as u64
}

#[test]
fn rechunks_equal_the_arithmetic() {
    let cases: &[(&[u64], &[u64], &str, bool)] = &[
        (&[33, 20], &[7, 20], "5,3", false),
        (&[100, 30, 12], &[1, 30, 12], "100,1,1", true),
        (&[64, 64], &[64, 1], "1,64", false),
        (&[17], &[4], "-1", true),
        (&[9, 1, 5], &[2, 1, 5], "9,1,1", false),
    ];
    for (n, (shape, source_chunks, spec, skip)) in cases.iter().enumerate() {
        let src = format!("memory://arith-src-{n}");
        let dst = format!("memory://arith-dst-{n}");
        make_source(&src, shape, source_chunks, *skip);
        let opts = options(&src, &dst, spec, budget(8));
        run_rechunk(&opts, &|_| {}).unwrap();
        let want: Vec<u64> = spec
            .split(',')
            .zip(shape.iter())
            .map(|(s, &len)| {
                if s == "-1" {
                    len
                } else {
                    s.parse::<u64>().unwrap().min(len)
                }
            })
            .collect();
        check_target(&dst, shape, source_chunks, &want, *skip);
    }
}

#[test]
fn a_tight_budget_goes_through_intermediates_and_still_equals_the_arithmetic() {
    // 400 x 400 int64 (1.28 MB), rows to columns; a budget far below the array forces stages.
    let (src, dst) = ("memory://tight-src", "memory://tight-dst");
    make_source(src, &[400, 400], &[1, 400], false);
    let mut opts = options(src, dst, "400,1", budget(1) + 400_000);
    opts.job.workers = 1;
    let job = plan_rechunk(&opts).unwrap();
    assert_ne!(
        job.arrays[0].strategy,
        chunkmill_grid::rechunk::Strategy::Direct,
        "{:?}",
        job.arrays[0]
    );
    assert!(job.plan.max_projected_mem() <= job.task_budget);
    run_rechunk(&opts, &|_| {}).unwrap();
    check_target(dst, &[400, 400], &[1, 400], &[400, 1], false);
    // Intermediates are gone.
    assert!(Store::open(&format!("{dst}.work/intermediate"))
        .unwrap()
        .is_empty()
        .unwrap());
}

#[test]
fn empty_and_zero_d_arrays() {
    for (n, shape, chunks, spec) in [
        (0, vec![0u64, 10], vec![1u64, 5], "1,10"),
        (1, vec![], vec![], ""),
    ] {
        let src = format!("memory://edge-src-{n}");
        let dst = format!("memory://edge-dst-{n}");
        make_source(&src, &shape, &chunks, false);
        let spec = if spec.is_empty() {
            ChunkSpec::ByAxis(vec![])
        } else {
            spec.parse().unwrap()
        };
        let mut opts = options(&src, &dst, "1", budget(4));
        opts.layout.chunks = spec;
        run_rechunk(&opts, &|_| {}).unwrap();
        let array = ZarrArray::open(&Store::open(&dst).unwrap(), "").unwrap();
        assert_eq!(array.info().shape, shape);
        if shape.is_empty() {
            assert_eq!(
                i64::from_ne_bytes(array.read_chunk(&[]).unwrap()[..8].try_into().unwrap()),
                0
            );
        }
    }
}

#[test]
fn refusals_write_nothing() {
    let (src, dst) = ("memory://refuse-src", "memory://refuse-dst");
    make_source(src, &[100, 100], &[100, 100], false);
    // A budget below one chunk.
    let err = run_rechunk(&options(src, dst, "10,10", 1000), &|_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("--max-mem"), "{err}");
    assert!(Store::open(dst).unwrap().is_empty().unwrap());
    // Positional chunks of the wrong rank.
    let err = run_rechunk(&options(src, dst, "10", budget(4)), &|_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    // Target exists.
    run_rechunk(&options(src, dst, "10,10", budget(4)), &|_| {}).unwrap();
    let err = run_rechunk(&options(src, dst, "20,20", budget(4)), &|_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("--overwrite"));
    let mut again = options(src, dst, "20,20", budget(4));
    again.job.overwrite = true;
    run_rechunk(&again, &|_| {}).unwrap();
    check_target(dst, &[100, 100], &[100, 100], &[20, 20], false);
}

#[test]
fn s3_source_target_and_intermediates() {
    let Ok(bucket) = std::env::var("CHUNKMILL_TEST_S3") else {
        eprintln!("SKIPPED s3_source_target_and_intermediates: CHUNKMILL_TEST_S3 is not set (scripts/test starts a server and sets it)");
        return;
    };
    let src = format!("{bucket}/rechunk/src.zarr");
    let dst = format!("{bucket}/rechunk/dst.zarr");
    for url in [&src, &dst, &format!("{dst}.work")] {
        Store::open(url).unwrap().erase_prefix("").unwrap();
    }
    make_source(&src, &[300, 300], &[1, 300], true);
    let mut opts = options(&src, &dst, "300,1", budget(1) + 200_000);
    opts.job.workers = 1;
    let job = plan_rechunk(&opts).unwrap();
    assert_ne!(
        job.arrays[0].strategy,
        chunkmill_grid::rechunk::Strategy::Direct
    );
    run_rechunk(&opts, &|_| {}).unwrap();
    check_target(&dst, &[300, 300], &[1, 300], &[300, 1], true);
    // The default work dir on S3 (plan, markers, lease, intermediates) is removed after success.
    assert!(Store::open(&format!("{dst}.work"))
        .unwrap()
        .is_empty()
        .unwrap());
    // With --keep-work it stays, holding the plan; the intermediates are gone all the same.
    let mut kept = opts.clone();
    kept.job.overwrite = true;
    kept.job.keep_work = true;
    run_rechunk(&kept, &|_| {}).unwrap();
    check_target(&dst, &[300, 300], &[1, 300], &[300, 1], true);
    let work = Store::open(&format!("{dst}.work")).unwrap();
    assert!(work.exists("plan.json").unwrap());
    assert!(Store::open(&format!("{dst}.work/intermediate"))
        .unwrap()
        .is_empty()
        .unwrap());
}
