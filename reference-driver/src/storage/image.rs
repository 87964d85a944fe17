//! Sparse image files and the filesystems inside them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::{FsType, Result, StorageError, fsync_parent, run, run_accepting};

/// Creates a new sparse file of `size` bytes (create_new, set_len, fsync file + parent dir).
/// A partially created file is removed on failure.
pub fn create_sparse(path: &Path, size: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::io("create", path, e))?;
    let result = file
        .set_len(size)
        .map_err(|e| StorageError::io("truncate", path, e))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| StorageError::io("fsync", path, e))
        })
        .and_then(|()| fsync_parent(path));
    if result.is_err() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Grows (never shrinks) a file to `size` with set_len, fsync. A smaller
/// `size` is a no-op: shrinking would destroy filesystem data.
pub fn grow_file(path: &Path, size: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("stat", path, e))?
        .len();
    if size <= len {
        return Ok(());
    }
    file.set_len(size)
        .map_err(|e| StorageError::io("truncate", path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", path, e))
}

/// Formats an image file or device.
///
/// ext4: `-E lazy_itable_init=0,lazy_journal_init=0` makes mkfs finish inode
/// table and journal init itself. Otherwise the kernel's ext4lazyinit thread
/// keeps writing into the image after mount, which races with image clones and
/// slowly makes sparse images dense. On sparse files mkfs discards (punches)
/// first, so this costs nothing. `-m 0`: no root-reserved blocks, since a CSI
/// volume should expose all of its capacity to the workload.
///
/// xfs: `-m reflink=1` (the default on current xfsprogs) so clones inside a
/// volume can share extents; retried without it for old xfsprogs.
pub fn make_filesystem(target: &Path, fs: FsType) -> Result<()> {
    let t = target.as_os_str();
    match fs {
        FsType::Ext4 => {
            let args = [
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-E".as_ref(),
                "lazy_itable_init=0,lazy_journal_init=0".as_ref(),
                t,
            ];
            run("mkfs.ext4", args).map(drop)
        }
        FsType::Xfs => {
            let with_reflink = [
                "-q".as_ref(),
                "-f".as_ref(),
                "-m".as_ref(),
                "reflink=1".as_ref(),
                t,
            ];
            match run("mkfs.xfs", with_reflink) {
                Err(StorageError::Command { stderr, .. }) if stderr.contains("reflink") => {
                    tracing::warn!(%stderr, "mkfs.xfs rejected reflink=1, formatting without");
                    run("mkfs.xfs", ["-q".as_ref(), "-f".as_ref(), t]).map(drop)
                }
                other => other.map(drop),
            }
        }
    }
}

/// Grows the filesystem mounted at `mount_point` (backed by block `device`) to
/// fill the device: ext4 → `resize2fs <device>` (online), xfs → `xfs_growfs <mount_point>`.
/// Already full size is a no-op for both tools.
/// Online ext4 growth needs CAP_SYS_RESOURCE; without it this returns
/// `MissingCapability` and callers can fall back to `grow_filesystem_offline`.
pub fn grow_filesystem(device: &Path, mount_point: &Path, fs: FsType) -> Result<()> {
    match fs {
        FsType::Ext4 => match run("resize2fs", [device.as_os_str()]) {
            Err(StorageError::Command { stderr, .. })
                if stderr.contains("Permission denied") && !has_cap_sys_resource() =>
            {
                Err(StorageError::MissingCapability {
                    op: "online ext4 resize",
                    capability: "CAP_SYS_RESOURCE",
                })
            }
            other => other.map(drop),
        },
        FsType::Xfs => run("xfs_growfs", [mount_point.as_os_str()]).map(drop),
    }
}

/// Grows an UNMOUNTED filesystem (image file or device) to fill its container:
/// ext4 → `e2fsck -f -p` (resize2fs insists on a freshly checked fs) then
/// `resize2fs`. XFS can only grow while mounted, so it is `Unsupported`.
/// Never call this on a mounted filesystem: offline resize would corrupt it.
pub fn grow_filesystem_offline(target: &Path, fs: FsType) -> Result<()> {
    match fs {
        FsType::Ext4 => {
            // Exit 1 means e2fsck fixed something, which is fine before a resize.
            run_accepting(
                "e2fsck",
                ["-f".as_ref(), "-p".as_ref(), target.as_os_str()],
                &[0, 1],
            )?;
            run("resize2fs", [target.as_os_str()]).map(drop)
        }
        FsType::Xfs => Err(StorageError::Unsupported {
            op: "offline filesystem growth",
            fs,
        }),
    }
}

/// CAP_SYS_RESOURCE (bit 24) in this process's effective set.
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

const EXT_MAGIC_OFFSET: usize = 1080;
const EXT_MAGIC: u16 = 0xEF53;
const XFS_MAGIC: &[u8; 4] = b"XFSB";

/// Detects the filesystem on a device or image from its superblock magic.
/// ext2/3 are reported as `Ext4` (the ext4 driver mounts them). Returns None
/// if unknown/unformatted, including files too short to hold a superblock.
pub fn detect_filesystem(target: &Path) -> Result<Option<FsType>> {
    let mut file = File::open(target).map_err(|e| StorageError::io("open", target, e))?;
    let mut buf = [0u8; EXT_MAGIC_OFFSET + 2];
    let n = read_full(&mut file, &mut buf).map_err(|e| StorageError::io("read", target, e))?;
    let buf = &buf[..n];
    if buf.starts_with(XFS_MAGIC) {
        return Ok(Some(FsType::Xfs));
    }
    let ext = buf
        .get(EXT_MAGIC_OFFSET..EXT_MAGIC_OFFSET + 2)
        .is_some_and(|m| u16::from_le_bytes([m[0], m[1]]) == EXT_MAGIC);
    Ok(ext.then_some(FsType::Ext4))
}

/// Reads until `buf` is full or EOF; returns bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_util::{LoopGuard, MountGuard, skip_reason};
    use crate::storage::{loopdev, mount};
    use std::os::unix::fs::{FileExt, MetadataExt};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn sparse_create_and_grow() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("img");
        create_sparse(&p, 64 * MIB).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 64 * MIB);
        assert!(m.blocks() * 512 < MIB, "not sparse");
        assert!(matches!(
            create_sparse(&p, MIB),
            Err(StorageError::Io { op: "create", .. })
        ));
        grow_file(&p, 128 * MIB).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 128 * MIB);
        grow_file(&p, 32 * MIB).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            128 * MIB,
            "grow_file shrank"
        );
        assert!(grow_file(&td.path().join("missing"), MIB).is_err());
    }

    #[test]
    fn detect_magic() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("img");
        std::fs::write(&p, b"short").unwrap();
        assert_eq!(detect_filesystem(&p).unwrap(), None);
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        assert_eq!(detect_filesystem(&p).unwrap(), None);
        let f = File::options().write(true).open(&p).unwrap();
        f.write_all_at(&EXT_MAGIC.to_le_bytes(), EXT_MAGIC_OFFSET as u64)
            .unwrap();
        assert_eq!(detect_filesystem(&p).unwrap(), Some(FsType::Ext4));
        f.write_all_at(XFS_MAGIC, 0).unwrap();
        assert_eq!(detect_filesystem(&p).unwrap(), Some(FsType::Xfs));
        assert!(detect_filesystem(&td.path().join("missing")).is_err());
    }

    #[test]
    fn make_filesystem_reports_stderr() {
        if !crate::storage::test_util::have_tool("mkfs.ext4") {
            eprintln!("skipping make_filesystem_reports_stderr: mkfs.ext4 not installed");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let err = make_filesystem(&td.path().join("missing"), FsType::Ext4).unwrap_err();
        assert!(
            matches!(&err, StorageError::Command { stderr, .. } if !stderr.is_empty()),
            "{err}"
        );
    }

    /// Full ext4 lifecycle: format, detect, attach, mount, write, grow online.
    #[test]
    fn ext4_image_lifecycle() {
        if let Some(why) = skip_reason(&["mkfs.ext4", "resize2fs", "losetup"]) {
            eprintln!("skipping ext4_image_lifecycle: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("vol.img");
        create_sparse(&img, 64 * MIB).unwrap();
        assert_eq!(detect_filesystem(&img).unwrap(), None);
        make_filesystem(&img, FsType::Ext4).unwrap();
        assert_eq!(detect_filesystem(&img).unwrap(), Some(FsType::Ext4));
        assert!(
            std::fs::metadata(&img).unwrap().blocks() * 512 < 32 * MIB,
            "mkfs made image dense"
        );

        let dev = LoopGuard(loopdev::attach(&img).unwrap());
        assert_eq!(loopdev::device_size(&dev.0).unwrap(), 64 * MIB);
        assert_eq!(detect_filesystem(&dev.0).unwrap(), Some(FsType::Ext4));
        let mnt = td.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mount::mount_filesystem(&dev.0, &mnt, FsType::Ext4, false).unwrap();
        let m = MountGuard(mnt.clone());
        assert!(mount::is_mount_point(&mnt).unwrap());

        std::fs::write(mnt.join("hello"), b"world").unwrap();
        mount::sync_filesystem(&mnt).unwrap();
        let usage = mount::fs_usage(&mnt).unwrap();
        assert!(
            (40 * MIB..=64 * MIB).contains(&usage.total_bytes),
            "{usage:?}"
        );
        assert!(usage.available_bytes <= usage.total_bytes && usage.used_bytes > 0);
        assert!(usage.used_inodes > 0 && usage.free_inodes < usage.total_inodes);

        // Already full size: a no-op that needs no capability.
        grow_filesystem(&dev.0, &mnt, FsType::Ext4).unwrap();
        grow_file(&img, 128 * MIB).unwrap();
        loopdev::refresh_capacity(&dev.0).unwrap();
        assert_eq!(loopdev::device_size(&dev.0).unwrap(), 128 * MIB);
        let m = if has_cap_sys_resource() {
            grow_filesystem(&dev.0, &mnt, FsType::Ext4).unwrap();
            m
        } else {
            eprintln!("ext4_image_lifecycle: no CAP_SYS_RESOURCE, testing offline growth");
            let err = grow_filesystem(&dev.0, &mnt, FsType::Ext4).unwrap_err();
            assert!(
                matches!(err, StorageError::MissingCapability { .. }),
                "{err}"
            );
            drop(m);
            grow_filesystem_offline(&dev.0, FsType::Ext4).unwrap();
            mount::mount_filesystem(&dev.0, &mnt, FsType::Ext4, false).unwrap();
            MountGuard(mnt.clone())
        };
        let grown = mount::fs_usage(&mnt).unwrap();
        assert!(grown.total_bytes > 100 * MIB, "{grown:?}");
        grow_filesystem(&dev.0, &mnt, FsType::Ext4).unwrap();
        assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"world");

        drop(m);
        assert!(!mount::is_mount_point(&mnt).unwrap());
        let dev_path = dev.0.clone();
        drop(dev);
        assert!(!loopdev::attached_devices(&img).unwrap().contains(&dev_path));
    }

    #[test]
    fn offline_growth_of_image_file() {
        if let Some(why) = skip_reason(&["mkfs.ext4", "e2fsck", "resize2fs"]) {
            eprintln!("skipping offline_growth_of_image_file: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("vol.img");
        create_sparse(&img, 32 * MIB).unwrap();
        make_filesystem(&img, FsType::Ext4).unwrap();
        grow_file(&img, 96 * MIB).unwrap();
        grow_filesystem_offline(&img, FsType::Ext4).unwrap();
        // The ext4 superblock block count (offset 1024+4, u32 LE, 4 KiB blocks here) covers the file.
        let sb = std::fs::read(&img).unwrap();
        let blocks = u32::from_le_bytes(sb[1028..1032].try_into().unwrap()) as u64;
        let log_block = u32::from_le_bytes(sb[1048..1052].try_into().unwrap());
        assert_eq!(blocks * (1024 << log_block), 96 * MIB);
        assert!(matches!(
            grow_filesystem_offline(&img, FsType::Xfs),
            Err(StorageError::Unsupported { .. })
        ));
    }

    #[test]
    fn xfs_image_grows() {
        if let Some(why) = skip_reason(&["mkfs.xfs", "xfs_growfs", "losetup"]) {
            eprintln!("skipping xfs_image_grows: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("vol.img");
        create_sparse(&img, FsType::Xfs.min_size_bytes()).unwrap();
        make_filesystem(&img, FsType::Xfs).unwrap();
        let dev = LoopGuard(loopdev::attach(&img).unwrap());
        let mnt = td.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mount::mount_filesystem(&dev.0, &mnt, FsType::Xfs, false).unwrap();
        let _m = MountGuard(mnt.clone());
        let before = mount::fs_usage(&mnt).unwrap().total_bytes;
        grow_file(&img, 600 * MIB).unwrap();
        loopdev::refresh_capacity(&dev.0).unwrap();
        grow_filesystem(&dev.0, &mnt, FsType::Xfs).unwrap();
        let after = mount::fs_usage(&mnt).unwrap().total_bytes;
        assert!(after > before + 200 * MIB, "{before} -> {after}");
    }
}
