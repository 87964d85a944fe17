//! The digest of a tree read from a tar stream (`tar -c -C <root> .` run where the volume is
//! mounted), equal to `tree_digest(root, Level::Tar)` of the same tree.

use std::collections::HashMap;
use std::io::{self, Read};

use tar::{Archive, EntryType};

use super::entries::{Entry, Kind, Level, Meta, Mtime, digest_entries, hash_content, show};
use super::{CHUNK, DataError, Digest};

const WHAT: &str = "tar stream";
/// One tar block; the end-of-archive marker is two of them, all zeros.
const BLOCK: usize = 512;

/// The `tree_digest(root, Level::Tar)` of the tree a tar stream describes, as produced by
/// `tar -c -C root .` with GNU or busybox tar: names with or without a leading `./`, the root
/// entry skipped, directories with or without a trailing `/`, GNU long names and PAX headers
/// (via the `tar` crate). Owners are the numeric ids of the headers, mtimes their whole
/// seconds (a PAX header's fraction is left out, as busybox writes none); hard-link entries
/// are links to whichever name of the inode the tar met first, and are re-attributed to the
/// first name in canonical order, as a walk sees them. What the tar level leaves out (xattrs,
/// directory mtimes, symlink owners and mtimes) is in the stream or not, and ignored either
/// way. Sockets are not in tar streams, so a tree holding one digests differently from its
/// walk.
///
/// The stream must end with the end-of-archive marker (a stream cut short at an entry
/// boundary is an error, not a smaller tree); anything after the marker, such as GNU tar's
/// record padding, is read and dropped so the writer can exit cleanly.
pub fn tar_digest<R: Read>(input: R) -> Result<Digest, DataError> {
    let mut archive = Archive::new(input);
    let entries = read_entries(&mut archive)?;
    let mut rest = archive.into_inner();
    check_end_marker(&mut rest)?;
    io::copy(&mut rest, &mut io::sink()).map_err(|e| DataError::stream("read", WHAT, e))?;
    digest_entries(entries, Level::Tar).map_err(|reason| bad(WHAT.into(), reason))
}

fn bad(what: String, reason: impl Into<String>) -> DataError {
    DataError::BadArchive {
        what,
        reason: reason.into(),
    }
}

fn read_entries<R: Read>(archive: &mut Archive<R>) -> Result<Vec<Entry>, DataError> {
    let read_error = |e| DataError::stream("read", WHAT, e);
    // Every path so far, and whether it is a directory: a hard link must name an earlier
    // non-directory. Kept even for excluded entries (a link may point into lost+found).
    let mut seen: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut entries = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    for item in archive.entries().map_err(read_error)? {
        let mut item = item.map_err(read_error)?;
        let path = normalise(&item.path_bytes())?;
        if path.is_empty() {
            continue; // the root itself
        }
        if let Some(e) = record(&mut item, path, &seen, &mut buf)? {
            seen.insert(e.path.clone(), e.kind == Kind::Dir);
            entries.push(e);
        }
    }
    Ok(entries)
}

/// Joins a tar name's components with `/`, dropping empty and `.` ones (so `./a/`, `a` and
/// `a//` are all `a`). `..` is refused: extraction would write outside the root.
fn normalise(raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(bad(
                    format!("{WHAT} entry {}", show(raw)),
                    "`..` in the name",
                ));
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

/// The canonical record of one tar entry; None for entries that are metadata only.
fn record<R: Read>(
    item: &mut tar::Entry<'_, R>,
    path: Vec<u8>,
    seen: &HashMap<Vec<u8>, bool>,
    buf: &mut [u8],
) -> Result<Option<Entry>, DataError> {
    let what = || format!("{WHAT} entry {}", show(&path));
    let header = item.header();
    let kind_byte = header.entry_type();
    let kind = match kind_byte {
        // Old archives mark a directory by a trailing `/` on a regular entry.
        EntryType::Regular if item.path_bytes().ends_with(b"/") && item.size() == 0 => Kind::Dir,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            file_kind(item, &what(), buf)?
        }
        EntryType::Directory => Kind::Dir,
        EntryType::Link => {
            let first = link_target(item, seen, &what())?;
            return Ok(Some(Entry::link(path, first)));
        }
        EntryType::Symlink => {
            let target = item
                .link_name_bytes()
                .ok_or_else(|| bad(what(), "no link target"))?;
            Kind::Symlink {
                target: target.into_owned(),
            }
        }
        EntryType::Char | EntryType::Block => {
            let (major, minor) = device(header).ok_or_else(|| bad(what(), "bad device numbers"))?;
            if kind_byte == EntryType::Char {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        EntryType::Fifo => Kind::Fifo,
        EntryType::XGlobalHeader => return Ok(None),
        other => {
            let reason = format!("unsupported entry type {:?}", other.as_byte() as char);
            return Err(bad(what(), reason));
        }
    };
    // A link entry's own fields are not read: the inode's are the file's.
    let meta =
        meta(item.header()).map_err(|e| DataError::stream("read the header of", what(), e))?;
    Ok(Some(Entry::new(path, kind, meta)))
}

/// Mode, numeric owner and whole-second mtime: all a busybox header has.
fn meta(header: &tar::Header) -> io::Result<Meta> {
    let id = |v: u64| {
        u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "id over 32 bits"))
    };
    Ok(Meta {
        mode: header.mode()?,
        uid: id(header.uid()?)?,
        gid: id(header.gid()?)?,
        mtime: Mtime {
            secs: header.mtime()? as i64,
            nanos: 0,
        },
        xattrs: Vec::new(),
    })
}

