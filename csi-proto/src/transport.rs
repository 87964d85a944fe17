//! CSI endpoints (`unix:///path`, `tcp://host:port`) and one gRPC channel per endpoint, shared
//! by the driver's own tools and the harness so neither imports the other.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

use crate::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("endpoint {0:?}: expected unix:///absolute/path or tcp://host:port")]
    BadEndpoint(String),
    #[error("connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl std::str::FromStr for Endpoint {
    type Err = TransportError;

    fn from_str(text: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::BadEndpoint(text.to_string());
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(address) = text.strip_prefix("tcp://") {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
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

/// One channel, cloned into the three service clients.
#[derive(Clone)]
pub struct CsiClients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl CsiClients {
    pub fn from_channel(channel: Channel) -> CsiClients {
        CsiClients {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        }
    }
}

/// Dials `endpoint` once; the channel reconnects by itself if the server restarts.
pub async fn connect_channel(endpoint: &Endpoint) -> Result<Channel, TransportError> {
    let result = match endpoint {
        Endpoint::Unix(path) => {
            let path = path.clone();
            // The URI is a placeholder: the connector dials the socket path.
            TonicEndpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
        }
        Endpoint::Tcp(address) => {
            TonicEndpoint::from_shared(format!("http://{address}"))
                .map_err(|_| TransportError::BadEndpoint(endpoint.to_string()))?
                .connect()
                .await
        }
    };
    result.map_err(|source| TransportError::Connect {
        endpoint: endpoint.to_string(),
        source,
    })
}

pub async fn connect(endpoint: &Endpoint) -> Result<CsiClients, TransportError> {
    Ok(CsiClients::from_channel(connect_channel(endpoint).await?))
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
