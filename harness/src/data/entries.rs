//! Canonical entry records and the one digest over them. Every producer (a directory walk, a
//! tar stream, the seeded-tree generator) turns what it sees into `Entry` values and hashes
//! them here, so equal trees give equal digests whichever way they were read.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::{self, ErrorKind, Read};

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Domain separation, and a version to bump whenever the canonical encoding changes.
const TREE_DIGEST_HEADER: &[u8] = b"csi-clone-conformance/tree-digest/v2\0";

/// Top-level directory that mkfs/fsck create and a clone may or may not carry.
const LOST_FOUND: &[u8] = b"lost+found";

/// What an entry is, with exactly the data of its kind that the digest covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File { len: u64, sha256: [u8; 32] },
    Symlink { target: Vec<u8> },
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl Kind {
    fn tag(&self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File { .. } => b'f',
            Kind::Symlink { .. } => b'l',
            Kind::CharDevice { .. } => b'c',
            Kind::BlockDevice { .. } => b'b',
            Kind::Fifo => b'p',
            Kind::Socket => b's',
        }
    }
}

/// One entry of a tree: its path relative to the root (components joined by `/`, no leading
/// `./`, no trailing `/`), permission bits and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub mode: u32,
    pub kind: Kind,
}

impl Entry {
    /// Keeps only the permission bits of `mode`. A symlink's mode is meaningless on Linux and
    /// producers disagree on it, so it is recorded as 0.
    pub fn new(path: Vec<u8>, mode: u32, kind: Kind) -> Self {
        let mode = match kind {
            Kind::Symlink { .. } => 0,
            _ => mode & 0o7777,
        };
        Entry { path, mode, kind }
    }

    fn encode(&self, h: &mut Sha256) {
        // Length-prefixed fields keep the encoding unambiguous (no path can pose as content).
        h.update([self.kind.tag()]);
        put_bytes(h, &self.path);
        h.update(self.mode.to_le_bytes());
        match &self.kind {
            Kind::File { len, sha256 } => {
                h.update(len.to_le_bytes());
                h.update(sha256);
            }
            Kind::Symlink { target } => put_bytes(h, target),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                h.update(major.to_le_bytes());
                h.update(minor.to_le_bytes());
            }
            Kind::Dir | Kind::Fifo | Kind::Socket => {}
        }
    }
}

fn put_bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

/// Canonical order: depth first, a directory before its contents, siblings in byte order of
/// their names. Comparing component lists (not whole paths) is what makes `a/z` sort before
/// `a-b`, as a walk that sorts each directory visits them.
pub(crate) fn canonical_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// True for a top-level `lost+found` and everything under it: out of every digest.
pub(crate) fn excluded(path: &[u8]) -> bool {
    path.split(|&c| c == b'/').next() == Some(LOST_FOUND)
}

/// Hashes entries handed over in canonical order, without holding them.
pub(crate) struct EntryDigest {
    h: Sha256,
}

impl EntryDigest {
    pub fn new() -> Self {
        let mut h = Sha256::new();
        h.update(TREE_DIGEST_HEADER);
        EntryDigest { h }
    }

    /// The caller guarantees canonical order and that `excluded` entries are left out.
    pub fn add(&mut self, entry: &Entry) {
        entry.encode(&mut self.h);
    }

    pub fn finish(self) -> Digest {
        Digest(self.h.finalize().into())
    }
}

/// Sorts entries into canonical order and hashes them. Errors (as a reason, for the caller to
/// wrap) if a path occurs twice or an entry's parent is not a directory entry: such a list
/// does not describe one tree, and extracting it would give something else.
pub(crate) fn digest_entries(mut entries: Vec<Entry>) -> Result<Digest, String> {
    entries.retain(|e| !e.path.is_empty() && !excluded(&e.path));
    entries.sort_by(|a, b| canonical_cmp(&a.path, &b.path));
    let dirs: HashSet<&[u8]> = entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| e.path.as_slice())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 && entries[i - 1].path == e.path {
            return Err(format!("{} appears twice", show(&e.path)));
        }
        if let Some(slash) = e.path.iter().rposition(|&c| c == b'/')
            && !dirs.contains(&e.path[..slash])
        {
            return Err(format!("{} has no parent directory entry", show(&e.path)));
        }
    }
    let mut d = EntryDigest::new();
    for e in &entries {
        d.add(e);
    }
    Ok(d.finish())
}

