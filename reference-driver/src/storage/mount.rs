//! Mounts via the mount(2) family (no mount binary), mount-point detection and
//! filesystem statistics.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::StatVfsMountFlags;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::{FsType, Result, StorageError};

const UNMOUNT_ATTEMPTS: u32 = 5;
const UNMOUNT_RETRY_DELAY: Duration = Duration::from_millis(100);

fn mount_err(device: &Path, target: &Path, fstype: &'static str, e: Errno) -> StorageError {
    StorageError::Mount {
        device: device.to_path_buf(),
        target: target.to_path_buf(),
        fstype,
        source: e.into(),
    }
}

/// Mounts `device` (formatted as `fs`) on `target`.
pub fn mount_filesystem(device: &Path, target: &Path, fs: FsType, readonly: bool) -> Result<()> {
    let flags = if readonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    // A clone of an XFS image carries its source's UUID, and XFS refuses to
    // mount a second filesystem with a UUID already mounted.
    let data: Option<&CStr> = match fs {
        FsType::Xfs => Some(c"nouuid"),
        FsType::Ext4 => None,
    };
    rustix::mount::mount(device, target, fs.as_str(), flags, data)
        .map_err(|e| mount_err(device, target, fs.as_str(), e))
}

/// Bind-mounts `source` (a directory or a device node) onto `target`; when
/// readonly, follows with a MS_BIND|MS_REMOUNT|MS_RDONLY remount. If that
/// remount fails the bind is undone so no writable mount is left behind.
pub fn bind_mount(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    rustix::mount::mount_bind(source, target).map_err(|e| mount_err(source, target, "bind", e))?;
    if !readonly {
        return Ok(());
    }
    let remount = rustix::fs::statvfs(target)
        .map_err(|e| mount_err(source, target, "bind", e))
        .and_then(|st| {
            // A remount replaces all per-mount flags: keep nosuid/nodev/etc.
            // that the bind inherited, or a read-only bind would widen access.
            let flags = MountFlags::BIND | MountFlags::RDONLY | preserved_flags(st.f_flag);
            rustix::mount::mount_remount(target, flags, "")
                .map_err(|e| mount_err(source, target, "bind", e))
        });
    if remount.is_err()
        && let Err(e) = unmount(target)
    {
        tracing::error!(target = %target.display(), error = %e, "undoing failed read-only bind");
    }
    remount
}

fn preserved_flags(st: StatVfsMountFlags) -> MountFlags {
    let map = [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ];
    map.iter()
        .filter(|(s, _)| st.contains(*s))
        .fold(MountFlags::empty(), |acc, (_, m)| acc | *m)
}

/// Unmounts `target`; not mounted (or missing) → Ok. Retries EBUSY a few
/// times since a just-closed file can briefly keep the mount busy. A symlink at `target` is
/// not followed: a staging path swapped for a link to `/` must not unmount what it names.
pub fn unmount(target: &Path) -> Result<()> {
    let mut attempt = 1;
    loop {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) | Err(Errno::INVAL | Errno::NOENT) => return Ok(()),
            Err(Errno::BUSY) if attempt < UNMOUNT_ATTEMPTS => {
                std::thread::sleep(UNMOUNT_RETRY_DELAY);
                attempt += 1;
            }
            Err(e) => return Err(StorageError::io("unmount", target, e.into())),
        }
    }
}

/// True if `path` is a mount point per /proc/self/mountinfo. A missing path is
/// not a mount point, nor is a symlink (whatever it points at: a staging path swapped for a
/// link to `/` must not pass for a mount).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    let canonical = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io("canonicalize", path, e)),
    };
    let info_path = Path::new("/proc/self/mountinfo");
    let info = std::fs::read(info_path).map_err(|e| StorageError::io("read", info_path, e))?;
    Ok(mount_points(&info).any(|mp| mp == canonical))
}

/// Mount points (field 5) of mountinfo content, octal escapes decoded.
fn mount_points(info: &[u8]) -> impl Iterator<Item = PathBuf> + '_ {
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape(field))))
}

/// Decodes the `\ooo` escapes the kernel uses for space, tab, newline and backslash.
pub(crate) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
pub struct FsUsage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// statvfs of the filesystem containing `path`.
pub fn fs_usage(path: &Path) -> Result<FsUsage> {
    let st = rustix::fs::statvfs(path).map_err(|e| StorageError::io("statvfs", path, e.into()))?;
    let unit = st.f_frsize;
    Ok(FsUsage {
        total_bytes: st.f_blocks.saturating_mul(unit),
        available_bytes: st.f_bavail.saturating_mul(unit),
        used_bytes: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(unit),
        total_inodes: st.f_files,
        free_inodes: st.f_ffree,
        used_inodes: st.f_files.saturating_sub(st.f_ffree),
    })
}

