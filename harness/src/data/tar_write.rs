//! Seeded datasets as tar streams, for targets where a remote `tar -x -C <root>` does the
//! writing. The entries come from the same generator as `seed_tree`, so extracting the stream
//! gives the tree `seed_tree` writes as far as the tar level goes, and the manifest's digest
//! is computed from the very records emitted.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};
use tar::{Builder, EntryType, Header};

use super::content::Content;
use super::entries::{Entry, Kind, Level, Meta, digest_entries};
use super::seed::{Sink, marker, seeded_dataset};
use super::{DataError, Digest};

/// Symlink permission bits as Linux reports them (the digest ignores them).
const SYMLINK_MODE: u32 = 0o777;

/// What `seed_tree_tar` emitted.
#[derive(Clone, Debug)]
pub struct TarManifest {
    /// Regular files in the stream (hard links, symlinks and directories not counted).
    pub files: usize,
    /// Sum of their lengths (the sparse file counts in full: the stream carries its zeros).
    pub bytes: u64,
    /// `tree_digest(root, Level::Tar)` of an otherwise empty root after `tar -x -C root` of
    /// the stream, which is also `tar_digest` of reading that root back with `tar -c`.
    pub digest: Digest,
}

/// Writes the dataset `seed_tree(root, prefix, seed, large_bytes)` writes, as a tar stream to
/// `out`: extracting it as root with `tar -x -C root` (GNU or busybox tar) gives the same
/// paths, owners, modes, file mtimes (in whole seconds: a header has no more), contents,
/// hard links and symlinks. The sparse file arrives as written zeros, which the digest cannot
/// tell apart. Owners are numeric ids without names, so no tar maps them through the pod's
/// /etc/passwd. Xattrs are not in the stream: busybox tar could not restore them. Entries come
/// parents first; names and link targets over 100 bytes use GNU long-name entries.
pub fn seed_tree_tar<W: Write>(
    out: W,
    prefix: &str,
    seed: u64,
    large_bytes: u64,
) -> Result<TarManifest, DataError> {
    let mut sink = TarSink::new(out);
    let counts = seeded_dataset(&mut sink, prefix, seed, large_bytes)?;
    let entries = sink.finish()?;
    let digest = digest_entries(entries, Level::Tar).map_err(|reason| DataError::BadArchive {
        what: "the seeded tar stream".into(),
        reason,
    })?;
    Ok(TarManifest {
        files: counts.files,
        bytes: counts.bytes,
        digest,
    })
}

/// The file `write_marker(root, name, seed, bytes)` writes, as a tar stream of that one entry
/// (same owner, mode, mtime and content). There are no directory entries, so extracting it
/// leaves the existing directories, their modes included, as they are.
pub fn write_marker_tar<W: Write>(
    out: W,
    name: &str,
    seed: u64,
    bytes: u64,
) -> Result<(), DataError> {
    let mut sink = TarSink::new(out);
    marker(&mut sink, name, seed, bytes)?;
    sink.finish().map(drop)
}

/// Appends tar entries, and keeps the canonical record of each for the manifest digest.
struct TarSink<W: Write> {
    builder: Builder<W>,
    entries: Vec<Entry>,
}

impl<W: Write> TarSink<W> {
    fn new(out: W) -> Self {
        TarSink {
            builder: Builder::new(out),
            entries: Vec::new(),
        }
    }

    /// Writes the end-of-archive blocks and flushes.
    fn finish(self) -> Result<Vec<Entry>, DataError> {
        let mut out = self
            .builder
            .into_inner()
            .map_err(|e| DataError::stream("finish", "tar stream", e))?;
        out.flush()
            .map_err(|e| DataError::stream("flush", "tar stream", e))?;
        Ok(self.entries)
    }
}

/// A header with numeric ids only: with no user or group name, GNU and busybox tar both
/// restore the ids as they are.
fn header(kind: EntryType, meta: &Meta, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_size(size);
    h.set_uid(meta.uid.into());
    h.set_gid(meta.gid.into());
    h.set_mtime(meta.mtime.secs.max(0) as u64);
    h
}

