//! Files per second of `virtualize` on 365 small daily NetCDF-4 files (24 hours × 18 lat ×
//! 36 lon; `air` in (1, 18, 36) zlib+shuffle chunks, `uwnd` in (24, 9, 18) zlib chunks, CF
//! time) — the shape of the issue's benchmark, smaller, so the files are quick to write.
//!
//! ```text
//! cargo run --release --example virtualize_speed [-- DIR [N_FILES]]
//! ```
//!
//! The files are written by `tests/python/make_collections.py --daily` (netCDF4-python) into
//! DIR (default: `$TMPDIR/chunkmill-manifest-daily-N`) unless already there, with the Python
//! of `$CHUNKMILL_PYTHON` (or the `.venv` next to the crate, or `python3`). Each setting runs
//! 5 times; the best and the median are printed, then the process's peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chunkmill_manifest::{virtualize, VirtualizeOptions};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CHUNKMILL_PYTHON") {
        return p.into();
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        crate_dir.join(".venv/bin/python"),
        crate_dir.join("../.venv/bin/python"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| "python3".into())
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = 365;
    let dir = args.next().map_or_else(
        || std::env::temp_dir().join(format!("chunkmill-manifest-daily-{n}")),
        PathBuf::from,
    );
    let n: usize = args.next().map_or(Ok(n), |a| a.parse())?;
    let count = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if count < n {
        eprintln!("writing {n} daily files into {} …", dir.display());
        let t = Instant::now();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_collections.py");
        let status = Command::new(python())
            .arg(script)
            .args(["--daily", &n.to_string()])
            .arg(&dir)
            .status()?;
        if !status.success() {
            return Err("make_collections.py --daily failed".into());
        }
        eprintln!("  written in {:.1} s", t.elapsed().as_secs_f64());
    }
    let inputs = vec![format!("{}/day_*.nc", dir.display())];
    let out = std::env::temp_dir().join(format!("chunkmill-manifest-daily-{n}.json"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("virtualize {n} daily NetCDF-4 files (24×18×36, air + uwnd) → kerchunk JSON");
    for threads in [1, cores] {
        let mut runs = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let mut o = VirtualizeOptions::new(&out);
            o.concat_dim = Some("time".into());
            o.identical_dims = vec!["lat".into(), "lon".into()];
            o.overwrite = true;
            o.threads = threads;
            let t = Instant::now();
            let report = virtualize(&inputs, &o)?;
            runs.push(t.elapsed().as_secs_f64());
            last = Some(report);
        }
        runs.sort_by(f64::total_cmp);
        let r = last.ok_or("no run")?;
        println!(
            "  {threads} thread(s): best {:.1} ms = {:.0} files/s, median {:.1} ms = {:.0} files/s \
             (scan {:.1} ms, combine {:.1} ms, write {:.1} ms; {} references, {} inlined, {} KiB JSON)",
            runs[0] * 1e3,
            n as f64 / runs[0],
            runs[2] * 1e3,
            n as f64 / runs[2],
            r.scan_seconds * 1e3,
            r.combine_seconds * 1e3,
            r.write_seconds * 1e3,
            r.stats.references,
            r.stats.inlined,
            r.bytes_written / 1024,
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS of this process: {rss:.1} MiB");
    }
    Ok(())
}
