//! Block datasets: seeded blocks at scattered offsets of a device, and device-range digests.
//! The planner and the stream digest are pure, so a target that writes and reads devices
//! through streams (`dd` in a pod) produces and checks the very same bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};

use super::{CHUNK, DataError, Digest, IoContext};

const PAGE: u64 = 4096;
const BLOCK: u64 = 64 * 1024;
const BLOCK_PAGES: u64 = BLOCK / PAGE;
const MARKER_LEN: usize = 4096;

/// One seeded block: `data` goes at byte `offset` of the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededBlock {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The blocks `seed_blocks` writes, without touching a device: `count` (at least 2) seeded
/// 64 KiB blocks at 4096-aligned, non-overlapping offsets spread over `device_len` (one per
/// equal stratum, so they cover the whole device), always including 0 and the last 64 KiB
/// (of the 4096-aligned length). Sorted by offset.
pub fn block_plan(seed: u64, device_len: u64, count: usize) -> Result<Vec<SeededBlock>, DataError> {
    let n = count.max(2) as u64;
    let pages = device_len / PAGE;
    if pages / n < BLOCK_PAGES {
        return Err(DataError::TooManyBlocks {
            count: n as usize,
            device_len,
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    // Stratum i spans pages [i*pages/n, (i+1)*pages/n), at least BLOCK_PAGES long, so a block
    // placed inside it never overlaps its neighbours. All offsets are drawn before any data:
    // that order is the RNG stream recorded seeds replay.
    let offsets: Vec<u64> = (0..n)
        .map(|i| {
            let start = i * pages / n;
            let end = (i + 1) * pages / n;
            let page = if i == 0 {
                0
            } else if i == n - 1 {
                pages - BLOCK_PAGES
            } else {
                rng.random_range(start..=end - BLOCK_PAGES)
            };
            page * PAGE
        })
        .collect();
    Ok(offsets
        .into_iter()
        .map(|offset| {
            let mut data = vec![0u8; BLOCK as usize];
            rng.fill_bytes(&mut data);
            SeededBlock { offset, data }
        })
        .collect())
}

/// Writes the blocks of `block_plan(seed, device_len, count)` into the device or file at
/// `path`, then fsyncs. The file is never created, truncated or extended.
/// Returns the offsets written, sorted.
pub fn seed_blocks(
    path: &Path,
    seed: u64,
    device_len: u64,
    count: usize,
) -> Result<Vec<u64>, DataError> {
    let plan = block_plan(seed, device_len, count)?;
    // Writing past the end of a regular file would silently grow it.
    let actual = self::device_len(path)?;
    if actual < device_len {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            expected: device_len,
            actual,
        });
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx("open", path)?;
    for block in &plan {
        f.write_all_at(&block.data, block.offset)
            .ctx("write", path)?;
    }
    f.sync_all().ctx("fsync", path)?;
    Ok(plan.iter().map(|b| b.offset).collect())
}

/// SHA-256 of the first `len` bytes of a device or file, read 1 MiB at a time.
pub fn device_digest(path: &Path, len: u64) -> Result<Digest, DataError> {
    let f = File::open(path).ctx("open", path)?;
    hash_prefix(f, len).map_err(|e| e.at(path, len))
}

/// What a whole device reads as: see `read_whole_device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WholeDevice {
    /// SHA-256 of the first `prefix` bytes.
    pub digest: Digest,
    /// The device's length, as seeking to its end reports it.
    pub len: u64,
    /// The first byte after the prefix that is not zero; reading stops there.
    pub first_nonzero: Option<u64>,
}

/// Reads a device or file to its end, 1 MiB at a time and never more in memory: the digest of
/// its first `prefix` bytes, then the offset of the first non-zero byte after them, if any.
/// A device that ends before its own length, or before `prefix`, is `TooShort`.
pub fn read_whole_device(path: &Path, prefix: u64) -> Result<WholeDevice, DataError> {
    let mut f = File::open(path).ctx("open", path)?;
    let len = f.seek(SeekFrom::End(0)).ctx("seek to end of", path)?;
    f.seek(SeekFrom::Start(0)).ctx("seek to start of", path)?;
    if len < prefix {
        return Err(PrefixError::Short(len).at(path, prefix));
    }
    let digest = hash_prefix(&mut f, prefix).map_err(|e| e.at(path, prefix))?;
    let first_nonzero = scan_zeros(&mut f, prefix, len).map_err(|e| e.at(path, len))?;
    Ok(WholeDevice {
        digest,
        len,
        first_nonzero,
    })
}

/// Reads `input` from offset `from` (where it stands) to `to`: the first non-zero byte's offset.
fn scan_zeros<R: Read>(input: &mut R, from: u64, to: u64) -> Result<Option<u64>, PrefixError> {
    let mut buf = vec![0u8; CHUNK.min((to - from) as usize)];
    let mut pos = from;
    while pos < to {
        let want = (to - pos).min(CHUNK as u64) as usize;
        match input.read(&mut buf[..want]) {
            Ok(0) => return Err(PrefixError::Short(pos)),
            Ok(n) => {
                if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                    return Ok(Some(pos + i as u64));
                }
                pos += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(PrefixError::Io(pos, e)),
        }
    }
    Ok(None)
}

/// Overwrites with zeros every 1 MiB chunk after byte `from` that is not all zeros, then
/// fsyncs; returns the bytes rewritten. A seeded block source gets this so that all its bytes
/// are defined (a driver may hand out a new volume larger than asked, and unzeroed): a copy
/// must then read as the seeded bytes followed by zeros, whatever the driver's rounding.
pub fn zero_tail(path: &Path, from: u64) -> Result<u64, DataError> {
    let len = device_len(path)?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx("open", path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut rewritten = 0;
    let mut pos = from;
    while pos < len {
        let n = (len - pos).min(CHUNK as u64) as usize;
        f.read_exact_at(&mut buf[..n], pos).ctx("read", path)?;
        if buf[..n].iter().any(|&b| b != 0) {
            buf[..n].fill(0);
            f.write_all_at(&buf[..n], pos).ctx("write", path)?;
            rewritten += n as u64;
        }
        pos += n as u64;
    }
    if rewritten > 0 {
        f.sync_all().ctx("fsync", path)?;
    }
    Ok(rewritten)
}

/// SHA-256 of exactly the first `len` bytes of a stream (e.g. `dd if=<device>` run where the
/// device is attached): equal to `device_digest` of the same bytes. Bytes after `len` are
/// not read; a stream that ends early is an error naming `what`.
pub fn digest_stream<R: Read>(input: R, len: u64, what: &str) -> Result<Digest, DataError> {
    hash_prefix(input, len).map_err(|e| match e {
        PrefixError::Short(actual) => DataError::StreamTooShort {
            what: what.to_owned(),
            expected: len,
            actual,
        },
        PrefixError::Io(_, source) => DataError::stream("read", what, source),
    })
}

enum PrefixError {
    /// The input ended after this many bytes.
    Short(u64),
    /// Reading at this offset failed.
    Io(u64, io::Error),
}

impl PrefixError {
    /// The error for `path`, which should have been at least `expected` bytes long.
    fn at(self, path: &Path, expected: u64) -> DataError {
        match self {
            PrefixError::Short(actual) => DataError::TooShort {
                path: path.to_path_buf(),
                expected,
                actual,
            },
            PrefixError::Io(offset, source) => DataError::IoAt {
                op: "read",
                path: path.to_path_buf(),
                offset,
                source,
            },
        }
    }
}

/// The one implementation behind `device_digest` and `digest_stream`.
fn hash_prefix<R: Read>(mut input: R, len: u64) -> Result<Digest, PrefixError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        match input.read(&mut buf[..want]) {
            Ok(0) => return Err(PrefixError::Short(len - left)),
            Ok(n) => {
                h.update(&buf[..n]);
                left -= n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(PrefixError::Io(len - left, e)),
        }
    }
    Ok(Digest(h.finalize().into()))
}

/// Size of a block device or file: seeking to the end works for both, unlike `metadata().len()`,
/// which is 0 for a block device.
pub fn device_len(path: &Path) -> Result<u64, DataError> {
    let mut f = File::open(path).ctx("open", path)?;
    f.seek(SeekFrom::End(0)).ctx("seek to end of", path)
}

/// The 4 KiB `write_block_marker` writes for `seed`.
pub fn block_marker(seed: u64) -> [u8; MARKER_LEN] {
    let mut data = [0u8; MARKER_LEN];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Overwrites 4 KiB at `offset` with `block_marker(seed)` and fsyncs.
pub fn write_block_marker(path: &Path, seed: u64, offset: u64) -> Result<(), DataError> {
    let len = device_len(path)?;
    if offset
        .checked_add(MARKER_LEN as u64)
        .is_none_or(|end| end > len)
    {
        return Err(DataError::OutOfRange {
            path: path.to_path_buf(),
            offset,
            len: MARKER_LEN as u64,
            device_len: len,
        });
    }
    let data = block_marker(seed);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .ctx("open", path)?;
    f.write_all_at(&data, offset).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: u64 = 64 << 20;

    fn sparse_file(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        File::create(&p).unwrap().set_len(LEN).unwrap();
        p
    }

    #[test]
    fn same_seed_same_digest_and_markers_change_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            sparse_file(&dir, "a"),
            sparse_file(&dir, "b"),
            sparse_file(&dir, "c"),
        );
        let blank = device_digest(&a, LEN).unwrap();
        let oa = seed_blocks(&a, 5, LEN, 16).unwrap();
        let ob = seed_blocks(&b, 5, LEN, 16).unwrap();
        seed_blocks(&c, 6, LEN, 16).unwrap();
        assert_eq!(oa, ob);
        let da = device_digest(&a, LEN).unwrap();
        assert_ne!(da, blank);
        assert_eq!(da, device_digest(&b, LEN).unwrap());
        assert_ne!(da, device_digest(&c, LEN).unwrap());

        write_block_marker(&b, 1, 3 * PAGE + 17).unwrap();
        let db = device_digest(&b, LEN).unwrap();
        assert_ne!(db, da);
        // Markers are seeded too: the same marker on the other side makes them equal again.
        write_block_marker(&a, 1, 3 * PAGE + 17).unwrap();
        assert_eq!(device_digest(&a, LEN).unwrap(), db);
        assert_eq!(device_len(&a).unwrap(), LEN);
    }

    #[test]
    fn offsets_are_aligned_spread_and_cover_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "d");
        let offs = seed_blocks(&p, 7, LEN, 16).unwrap();
        assert_eq!(offs.len(), 16);
        assert_eq!(offs[0], 0);
        assert_eq!(*offs.last().unwrap(), LEN - BLOCK);
        assert!(offs.iter().all(|o| o % PAGE == 0));
        assert!(offs.windows(2).all(|w| w[0] + BLOCK <= w[1]), "{offs:?}");
        assert!(
            offs.iter().any(|&o| o > 0 && o % BLOCK != 0),
            "not scattered: {offs:?}"
        );
        let f = File::open(&p).unwrap();
        let mut blk = vec![0u8; BLOCK as usize];
        for &o in &offs {
            f.read_exact_at(&mut blk, o).unwrap();
            assert!(
                blk.iter().filter(|&&b| b == 0).count() < blk.len() / 64,
                "block at {o} not written"
            );
        }
        assert_eq!(device_len(&p).unwrap(), LEN);
    }

    #[test]
    fn short_devices_and_bad_ranges_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "short");
        let err = device_digest(&p, LEN + 1).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("short")
                && msg.contains(&LEN.to_string())
                && msg.contains(&(LEN + 1).to_string()),
            "{msg}"
        );

        let err = seed_blocks(&p, 1, 2 * LEN, 4).unwrap_err();
        assert!(matches!(err, DataError::TooShort { .. }), "{err}");
        assert_eq!(device_len(&p).unwrap(), LEN, "file was grown");
        let err = seed_blocks(&p, 1, LEN, 1025).unwrap_err();
        assert!(matches!(err, DataError::TooManyBlocks { .. }), "{err}");
        let err = write_block_marker(&p, 1, LEN - 100).unwrap_err();
        assert!(
            matches!(err, DataError::OutOfRange { .. }) && err.to_string().contains("short"),
            "{err}"
        );
        assert_eq!(device_len(&p).unwrap(), LEN, "file was grown");
        assert!(
            seed_blocks(&dir.path().join("missing"), 1, LEN, 2)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn plan_is_what_seed_blocks_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "plan");
        let plan = block_plan(8, LEN, 12).unwrap();
        assert_eq!(
            seed_blocks(&p, 8, LEN, 12).unwrap(),
            plan.iter().map(|b| b.offset).collect::<Vec<_>>()
        );
        let f = File::open(&p).unwrap();
        let mut got = vec![0u8; BLOCK as usize];
        for b in &plan {
            f.read_exact_at(&mut got, b.offset).unwrap();
            assert!(got == b.data, "block at {} differs", b.offset);
        }
        assert_eq!(block_plan(8, LEN, 12).unwrap(), plan);
        assert_ne!(block_plan(9, LEN, 12).unwrap(), plan);
        let too_many = block_plan(1, LEN, 1025).unwrap_err();
        assert!(
            matches!(too_many, DataError::TooManyBlocks { count: 1025, .. }),
            "{too_many}"
        );
    }

    #[test]
    fn block_marker_is_what_write_block_marker_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "marker");
        write_block_marker(&p, 3, 5 * PAGE).unwrap();
        let mut got = [0u8; MARKER_LEN];
        File::open(&p)
            .unwrap()
            .read_exact_at(&mut got, 5 * PAGE)
            .unwrap();
        assert_eq!(got, block_marker(3));
        assert_ne!(block_marker(3), block_marker(4));
    }

    #[test]
    fn digest_stream_is_device_digest_and_reads_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "dev");
        seed_blocks(&p, 2, LEN, 8).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for len in [0, 1, 4095, CHUNK as u64 + 1, LEN] {
            let mut input = io::Cursor::new(&bytes);
            let d = digest_stream(&mut input, len, "dd of the clone").unwrap();
            assert_eq!(d, device_digest(&p, len).unwrap(), "len {len}");
            assert_eq!(input.position(), len, "read past {len}");
        }
        let err = digest_stream(&bytes[..100], 101, "dd of the clone").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::StreamTooShort { actual: 100, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("dd of the clone") && msg.contains("101"),
            "{msg}"
        );
    }

    #[test]
    fn whole_device_digests_the_prefix_and_finds_the_first_nonzero_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "whole");
        let prefix = LEN / 4;
        seed_blocks(&p, 3, prefix, 8).unwrap();
        let clean = read_whole_device(&p, prefix).unwrap();
        assert_eq!(clean.digest, device_digest(&p, prefix).unwrap());
        assert_eq!((clean.len, clean.first_nonzero), (LEN, None));
        // One stale byte near the end, past several chunks of zeros.
        let stale = LEN - 3 * CHUNK as u64 + 17;
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&[0x5a], stale)
            .unwrap();
        let dirty = read_whole_device(&p, prefix).unwrap();
        assert_eq!(dirty.first_nonzero, Some(stale));
        assert_eq!(dirty.digest, clean.digest);
        let err = read_whole_device(&p, LEN + 1).unwrap_err();
        assert!(
            matches!(err, DataError::TooShort { actual: LEN, .. }),
            "{err}"
        );
    }

    #[test]
    fn zero_tail_clears_only_what_follows_and_only_dirty_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = sparse_file(&dir, "tail");
        let from = LEN / 2;
        seed_blocks(&p, 4, from, 4).unwrap();
        let before = device_digest(&p, from).unwrap();
        let f = File::options().write(true).open(&p).unwrap();
        f.write_all_at(&[1; 10], from + 5).unwrap();
        f.write_all_at(&[2], LEN - 1).unwrap();
        assert_eq!(zero_tail(&p, from).unwrap(), 2 * CHUNK as u64);
        let after = read_whole_device(&p, from).unwrap();
        assert_eq!((after.digest, after.first_nonzero), (before, None));
        assert_eq!(zero_tail(&p, from).unwrap(), 0);
        assert_eq!(device_len(&p).unwrap(), LEN, "file was grown");
    }

    #[test]
    fn a_read_error_names_its_offset_and_errno() {
        // The kernel answers EIO for a read of unmapped memory: a real I/O error, no root needed.
        let err = device_digest(Path::new("/proc/self/mem"), 4096).unwrap_err();
        assert!(matches!(err, DataError::IoAt { offset: 0, .. }), "{err}");
        assert_eq!(err.errno(), Some(rustix::io::Errno::IO.raw_os_error()));
        assert!(err.to_string().contains("at byte 0"), "{err}");
    }
}
