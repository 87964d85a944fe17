//! Hole-preserving, durable file clone: reflink when the filesystem can share
//! extents, otherwise copy only the data extents so sparse images stay sparse.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use super::{Result, StorageError, fsync_parent};

/// Largest unit copied between `pace` sleeps; also bounds each copy_file_range call.
const CHUNK: u64 = 8 * 1024 * 1024;
/// Buffer for the read/write fallback.
const RW_BUF: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    SparseCopy,
}

#[derive(Clone, Copy, Debug)]
pub struct CopyStats {
    pub method: CopyMethod,
    /// Bytes actually copied (0 for reflink).
    pub data_bytes: u64,
    pub file_len: u64,
}

/// Copies `src` into a NEW file `dst` (create_new; error if it exists), keeping
/// holes, then fsyncs dst and dst's parent dir. On failure the partial `dst`
/// is removed so callers never see a half-written clone under its final name.
/// `pace`: optional delay slept after each copied chunk (<= 8 MiB per chunk) —
/// a test aid used to widen crash windows; None in production.
pub fn clone_file(src: &Path, dst: &Path, pace: Option<Duration>) -> Result<CopyStats> {
    let src_file = File::open(src).map_err(|e| StorageError::io("open source", src, e))?;
    let meta = src_file
        .metadata()
        .map_err(|e| StorageError::io("stat source", src, e))?;
    if !meta.is_file() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        return Err(StorageError::io("open source", src, e));
    }
    let dst_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.permissions().mode() & 0o777)
        .open(dst)
        .map_err(|e| StorageError::io("create", dst, e))?;

    let result = copy_into(&src_file, src, &dst_file, dst, meta.len(), pace).and_then(|stats| {
        dst_file
            .sync_all()
            .map_err(|e| StorageError::io("fsync", dst, e))?;
        fsync_parent(dst)?;
        Ok(stats)
    });
    if result.is_err() {
        drop(dst_file);
        if let Err(e) = std::fs::remove_file(dst) {
            tracing::warn!(path = %dst.display(), error = %e, "removing partial clone failed");
        }
    }
    result
}

fn copy_into(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    pace: Option<Duration>,
) -> Result<CopyStats> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => {
            return Ok(CopyStats {
                method: CopyMethod::Reflink,
                data_bytes: 0,
                file_len: len,
            });
        }
        // No shared-extent support here (or across these filesystems): copy instead.
        Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {}
        Err(e) => return Err(StorageError::io("reflink", dst_path, e.into())),
    }
    let mut copier = Copier {
        src,
        src_path,
        dst,
        dst_path,
        use_cfr: true,
        buf: Vec::new(),
    };
    let data_bytes = copier.sparse_copy(len, pace)?;
    Ok(CopyStats {
        method: CopyMethod::SparseCopy,
        data_bytes,
        file_len: len,
    })
}

struct Copier<'a> {
    src: &'a File,
    src_path: &'a Path,
    dst: &'a File,
    dst_path: &'a Path,
    /// Cleared once copy_file_range proves unusable, so later extents go straight to read/write.
    use_cfr: bool,
    buf: Vec<u8>,
}

impl Copier<'_> {
    /// Copies the data extents of the first `len` bytes; returns bytes copied.
    fn sparse_copy(&mut self, len: u64, pace: Option<Duration>) -> Result<u64> {
        // Pre-size so every range we never write stays a hole.
        self.dst
            .set_len(len)
            .map_err(|e| StorageError::io("truncate", self.dst_path, e))?;
        let mut copied = 0;
        let mut pos = 0;
        while pos < len {
            let Some((start, end)) = self.next_extent(pos, len)? else {
                break;
            };
            let mut off = start;
            while off < end {
                let n = (end - off).min(CHUNK);
                self.copy_range(off, n)?;
                off += n;
                copied += n;
                if let Some(d) = pace {
                    std::thread::sleep(d);
                }
            }
            pos = end;
        }
        Ok(copied)
    }

    /// Next data extent `[start, end)` at or after `pos`, clamped to `len`.
    fn next_extent(&self, pos: u64, len: u64) -> Result<Option<(u64, u64)>> {
        let start = match rustix::fs::seek(self.src, SeekFrom::Data(pos)) {
            Ok(o) => o,
            // ENXIO: only holes remain after `pos`.
            Err(Errno::NXIO) => return Ok(None),
            // Filesystem can't report holes: treat the rest as data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((pos, len))),
            Err(e) => return Err(StorageError::io("seek data", self.src_path, e.into())),
        };
        if start >= len {
            return Ok(None);
        }
        let end = match rustix::fs::seek(self.src, SeekFrom::Hole(start)) {
            Ok(o) => o.min(len),
            // Source shrank between the two seeks; copy_range will report it.
            Err(Errno::NXIO) => len,
            Err(e) => return Err(StorageError::io("seek hole", self.src_path, e.into())),
        };
        Ok(Some((start, end.max(start))))
    }

    /// Copies `n` bytes at `off` (same offset in both files).
    fn copy_range(&mut self, off: u64, n: u64) -> Result<()> {
        let mut done = 0;
        while done < n && self.use_cfr {
            let mut off_in = off + done;
            let mut off_out = off + done;
            let want = usize::try_from(n - done).unwrap_or(usize::MAX);
            match rustix::fs::copy_file_range(
                self.src,
                Some(&mut off_in),
                self.dst,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => {
                    // Early EOF or a filesystem that silently copies nothing;
                    // read/write tells the two apart.
                    self.use_cfr = false;
                }
                Ok(k) => done += k as u64,
                Err(Errno::INTR) => {}
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                    tracing::debug!(src = %self.src_path.display(), "copy_file_range unusable, using read/write");
                    self.use_cfr = false;
                }
                Err(e) => return Err(StorageError::io("copy_file_range", self.dst_path, e.into())),
            }
        }
        if done < n {
            self.read_write(off + done, n - done)?;
        }
        Ok(())
    }

    fn read_write(&mut self, off: u64, n: u64) -> Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; RW_BUF];
        }
        let mut done = 0;
        while done < n {
            let want = (n - done).min(self.buf.len() as u64) as usize;
            let got = match self.src.read_at(&mut self.buf[..want], off + done) {
                Ok(0) => {
                    return Err(StorageError::SourceTruncated {
                        path: self.src_path.to_path_buf(),
                        offset: off + done,
                        expected: off + n,
                    });
                }
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StorageError::io("read", self.src_path, e)),
            };
            self.dst
                .write_all_at(&self.buf[..got], off + done)
                .map_err(|e| StorageError::io("write", self.dst_path, e))?;
            done += got as u64;
        }
        Ok(())
    }
}

