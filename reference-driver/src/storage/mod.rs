//! Host storage primitives for the reference driver: sparse image files,
//! loop devices, filesystems, mounts and hole-preserving file clones.
//!
//! Everything here is synchronous and blocking; async callers should wrap
//! calls in `spawn_blocking`.

pub mod copy;
pub mod image;
pub mod loopdev;
pub mod mount;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    /// `fstype` is "bind" for bind mounts.
    #[error("mount {device} on {target} ({fstype})")]
    Mount {
        device: PathBuf,
        target: PathBuf,
        fstype: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refuses `op` without `capability` (e.g. online ext4 resize
    /// needs CAP_SYS_RESOURCE, which some containers drop).
    #[error("{op} needs {capability}, which this process lacks")]
    MissingCapability {
        op: &'static str,
        capability: &'static str,
    },
    #[error("{op} is not supported for {fs}")]
    Unsupported { op: &'static str, fs: FsType },
    /// The source shrank while it was being copied; the copy is incomplete.
    #[error("source {path} ended at {offset} bytes while copying, expected {expected}")]
    SourceTruncated {
        path: PathBuf,
        offset: u64,
        expected: u64,
    },
}

pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Filesystem types the driver can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

const MIB: u64 = 1024 * 1024;

impl FsType {
    /// Parses a CSI `fs_type` string (case-insensitive).
    pub fn parse(s: &str) -> Option<FsType> {
        if s.eq_ignore_ascii_case("ext4") {
            Some(FsType::Ext4)
        } else if s.eq_ignore_ascii_case("xfs") {
            Some(FsType::Xfs)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Smallest image mkfs accepts, rounded to MiB.
    pub fn min_size_bytes(self) -> u64 {
        match self {
            FsType::Ext4 => 8 * MIB,
            // xfsprogs >= 5.19 refuses filesystems smaller than 300 MB.
            FsType::Xfs => 300 * MIB,
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `program args...` (no shell) and returns its stdout; a non-zero exit
/// becomes `StorageError::Command` carrying stderr (or the status if silent).
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_accepting(program, args, &[0])
}

/// Like `run`, but any exit code in `accept` counts as success (e2fsck uses
/// 1 for "errors fixed").
pub(crate) fn run_accepting<I, S>(program: &str, args: I, accept: &[i32]) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let command = std::iter::once(program.to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let output = Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| StorageError::io("spawn", Path::new(program), e))?;
    if output.status.code().is_some_and(|c| accept.contains(&c)) {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    if stderr.is_empty() {
        stderr = output.status.to_string();
    }
    Err(StorageError::Command { command, stderr })
}

/// fsyncs the directory containing `path` so a newly created entry survives a crash.
pub(crate) fn fsync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", parent, e))
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};

    pub fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    pub fn have_tool(name: &str) -> bool {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(name).exists())
    }

    /// Returns a reason to skip privileged tests, if any.
    pub fn skip_reason(tools: &[&str]) -> Option<String> {
        if !is_root() {
            return Some("not root".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return Some("no /dev/loop-control".into());
        }
        tools
            .iter()
            .find(|t| !have_tool(t))
            .map(|t| format!("{t} not installed"))
    }

    /// Detaches a loop device on drop so failed tests don't leak devices.
    pub struct LoopGuard(pub PathBuf);
    impl Drop for LoopGuard {
        fn drop(&mut self) {
            if let Err(e) = super::loopdev::detach(&self.0) {
                eprintln!("cleanup: detach {}: {e}", self.0.display());
            }
        }
    }

    /// Unmounts on drop; declare after the `LoopGuard` so it drops first.
    pub struct MountGuard(pub PathBuf);
    impl Drop for MountGuard {
        fn drop(&mut self) {
            if let Err(e) = super::mount::unmount(&self.0) {
                eprintln!("cleanup: unmount {}: {e}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_type_round_trip() {
        for fs in [FsType::Ext4, FsType::Xfs] {
            assert_eq!(FsType::parse(fs.as_str()), Some(fs));
            assert_eq!(fs.to_string(), fs.as_str());
            let json = serde_json::to_string(&fs).unwrap();
            assert_eq!(json, format!("\"{}\"", fs.as_str()));
            assert_eq!(serde_json::from_str::<FsType>(&json).unwrap(), fs);
        }
        assert_eq!(FsType::parse("XFS"), Some(FsType::Xfs));
        assert_eq!(FsType::parse("btrfs"), None);
        assert_eq!(FsType::parse(""), None);
        assert_eq!(FsType::Xfs.min_size_bytes() % MIB, 0);
    }

    #[test]
    fn run_reports_stderr() {
        let err = run("sh", ["-c", "echo boom >&2; exit 3"]).unwrap_err();
        match err {
            StorageError::Command { command, stderr } => {
                assert!(command.starts_with("sh -c"), "{command}");
                assert_eq!(stderr, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(run("sh", ["-c", "printf ok"]).unwrap(), "ok");
        assert!(matches!(
            run("/nonexistent/tool", ["x"]),
            Err(StorageError::Io { op: "spawn", .. })
        ));
    }
}
