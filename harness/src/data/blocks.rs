//! Block datasets: seeded blocks at scattered offsets of a device, and device-range digests.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
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

/// Writes seeded 64 KiB blocks at `count` offsets (at least 2) of the device or file at `path`,
/// then fsyncs. Offsets are 4096-aligned, non-overlapping, spread over `device_len` (one per
/// equal stratum, so they cover the whole device) and always include 0 and the last 64 KiB
/// (of the 4096-aligned length). The file is never created, truncated or extended.
/// Returns the offsets written, sorted.
pub fn seed_blocks(
    path: &Path,
    seed: u64,
    device_len: u64,
    count: usize,
) -> Result<Vec<u64>, DataError> {
    let n = count.max(2) as u64;
    let pages = device_len / PAGE;
    if pages / n < BLOCK_PAGES {
        return Err(DataError::TooManyBlocks {
            path: path.to_path_buf(),
            count: n as usize,
            device_len,
        });
    }
    // Writing past the end of a regular file would silently grow it.
    let actual = self::device_len(path)?;
    if actual < device_len {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            expected: device_len,
            actual,
        });
    }

    let mut rng = StdRng::seed_from_u64(seed);
    // Stratum i spans pages [i*pages/n, (i+1)*pages/n), at least BLOCK_PAGES long, so a block
    // placed inside it never overlaps its neighbours.
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

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx("open", path)?;
    let mut block = vec![0u8; BLOCK as usize];
    for &off in &offsets {
        rng.fill_bytes(&mut block);
        f.write_all_at(&block, off).ctx("write", path)?;
    }
    f.sync_all().ctx("fsync", path)?;
    Ok(offsets)
}

/// SHA-256 of the first `len` bytes of a device or file, read 1 MiB at a time.
pub fn device_digest(path: &Path, len: u64) -> Result<Digest, DataError> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        match f.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(DataError::TooShort {
                    path: path.to_path_buf(),
                    expected: len,
                    actual: len - left,
                });
            }
            Ok(n) => {
                h.update(&buf[..n]);
                left -= n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).ctx("read", path),
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

/// Overwrites 4 KiB at `offset` with bytes seeded by `seed` and fsyncs.
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
    let mut data = [0u8; MARKER_LEN];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
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
}
