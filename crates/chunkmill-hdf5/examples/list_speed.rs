//! How long it takes to open a file and list every chunk of its variables.
//!
//! ```text
//! cargo run --release --example list_speed -- [FILE...]
//! ```
//!
//! Without arguments it times the two 50 000-chunk files of the test corpus (run
//! `cargo test --test corpus` once to generate it), looked up under `$CHUNKMILL_CORPUS`,
//! `$CARGO_TARGET_DIR/tmp/chunkmill-hdf5-corpus` or `target/tmp/chunkmill-hdf5-corpus`.
//! Each file is opened and listed 30 times from a cold handle (the OS page cache is warm);
//! the minimum and median are printed, for a plain local file and through a `BlockCache`,
//! then the same listing on two threads at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunkmill_hdf5::{BlockCache, DataRefs, LocalFile, RangeSource, SourceFile};

const RUNS: usize = 30;

fn corpus_files() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CHUNKMILL_CORPUS") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("tmp/chunkmill-hdf5-corpus"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/chunkmill-hdf5-corpus"));
    let dir = dirs.into_iter().find(|d| d.join("INDEX.json").exists());
    let Some(dir) = dir else {
        eprintln!("no corpus found: run `cargo test --test corpus` first, or pass files");
        std::process::exit(2);
    };
    ["h5_big_index_v1btree.h5", "h5_big_index_earray.h5"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// Opens the file and lists every chunk of every variable; returns the chunk count.
fn list(source: Arc<dyn RangeSource>) -> Result<usize, chunkmill_hdf5::Error> {
    let file = SourceFile::open(source)?;
    let inventory = file.inventory()?;
    let mut chunks = 0;
    for v in &inventory.variables {
        chunks += match file.data_refs(v)? {
            DataRefs::Chunked { chunks, .. } => chunks.len(),
            other => other.range_count(),
        };
    }
    Ok(chunks)
}

fn time(
    mut run: impl FnMut() -> Result<usize, chunkmill_hdf5::Error>,
) -> (usize, Duration, Duration) {
    let mut times = Vec::with_capacity(RUNS);
    let mut chunks = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        match run() {
            Ok(n) => chunks = n,
            Err(e) => {
                eprintln!("chunkmill: {e}");
                std::process::exit(1);
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    (chunks, times[0], times[RUNS / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let files = if args.is_empty() {
        corpus_files()
    } else {
        args
    };
    for path in files {
        let open_local = || -> Result<Arc<dyn RangeSource>, chunkmill_hdf5::Error> {
            Ok(Arc::new(LocalFile::open(&path)?))
        };
        let (chunks, min, median) = time(|| list(open_local()?));
        println!(
            "{}: {chunks} chunks, open + list {:.2} ms (median {:.2} ms)",
            path.display(),
            ms(min),
            ms(median)
        );
        let (_, min, median) =
            time(|| list(Arc::new(BlockCache::new(open_local()?)) as Arc<dyn RangeSource>));
        println!(
            "  through a 64 KiB BlockCache: {:.2} ms (median {:.2} ms)",
            ms(min),
            ms(median)
        );
        let (_, min, median) = time(|| {
            std::thread::scope(|s| {
                let a = s.spawn(|| list(open_local()?));
                let b = s.spawn(|| list(open_local()?));
                let a = a.join().unwrap_or(Ok(0))?;
                let b = b.join().unwrap_or(Ok(0))?;
                Ok(a + b)
            })
        });
        println!(
            "  two listings on two threads at once: {:.2} ms (median {:.2} ms)",
            ms(min),
            ms(median)
        );
    }
}