fn file_kind<R: Read>(
    item: &mut tar::Entry<'_, R>,
    what: &str,
    buf: &mut [u8],
) -> Result<Kind, DataError> {
    let expected = item.size();
    let (len, sha256) = hash_content(item, buf).map_err(|e| DataError::stream("read", what, e))?;
    if len != expected {
        return Err(DataError::StreamTooShort {
            what: what.into(),
            expected,
            actual: len,
        });
    }
    Ok(Kind::File { len, sha256 })
}

/// A hard link names an earlier entry that is not a directory.
fn link_target<R: Read>(
    item: &tar::Entry<'_, R>,
    seen: &HashMap<Vec<u8>, bool>,
    what: &str,
) -> Result<Vec<u8>, DataError> {
    let raw = item
        .link_name_bytes()
        .ok_or_else(|| bad(what.into(), "no link target"))?;
    let target = normalise(&raw)?;
    match seen.get(&target) {
        Some(false) => Ok(target),
        _ => {
            let reason = format!("hard link to {}, not an earlier file", show(&raw));
            Err(bad(what.into(), reason))
        }
    }
}

fn device(header: &tar::Header) -> Option<(u32, u32)> {
    let major = header.device_major().ok()??;
    let minor = header.device_minor().ok()??;
    Some((major, minor))
}

