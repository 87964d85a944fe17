//! The seeded dataset, generated once and written through a `Sink`: straight into a
//! directory (`seed_fs`), or as a tar stream (`tar_write`). Both sinks see the same calls in
//! the same order with the same bytes and metadata, so a tree seeded either way is the same
//! tree, as far as each way can carry it.

use std::path::{Component, Path};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::DataError;
use super::content::Content;
use super::entries::{Meta, Mtime};

const MIB: u64 = 1 << 20;
/// Sparse file: data at both ends of a large hole, so a clone that loses or misplaces the
/// second extent (or fills the hole with garbage) changes the digest.
pub(super) const SPARSE_LEN: u64 = 8 * MIB + 4096;
pub(super) const SPARSE_SECOND_EXTENT: u64 = 7 * MIB + 123;
const SPARSE_EXTENT_LEN: u64 = 4096;
/// Seeded directories get this mode unless they test another.
pub(super) const DIR_MODE: u32 = 0o755;
/// 2021-03-04T05:06:07Z: seeded mtimes count up from here, an hour and some nanoseconds per
/// entry, so each entry has its own time with a non-zero nanosecond part.
const BASE_MTIME: i64 = 1_614_834_367;
/// A marker's mtime (2022-01-01T00:00:00.5Z), the same whichever way it is written.
const MARKER_MTIME: Mtime = Mtime {
    secs: 1_640_995_200,
    nanos: 500_000_000,
};
/// The content of the entries added for metadata coverage comes from a second RNG stream
/// (the seed mixed with this), so the files seeded before them keep their bytes.
const METADATA_STREAM: u64 = 0x6d65_7461_6461_7461;
/// Nesting below `deep/`.
pub(super) const DEPTH: usize = 24;
/// Linux's NAME_MAX.
pub(super) const NAME_MAX: usize = 255;

/// Owners the dataset uses; the harness runs as root and may give files to anyone.
const ROOT: (u32, u32) = (0, 0);
const ALICE: (u32, u32) = (1000, 1000);
const STAFF: (u32, u32) = (1000, 2000);
const NOBODY: (u32, u32) = (65534, 65534);

