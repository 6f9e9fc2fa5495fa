//! `chunkmill demo`: a small climate-like dataset (hourly air temperature, 720 × 90 × 180,
//! chunked by time as archives are), rechunked for time-series analysis, then every value
//! checked against the formula that made it. Then the path most users come for: a collection
//! of daily NetCDF files, virtualized into kerchunk references and converted into a
//! time-series Zarr cache by the very commands it prints, checked against the formula too.

use chunkmill_grid::{CoordIter, Grid};
use chunkmill_ops::job::{human, run_job, JobOptions, TargetLayout};
use chunkmill_ops::rechunk::{plan_rechunk, RechunkOptions};
use chunkmill_ops::spec::{parse_size, ChunkSpec};
use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::DataType;
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
    Failure::failed(e.to_string())
}

fn spec(
    path: &str,
    shape: &[u64],
    chunks: &[u64],
    dtype: DataType,
    dims: &[&str],
    attrs: Value,
) -> ArraySpec {
    ArraySpec {
        path: path.into(),
        zarr_format: 3,
        shape: shape.to_vec(),
        dtype: dtype.clone(),
        chunks: chunks.to_vec(),
        inner_chunks: None,
        fill_value: if dtype.is_float() {
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
            DataType::Float(4),
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
            DataType::Int(8),
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
            DataType::Float(4),
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
            DataType::Float(4),
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

/// Checks every value of `air` (of shape `shape`) in the store at `url` against [`air`].
fn verify(url: &str, shape: &[u64]) -> Result<u64, Failure> {
    let store = Store::open(url).map_err(fail)?;
    let array = ZarrArray::open(&store, "air").map_err(fail)?;
    if array.info().shape != shape || array.info().dtype != DataType::Float(4) {
        return Err(fail(format!(
            "{url}: air is {} {:?}, expected float32 {shape:?}",
            array.info().dtype,
            array.info().shape
        )));
    }
    let chunks = array.info().chunks.clone();
    let grid = Grid::regular(shape, &chunks).map_err(fail)?;
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
            if p.iter().zip(shape).any(|(x, n)| x >= n) {
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

/// What the demo (and the README's quickstart, run in it) writes in its directory.
const DEMO_ENTRIES: [&str; 7] = [
    "source.zarr",
    "by-time-series.zarr",
    "data",
    "air.json",
    "air-time-series.zarr",
    "air.zarr",
    "air.zarr.work",
];

/// The first entry of an existing `--dir` that the demo did not write, if any: an earlier
/// demo is replaced, anything else is left alone (chunkmill removes only what it made).
fn foreign_entry(dir: &std::path::Path) -> Option<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some("it".into());
    };
    let mut seen_source = false;
    for entry in entries {
        let Ok(entry) = entry else {
            return Some("an unreadable entry".into());
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        seen_source |= name == "source.zarr";
        if !DEMO_ENTRIES.contains(&name.as_str()) {
            return Some(name);
        }
        if name == "data" {
            let Ok(files) = std::fs::read_dir(entry.path()) else {
                return Some("data".into());
            };
            for f in files.flatten() {
                let file = f.file_name().to_string_lossy().into_owned();
                let demo_file = file.starts_with("air_2020-01-") && file.ends_with(".nc");
                if !demo_file || !f.file_type().is_ok_and(|t| t.is_file()) {
                    return Some(format!("data/{file}"));
                }
            }
        }
    }
    (!seen_source).then(|| "source.zarr (absent)".into())
}

/// Build, plan, rechunk, verify.
pub fn run(a: &DemoArgs) -> Result<(), Failure> {
    let dir = std::path::Path::new(&a.dir);
    if dir.exists() {
        if let Some(stranger) = foreign_entry(dir) {
            return Err(Failure::refused(format!(
                "{}: exists and is not a chunkmill demo directory ({stranger} is not the demo's); choose another --dir",
                a.dir
            )));
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
        arrays: vec![],
        array_chunks: vec![],
        layout: TargetLayout {
            chunks: "time=-1,lat=9,lon=18"
                .parse::<ChunkSpec>()
                .map_err(Failure::usage)?,
            codec: Some(Compressor::Zstd(1)),
            shards: None,
            zarr_format: 3,
        },
        job: JobOptions {
            target: target.clone(),
            max_mem: parse_size(&a.max_mem).map_err(Failure::usage)?,
            temp: None,
            workers: crate::default_workers(),
            retries: 2,
            resume: false,
            overwrite: false,
            work_dir: None,
            keep_work: false,
            executor: chunkmill_ops::job::Executor::Threads,
            report: None,
            prepare_only: false,
            interrupt: None,
        },
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
    let report = run_job(&job, &options.job, &|e| progress.on_event(e));
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
    let checked = verify(&target, &SHAPE)?;
    println!("4. verified: all {checked} values of air equal the formula that generated them");
    println!("   open it with: xarray.open_zarr({target:?})");
    netcdf_path(dir, a)
}

/// Days of the NetCDF collection, one file each.
const DAYS: u64 = 10;

/// Writes one NetCDF-3 file per day of hourly `air` (the hours of the whole series, so the
/// files concatenate along time into what [`air`] gives).
fn write_collection(dir: &std::path::Path) -> Result<(), Failure> {
    use crate::demo_netcdf::{write, Attr, Values, Var};
    std::fs::create_dir_all(dir).map_err(fail)?;
    let text = |k: &str, v: &str| (k.to_string(), Attr::Text(v.to_string()));
    let [_, ny, nx] = SHAPE;
    for day in 0..DAYS {
        let hours = day * 24..(day + 1) * 24;
        let mut air_values = Vec::with_capacity((24 * ny * nx) as usize);
        for t in hours.clone() {
            for y in 0..ny {
                air_values.extend((0..nx).map(|x| air(t, y, x)));
            }
        }
        let vars = [
            Var {
                name: "time".into(),
                dims: vec![0],
                attrs: vec![
                    text("units", "hours since 2020-01-01 00:00:00"),
                    text("calendar", "standard"),
                    text("standard_name", "time"),
                ],
                values: Values::Double(hours.map(|h| h as f64).collect()),
            },
            Var {
                name: "lat".into(),
                dims: vec![1],
                attrs: vec![text("units", "degrees_north")],
                values: Values::Float((0..ny).map(|y| -89.0 + 2.0 * y as f32).collect()),
            },
            Var {
                name: "lon".into(),
                dims: vec![2],
                attrs: vec![text("units", "degrees_east")],
                values: Values::Float((0..nx).map(|x| 2.0 * x as f32).collect()),
            },
            Var {
                name: "air".into(),
                dims: vec![0, 1, 2],
                attrs: vec![
                    text("units", "K"),
                    text("long_name", "air temperature"),
                    ("valid_max".to_string(), Attr::Double(400.0)),
                ],
                values: Values::Float(air_values),
            },
        ];
        write(
            &dir.join(format!("air_2020-01-{:02}.nc", day + 1)),
            &[("time", 24), ("lat", ny), ("lon", nx)],
            &[text(
                "title",
                "chunkmill demo: one day of hourly air temperature",
            )],
            &vars,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Runs a chunkmill command line in this process, as a user would type it.
fn chunkmill(words: &[&str]) -> Result<(), Failure> {
    use clap::Parser;
    println!("   $ chunkmill {}", shell_words::join(words));
    let cli =
        crate::args::Cli::try_parse_from(std::iter::once("chunkmill").chain(words.iter().copied()))
            .map_err(|e| fail(e.to_string()))?;
    crate::run(cli)
}

/// NetCDF files → references → time-series Zarr, verified.
fn netcdf_path(dir: &std::path::Path, a: &DemoArgs) -> Result<(), Failure> {
    let files = dir.join("data");
    println!(
        "5. writing {DAYS} daily NetCDF-3 files of air [24, {}, {}] float32 into {}",
        SHAPE[1],
        SHAPE[2],
        files.display()
    );
    write_collection(&files)?;
    let pattern = files.join("air_*.nc").to_string_lossy().into_owned();
    let refs = dir.join("air.json").to_string_lossy().into_owned();
    let cache = dir
        .join("air-time-series.zarr")
        .to_string_lossy()
        .into_owned();
    let progress: &[&str] = if a.no_progress {
        &["--no-progress"]
    } else {
        &[]
    };
    println!("6. virtualizing them: references to their chunks, no data copied");
    let mut words: Vec<&str> = vec![
        "virtualize",
        &pattern,
        "--concat-dim",
        "time",
        "--output",
        &refs,
    ];
    words.extend(progress);
    chunkmill(&words)?;
    println!("7. converting the references into a time-series cache");
    let mut words: Vec<&str> = vec![
        "convert",
        &refs,
        &cache,
        "--chunks",
        "time=-1,lat=9,lon=18",
        "--max-mem",
        &a.max_mem,
    ];
    words.extend(progress);
    chunkmill(&words)?;
    let checked = verify(&cache, &[DAYS * 24, SHAPE[1], SHAPE[2]])?;
    println!("8. verified: all {checked} values of air equal the formula that generated them");
    println!("   open it with: xarray.open_zarr({cache:?})");
    Ok(())
}
