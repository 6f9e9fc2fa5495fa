//! Where the chunk references of a reference file may point.
//!
//! A kerchunk file or an Icechunk repository can name any path or URL as a chunk's location.
//! Following them blindly lets a reference file someone else wrote make us read
//! `~/.aws/credentials`, or a private bucket our credentials open, into an output they can
//! read. So, like Icechunk's virtual chunk containers that a user must authorize, a reference
//! is followed only when it lies under a location the user allowed: by default the directory
//! that holds the reference file, plus every `--allow-refs` prefix.
//!
//! Local locations are compared as absolute paths with `.` and `..` resolved and symbolic
//! links followed where the path exists (so `/data/../etc/passwd` is not under `/data/`);
//! URLs are compared as text on whole path segments, and a URL with a `.` or `..` segment is
//! never allowed.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, VirtualDataset};

/// The locations references may be read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceAccess {
    prefixes: Vec<Location>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    Url(String),
}

impl Location {
    /// `None` for a URL that climbs with `..` (or names `.`), which nothing allows.
    fn parse(text: &str) -> Option<Self> {
        match text.split_once("://") {
            Some(("file", path)) => Some(Self::Local(resolve_local(Path::new(path)))),
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if path.split('/').any(|s| s == "." || s == "..") {
                    return None;
                }
                let path = path.trim_end_matches('/');
                Some(Self::Url(if path.is_empty() {
                    format!("{scheme}://{authority}")
                } else {
                    format!("{scheme}://{authority}/{path}")
                }))
            }
            None => Some(Self::Local(resolve_local(Path::new(text)))),
        }
    }

    fn contains(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local(prefix), Self::Local(path)) => path.starts_with(prefix),
            (Self::Url(prefix), Self::Url(url)) => {
                url == prefix
                    || url
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            _ => false,
        }
    }

    fn display(&self) -> String {
        match self {
            Self::Local(path) => {
                let mut text = path.display().to_string();
                if !text.ends_with('/') {
                    text.push('/');
                }
                text
            }
            Self::Url(url) => format!("{url}/"),
        }
    }

    /// The directory (or URL "directory") holding this location: what to allow for it.
    fn parent(&self) -> String {
        match self {
            Self::Local(path) => path
                .parent()
                .map_or_else(|| "/".to_string(), |p| p.display().to_string()),
            Self::Url(url) => url
                .rsplit_once('/')
                .map_or_else(|| url.clone(), |(dir, _)| dir.to_string()),
        }
    }
}

/// `path` made absolute with `.` and `..` resolved, then with symbolic links followed as far
/// as the path exists (a reference to a file that is not there yet fails later, on reading).
fn resolve_local(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lexical = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    // Follow links on the longest existing ancestor, keep the rest as written.
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

impl ReferenceAccess {
    /// Nothing allowed yet.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The default for the reference file or repository at `path` (its parent directory),
    /// and every prefix of `allowed`.
    ///
    /// # Errors
    /// [`Error::Usage`] for an allowed URL with a `.` or `..` segment.
    pub fn for_reference_file(path: &Path, allowed: &[String]) -> Result<Self> {
        let mut access = Self::none().allow_all(allowed)?;
        let holder = resolve_local(path);
        if let Some(dir) = holder.parent() {
            access.prefixes.push(Location::Local(dir.to_path_buf()));
        }
        Ok(access)
    }

    /// These prefixes allowed too.
    ///
    /// # Errors
    /// [`Error::Usage`] for a URL with a `.` or `..` segment.
    pub fn allow_all(mut self, allowed: &[String]) -> Result<Self> {
        for prefix in allowed {
            let location = Location::parse(prefix).ok_or_else(|| {
                Error::Usage(format!(
                    "--allow-refs {prefix}: a URL with '.' or '..' segments"
                ))
            })?;
            self.prefixes.push(location);
        }
        Ok(self)
    }

    /// Whether a reference to `url` may be followed.
    #[must_use]
    pub fn allows(&self, url: &str) -> bool {
        Location::parse(url).is_some_and(|l| self.prefixes.iter().any(|p| p.contains(&l)))
    }

    /// Checks every location `dataset`'s chunks point into.
    ///
    /// # Errors
    /// [`Error::Reference`] naming the reference file, an array with a chunk outside the
    /// allowed locations, the location, and the flag that would allow it.
    pub fn check(&self, dataset: &VirtualDataset) -> Result<()> {
        // Each location is judged once (resolving a local one touches the file system); the
        // error names the first array, in key order, with a chunk in a refused one.
        let mut judged = vec![false; dataset.urls.len()];
        let refused = dataset.arrays.iter().find_map(|(key, array)| {
            array.manifest.path_ids().iter().find_map(|&id| {
                // MISSING and INLINED are past the table.
                let seen = judged.get_mut(id as usize)?;
                let url = &dataset.urls[id as usize];
                let first = !std::mem::replace(seen, true);
                (first && !self.allows(url)).then_some((key, url))
            })
        });
        let Some((array, url)) = refused else {
            return Ok(());
        };
        let allowed: Vec<String> = self.prefixes.iter().map(Location::display).collect();
        let suggestion = Location::parse(url).map_or_else(
            || "a location with '.' or '..' segments is never followed".to_string(),
            |l| format!("allow it with --allow-refs {}", l.parent()),
        );
        Err(Error::Reference {
            path: dataset.name.clone(),
            reason: format!(
                "array '{array}' has chunks in {url}, outside the locations references may be read from ({}); {suggestion}",
                allowed.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn local_prefixes_resolve_dots_and_need_whole_components() -> TestResult {
        let access = ReferenceAccess::none().allow_all(&["/data/archive".to_string()])?;
        assert!(access.allows("/data/archive/day1.nc"));
        assert!(access.allows("file:///data/archive/sub/day1.nc"));
        assert!(access.allows("/data/./archive/x/../day1.nc"));
        assert!(!access.allows("/data/archive/../../etc/passwd"));
        assert!(!access.allows("/data/archive2/day1.nc"));
        assert!(!access.allows("s3://bucket/data/archive/day1.nc"));
        Ok(())
    }

    #[test]
    fn url_prefixes_match_whole_segments_and_refuse_dot_dot() -> TestResult {
        let access = ReferenceAccess::none().allow_all(&["s3://bucket/era5/".to_string()])?;
        assert!(access.allows("s3://bucket/era5/1990.nc"));
        assert!(!access.allows("s3://bucket/era5x/1990.nc"));
        assert!(!access.allows("s3://bucket/era5/../private/key"));
        assert!(!access.allows("s3://other/era5/1990.nc"));
        assert!(!access.allows("/bucket/era5/1990.nc"));
        assert!(ReferenceAccess::none()
            .allow_all(&["s3://bucket/a/../b".to_string()])
            .is_err());
        Ok(())
    }

    #[test]
    fn symbolic_links_are_followed_before_comparing() -> TestResult {
        let dir = std::env::temp_dir().join(format!("chunkmill-access-{}", std::process::id()));
        let real = dir.join("real");
        std::fs::create_dir_all(&real)?;
        std::fs::write(real.join("a.nc"), b"x")?;
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc", &link)?;
        let access = ReferenceAccess::for_reference_file(&real.join("refs.json"), &[])?;
        assert!(access.allows(&real.join("a.nc").display().to_string()));
        // The reference file's directory holds a link out of it: the target is what counts.
        let out = ReferenceAccess::for_reference_file(&dir.join("refs.json"), &[])?;
        assert!(!out.allows(&link.join("passwd").display().to_string()));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