/// Where a seeded dataset goes. Paths are relative to the dataset's root, `/`-separated.
pub(super) trait Sink {
    /// A directory; its parent was made before. Entries made in it later move its mtime, so
    /// a sink that writes must set directory mtimes once everything is written.
    fn dir(&mut self, rel: &str, meta: &Meta) -> Result<(), DataError>;
    /// A regular file; the sink must consume `content` to its end.
    fn file(&mut self, rel: &str, meta: &Meta, content: Content<'_>) -> Result<(), DataError>;
    /// A symlink; `meta.mode` is meaningless for it.
    fn symlink(&mut self, rel: &str, target: &str, meta: &Meta) -> Result<(), DataError>;
    /// A further name `rel` of the earlier file `existing` (a hard link).
    fn hard_link(&mut self, rel: &str, existing: &str) -> Result<(), DataError>;
}

/// Regular files and their total length, as the manifests report them.
pub(super) struct Counts {
    pub files: usize,
    pub bytes: u64,
}

/// Emits the seeded dataset under `prefix/` into `sink`. The order of the calls fixes the RNG
/// streams and the mtimes: changing it changes every digest (see the stability test).
pub(super) fn seeded_dataset(
    sink: &mut impl Sink,
    prefix: &str,
    seed: u64,
    large_bytes: u64,
) -> Result<Counts, DataError> {
    check_relative(prefix, true)?;
    let mut g = Generator {
        sink,
        prefix,
        rng: StdRng::seed_from_u64(seed),
        metadata_rng: StdRng::seed_from_u64(seed ^ METADATA_STREAM),
        stamps: 0,
        counts: Counts { files: 0, bytes: 0 },
    };
    g.dir("", DIR_MODE, ROOT, &[])?;
    for d in ["a", "a/b", "a/b/c", "docs", "empty"] {
        g.dir(d, DIR_MODE, ROOT, &[])?;
    }
    g.file("empty.bin", 0, 0o644)?;
    g.file("one.bin", 1, 0o644)?;
    // Either side of a page boundary, where copy loops tend to have off-by-one bugs.
    g.file("a/page-minus-one.bin", 4095, 0o644)?;
    g.file("a/b/page-plus-one.bin", 4097, 0o644)?;
    for (i, d) in ["a", "a/b", "a/b/c", "docs"].iter().enumerate() {
        let len = g.rng.random_range(1024..=16 * 1024);
        g.file(&format!("{d}/small-{i}.bin"), len, 0o644)?;
    }
    g.file("secret.txt", 512, 0o600)?;
    g.file("docs/group.txt", 700, 0o640)?;
    g.file("a/run.sh", 300, 0o755)?;
    g.file("docs/name with spaces ünïcödé ✓.txt", 2000, 0o644)?;
    g.sparse("sparse.img")?;
    g.symlink("link-to-page-plus-one", "a/b/page-plus-one.bin", ROOT)?;
    g.symlink("dangling", "no/such/target", ROOT)?;
    metadata_cases(&mut g)?;
    // Last, so `large_bytes` does not shift the RNG stream of anything else.
    g.file("large.bin", large_bytes, 0o644)?;
    Ok(g.counts)
}

/// What a file-by-file copy loses or mangles: special mode bits, owners other than root,
/// xattrs, hard links, names at NAME_MAX and beyond ASCII, deep nesting. (Mtimes are on
/// every entry.)
fn metadata_cases<S: Sink>(g: &mut Generator<'_, S>) -> Result<(), DataError> {
    g.dir("modes", DIR_MODE, ROOT, &[])?;
    g.extra_file("modes/setuid", 300, 0o4755, ROOT, &[])?;
    g.extra_file("modes/setgid", 300, 0o2755, (0, 50), &[])?;
    g.dir("modes/sticky", 0o1777, ROOT, &[])?;
    g.dir("modes/setgid-dir", 0o2775, STAFF, &[])?;
    g.extra_file("modes/setgid-dir/shared.txt", 900, 0o664, STAFF, &[])?;

    g.dir("home", DIR_MODE, ROOT, &[])?;
    g.dir("home/alice", 0o750, ALICE, &[])?;
    g.extra_file("home/alice/notes.txt", 1500, 0o640, ALICE, &[])?;
    g.extra_file("home/alice/.empty", 0, 0o600, ALICE, &[])?;
    g.symlink("home/alice/latest", "notes.txt", ALICE)?;
    g.dir("home/nobody", 0o700, NOBODY, &[])?;

    let mut digest = [0u8; 32];
    g.metadata_rng.fill_bytes(&mut digest);
    g.dir(
        "xattrs",
        DIR_MODE,
        ROOT,
        &[("user.note", b"a directory's own")],
    )?;
    let tags: [(&str, &[u8]); 3] = [
        ("user.origin", b"csi-clone-conformance"),
        ("user.sha256", &digest),
        ("user.empty", b""),
    ];
    g.extra_file("xattrs/tagged.bin", 2048, 0o644, ROOT, &tags)?;
    let unicode: [(&str, &[u8]); 1] = [("user.ünïcødé", "名前".as_bytes())];
    g.extra_file("xattrs/unicode.txt", 10, 0o644, ROOT, &unicode)?;

    // One inode, three names in three directories. It is created under the name that comes
    // last in canonical order, so a tar names the inode differently from a sorted walk.
    g.dir("links", DIR_MODE, ROOT, &[])?;
    let linked: [(&str, &[u8]); 1] = [("user.linked", b"yes")];
    g.extra_file("links/original.bin", 5000, 0o640, ALICE, &linked)?;
    g.hard_link("a/b/second-name.bin", "links/original.bin")?;
    g.hard_link("docs/third-name.bin", "links/original.bin")?;

    g.dir("names", DIR_MODE, ROOT, &[])?;
    let ascii = format!("long-{}.bin", "x".repeat(NAME_MAX - 9));
    g.extra_file(&format!("names/{ascii}"), 255, 0o644, ROOT, &[])?;
    let wide = "名".repeat(NAME_MAX / 3);
    g.extra_file(&format!("names/{wide}"), 3, 0o644, ROOT, &[])?;
    g.dir("Ünïcødé-名前", DIR_MODE, ALICE, &[])?;
    g.extra_file("Ünïcødé-名前/ファイル-ñ.txt", 64, 0o644, ALICE, &[])?;

    let mut deep = String::from("deep");
    g.dir(&deep, DIR_MODE, ROOT, &[])?;
    for level in 1..=DEPTH {
        deep.push_str(&format!("/d{level:02}"));
        g.dir(&deep, DIR_MODE, ROOT, &[])?;
    }
    g.extra_file(&format!("{deep}/bottom.txt"), 100, 0o644, ROOT, &[])
}

struct Generator<'s, S> {
    sink: &'s mut S,
    prefix: &'s str,
    /// The stream of the original entries, kept as it was so old seeds replay their bytes.
    rng: StdRng,
    metadata_rng: StdRng,
    /// Entries stamped so far: the next mtime.
    stamps: u32,
    counts: Counts,
}

