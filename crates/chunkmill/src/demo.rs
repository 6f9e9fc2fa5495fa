//! `chunkmill demo`: a small climate-like dataset (hourly air temperature, 720 × 90 × 180,
//! chunked by time as archives are), rechunked for time-series analysis, then every value
//! checked against the formula that made it.

use chunkmill_grid::{CoordIter, Grid};
use chunkmill_ops::rechunk::{human, plan_rechunk, run_job, RechunkOptions};
use chunkmill_ops::spec::{parse_size, ChunkSpec};
use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::Store;
use serde_json::{json, Map, Value};

use crate::args::DemoArgs;
use crate::progress::Progress;
use crate::Failure;

const SHAPE: [u64; 3] = [720, 90, 180];
const SOURCE_CHUNKS: [u64; 3] = [24, 90, 180];

fn air(t: u64, y: u64, x: u64) -> f32 {
    let lat = -89.0 + 2.0 * y as f64;
    let lon = 2.0 * x as f64;
    let season = (2.0 * std::f64::consts::PI * t as f64 / 720.0).sin();
    let day = (2.0 * std::f64::consts::PI * (t as f64 / 24.0 + lon / 360.0)).sin();
    (273.15 + 30.0 * lat.to_radians().cos() - 15.0 + 8.0 * season + 4.0 * day) as f32
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: e.to_string(),
    }
}

fn spec(
    path: &str,
    shape: &[u64],
    chunks: &[u64],
    dtype: &str,
    dims: &[&str],
    attrs: Value,
) -> ArraySpec {
    ArraySpec {
        path: path.into(),
        zarr_format: 3,
        shape: shape.to_vec(),
        dtype: dtype.into(),
        chunks: chunks.to_vec(),
        inner_chunks: None,
        fill_value: if dtype.starts_with("float") {
            json!("NaN")
        } else {
            json!(0)
        },
        encoding: Encoding::Compressor(Compressor::Zstd(1)),
        dimension_names: Some(dims.iter().map(|d| Some((*d).to_string())).collect()),
        attributes: attrs.as_object().cloned().unwrap_or_default(),
    }
}

fn write_whole(store: &Store, path: &str, bytes: Vec<u8>) -> Result<(), Failure> {
    ZarrArray::open(store, path)
        .map_err(fail)?
        .write_chunk(&[0], bytes)
        .map_err(fail)
}

fn build_source(url: &str) -> Result<(), Failure> {
    let store = Store::open(url).map_err(fail)?;
    zarr::create_group(
        &store,
        "",
        3,
        &Map::from_iter([(
            "title".to_string(),
            json!("chunkmill demo: hourly air temperature"),
        )]),
    )
    .map_err(fail)?;
    zarr::create_array(
        &store,
        &spec(
            "air",
            &SHAPE,
            &SOURCE_CHUNKS,
            "float32",
            &["time", "lat", "lon"],
            json!({"units": "K", "long_name": "air temperature"}),
        ),
    )
    .map_err(fail)?;
    zarr::create_array(
        &store,
        &spec(
            "time",
            &SHAPE[..1],
            &SHAPE[..1],
            "int64",
            &["time"],
            json!({"units": "hours since 2020-01-01", "calendar": "standard"}),
        ),
    )
    .map_err(fail)?;
    zarr::create_array(
        &store,
        &spec(
            "lat",
            &SHAPE[1..2],
            &SHAPE[1..2],
            "float32",
            &["lat"],
            json!({"units": "degrees_north"}),
        ),
    )
    .map_err(fail)?;
    zarr::create_array(
        &store,
        &spec(
            "lon",
            &SHAPE[2..],
            &SHAPE[2..],
            "float32",
            &["lon"],
            json!({"units": "degrees_east"}),
        ),
    )
    .map_err(fail)?;
    write_whole(
        &store,
        "time",
        (0..SHAPE[0] as i64).flat_map(i64::to_ne_bytes).collect(),
    )?;
    write_whole(
        &store,
        "lat",
        (0..SHAPE[1])
            .flat_map(|y| (-89.0 + 2.0 * y as f32).to_ne_bytes())
            .collect(),
    )?;
    write_whole(
        &store,
        "lon",
        (0..SHAPE[2])
            .flat_map(|x| (2.0 * x as f32).to_ne_bytes())
            .collect(),
    )?;
    let array = ZarrArray::open(&store, "air").map_err(fail)?;
    let grid = Grid::regular(&SHAPE, &SOURCE_CHUNKS).map_err(fail)?;
    for c in CoordIter::new(grid.counts().into_iter().map(|n| 0..n).collect()) {
        let region = grid.chunk_region(&c);
        let bytes: Vec<u8> = CoordIter::new(region.ranges().to_vec())
            .flat_map(|p| air(p[0], p[1], p[2]).to_ne_bytes())
            .collect();
        array.write_chunk(&c, bytes).map_err(fail)?;
    }
    zarr::write_consolidated(&store).map_err(fail)
}

