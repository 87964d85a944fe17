//! Commands in data pods through the API server's exec stream: bytes in on stdin, a blocking
//! consumer (the shared data code) on stdout, stderr and the exit status kept for the verdict.

use std::io::Read;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::SyncIoBridge;

use super::pods::{CONTAINER, DataPod};
use crate::case::{CaseResult, harness_error};
use crate::context::CaseCtx;
use crate::data::DataError;

/// How a command in a pod ended.
pub(crate) struct Finished<T> {
    /// The consumer's result (`None` when there was none to run).
    pub output: Result<T, DataError>,
    /// `None`: exit code 0. Else the API's message with the command's stderr.
    pub failure: Option<String>,
}

impl CaseCtx {
    /// Runs `script` with `sh -c` in the pod, feeding `stdin` and handing stdout to `consume`,
    /// which runs on a blocking thread. Whatever `consume` leaves unread is drained, so the
    /// command never blocks on a full pipe.
    pub(crate) async fn exec_in<T: Send + 'static>(
        &self,
        pod: &DataPod,
        script: &str,
        stdin: Option<Vec<u8>>,
        consume: impl FnOnce(&mut dyn Read) -> Result<T, DataError> + Send + 'static,
    ) -> CaseResult<Finished<T>> {
        let cluster = self.cluster()?;
        let limit = cluster.timeouts.pod;
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &pod.namespace);
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true);
        let Some(_ticket) = self.ledger().call_ticket() else {
            return Err(harness_error("the run was interrupted"));
        };
        let run = async {
            let mut process = api
                .exec(&pod.name, ["sh", "-c", script], &params)
                .await
                .map_err(|e| {
                    harness_error(format!(
                        "exec in pod {}: {}",
                        pod.name,
                        super::describe_kube_error(&e)
                    ))
                })?;
            let status = process.take_status();
            if let (Some(bytes), Some(mut writer)) = (stdin, process.stdin()) {
                tokio::spawn(async move {
                    let _ = writer.write_all(&bytes).await;
                    let _ = writer.shutdown().await;
                });
            }
            let stderr = process.stderr().map(|mut r| {
                tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = r.read_to_string(&mut text).await;
                    text
                })
            });
            let stdout = process
                .stdout()
                .ok_or_else(|| harness_error("exec without stdout"))?;
            let output = tokio::task::spawn_blocking(move || {
                let mut reader = SyncIoBridge::new(stdout);
                let result = consume(&mut reader);
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                result
            })
            .await
            .map_err(|e| harness_error(format!("data task failed: {e}")))?;
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            let stderr = match stderr {
                Some(task) => task.await.unwrap_or_default(),
                None => String::new(),
            };
            let _ = process.join().await;
            let failure = match status {
                Some(s) if s.status.as_deref() == Some("Success") => None,
                Some(s) => Some(format!(
                    "{}; stderr: {}",
                    s.message.unwrap_or_default(),
                    stderr.trim()
                )),
                None => Some(format!("no exit status; stderr: {}", stderr.trim())),
            };
            Ok(Finished { output, failure })
        };
        tokio::time::timeout(limit, run).await.map_err(|_| {
            harness_error(format!(
                "command in pod {} did not finish within {limit:?}: {script}",
                pod.name
            ))
        })?
    }
}