fn write_error(rel: &str) -> impl FnOnce(io::Error) -> DataError {
    move |e| DataError::stream("write", format!("tar entry {rel}"), e)
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, rel: &str, meta: &Meta) -> Result<(), DataError> {
        let mut h = header(EntryType::Directory, meta, 0);
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(write_error(rel))?;
        self.entries
            .push(Entry::new(rel.into(), Kind::Dir, meta.clone()));
        Ok(())
    }

    fn file(&mut self, rel: &str, meta: &Meta, content: Content<'_>) -> Result<(), DataError> {
        let len = content.len();
        let mut data = Hashing {
            inner: content,
            h: Sha256::new(),
            len: 0,
        };
        let mut h = header(EntryType::Regular, meta, len);
        self.builder
            .append_data(&mut h, rel, &mut data)
            .map_err(write_error(rel))?;
        // A shorter body would shift every later header: the stream is unusable.
        if data.len != len {
            return Err(DataError::StreamTooShort {
                what: format!("seeded content of {rel}"),
                expected: len,
                actual: data.len,
            });
        }
        let sha256 = data.h.finalize().into();
        let kind = Kind::File { len, sha256 };
        self.entries
            .push(Entry::new(rel.into(), kind, meta.clone()));
        Ok(())
    }

    fn symlink(&mut self, rel: &str, target: &str, meta: &Meta) -> Result<(), DataError> {
        let meta = Meta {
            mode: SYMLINK_MODE,
            ..meta.clone()
        };
        let mut h = header(EntryType::Symlink, &meta, 0);
        self.builder
            .append_link(&mut h, rel, target)
            .map_err(write_error(rel))?;
        let target = target.as_bytes().to_vec();
        let kind = Kind::Symlink { target };
        self.entries.push(Entry::new(rel.into(), kind, meta));
        Ok(())
    }

    fn hard_link(&mut self, rel: &str, existing: &str) -> Result<(), DataError> {
        // A link entry's own metadata is ignored by both tars: the inode keeps the file's.
        let mut h = header(EntryType::Link, &Meta::default(), 0);
        self.builder
            .append_link(&mut h, rel, existing)
            .map_err(write_error(rel))?;
        self.entries
            .push(Entry::link(rel.into(), existing.as_bytes().to_vec()));
        Ok(())
    }
}