impl<S: Sink> Generator<'_, S> {
    fn rel(&self, name: &str) -> String {
        match name {
            "" => self.prefix.to_string(),
            name => format!("{}/{name}", self.prefix),
        }
    }

    fn meta(&mut self, mode: u32, (uid, gid): (u32, u32), xattrs: &[(&str, &[u8])]) -> Meta {
        self.stamps += 1;
        let n = self.stamps;
        Meta {
            mode,
            uid,
            gid,
            mtime: Mtime {
                secs: BASE_MTIME + 3600 * i64::from(n),
                nanos: (u64::from(n) * 123_456_791 % 999_999_999) as u32 + 1,
            },
            xattrs: xattrs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        }
    }

    fn dir(
        &mut self,
        name: &str,
        mode: u32,
        owner: (u32, u32),
        xattrs: &[(&str, &[u8])],
    ) -> Result<(), DataError> {
        let meta = self.meta(mode, owner, xattrs);
        self.sink.dir(&self.rel(name), &meta)
    }

    /// A root-owned file from the original stream.
    fn file(&mut self, name: &str, len: u64, mode: u32) -> Result<(), DataError> {
        let (rel, meta) = (self.rel(name), self.meta(mode, ROOT, &[]));
        self.sink
            .file(&rel, &meta, Content::dense(&mut self.rng, len))?;
        self.count(len);
        Ok(())
    }

    /// A file from the metadata stream.
    fn extra_file(
        &mut self,
        name: &str,
        len: u64,
        mode: u32,
        owner: (u32, u32),
        xattrs: &[(&str, &[u8])],
    ) -> Result<(), DataError> {
        let (rel, meta) = (self.rel(name), self.meta(mode, owner, xattrs));
        let content = Content::dense(&mut self.metadata_rng, len);
        self.sink.file(&rel, &meta, content)?;
        self.count(len);
        Ok(())
    }

    fn sparse(&mut self, name: &str) -> Result<(), DataError> {
        let (rel, meta) = (self.rel(name), self.meta(0o644, ROOT, &[]));
        let extents = vec![
            (0, SPARSE_EXTENT_LEN),
            (SPARSE_SECOND_EXTENT, SPARSE_EXTENT_LEN),
        ];
        let content = Content::new(&mut self.rng, SPARSE_LEN, extents);
        self.sink.file(&rel, &meta, content)?;
        self.count(SPARSE_LEN);
        Ok(())
    }

    fn symlink(&mut self, name: &str, target: &str, owner: (u32, u32)) -> Result<(), DataError> {
        let meta = self.meta(0o777, owner, &[]);
        self.sink.symlink(&self.rel(name), target, &meta)
    }

    fn hard_link(&mut self, name: &str, existing: &str) -> Result<(), DataError> {
        self.sink.hard_link(&self.rel(name), &self.rel(existing))
    }

    fn count(&mut self, len: u64) {
        self.counts.files += 1;
        self.counts.bytes += len;
    }
}

/// The marker file, for any sink: root's, mode 0644, a fixed mtime.
pub(super) fn marker(
    sink: &mut impl Sink,
    name: &str,
    seed: u64,
    bytes: u64,
) -> Result<(), DataError> {
    check_relative(name, false)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let meta = Meta {
        mode: 0o644,
        mtime: MARKER_MTIME,
        ..Meta::default()
    };
    sink.file(name, &meta, Content::dense(&mut rng, bytes))
}

