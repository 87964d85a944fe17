//! A real single-node Kubernetes cluster on loopback, from upstream binaries: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet on containerd + runc, the
//! CSI sidecars and the snapshot controller, then a CSI driver registered with the kubelet.
//! Everything lives under one run directory and is torn down by pid, mount and loop device;
//! the host's sysctls and paths are restored (see `host`). A run killed before its tear-down is
//! undone by the next one, or by [`clean_earlier_runs`], from the record it kept on disk.

pub mod bins;
mod claim;
mod cluster;
mod components;
mod error;
pub mod host;
mod layout;
mod objects;
mod pki;
mod process;
mod registration;
mod spawner;
mod teardown;

pub use claim::clean_earlier_runs;
pub use cluster::{ClusterInfo, DriverCommand, LocalCluster, NODE_NAME, Options};
pub use error::ClusterError;
pub use teardown::TeardownReport;

/// Generated kubelet plugin-registration API.
#[allow(clippy::all)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}
