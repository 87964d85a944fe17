//! The digest of a directory tree, read directly from the filesystem.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::entries::{Entry, EntryDigest, Kind, Level, Meta, Mtime, excluded, hash_content};
use super::xattr::user_xattrs;
use super::{CHUNK, DataError, Digest, IoContext};

/// Canonical digest of everything under `root` (not root itself), except a top-level
/// `lost+found`, which mkfs/fsck create and a clone may or may not carry. A clone is an exact
/// duplicate of its source, so the digest covers what a file-by-file copy (`cp -r`) loses.
///
/// The digest is over one record per entry, in depth-first order with siblings in byte order
/// of their names (so names of any bytes, 255-byte and non-ASCII ones included, at any depth).
/// A record holds the relative path (bytes) and the kind, then, at `Level::Direct`:
/// - the owner's uid and gid and all mode bits (`mode & 0o7777`: setuid, setgid and sticky
///   included; 0 for symlinks, whose mode Linux ignores);
/// - the mtime in seconds and nanoseconds, directories and symlinks included: a block-level
///   copy and `cp -a` keep them, and between the source's digest and the copy no flow of
///   the harness touches a directory below the root (markers are written at the root, or
///   after the copy with the digest taken again; the concurrent writer works in a sibling
///   directory of the digested one);
/// - the `user.` xattrs, names and values, sorted (other namespaces are the system's or a
///   security module's, such as SELinux labels, which a clone legitimately gets anew);
/// - for a regular file its length and the SHA-256 of its content (so a hole and written
///   zeros hash alike: content, not layout); for a symlink its target; for a device its major
///   and minor numbers.
///
/// The second and later names of an inode (hard links) are records of their own that name
/// the first one instead, so a copy that turns links into separate files changes the digest.
/// Left out: atime and ctime (a new volume cannot keep them), inode numbers, link counts.
///
/// `Level::Tar` records what the pod's tar carries: no xattrs, mtimes in whole seconds and
/// only for files, fifos and devices, no symlink owners (see `Level`). `tar_digest` builds the
/// `Level::Tar` records from a tar stream, so both agree on a tree; a comparison must take
/// both sides at the same level (the level is hashed in, so mixed levels never match).
pub fn tree_digest(root: &Path, level: Level) -> Result<Digest, DataError> {
    let mut w = Walker {
        d: EntryDigest::new(level),
        level,
        buf: vec![0u8; CHUNK],
        first_names: HashMap::new(),
    };
    w.walk(root, &mut Vec::new())?;
    Ok(w.d.finish())
}

struct Walker {
    d: EntryDigest,
    level: Level,
    buf: Vec<u8>,
    /// Inodes with more than one name, by (device, inode): the first name walked.
    first_names: HashMap<(u64, u64), Vec<u8>>,
}

