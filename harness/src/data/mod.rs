//! Data plane: seeded datasets written into published volumes and whole-volume digests, so a
//! clone can be compared with its source byte for byte (design §3). Everything derives from a
//! recorded seed, so a failing comparison can be replayed exactly.
//!
//! All functions do blocking std I/O; async callers run them in `spawn_blocking`.

mod blocks;
mod tree;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use blocks::{device_digest, device_len, seed_blocks, write_block_marker};
pub use tree::{TreeManifest, seed_tree, tree_digest, write_marker};

/// Read/write chunk size: large enough for throughput, small enough to never hold a file in memory.
const CHUNK: usize = 1 << 20;

/// A SHA-256 digest of a tree or a device range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O call failed; `op` is the operation ("open", "fsync", …).
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {actual} bytes long, expected at least {expected}", path.display())]
    TooShort {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{} changed while it was being hashed", path.display())]
    Changed { path: PathBuf },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot place {count} blocks of 64 KiB in {device_len} bytes of {}", path.display())]
    TooManyBlocks {
        path: PathBuf,
        count: usize,
        device_len: u64,
    },
    #[error("offset {offset} + {len} is past the end ({device_len} bytes) of {}", path.display())]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        device_len: u64,
    },
}

/// Wraps an `io::Result` with the operation and path, so every error names both.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, DataError>;
}

impl<T, E: Into<io::Error>> IoContext<T> for Result<T, E> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, DataError> {
        self.map_err(|e| DataError::Io {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        })
    }
}

/// Filesystem size as statvfs reports it (`f_blocks * f_frsize`) for the filesystem holding `path`.
pub fn fs_total_bytes(path: &Path) -> Result<u64, DataError> {
    let st = rustix::fs::statvfs(path).ctx("statvfs", path)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_displays_lowercase_hex() {
        let mut b = [0u8; 32];
        b[0] = 0xAB;
        b[31] = 0x0f;
        let s = Digest(b).to_string();
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("ab00"));
        assert!(s.ends_with("0f"));
    }

    #[test]
    fn fs_total_bytes_is_positive_and_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fs_total_bytes(dir.path()).unwrap() > 0);
        let missing = dir.path().join("missing");
        let err = fs_total_bytes(&missing).unwrap_err().to_string();
        assert!(err.contains("statvfs") && err.contains("missing"), "{err}");
    }
}
