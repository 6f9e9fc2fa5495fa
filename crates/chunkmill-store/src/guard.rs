//! Data safety: which paths a job may write, replace or delete, decided in one place.
//!
//! * [`place`] — a URL or path made canonical (symlinks, `.`, `..`, trailing `/`, relative vs
//!   absolute; a path that does not exist yet is its nearest existing ancestor, canonical, plus
//!   the rest), so two names of one directory compare equal.
//! * [`check_apart`] — refuses a target, work dir or intermediates dir that is, holds or lies
//!   inside an input (or the target), or that is the current directory or one of its parents.
//! * [`existing_zarr`] — what is at a target now: nothing, an empty directory, or a Zarr
//!   store; anything else is refused, since `--overwrite` replaces only what chunkmill would
//!   have written.
//! * [`staging_of`] / [`swap_in`] — a local target replaced by `--overwrite` is written beside
//!   it and swapped in once complete, so a failed run leaves the old one.
//! * [`Lock`] — one job at a time per work dir and target: a lock file created exclusively
//!   (a lease object with an expiry on object stores); a stale lock of a dead process on this
//!   host is taken over.
//! * [`sweep_partials`] — removes the temporary files of our atomic writes that a killed
//!   process left.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Store, StoreError, StoreKind};

/// Suffix of the temporary files of every atomic write chunkmill makes (store values,
/// reference outputs): such a file is never read as a value, and a resumed run removes it.
pub const PARTIAL_SUFFIX: &str = ".chunkmill-partial";

/// Keys at the root of a Zarr store that make it one (v3, v2 group, v2 array).
const ZARR_ROOT_KEYS: [&str; 3] = ["zarr.json", ".zgroup", ".zarray"];

/// Why a path may not be used, or a lock not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Writing there could lose data that chunkmill did not write (exit 3).
    #[error("{path}: {reason}")]
    Refused {
        /// The path or URL as the user gave it.
        path: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// Another job holds the lock (exit 3).
    #[error("{path}: in use by another chunkmill job ({holder}); wait for it to finish, or remove {path} if that job is gone")]
    Locked {
        /// The lock file or object.
        path: String,
        /// Who holds it: pid, host, since when.
        holder: String,
    },
    /// The filesystem failed while checking or moving.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The store failed while checking.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where a URL points, in a form where equal means the same place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A local path: absolute, symlinks resolved.
    Local(PathBuf),
    /// An object-store location: scheme, then bucket (or store name) and key segments.
    Remote(Vec<String>),
}

/// How two places lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The same place.
    Same,
    /// The first lies inside the second.
    Inside,
    /// The first holds the second.
    Holds,
    /// Neither holds the other.
    Apart,
}

impl Place {
    /// How `self` lies with respect to `other`.
    #[must_use]
    pub fn relation(&self, other: &Place) -> Relation {
        match (self, other) {
            (Place::Local(a), Place::Local(b)) => relate(a.starts_with(b), b.starts_with(a)),
            (Place::Remote(a), Place::Remote(b)) => relate(a.starts_with(b), b.starts_with(a)),
            _ => Relation::Apart,
        }
    }

    /// The local path, if local.
    #[must_use]
    pub fn local(&self) -> Option<&Path> {
        match self {
            Place::Local(p) => Some(p),
            Place::Remote(_) => None,
        }
    }
}

fn relate(a_in_b: bool, b_in_a: bool) -> Relation {
    match (a_in_b, b_in_a) {
        (true, true) => Relation::Same,
        (true, false) => Relation::Inside,
        (false, true) => Relation::Holds,
        (false, false) => Relation::Apart,
    }
}

