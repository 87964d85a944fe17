//! `user.*` extended attributes, read and written by path without following a final symlink
//! (a symlink's own attributes, never its target's).

use std::path::Path;

use rustix::io::Errno;

use super::{DataError, IoContext};

/// Attribute lists and values are re-read at most this often when they grow between the size
/// query and the read (ERANGE); more means something keeps changing them.
const ATTEMPTS: usize = 4;

/// The `user.` attributes of `path`, name and value, in the order listed (callers sort). A
/// filesystem without xattr support has none.
pub(crate) fn user_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DataError> {
    let list = match read_sized(path, "list xattrs of", |buf| {
        if buf.is_empty() {
            rustix::fs::llistxattr_query(path)
        } else {
            rustix::fs::llistxattr(path, buf)
        }
    }) {
        Err(DataError::Io { source, .. })
            if source.raw_os_error() == Some(Errno::NOTSUP.raw_os_error()) =>
        {
            return Ok(Vec::new());
        }
        other => other?,
    };
    let mut out = Vec::new();
    for name in list.split(|&c| c == 0) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let value = read_sized(path, "read xattr of", |buf| {
            if buf.is_empty() {
                rustix::fs::lgetxattr_query(path, name)
            } else {
                rustix::fs::lgetxattr(path, name, buf)
            }
        });
        match value {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed since it was listed: the tree is changing under the walk.
            Err(DataError::Io { source, .. })
                if source.raw_os_error() == Some(Errno::NODATA.raw_os_error()) =>
            {
                return Err(DataError::Changed {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Sets one attribute (creating it); false if the filesystem supports no user xattrs, which
/// is the filesystem's business: the tree then simply has none, on both sides.
pub(crate) fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<bool, DataError> {
    match rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::CREATE) {
        Ok(()) => Ok(true),
        Err(e) if e == Errno::NOTSUP => Ok(false),
        Err(e) => Err(e).ctx("set xattr of", path),
    }
}

/// Asks for the size (an empty buffer), then reads into a buffer of that size.
fn read_sized(
    path: &Path,
    op: &'static str,
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<u8>, DataError> {
    for _ in 0..ATTEMPTS {
        let size = call(&mut []).ctx(op, path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e == Errno::RANGE => continue,
            Err(e) => return Err(e).ctx(op, path),
        }
    }
    Err(DataError::Changed {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_xattrs_round_trip_and_others_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(user_xattrs(&f).unwrap().is_empty());
        let big = vec![0xA5u8; 3000];
        for (name, value) in [(&b"user.big"[..], &big[..]), (b"user.empty", b"")] {
            assert!(
                set_xattr(&f, name, value).unwrap(),
                "no user xattrs on the temp dir"
            );
        }
        let mut got = user_xattrs(&f).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                (b"user.big".to_vec(), big),
                (b"user.empty".to_vec(), vec![])
            ]
        );
        // CREATE: a second set of the same name is an error, never a silent overwrite.
        let err = set_xattr(&f, b"user.empty", b"x").unwrap_err().to_string();
        assert!(err.contains("set xattr of") && err.contains("/f"), "{err}");
    }
}
