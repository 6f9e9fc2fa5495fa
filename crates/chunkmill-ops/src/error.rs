//! Why a job did not complete. A job either decides a failure itself (a flag that names no
//! array, a target that exists: the string variants) or passes on the error of a crate below
//! it, kept whole as the `#[source]` with what it was about (an array, a path). What the user
//! should do about it — its [`ErrorKind`] — is decided here, once, in [`OpsError::kind`]: by
//! the lower error's own nature, except that an input that cannot be read before anything was
//! written is a refusal ([`OpsError::Input`]) and anything after the job started writing its
//! target is a failure of the run ([`OpsError::AfterWrite`]).

use std::fmt;

use chunkmill_exec::ExecError;
use chunkmill_grid::GridError;
use chunkmill_plan::PlanError;
use chunkmill_store::guard::GuardError;
use chunkmill_store::zarr::ZarrError;
use chunkmill_store::StoreError;

/// What the user should do about an [`OpsError`]; the command line gives each its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is malformed: fix the command (exit 2).
    Usage,
    /// Refused before anything was written: missing or inconsistent inputs, a target that
    /// exists, a plan that does not fit the memory budget (exit 3).
    Refused,
    /// Failed while running, after retries (exit 1). Markers of finished tasks are kept, so
    /// `--resume` continues.
    Failed,
    /// Stopped by the user (Ctrl-C) after cancelling what it had started (exit 130).
    Interrupted,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// A request the job found malformed.
    #[error("{0}")]
    Usage(String),
    /// Refused by the job's own checks before anything was written.
    #[error("{0}")]
    Refused(String),
    /// Failed, as the job itself found while running.
    #[error("{0}")]
    Failed(String),
    /// Stopped by the user; markers are kept, so `--resume` continues.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A store that cannot be opened, read or written.
    #[error("{}{source}", lead(.what))]
    Store {
        /// What was being done, or to which path (may be empty).
        what: String,
        #[source]
        source: Box<StoreError>,
    },
    /// A Zarr array or group that cannot be listed, read, created or resized.
    #[error("{}{source}", lead(.what))]
    Zarr {
        /// Which array, or what was being done (may be empty).
        what: String,
        #[source]
        source: Box<ZarrError>,
    },
    /// A path the job may not use, or a lock held by another job; its message names the path.
    #[error("{0}")]
    Guard(#[source] Box<GuardError>),
    /// Scanning, combining, reading or writing references failed.
    #[error("{}{source}", lead(.what))]
    Manifest {
        /// Which input or output (may be empty).
        what: String,
        #[source]
        source: Box<chunkmill_manifest::Error>,
    },
    /// A plan document that is not one this version of chunkmill can run.
    #[error("{}{source}", lead(.what))]
    Plan {
        /// Where the plan was read.
        what: String,
        #[source]
        source: Box<PlanError>,
    },
    /// A chunk grid that cannot be built, or no task of any strategy fits the budget.
    #[error("{}{source}", lead(.what))]
    Grid {
        /// Which array, or which flag.
        what: String,
        #[source]
        source: Box<GridError>,
    },
    /// The executor stopped: tasks failed after retries, the work dir failed, tasks that the
    /// plan does not have.
    #[error("{}{source}", lead(.what))]
    Exec {
        /// Which plan (may be empty).
        what: String,
        #[source]
        source: Box<ExecError>,
    },
    /// The operating system refused a read or write.
    #[error("{}{source}", lead(.what))]
    Io {
        /// The path and what was being done.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A document the job writes could not be serialized.
    #[error("{}{source}", lead(.what))]
    Json {
        /// Which document.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A compute script that does not parse or check, or that no plan fits.
    #[error("compute: {source}")]
    Compute {
        #[source]
        source: Box<ComputeError>,
    },
    /// An input that cannot be read or used, found before anything was written: a refusal
    /// whatever the lower error (a usage error stays one).
    #[error("{0}")]
    Input(#[source] Box<OpsError>),
    /// Anything that went wrong after the job started changing its target: a failure of the
    /// run, never a refusal that wrote nothing (an interruption stays one).
    #[error("{source}")]
    AfterWrite {
        /// The target the job writes.
        target: String,
        #[source]
        source: Box<OpsError>,
    },
}

/// What `chunkmill-compute` found wrong with a script.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// The script does not parse.
    #[error(transparent)]
    Syntax(#[from] chunkmill_compute::SyntaxError),
    /// The script parses but does not check against its inputs.
    #[error(transparent)]
    Check(#[from] chunkmill_compute::CheckError),
    /// No plan of the script fits.
    #[error(transparent)]
    Plan(#[from] chunkmill_compute::PlanError),
}

fn lead(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::BadUrl { .. } => ErrorKind::Usage,
        // A value that is not the JSON it should be is an input that does not fit.
        StoreError::Json { .. } => ErrorKind::Refused,
        _ => ErrorKind::Failed,
    }
}

impl OpsError {
    /// What the user should do about this error (decided here, once, for every caller).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpsError::Usage(_) => ErrorKind::Usage,
            OpsError::Refused(_) | OpsError::Plan { .. } | OpsError::Grid { .. } => {
                ErrorKind::Refused
            }
            OpsError::Failed(_) | OpsError::Io { .. } | OpsError::Json { .. } => ErrorKind::Failed,
            OpsError::Interrupted(_) => ErrorKind::Interrupted,
            OpsError::Store { source, .. } => store_kind(source),
            OpsError::Zarr { source, .. } => match source.as_ref() {
                ZarrError::Store(e) => store_kind(e),
                ZarrError::NotFound { .. }
                | ZarrError::Metadata { .. }
                | ZarrError::Group { .. } => ErrorKind::Refused,
                _ => ErrorKind::Failed,
            },
            OpsError::Guard(e) => match e.as_ref() {
                GuardError::Refused { .. } | GuardError::Locked { .. } => ErrorKind::Refused,
                _ => ErrorKind::Failed,
            },
            OpsError::Manifest { source, .. } => match source.kind() {
                chunkmill_manifest::ErrorKind::Usage => ErrorKind::Usage,
                chunkmill_manifest::ErrorKind::Refused => ErrorKind::Refused,
                _ => ErrorKind::Failed,
            },
            OpsError::Exec { source, .. } => match source.as_ref() {
                ExecError::NoSuchTasks(_) => ErrorKind::Refused,
                ExecError::Interrupted(_) => ErrorKind::Interrupted,
                _ => ErrorKind::Failed,
            },
            OpsError::Compute { source } => match source.as_ref() {
                ComputeError::Plan(_) => ErrorKind::Refused,
                _ => ErrorKind::Usage,
            },
            OpsError::Input(e) => match e.kind() {
                kind @ (ErrorKind::Usage | ErrorKind::Interrupted) => kind,
                _ => ErrorKind::Refused,
            },
            OpsError::AfterWrite { source, .. } => match source.kind() {
                ErrorKind::Interrupted => ErrorKind::Interrupted,
                _ => ErrorKind::Failed,
            },
        }
    }

    /// This error, said to be about `what` (an array, a path, an input, what was being done),
    /// in front of what it already says.
    #[must_use]
    pub fn about(mut self, what: impl fmt::Display) -> Self {
        self.prefix(&what.to_string());
        self
    }

    fn prefix(&mut self, what: &str) {
        let said = match self {
            OpsError::Usage(m)
            | OpsError::Refused(m)
            | OpsError::Failed(m)
            | OpsError::Store { what: m, .. }
            | OpsError::Zarr { what: m, .. }
            | OpsError::Manifest { what: m, .. }
            | OpsError::Plan { what: m, .. }
            | OpsError::Grid { what: m, .. }
            | OpsError::Exec { what: m, .. }
            | OpsError::Io { what: m, .. }
            | OpsError::Json { what: m, .. } => m,
            OpsError::Input(inner) | OpsError::AfterWrite { source: inner, .. } => {
                return inner.prefix(what);
            }
            // An interruption, a guard's refusal and a compute script's error name what they
            // are about.
            OpsError::Interrupted(_) | OpsError::Guard(_) | OpsError::Compute { .. } => return,
        };
        *said = if said.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {said}")
        };
    }

    /// This error met while reading an input before anything was written: a refusal.
    #[must_use]
    pub fn of_input(self) -> Self {
        match self {
            already @ OpsError::Input(_) => already,
            other => OpsError::Input(Box::new(other)),
        }
    }

    /// This error met after the job started writing `target`: a failure of the run.
    #[must_use]
    pub fn after_write(self, target: &str) -> Self {
        match self {
            already @ OpsError::AfterWrite { .. } => already,
            other => OpsError::AfterWrite {
                target: target.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// Context for a lower error on its way up, as `?` converts it.
pub(crate) trait Context<T> {
    /// The error, said to be about `what` ([`OpsError::about`]).
    fn about(self, what: impl fmt::Display) -> Result<T, OpsError>;
    /// The error, met reading an input before anything was written ([`OpsError::of_input`]).
    fn of_input(self) -> Result<T, OpsError>;
}

impl<T, E: Into<OpsError>> Context<T> for Result<T, E> {
    fn about(self, what: impl fmt::Display) -> Result<T, OpsError> {
        self.map_err(|e| e.into().about(what))
    }

    fn of_input(self) -> Result<T, OpsError> {
        self.map_err(|e| e.into().of_input())
    }
}

macro_rules! from_lower {
    ($($lower:ty => $variant:ident),* $(,)?) => {$(
        impl From<$lower> for OpsError {
            fn from(source: $lower) -> Self {
                OpsError::$variant { what: String::new(), source: source.into() }
            }
        }
    )*};
}

from_lower! {
    StoreError => Store,
    ZarrError => Zarr,
    chunkmill_manifest::Error => Manifest,
    PlanError => Plan,
    GridError => Grid,
    ExecError => Exec,
    std::io::Error => Io,
    serde_json::Error => Json,
}

impl From<GuardError> for OpsError {
    fn from(source: GuardError) -> Self {
        OpsError::Guard(Box::new(source))
    }
}

macro_rules! from_compute {
    ($($lower:ty),*) => {$(
        impl From<$lower> for OpsError {
            fn from(source: $lower) -> Self {
                OpsError::Compute { source: Box::new(source.into()) }
            }
        }
    )*};
}

from_compute!(
    chunkmill_compute::SyntaxError,
    chunkmill_compute::CheckError,
    chunkmill_compute::PlanError
);

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: &OpsError) -> String {
        chunkmill_exec::error_chain(e)
    }

    #[test]
    fn each_lower_error_has_its_kind() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases: Vec<(OpsError, ErrorKind)> = vec![
            (
                StoreError::BadUrl {
                    url: "x://".into(),
                    reason: "unknown scheme".into(),
                }
                .into(),
                ErrorKind::Usage,
            ),
            (
                ZarrError::NotFound {
                    url: "/d".into(),
                    path: "a".into(),
                }
                .into(),
                ErrorKind::Refused,
            ),
            (GridError::ZeroChunk.into(), ErrorKind::Refused),
            (
                GuardError::Io {
                    path: "/d".into(),
                    source: missing(),
                }
                .into(),
                ErrorKind::Failed,
            ),
            (
                GuardError::Locked {
                    path: "/d".into(),
                    holder: "pid 1".into(),
                }
                .into(),
                ErrorKind::Refused,
            ),
            (
                ExecError::NoSuchTasks("no stage".into()).into(),
                ErrorKind::Refused,
            ),
            (
                ExecError::Interrupted("ctrl-c".into()).into(),
                ErrorKind::Interrupted,
            ),
            (
                ExecError::Engine("sbatch refused".into()).into(),
                ErrorKind::Failed,
            ),
            (
                chunkmill_manifest::Error::Usage("bad".into()).into(),
                ErrorKind::Usage,
            ),
            (
                chunkmill_manifest::Error::Refused("bad".into()).into(),
                ErrorKind::Refused,
            ),
            (missing().into(), ErrorKind::Failed),
            (
                chunkmill_compute::PlanError::Invalid("x".into()).into(),
                ErrorKind::Refused,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }

    #[test]
    fn the_phase_overrides_the_lower_kind() {
        let io = || OpsError::from(std::io::Error::other("disk on fire"));
        assert_eq!(io().kind(), ErrorKind::Failed);
        // Before anything was written, an input that cannot be read is refused...
        assert_eq!(io().of_input().kind(), ErrorKind::Refused);
        // ...but a malformed request stays one,
        let usage = OpsError::Usage("--x".into()).of_input();
        assert_eq!(usage.kind(), ErrorKind::Usage);
        // and after the target was touched nothing is a refusal.
        let named = OpsError::Refused("no such file".into()).about("a.nc");
        assert_eq!(named.to_string(), "a.nc: no such file");
        let late = OpsError::Refused("target exists".into()).after_write("/t.zarr");
        assert_eq!(late.kind(), ErrorKind::Failed);
        let late_input = io().of_input().after_write("/t.zarr");
        assert_eq!(late_input.kind(), ErrorKind::Failed);
        let stopped = OpsError::Interrupted("ctrl-c".into()).after_write("/t.zarr");
        assert_eq!(stopped.kind(), ErrorKind::Interrupted);
    }

    #[test]
    fn the_message_keeps_the_context_and_the_whole_chain() {
        let lower = std::io::Error::other("disk on fire");
        let e = OpsError::from(lower).about("0.0").about("/t.zarr/a");
        assert_eq!(e.to_string(), "/t.zarr/a: 0.0: disk on fire");
        let wrapped = e.of_input().after_write("/t.zarr");
        assert_eq!(wrapped.to_string(), "/t.zarr/a: 0.0: disk on fire");
        assert_eq!(chain(&wrapped), "/t.zarr/a: 0.0: disk on fire");
        // The lower error is reachable as a source, typed.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&wrapped);
        let mut found = false;
        while let Some(e) = source {
            found |= e.downcast_ref::<std::io::Error>().is_some();
            source = e.source();
        }
        assert!(found);
    }
}
