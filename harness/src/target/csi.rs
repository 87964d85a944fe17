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
        target.child = Some(child);
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

    /// Stops a spawned driver (SIGTERM, then SIGKILL after 10 s); an endpoint is left running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM first so the driver unmounts nothing half-way and removes its socket.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for CsiTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_for_probe(endpoint: &Endpoint, wait: Duration) -> Result<CsiClients, TargetError> {
    let started = Instant::now();
    loop {
        let last = match connect(endpoint).await {
            Ok(mut clients) => match clients.identity.probe(csi_proto::v1::ProbeRequest {}).await {
                Ok(_) => return Ok(clients),
                Err(status) => format!("; last answer: {:?} {}", status.code(), status.message()),
            },
            Err(e) => format!(
                "; last error: {}",
                std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
            ),
        };
        if started.elapsed() >= wait {
            return Err(TargetError::Unreachable {
                endpoint: endpoint.to_string(),
                waited: wait,
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
