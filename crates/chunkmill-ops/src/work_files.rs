//! The kinds of what a job finds in its work dir and intermediates dir before it reads or
//! writes any of it. chunkmill writes only regular files and directories there, each name
//! always the same kind; anything else (a directory where a work file goes, a FIFO, a socket,
//! a device, a symbolic link leading out of the dir) was put there by someone else. Reading a
//! FIFO blocks forever and writing over a directory fails only after the target changed, so
//! each is refused (exit 3) before the first write, naming the path and what it is. Nothing is
//! opened to find out: only `lstat`/`stat`, which never block.

use std::ffi::OsStr;
use std::fs::FileType;
use std::path::{Path, PathBuf};

use chunkmill_store::Store;

use crate::OpsError;

/// The work dir's lock file (or lease object).
pub(crate) const LOCK_KEY: &str = "lock";
/// The cores a job's plan kinds were compared at.
pub(crate) const CORES_KEY: &str = "cores.json";
/// The cost coefficients a job's plan was built from.
pub(crate) const COSTS_KEY: &str = "costs.json";
/// An append's record.
pub(crate) const APPEND_KEY: &str = "append.json";
/// The directories of `--temp` a job created.
pub(crate) const CREATED_KEY: &str = "created.json";
/// The record of a swap under way.
pub(crate) const SWAP_KEY: &str = "swap.json";
/// The intermediates dir in a work dir, when no `--temp` is given.
pub(crate) const DEFAULT_TEMP: &str = "intermediate";

/// The regular files at the top of a work dir, by key.
const WORK_FILES: &[&str] = &[
    "plan.json",
    CORES_KEY,
    COSTS_KEY,
    APPEND_KEY,
    SWAP_KEY,
    LOCK_KEY,
    CREATED_KEY,
    "sources.json",
    "scan-inputs.txt",
];

/// The directories at the top of a work dir: the default intermediates, SLURM's logs,
/// virtualize's scan (and every plan's markers, named by the plan id).
const WORK_DIRS: &[&str] = &[DEFAULT_TEMP, "slurm-logs", "scan"];

/// The files in a plan's markers directory beside its stages: the record of completion and
/// the SLURM executor's record of its jobs.
const PLAN_FILES: &[&str] = &["complete.json", "slurm-jobs.json"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    File,
    Dir,
    Either,
}

/// A plan id: 16 lowercase hex digits (see `chunkmill_plan::Plan`).
fn is_plan_id(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What chunkmill keeps at `parts` (a path relative to the work dir).
fn expected_in_work_dir(parts: &[&OsStr]) -> Expect {
    match parts {
        [name] if WORK_FILES.iter().any(|f| OsStr::new(f) == *name) => Expect::File,
        [name] if WORK_DIRS.iter().any(|d| OsStr::new(d) == *name) || is_plan_id(name) => {
            Expect::Dir
        }
        [plan, name] if is_plan_id(plan) && PLAN_FILES.iter().any(|f| OsStr::new(f) == *name) => {
            Expect::File
        }
        // A stage's markers, one file per done task.
        [plan, _] if is_plan_id(plan) => Expect::Dir,
        [plan, _, _] if is_plan_id(plan) => Expect::File,
        _ => Expect::Either,
    }
}

/// Whether an entry at the top of a work dir is one chunkmill writes there: a work file, one
/// of its directories, a plan's markers, or the temporary file of a write a kill cut short.
/// The end of a run removes these and nothing else.
pub(crate) fn is_ours_in_work_dir(name: &OsStr) -> bool {
    matches!(expected_in_work_dir(&[name]), Expect::File | Expect::Dir)
        || name
            .to_str()
            .is_some_and(|n| n.ends_with(chunkmill_store::guard::PARTIAL_SUFFIX))
}

fn kind_of(t: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "of an unknown kind"
    }
}

/// One directory tree to judge: its canonical root (symbolic links must stay inside it) and
/// what it is called in messages.
struct Tree<'a> {
    root: PathBuf,
    role: &'a str,
    expect: fn(&[&OsStr]) -> Expect,
}