/// A path for messages: lossy UTF-8 is fine there.
pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Reads `r` to its end: the number of bytes and their SHA-256.
pub(crate) fn hash_content(r: &mut impl Read, buf: &mut [u8]) -> io::Result<(u64, [u8; 32])> {
    let mut h = Sha256::new();
    let mut len = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry::new(p.into(), 0o755, Kind::Dir)
    }

    fn file(p: &str, byte: u8) -> Entry {
        let (len, sha256) = hash_content(&mut &[byte][..], &mut [0; 8]).unwrap();
        Entry::new(p.into(), 0o644, Kind::File { len, sha256 })
    }

    #[test]
    fn canonical_order_is_depth_first_by_component() {
        let mut paths = vec!["a-b", "a/z", "a", "b", "a/z/y", "a\u{e9}", "a/b"];
        paths.sort_by(|a, b| canonical_cmp(a.as_bytes(), b.as_bytes()));
        assert_eq!(paths, ["a", "a/b", "a/z", "a/z/y", "a-b", "a\u{e9}", "b"]);
    }

    #[test]
    fn digest_is_order_independent_and_skips_top_level_lost_and_found() {
        let a = vec![
            dir("x"),
            file("x/f", 1),
            dir("lost+found"),
            file("lost+found/o", 2),
        ];
        let b = vec![file("x/f", 1), dir("x")];
        assert_eq!(digest_entries(a).unwrap(), digest_entries(b).unwrap());
        let nested = vec![dir("x"), dir("x/lost+found")];
        assert_ne!(
            digest_entries(nested).unwrap(),
            digest_entries(vec![dir("x")]).unwrap()
        );
    }

    #[test]
    fn symlink_mode_is_canonicalised_and_other_modes_masked() {
        let l = |mode| {
            Entry::new(
                "l".into(),
                mode,
                Kind::Symlink {
                    target: b"t".to_vec(),
                },
            )
        };
        assert_eq!(l(0o777), l(0o120777));
        assert_eq!(l(0o777).mode, 0);
        assert_eq!(Entry::new("f".into(), 0o104755, Kind::Dir).mode, 0o4755);
    }

    #[test]
    fn duplicates_and_orphans_are_rejected() {
        let err = digest_entries(vec![dir("x"), dir("x")]).unwrap_err();
        assert!(err.contains("x appears twice"), "{err}");
        let err = digest_entries(vec![file("x/f", 1)]).unwrap_err();
        assert!(err.contains("x/f has no parent"), "{err}");
        let err = digest_entries(vec![file("x", 1), file("x/f", 1)]).unwrap_err();
        assert!(err.contains("x/f has no parent"), "{err}");
    }

    #[test]
    fn every_field_is_in_the_digest() {
        let one = |e: Entry| digest_entries(vec![e]).unwrap();
        let base = one(file("f", 1));
        assert_ne!(base, one(file("f", 2)));
        assert_ne!(base, one(file("g", 1)));
        let mut m = file("f", 1);
        m.mode = 0o640;
        assert_ne!(base, one(m));
        let dev = |major, minor| Entry::new("d".into(), 0, Kind::CharDevice { major, minor });
        assert_ne!(one(dev(1, 3)), one(dev(3, 1)));
        let bdev = Entry::new("d".into(), 0, Kind::BlockDevice { major: 1, minor: 3 });
        assert_ne!(one(dev(1, 3)), one(bdev));
        let fifo = Entry::new("p".into(), 0o644, Kind::Fifo);
        let sock = Entry::new("p".into(), 0o644, Kind::Socket);
        assert_ne!(one(fifo), one(sock));
    }
}