/// `path` absolute with symlinks resolved; for a path that does not exist (yet), its nearest
/// existing ancestor resolved and the rest appended (`.` dropped, `..` taken lexically, which
/// is exact there since a missing directory holds no symlink).
///
/// # Errors
/// [`GuardError::Io`] when the current directory is unknown or an ancestor cannot be read;
/// [`GuardError::Refused`] for a dangling symbolic link (it would be written through).
pub fn canonical(path: &Path) -> Result<PathBuf, GuardError> {
    let absolute = std::path::absolute(path).map_err(io_error(path))?;
    let parts: Vec<Component<'_>> = absolute.components().collect();
    for keep in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..keep].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut resolved) => {
                for part in &parts[keep..] {
                    match part {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::Normal(name) => resolved.push(name),
                        _ => {}
                    }
                }
                return Ok(resolved);
            }
            Err(e) if is_missing(&e) => {
                if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(GuardError::Refused {
                        path: prefix.display().to_string(),
                        reason: "a symbolic link to nothing; chunkmill does not write through it"
                            .into(),
                    });
                }
            }
            Err(e) => return Err(io_error(&prefix)(e)),
        }
    }
    Ok(absolute)
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The place a store URL (a path, `file://`, `s3://`, `memory://`) names.
///
/// # Errors
/// As [`canonical`], for local paths.
pub fn place(url: &str) -> Result<Place, GuardError> {
    match url.split_once("://") {
        Some(("file", path)) => Ok(Place::Local(canonical(Path::new(path))?)),
        Some((scheme, rest)) => {
            let mut parts = vec![scheme.to_string()];
            parts.extend(
                rest.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            Ok(Place::Remote(parts))
        }
        None => Ok(Place::Local(canonical(Path::new(if url.is_empty() {
            "/"
        } else {
            url
        }))?)),
    }
}

/// Something a job must not write into: its name in messages (`the input`, `the target`)
/// and its URL or path.
#[derive(Clone, Debug)]
pub struct Protected {
    /// `the input`, `the source`, `the target`…
    pub what: &'static str,
    /// The URL or path as given.
    pub url: String,
}

impl Protected {
    /// An input (file, store, reference file) of the job.
    #[must_use]
    pub fn input(url: impl Into<String>) -> Self {
        Self {
            what: "the input",
            url: url.into(),
        }
    }
}

/// Refuses `url` as `role` (`the target`, `the work dir`, …) when it is, holds or lies inside
/// one of `protected`, or is the current directory or one of its parents.
///
/// # Errors
/// [`GuardError::Refused`] naming `url` and what it collides with; [`GuardError::Io`].
pub fn check_apart(role: &str, url: &str, protected: &[Protected]) -> Result<(), GuardError> {
    let here = place(url)?;
    let refuse = |reason: String| GuardError::Refused {
        path: url.to_string(),
        reason,
    };
    if let Place::Local(path) = &here {
        let cwd = std::env::current_dir().map_err(io_error(Path::new(".")))?;
        let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
        if cwd.starts_with(path) {
            return Err(refuse(format!(
                "{role} is {}the current directory{}; chunkmill never writes there",
                if cwd == *path { "" } else { "a parent of " },
                shown_canonical(url, path),
            )));
        }
    }
    for other in protected {
        let there = place(&other.url)?;
        let how = match here.relation(&there) {
            Relation::Apart => continue,
            Relation::Same => "is",
            Relation::Inside => "lies inside",
            Relation::Holds => "holds",
        };
        let never = if other.what == "the target" {
            "keep them apart"
        } else {
            "chunkmill never writes to, replaces or deletes what it reads"
        };
        return Err(refuse(format!(
            "{role} {how} {} {}{}; {never}",
            other.what,
            other.url,
            match &there {
                Place::Local(p) => shown_canonical(&other.url, p),
                Place::Remote(_) => String::new(),
            }
        )));
    }
    Ok(())
}

/// Refuses a local target that lies inside an existing Zarr store (a directory above it holds
/// `zarr.json`, `.zgroup` or `.zarray`): writing there would add a node to someone else's
/// hierarchy, changing what that store reads as. Object-store targets are not walked (a
/// prefix has no parent directories to find).
///
/// # Errors
/// [`GuardError::Refused`] naming the store; [`GuardError::Io`].
pub fn check_not_inside_zarr(role: &str, url: &str) -> Result<(), GuardError> {
    let Place::Local(path) = place(url)? else {
        return Ok(());
    };
    for ancestor in path.ancestors().skip(1) {
        if ZARR_ROOT_KEYS
            .iter()
            .any(|name| ancestor.join(name).is_file())
        {
            return Err(GuardError::Refused {
                path: url.to_string(),
                reason: format!(
                    "{role} lies inside the Zarr store {}, which writing there would change; \
                     choose a target outside it",
                    ancestor.display()
                ),
            });
        }
    }
    Ok(())
}

/// ` (/abs/path)` when the canonical path reads differently from what was given.
fn shown_canonical(given: &str, path: &Path) -> String {
    let given = given.strip_prefix("file://").unwrap_or(given);
    if Path::new(given) == path {
        String::new()
    } else {
        format!(" ({})", path.display())
    }
}

/// What is at a target before a job writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing (or, on an object store, no object under the prefix).
    Absent,
    /// An empty directory (temporary files of our writes aside).
    Empty,
    /// A Zarr store: metadata at its root.
    Zarr,
}