impl Tree<'_> {
    fn refuse(&self, path: &Path, what: &str) -> OpsError {
        OpsError::Refused(format!(
            "{}: {what}; chunkmill did not put it in {} (it writes only regular files and directories there, each name always of one kind) and would block or fail on it: remove it, or give another {}",
            path.display(),
            self.role,
            if self.role.contains("--temp") { "--temp" } else { "--work-dir" },
        ))
    }

    /// The kind `path` stands for: its own, or for a symbolic link leading inside the tree,
    /// its target's (`stat` does not open, so a FIFO cannot block it).
    fn resolve(&self, path: &Path, own: FileType) -> Result<FileType, OpsError> {
        if !own.is_symlink() {
            return Ok(own);
        }
        let target =
            std::fs::read_link(path).map_or_else(|_| "?".to_string(), |t| t.display().to_string());
        match std::fs::canonicalize(path) {
            Ok(real) if real.starts_with(&self.root) => std::fs::metadata(&real)
                .map(|m| m.file_type())
                .map_err(|e| self.refuse(path, &format!("is a symbolic link to {target} ({e})"))),
            Ok(real) => Err(self.refuse(
                path,
                &format!(
                    "is a symbolic link to {}, outside {}",
                    real.display(),
                    self.role
                ),
            )),
            Err(_) => Err(self.refuse(
                path,
                &format!("is a symbolic link to {target}, which does not exist"),
            )),
        }
    }

    fn check(&self, dir: &Path, parts: &mut Vec<std::ffi::OsString>) -> Result<(), OpsError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(OpsError::from(e).about(dir.display())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| OpsError::from(e).about(dir.display()))?;
            let path = entry.path();
            let own = entry
                .file_type()
                .map_err(|e| OpsError::from(e).about(path.display()))?;
            let kind = self.resolve(&path, own)?;
            parts.push(entry.file_name());
            let names: Vec<&OsStr> = parts.iter().map(std::ffi::OsString::as_os_str).collect();
            let expect = (self.expect)(&names);
            let wrong = match expect {
                Expect::File if !kind.is_file() => Some("a regular file"),
                Expect::Dir if !kind.is_dir() => Some("a directory"),
                _ if !kind.is_dir() && !kind.is_file() => Some("a regular file or directory"),
                _ => None,
            };
            if let Some(want) = wrong {
                return Err(self.refuse(
                    &path,
                    &format!("is {}, where chunkmill keeps {want}", kind_of(kind)),
                ));
            }
            // A linked directory inside the tree is judged where it is.
            if own.is_dir() {
                self.check(&path, parts)?;
            }
            parts.pop();
        }
        Ok(())
    }
}

/// Judges the tree at the local `url` (nothing to do for object stores, which hold only
/// objects, or a directory not made yet).
fn check_tree(url: &str, role: &str, expect: fn(&[&OsStr]) -> Expect) -> Result<(), OpsError> {
    let Some(path) = Store::open(url)?.local_path() else {
        return Ok(());
    };
    let Ok(root) = std::fs::canonicalize(&path) else {
        return Ok(());
    };
    if !root.is_dir() {
        // `check_paths` names a work dir or --temp that is a file.
        return Ok(());
    }
    Tree {
        root: root.clone(),
        role,
        expect,
    }
    .check(&root, &mut Vec::new())
}

/// Refuses a work dir holding anything chunkmill would not have written there: a work file
/// (`plan.json`, `cores.json`, the lock, markers, …) that is not a regular file, a directory
/// of ours that is not a directory, a FIFO, socket or device anywhere, or a symbolic link
/// leading out of the work dir. Called before anything reads or writes the work dir.
///
/// # Errors
/// [`OpsError::Refused`] naming the path and what it is.
pub fn check_work_dir(work_dir: &str) -> Result<(), OpsError> {
    check_tree(work_dir, "the work dir", expected_in_work_dir)
}

