//! Serving the three CSI services on a unix socket or TCP until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use csi_proto::v1::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::core::Driver;
use crate::csi::{controller::ControllerService, identity::IdentityService, node::NodeService};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("endpoint {0:?}: expected unix:///absolute/path or tcp://host:port")]
    BadEndpoint(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("bind {endpoint}")]
    Bind {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serve")]
    Transport(#[from] tonic::transport::Error),
}

impl std::str::FromStr for Endpoint {
    type Err = ServeError;

    fn from_str(text: &str) -> Result<Self, ServeError> {
        let bad = || ServeError::BadEndpoint(text.to_string());
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(address) = text.strip_prefix("tcp://") {
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(bad());
            }
            return Ok(Endpoint::Tcp(address.to_string()));
        }
        Err(bad())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Serves until `shutdown` resolves, finishing in-flight calls first.
pub async fn serve_until(
    driver: Arc<Driver>,
    endpoint: &Endpoint,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let router = Server::builder()
        .add_service(IdentityServer::new(IdentityService {
            driver: driver.clone(),
        }))
        .add_service(ControllerServer::new(ControllerService {
            driver: driver.clone(),
        }))
        .add_service(NodeServer::new(NodeService { driver }));
    let bind_error = |source| ServeError::Bind {
        endpoint: endpoint.to_string(),
        source,
    };
    match endpoint {
        Endpoint::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = UnixListener::bind(path).map_err(bind_error)?;
            tracing::info!(%endpoint, "serving");
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Endpoint::Tcp(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(bind_error)?;
            tracing::info!(%endpoint, local = ?listener.local_addr().ok(), "serving");
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

pub async fn serve(driver: Arc<Driver>, endpoint: &Endpoint) -> Result<(), ServeError> {
    serve_until(driver, endpoint, shutdown_signal()).await
}

/// A socket left by a killed driver is replaced; any other file at the path is left alone.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Ok(_) => Err(ServeError::NotASocket(path.to_path_buf())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_strictly() {
        assert_eq!(
            "unix:///tmp/csi.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/csi.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:10000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".into())
        );
        for bad in [
            "unix://relative.sock",
            "/tmp/csi.sock",
            "tcp://127.0.0.1",
            "tcp://:80",
            "http://x:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