/// What is at the target `store` (shown as `shown`): refuses anything that is not absent,
/// empty or a Zarr store, because that is not what chunkmill writes.
///
/// # Errors
/// [`GuardError::Refused`] for a file, a symbolic link to a file, or a directory or prefix
/// without Zarr metadata at its root; [`GuardError::Io`] / [`GuardError::Store`].
pub fn existing_zarr(store: &Store, shown: &str) -> Result<Existing, GuardError> {
    let not_ours = |what: &str| {
        GuardError::Refused {
        path: shown.to_string(),
        reason: format!(
            "exists and {what} (no zarr.json, .zgroup or .zarray at its root); --overwrite replaces only a Zarr store, so choose another target or remove it yourself"
        ),
    }
    };
    if let Some(path) = store.local_path() {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => return Ok(Existing::Absent),
            Err(e) => return Err(io_error(&path)(e)),
        };
        if !meta.is_dir() {
            return Err(not_ours("is a file, not a Zarr store"));
        }
        let mut any = false;
        for entry in std::fs::read_dir(&path).map_err(io_error(&path))? {
            let name = entry.map_err(io_error(&path))?.file_name();
            let name = name.to_string_lossy();
            if ZARR_ROOT_KEYS.contains(&name.as_ref()) {
                return Ok(Existing::Zarr);
            }
            any |= !name.ends_with(PARTIAL_SUFFIX);
        }
        return if any {
            Err(not_ours("is not a Zarr store"))
        } else {
            Ok(Existing::Empty)
        };
    }
    if ZARR_ROOT_KEYS
        .iter()
        .map(|k| store.exists(k))
        .collect::<Result<Vec<_>, _>>()?
        .contains(&true)
    {
        return Ok(Existing::Zarr);
    }
    if store.is_empty()? {
        Ok(Existing::Absent)
    } else {
        Err(not_ours("holds objects but is not a Zarr store"))
    }
}

/// Where a local target replaced by `--overwrite` is written until it is complete:
/// `.<name>.chunkmill-new` beside it (a fixed name, so a resumed run finds it).
#[must_use]
pub fn staging_of(target: &Path) -> PathBuf {
    sibling(target, "chunkmill-new")
}

/// Where the old target is moved while the new one takes its place.
fn retired_of(target: &Path) -> PathBuf {
    sibling(target, "chunkmill-old")
}

fn sibling(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| OsString::from("target"), OsString::from);
    let mut sibling = OsString::from(".");
    sibling.push(name);
    sibling.push(".");
    sibling.push(tag);
    target.with_file_name(sibling)
}

/// Identifies a directory across renames (device and inode), so a resumed swap can tell
/// the new store from the old whatever their names are at that moment.
///
/// # Errors
/// [`GuardError::Io`] when `path` cannot be read.
pub fn identity(path: &Path) -> Result<(u64, u64), GuardError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    Ok((meta.dev(), meta.ino()))
}

fn identity_if_present(path: &Path) -> Option<(u64, u64)> {
    identity(path).ok()
}

/// Puts the complete new store `staging` (whose [`identity`] is `new`) at `target`: the two
/// are exchanged in one atomic rename where the filesystem can (Linux `RENAME_EXCHANGE`), so
/// `target` always holds the old or the new store, never nothing; elsewhere the old one is
/// renamed aside first. Then the old one is removed. Safe to call again after a crash at any
/// point (it looks where the new store is), which a resumed run does.
///
/// # Errors
/// [`GuardError::Io`] when a rename or the removal fails; [`GuardError::Refused`] when the
/// new store is at neither path. The old target is at `target`, at `staging` or at
/// `.<name>.chunkmill-old` beside it, never lost.
pub fn swap_in(target: &Path, staging: &Path, new: (u64, u64)) -> Result<(), GuardError> {
    let retired = retired_of(target);
    if identity_if_present(target) != Some(new) {
        if identity_if_present(staging) != Some(new) {
            return Err(GuardError::Refused {
                path: staging.display().to_string(),
                reason: format!(
                    "the new store to put at {} is gone; run again without --resume",
                    target.display()
                ),
            });
        }
        if std::fs::symlink_metadata(target).is_ok() {
            if !exchange(target, staging)? {
                if std::fs::symlink_metadata(&retired).is_ok() {
                    std::fs::remove_dir_all(&retired).map_err(io_error(&retired))?;
                }
                std::fs::rename(target, &retired).map_err(io_error(target))?;
                std::fs::rename(staging, target).map_err(io_error(staging))?;
            }
        } else {
            std::fs::rename(staging, target).map_err(io_error(staging))?;
        }
        sync_parent(target);
    }
    // The new store is at `target`; what is left at the other names is the old one.
    for old in [staging, retired.as_path()] {
        if std::fs::symlink_metadata(old).is_ok() {
            std::fs::remove_dir_all(old).map_err(io_error(old))?;
        }
    }
    Ok(())
}

