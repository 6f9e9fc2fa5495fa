//! How a job keeps its hands off what it did not write: the checks of
//! [`chunkmill_store::guard`] applied to a job's target, work dir and intermediates before the
//! first write, the lock it holds while running, and the end of a run (the new target swapped
//! in, temporary files swept, the work dir removed).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use chunkmill_store::guard::{self, Existing, Lock, Protected};
use chunkmill_store::Store;

use crate::{Context, OpsError};

/// Where a job writes, as its options say: the paths [`check_paths`] and [`write_url`] judge.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobPaths<'a> {
    /// The target as given.
    pub target: &'a str,
    /// `--temp`, if given.
    pub temp: Option<&'a str>,
    /// `--overwrite`.
    pub overwrite: bool,
}

/// The work dir's lock file (or lease object).
pub(crate) const LOCK_KEY: &str = crate::work_files::LOCK_KEY;
/// The directories of `--temp` a job created (absent when it started), recorded in its work
/// dir before its first piece, so that after success it removes exactly those, even when it
/// was resumed: never a `--temp` that existed before, nor a directory holding anything.
pub(crate) const CREATED_KEY: &str = crate::work_files::CREATED_KEY;
/// Written to the work dir just before the new target is swapped in: a resumed run that
/// finds it finishes the swap instead of writing anything.
pub(crate) const SWAP_KEY: &str = crate::work_files::SWAP_KEY;

fn open(url: &str) -> Result<Store, OpsError> {
    Ok(Store::open(url)?)
}

/// Refuses a target, work dir or `--temp` that is, holds or lies inside an input (or one
/// another), or is the current directory or a parent of it; and a work dir that exists but
/// is not a chunkmill work dir.
///
/// # Errors
/// [`OpsError::Refused`] naming the path.
pub(crate) fn check_paths(
    options: JobPaths<'_>,
    work_dir: &str,
    inputs: &[String],
) -> Result<(), OpsError> {
    let mut protected: Vec<Protected> = inputs.iter().map(Protected::input).collect();
    guard::check_apart("the target", options.target, &protected)?;
    guard::check_not_inside_zarr("the target", options.target)?;
    protected.push(Protected {
        what: "the target",
        url: options.target.to_string(),
    });
    guard::check_apart("the work dir", work_dir, &protected)?;
    let work = open(work_dir)?;
    not_a_file(&work, work_dir, "the work dir")?;
    crate::work_files::check_work_dir(work_dir)?;
    if !work.is_empty()? && !work.exists("plan.json")? && !work.exists(LOCK_KEY)? {
        return Err(OpsError::Refused(format!(
            "{work_dir}: the work dir exists and is not a chunkmill work dir (no plan.json); give another --work-dir"
        )));
    }
    if let Some(temp) = options.temp {
        let role = "the intermediates dir (--temp)";
        guard::check_apart(role, temp, &protected)?;
        check_temp_beside_work_dir(temp, work_dir)?;
        let store = open(temp)?;
        not_a_file(&store, temp, role)?;
        crate::work_files::check_temp_dir(temp)?;
        // Intermediates are written and erased under `a<array>-s<stage>/` prefixes: a dir
        // holding anything else is someone else's.
        let foreign = store
            .list("")?
            .into_iter()
            .find(|key| !is_intermediate(key));
        if let Some(key) = foreign {
            return Err(OpsError::Refused(format!(
                "{temp}: {role} holds {key}, which chunkmill did not write; give an empty or new directory"
            )));
        }
    }
    Ok(())
}

/// Refuses a `--temp` that is, or holds, the work dir: it would hold the work files, which the
/// resume's check of `--temp` takes for someone else's (a run that could never be resumed),
/// and a fresh start empties the job's own directory in it.
fn check_temp_beside_work_dir(temp: &str, work_dir: &str) -> Result<(), OpsError> {
    let how = match guard::place(temp)?.relation(&guard::place(work_dir)?) {
        guard::Relation::Same => "is",
        guard::Relation::Holds => "holds",
        guard::Relation::Inside | guard::Relation::Apart => return Ok(()),
    };
    Err(OpsError::Refused(format!(
        "{temp}: the intermediates dir (--temp) {how} the work dir {work_dir}; give a --temp apart from it"
    )))
}

