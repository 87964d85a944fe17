//! Data plane: seeded datasets written into published volumes and whole-volume digests, so a
//! clone can be compared with its source byte for byte (design §3). Everything derives from a
//! recorded seed, so a failing comparison can be replayed exactly.
//!
//! Datasets reach a volume either directly (a published directory or device node) or as a
//! stream (a tar archive or raw bytes piped through a pod); both paths share the seeded content
//! and the digests. A tree digest has a `Level`: what a direct read sees, or the part of it
//! that survives the pod's tar. Both sides of a comparison must be taken at the same level.
//!
//! All functions do blocking std I/O; async callers run them in `spawn_blocking`.

mod blocks;
mod content;
mod entries;
mod seed;
mod seed_fs;
mod tar_read;
mod tar_write;
#[cfg(test)]
mod test_support;
mod tree;
mod xattr;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use blocks::{
    SeededBlock, WholeDevice, block_marker, block_plan, device_digest, device_len, digest_stream,
    read_whole_device, seed_blocks, write_block_marker, zero_tail,
};
pub use entries::Level;
pub use seed_fs::{TreeManifest, seed_tree, write_marker};
pub use tar_read::tar_digest;
pub use tar_write::{TarManifest, seed_tree_tar, write_marker_tar};
pub use tree::tree_digest;

/// Read/write chunk size: large enough for throughput, small enough to never hold a file in memory.
const CHUNK: usize = 1 << 20;

/// A SHA-256 digest of a tree or a device range.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

/// Hex, as `Display`: verdicts print digests with `{:?}`.
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

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
    /// Reading a device or file failed at a known byte offset.
    #[error("{op} {} at byte {offset}", path.display())]
    IoAt {
        op: &'static str,
        path: PathBuf,
        offset: u64,
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
    /// `count` blocks do not fit `device_len`: the arguments are wrong, whatever the device.
    #[error("cannot place {count} blocks of 64 KiB in {device_len} bytes")]
    TooManyBlocks { count: usize, device_len: u64 },
    #[error("offset {offset} + {len} is past the end ({device_len} bytes) of {}", path.display())]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        device_len: u64,
    },
    /// Reading or writing a stream failed; `what` names the stream (and the entry, if any).
    #[error("{op} {what}")]
    StreamIo {
        op: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} ended after {actual} bytes, expected {expected}")]
    StreamTooShort {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A tar stream that reads fine but does not describe a tree (a hard link to nothing, …).
    #[error("{what}: {reason}")]
    BadArchive { what: String, reason: String },
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

impl DataError {
    /// The OS error number behind an I/O error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DataError::Io { source, .. } | DataError::IoAt { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn stream(op: &'static str, what: impl Into<String>, source: io::Error) -> Self {
        DataError::StreamIo {
            op,
            what: what.into(),
            source,
        }
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