/// Whether FICLONE works between files in `dir` (create two temp files, try; clean up). For logs/bench.
pub fn reflink_supported(dir: &Path) -> bool {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tag = format!(
        ".reflink-probe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let a = dir.join(format!("{tag}-a"));
    let b = dir.join(format!("{tag}-b"));
    // Track what we created so we never delete someone else's file.
    let mut created = Vec::new();
    let probe = (|| -> io::Result<bool> {
        let mut fa = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&a)?;
        created.push(&a);
        fa.write_all(&[0xa5; 4096])?;
        let fb = OpenOptions::new().write(true).create_new(true).open(&b)?;
        created.push(&b);
        Ok(rustix::fs::ioctl_ficlone(&fb, &fa).is_ok())
    })();
    for p in created {
        let _ = std::fs::remove_file(p);
    }
    probe.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_util::{LoopGuard, MountGuard, skip_reason};
    use crate::storage::{FsType, image, loopdev, mount};
    use rand::RngCore;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1024 * 1024;

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        rand::rng().fill_bytes(&mut v);
        v
    }

    /// Creates `path` of `len` bytes with `chunks` written at their offsets, rest holes.
    fn make_sparse(path: &Path, len: u64, chunks: &[(u64, &[u8])]) {
        let f = File::create(path).unwrap();
        f.set_len(len).unwrap();
        for (off, data) in chunks {
            f.write_all_at(data, *off).unwrap();
        }
        f.sync_all().unwrap();
    }

    fn assert_same_content(a: &Path, b: &Path) {
        let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
        assert_eq!(fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
        let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        let mut off = 0u64;
        loop {
            let na = fa.read(&mut ba).unwrap();
            fb.read_exact(&mut bb[..na]).unwrap();
            assert!(
                ba[..na] == bb[..na],
                "content differs in MiB at offset {off}"
            );
            if na == 0 {
                break;
            }
            off += na as u64;
        }
        assert_eq!(fb.read(&mut bb).unwrap(), 0, "{} is longer", b.display());
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn sparse_file_keeps_holes_and_data() {
        let td = tempfile::tempdir().unwrap();
        let (src, dst) = (td.path().join("src"), td.path().join("dst"));
        let (a, b, c) = (random(64 * 1024), random(64 * 1024), random(64 * 1024));
        let len = 200 * MIB;
        make_sparse(&src, len, &[(0, &a), (5 * MIB, &b), (100 * MIB, &c)]);

        let stats = clone_file(&src, &dst, None).unwrap();
        assert_eq!(stats.file_len, len);
        if stats.method == CopyMethod::SparseCopy {
            assert!(stats.data_bytes >= 3 * 64 * 1024, "{stats:?}");
            assert!(stats.data_bytes < 4 * MIB, "copied holes: {stats:?}");
        }
        assert_same_content(&src, &dst);
        let used = allocated(&dst);
        assert!(
            used < 8 * MIB,
            "destination not sparse: {used} bytes allocated"
        );
    }

    #[test]
    fn read_write_fallback_matches() {
        let td = tempfile::tempdir().unwrap();
        let (src, dst) = (td.path().join("src"), td.path().join("dst"));
        let tail = random(5000);
        let len = 30 * MIB + 77;
        make_sparse(
            &src,
            len,
            &[(MIB, &random(3 * MIB as usize)), (len - 5000, &tail)],
        );
        let (sf, df) = (File::open(&src).unwrap(), File::create(&dst).unwrap());
        let mut copier = Copier {
            src: &sf,
            src_path: &src,
            dst: &df,
            dst_path: &dst,
            use_cfr: false,
            buf: Vec::new(),
        };
        let copied = copier.sparse_copy(len, None).unwrap();
        assert!((3 * MIB + 5000..8 * MIB).contains(&copied), "{copied}");
        assert_same_content(&src, &dst);
        assert!(allocated(&dst) < 8 * MIB);
    }

    #[test]
    fn empty_file() {
        let td = tempfile::tempdir().unwrap();
        let (src, dst) = (td.path().join("src"), td.path().join("dst"));
        File::create(&src).unwrap();
        let stats = clone_file(&src, &dst, None).unwrap();
        assert_eq!((stats.file_len, stats.data_bytes), (0, 0));
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 0);
    }

    #[test]
    fn ends_in_data_and_ends_in_hole() {
        let td = tempfile::tempdir().unwrap();
        // Unaligned length whose last bytes are data.
        let src = td.path().join("data-end");
        let len = 3 * MIB + 123;
        make_sparse(&src, len, &[(len - 5000, &random(5000))]);
        let dst = td.path().join("data-end.copy");
        clone_file(&src, &dst, None).unwrap();
        assert_same_content(&src, &dst);

        let src = td.path().join("hole-end");
        make_sparse(&src, 10 * MIB + 1, &[(0, &random(4096))]);
        let dst = td.path().join("hole-end.copy");
        let stats = clone_file(&src, &dst, None).unwrap();
        assert_eq!(stats.file_len, 10 * MIB + 1);
        assert_same_content(&src, &dst);
        assert!(allocated(&dst) < 2 * MIB);
    }

    #[test]
    fn existing_destination_is_an_error_and_untouched() {
        let td = tempfile::tempdir().unwrap();
        let (src, dst) = (td.path().join("src"), td.path().join("dst"));
        std::fs::write(&src, b"new").unwrap();
        std::fs::write(&dst, b"precious").unwrap();
        match clone_file(&src, &dst, None) {
            Err(StorageError::Io { op, source, .. }) => {
                assert_eq!(op, "create");
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
            }
            other => panic!("expected create error, got {other:?}"),
        }
        assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
    }

    #[test]
    fn missing_source_leaves_no_destination() {
        let td = tempfile::tempdir().unwrap();
        let dst = td.path().join("dst");
        assert!(clone_file(&td.path().join("nope"), &dst, None).is_err());
        assert!(!dst.exists());
    }

    #[test]
    fn dense_random_file_with_pace() {
        let td = tempfile::tempdir().unwrap();
        let (src, dst) = (td.path().join("src"), td.path().join("dst"));
        std::fs::write(&src, random(20 * MIB as usize)).unwrap();
        let stats = clone_file(&src, &dst, Some(Duration::from_millis(1))).unwrap();
        if stats.method == CopyMethod::SparseCopy {
            assert_eq!(stats.data_bytes, 20 * MIB);
        }
        assert_same_content(&src, &dst);
    }

    #[test]
    fn reflink_probe_cleans_up() {
        let td = tempfile::tempdir().unwrap();
        let _ = reflink_supported(td.path());
        assert_eq!(std::fs::read_dir(td.path()).unwrap().count(), 0);
        assert!(!reflink_supported(&td.path().join("missing")));
    }

    #[test]
    fn xfs_clone_uses_reflink() {
        if let Some(why) = skip_reason(&["mkfs.xfs", "losetup"]) {
            eprintln!("skipping xfs_clone_uses_reflink: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("xfs.img");
        image::create_sparse(&img, 512 * MIB).unwrap();
        image::make_filesystem(&img, FsType::Xfs).unwrap();
        assert_eq!(image::detect_filesystem(&img).unwrap(), Some(FsType::Xfs));
        let dev = LoopGuard(loopdev::attach(&img).unwrap());
        let mnt = td.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mount::mount_filesystem(&dev.0, &mnt, FsType::Xfs, false).unwrap();
        let _m = MountGuard(mnt.clone());
        assert!(reflink_supported(&mnt));

        let (src, dst) = (mnt.join("src"), mnt.join("dst"));
        make_sparse(
            &src,
            40 * MIB,
            &[(0, &random(3 * MIB as usize)), (30 * MIB, &random(4096))],
        );
        let stats = clone_file(&src, &dst, None).unwrap();
        assert_eq!(stats.method, CopyMethod::Reflink);
        assert_eq!((stats.data_bytes, stats.file_len), (0, 40 * MIB));
        assert_same_content(&src, &dst);
        // Shared extents must be copy-on-write: changing the clone leaves the source alone.
        let before = std::fs::read(&src).unwrap();
        File::options()
            .write(true)
            .open(&dst)
            .unwrap()
            .write_all_at(b"changed", 0)
            .unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), before);
    }
}