/// Exchanges two paths atomically; `Ok(false)` where the filesystem or platform cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool, GuardError> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| GuardError::Io {
            path: p.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both strings are NUL-terminated and live across the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => Ok(false),
        _ => Err(io_error(a)(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool, GuardError> {
    Ok(false)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Removes every temporary file of our atomic writes (`*.chunkmill-partial`) under `root`
/// (not following symbolic links); returns how many. A missing `root` has none.
///
/// # Errors
/// [`GuardError::Io`] when a directory cannot be read or a file removed.
pub fn sweep_partials(root: &Path) -> Result<usize, GuardError> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(io_error(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let kind = entry.file_type().map_err(io_error(&entry.path()))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if entry
                .file_name()
                .to_string_lossy()
                .ends_with(PARTIAL_SUFFIX)
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(io_error(&entry.path())(e)),
                }
            }
        }
    }
    Ok(removed)
}

/// Removes the empty directories under `root` (not `root` itself), deepest first: what
/// erasing every key of a local store leaves.
///
/// # Errors
/// [`GuardError::Io`] when a directory cannot be read.
pub fn prune_empty_dirs(root: &Path) -> Result<(), GuardError> {
    fn prune(dir: &Path) -> Result<bool, GuardError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if is_missing(&e) => return Ok(true),
            Err(e) => return Err(io_error(dir)(e)),
        };
        let mut empty = true;
        for entry in entries {
            let entry = entry.map_err(io_error(dir))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && prune(&entry.path())? {
                empty &= std::fs::remove_dir(entry.path()).is_ok();
            } else {
                empty = false;
            }
        }
        Ok(empty)
    }
    prune(root).map(|_| ())
}

/// Who holds a lock: written into it, read by whoever finds it taken.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Holder {
    pid: u32,
    host: String,
    /// Unix seconds when the lock was taken.
    started: u64,
    /// The holder's start time in clock ticks after boot (Linux), to tell a reused pid.
    #[serde(default)]
    process_start: Option<u64>,
    /// Unix seconds after which a lease (object stores) is free; `None` for lock files.
    #[serde(default)]
    expires: Option<u64>,
    /// The job, for people reading the lock.
    #[serde(default)]
    job: String,
}

