//! Path comparisons. Everything is decided on absolute, normalised paths compared component by
//! component (`/run/x` does not contain `/run/xy`), against both the run directory as given and
//! its canonical form, because the kernel shows whichever it was handed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::error::HostError;

/// The run directory in every form a process or the kernel may show it.
#[derive(Clone, Debug)]
pub(crate) struct RunDir {
    forms: Vec<PathBuf>,
}

impl RunDir {
    /// Refuses `/`: a sweep of it would claim every process and mount on the host.
    pub(crate) fn new(dir: &Path) -> Result<RunDir, HostError> {
        let absolute = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            let cwd = std::env::current_dir()
                .map_err(|e| HostError::io("find the current directory for", dir, e))?;
            cwd.join(dir)
        };
        let mut forms = vec![normalize(&absolute)];
        // A run directory that is already gone can still be named by processes and mounts.
        if let Ok(canonical) = std::fs::canonicalize(&absolute)
            && !forms.contains(&canonical)
        {
            forms.push(canonical);
        }
        if forms.iter().any(|f| f.parent().is_none()) {
            return Err(HostError::RunDir {
                path: dir.to_path_buf(),
                reason: "it is the root directory",
            });
        }
        Ok(RunDir { forms })
    }

    /// The run directory as given (absolute, normalised).
    pub(crate) fn path(&self) -> &Path {
        &self.forms[0]
    }

    /// Whether `path` is the run directory or below it. Relative paths never are: without the
    /// base they were relative to, they cannot be placed.
    pub(crate) fn contains(&self, path: &Path) -> bool {
        if !path.is_absolute() {
            return false;
        }
        let path = normalize(path);
        self.forms.iter().any(|form| path.starts_with(form))
    }
}

/// Resolves `.` and `..` lexically, without touching the filesystem (which may hang on a dead
/// mount, and whose symlinks we must not follow anyway).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A kernel-shown path without the " (deleted)" the kernel appends for unlinked files.
pub(crate) fn shown_path(text: &OsStr) -> PathBuf {
    let bytes = text.as_bytes();
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &str) -> RunDir {
        RunDir::new(Path::new(dir)).expect("run dir")
    }

    #[test]
    fn host_paths_prefix_is_component_wise() {
        let r = run("/nonexistent-run/x");
        assert!(r.contains(Path::new("/nonexistent-run/x")));
        assert!(r.contains(Path::new("/nonexistent-run/x/a/b")));
        assert!(r.contains(Path::new("/nonexistent-run/y/../x/a")));
        assert!(!r.contains(Path::new("/nonexistent-run/xy")));
        assert!(!r.contains(Path::new("/nonexistent-run/x/../xy")));
        assert!(!r.contains(Path::new("nonexistent-run/x")));
    }

    #[test]
    fn host_paths_refuses_root() {
        assert!(RunDir::new(Path::new("/")).is_err());
        assert!(RunDir::new(Path::new("/a/..")).is_err());
    }

    #[test]
    fn host_paths_kernel_suffix() {
        let shown = |text: &str| shown_path(OsStr::new(text));
        assert_eq!(shown("/run/x/img (deleted)"), Path::new("/run/x/img"));
        assert_eq!(shown("/run/x/img\n"), Path::new("/run/x/img"));
    }
}
