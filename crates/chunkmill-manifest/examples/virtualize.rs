//! A minimal command line over [`chunkmill_manifest::virtualize`], until the `chunkmill`
//! binary grows its `virtualize` subcommand:
//!
//! ```text
//! cargo run --release --example virtualize -- --output refs.json --concat-dim time \
//!     --identical-dims lat,lon [--inline-threshold 500] [--skip-bad] [--overwrite] INPUT...
//! ```
//!
//! Prints the report as one JSON line; on error prints `chunkmill: <error>` and exits 1.

use std::process::ExitCode;

use chunkmill_manifest::{virtualize, VirtualizeOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut options = VirtualizeOptions::new("");
    let mut inputs = Vec::new();
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("chunkmill: {name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--output" => options.output = value("--output").into(),
            "--concat-dim" => options.concat_dim = Some(value("--concat-dim")),
            "--identical-dims" => {
                options.identical_dims = value("--identical-dims")
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            "--inline-threshold" => {
                options.inline_threshold =
                    value("--inline-threshold").parse().unwrap_or_else(|e| {
                        eprintln!("chunkmill: --inline-threshold: {e}");
                        std::process::exit(2)
                    });
            }
            "--threads" => options.threads = value("--threads").parse().unwrap_or(0),
            "--skip-bad" => options.skip_bad = true,
            "--overwrite" => options.overwrite = true,
            _ => inputs.push(a),
        }
    }
    if options.output.as_os_str().is_empty() || inputs.is_empty() {
        eprintln!("usage: virtualize --output FILE [--concat-dim DIM] [--identical-dims A,B] [--inline-threshold N] [--skip-bad] [--overwrite] INPUT...");
        return ExitCode::from(2);
    }
    match virtualize(&inputs, &options) {
        Ok(r) => {
            let skipped: Vec<_> = r
                .skipped
                .iter()
                .map(|s| serde_json::json!({"file": s.file, "reason": s.reason}))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "output": r.output.display().to_string(),
                    "files": r.files.len(),
                    "skipped": skipped,
                    "warnings": r.warnings,
                    "reordered": r.reordered,
                    "arrays": r.stats.arrays,
                    "references": r.stats.references,
                    "inlined": r.stats.inlined,
                    "missing": r.stats.missing,
                    "bytes_written": r.bytes_written,
                    "scan_seconds": r.scan_seconds,
                    "combine_seconds": r.combine_seconds,
                    "write_seconds": r.write_seconds,
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chunkmill: {e}");
            ExitCode::FAILURE
        }
    }
}
