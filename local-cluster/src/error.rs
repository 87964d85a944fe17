//! Why the local cluster could not start (or stop) — each variant names the component, file or
//! object involved, so the message alone says what to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir} lacks {missing} (build them with `bash ci/install-k8s.sh`, or pass --k8s-bin DIR)"
    )]
    MissingBinaries { dir: String, missing: String },
    #[error("certificate {what}: {reason}")]
    Certificate { what: String, reason: String },
    #[error("start {component} ({binary})")]
    Spawn {
        component: String,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{component} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        component: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("{component} was not ready within {waited:?}: {detail}; its log: {log}")]
    NotReady {
        component: String,
        waited: Duration,
        detail: String,
        log: String,
    },
    #[error("Kubernetes API: {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
    #[error("the kubelet did not register the driver {driver}: {reason}")]
    Registration { driver: String, reason: String },
    #[error(
        "unix socket path {} is {len} bytes, over the 107-byte limit (use a shorter --work-dir)",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("interrupted while starting")]
    Interrupted,
}

impl ClusterError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Api { what, source }
    }

    pub(crate) fn setup(what: impl Into<String>, reason: impl ToString) -> ClusterError {
        ClusterError::Setup {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
