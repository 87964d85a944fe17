//! Canonical entry records and the one digest over them. Every producer (a directory walk, a
//! tar stream, the seeded-tree generator) turns what it sees into `Entry` values and hashes
//! them here, so equal trees give equal digests whichever way they were read, as long as both
//! sides record at the same `Level`.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read};

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Domain separation, and a version to bump whenever the canonical encoding changes. The
/// level's tag follows it, so digests of different levels never match by accident.
const TREE_DIGEST_HEADER: &[u8] = b"csi-clone-conformance/tree-digest/v3\0";

/// Top-level directory that mkfs/fsck create and a clone may or may not carry.
const LOST_FOUND: &[u8] = b"lost+found";

/// Only this xattr namespace is user data; the others belong to the system (ACLs), the
/// security modules (SELinux labels a clone gets anew) or the kernel.
const USER_XATTR_PREFIX: &[u8] = b"user.";

/// How much of each entry a digest records. A comparison is only meaningful between digests
/// of one level, and the level is hashed in: digests of different levels always differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Read from a mounted filesystem: owners, modes, mtimes to the nanosecond (directories
    /// and symlinks too), `user.*` xattrs, hard links, content and symlink targets.
    Direct,
    /// What survives the pod's tar (busybox `tar -x`, then `tar -c`; GNU tar keeps at least
    /// as much): owners, modes, mtimes in whole seconds, hard links, content and symlink
    /// targets; no xattrs (busybox tar has none), no directory mtimes (busybox sets them
    /// when it creates the directory, and every later entry in it, links made at the end
    /// included, moves them again), no symlink owners or mtimes (busybox skips chown and
    /// utimes for symlinks).
    Tar,
}

impl Level {
    fn tag(self) -> u8 {
        match self {
            Level::Direct => b'D',
            Level::Tar => b'T',
        }
    }
}

/// What an entry is, with exactly the data of its kind that the digest covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File {
        len: u64,
        sha256: [u8; 32],
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
    /// A second or later name of an inode. Producers name any earlier name of the inode;
    /// `digest_entries` rewrites it to the first name in canonical order, which is what a
    /// sorted walk sees first.
    HardLink {
        first: Vec<u8>,
    },
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
            Kind::HardLink { .. } => b'h',
        }
    }
}

/// A modification time as the filesystem keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// An inode's metadata, as far as any level records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits: `Entry::new` keeps `mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// Extended attributes, name and value; `Entry::new` keeps the `user.` ones, sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One entry of a tree: its path relative to the root (components joined by `/`, no leading
/// `./`, no trailing `/`), kind and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub meta: Meta,
}

impl Entry {
    /// Keeps only the permission bits of the mode and the `user.` xattrs, sorted. A symlink's
    /// mode is meaningless on Linux and producers disagree on it, so it is recorded as 0.
    pub fn new(path: Vec<u8>, kind: Kind, mut meta: Meta) -> Self {
        meta.mode = match kind {
            Kind::Symlink { .. } => 0,
            _ => meta.mode & 0o7777,
        };
        meta.xattrs
            .retain(|(name, _)| name.starts_with(USER_XATTR_PREFIX));
        meta.xattrs.sort();
        Entry { path, kind, meta }
    }

    /// A further name of the inode first named `first`: its metadata is the first name's.
    pub fn link(path: Vec<u8>, first: Vec<u8>) -> Self {
        Entry {
            path,
            kind: Kind::HardLink { first },
            meta: Meta::default(),
        }
    }

    fn encode(&self, h: &mut Sha256, level: Level) {
        // Length-prefixed fields keep the encoding unambiguous (no path can pose as content);
        // which fields follow is fixed by the level and the kind, so none needs a marker.
        h.update([self.kind.tag()]);
        put_bytes(h, &self.path);
        let m = &self.meta;
        match &self.kind {
            Kind::HardLink { first } => return put_bytes(h, first),
            Kind::Symlink { .. } if level == Level::Tar => h.update(m.mode.to_le_bytes()),
            _ => {
                h.update(m.mode.to_le_bytes());
                h.update(m.uid.to_le_bytes());
                h.update(m.gid.to_le_bytes());
            }
        }
        match (level, &self.kind) {
            (Level::Direct, _) => {
                h.update(m.mtime.secs.to_le_bytes());
                h.update(m.mtime.nanos.to_le_bytes());
                h.update((m.xattrs.len() as u64).to_le_bytes());
                for (name, value) in &m.xattrs {
                    put_bytes(h, name);
                    put_bytes(h, value);
                }
            }
            (Level::Tar, Kind::Dir | Kind::Symlink { .. }) => {}
            (Level::Tar, _) => h.update(m.mtime.secs.to_le_bytes()),
        }
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
            Kind::Dir | Kind::Fifo | Kind::Socket | Kind::HardLink { .. } => {}
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
    level: Level,
}

impl EntryDigest {
    pub fn new(level: Level) -> Self {
        let mut h = Sha256::new();
        h.update(TREE_DIGEST_HEADER);
        h.update([level.tag()]);
        EntryDigest { h, level }
    }

