//! Why a host operation could not even start; per-item problems go into the reports instead.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The message carries the cause, because callers mostly keep only `to_string()`.
    #[error("{op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("parse {}: {cause}", path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("refusing to use {} as a run directory: {reason}", path.display())]
    RunDir { path: PathBuf, reason: &'static str },
    #[error("{} is locked by another csi-clone-conformance process", path.display())]
    Locked { path: PathBuf },
}

impl HostError {
    pub(crate) fn io(op: &'static str, path: &Path, cause: std::io::Error) -> HostError {
        HostError::Io {
            op,
            path: path.to_path_buf(),
            cause,
        }
    }
}