impl Holder {
    fn me(job: &str, expires: Option<u64>) -> Self {
        let pid = std::process::id();
        Self {
            pid,
            host: host_name(),
            started: now(),
            process_start: process_start(pid),
            expires,
            job: job.to_string(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "pid {} on host {}, started {} s ago{}",
            self.pid,
            self.host,
            now().saturating_sub(self.started),
            if self.job.is_empty() {
                String::new()
            } else {
                format!(": {}", self.job)
            }
        )
    }

    /// True when the holder is a process of this host that no longer runs.
    fn is_dead_here(&self) -> bool {
        if self.host != host_name() {
            return false;
        }
        if self.pid == std::process::id() {
            return false;
        }
        !process_alive(self.pid, self.process_start)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks after boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(id) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(id, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match (start, process_start(pid)) {
        // The pid was given to another process since.
        (Some(then), Some(now)) => then == now,
        _ => true,
    }
}

/// Lease length on object stores, and how often the holder renews it.
const LEASE: Duration = Duration::from_secs(300);
const RENEW: Duration = Duration::from_secs(60);

/// A lock held by this process until dropped. On a local filesystem it is a file created
/// exclusively (by a hard link, atomic on NFS too); on an object store it is a lease object
/// renewed by a thread, which others may take over once it expires.
#[derive(Debug)]
pub struct Lock {
    kind: LockKind,
}

#[derive(Debug)]
enum LockKind {
    File {
        path: PathBuf,
        /// Directories created to hold the lock, outermost first: removed again when empty.
        created: Vec<PathBuf>,
    },
    Lease {
        store: Store,
        key: String,
        holder: Holder,
        stop: Arc<AtomicBool>,
        renewer: Option<std::thread::JoinHandle<()>>,
    },
}

impl Lock {
    /// Takes the lock at `key` of `store` for `job` (a short description for whoever finds
    /// it taken).
    ///
    /// # Errors
    /// [`GuardError::Locked`] naming the holder when a live job holds it;
    /// [`GuardError::Io`] / [`GuardError::Store`] when it cannot be written.
    pub fn acquire(store: &Store, key: &str, job: &str) -> Result<Lock, GuardError> {
        match store.local_path() {
            Some(dir) => Self::acquire_file(&dir.join(key), job),
            None => Self::acquire_lease(store, key, job),
        }
    }

    fn acquire_file(path: &Path, job: &str) -> Result<Lock, GuardError> {
        let created = create_dirs(path.parent().unwrap_or(Path::new("/")))?;
        // Built only once the lock is ours: dropping it removes the lock file.
        let lock = || Lock {
            kind: LockKind::File {
                path: path.to_path_buf(),
                created: created.clone(),
            },
        };
        let result = Self::link_lock_file(path, job);
        if result.is_err() {
            for dir in created.iter().rev() {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
        result.map(|()| lock())
    }

    /// Creates the lock file at `path` atomically, taking over a stale one.
    fn link_lock_file(path: &Path, job: &str) -> Result<(), GuardError> {
        let me = Holder::me(job, None);
        let text = serde_json::to_vec_pretty(&me).map_err(|e| GuardError::Io {
            path: path.display().to_string(),
            source: io::Error::other(e),
        })?;
        let prefix = format!(
            ".{}.",
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        sweep_lock_temps(path.parent().unwrap_or(Path::new("/")), &prefix);
        let temp = path.with_file_name(format!("{prefix}{}{PARTIAL_SUFFIX}", me.pid));
        // Twice at most: a second time after removing a stale lock.
        for _ in 0..2 {
            std::fs::write(&temp, &text).map_err(io_error(&temp))?;
            let linked = std::fs::hard_link(&temp, path);
            let _ = std::fs::remove_file(&temp);
            match linked {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(path)(e)),
            }
            let found = std::fs::read(path).ok();
            let holder = found
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Holder>(b).ok());
            match holder {
                Some(h) if h.is_dead_here() => {
                    tracing::warn!(
                        "{}: taking over the lock of {}",
                        path.display(),
                        h.describe()
                    );
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if is_missing(&e) => {}
                        Err(e) => return Err(io_error(path)(e)),
                    }
                }
                Some(h) => {
                    return Err(GuardError::Locked {
                        path: path.display().to_string(),
                        holder: h.describe(),
                    })
                }
                None => {
                    return Err(GuardError::Locked {
                        path: path.display().to_string(),
                        holder: "an unreadable lock file".into(),
                    })
                }
            }
        }
        Err(GuardError::Locked {
            path: path.display().to_string(),
            holder: "another job that took it at the same moment".into(),
        })
    }

    fn acquire_lease(store: &Store, key: &str, job: &str) -> Result<Lock, GuardError> {
        let shown = store.join(key);
        if let Some(value) = store.get(key)? {
            if let Ok(h) = serde_json::from_slice::<Holder>(&value) {
                let expired = h.expires.is_some_and(|e| e < now());
                if !expired && !h.is_dead_here() {
                    return Err(GuardError::Locked {
                        path: shown,
                        holder: h.describe(),
                    });
                }
            }
        }
        let me = Holder::me(job, Some(now() + LEASE.as_secs()));
        store.put(key, store.json_bytes(key, &me, true)?)?;
        // Object stores have no exclusive create here: read back, so that of two jobs that
        // wrote at once, the one whose lease was overwritten gives way.
        if store.kind() != StoreKind::Memory {
            std::thread::sleep(Duration::from_millis(200));
        }
        let back = store
            .get(key)?
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
        if back.as_ref() != Some(&me) {
            return Err(GuardError::Locked {
                path: shown,
                holder: back.map_or_else(|| "a job that removed it".into(), |h| h.describe()),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, key, stop, mut holder) =
                (store.clone(), key.to_string(), stop.clone(), me.clone());
            std::thread::Builder::new()
                .name("chunkmill-lease".into())
                .spawn(move || {
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        waited += Duration::from_millis(200);
                        if waited >= RENEW {
                            waited = Duration::ZERO;
                            holder.expires = Some(now() + LEASE.as_secs());
                            let put = store
                                .json_bytes(&key, &holder, true)
                                .and_then(|bytes| store.put(&key, bytes));
                            if let Err(e) = put {
                                tracing::warn!("cannot renew the lease {key}: {e}");
                            }
                        }
                    }
                })
                .ok()
        };
        Ok(Lock {
            kind: LockKind::Lease {
                store: store.clone(),
                key: key.to_string(),
                holder: me,
                stop,
                renewer,
            },
        })
    }
}

/// Removes the temporary files `<prefix><pid>.chunkmill-partial` of lock files that
/// processes of this host left when killed between writing and linking them.
fn sweep_lock_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(PARTIAL_SUFFIX))
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && !process_alive(pid, None)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Creates `dir` and its missing ancestors; returns those it created, outermost first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>, GuardError> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(d)(e)),
        }
    }
    Ok(missing)
}

