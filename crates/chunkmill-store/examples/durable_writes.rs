//! What a durable `LocalStore::set` costs in I/O alone: `threads` writers put `count` values of
//! `size` bytes each, through `Store::put` (file synced before its rename, directory after) and
//! through the same temporary-file-and-rename write without the syncs (what `set` did before),
//! followed by a `sync` so both end with the data on disk. Run by bench/store/fsync.sh.
//!
//! `cargo run -p chunkmill-store --example durable_writes -- DIR COUNT SIZE THREADS`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chunkmill_store::Store;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn value(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| (i.wrapping_mul(31) ^ j) as u8).collect()
}

/// The write `set` made before it synced: a temporary file renamed into place.
fn put_unsynced(root: &Path, key: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{key}.tmp").replace('/', "_"));
    std::fs::File::create(&temp)?.write_all(bytes)?;
    std::fs::rename(&temp, &path)
}

fn run(
    threads: usize,
    count: usize,
    put: &(dyn Fn(usize) -> Result<(), Failure> + Sync),
) -> Result<f64, Failure> {
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<(), Failure> {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || (t..count).step_by(threads).try_for_each(put)))
            .collect();
        for h in handles {
            h.join().map_err(|_| "a writer panicked")??;
        }
        Ok(())
    })?;
    // Both variants end with their data on disk, so the comparison is of when it got there.
    std::process::Command::new("sync").status()?;
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, count, size, threads] = args.as_slice() else {
        return Err("usage: durable_writes DIR COUNT SIZE THREADS".into());
    };
    let (count, size, threads): (usize, usize, usize) =
        (count.parse()?, size.parse()?, threads.parse()?);
    let dir = PathBuf::from(dir);
    let values: Vec<Vec<u8>> = (0..count.min(64)).map(|i| value(i, size)).collect();
    let pick = |i: usize| &values[i % values.len()];

    let synced_root = dir.join("synced");
    let store = Store::open(synced_root.to_str().ok_or("path is not UTF-8")?)?;
    let synced = run(threads, count, &|i| {
        Ok(store.put(&format!("c/{}/{i}", i % 16), pick(i).clone())?)
    })?;

    let unsynced_root = dir.join("unsynced");
    let unsynced = run(threads, count, &|i| {
        Ok(put_unsynced(
            &unsynced_root,
            &format!("c/{}/{i}", i % 16),
            pick(i),
        )?)
    })?;
    std::fs::remove_dir_all(&synced_root)?;
    std::fs::remove_dir_all(&unsynced_root)?;
    let mb = (count * size) as f64 / 1e6;
    println!("values\tsize_bytes\tthreads\tMB\tsynced_s\tunsynced_then_sync_s");
    println!("{count}\t{size}\t{threads}\t{mb:.0}\t{synced:.2}\t{unsynced:.2}");
    Ok(())
}
