//! Test support: a "driver" that accepts connections on a unix socket and never answers, the
//! worst peer a cleanup can meet.

use std::path::PathBuf;
use std::time::Duration;

use csi_proto::transport::{Endpoint, connect};
use tokio::io::AsyncReadExt;

use crate::context::CsiHandles;
use crate::ledger::Ledger;

pub(crate) struct SilentDriver {
    dir: tempfile::TempDir,
    pub endpoint: Endpoint,
}

impl SilentDriver {
    /// Listens until the runtime ends; every connection is read and never written to.
    pub(crate) async fn start() -> SilentDriver {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        SilentDriver {
            dir,
            endpoint: Endpoint::Unix(socket),
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A ledger whose CSI removals go to this driver.
    pub(crate) async fn handles(&self) -> CsiHandles {
        let clients = tokio::time::timeout(Duration::from_secs(10), connect(&self.endpoint))
            .await
            .expect("connect returns")
            .expect("connect");
        CsiHandles {
            controller: clients.clone(),
            node: clients,
        }
    }

    pub(crate) async fn ledger(&self, call_timeout: Duration) -> Ledger {
        Ledger::new(Some(self.handles().await), None, Default::default())
            .with_call_timeout(call_timeout)
    }
}
