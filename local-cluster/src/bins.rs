//! The directory of upstream binaries (`--k8s-bin`, made by `ci/install-k8s.sh`): checked
//! before anything starts, so a missing piece is named up front.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ClusterError;

/// Executables the cluster runs, by file name.
const EXECUTABLES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "csi-provisioner",
    "csi-resizer",
    "csi-snapshotter",
    "snapshot-controller",
];

/// Data files next to them.
const DATA: &[&str] = &[
    "cni/loopback",
    "images/busybox.tar",
    "rbac/csi-provisioner.yaml",
    "rbac/csi-resizer.yaml",
    "rbac/csi-snapshotter.yaml",
    "rbac/snapshot-controller.yaml",
];

/// Image names inside `images/busybox.tar` (see ci/install-k8s.sh).
pub const POD_IMAGE: &str = "csi-clone-conformance.local/busybox:1";
pub const PAUSE_IMAGE: &str = "csi-clone-conformance.local/pause:1";

#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    /// `name version` lines of `VERSIONS`, when the directory has one.
    pub versions: BTreeMap<String, String>,
}

impl Binaries {
    /// Checks that `dir` holds every executable and data file the cluster needs.
    pub fn find(dir: &Path) -> Result<Binaries, ClusterError> {
        let missing: Vec<&str> = EXECUTABLES
            .iter()
            .chain(DATA)
            .copied()
            .filter(|name| !dir.join(name).is_file())
            .collect();
        let crds = dir.join("crds");
        let has_crds = std::fs::read_dir(&crds).is_ok_and(|mut d| d.next().is_some());
        if !missing.is_empty() || !has_crds {
            let mut missing = missing.join(", ");
            if !has_crds {
                missing = [missing, "crds/*.yaml".to_string()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            return Err(ClusterError::MissingBinaries {
                dir: dir.display().to_string(),
                missing,
            });
        }
        let versions = std::fs::read_to_string(dir.join("VERSIONS"))
            .map(|text| parse_versions(&text))
            .unwrap_or_default();
        Ok(Binaries {
            dir: dir.to_path_buf(),
            versions,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CRD manifests to apply, in a stable order.
    pub fn crd_files(&self) -> Result<Vec<PathBuf>, ClusterError> {
        let dir = self.dir.join("crds");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| ClusterError::io("read directory", &dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }
}

/// The default `--k8s-bin`: where ci/install-k8s.sh points `current`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CSI_CLONE_K8S_BIN") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("CSI_CLONE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/csi-clone-conformance"))
        })?;
    Some(cache.join("k8s-bin/current"))
}

fn parse_versions(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().split_once(' '))
        .map(|(name, version)| (name.to_string(), version.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_piece() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        let err = Binaries::find(dir.path()).unwrap_err().to_string();
        assert!(err.contains("kube-apiserver"), "{err}");
        assert!(err.contains("crds/*.yaml"), "{err}");
        assert!(!err.contains("etcd,"), "{err}");
        assert!(err.contains("ci/install-k8s.sh"), "{err}");
    }

    #[test]
    fn versions_file_is_name_space_version() {
        let v = parse_versions("kubernetes v1.37.2\ncontainerd 1.6.20~ds1-1\n\n");
        assert_eq!(v["kubernetes"], "v1.37.2");
        assert_eq!(v["containerd"], "1.6.20~ds1-1");
    }
}