/// The work dir's store, once [`check_work_dir`] found nothing of another kind in it.
///
/// # Errors
/// As [`check_work_dir`], and [`OpsError`] when the store cannot be opened.
pub(crate) fn open_checked(work_dir: &str) -> Result<Store, OpsError> {
    check_work_dir(work_dir)?;
    Ok(Store::open(work_dir)?)
}

/// Refuses an intermediates dir (`--temp`) holding a FIFO, socket or device, or a symbolic
/// link leading out of it: a piece read from one would block or read what is not ours.
///
/// # Errors
/// [`OpsError::Refused`] naming the path and what it is.
pub(crate) fn check_temp_dir(temp: &str) -> Result<(), OpsError> {
    check_tree(temp, "the intermediates dir (--temp)", |_| Expect::Either)
}

/// Refuses a file chunkmill reads or replaces at `path` (a lock beside a target, a plan a
/// worker is given) that exists and is not a regular file, or a link to one.
///
/// # Errors
/// [`OpsError::Refused`] naming the path and what it is.
pub(crate) fn check_regular(path: &Path, what: &str) -> Result<(), OpsError> {
    let Ok(own) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let kind = if own.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(m) => m.file_type(),
            Err(_) => own.file_type(),
        }
    } else {
        own.file_type()
    };
    if kind.is_file() {
        return Ok(());
    }
    Err(OpsError::Refused(format!(
        "{}: {what} is {}, not a regular file, so chunkmill cannot read or replace it safely; remove it",
        path.display(),
        kind_of(kind)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn refused(work: &Path) -> Option<String> {
        match check_work_dir(&work.display().to_string()) {
            Err(OpsError::Refused(m)) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn a_work_dir_of_regular_files_and_directories_passes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let work = dir.path().join("w");
        std::fs::create_dir_all(work.join("0123456789abcdef/000-0"))?;
        std::fs::create_dir_all(work.join("intermediate/a0-s0"))?;
        std::fs::write(work.join("plan.json"), "{}")?;
        std::fs::write(work.join("cores.json"), "{}")?;
        std::fs::write(work.join("0123456789abcdef/000-0/3"), "{}")?;
        std::fs::write(work.join("0123456789abcdef/slurm-jobs.json"), "{}")?;
        std::fs::write(work.join("0123456789abcdef/complete.json"), "{}")?;
        std::fs::write(work.join("intermediate/a0-s0/3"), "x")?;
        std::os::unix::fs::symlink(work.join("plan.json"), work.join("notes"))?;
        assert_eq!(refused(&work), None);
        assert_eq!(refused(&dir.path().join("absent")), None);
        Ok(())
    }

    #[test]
    fn every_kind_we_never_write_is_refused_by_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let outside = dir.path().join("outside.json");
        std::fs::write(&outside, "{}")?;
        type Make = fn(&Path, &Path) -> std::io::Result<()>;
        let cases: [(&str, Make, &str); 6] = [
            ("cores.json", |p, _| std::fs::create_dir(p), "a directory"),
            ("plan.json", |p, _| mkfifo(p), "FIFO"),
            (
                "intermediate",
                |p, _| std::fs::write(p, "x"),
                "keeps a directory",
            ),
            (
                "0123456789abcdef",
                |p, _| std::fs::write(p, "x"),
                "keeps a directory",
            ),
            (
                "cores.json",
                |p, o| std::os::unix::fs::symlink(o, p),
                "outside",
            ),
            (
                "lock",
                |p, _| std::os::unix::fs::symlink("/nowhere/x", p),
                "does not exist",
            ),
        ];
        for (i, (name, make, says)) in cases.into_iter().enumerate() {
            let work = dir.path().join(format!("w{i}"));
            std::fs::create_dir(&work)?;
            make(&work.join(name), &outside)?;
            let message = refused(&work).ok_or(format!("{name}: not refused"))?;
            assert!(
                message.contains(name) && message.contains(says),
                "{message}"
            );
        }
        Ok(())
    }

    fn mkfifo(path: &Path) -> std::io::Result<()> {
        let status = std::process::Command::new("mkfifo").arg(path).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("mkfifo: {status}")))
        }
    }
}
