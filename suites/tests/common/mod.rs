//! The reference driver in-process on a temp socket, for the test entries of this crate (the
//! harness itself never links the driver; only these tests do).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use reference_driver::config::DriverConfig;
use reference_driver::core::Driver;
use reference_driver::server::{Endpoint, serve_until};

pub struct InProcessDriver {
    pub endpoint: Endpoint,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessDriver {
    /// Serves `config` (its state dir inside `dir`) on `<dir>/<name>.sock` on its own runtime.
    pub fn start(
        dir: &Path,
        name: &str,
        adjust: impl FnOnce(&mut DriverConfig),
    ) -> InProcessDriver {
        let mut config = DriverConfig::new(dir.join(format!("{name}-state")));
        config.node_id = "conformance-test-node".into();
        adjust(&mut config);
        let socket: PathBuf = dir.join(format!("{name}.sock"));
        let endpoint = Endpoint::Unix(socket);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_endpoint = endpoint.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("driver runtime");
            runtime.block_on(async move {
                let driver = Driver::open(config).expect("reference driver state");
                serve_until(Arc::new(driver), &serve_endpoint, async {
                    let _ = stopped.await;
                })
                .await
                .expect("reference driver serves");
            });
        });
        InProcessDriver {
            endpoint,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for InProcessDriver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
