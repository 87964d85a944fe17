//! What the host shows of a volume: loop devices bound to its image (the kernel's own record of
//! the backing file's device and inode, not its name), the mounts of those devices (from
//! `/proc/self/mountinfo`), and lexical path normalisation. The node code unmounts or detaches
//! only what these functions prove belongs to one of this driver's images.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::storage::{self, Result, StorageError};

/// A device number as (major, minor).
pub(super) type DevNum = (u32, u32);

/// A file by identity: the device it lives on and its inode. Hard links share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct FileId {
    pub dev: DevNum,
    pub ino: u64,
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.dev.0, self.dev.1, self.ino)
    }
}

fn split(dev: u64) -> DevNum {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

pub(super) fn file_id(path: &Path) -> Result<FileId> {
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io("stat", path, e))?;
    Ok(FileId {
        dev: split(meta.dev()),
        ino: meta.ino(),
    })
}

/// The kernel encodes `lo_device` with `huge_encode_dev` (the "new" dev_t layout).
fn decode_kernel_dev(dev: u64) -> DevNum {
    (
        ((dev & 0xfff00) >> 8) as u32,
        ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32,
    )
}

/// What the loop device at `device` is bound to: `None` if it is unbound, missing, or not a
/// loop device at all.
pub(super) fn binding(device: &Path) -> Result<Option<FileId>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(device)
    {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => {
            return Ok(None);
        }
        Err(e) => return Err(StorageError::io("open", device, e)),
    };
    if !file
        .metadata()
        .map_err(|e| StorageError::io("stat", device, e))?
        .file_type()
        .is_block_device()
    {
        return Ok(None);
    }
    Ok(binding_of(&file))
}

/// Unbound (ENXIO) and non-loop (ENOTTY) devices fail the ioctl and mean "no binding".
fn binding_of(file: &File) -> Option<FileId> {
    let (dev, ino) = storage::loopdev::backing_file_id(file.as_fd()).ok()?;
    Some(FileId {
        dev: decode_kernel_dev(dev),
        ino,
    })
}

/// `st_rdev` of a device node.
pub(super) fn rdev(device: &Path) -> Result<DevNum> {
    let meta = std::fs::metadata(device).map_err(|e| StorageError::io("stat", device, e))?;
    Ok(split(meta.rdev()))
}

/// A loop device as the kernel shows it.
#[derive(Clone, Debug)]
pub(super) struct LoopDevice {
    pub path: PathBuf,
    pub rdev: DevNum,
    pub backing: FileId,
    /// The sysfs `backing_file` text (ends in " (deleted)" once the image was unlinked).
    pub backing_name: String,
}

/// Every bound loop device on the machine (from /sys/block, then the kernel's record of each).
pub(super) fn loop_devices() -> Result<Vec<LoopDevice>> {
    let sys = Path::new("/sys/block");
    let entries = std::fs::read_dir(sys).map_err(|e| StorageError::io("list", sys, e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("loop")) else {
            continue;
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = Path::new("/dev").join(&name);
        let (Ok(Some(backing)), Ok(rdev)) = (binding(&path), rdev(&path)) else {
            continue;
        };
        let backing_name = std::fs::read(entry.path().join("loop/backing_file"))
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
            .unwrap_or_default();
        found.push(LoopDevice {
            path,
            rdev,
            backing,
            backing_name,
        });
    }
    Ok(found)
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug)]
pub(super) struct MountEntry {
    pub dev: DevNum,
    /// The mount's root inside its filesystem (`/loop3` for a bind of /dev/loop3).
    pub root: PathBuf,
    pub mount_point: PathBuf,
}

pub(super) fn mounts() -> Result<Vec<MountEntry>> {
    let path = Path::new("/proc/self/mountinfo");
    let info = std::fs::read(path).map_err(|e| StorageError::io("read", path, e))?;
    Ok(parse_mountinfo(&info))
}

fn parse_mountinfo(info: &[u8]) -> Vec<MountEntry> {
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dev = std::str::from_utf8(fields.get(2)?).ok()?;
            let (major, minor) = dev.split_once(':')?;
            Some(MountEntry {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                root: unescaped(fields.get(3)?),
                mount_point: unescaped(fields.get(4)?),
            })
        })
        .collect()
}

/// A mountinfo path field, its octal escapes decoded.
fn unescaped(field: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&storage::mount::unescape(field)))
}

/// How mountinfo spells `path`: symlinks resolved where the path exists.
pub(super) fn mount_spelling(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| normalise(path))
}

/// The topmost mount at `path`, if any (mountinfo lists stacked mounts in mount order).
pub(super) fn top_mount_at<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let spelled = mount_spelling(path);
    mounts.iter().rev().find(|m| m.mount_point == spelled)
}

/// True if `entry` (mounted at `path`) shows the device `rdev`: a filesystem on it, a bind of a
/// directory of that filesystem, or a bind of the device node itself (block publish).
pub(super) fn mount_shows(entry: &MountEntry, path: &Path, rdev: DevNum) -> bool {
    if entry.dev == rdev {
        return true;
    }
    std::fs::metadata(path)
        .is_ok_and(|m| m.file_type().is_block_device() && split(m.rdev()) == rdev)
}

/// Lexical normalisation: `.` dropped, `a/../b` → `b`, repeated slashes collapsed; symlinks
/// are not followed (the CO's spelling of a path is what it asks about).
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_lexically() {
        let n = |p: &str| normalise(Path::new(p));
        assert_eq!(n("/a/b/../c"), PathBuf::from("/a/c"));
        assert_eq!(n("/a/./b//c/"), PathBuf::from("/a/b/c"));
        assert_eq!(n("/../a"), PathBuf::from("/a"));
        assert_eq!(n("/a/b/../../.."), PathBuf::from("/"));
    }

    #[test]
    fn parses_device_root_and_mount_point() {
        let info = b"36 35 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw\n\
                     37 35 0:5 /loop3 /t/blk rw - devtmpfs udev rw\n";
        let m = parse_mountinfo(info);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (7, 3));
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].root, PathBuf::from("/loop3"));
        assert_eq!(top_mount_at(&m, Path::new("/t/blk")).unwrap().dev, (0, 5));
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(decode_kernel_dev((8 << 8) | 1), (8, 1));
        assert_eq!(
            decode_kernel_dev((259 << 8) | 0x12 | (0x300 << 12)),
            (259, 0x312)
        );
    }
}