/// The `tar` crate stops at the first zero block and also, silently, at the end of the
/// input; both tars write two zero blocks, so the second one must be next.
fn check_end_marker(rest: &mut impl Read) -> Result<(), DataError> {
    let mut block = [0u8; BLOCK];
    let mut got = 0;
    while got < BLOCK {
        match rest.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::stream("read", WHAT, e)),
        }
    }
    if got < BLOCK || block.iter().any(|&b| b != 0) {
        return Err(bad(
            WHAT.into(),
            "no end-of-archive marker: the stream was cut short or is not one tar archive",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
    use std::os::unix::fs::{FileExt, PermissionsExt, lchown, symlink};
    use std::process::Command;
    use std::time::Duration;

    use tar::{Builder, Header};

    use super::*;
    use crate::data::test_support::{awkward_tree, tars};
    use crate::data::{seed_tree, tree_digest};

    fn assert_tars_agree(dir: &std::path::Path) -> Digest {
        let walked = tree_digest(dir, Level::Tar).unwrap();
        for tar in tars() {
            assert_eq!(tar.digest(dir).unwrap(), walked, "{} tar", tar.name);
        }
        walked
    }

    #[test]
    fn seeded_tree_digests_alike_walked_and_through_tar() {
        let dir = tempfile::tempdir().unwrap();
        seed_tree(dir.path(), "seed", 21, 3 << 20).unwrap();
        assert_tars_agree(dir.path());
    }

    #[test]
    fn awkward_tree_digests_alike_walked_and_through_tar() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        let with_lost = assert_tars_agree(dir.path());
        fs::remove_dir_all(dir.path().join("lost+found")).unwrap();
        assert_eq!(assert_tars_agree(dir.path()), with_lost);
    }

    #[test]
    fn other_gnu_formats_digest_alike() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        let walked = tree_digest(dir.path(), Level::Tar).unwrap();
        for format in ["--format=pax", "--format=gnu", "--format=oldgnu"] {
            let out = Command::new("tar")
                .args([format, "-c", "-f", "-", "-C"])
                .arg(dir.path())
                .arg(".")
                .output()
                .unwrap();
            assert!(out.status.success(), "{format}");
            assert_eq!(tar_digest(&out.stdout[..]).unwrap(), walked, "{format}");
        }
    }

    #[test]
    fn one_changed_byte_mode_owner_mtime_link_or_name_changes_the_tar_digest() {
        let dir = tempfile::tempdir().unwrap();
        seed_tree(dir.path(), "seed", 22, 64 << 10).unwrap();
        let base = dir.path().join("seed");
        let mut seen = vec![assert_tars_agree(dir.path())];
        let mut changed = |what: &str| {
            let now = assert_tars_agree(dir.path());
            assert!(!seen.contains(&now), "digest did not change after {what}");
            seen.push(now);
        };
        let path = base.join("a/page-minus-one.bin");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, 100).unwrap();
        f.write_all_at(&[byte[0] ^ 0x80], 100).unwrap();
        changed("one byte");
        fs::set_permissions(base.join("a/run.sh"), Permissions::from_mode(0o754)).unwrap();
        changed("one mode bit");
        fs::set_permissions(base.join("modes/setgid"), Permissions::from_mode(0o755)).unwrap();
        changed("a setgid bit");
        lchown(base.join("home/alice/notes.txt"), None, Some(0)).unwrap();
        changed("one group");
        let one = File::options()
            .write(true)
            .open(base.join("one.bin"))
            .unwrap();
        let t = one.metadata().unwrap().modified().unwrap();
        one.set_times(FileTimes::new().set_modified(t + Duration::from_secs(1)))
            .unwrap();
        changed("one mtime");
        // One name of the three-name inode becomes a file of its own (the tree digest's
        // tests show that this alone, all metadata equal, changes both levels).
        let second = base.join("a/b/second-name.bin");
        let bytes = fs::read(&second).unwrap();
        fs::remove_file(&second).unwrap();
        fs::write(&second, bytes).unwrap();
        changed("a hard link broken");
        fs::remove_file(base.join("dangling")).unwrap();
        symlink("no/such/targer", base.join("dangling")).unwrap();
        changed("one symlink target");
        fs::rename(base.join("docs"), base.join("doct")).unwrap();
        changed("one name");
    }

    /// Appends an entry with a raw name, as tar programs write them.
    fn entry(b: &mut Builder<Vec<u8>>, name: &str, kind: EntryType, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        (h.set_uid(0), h.set_gid(0), h.set_mtime(0));
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn archive(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for (name, kind, data) in entries {
            entry(&mut b, name, *kind, data);
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn dot_slash_names_trailing_slashes_and_the_root_entry_are_normalised() {
        use EntryType::{Directory as D, Regular as F};
        let a = archive(&[("./", D, b""), ("./d/", D, b""), ("./d/f", F, b"x")]);
        let b = archive(&[(".", D, b""), ("d", D, b""), ("d//f", F, b"x")]);
        let old = archive(&[("d/", F, b""), ("d/f", F, b"x")]);
        let da = tar_digest(&a[..]).unwrap();
        assert_eq!(da, tar_digest(&b[..]).unwrap());
        assert_eq!(da, tar_digest(&old[..]).unwrap());
    }

    #[test]
    fn broken_archives_are_errors_naming_the_stream() {
        use EntryType::{Directory as D, Link as L, Regular as F};
        let good = archive(&[("d", D, b""), ("d/f", F, &[7; 3000])]);
        // Cut inside the file, and exactly at an entry boundary (before the end marker).
        for cut in [1500, good.len() - 1024] {
            let err = tar_digest(&good[..cut]).unwrap_err().to_string();
            assert!(err.contains("tar stream"), "cut at {cut}: {err}");
        }
        let mut link = Header::new_gnu();
        link.set_entry_type(L);
        link.set_mode(0o644);
        link.set_size(0);
        let mut b = Builder::new(Vec::new());
        b.append_link(&mut link, "hard", "missing").unwrap();
        let err = tar_digest(&b.into_inner().unwrap()[..]).unwrap_err();
        assert!(matches!(err, DataError::BadArchive { .. }), "{err}");
        assert!(err.to_string().contains("hard link to missing"), "{err}");
        let mut dir_link = Builder::new(Vec::new());
        let mut d = Header::new_gnu();
        d.set_entry_type(D);
        d.set_mode(0o755);
        d.set_size(0);
        (d.set_uid(0), d.set_gid(0), d.set_mtime(0));
        dir_link.append_data(&mut d, "d", std::io::empty()).unwrap();
        dir_link.append_link(&mut link, "hard", "d").unwrap();
        let err = tar_digest(&dir_link.into_inner().unwrap()[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("hard link to d, not an earlier file"),
            "{err}"
        );
        let escape = archive(&[("../x", F, b"x")]);
        let err = tar_digest(&escape[..]).unwrap_err().to_string();
        assert!(err.contains("tar stream entry ../x"), "{err}");
        let orphan = archive(&[("d/f", F, b"x")]);
        let err = tar_digest(&orphan[..]).unwrap_err().to_string();
        assert!(err.contains("d/f has no parent"), "{err}");
    }
}
