//! Where everything of one cluster lives, all below one run directory, and the config files the
//! components read (kubeconfigs, kubelet and containerd configuration, the CNI config).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::ClusterError;
use crate::bins::{Binaries, PAUSE_IMAGE};
use crate::pki::{CertFiles, Pki};

/// Longest unix socket path (sun_path is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub pki: PathBuf,
    pub logs: PathBuf,
    pub kubeconfigs: PathBuf,
    pub etcd_data: PathBuf,
    pub kubelet_root: PathBuf,
    pub containerd: PathBuf,
    pub containerd_socket: PathBuf,
    pub cni_conf: PathBuf,
    pub flex_volume: PathBuf,
    pub driver_state: PathBuf,
    pub driver_socket: PathBuf,
    pub registration_socket: PathBuf,
}

impl Layout {
    /// The layout below `root` (nothing is created yet); refuses socket paths over the limit.
    pub fn new(root: &Path) -> Result<Layout, ClusterError> {
        let kubelet_root = root.join("kubelet");
        let layout = Layout {
            root: root.to_path_buf(),
            pki: root.join("pki"),
            logs: root.join("logs"),
            kubeconfigs: root.join("kubeconfig"),
            etcd_data: root.join("etcd"),
            containerd: root.join("containerd"),
            containerd_socket: root.join("containerd/containerd.sock"),
            cni_conf: root.join("cni"),
            flex_volume: root.join("flexvolume"),
            driver_state: root.join("driver"),
            driver_socket: root.join("csi/csi.sock"),
            // The kubelet accepts any socket name in plugins_registry; a short one keeps the
            // path under the limit whatever the driver's name.
            registration_socket: kubelet_root.join("plugins_registry/csi-clone-reg.sock"),
            kubelet_root,
        };
        for socket in [
            &layout.containerd_socket,
            &layout.driver_socket,
            &layout.registration_socket,
        ] {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH - 7 {
                // 7 spare bytes: containerd adds `.ttrpc` to its socket.
                return Err(ClusterError::SocketPathTooLong {
                    path: socket.clone(),
                    len,
                });
            }
        }
        Ok(layout)
    }

    pub fn create_dirs(&self) -> Result<(), ClusterError> {
        for dir in [
            &self.pki,
            &self.logs,
            &self.kubeconfigs,
            &self.etcd_data,
            &self.containerd,
            &self.cni_conf,
            &self.flex_volume,
            &self.driver_state,
            &self.kubelet_root.join("plugins_registry"),
        ] {
            std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("create", dir, e))?;
        }
        if let Some(parent) = self.driver_socket.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ClusterError::io("create", parent, e))?;
        }
        // etcd refuses a data dir readable by others.
        set_mode(&self.etcd_data, 0o700)
    }

    /// A kubeconfig for a client certificate.
    pub fn cert_kubeconfig(
        &self,
        name: &str,
        server: &str,
        ca: &Path,
        client: &CertFiles,
    ) -> Result<PathBuf, ClusterError> {
        let user = json!({
            "client-certificate": client.cert,
            "client-key": client.key,
        });
        self.write_kubeconfig(name, server, ca, user)
    }

    /// A kubeconfig for a bearer token (service accounts).
    pub fn token_kubeconfig(
        &self,
        name: &str,
        server: &str,
        ca: &Path,
        token: &str,
    ) -> Result<PathBuf, ClusterError> {
        self.write_kubeconfig(name, server, ca, json!({ "token": token }))
    }

    fn write_kubeconfig(
        &self,
        name: &str,
        server: &str,
        ca: &Path,
        user: serde_json::Value,
    ) -> Result<PathBuf, ClusterError> {
        // JSON is YAML: every client reads it.
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "local", "cluster": { "server": server, "certificate-authority": ca } }],
            "users": [{ "name": name, "user": user }],
            "contexts": [{ "name": "local", "context": { "cluster": "local", "user": name } }],
            "current-context": "local",
        });
        let path = self.kubeconfigs.join(format!("{name}.kubeconfig"));
        write_private(&path, &config.to_string())?;
        Ok(path)
    }

    /// KubeletConfiguration for a single loopback node on a cgroupfs host.
    pub fn kubelet_config(
        &self,
        pki: &Pki,
        port: u16,
        healthz_port: u16,
    ) -> Result<PathBuf, ClusterError> {
        let config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "authentication": {
                "anonymous": { "enabled": false },
                "webhook": { "enabled": false },
                "x509": { "clientCAFile": pki.ca.cert },
            },
            // Only holders of a certificate from this cluster's CA reach the kubelet at all.
            "authorization": { "mode": "AlwaysAllow" },
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": false,
            "enforceNodeAllocatable": [],
            "failSwapOn": false,
            "failCgroupV1": false,
            "containerRuntimeEndpoint": format!("unix://{}", self.containerd_socket.display()),
            "podLogsDir": self.root.join("pod-logs"),
            "resolvConf": "",
            // A test node must not evict its pods because the build host's disk is busy.
            "evictionHard": { "memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%" },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "volumePluginDir": self.flex_volume,
            "localStorageCapacityIsolation": false,
        });
        let path = self.root.join("kubelet.json");
        write_file(&path, &config.to_string())?;
        Ok(path)
    }

    /// containerd 1.6 configuration: every path below the run directory, runc from the bin dir,
    /// the imported busybox as sandbox image, plugins that would write to the host disabled.
    pub fn containerd_config(&self, bins: &Binaries) -> Result<PathBuf, ClusterError> {
        let c = &self.containerd;
        let text = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # The pause container asks for oom_score_adj -998; hosts (and sandboxes) that refuse a
  # negative value make every pod fail to start. Clamp to containerd's own value instead.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
            root = c.join("root").display(),
            state = c.join("state").display(),
            socket = self.containerd_socket.display(),
            pause = PAUSE_IMAGE,
            runc = bins.path("runc").display(),
            runc_root = c.join("runc").display(),
            cni_bin = bins.path("cni").display(),
            cni_conf = self.cni_conf.display(),
        );
        let path = c.join("config.toml");
        write_file(&path, &text)?;
        // Pods use the host network; containerd still wants one CNI network to call itself ready.
        let cni = json!({
            "cniVersion": "0.3.1",
            "name": "csi-clone-loopback",
            "plugins": [{ "type": "loopback" }],
        });
        write_file(
            &self.cni_conf.join("10-loopback.conflist"),
            &cni.to_string(),
        )?;
        Ok(path)
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|e| ClusterError::io("write", path, e))
}

/// Kubeconfigs hold credentials: root only.
fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    write_file(path, text)?;
    set_mode(path, 0o600)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ClusterError::io("set mode of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_root_whose_sockets_would_be_too_long() {
        let long = PathBuf::from("/var/tmp").join("x".repeat(80));
        let err = Layout::new(&long).unwrap_err().to_string();
        assert!(err.contains("over the 107-byte limit"), "{err}");
        assert!(
            Layout::new(Path::new(
                "/var/tmp/csi-clone-conformance/run-abcdef/cluster"
            ))
            .is_ok()
        );
    }
}
