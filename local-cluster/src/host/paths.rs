//! Path comparisons. Everything is decided on absolute, normalised paths compared component by
//! component (`/run/x` does not contain `/run/xy`), against both the run directory as given and
//! its canonical form, because processes show whichever they were handed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::HostError;

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

    /// Whether `path` is the run directory or below it. Relative paths never are: without the
    /// base they were relative to, they cannot be placed.
    pub(crate) fn contains(&self, path: &Path) -> bool {
        if !path.is_absolute() {
            return false;
        }
        let path = normalize(path);
        self.forms.iter().any(|form| path.starts_with(form))
    }

    /// Whether the kernel-shown path `text` (a readlink of /proc or a loop backing file, which
    /// may end in " (deleted)") is at or below the run directory.
    pub(crate) fn contains_shown(&self, text: &OsStr) -> bool {
        self.contains(&shown_path(text))
    }

    /// Whether any path named in command-line argument `arg` is at or below the run directory.
    pub(crate) fn named_in(&self, arg: &OsStr) -> bool {
        let Some(arg) = arg.to_str() else {
            return self.contains(Path::new(arg));
        };
        arg_paths(arg).iter().any(|p| self.contains(Path::new(p)))
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

/// The absolute paths an argument may name: itself, the value of `--flag=value`, either with a
/// `scheme://` prefix removed (`unix:///run/x/csi.sock`), and the items of `,` or `:` lists.
pub(crate) fn arg_paths(arg: &str) -> Vec<&str> {
    let mut pieces = vec![arg];
    if let Some((_, value)) = arg.split_once('=') {
        pieces.push(value);
    }
    let mut out = Vec::new();
    for piece in pieces {
        let piece = piece.split_once("://").map_or(piece, |(_, rest)| rest);
        out.push(piece);
        out.extend(piece.split([',', ':']));
    }
    out.retain(|p| p.starts_with('/'));
    out.dedup();
    out
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
    fn host_paths_kernel_suffix_and_arguments() {
        let r = run("/nonexistent-run/x");
        assert!(r.contains_shown(OsStr::new("/nonexistent-run/x/img (deleted)")));
        assert!(r.contains_shown(OsStr::new("/nonexistent-run/x/img\n")));
        for arg in [
            "/nonexistent-run/x/f",
            "--root-dir=/nonexistent-run/x/kubelet",
            "--csi-address=unix:///nonexistent-run/x/csi.sock",
            "--volumes=/a,/nonexistent-run/x/v:/b",
        ] {
            assert!(r.named_in(OsStr::new(arg)), "{arg}");
        }
        for arg in [
            "/nonexistent-run/xy",
            "--dir=/nonexistent-run/xy",
            "x=/a",
            "60",
        ] {
            assert!(!r.named_in(OsStr::new(arg)), "{arg}");
        }
    }
}
