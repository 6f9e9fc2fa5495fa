//! Writing a file so that the output path holds either the old content or the whole new
//! content, never a part: write a temporary file next to it, flush and sync it, rename it.
//! Before any of that, [`guard_output`] decides whether the output may be written at all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chunkmill_store::guard::{self, GuardError, Lock, Protected, PARTIAL_SUFFIX};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        "{}{}.{n}{PARTIAL_SUFFIX}",
        temp_prefix(path),
        std::process::id()
    ))
}

/// What the names of `path`'s temporary files start with.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    format!(".{name}.")
}

/// Checks that a reference output may be written, before anything is read or written, and
/// holds a lock beside it until dropped:
///
/// * `output` must not be, hold or lie inside an input (`inputs`: local paths; URLs are never
///   the same as a local output), nor be the current directory or a parent of it;
/// * an existing `output` is refused without `overwrite`, and with it unless `is_ours` says it
///   is references of the requested format (`what`) or an empty directory;
/// * a second job writing `output` is refused naming the first (a lock file
///   `.<name>.chunkmill-lock` beside it), and temporary files that a killed run left beside
///   it are removed.
///
/// # Errors
/// [`Error::Guard`] (refused), [`Error::OutputExists`].
pub(crate) fn guard_output(
    output: &Path,
    inputs: &[String],
    overwrite: bool,
    what: &str,
    is_ours: impl Fn(&Path) -> bool,
) -> Result<Lock> {
    let shown = output.display().to_string();
    let protected: Vec<Protected> = inputs.iter().map(Protected::input).collect();
    guard::check_apart("--output", &shown, &protected)?;
    let exists = fs::symlink_metadata(output).is_ok();
    if exists && !overwrite {
        return Err(Error::OutputExists {
            path: output.to_path_buf(),
        });
    }
    let empty_dir = fs::read_dir(output).is_ok_and(|mut d| d.next().is_none());
    if exists && !empty_dir && !is_ours(output) {
        return Err(Error::Guard(GuardError::Refused {
            path: shown,
            reason: format!(
                "exists and is not {what}; --overwrite replaces only references chunkmill would write, so choose another --output or remove it yourself"
            ),
        }));
    }
    let canonical = guard::canonical(output)?;
    let parent = canonical.parent().unwrap_or(Path::new("/"));
    let name = canonical
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let dir = chunkmill_store::Store::open(&parent.display().to_string()).map_err(|e| {
        Error::Guard(GuardError::Refused {
            path: shown.clone(),
            reason: e.to_string(),
        })
    })?;
    let lock = Lock::acquire(
        &dir,
        &format!(".{name}.chunkmill-lock"),
        &format!("virtualize → {shown}"),
    )?;
    // Under the lock nobody else writes this output: its temporary files are a killed run's.
    let prefix = temp_prefix(output);
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(&prefix) && file.ends_with(PARTIAL_SUFFIX) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
    Ok(lock)
}

/// Whether `path` is a kerchunk JSON file: a JSON object whose first keys are kerchunk's
/// (`version` or `refs`). Only the first bytes are read.
pub(crate) fn is_kerchunk_json(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = File::open(path) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::with_capacity(4096);
    if file.take(4096).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    let text = text.trim_start();
    text.starts_with('{') && (text.contains("\"version\"") || text.contains("\"refs\""))
}

/// Writes `path` through `write`, atomically. Refuses an existing `path` unless `overwrite`.
/// Returns the number of bytes written.
///
/// # Errors
/// [`Error::OutputExists`], or [`Error::Write`] when writing, syncing or renaming fails (or
/// `write` fails); the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic(
    path: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<u64> {
    if !overwrite && path.exists() {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    let tmp = temp_path(path);
    let result = (|| -> io::Result<u64> {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &file);
            write(&mut w)?;
            w.flush()?;
        }
        file.sync_all()?;
        let len = file.metadata()?.len();
        drop(file);
        if !overwrite && path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "output appeared while writing",
            ));
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename durable; not every platform can open a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(len)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        if source.kind() == io::ErrorKind::AlreadyExists && !overwrite {
            Error::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Fills a new directory at `dir` through `fill` (which gets a temporary directory next to
/// `dir` and writes everything there), then renames it into place: `dir` holds either what
/// it held before or the whole new content. Refuses an existing `dir` unless `overwrite`;
/// with `overwrite`, the old content is moved aside, the new one renamed in, the old removed.
///
/// # Errors
/// [`Error::OutputExists`]; the error of `fill`; [`Error::Write`] when the directory cannot
/// be created or renamed. The temporary directory is removed on any error.
pub(crate) fn write_dir_atomic(
    dir: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<u64>,
) -> Result<u64> {
    let exists = || fs::symlink_metadata(dir).is_ok();
    if !overwrite && exists() {
        return Err(Error::OutputExists {
            path: dir.to_path_buf(),
        });
    }
    let write_err = |source: io::Error| Error::Write {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(write_err)?;
    }
    let tmp = temp_path(dir);
    fs::create_dir(&tmp).map_err(write_err)?;
    let result = fill(&tmp).and_then(|bytes| {
        sync_dir(&tmp);
        if exists() {
            if !overwrite {
                return Err(Error::OutputExists {
                    path: dir.to_path_buf(),
                });
            }
            let old = temp_path(dir);
            fs::rename(dir, &old).map_err(write_err)?;
            if let Err(e) = fs::rename(&tmp, dir) {
                // Put the old content back.
                let _ = fs::rename(&old, dir);
                return Err(write_err(e));
            }
            let _ = if old.is_dir() {
                fs::remove_dir_all(&old)
            } else {
                fs::remove_file(&old)
            };
        } else {
            fs::rename(&tmp, dir).map_err(write_err)?;
        }
        if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(parent);
        }
        Ok(bytes)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Makes renames in `dir` durable, where the platform can open a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir =
            std::env::temp_dir().join(format!("chunkmill-manifest-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let out = dir.join("refs.json");
        let _ = fs::remove_file(&out);
        let err = write_atomic(&out, false, |w| {
            w.write_all(b"{\"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(matches!(err, Err(Error::Write { .. })));
        assert!(!out.exists());
        assert_eq!(fs::read_dir(&dir)?.count(), 0, "temporary file left behind");
        assert_eq!(write_atomic(&out, false, |w| w.write_all(b"{}"))?, 2);
        assert!(matches!(
            write_atomic(&out, false, |w| w.write_all(b"{}")),
            Err(Error::OutputExists { .. })
        ));
        assert_eq!(write_atomic(&out, true, |w| w.write_all(b"[1]"))?, 3);
        assert_eq!(fs::read_to_string(&out)?, "[1]");
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