/// Hashes the bytes as the builder copies them into the stream.
struct Hashing<R> {
    inner: R,
    h: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.h.update(&out[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::data::test_support::tars;
    use crate::data::{seed_tree, tar_digest, tree_digest, write_marker};

    const LARGE: u64 = (2 << 20) + 5;

    fn stream(prefix: &str, seed: u64) -> (Vec<u8>, TarManifest) {
        let mut out = Vec::new();
        let m = seed_tree_tar(&mut out, prefix, seed, LARGE).unwrap();
        (out, m)
    }

    /// The tree seeded both ways, directly and extracted from the stream by every tar, is the
    /// same tree at the tar level, walked or read back through every tar; the direct level
    /// sees what the tar path loses.
    fn assert_extracts_like_seed_tree(prefix: &str, seed: u64) {
        let direct = tempfile::tempdir().unwrap();
        let m = seed_tree(direct.path(), prefix, seed, LARGE).unwrap();
        let want = tree_digest(direct.path(), Level::Tar).unwrap();
        for tar in tars() {
            assert_eq!(
                tar.digest(direct.path()).unwrap(),
                want,
                "{} tar -c",
                tar.name
            );
        }
        for tar in tars() {
            let dir = tempfile::tempdir().unwrap();
            let got = tar.extract(dir.path(), |w| {
                seed_tree_tar(w, prefix, seed, LARGE).unwrap()
            });
            assert_eq!(got.digest, want, "manifest");
            let walked = tree_digest(dir.path(), Level::Tar).unwrap();
            assert_eq!(walked, want, "{} tar -x", tar.name);
            for reader in tars() {
                let read = reader.digest(dir.path()).unwrap();
                assert_eq!(read, want, "{} tar -x, {} tar -c", tar.name, reader.name);
            }
            assert_ne!(tree_digest(dir.path(), Level::Direct).unwrap(), m.digest);
            assert_eq!((got.files, got.bytes), (m.files, m.bytes));
            let base = dir.path().join(prefix);
            assert!(
                fs::symlink_metadata(base.join("dangling"))
                    .unwrap()
                    .is_symlink()
            );
            let setuid = fs::metadata(base.join("modes/setuid")).unwrap();
            assert_eq!(setuid.mode() & 0o7777, 0o4755, "{} tar", tar.name);
            let notes = fs::metadata(base.join("home/alice/notes.txt")).unwrap();
            assert_eq!((notes.uid(), notes.gid()), (1000, 1000), "{} tar", tar.name);
            let original = fs::metadata(base.join("links/original.bin")).unwrap();
            assert_eq!(original.nlink(), 3, "{} tar", tar.name);
        }
    }

    #[test]
    fn extracted_stream_is_the_seeded_tree() {
        assert_extracts_like_seed_tree("seed", 31);
    }

    #[test]
    fn names_over_100_and_paths_over_255_bytes_extract() {
        let prefix = "p".repeat(230);
        assert!(prefix.len() + "/docs/name with spaces ünïcödé ✓.txt".len() > 255);
        assert_extracts_like_seed_tree(&prefix, 32);
    }

    #[test]
    fn stream_reads_back_to_its_manifest_and_is_deterministic() {
        let (a, ma) = stream("seed", 33);
        let (b, _) = stream("seed", 33);
        let (c, mc) = stream("seed", 34);
        assert!(a == b, "same seed, different streams");
        assert!(a != c);
        assert_ne!(ma.digest, mc.digest);
        assert_eq!(tar_digest(&a[..]).unwrap(), ma.digest);
    }

    #[test]
    fn entries_carry_numeric_owners_and_seeded_times_and_come_parents_first() {
        let (bytes, _) = stream("seed", 35);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut dirs = vec![Vec::new()];
        let mut owners = std::collections::BTreeSet::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            owners.insert((h.uid().unwrap(), h.gid().unwrap()));
            assert_eq!(h.username().unwrap(), Some(""));
            assert_eq!(h.groupname().unwrap(), Some(""));
            if h.entry_type() != EntryType::Link {
                let mtime = h.mtime().unwrap();
                assert!((1_600_000_000..1_700_000_000).contains(&mtime), "{mtime}");
            }
            let path = e.path_bytes().into_owned();
            let parent = path.rsplitn(2, |&c| c == b'/').nth(1).unwrap_or(b"");
            assert!(
                dirs.iter().any(|d| d == parent),
                "{path:?} before its parent"
            );
            if h.entry_type() == EntryType::Directory {
                dirs.push(path);
            }
        }
        assert!(
            owners.contains(&(0, 0)) && owners.contains(&(1000, 1000)),
            "{owners:?}"
        );
    }

    #[test]
    fn marker_stream_extracts_like_write_marker_and_keeps_directory_modes() {
        let direct = tempfile::tempdir().unwrap();
        seed_tree(direct.path(), "seed", 36, 0).unwrap();
        let name = "seed/a/marker.bin";
        write_marker(direct.path(), name, 99, 300_000).unwrap();
        let want = tree_digest(direct.path(), Level::Tar).unwrap();
        for tar in tars() {
            let dir = tempfile::tempdir().unwrap();
            seed_tree(dir.path(), "seed", 36, 0).unwrap();
            tar.extract(dir.path(), |w| {
                write_marker_tar(w, name, 99, 300_000).unwrap()
            });
            let got = tree_digest(dir.path(), Level::Tar).unwrap();
            assert_eq!(got, want, "{} tar", tar.name);
            // A directory whose mode differs from the seeded one keeps it.
            let a = dir.path().join("seed/a");
            fs::set_permissions(&a, Permissions::from_mode(0o700)).unwrap();
            tar.extract(dir.path(), |w| {
                write_marker_tar(w, "seed/a/m2", 1, 10).unwrap()
            });
            assert_eq!(fs::metadata(&a).unwrap().mode() & 0o7777, 0o700);
            let m2 = fs::metadata(dir.path().join("seed/a/m2")).unwrap();
            assert_eq!((m2.len(), m2.mode() & 0o7777), (10, 0o644));
        }
        let mut one = Vec::new();
        write_marker_tar(&mut one, name, 99, 300_000).unwrap();
        let count = tar::Archive::new(&one[..]).entries().unwrap().count();
        assert_eq!(count, 1);
        assert!(write_marker_tar(Vec::new(), "../x", 1, 1).is_err());
        assert!(seed_tree_tar(Vec::new(), "a/b", 1, 1).is_err());
    }
}