/// syncfs on the filesystem containing `path` (flush a mounted source before copying its image).
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    rustix::fs::syncfs(&f).map_err(|e| StorageError::io("syncfs", path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_util::{LoopGuard, MountGuard, is_root, skip_reason};
    use crate::storage::{image, loopdev};
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(br"/a\040b\011c\134d\012"), b"/a b\tc\\d\n");
        assert_eq!(unescape(br"/plain"), b"/plain");
        // Malformed escapes pass through.
        assert_eq!(unescape(br"/x\09"), br"/x\09");
        assert_eq!(unescape(br"/y\"), br"/y\");
    }

    #[test]
    fn parses_mountinfo_field_five() {
        let info =
            b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 98:0 / /data rw - ext4 /dev/sda1 rw\n";
        let mps: Vec<_> = mount_points(info).collect();
        assert_eq!(
            mps,
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/data")]
        );
    }

    #[test]
    fn unprivileged_queries() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let td = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(td.path()).unwrap());
        assert!(!is_mount_point(&td.path().join("missing")).unwrap());
        let link = td.path().join("link-to-root");
        std::os::unix::fs::symlink("/", &link).unwrap();
        assert!(!is_mount_point(&link).unwrap());
        let u = fs_usage(td.path()).unwrap();
        assert!(
            u.total_bytes > 0
                && u.available_bytes <= u.total_bytes
                && u.used_bytes <= u.total_bytes
        );
        assert_eq!(u.used_inodes, u.total_inodes - u.free_inodes);
        sync_filesystem(td.path()).unwrap();
        assert!(fs_usage(&td.path().join("missing")).is_err());
        if is_root() {
            // Not mounted / missing → Ok.
            unmount(td.path()).unwrap();
            unmount(&td.path().join("missing")).unwrap();
        }
    }

    #[test]
    fn bind_device_node_onto_file() {
        if let Some(why) = skip_reason(&["losetup"]) {
            eprintln!("skipping bind_device_node_onto_file: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("blk.img");
        image::create_sparse(&img, 16 * 1024 * 1024).unwrap();
        let dev = LoopGuard(loopdev::attach(&img).unwrap());
        let target = td.path().join("publish-target");
        File::create(&target).unwrap();
        assert!(!is_mount_point(&target).unwrap());

        bind_mount(&dev.0, &target, false).unwrap();
        let m = MountGuard(target.clone());
        assert!(is_mount_point(&target).unwrap());
        assert!(
            std::fs::metadata(&target)
                .unwrap()
                .file_type()
                .is_block_device()
        );
        assert_eq!(loopdev::device_size(&target).unwrap(), 16 * 1024 * 1024);
        drop(m);
        assert!(!is_mount_point(&target).unwrap());
        assert!(std::fs::metadata(&target).unwrap().is_file());
    }

    #[test]
    fn readonly_bind_of_directory_and_busy_unmount() {
        if !is_root() {
            eprintln!("skipping readonly_bind_of_directory_and_busy_unmount: not root");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let src = td.path().join("src");
        let target = td.path().join("with space");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(src.join("f"), b"data").unwrap();

        bind_mount(&src, &target, true).unwrap();
        let m = MountGuard(target.clone());
        // The space is escaped as \040 in mountinfo.
        assert!(is_mount_point(&target).unwrap());
        assert_eq!(std::fs::read(target.join("f")).unwrap(), b"data");
        let err = std::fs::write(target.join("g"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // Only the bind is read-only; the source stays writable.
        std::fs::write(src.join("g"), b"x").unwrap();

        // An open file keeps it busy: retries then give up with the error.
        let open = File::open(target.join("f")).unwrap();
        match unmount(&target) {
            Err(StorageError::Io {
                op: "unmount",
                source,
                ..
            }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EBUSY));
            }
            other => panic!("expected EBUSY, got {other:?}"),
        }
        drop(open);
        unmount(&target).unwrap();
        assert!(!is_mount_point(&target).unwrap());
        std::mem::forget(m);
    }

    #[test]
    fn mount_errors_name_device_and_target() {
        if !is_root() {
            eprintln!("skipping mount_errors_name_device_and_target: not root");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let err =
            mount_filesystem(&td.path().join("nodev"), td.path(), FsType::Ext4, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nodev") && msg.contains("ext4"), "{msg}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