impl Walker {
    /// Visits `dir`'s entries sorted by name bytes, each before its contents: canonical
    /// order, so records can be hashed as they come, and the first name of an inode met is
    /// its first in canonical order.
    fn walk(&mut self, dir: &Path, rel: &mut Vec<u8>) -> Result<(), DataError> {
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
                if self.visit(&path, rel)? {
                    self.walk(&path, rel)?;
                }
            }
            rel.truncate(parent_len);
        }
        Ok(())
    }

    /// Records one entry; true if it is a directory to descend into.
    fn visit(&mut self, path: &Path, rel: &[u8]) -> Result<bool, DataError> {
        let md = fs::symlink_metadata(path).ctx("stat", path)?;
        let is_dir = md.file_type().is_dir();
        if !is_dir && md.nlink() > 1 {
            match self.first_names.get(&(md.dev(), md.ino())) {
                Some(first) => {
                    self.d.add(&Entry::link(rel.to_vec(), first.clone()));
                    return Ok(false);
                }
                None => drop(self.first_names.insert((md.dev(), md.ino()), rel.to_vec())),
            }
        }
        let kind = kind_of(path, &md, &mut self.buf)?;
        let xattrs = match self.level {
            Level::Direct => user_xattrs(path)?,
            Level::Tar => Vec::new(),
        };
        let meta = Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: Mtime {
                secs: md.mtime(),
                nanos: md.mtime_nsec() as u32,
            },
            xattrs,
        };
        self.d.add(&Entry::new(rel.to_vec(), kind, meta));
        Ok(is_dir)
    }
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
    use std::fs::{File, FileTimes, Permissions};
    use std::io::Write;
    use std::os::unix::fs::{FileExt, PermissionsExt, lchown, symlink};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::data::seed_tree;
    use crate::data::xattr::set_xattr;

    fn seeded(seed: u64) -> (tempfile::TempDir, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let m = seed_tree(dir.path(), "seed", seed, 64 * 1024).unwrap();
        (dir, m.digest)
    }

    fn digest(dir: &tempfile::TempDir) -> Digest {
        tree_digest(dir.path(), Level::Direct).unwrap()
    }

    fn both(dir: &tempfile::TempDir) -> [Digest; 2] {
        [Level::Direct, Level::Tar].map(|l| tree_digest(dir.path(), l).unwrap())
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        let f = File::open(path).unwrap();
        f.set_times(FileTimes::new().set_modified(t)).unwrap();
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

    /// Each change is one a file-by-file copy makes; the tar level sees those a tar carries.
    #[test]
    fn digest_tracks_owners_special_bits_mtimes_xattrs_and_hard_links() {
        let (d, _) = seeded(4);
        let base = d.path().join("seed");
        let mut last = both(&d);
        let mut changed = |what: &str, tar_sees_it: bool| {
            let now = both(&d);
            assert_ne!(now[0], last[0], "direct digest did not change after {what}");
            if tar_sees_it {
                assert_ne!(now[1], last[1], "tar digest did not change after {what}");
            } else {
                assert_eq!(now[1], last[1], "tar digest changed after {what}");
            }
            last = now;
        };

        lchown(base.join("home/alice/notes.txt"), Some(0), None).unwrap();
        changed("a file's owner to root", true);
        lchown(base.join("modes/setgid-dir"), None, Some(0)).unwrap();
        changed("a directory's group to root", true);
        lchown(base.join("home/alice/latest"), Some(0), Some(0)).unwrap();
        changed("a symlink's owner to root", false);

        fs::set_permissions(base.join("modes/setuid"), Permissions::from_mode(0o755)).unwrap();
        changed("setuid cleared", true);
        fs::set_permissions(base.join("modes/sticky"), Permissions::from_mode(0o777)).unwrap();
        changed("sticky cleared", true);

        let one = base.join("one.bin");
        let t = fs::metadata(&one).unwrap().modified().unwrap();
        set_mtime(&one, t + Duration::from_nanos(1));
        changed("a file's mtime by a nanosecond", false);
        set_mtime(&one, t + Duration::from_secs(1));
        changed("a file's mtime by a second", true);
        set_mtime(&base.join("deep/d01"), t);
        changed("a directory's mtime", false);

        let tagged = base.join("xattrs/tagged.bin");
        rustix::fs::lremovexattr(&tagged, "user.empty").unwrap();
        changed("an xattr removed", false);
        assert!(set_xattr(&tagged, b"user.empty", b"now full").unwrap());
        changed("an xattr added back with another value", false);

        // The third name becomes a file of its own with everything else equal.
        let third = base.join("docs/third-name.bin");
        let docs_mtime = fs::metadata(base.join("docs")).unwrap().modified().unwrap();
        let md = fs::metadata(&third).unwrap();
        let bytes = fs::read(&third).unwrap();
        fs::remove_file(&third).unwrap();
        let mut copy = File::create_new(&third).unwrap();
        copy.write_all(&bytes).unwrap();
        std::os::unix::fs::fchown(&copy, Some(md.uid()), Some(md.gid())).unwrap();
        copy.set_permissions(Permissions::from_mode(md.mode()))
            .unwrap();
        set_xattr(&third, b"user.linked", b"yes").unwrap();
        copy.set_times(FileTimes::new().set_modified(md.modified().unwrap()))
            .unwrap();
        drop(copy);
        // The directory as it was, so only the link is gone.
        set_mtime(&base.join("docs"), docs_mtime);
        changed("a hard link broken into a copy", true);
    }

    #[test]
    fn digest_ignores_atime_and_ctime() {
        let (d, seeded_digest) = seeded(4);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for p in ["seed/one.bin", "seed/a", "seed"] {
            let f = File::open(d.path().join(p)).unwrap();
            f.set_times(FileTimes::new().set_accessed(old)).unwrap();
        }
        // Same mode again: only the ctime moves.
        let secret = d.path().join("seed/secret.txt");
        fs::set_permissions(&secret, Permissions::from_mode(0o600)).unwrap();
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
        let mtime = fs::metadata(only_sparse.path().join("f"))
            .unwrap()
            .modified();
        f.set_times(FileTimes::new().set_modified(mtime.unwrap()))
            .unwrap();
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
        let err = tree_digest(Path::new("/nonexistent/root"), Level::Direct)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/root"), "{err}");
    }
}
