//! CSI targets: the embedded reference driver (spawned from its binary on a temp socket and
//! state dir) or any driver already serving at an endpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::transport::{CsiClients, Endpoint, connect};

use super::TargetError;
use crate::context::CsiHandles;

/// A CSI driver the run talks to directly.
pub struct CsiTarget {
    pub controller_endpoint: Endpoint,
    pub node_endpoint: Endpoint,
    pub handles: CsiHandles,
    child: Option<Child>,
}

/// A spawned driver that is stopped if start-up goes no further (Probe failed, or the start
/// was abandoned on a signal): a dropped `Child` would keep running.
struct Spawned(Option<Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(problem) = self.0.take().and_then(stop_child) {
            eprintln!("csi-clone-conformance: {problem}");
        }
    }
}

/// The reference driver binary next to this executable (or next to a test binary's `deps/`),
/// or `CSI_CLONE_REFERENCE_DRIVER`.
pub fn find_reference_driver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CSI_CLONE_REFERENCE_DRIVER") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("reference-driver"),
        dir.parent()?.join("reference-driver"),
    ]
    .into_iter()
    .find(|candidate| candidate.is_file())
}

impl CsiTarget {
    /// Spawns the reference driver and waits for it to answer Probe.
    pub async fn embedded(
        driver_bin: &Path,
        args: &[String],
        work_dir: &Path,
        wait: Duration,
    ) -> Result<CsiTarget, TargetError> {
        let socket = work_dir.join("driver.sock");
        let state = work_dir.join("driver-state");
        std::fs::create_dir_all(&state).map_err(|source| TargetError::WorkDir {
            path: state.clone(),
            source,
        })?;
        let endpoint = Endpoint::Unix(socket);
        let log_path = work_dir.join("driver.log");
        let log = std::fs::File::create(&log_path).map_err(|source| TargetError::WorkDir {
            path: log_path.clone(),
            source,
        })?;
        // Its own process group: a terminal's Ctrl-C reaches only us, and we clean up
        // through the driver before stopping it.
        use std::os::unix::process::CommandExt;
        let mut spawned = Spawned(None);
        let child = Command::new(driver_bin)
            .process_group(0)
            .arg("--endpoint")
            .arg(endpoint.to_string())
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                binary: driver_bin.to_path_buf(),
                source,
            })?;
        spawned.0 = Some(child);
        let mut target = CsiTarget::connect_to(endpoint.clone(), endpoint, wait)
            .await
            .map_err(|e| match e {
                TargetError::Unreachable {
                    endpoint, waited, ..
                } => TargetError::Unreachable {
                    endpoint,
                    waited,
                    detail: format!("; driver log: {}", log_path.display()),
                },
                other => other,
            })?;
        target.child = spawned.0.take();
        Ok(target)
    }

    /// A driver already serving: the node service may listen elsewhere.
    pub async fn connect_to(
        controller_endpoint: Endpoint,
        node_endpoint: Endpoint,
        wait: Duration,
    ) -> Result<CsiTarget, TargetError> {
        let controller = wait_for_probe(&controller_endpoint, wait).await?;
        let node = if node_endpoint == controller_endpoint {
            controller.clone()
        } else {
            wait_for_probe(&node_endpoint, wait).await?
        };
        Ok(CsiTarget {
            controller_endpoint,
            node_endpoint,
            handles: CsiHandles { controller, node },
            child: None,
        })
    }

    /// The spawned driver's process id (embedded target only).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops a spawned driver (SIGTERM, then SIGKILL to its process group after 10 s); an
    /// endpoint is left running. Returns a problem if the driver is still there after that
    /// (a process in D state survives SIGKILL): the run goes on rather than hang on it.
    pub fn stop(&mut self) -> Option<String> {
        stop_child(self.child.take()?)
    }
}

fn stop_child(mut child: Child) -> Option<String> {
    let pid = rustix::process::Pid::from_child(&child);
    // SIGTERM first so the driver unmounts nothing half-way and removes its socket.
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    if exited_within(&mut child, STOP_GRACE) {
        return None;
    }
    // Its own group (spawned with process_group(0)), unreaped so the id is still ours.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    if exited_within(&mut child, STOP_GRACE) {
        return None;
    }
    Some(format!(
        "the embedded driver (pid {}) did not exit within {:?} of SIGKILL (stuck in the kernel?)",
        child.id(),
        STOP_GRACE
    ))
}

/// How long the driver gets after SIGTERM, and again after SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for CsiTarget {
    fn drop(&mut self) {
        if let Some(problem) = self.stop() {
            eprintln!("csi-clone-conformance: {problem}");
        }
    }
}

/// How long one connect or Probe attempt may take (within the overall wait).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// Connects and calls Probe until it answers OK or `wait` is over; every attempt has a
/// deadline, so a driver that accepts and never answers costs `wait`, not forever.
async fn wait_for_probe(endpoint: &Endpoint, wait: Duration) -> Result<CsiClients, TargetError> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = ATTEMPT_LIMIT.min(left).max(Duration::from_millis(100));
        let last = match tokio::time::timeout(limit, probe_once(endpoint)).await {
            Ok(Ok(clients)) => return Ok(clients),
            Ok(Err(last)) => last,
            Err(_) => format!("; last attempt: no answer within {limit:?}"),
        };
        if Instant::now() >= deadline {
            return Err(TargetError::Unreachable {
                endpoint: endpoint.to_string(),
                waited: wait,
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probe_once(endpoint: &Endpoint) -> Result<CsiClients, String> {
    match connect(endpoint).await {
        Ok(mut clients) => match clients.identity.probe(csi_proto::v1::ProbeRequest {}).await {
            Ok(_) => Ok(clients),
            Err(status) => Err(format!(
                "; last answer: {:?} {}",
                status.code(),
                status.message()
            )),
        },
        Err(e) => Err(format!(
            "; last error: {}",
            std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::silent_driver::SilentDriver;

    #[tokio::test]
    async fn probe_of_a_driver_that_never_answers_gives_up_in_time() {
        let driver = SilentDriver::start().await;
        let started = Instant::now();
        let wait = Duration::from_millis(700);
        let result = wait_for_probe(&driver.endpoint, wait).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        match result {
            Err(TargetError::Unreachable { detail, .. }) => {
                assert!(detail.contains("no answer within"), "{detail}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a silent driver answered Probe"),
        }
    }
}
