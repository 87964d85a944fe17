//! Registers the CSI driver with the kubelet the way node-driver-registrar does: a
//! `pluginregistration.Registration` server on a socket in the kubelet's plugins_registry
//! directory. The kubelet finds the socket, asks for the driver's name and endpoint, and reports
//! whether registration worked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::ClusterError;
use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
use crate::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

/// The kubelet's verdict, once it has given one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pending,
    Registered,
    Refused(String),
}

struct Registrar {
    driver: String,
    endpoint: PathBuf,
    verdict: watch::Sender<Verdict>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".to_string(),
            name: self.driver.clone(),
            endpoint: self.endpoint.display().to_string(),
            // The CSI plugin API version the kubelet speaks (not the CSI spec version).
            supported_versions: vec!["1.0.0".to_string()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let verdict = if status.plugin_registered {
            Verdict::Registered
        } else {
            Verdict::Refused(status.error)
        };
        tracing::debug!(?verdict, "kubelet registration status");
        self.verdict.send_replace(verdict);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// A running registrar; dropping it stops the server and removes the socket, which makes the
/// kubelet deregister the driver.
pub struct RegistrarHandle {
    socket: PathBuf,
    verdict: watch::Receiver<Verdict>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RegistrarHandle {
    /// Serves on `socket` for `driver`, whose CSI endpoint is the unix socket `endpoint`.
    pub fn serve(
        socket: &Path,
        driver: &str,
        endpoint: &Path,
    ) -> Result<RegistrarHandle, ClusterError> {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .map_err(|e| ClusterError::io("listen on", socket, e))?;
        let (verdict_tx, verdict) = watch::channel(Verdict::Pending);
        let registrar = Registrar {
            driver: driver.to_string(),
            endpoint: endpoint.to_path_buf(),
            verdict: verdict_tx,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = UnixListenerStream::new(listener)
            .map(|accepted| accepted.map(csi_proto::authority::normalize));
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(registrar))
                // The kubelet sends the socket path as :authority: normalise it for h2.
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!("plugin registration server: {e}");
            }
        });
        Ok(RegistrarHandle {
            socket: socket.to_path_buf(),
            verdict,
            stop: Some(stop),
        })
    }

    /// Waits for the kubelet's verdict.
    pub async fn registered(&mut self, driver: &str, limit: Duration) -> Result<(), ClusterError> {
        let wait = self.verdict.wait_for(|v| *v != Verdict::Pending);
        let verdict = match tokio::time::timeout(limit, wait).await {
            Ok(Ok(verdict)) => verdict.clone(),
            Ok(Err(_)) => Verdict::Refused("the registration server stopped".into()),
            Err(_) => Verdict::Refused(format!(
                "the kubelet did not call the registration socket {} within {limit:?}",
                self.socket.display()
            )),
        };
        match verdict {
            Verdict::Registered => Ok(()),
            Verdict::Refused(reason) => Err(ClusterError::Registration {
                driver: driver.to_string(),
                reason,
            }),
            Verdict::Pending => unreachable!("waited for a verdict"),
        }
    }
}

impl Drop for RegistrarHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pluginregistration::registration_client::RegistrationClient;

    #[tokio::test]
    async fn answers_get_info_and_records_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("reg.sock");
        let mut handle =
            RegistrarHandle::serve(&socket, "d.example", Path::new("/run/d/csi.sock")).unwrap();
        let endpoint = csi_proto::transport::Endpoint::Unix(socket.clone());
        let channel = csi_proto::transport::connect_channel(&endpoint)
            .await
            .unwrap();
        let mut client = RegistrationClient::new(channel);
        let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "d.example");
        assert_eq!(info.endpoint, "/run/d/csi.sock");
        client
            .notify_registration_status(RegistrationStatus {
                plugin_registered: false,
                error: "version mismatch".into(),
            })
            .await
            .unwrap();
        let err = handle
            .registered("d.example", Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("version mismatch"), "{err}");
    }
}