    /// The caller guarantees canonical order, that `excluded` entries are left out and that
    /// a hard link names the first (in canonical order) name of its inode.
    pub fn add(&mut self, entry: &Entry) {
        entry.encode(&mut self.h, self.level);
    }

    pub fn finish(self) -> Digest {
        Digest(self.h.finalize().into())
    }
}

/// Sorts entries into canonical order, gives each inode's metadata to its first name there
/// (the others become links to it) and hashes them. Errors (as a reason, for the caller to
/// wrap) if a path occurs twice, an entry's parent is not a directory entry or a hard link
/// names no earlier non-directory: such a list does not describe one tree.
pub(crate) fn digest_entries(entries: Vec<Entry>, level: Level) -> Result<Digest, String> {
    let entries = canonical_links(entries)?;
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
    let mut d = EntryDigest::new(level);
    for e in &entries {
        d.add(e);
    }
    Ok(d.finish())
}

/// Drops the root and excluded entries, sorts the rest canonically and rewrites hard links:
/// the first name of each inode (which may have been a link in the producer's order, or the
/// only name left once `lost+found` is gone) carries the inode, later names link to it.
fn canonical_links(entries: Vec<Entry>) -> Result<Vec<Entry>, String> {
    let index: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_slice(), i))
        .collect();
    // The entry that carries each entry's inode: itself, or what its links lead to.
    let mut inode = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let mut at = i;
        while let Kind::HardLink { first } = &entries[at].kind {
            let target = index.get(first.as_slice()).copied();
            // Only an earlier entry: a link never points forward, so this cannot loop.
            match target.filter(|&t| t < at && entries[t].kind != Kind::Dir) {
                Some(t) => at = t,
                None => {
                    return Err(format!(
                        "{} is a hard link to {}, which is no earlier file",
                        show(&e.path),
                        show(first)
                    ));
                }
            }
        }
        inode.push(at);
    }
    let mut order: Vec<usize> = (0..entries.len())
        .filter(|&i| !entries[i].path.is_empty() && !excluded(&entries[i].path))
        .collect();
    order.sort_by(|&a, &b| canonical_cmp(&entries[a].path, &entries[b].path));
    let mut first_name: HashMap<usize, &[u8]> = HashMap::new();
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let path = entries[i].path.clone();
        let carrier = &entries[inode[i]];
        out.push(match first_name.get(&inode[i]) {
            Some(first) => Entry::link(path, first.to_vec()),
            None => {
                first_name.insert(inode[i], &entries[i].path);
                Entry {
                    path,
                    kind: carrier.kind.clone(),
                    meta: carrier.meta.clone(),
                }
            }
        });
    }
    Ok(out)
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

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 1000,
            gid: 100,
            mtime: Mtime {
                secs: 1_600_000_000,
                nanos: 5,
            },
            xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
        }
    }

    fn dir(p: &str) -> Entry {
        Entry::new(p.into(), Kind::Dir, meta(0o755))
    }

    fn file(p: &str, byte: u8) -> Entry {
        let (len, sha256) = hash_content(&mut &[byte][..], &mut [0; 8]).unwrap();
        Entry::new(p.into(), Kind::File { len, sha256 }, meta(0o644))
    }

    fn link(p: &str, first: &str) -> Entry {
        Entry::link(p.into(), first.into())
    }

    fn both(entries: Vec<Entry>) -> [Digest; 2] {
        [Level::Direct, Level::Tar].map(|l| digest_entries(entries.clone(), l).unwrap())
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
        assert_eq!(both(a), both(b));
        let nested = vec![dir("x"), dir("x/lost+found")];
        assert_ne!(both(nested), both(vec![dir("x")]));
    }

    #[test]
    fn levels_never_agree() {
        let [direct, tar] = both(vec![dir("x")]);
        assert_ne!(direct, tar);
        let [empty_direct, empty_tar] = both(Vec::new());
        assert_ne!(empty_direct, empty_tar);
    }

    #[test]
    fn modes_are_masked_and_only_user_xattrs_kept_sorted() {
        let mut m = meta(0o120777);
        m.xattrs = vec![
            (b"user.z".to_vec(), b"1".to_vec()),
            (b"security.selinux".to_vec(), b"ctx".to_vec()),
            (b"user.a".to_vec(), b"2".to_vec()),
            (b"system.posix_acl_access".to_vec(), b"acl".to_vec()),
        ];
        let target = b"t".to_vec();
        let l = Entry::new("l".into(), Kind::Symlink { target }, m.clone());
        assert_eq!(l.meta.mode, 0);
        let names: Vec<&[u8]> = l.meta.xattrs.iter().map(|x| x.0.as_slice()).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.z"]);
        m.mode = 0o104755;
        assert_eq!(Entry::new("f".into(), Kind::Dir, m).meta.mode, 0o4755);
    }

    #[test]
    fn duplicates_orphans_and_dangling_links_are_rejected() {
        let err = |e| digest_entries(e, Level::Direct).unwrap_err();
        assert!(err(vec![dir("x"), dir("x")]).contains("x appears twice"));
        assert!(err(vec![file("x/f", 1)]).contains("x/f has no parent"));
        assert!(err(vec![file("x", 1), file("x/f", 1)]).contains("x/f has no parent"));
        let e = err(vec![link("h", "missing")]);
        assert!(e.contains("h is a hard link to missing"), "{e}");
        assert!(err(vec![dir("d"), link("h", "d")]).contains("no earlier file"));
        assert!(err(vec![link("h", "f"), file("f", 1)]).contains("no earlier file"));
    }

    #[test]
    fn every_recorded_field_is_in_the_digest() {
        let one = |e: Entry| both(vec![e]);
        let base = one(file("f", 1));
        let changed = |what: &str, e: Entry| {
            let now = one(e);
            assert_ne!(base[0], now[0], "{what}: direct");
            assert_ne!(base[1], now[1], "{what}: tar");
        };
        changed("content", file("f", 2));
        changed("name", file("g", 1));
        let with = |f: &dyn Fn(&mut Meta)| {
            let mut e = file("f", 1);
            f(&mut e.meta);
            e
        };
        changed("mode", with(&|m| m.mode = 0o640));
        changed("setuid", with(&|m| m.mode |= 0o4000));
        changed("uid", with(&|m| m.uid = 0));
        changed("gid", with(&|m| m.gid = 0));
        changed("mtime", with(&|m| m.mtime.secs += 1));
        // The tar level has whole seconds and no xattrs; the direct level has both.
        let direct_only = |what: &str, e: Entry| {
            let now = one(e);
            assert_ne!(base[0], now[0], "{what}: direct");
            assert_eq!(base[1], now[1], "{what}: tar");
        };
        direct_only("nanoseconds", with(&|m| m.mtime.nanos = 6));
        direct_only("xattr value", with(&|m| m.xattrs[0].1 = b"2".to_vec()));
        direct_only("xattr name", with(&|m| m.xattrs[0].0 = b"user.b".to_vec()));
        direct_only(
            "xattr added",
            with(&|m| m.xattrs.push((b"user.c".into(), vec![]))),
        );
        direct_only("xattr removed", with(&|m| m.xattrs.clear()));
        let dev = |major, minor| Entry::new("d".into(), Kind::CharDevice { major, minor }, meta(0));
        assert_ne!(one(dev(1, 3)), one(dev(3, 1)));
        let bdev = Entry::new(
            "d".into(),
            Kind::BlockDevice { major: 1, minor: 3 },
            meta(0),
        );
        assert_ne!(one(dev(1, 3)), one(bdev));
        let fifo = Entry::new("p".into(), Kind::Fifo, meta(0o644));
        let sock = Entry::new("p".into(), Kind::Socket, meta(0o644));
        assert_ne!(one(fifo), one(sock));
    }

    #[test]
    fn tar_level_leaves_out_directory_times_and_symlink_owners_and_times() {
        let mut d = dir("d");
        let before = both(vec![d.clone()]);
        d.meta.mtime.secs += 10;
        let after = both(vec![d]);
        assert_ne!(before[0], after[0]);
        assert_eq!(before[1], after[1]);
        let target = b"t".to_vec();
        let mut l = Entry::new("l".into(), Kind::Symlink { target }, meta(0o777));
        let before = both(vec![l.clone()]);
        (l.meta.uid, l.meta.mtime.secs) = (0, 1);
        let after = both(vec![l]);
        assert_ne!(before[0], after[0]);
        assert_eq!(before[1], after[1]);
    }

    #[test]
    fn hard_links_belong_to_the_first_name_in_canonical_order() {
        let tree = |entries: Vec<Entry>| {
            let mut all = vec![dir("a"), dir("z")];
            all.extend(entries);
            both(all)
        };
        // A tar names the file where it met it first; the walk meets `a/g` first.
        let tar_order = tree(vec![file("z/f", 1), link("a/g", "z/f")]);
        let walk_order = tree(vec![file("a/g", 1), link("z/f", "a/g")]);
        assert_eq!(tar_order, walk_order);
        // Two files with the same content and metadata are not one file with two names.
        let copies = tree(vec![file("a/g", 1), file("z/f", 1)]);
        assert_ne!(copies[0], walk_order[0]);
        assert_ne!(copies[1], walk_order[1]);
        // A link of a link is a link of the inode.
        let chained = tree(vec![file("z/f", 1), link("a/g", "z/f"), link("z/h", "a/g")]);
        let direct = tree(vec![file("a/g", 1), link("z/f", "a/g"), link("z/h", "a/g")]);
        assert_eq!(chained, direct);
    }

    #[test]
    fn a_link_out_of_lost_and_found_is_the_file() {
        let via_lost = vec![
            dir("lost+found"),
            file("lost+found/#7", 3),
            link("x", "lost+found/#7"),
        ];
        assert_eq!(both(via_lost), both(vec![file("x", 3)]));
    }
}
