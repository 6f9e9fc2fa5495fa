//! Why a command did not finish, and the one place that turns it into an exit code.
//!
//! The libraries sort their errors by what the user should do (a malformed request, a refusal
//! before anything was written, a failure while running, an interruption); [`exit_code`] gives
//! each of those its number from the README's table. The command modules only say which
//! failure happened; none of them picks a number.

use std::fmt;

/// The exit codes of a command that did not finish, the same for every command (README, "Exit
/// codes"); a finished one exits 0.
pub mod exit {
    /// Failed while running, after retries; `--resume` continues.
    pub const FAILED: i32 = 1;
    /// The command line is malformed: a flag, a value, a spec (nothing was read or written).
    pub const USAGE: i32 = 2;
    /// Refused before anything was written: an input that does not exist or does not fit, a
    /// target that exists, a plan that does not fit the budget.
    pub const REFUSED: i32 = 3;
    /// Stopped by Ctrl-C (or SIGTERM) after cancelling what it started; `--resume` continues.
    pub const INTERRUPTED: i32 = 130;
}

/// A command that did not finish.
#[derive(Debug)]
pub enum Failure {
    /// The command line is malformed (found by this binary: a flag, a value, a spec).
    Usage(String),
    /// Refused before anything was written (found by this binary).
    Refused(String),
    /// Failed while running (found by this binary).
    Failed(String),
    /// A job of `chunkmill-ops` failed; its variant says how.
    Ops(chunkmill_ops::OpsError),
    /// Scanning, combining or writing references failed; its kind says how.
    Manifest(Box<chunkmill_manifest::Error>),
    /// A data file that cannot be opened or listed (`inspect`): an input that does not fit.
    Source(Box<chunkmill_hdf5::Error>),
    /// A failure and what to do about it (a flag or command its message does not name).
    Hinted {
        /// The failure.
        failure: Box<Failure>,
        /// What to do, in words.
        hint: String,
    },
    /// Something failed after the job had written to its target or work dir: whatever the
    /// cause, it is a failure of the run (exit 1), never a refusal that wrote nothing.
    AfterWrite {
        /// What was written (the target or the work dir), for the message.
        written: String,
        /// The failure as the job reported it.
        failure: Box<Failure>,
    },
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Failure::Refused(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure::Failed(message.into())
    }

    /// This failure, its message followed by `hint`; its exit code unchanged.
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Failure::Hinted {
            failure: Box::new(self),
            hint: hint.into(),
        }
    }
}

/// The exit code of a failure: the only place where a failure gets its number.
pub fn exit_code(failure: &Failure) -> i32 {
    use chunkmill_manifest::ErrorKind;
    use chunkmill_ops::ErrorKind as OpsKind;
    match failure {
        Failure::Usage(_) => exit::USAGE,
        Failure::Refused(_) | Failure::Source(_) => exit::REFUSED,
        Failure::Failed(_) => exit::FAILED,
        Failure::Ops(e) => match e.kind() {
            OpsKind::Usage => exit::USAGE,
            OpsKind::Refused => exit::REFUSED,
            OpsKind::Interrupted => exit::INTERRUPTED,
            _ => exit::FAILED,
        },
        Failure::Manifest(e) => match e.kind() {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Refused => exit::REFUSED,
            _ => exit::FAILED,
        },
        Failure::Hinted { failure, .. } => exit_code(failure),
        Failure::AfterWrite { failure, .. } => match exit_code(failure) {
            exit::USAGE | exit::REFUSED => exit::FAILED,
            code => code,
        },
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Refused(m) | Failure::Failed(m) => f.write_str(m),
            Failure::Ops(e) => write!(f, "{e}"),
            Failure::Manifest(e) => write!(f, "{e}"),
            Failure::Source(e) => write!(f, "{e}"),
            // Errors are one line: the hint follows the reason.
            Failure::Hinted { failure, hint } => write!(f, "{failure}; {hint}"),
            Failure::AfterWrite { written, failure } => write!(
                f,
                "{failure} (after {written} was written to: it is incomplete; fix the cause and rerun with --resume, or --overwrite to start over)"
            ),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Ops(e) => Some(e),
            Failure::Manifest(e) => Some(e.as_ref()),
            Failure::Source(e) => Some(e.as_ref()),
            Failure::Hinted { failure, .. } | Failure::AfterWrite { failure, .. } => Some(failure),
            Failure::Usage(_) | Failure::Refused(_) | Failure::Failed(_) => None,
        }
    }
}

impl From<chunkmill_manifest::Error> for Failure {
    fn from(e: chunkmill_manifest::Error) -> Self {
        Failure::Manifest(Box::new(e))
    }
}

impl From<chunkmill_ops::OpsError> for Failure {
    fn from(e: chunkmill_ops::OpsError) -> Self {
        match &e {
            // The job says it had started changing its target (on any store, local or not):
            // the message says so and how to continue, as for a local target that appeared.
            chunkmill_ops::OpsError::AfterWrite { target, .. } => Failure::AfterWrite {
                written: target.clone(),
                failure: Box::new(Failure::Ops(e)),
            },
            _ => Failure::Ops(e),
        }
    }
}

