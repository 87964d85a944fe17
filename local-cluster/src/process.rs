//! The cluster's processes: each in its own process group (a terminal's Ctrl-C reaches only the
//! harness, which tears down in order), its output in a log file, named by pid and start time
//! from the moment it is spawned, stopped by pid with every wait bounded.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ClusterError;
use crate::host::ProcessId;
use crate::spawner::Spawner;

/// Readiness is polled at this interval: processes offer no watch.
const POLL: Duration = Duration::from_millis(100);
/// After SIGKILL, how long to wait for the exit before reporting the process and going on: one
/// in D state (waiting on a device or a filesystem) cannot be reaped at all.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub struct Process {
    pub name: String,
    pub log: PathBuf,
    /// Read while the child is unreaped, so the pid cannot have been reused.
    pub id: ProcessId,
    child: Child,
}

/// What to start: a component name, its binary, arguments and extra environment.
pub struct Spec<'a> {
    pub name: &'a str,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub logs: &'a Path,
}

impl Process {
    pub fn spawn(spec: Spec<'_>, spawner: &Spawner) -> Result<Process, ClusterError> {
        use std::os::unix::process::CommandExt;
        let log = spec.logs.join(format!("{}.log", spec.name));
        let out = std::fs::File::create(&log).map_err(|e| ClusterError::io("create", &log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| ClusterError::io("open", &log, e))?;
        tracing::debug!(component = spec.name, args = ?spec.args, "starting");
        let mut command = Command::new(&spec.binary);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawner
            .spawn(command)
            .map_err(|source| ClusterError::Spawn {
                component: spec.name.to_string(),
                binary: spec.binary.clone(),
                source,
            })?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        // An unreaped child, even a zombie, keeps its /proc entry.
        let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start: 0 });
        Ok(Process {
            name: spec.name.to_string(),
            log,
            id,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err(Exited)` with the log's tail if the process is gone.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Err(e) => Err(self.exited(format!("cannot wait: {e}"))),
        }
    }

    fn exited(&self, status: String) -> ClusterError {
        ClusterError::Exited {
            component: self.name.clone(),
            status,
            log: self.log.display().to_string(),
            tail: log_tail(&self.log, 15),
        }
    }

    /// Polls `ready` until it answers `Ok`, the process exits, or `limit` passes.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        limit: Duration,
        mut ready: F,
    ) -> Result<(), ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let started = Instant::now();
        loop {
            self.check_running()?;
            let last = match tokio::time::timeout(POLL * 20, ready()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(detail)) => detail,
                Err(_) => "the readiness check did not answer".to_string(),
            };
            if started.elapsed() >= limit {
                return Err(ClusterError::NotReady {
                    component: self.name.clone(),
                    waited: limit,
                    detail: last,
                    log: self.log.display().to_string(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, then at most [`KILL_WAIT`] for the exit. `Ok` says
    /// how it ended; `Err` names a process that would not go (with its state and command line).
    pub fn stop(&mut self, grace: Duration) -> Result<String, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(format!("had exited ({status})"));
        }
        signal(self.pid(), rustix::process::Signal::TERM);
        if let Some(status) = self.wait_for(grace) {
            return Ok(format!("stopped ({status})"));
        }
        let _ = self.child.kill();
        match self.wait_for(KILL_WAIT) {
            Some(status) => Ok(format!("killed after {grace:?} ({status})")),
            None => Err(format!(
                "{} is still there {KILL_WAIT:?} after SIGKILL: {}",
                self.name,
                self.id.describe()
            )),
        }
    }

    /// Polls for the exit for up to `limit`.
    fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound and released; the component binds it right after).
pub fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::setup("find a free loopback port", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exits_during_start_up_carry_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = Spawner::new().unwrap();
        let mut p = Process::spawn(
            Spec {
                name: "failing",
                binary: "/bin/sh".into(),
                args: vec!["-c".into(), "echo boom >&2; exit 3".into()],
                env: vec![],
                logs: dir.path(),
            },
            &spawner,
        )
        .unwrap();
        let err = p
            .wait_ready(Duration::from_secs(10), || async {
                Err("not yet".to_string())
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("failing exited"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn stop_terminates_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = Spawner::new().unwrap();
        let mut p = Process::spawn(
            Spec {
                name: "sleeper",
                binary: "/bin/sleep".into(),
                args: vec!["600".into()],
                env: vec![],
                logs: dir.path(),
            },
            &spawner,
        )
        .unwrap();
        let how = p.stop(Duration::from_secs(5)).expect("stopped");
        assert!(how.starts_with("stopped"), "{how}");
        assert!(!p.id.is_alive());
    }
}