/// Rejects absolute paths, `..`, `.` and empty names so nothing is written outside `root`.
pub(super) fn check_relative(name: &str, single: bool) -> Result<(), DataError> {
    let bad = |reason| {
        Err(DataError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let comps: Vec<_> = Path::new(name).components().collect();
    if comps.is_empty() {
        return bad("empty");
    }
    if !comps.iter().all(|c| matches!(c, Component::Normal(_))) {
        return bad("must be a relative path without `.` or `..`");
    }
    if single && comps.len() != 1 {
        return bad("must be a single path component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use super::*;

    /// Every call, with the bytes of each file.
    #[derive(Default)]
    struct Record(Vec<(String, Option<Meta>, Vec<u8>)>);

    impl Sink for Record {
        fn dir(&mut self, rel: &str, meta: &Meta) -> Result<(), DataError> {
            self.0.push((rel.into(), Some(meta.clone()), Vec::new()));
            Ok(())
        }
        fn file(&mut self, rel: &str, meta: &Meta, mut c: Content<'_>) -> Result<(), DataError> {
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            self.0.push((rel.into(), Some(meta.clone()), out));
            Ok(())
        }
        fn symlink(&mut self, rel: &str, target: &str, meta: &Meta) -> Result<(), DataError> {
            self.0.push((rel.into(), Some(meta.clone()), target.into()));
            Ok(())
        }
        fn hard_link(&mut self, rel: &str, existing: &str) -> Result<(), DataError> {
            self.0.push((rel.into(), None, existing.into()));
            Ok(())
        }
    }

    fn recorded(seed: u64, large: u64) -> Record {
        let mut r = Record::default();
        seeded_dataset(&mut r, "seed", seed, large).unwrap();
        r
    }

    #[test]
    fn the_metadata_cases_are_all_there() {
        let r = recorded(1, 4096);
        let by_name: BTreeMap<&str, &(String, Option<Meta>, Vec<u8>)> =
            r.0.iter().map(|e| (e.0.as_str(), e)).collect();
        let meta = |p: &str| by_name[format!("seed/{p}").as_str()].1.clone().unwrap();
        assert_eq!(meta("modes/setuid").mode, 0o4755);
        assert_eq!(meta("modes/setgid").mode, 0o2755);
        assert_eq!(meta("modes/sticky").mode, 0o1777);
        assert_eq!(meta("modes/setgid-dir").mode, 0o2775);
        assert_eq!((meta("home/alice").uid, meta("home/alice").gid), ALICE);
        assert_eq!(meta("home/nobody").uid, NOBODY.0);
        assert_eq!(meta("home/alice/latest").uid, ALICE.0);
        assert_eq!(meta("xattrs").xattrs.len(), 1);
        assert_eq!(meta("xattrs/tagged.bin").xattrs.len(), 3);
        let links: Vec<_> = r.0.iter().filter(|e| e.1.is_none()).collect();
        assert_eq!(links.len(), 2);
        assert!(links.iter().all(|l| l.2 == b"seed/links/original.bin"));
        let names: Vec<&str> = by_name.keys().copied().collect();
        let longest = names.iter().map(|p| p.rsplit('/').next().unwrap().len());
        assert_eq!(longest.max(), Some(NAME_MAX));
        let wide = format!("seed/names/{}", "名".repeat(85));
        assert!(names.contains(&wide.as_str()));
        let depth = names.iter().map(|p| p.split('/').count()).max().unwrap();
        assert!(depth >= DEPTH + 3, "depth {depth}");
        // Every mtime is distinct and has nanoseconds.
        let mut times: Vec<Mtime> =
            r.0.iter()
                .filter_map(|e| e.1.as_ref())
                .map(|m| m.mtime)
                .collect();
        assert!(times.iter().all(|t| t.nanos > 0 && t.nanos < 1_000_000_000));
        let n = times.len();
        times.sort_by_key(|t| (t.secs, t.nanos));
        times.dedup();
        assert_eq!(times.len(), n);
    }

    #[test]
    fn the_metadata_stream_leaves_the_original_files_alone() {
        let a = recorded(5, 4096);
        let b = recorded(5, 4096);
        let c = recorded(6, 4096);
        assert!(a.0 == b.0, "same seed, different dataset");
        let bytes = |r: &Record, p: &str| r.0.iter().find(|e| e.0 == p).unwrap().2.clone();
        assert_ne!(
            bytes(&a, "seed/links/original.bin"),
            bytes(&c, "seed/links/original.bin")
        );
        // large.bin's length shifts nothing: it is drawn last.
        let longer = recorded(5, 8192);
        for (x, y) in a.0.iter().zip(&longer.0) {
            if x.0 != "seed/large.bin" {
                assert!(x == y, "{} changed with large_bytes", x.0);
            }
        }
    }

    #[test]
    fn marker_names_are_checked() {
        for bad in ["", "/etc/x", "../x", "seed/../../x"] {
            let result = marker(&mut Record::default(), bad, 1, 1);
            assert!(
                matches!(result, Err(DataError::InvalidName { .. })),
                "{bad}"
            );
        }
        assert!(check_relative("a/b", true).is_err());
        assert!(check_relative("a", true).is_ok());
    }
}