/// Whether a key is one of a job's intermediate pieces: a copy stage's (`a3-s0/…`) or a
/// compute stage's (`c4-NAME…/…`: `c`, the stage number, then `-` and a name of letters,
/// digits, `_` and `-`, as compute's planner writes them), in a job's own directory
/// ([`job_temp_name`]) or, as older versions wrote them, at the top.
fn is_intermediate(key: &str) -> bool {
    let key = match key.split_once('/') {
        Some((job, rest)) if is_job_temp_name(job) => rest,
        _ => key,
    };
    let Some((first, _)) = key.split_once('/') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = first.strip_prefix('c') {
        let Some((stage, name)) = rest.split_once('-') else {
            return false;
        };
        return digits(stage)
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    }
    let Some((array, stage)) = first.split_once("-s") else {
        return false;
    };
    array.strip_prefix('a').is_some_and(digits) && digits(stage)
}

fn not_a_file(store: &Store, shown: &str, role: &str) -> Result<(), OpsError> {
    let Some(path) = store.local_path() else {
        return Ok(());
    };
    if std::fs::metadata(&path).is_ok_and(|meta| !meta.is_dir()) {
        return Err(OpsError::Refused(format!(
            "{shown}: {role} is a file; give a directory"
        )));
    }
    // A path under a file cannot be made: found now, not by the first write (exit 1).
    let under_a_file = path
        .ancestors()
        .skip(1)
        .find(|dir| std::fs::symlink_metadata(dir).is_ok())
        .filter(|dir| std::fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()));
    if let Some(file) = under_a_file {
        return Err(OpsError::Refused(format!(
            "{shown}: {role} lies under {}, which is not a directory; give a directory",
            file.display()
        )));
    }
    Ok(())
}

/// Checks the paths of a job and decides where it writes: the target itself, or — when
/// `--overwrite` replaces an existing local Zarr store — a sibling that is swapped in once
/// complete (see [`guard::staging_of`]). `in_place` jobs (appends) write into the target.
///
/// # Errors
/// [`OpsError::Refused`] for paths that collide, or an existing target that is not a Zarr
/// store.
pub(crate) fn write_url(
    options: JobPaths<'_>,
    work_dir: &str,
    inputs: &[String],
    in_place: bool,
) -> Result<String, OpsError> {
    check_paths(options, work_dir, inputs)?;
    let target = open(options.target)?;
    let existing = guard::existing_zarr(&target, options.target)?;
    if in_place || !options.overwrite || existing != Existing::Zarr {
        return Ok(target.url().to_string());
    }
    match target.local_path() {
        Some(path) => {
            let staging = guard::staging_of(&guard::canonical(&path)?);
            Ok(staging.display().to_string())
        }
        // Object stores cannot rename a prefix: the old target is erased before writing.
        None => Ok(target.url().to_string()),
    }
}

/// [`write_url`] for a job whose output must appear only complete (compute: a run stopped by
/// a value in its data leaves no partial output): a local target is always written beside it
/// and swapped in once complete; object stores, which cannot rename, are written in place.
///
/// # Errors
/// As [`write_url`].
pub(crate) fn staged_write_url(
    options: JobPaths<'_>,
    work_dir: &str,
    inputs: &[String],
) -> Result<String, OpsError> {
    check_paths(options, work_dir, inputs)?;
    let target = open(options.target)?;
    guard::existing_zarr(&target, options.target)?;
    match target.local_path() {
        Some(path) => Ok(guard::staging_of(&guard::canonical(&path)?)
            .display()
            .to_string()),
        None => Ok(target.url().to_string()),
    }
}

/// The directory of a job's own in a `--temp` shared by several jobs: `chunkmill-` and 16 hex
/// digits of a digest of the target's absolute path. Two jobs that run at once have different
/// targets (the target's lock), so different directories; a resumed job finds its own again.
pub(crate) fn job_temp_name(target: &str) -> String {
    use sha2::Digest;
    let absolute = Store::open(target)
        .ok()
        .and_then(|store| store.local_path())
        .and_then(|path| guard::canonical(&path).ok())
        .map_or_else(|| target.to_string(), |path| path.display().to_string());
    let digest = sha2::Sha256::digest(absolute.as_bytes());
    format!("{JOB_TEMP_PREFIX}{}", hex::encode(&digest[..8]))
}

