//! What the run talks to. A target yields handles: CSI clients (embedded, endpoint), a
//! Kubernetes client (cluster, local-cluster), or both; suites say which they need.

mod cluster;
mod csi;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_proto::transport::Endpoint;
use local_cluster::{ClusterError, DriverCommand, LocalCluster};

pub use cluster::{KubeConnection, TEARDOWN_LIMIT};
pub use csi::{CsiTarget, find_reference_driver};

#[derive(Clone, Debug)]
pub enum TargetSpec {
    /// Start the reference driver binary; `args` are passed on (e.g. `--features ...`).
    Embedded {
        driver_bin: PathBuf,
        args: Vec<String>,
    },
    /// A driver that is already running; the node service may listen elsewhere.
    Endpoint {
        controller: Endpoint,
        node: Option<Endpoint>,
    },
    /// A Kubernetes cluster with the driver installed: a kubeconfig (default `KUBECONFIG`,
    /// then `~/.kube/config`, then the in-cluster service account) and an optional context.
    Cluster {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    },
    /// A single-node cluster the run starts on this machine from upstream binaries, with
    /// `driver` as its CSI driver.
    LocalCluster {
        k8s_bin: PathBuf,
        driver: DriverCommand,
        driver_name: Option<String>,
        start_timeout: Duration,
        feature_gates: Vec<String>,
    },
}

impl TargetSpec {
    /// Whether the target will yield CSI clients and a cluster (decided offline, for planning).
    pub fn surfaces(&self) -> Surfaces {
        match self {
            TargetSpec::Embedded { .. } | TargetSpec::Endpoint { .. } => Surfaces {
                csi: true,
                kubernetes: false,
            },
            TargetSpec::Cluster { .. } | TargetSpec::LocalCluster { .. } => Surfaces {
                csi: false,
                kubernetes: true,
            },
        }
    }
}

/// Which kinds of handle a target yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Surfaces {
    pub csi: bool,
    pub kubernetes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("start the reference driver {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create the work dir {path}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no CSI driver answered Probe at {endpoint} within {waited:?}{detail}")]
    Unreachable {
        endpoint: String,
        waited: Duration,
        detail: String,
    },
    #[error("kubeconfig: {what}: {reason}")]
    Kubeconfig { what: String, reason: String },
    #[error("start the local cluster")]
    LocalCluster(#[from] ClusterError),
    #[error("interrupted while starting the target; what was started is torn down")]
    Interrupted,
}

/// The local cluster, shared with the signal handler so either side can tear it down.
pub type SharedCluster = Arc<tokio::sync::Mutex<Option<LocalCluster>>>;

pub struct Target {
    /// "embedded", "endpoint", "cluster" or "local-cluster".
    pub kind: &'static str,
    pub csi: Option<CsiTarget>,
    pub kube: Option<KubeConnection>,
    pub local: Option<SharedCluster>,
}

impl Target {
    pub async fn start(
        spec: &TargetSpec,
        work_dir: &Path,
        wait: Duration,
    ) -> Result<Target, TargetError> {
        let only_csi = |kind, csi| Target {
            kind,
            csi: Some(csi),
            kube: None,
            local: None,
        };
        match spec {
            TargetSpec::Embedded { driver_bin, args } => Ok(only_csi(
                "embedded",
                CsiTarget::embedded(driver_bin, args, work_dir, wait).await?,
            )),
            TargetSpec::Endpoint { controller, node } => {
                let node = node.clone().unwrap_or_else(|| controller.clone());
                Ok(only_csi(
                    "endpoint",
                    CsiTarget::connect_to(controller.clone(), node, wait).await?,
                ))
            }
            TargetSpec::Cluster {
                kubeconfig,
                context,
            } => Ok(Target {
                kind: "cluster",
                csi: None,
                kube: Some(
                    KubeConnection::from_kubeconfig(kubeconfig.as_deref(), context.as_deref())
                        .await?,
                ),
                local: None,
            }),
            TargetSpec::LocalCluster {
                k8s_bin,
                driver,
                driver_name,
                start_timeout,
                feature_gates,
            } => {
                let options = local_cluster::Options {
                    k8s_bin: k8s_bin.clone(),
                    root: work_dir.join("cluster"),
                    driver: driver.clone(),
                    driver_name: driver_name.clone(),
                    start_timeout: *start_timeout,
                    feature_gates: feature_gates.clone(),
                };
                let (cluster, kube) = cluster::start_local(&options).await?;
                Ok(Target {
                    kind: "local-cluster",
                    csi: None,
                    kube: Some(kube),
                    local: Some(Arc::new(tokio::sync::Mutex::new(Some(cluster)))),
                })
            }
        }
    }

    /// The spawned driver's process id (embedded target only).
    pub fn pid(&self) -> Option<u32> {
        self.csi.as_ref().and_then(CsiTarget::pid)
    }

    /// Stops what the target started: the embedded driver, or the whole local cluster (then
    /// the host is as it was). Returns what could not be cleaned up.
    pub async fn shutdown(&mut self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .csi
            .as_mut()
            .and_then(CsiTarget::stop)
            .into_iter()
            .collect();
        if let Some(shared) = &self.local {
            problems.extend(cluster::shutdown_local(shared).await);
        }
        problems
    }
}