impl From<chunkmill_hdf5::Error> for Failure {
    fn from(e: chunkmill_hdf5::Error) -> Self {
        Failure::Source(Box::new(e))
    }
}

/// Whether a job wrote anything, seen from outside: the local paths it may create (its target,
/// its work dir), and which of them existed before it started. A job that fails after creating
/// one of them has touched its target, whatever its error says ([`Failure::AfterWrite`]).
#[derive(Debug)]
pub struct Footprint {
    absent: Vec<String>,
}

impl Footprint {
    /// Notes which of `paths` do not exist yet (URLs other than `file://` are not looked at:
    /// their jobs report their own failures).
    pub fn before(paths: &[&str]) -> Self {
        let absent = paths
            .iter()
            .filter_map(|p| local(p))
            .filter(|p| std::fs::symlink_metadata(p).is_err())
            .map(str::to_string)
            .collect();
        Footprint { absent }
    }

    /// `failure`, or [`Failure::AfterWrite`] when one of the paths absent before now exists.
    pub fn judge(&self, failure: Failure) -> Failure {
        if matches!(failure, Failure::AfterWrite { .. }) {
            return failure;
        }
        match self
            .absent
            .iter()
            .find(|p| std::fs::symlink_metadata(p).is_ok())
        {
            Some(written) => Failure::AfterWrite {
                written: written.clone(),
                failure: Box::new(failure),
            },
            None => failure,
        }
    }
}

fn local(path: &str) -> Option<&str> {
    let path = path.strip_prefix("file://").unwrap_or(path);
    (!path.contains("://") && !path.is_empty()).then(|| path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        use chunkmill_ops::OpsError;
        let cases = [
            (Failure::usage("x"), 2),
            (Failure::refused("x"), 3),
            (Failure::failed("x"), 1),
            (Failure::refused("x").with_hint("y"), 3),
            (Failure::Ops(OpsError::Usage("x".into())), 2),
            (Failure::Ops(OpsError::Refused("x".into())), 3),
            (Failure::Ops(OpsError::Failed("x".into())), 1),
            (Failure::Ops(OpsError::Interrupted("x".into())), 130),
            // A lower error keeps its own kind; the phase overrides it.
            (Failure::Ops(OpsError::from(std::io::Error::other("x"))), 1),
            (
                Failure::Ops(OpsError::from(std::io::Error::other("x")).of_input()),
                3,
            ),
            (
                Failure::Ops(OpsError::Refused("x".into()).after_write("/t.zarr")),
                1,
            ),
            (
                Failure::Ops(OpsError::from(chunkmill_manifest::Error::Usage("x".into()))),
                2,
            ),
            (
                Failure::from(chunkmill_manifest::Error::Usage("x".into())),
                2,
            ),
            (
                Failure::from(chunkmill_manifest::Error::Refused("x".into())),
                3,
            ),
            (
                Failure::from(chunkmill_manifest::Error::Executor("x".into())),
                1,
            ),
        ];
        for (failure, code) in cases {
            assert_eq!(exit_code(&failure), code, "{failure}");
        }
    }

    #[test]
    fn a_job_that_touched_its_target_says_so_on_any_store() {
        use chunkmill_ops::OpsError;
        let failure = Failure::from(
            OpsError::Refused("the lock is gone".into()).after_write("s3://bucket/t.zarr"),
        );
        assert_eq!(exit_code(&failure), 1, "{failure}");
        let message = failure.to_string();
        assert!(message.starts_with("the lock is gone"), "{message}");
        assert!(
            message.contains("s3://bucket/t.zarr was written to"),
            "{message}"
        );
        assert!(message.contains("--resume"), "{message}");
        // The local footprint does not say it twice.
        let footprint = Footprint::before(&["/nonexistent-chunkmill-test/t.zarr"]);
        let judged = footprint.judge(failure);
        assert_eq!(
            judged.to_string().matches("--resume").count(),
            1,
            "{judged}"
        );
    }

    #[test]
    fn a_refusal_after_a_write_is_a_failure() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("chunkmill-footprint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let target = dir.join("t.zarr");
        let target = target.to_str().ok_or("path")?;
        let existing = dir.to_str().ok_or("path")?;
        let footprint = Footprint::before(&[target, existing, "s3://bucket/key"]);
        // Nothing new: the refusal stands.
        let same = footprint.judge(Failure::refused("t.zarr: no"));
        assert_eq!(exit_code(&same), 3);
        std::fs::create_dir(dir.join("t.zarr"))?;
        for (failure, code) in [
            (Failure::refused("t.zarr: no"), 1),
            (Failure::usage("bad"), 1),
            (Failure::failed("io"), 1),
            (
                Failure::Ops(chunkmill_ops::OpsError::Interrupted("x".into())),
                130,
            ),
        ] {
            let judged = footprint.judge(failure);
            assert_eq!(exit_code(&judged), code, "{judged}");
            assert!(judged.to_string().contains("--resume"), "{judged}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