const JOB_TEMP_PREFIX: &str = "chunkmill-";

fn is_job_temp_name(name: &str) -> bool {
    name.strip_prefix(JOB_TEMP_PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The locks a job holds while it runs: its work dir's, and its target's (a sibling file
/// `.<name>.chunkmill-lock`, for local targets), so two jobs on one target or one work dir
/// never run at once.
///
/// # Errors
/// [`OpsError::Refused`] naming the job that holds one.
pub(crate) fn lock(target: &str, work: &Store, job: &str) -> Result<Vec<Lock>, OpsError> {
    let mut locks = Vec::new();
    if let Some(path) = open(target)?.local_path() {
        let path = guard::canonical(&path)?;
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let parent = open(&parent.display().to_string())?;
            let key = format!(".{}.chunkmill-lock", name.to_string_lossy());
            // A FIFO there would block the lock's read of its holder.
            crate::work_files::check_regular(
                &path.with_file_name(&key),
                "the lock file of the target",
            )?;
            locks.push(Lock::acquire(&parent, &key, job)?);
        }
    }
    locks.push(Lock::acquire(work, LOCK_KEY, job)?);
    Ok(locks)
}

/// Removes the temporary files of killed writes under the local stores among `urls`.
///
/// # Errors
/// [`OpsError::Failed`] when a directory cannot be read or a file removed.
pub(crate) fn sweep(urls: &[&str]) -> Result<(), OpsError> {
    for url in urls {
        if let Some(path) = open(url)?.local_path() {
            let removed = guard::sweep_partials(&path)?;
            if removed > 0 {
                tracing::info!("{url}: removed {removed} temporary file(s) of killed writes");
            }
        }
    }
    Ok(())
}

/// Records in the work dir which directories of the local `--temp` this run creates: the dir
/// and its ancestors that do not exist yet (absolute, links of the existing part resolved),
/// with those an earlier killed run of the job recorded (it made them; this run, started
/// afresh, finds them) while they are still the directories it made. Each is named before it
/// is made (a kill in between leaves it named but unproven, so kept), then made, then recorded
/// with its identity (device and inode): the end of the run removes only a directory that
/// still has it, so a record naming a directory someone else made never removes it.
///
/// # Errors
/// [`OpsError`] when the work dir cannot be read or written, or the dirs cannot be made.
pub(crate) fn record_created_temp(work: &Store, temp: Option<&str>) -> Result<(), OpsError> {
    let Some(temp) = temp.and_then(|t| open(t).ok()?.local_path()) else {
        return Ok(());
    };
    let temp = guard::canonical(&temp)?;
    let mut created: Vec<(PathBuf, Option<DirId>)> = temp
        .ancestors()
        .take_while(|dir| std::fs::symlink_metadata(dir).is_err())
        .map(|dir| (dir.to_path_buf(), None))
        .collect();
    for (earlier, id) in recorded_temp_dirs(work)? {
        if temp.starts_with(&earlier)
            && !created.iter().any(|(dir, _)| *dir == earlier)
            && id.is_some()
            && dir_id(&earlier) == id
        {
            created.push((earlier, id));
        }
    }
    put_created(work, &created)?;
    if created.iter().any(|(_, id)| id.is_none()) {
        std::fs::create_dir_all(&temp).map_err(|e| OpsError::from(e).about(temp.display()))?;
        for (dir, id) in &mut created {
            id.get_or_insert_with(|| dir_id(dir).unwrap_or_default());
        }
        put_created(work, &created)?;
    }
    Ok(())
}

/// A directory's device and inode: one removed and made again is another directory.
type DirId = (u64, u64);

fn dir_id(dir: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

fn put_created(work: &Store, created: &[(PathBuf, Option<DirId>)]) -> Result<(), OpsError> {
    let (dirs, ids): (Vec<_>, Vec<_>) = created.iter().cloned().unzip();
    work.put_json(
        CREATED_KEY,
        &serde_json::json!({ "created": dirs, "identities": ids }),
    )?;
    Ok(())
}

/// The recorded dirs, each with its identity when it was recorded (`None`: unproven).
fn recorded_temp_dirs(work: &Store) -> Result<Vec<(PathBuf, Option<DirId>)>, OpsError> {
    let Some(record) = work.get_json(CREATED_KEY)? else {
        return Ok(Vec::new());
    };
    let dirs: Vec<PathBuf> = serde_json::from_value(record["created"].clone()).unwrap_or_default();
    let ids: Vec<Option<DirId>> =
        serde_json::from_value(record["identities"].clone()).unwrap_or_default();
    Ok(dirs
        .into_iter()
        .enumerate()
        .map(|(i, dir)| (dir, ids.get(i).copied().flatten()))
        .collect())
}

/// After a successful run, removes the directories the job created for its intermediates and
/// left empty: its own directory (`job_temp`: the one in `--temp`, or `intermediate` in the
/// work dir), then those of `--temp` it recorded ([`record_created_temp`]), deepest first.
/// Each goes only while empty (`rmdir`), and a recorded one only while it still is that
/// directory (not replaced by a link): one holding another job's pieces stays.
///
/// # Errors
/// [`OpsError`] when the work dir cannot be read.
pub(crate) fn remove_created_temp(work: &Store, job_temp: &str) -> Result<(), OpsError> {
    // No intermediates dir (a job with nothing to do): "" would open the current directory.
    if job_temp.is_empty() {
        return Ok(());
    }
    let Some(own) = open(job_temp)?.local_path() else {
        return Ok(());
    };
    // Resolved before it goes: the recorded dirs are judged against where it lies.
    let own = guard::canonical(&own)?;
    if !remove_if_empty(&own) {
        return Ok(());
    }
    // Only this job's intermediates dir's ancestors are candidates: a record naming any other
    // directory (edited, or left by a run with another --temp) is not what this run created.
    // And only one that is still the directory the job made (its identity).
    let mut created: Vec<(PathBuf, Option<DirId>)> = recorded_temp_dirs(work)?
        .into_iter()
        .filter(|(dir, _)| dir.is_absolute() && own.starts_with(dir) && own != *dir)
        .collect();
    created.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
    for (dir, id) in created {
        let still_ours = id.is_some()
            && dir_id(&dir) == id
            && std::fs::canonicalize(&dir).is_ok_and(|real| real == dir);
        if !still_ours || !remove_if_empty(&dir) {
            break;
        }
    }
    Ok(())
}

/// Removes `dir` if it is an empty directory; true when it is gone.
fn remove_if_empty(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(_) => false,
    }
}

/// The local path of a staging store, when the job writes one (`write_url` differs from the
/// target's).
pub(crate) fn staging(target: &Store, write_url: &str) -> Option<PathBuf> {
    (write_url != target.url())
        .then(|| PathBuf::from(write_url.strip_prefix("file://").unwrap_or(write_url)))
}

/// Clears what an earlier, unfinished `--overwrite` run left at the staging path, after
/// checking that it is a Zarr store (or empty), so nothing but our own writes goes.
///
/// # Errors
/// [`OpsError::Refused`] when something else is there; [`OpsError::Failed`].
pub(crate) fn clear_staging(staging: &Path) -> Result<(), OpsError> {
    let shown = staging.display().to_string();
    let store = open(&shown)?;
    if guard::existing_zarr(&store, &shown)? != Existing::Absent {
        std::fs::remove_dir_all(staging).about(&shown)?;
    }
    Ok(())
}

/// Puts the complete staging store at the target. The work dir records the new store's
/// identity first, so a resumed run killed anywhere in the swap completes it and nothing
/// else (see [`guard::swap_in`]).
///
/// # Errors
/// [`OpsError::Failed`] when the record or a rename fails.
pub(crate) fn swap(work: &Store, target: &Store, staging: &Path) -> Result<(), OpsError> {
    let target_path = target
        .local_path()
        .ok_or_else(|| OpsError::Failed(format!("{}: not a local store", target.url())))?;
    let target_path = guard::canonical(&target_path)?;
    let recorded = work
        .get_json(SWAP_KEY)?
        .and_then(|v| serde_json::from_value::<(u64, u64)>(v["new"].clone()).ok());
    let new = match recorded {
        Some(id) => id,
        None => {
            let id = guard::identity(staging)?;
            work.put_json(
                SWAP_KEY,
                &serde_json::json!({"target": target_path, "staging": staging, "new": id}),
            )?;
            id
        }
    };
    guard::swap_in(&target_path, staging, new)?;
    Ok(())
}

/// Removes a work dir after a successful run: everything chunkmill writes in it, then its lock
/// (by dropping `locks`), then the directory if nothing else is left. Only a work dir
/// chunkmill chose is removed this way (never one given with `--work-dir`), and
/// [`check_paths`] refused to start in one that held anything but a chunkmill run; what
/// someone put there since (a note, a log) stays, and so does the directory holding it.
///
/// # Errors
/// [`OpsError::Failed`] when something cannot be removed.
pub(crate) fn remove_work_dir(work: &Store, locks: Vec<Lock>) -> Result<(), OpsError> {
    match work.local_path() {
        Some(dir) => {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(OpsError::from(e).about(dir.display())),
            };
            // plan.json goes last but the lock: a run killed meanwhile leaves a dir that is
            // still recognisably a chunkmill work dir (see `check_paths`).
            let mut entries: Vec<_> = entries.collect::<Result<_, _>>().about(dir.display())?;
            entries.sort_by_key(|e| e.file_name() == "plan.json");
            for entry in entries {
                if entry.file_name() == LOCK_KEY {
                    continue;
                }
                if !crate::work_files::is_ours_in_work_dir(&entry.file_name()) {
                    tracing::warn!(
                        "{}: left in place: chunkmill did not write it",
                        entry.path().display()
                    );
                    continue;
                }
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                };
                removed.about(path.display())?;
            }
            drop(locks);
            match std::fs::remove_dir(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                // Something appeared meanwhile (another job took the dir): leave it.
                Err(e) => {
                    tracing::warn!("{}: left in place: {e}", dir.display());
                    Ok(())
                }
            }
        }
        None => {
            let mut keys = work.list("")?;
            keys.sort_by_key(|k| k == "plan.json");
            for key in keys {
                let top = key.split('/').next().unwrap_or_default();
                if key != LOCK_KEY && crate::work_files::is_ours_in_work_dir(OsStr::new(top)) {
                    work.erase(&key)?;
                }
            }
            drop(locks);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_intermediate, job_temp_name};

    #[test]
    fn each_target_has_its_own_temp_dir_however_it_is_written() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a.zarr").display().to_string();
        let a_again = dir.path().join("x/../a.zarr/").display().to_string();
        let b = dir.path().join("b.zarr").display().to_string();
        assert_eq!(job_temp_name(&a), job_temp_name(&a_again));
        assert_ne!(job_temp_name(&a), job_temp_name(&b));
        assert!(is_intermediate(&format!("{}/a0-s0/1", job_temp_name(&a))));
        Ok(())
    }

    #[test]
    fn intermediates_are_told_from_foreign_keys() {
        for ours in [
            "a0-s1/3",
            "c0-uu_vv-p0/12",
            "c3-r0-g1/0",
            "c12-split/4",
            "c5-anom-in/0",
            "c7-k1-r0/2",
            "chunkmill-0123456789abcdef/a0-s1/3",
            "chunkmill-0123456789abcdef/c3-r0-g1/0",
        ] {
            assert!(is_intermediate(ours), "{ours}");
        }
        for foreign in [
            "cats/1",
            "c-x/1",
            "c1/1",
            "c1-/1",
            "c1-a.b/1",
            "cx-a/1",
            "c1-a",
            "a1-s/0",
            "notes.txt",
            "c1-a b/0",
            "chunkmill-0123/a0-s1/3",
            "chunkmill-0123456789abcdef/notes.txt",
            "other-0123456789abcdef/a0-s1/3",
        ] {
            assert!(!is_intermediate(foreign), "{foreign}");
        }
    }
}