impl Drop for Lock {
    fn drop(&mut self) {
        match &mut self.kind {
            LockKind::File { path, created } => {
                let _ = std::fs::remove_file(&*path);
                // Leave no directory made only to hold the lock (a refused run writes nothing).
                for dir in created.iter().rev() {
                    if std::fs::remove_dir(dir).is_err() {
                        break;
                    }
                }
            }
            LockKind::Lease {
                store,
                key,
                holder,
                stop,
                renewer,
            } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(handle) = renewer.take() {
                    let _ = handle.join();
                }
                let ours = store
                    .get(key)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
                    .is_some_and(|h| h.pid == holder.pid && h.host == holder.host);
                if ours {
                    let _ = store.erase(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn local(p: &Path) -> String {
        p.display().to_string()
    }

    #[test]
    fn dot_trailing_slash_dotdot_relative_and_symlink_names_are_one_place() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let src = tmp.path().join("src.zarr");
        std::fs::create_dir_all(src.join("inner"))?;
        let link = tmp.path().join("alias.zarr");
        std::os::unix::fs::symlink(&src, &link)?;
        let want = place(&local(&src))?;
        for alias in [
            format!("{}/", src.display()),
            format!("{}/./", src.display()),
            format!("{}/inner/..", src.display()),
            format!("file://{}", src.display()),
            local(&link),
        ] {
            assert_eq!(place(&alias)?, want, "{alias}");
        }
        let relative = pathdiff(&src)?;
        assert_eq!(place(&relative)?, want, "{relative}");
        Ok(())
    }

    /// `src` relative to the current directory (`../../…/src.zarr`).
    fn pathdiff(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
        let cwd = std::fs::canonicalize(std::env::current_dir()?)?;
        let up = cwd.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        let canonical = std::fs::canonicalize(path)?;
        rel.push(canonical.strip_prefix("/")?);
        Ok(local(&rel))
    }

    #[test]
    fn a_missing_path_is_its_nearest_existing_ancestor_plus_the_rest() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let real = std::fs::canonicalize(tmp.path())?;
        let link = tmp.path().join("via");
        std::os::unix::fs::symlink(&real, &link)?;
        let p = canonical(&link.join("new/./deeper/../out.zarr/"))?;
        assert_eq!(p, real.join("new/out.zarr"));
        Ok(())
    }

    #[test]
    fn a_dangling_symlink_is_refused() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link)?;
        assert!(matches!(
            canonical(&link.join("x")),
            Err(GuardError::Refused { .. })
        ));
        Ok(())
    }

