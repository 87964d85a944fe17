//! Connecting to a CSI endpoint and running the driver as a child process: shared by the
//! driver's integration tests and `clone-bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use csi_proto::transport::{CsiClients, Endpoint, connect};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("driver at {endpoint} did not answer Probe within {waited:?}")]
    NotReady { endpoint: String, waited: Duration },
}

/// The reference driver as a child process on a unix socket; SIGTERM on drop.
pub struct DriverProcess {
    child: Child,
    pub endpoint: Endpoint,
    pub state_dir: PathBuf,
}

impl DriverProcess {
    /// Starts `binary --endpoint unix://<socket> --state-dir <state_dir> <extra>` and waits
    /// until Probe answers.
    pub async fn start(
        binary: &Path,
        socket: &Path,
        state_dir: &Path,
        extra: &[&str],
    ) -> Result<(DriverProcess, CsiClients), ClientError> {
        let endpoint = Endpoint::Unix(socket.to_path_buf());
        let child = Command::new(binary)
            .arg("--endpoint")
            .arg(endpoint.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|source| ClientError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let process = DriverProcess {
            child,
            endpoint,
            state_dir: state_dir.to_path_buf(),
        };
        let clients = process.wait_ready(Duration::from_secs(20)).await?;
        Ok((process, clients))
    }

    async fn wait_ready(&self, limit: Duration) -> Result<CsiClients, ClientError> {
        let started = Instant::now();
        loop {
            if let Ok(mut clients) = connect(&self.endpoint).await
                && clients
                    .identity
                    .probe(csi_proto::v1::ProbeRequest {})
                    .await
                    .is_ok()
            {
                return Ok(clients);
            }
            if started.elapsed() > limit {
                return Err(ClientError::NotReady {
                    endpoint: self.endpoint.to_string(),
                    waited: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, for recovery tests.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
