//! The digest of a directory tree, read directly from the filesystem.

use std::ffi::OsString;
use std::fs::{self, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::entries::{Entry, EntryDigest, Kind, excluded, hash_content};
use super::{CHUNK, DataError, Digest, IoContext};

/// Canonical digest of everything under `root` (not root itself), except a top-level
/// `lost+found`, which mkfs/fsck create and a clone may or may not carry.
///
/// The digest is over one record per entry, in depth-first order with siblings in byte order
/// of their names. A record holds the relative path (bytes), the kind and the permission bits
/// (`mode & 0o7777`; 0 for symlinks), plus: for a regular file its length and the SHA-256 of
/// its content (so a hole and written zeros hash alike: content, not layout); for a symlink
/// its target; for a device its major and minor numbers; nothing more for directories, fifos
/// and sockets. `tar_digest` builds the same records from a tar stream, so both agree.
///
/// Left out on purpose: timestamps (a clone is a new volume, its times differ legitimately),
/// owners (the same harness writes and reads both sides), hard-link identity (a link reads as
/// a second regular file with the same content) and xattrs (not something the seeded data
/// sets, and filesystems add their own, such as SELinux labels).
pub fn tree_digest(root: &Path) -> Result<Digest, DataError> {
    let mut d = EntryDigest::new();
    let mut buf = vec![0u8; CHUNK];
    walk(root, &mut Vec::new(), &mut d, &mut buf)?;
    Ok(d.finish())
}

/// Visits `dir`'s entries sorted by name bytes, each before its contents: canonical order,
/// so records can be hashed as they come.
fn walk(
    dir: &Path,
    rel: &mut Vec<u8>,
    d: &mut EntryDigest,
    buf: &mut [u8],
) -> Result<(), DataError> {
    let mut names = fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<OsString>, _>>()
        })
        .ctx("read directory", dir)?;
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let parent_len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        if !excluded(rel) {
            let path = dir.join(&name);
            let md = fs::symlink_metadata(&path).ctx("stat", &path)?;
            let kind = kind_of(&path, &md, buf)?;
            let is_dir = kind == Kind::Dir;
            d.add(&Entry::new(rel.clone(), md.mode(), kind));
            if is_dir {
                walk(&path, rel, d, buf)?;
            }
        }
        rel.truncate(parent_len);
    }
    Ok(())
}

fn kind_of(path: &Path, md: &Metadata, buf: &mut [u8]) -> Result<Kind, DataError> {
    let ft = md.file_type();
    let device = || {
        let rdev = md.rdev();
        (rustix::fs::major(rdev), rustix::fs::minor(rdev))
    };
    Ok(if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        hash_file(path, md.len(), buf)?
    } else if ft.is_symlink() {
        let target = fs::read_link(path).ctx("read link", path)?;
        Kind::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        }
    } else if ft.is_char_device() {
        let (major, minor) = device();
        Kind::CharDevice { major, minor }
    } else if ft.is_block_device() {
        let (major, minor) = device();
        Kind::BlockDevice { major, minor }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    })
}

fn hash_file(path: &Path, len: u64, buf: &mut [u8]) -> Result<Kind, DataError> {
    // O_NOFOLLOW: the entry was lstat'ed as a file; never hash what a swapped-in symlink points to.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ctx("open", path)?;
    let (seen, sha256) = hash_content(&mut f, buf).ctx("read", path)?;
    if seen != len {
        return Err(DataError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(Kind::File { len, sha256 })
}

#[cfg(test)]
mod tests {
    use std::fs::{File, Permissions};
    use std::io::Write;
    use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::data::seed_tree;

    fn seeded(seed: u64) -> (tempfile::TempDir, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let m = seed_tree(dir.path(), "seed", seed, 64 * 1024).unwrap();
        (dir, m.digest)
    }

    fn digest(dir: &tempfile::TempDir) -> Digest {
        tree_digest(dir.path()).unwrap()
    }

    #[test]
    fn digest_tracks_content_modes_links_and_names() {
        let (d, mut last) = seeded(3);
        let base = d.path().join("seed");
        let mut changed = |what: &str| {
            let now = digest(&d);
            assert_ne!(now, last, "digest did not change after {what}");
            last = now;
        };

        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(base.join("a/b/page-plus-one.bin"))
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, 4096).unwrap();
        f.write_all_at(&[byte[0] ^ 1], 4096).unwrap();
        drop(f);
        changed("one byte changed");

        fs::set_permissions(base.join("docs/group.txt"), Permissions::from_mode(0o644)).unwrap();
        changed("0640 -> 0644");

        let link = base.join("link-to-page-plus-one");
        fs::remove_file(&link).unwrap();
        symlink("a/page-minus-one.bin", &link).unwrap();
        changed("symlink retargeted");

        fs::write(base.join("docs/new.txt"), b"x").unwrap();
        changed("file added");

        fs::rename(base.join("one.bin"), base.join("uno.bin")).unwrap();
        changed("file renamed");
    }

    #[test]
    fn digest_ignores_timestamps() {
        let (d, seeded_digest) = seeded(4);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for p in ["seed/one.bin", "seed/a", "seed"] {
            File::open(d.path().join(p))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let one = fs::metadata(d.path().join("seed/one.bin")).unwrap();
        assert_eq!(one.modified().unwrap(), old);
        assert_eq!(digest(&d), seeded_digest);
    }

    #[test]
    fn sparse_file_hashes_like_a_dense_copy() {
        let (d, _) = seeded(5);
        let sparse = d.path().join("seed/sparse.img");
        let only_sparse = tempfile::tempdir().unwrap();
        let dense = tempfile::tempdir().unwrap();
        fs::rename(&sparse, only_sparse.path().join("f")).unwrap();
        // Writing every byte, zeros included, allocates them all.
        let bytes = fs::read(only_sparse.path().join("f")).unwrap();
        let mut f = File::create(dense.path().join("f")).unwrap();
        f.set_permissions(Permissions::from_mode(0o644)).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        let dmd = fs::metadata(dense.path().join("f")).unwrap();
        assert!(dmd.blocks() * 512 >= dmd.len());
        assert_eq!(digest(&only_sparse), digest(&dense));
    }

    #[test]
    fn top_level_lost_and_found_is_ignored_nested_is_not() {
        let (d, seeded_digest) = seeded(6);
        fs::create_dir(d.path().join("lost+found")).unwrap();
        fs::write(d.path().join("lost+found/#12"), b"orphan").unwrap();
        assert_eq!(digest(&d), seeded_digest);
        fs::create_dir(d.path().join("seed/lost+found")).unwrap();
        assert_ne!(digest(&d), seeded_digest);
    }

    #[test]
    fn digest_of_a_missing_root_names_it() {
        let err = tree_digest(Path::new("/nonexistent/root"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/root"), "{err}");
    }
}