fn verify(url: &str) -> Result<u64, Failure> {
    let store = Store::open(url).map_err(fail)?;
    let array = ZarrArray::open(&store, "air").map_err(fail)?;
    let chunks = array.info().chunks.clone();
    let grid = Grid::regular(&SHAPE, &chunks).map_err(fail)?;
    let mut checked = 0u64;
    for c in CoordIter::new(grid.counts().into_iter().map(|n| 0..n).collect()) {
        let bytes = array.read_chunk(&c).map_err(fail)?;
        let origin: Vec<u64> = c.iter().zip(&chunks).map(|(i, s)| i * s).collect();
        let nominal: Vec<std::ops::Range<u64>> = origin
            .iter()
            .zip(&chunks)
            .map(|(&o, &s)| o..o + s)
            .collect();
        for (i, p) in CoordIter::new(nominal).enumerate() {
            if p.iter().zip(&SHAPE).any(|(x, n)| x >= n) {
                continue;
            }
            let got = f32::from_ne_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ]);
            if got.to_bits() != air(p[0], p[1], p[2]).to_bits() {
                return Err(fail(format!(
                    "{url}: air{p:?} is {got}, expected {}",
                    air(p[0], p[1], p[2])
                )));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// Build, plan, rechunk, verify.
pub fn run(a: &DemoArgs) -> Result<(), Failure> {
    let dir = std::path::Path::new(&a.dir);
    if dir.exists() {
        if !dir.join("source.zarr").exists() {
            return Err(Failure {
                code: 3,
                message: format!(
                    "{}: exists and is not a chunkmill demo directory; choose another --dir",
                    a.dir
                ),
            });
        }
        std::fs::remove_dir_all(dir).map_err(fail)?;
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let source = dir.join("source.zarr").to_string_lossy().into_owned();
    let target = dir
        .join("by-time-series.zarr")
        .to_string_lossy()
        .into_owned();
    println!(
        "1. building {source}: air {:?} float32 in chunks {:?}, zstd:1 ({})",
        SHAPE,
        SOURCE_CHUNKS,
        human(SHAPE.iter().product::<u64>() * 4)
    );
    build_source(&source)?;
    let options = RechunkOptions {
        source: source.clone(),
        target: target.clone(),
        chunks: "time=-1,lat=9,lon=18"
            .parse::<ChunkSpec>()
            .map_err(Failure::usage)?,
        max_mem: parse_size(&a.max_mem).map_err(Failure::usage)?,
        temp: None,
        arrays: vec![],
        codec: Some(Compressor::Zstd(1)),
        shards: None,
        zarr_format: 3,
        workers: crate::default_workers(),
        retries: 2,
        resume: false,
        overwrite: false,
        work_dir: None,
        keep_work: false,
        executor: chunkmill_ops::rechunk::Executor::Threads,
        report: None,
        prepare_only: false,
    };
    println!(
        "2. plan: rechunk to time=-1, lat=9, lon=18 within --max-mem {}",
        a.max_mem
    );
    let job = plan_rechunk(&options)?;
    for s in &job.plan.stages {
        println!(
            "   {:<34} {:>5} tasks, {} per task",
            s.label,
            s.tasks(),
            human(s.projected_mem)
        );
    }
    println!("3. rechunking into {target}");
    let total: u64 = job.plan.stages.iter().map(|s| s.bytes_written).sum();
    let progress = Progress::new(total, !a.no_progress);
    let report = run_job(&job, &options, &|e| progress.on_event(e));
    progress.finish();
    let report = report?;
    println!(
        "   {} in {:.2} s, {} tasks, peak RSS {} (budget {})",
        human(report.bytes),
        report.seconds,
        report.tasks_run,
        human(report.peak_rss),
        a.max_mem
    );
    let checked = verify(&target)?;
    println!("4. verified: all {checked} values of air equal the formula that generated them");
    println!("   open it with: xarray.open_zarr({target:?})");
    Ok(())
}
