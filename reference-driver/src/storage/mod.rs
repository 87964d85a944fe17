//! Host storage primitives for the reference driver: sparse image files,
//! loop devices, filesystems, mounts and hole-preserving file clones.
//!
//! Everything here is synchronous and blocking; async callers should wrap
//! calls in `spawn_blocking`.

pub mod copy;
pub mod freeze;
pub mod image;
pub mod loopdev;
pub mod mount;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    /// The tool (and its process group) was killed at its deadline.
    #[error("{command} did not finish within {deadline:?} and was killed")]
    TimedOut { command: String, deadline: Duration },
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
    /// The host does not match what the state records for a staged volume (its mount or
    /// loop device is gone or is another's): nothing is frozen or flushed through it.
    #[error("{0}")]
    NotProven(String),
    /// A freeze ended before the copy made under it was done: the copy is not point-in-time.
    #[error("the freeze of {path} was lifted before the copy finished: {detail}")]
    FreezeLapsed { path: PathBuf, detail: String },
    /// Another copy of the same filesystem held its freeze for too long.
    #[error("{path} stayed frozen by another copy for too long")]
    FreezeBusy { path: PathBuf },
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

/// How long an external tool may run before it is killed. A tool stuck on a dying device (or a
/// frozen filesystem) must not hold a volume lock, and the RPC behind it, forever.
pub(crate) fn command_deadline(program: &str) -> Duration {
    match program.rsplit('/').next().unwrap_or(program) {
        // Attach, detach, capacity refresh: metadata ioctls that take milliseconds.
        "losetup" => Duration::from_secs(30),
        // mkfs/e2fsck/resize write inode tables and bitmaps proportional to the volume size:
        // a few seconds per GiB on slow disks, so generous, but still bounded.
        p if p.starts_with("mkfs") || p == "e2fsck" || p == "resize2fs" || p == "xfs_growfs" => {
            Duration::from_secs(300)
        }
        _ => Duration::from_secs(60),
    }
}

/// After SIGKILL, how long to wait for the child to be reaped and its pipes to close; a
/// process stuck in uninterruptible sleep is then abandoned rather than waited for.
const REAP_GRACE: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(10);

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
    run_within(program, args, accept, command_deadline(program))
}

/// The runner: the child gets its own process group, which is SIGKILLed whole if it is still
/// running at `deadline` (tools may fork helpers).
pub(crate) fn run_within<I, S>(
    program: &str,
    args: I,
    accept: &[i32],
    deadline: Duration,
) -> Result<String>
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
    tracing::debug!(%command, ?deadline, "running");
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| StorageError::io("spawn", Path::new(program), e))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_until(&mut child, Instant::now() + deadline)
        .map_err(|e| StorageError::io("wait for", Path::new(program), e))?
    else {
        kill_group(&mut child);
        return Err(StorageError::TimedOut { command, deadline });
    };
    let stdout = collect(stdout);
    if status.code().is_some_and(|c| accept.contains(&c)) {
        return Ok(String::from_utf8_lossy(&stdout).into_owned());
    }
    let mut stderr = String::from_utf8_lossy(&collect(stderr)).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&stdout).trim().to_string();
    }
    if stderr.is_empty() {
        stderr = status.to_string();
    }
    Err(StorageError::Command { command, stderr })
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// What a drained pipe held; empty if a leftover holder keeps it open past the grace period.
fn collect(rx: mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(REAP_GRACE).unwrap_or_default()
}

fn wait_until(child: &mut Child, until: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    if let Ok(None) = wait_until(child, Instant::now() + REAP_GRACE) {
        tracing::error!(
            pid = child.id(),
            "a killed tool did not exit; abandoning it"
        );
    }
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

    #[test]
    fn run_kills_the_whole_group_at_the_deadline() {
        let td = tempfile::tempdir().unwrap();
        let marker = td.path().join("grandchild-ran");
        // A grandchild that would outlive its parent unless the group is killed.
        let script = format!("(sleep 2; touch '{}') & sleep 30", marker.display());
        let started = Instant::now();
        let err = run_within("sh", ["-c", &script], &[0], Duration::from_millis(300)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        match &err {
            StorageError::TimedOut { command, deadline } => {
                assert!(command.starts_with("sh -c"), "{command}");
                assert_eq!(*deadline, Duration::from_millis(300));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("300ms"), "{err}");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the grandchild survived the deadline");
    }

    #[test]
    fn deadlines_are_bounded_per_tool() {
        assert_eq!(command_deadline("losetup"), Duration::from_secs(30));
        assert_eq!(
            command_deadline("/usr/sbin/mkfs.ext4"),
            Duration::from_secs(300)
        );
        assert!(command_deadline("anything") <= Duration::from_secs(60));
    }
}
