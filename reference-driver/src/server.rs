//! Serving the three CSI services on a unix socket or TCP until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use csi_proto::v1::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

pub use csi_proto::transport::Endpoint;

use crate::core::Driver;
use crate::csi::{controller::ControllerService, identity::IdentityService, node::NodeService};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
