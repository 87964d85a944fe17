//! Serving the three CSI services on a unix socket or TCP until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_proto::v1::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
use tokio::net::UnixListener;
use tokio_stream::StreamExt;
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

/// SIGTERM and SIGINT, listened to from start to exit: the first stops serving, a second one
/// stops the wait for node units.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// How long a stopping driver waits for node units whose callers are gone. A unit that is not
/// stuck takes seconds (losetup alone is cut off at 30 s); a stuck one (a fsck may take 300 s)
/// must not keep the driver from stopping, since start-up reconciliation finishes what it cut
/// from the intent it recorded.
pub const NODE_UNITS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// Serves until `shutdown` resolves, finishing in-flight calls first, then the node units
/// that outlived their calls (up to `NODE_UNITS_SHUTDOWN_DEADLINE`).
pub async fn serve_until(
    driver: Arc<Driver>,
    endpoint: &Endpoint,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let served = serve_calls(driver.clone(), endpoint, shutdown).await;
    driver.finish_node_units(NODE_UNITS_SHUTDOWN_DEADLINE).await;
    served
}

async fn serve_calls(
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
            // gRPC C-core clients (Python, Ruby, C++ and others) send the socket path as
            // :authority, which h2 refuses; the shim puts `localhost` in its place.
            let incoming = UnixListenerStream::new(listener)
                .map(|accepted| accepted.map(csi_proto::authority::normalize));
            let result = router
                .serve_with_incoming_shutdown(incoming, shutdown)
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

/// Serves until SIGTERM or SIGINT, then finishes like `serve_until`; a second signal ends the
/// wait for node units at once.
pub async fn serve(driver: Arc<Driver>, endpoint: &Endpoint) -> Result<(), ServeError> {
    let mut signals = Signals::new();
    let first = async {
        let signal = signals.recv().await;
        tracing::info!("{signal}: shutting down");
    };
    let served = serve_calls(driver.clone(), endpoint, first).await;
    tokio::select! {
        () = driver.finish_node_units(NODE_UNITS_SHUTDOWN_DEADLINE) => {}
        signal = signals.recv() => tracing::warn!(
            "{signal} again: not waiting for node units; start-up reconciliation will finish them"
        ),
    }
    served
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