    #[test]
    fn relations_of_local_and_remote_places() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let a = place(&local(&tmp.path().join("a")))?;
        let ab = place(&local(&tmp.path().join("a/b")))?;
        let abc = place(&local(&tmp.path().join("abc")))?;
        assert_eq!(a.relation(&a), Relation::Same);
        assert_eq!(ab.relation(&a), Relation::Inside);
        assert_eq!(a.relation(&ab), Relation::Holds);
        // By components, not characters: `abc` is not inside `a`.
        assert_eq!(abc.relation(&a), Relation::Apart);
        let s3 = |u: &str| place(u);
        assert_eq!(s3("s3://b/x/")?.relation(&s3("s3://b/x")?), Relation::Same);
        assert_eq!(
            s3("s3://b/x/y")?.relation(&s3("s3://b/x")?),
            Relation::Inside
        );
        assert_eq!(s3("s3://b/xy")?.relation(&s3("s3://b/x")?), Relation::Apart);
        assert_eq!(s3("s3://b")?.relation(&s3("s3://b/x")?), Relation::Holds);
        assert_eq!(s3("s3://c/x")?.relation(&s3("s3://b/x")?), Relation::Apart);
        assert_eq!(
            s3("memory://b/x")?.relation(&s3("s3://b/x")?),
            Relation::Apart
        );
        assert_eq!(a.relation(&s3("s3://b/a")?), Relation::Apart);
        Ok(())
    }

    #[test]
    fn a_target_that_is_holds_or_lies_inside_an_input_is_refused() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let src = tmp.path().join("src.zarr");
        std::fs::create_dir_all(&src)?;
        let inputs = [Protected::input(local(&src))];
        for (target, word) in [
            (format!("{}/", src.display()), " is the input"),
            (local(&src.join("inner.zarr")), " lies inside the input"),
            (local(tmp.path()), " holds the input"),
        ] {
            let err = check_apart("the target", &target, &inputs)
                .err()
                .ok_or("accepted")?;
            assert!(matches!(err, GuardError::Refused { .. }), "{err}");
            assert!(err.to_string().contains(word), "{err}");
            assert!(err.to_string().starts_with(&target), "{err}");
        }
        check_apart("the target", &local(&tmp.path().join("t.zarr")), &inputs)?;
        Ok(())
    }

    #[test]
    fn a_target_inside_a_zarr_store_that_is_no_input_is_refused() -> TestResult {
        let tmp = tempfile::tempdir()?;
        for (store, key) in [("v3.zarr", "zarr.json"), ("v2.zarr", ".zgroup")] {
            let root = tmp.path().join(store);
            std::fs::create_dir_all(root.join("air"))?;
            std::fs::write(root.join(key), "{}")?;
            for target in [root.join("inner.zarr"), root.join("air/deeper.zarr")] {
                let err = check_not_inside_zarr("the target", &local(&target))
                    .err()
                    .ok_or("accepted")?;
                assert!(
                    err.to_string().contains("lies inside the Zarr store"),
                    "{err}"
                );
            }
        }
        check_not_inside_zarr("the target", &local(&tmp.path().join("free.zarr")))?;
        Ok(())
    }

    #[test]
    fn the_current_directory_and_its_parents_are_refused() -> TestResult {
        let cwd = std::env::current_dir()?;
        for target in [
            ".".to_string(),
            "./".into(),
            "..".into(),
            local(&cwd),
            "/".into(),
        ] {
            let err = check_apart("the target", &target, &[])
                .err()
                .ok_or("accepted")?;
            assert!(err.to_string().contains("current directory"), "{err}");
        }
        check_apart("the target", "./not-there-yet.zarr", &[])?;
        Ok(())
    }

    #[test]
    fn only_absent_empty_or_zarr_targets_are_accepted() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let at = |name: &str| -> Result<Existing, GuardError> {
            let p = tmp.path().join(name);
            existing_zarr(&Store::open(&local(&p))?, &local(&p))
        };
        assert_eq!(at("absent")?, Existing::Absent);
        std::fs::create_dir(tmp.path().join("empty"))?;
        std::fs::write(tmp.path().join("empty/.x.1.2.chunkmill-partial"), b"")?;
        assert_eq!(at("empty")?, Existing::Empty);
        for (dir, key) in [("v3", "zarr.json"), ("v2g", ".zgroup"), ("v2a", ".zarray")] {
            std::fs::create_dir(tmp.path().join(dir))?;
            std::fs::write(tmp.path().join(dir).join(key), b"{}")?;
            assert_eq!(at(dir)?, Existing::Zarr);
        }
        std::fs::create_dir(tmp.path().join("precious"))?;
        std::fs::write(tmp.path().join("precious/thesis.tex"), b"x")?;
        std::fs::write(tmp.path().join("a.nc"), b"x")?;
        for name in ["precious", "a.nc"] {
            let err = at(name).err().ok_or("accepted")?;
            assert!(err.to_string().contains("not a Zarr store"), "{err}");
        }
        let mem = Store::open("memory://guard-test-prefix")?;
        assert_eq!(existing_zarr(&mem, "m")?, Existing::Absent);
        mem.put("notes.txt", b"x".to_vec())?;
        assert!(existing_zarr(&mem, "m").is_err());
        mem.put("zarr.json", b"{}".to_vec())?;
        assert_eq!(existing_zarr(&mem, "m")?, Existing::Zarr);
        Ok(())
    }

    #[test]
    fn a_swap_interrupted_anywhere_completes_when_run_again() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let target = tmp.path().join("t.zarr");
        let staging = staging_of(&target);
        let retired = retired_of(&target);
        let fill = |dir: &Path, text: &str| -> io::Result<()> {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("zarr.json"), text)
        };
        let check = || -> TestResult {
            assert_eq!(std::fs::read_to_string(target.join("zarr.json"))?, "new");
            assert!(!staging.exists() && !retired.exists());
            Ok(())
        };
        // Not started.
        fill(&target, "old")?;
        fill(&staging, "new")?;
        let new = identity(&staging)?;
        swap_in(&target, &staging, new)?;
        check()?;
        // Again once done: nothing to do.
        swap_in(&target, &staging, new)?;
        check()?;
        // Killed after the exchange: the old store is at the staging name.
        let new = identity(&target)?;
        fill(&staging, "old")?;
        swap_in(&target, &staging, new)?;
        check()?;
        // Killed after the old target was renamed aside (no exchange on this filesystem).
        std::fs::rename(&target, &staging)?;
        fill(&retired, "old")?;
        swap_in(&target, &staging, new)?;
        check()?;
        // The new store is nowhere: refused, the target left alone.
        let err = swap_in(&target, &staging, (0, 0)).err().ok_or("accepted")?;
        assert!(matches!(err, GuardError::Refused { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(target.join("zarr.json"))?, "new");
        Ok(())
    }

    #[test]
    fn sweeping_removes_only_partial_files() -> TestResult {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir_all(tmp.path().join("a/b"))?;
        std::fs::write(tmp.path().join("a/b/.c.1.2.chunkmill-partial"), b"x")?;
        std::fs::write(tmp.path().join(".d.9.chunkmill-partial"), b"x")?;
        std::fs::write(tmp.path().join("a/b/c"), b"x")?;
        assert_eq!(sweep_partials(tmp.path())?, 2);
        assert!(tmp.path().join("a/b/c").exists());
        assert_eq!(sweep_partials(&tmp.path().join("missing"))?, 0);
        Ok(())
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = Store::open(&local(&tmp.path().join("work/deeper")))?;
        let first = Lock::acquire(&dir, "lock", "job one")?;
        let err = Lock::acquire(&dir, "lock", "job two")
            .err()
            .ok_or("acquired twice")?;
        let text = err.to_string();
        assert!(matches!(err, GuardError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("job one"), "{text}");
        // A refused job leaves the holder's lock where it is.
        assert!(tmp.path().join("work/deeper/lock").exists());
        drop(first);
        // The directories made for the lock went with it.
        assert!(!tmp.path().join("work").exists());

        // A lock left by a process that has exited.
        let mut child = std::process::Command::new("true").spawn()?;
        let pid = child.id();
        child.wait()?;
        std::fs::create_dir_all(tmp.path().join("w"))?;
        let mut stale = Holder::me("killed job", None);
        stale.pid = pid;
        stale.process_start = None;
        std::fs::write(tmp.path().join("w/lock"), serde_json::to_vec(&stale)?)?;
        let dir = Store::open(&local(&tmp.path().join("w")))?;
        let taken = Lock::acquire(&dir, "lock", "job three")?;
        let now: Holder = serde_json::from_slice(&std::fs::read(tmp.path().join("w/lock"))?)?;
        assert_eq!(now.pid, std::process::id());
        drop(taken);
        assert!(!tmp.path().join("w/lock").exists());

        // Another host's lock is never taken over: its process cannot be checked from here.
        let mut remote = Holder::me("elsewhere", None);
        remote.host = "another-host".into();
        std::fs::write(tmp.path().join("w/lock"), serde_json::to_vec(&remote)?)?;
        let err = Lock::acquire(&dir, "lock", "job four")
            .err()
            .ok_or("taken over")?;
        assert!(err.to_string().contains("another-host"), "{err}");
        Ok(())
    }

    #[test]
    fn a_lease_on_an_object_store_is_exclusive_until_released_or_expired() -> TestResult {
        let store = Store::open("memory://guard-lease-test")?;
        let first = Lock::acquire(&store, "work/lock", "job one")?;
        assert!(Lock::acquire(&store, "work/lock", "job two").is_err());
        drop(first);
        assert!(!store.exists("work/lock")?);
        let mut expired = Holder::me("old job", Some(now() - 1));
        expired.host = "another-host".into();
        store.put("work/lock", serde_json::to_vec(&expired)?)?;
        let taken = Lock::acquire(&store, "work/lock", "job three")?;
        drop(taken);
        Ok(())
    }
}
