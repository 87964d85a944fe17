//! Deliberate non-conformance, for proving that every conformance case can fail. Each fault is
//! a small, named, realistic way to get clones wrong; `--fault NAME` (repeatable) turns one on.
//! They are compiled in (no cargo feature) so the mutation matrix tests the very binary that
//! ships; with no `--fault` none of this code runs. A fault breaks the driver, never the host:
//! each one's effect on the machine is reviewed in docs/reference-driver.md.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::storage::{self, FsType, StorageError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Fault {
    /// A copy (clone or restore) creates an empty volume: no data copied.
    CloneEmpty,
    /// A copy holds only the first MiB of the source.
    CloneFirstMibOnly,
    /// A copy stops at the source's first hole, losing every data extent after it.
    CloneStopsAtFirstHole,
    /// A mount copy loses file modes (all 0644) and symlinks.
    CloneDropsModesAndSymlinks,
    /// A mount copy made file by file without `-a`: owners become root, mtimes become now,
    /// xattrs and hard links are lost (each link a separate file); modes kept.
    CloneCopiesLikeCpR,
    /// A mount copy re-owns every file to root:root.
    CloneReownsFiles,
    /// A clone shares its source's image (a hard link): writes leak both ways.
    CloneSharesSource,
    /// A copy answers before its data is in place; the data lands seconds later.
    CloneReturnsBeforeDurable,
    /// Copies of an in-use mount volume only syncfs the source and copy while writers
    /// continue: a torn filesystem. They copy at 16 MiB/s, as long as a real volume's would.
    CloneWithoutFreeze,
    /// NodePublishVolume with readonly binds the volume read-write.
    ReadonlyIgnored,
    /// A clone cannot be staged while its source is staged (it keeps the source's filesystem
    /// identity, as an xfs copy keeps its UUID).
    CloneUnmountableBesideSource,
    /// Deleting a volume zeroes the data of its clones.
    DeleteSourceDeletesClones,
    /// Deleting a clone zeroes the data of its source.
    DeleteCloneDamagesSource,
    /// Deleting a snapshot zeroes the data of the volumes restored from it.
    DeleteSnapshotDamagesRestores,
    /// Deleting a volume deletes its snapshots.
    DeleteVolumeDeletesSnapshots,
    /// Responses never carry content_source.
    OmitContentSource,
    /// Only replays of an existing volume lack content_source.
    OmitContentSourceOnReplay,
    /// content_source names the new volume instead of the source.
    WrongSourceIdEchoed,
    /// A replay of an identical request creates a second volume.
    ReplayCreatesSecondVolume,
    /// A replay answers the same volume with another capacity_bytes and no volume_context.
    ReplayChangesVolume,
    /// Same name with another (or no) source returns the existing volume, not ALREADY_EXISTS.
    ConflictIgnoresSource,
    /// Identical concurrent requests race and each creates a volume.
    ConcurrentCreatesRace,
    /// A missing source is INTERNAL instead of NOT_FOUND.
    MissingSourceInternal,
    /// A malformed content source (unset type, empty id) is ignored: an empty volume is made.
    MalformedSourceAccepted,
    /// A copy smaller than its source is made (truncated) instead of OUT_OF_RANGE.
    SmallerThanSourceAccepted,
    /// A copy whose limit_bytes is below its source is made at the source's size anyway,
    /// exceeding the limit, instead of OUT_OF_RANGE.
    LimitBelowSourceIgnored,
    /// capacity_bytes of a copy is reported as half the real size.
    CapacityReportedSmaller,
    /// A larger copy reports the larger capacity but keeps the source's size.
    LargerCloneNotGrown,
    /// A larger block copy grows its image but fills the grown tail with non-zero bytes (a
    /// reused, dirty extent).
    LargerCloneGarbageTail,
    /// A larger restore reports the larger capacity but keeps the snapshot's size.
    RestoreNotGrown,
    /// ControllerExpandVolume reports the new size without growing anything.
    ExpandDoesNotGrow,
    /// Block-to-mount and mount-to-block copies are accepted.
    AccessTypeMismatchAccepted,
    /// CLONE_VOLUME is advertised but volume sources answer UNIMPLEMENTED.
    CloneUnimplemented,
    /// CLONE_VOLUME is never advertised, yet volume sources are honoured.
    CloneWithoutCapability,
    /// A refused copy (e.g. OUT_OF_RANGE) leaves a half-made volume under the request's name.
    FailedCloneLeaks,
    /// ListVolumes and ControllerGetVolume do not show volumes that have a content source.
    ListingHidesClones,
    /// GetPluginInfo reports a name that is not in domain notation.
    BadPluginName,
    /// Probe answers ready = false.
    ProbeNotReady,
    /// STAGE_UNSTAGE_VOLUME is not advertised although staging is required.
    HideStageUnstage,
    /// Turns topology on (as `--variant=topology`) and reports clones and restores as
    /// accessible only from another zone than their source and the requested node.
    CloneInAnotherZone,
    /// Converts access types like `--variant=convert-access-types`, but a converted copy is
    /// made empty (a fresh device or filesystem) instead of carrying the source's content.
    ConvertedCopyEmpty,
    /// Reports topology (NodeGetInfo and volumes, as `--variant=topology`) without
    /// advertising VOLUME_ACCESSIBILITY_CONSTRAINTS.
    TopologyUnadvertised,
}

pub type Faults = BTreeSet<Fault>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

/// The first `len` bytes of `src` into a new sparse file of `src`'s length: a partial copy.
pub fn partial_copy(src: &Path, dst: &Path, len: u64) -> Result<(), StorageError> {
    let mut input = std::fs::File::open(src).map_err(io("open", src))?;
    let total = input.metadata().map_err(io("stat", src))?.len();
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io("create", dst))?;
    output.set_len(total).map_err(io("truncate", dst))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = len.min(total);
    while left > 0 {
        let want = buffer.len().min(left as usize);
        let got = input.read(&mut buffer[..want]).map_err(io("read", src))?;
        if got == 0 {
            break;
        }
        output.write_all(&buffer[..got]).map_err(io("write", dst))?;
        left -= got as u64;
    }
    output.sync_all().map_err(io("fsync", dst))
}

/// Fills `path` from byte `from` to its end with a non-zero pattern, as storage reused without
/// zeroing would hold, and fsyncs.
pub fn dirty_tail(path: &Path, from: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    let len = file.metadata().map_err(io("stat", path))?.len();
    let stale: Vec<u8> = b"stale extent "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let mut offset = from;
    while offset < len {
        let n = (len - offset).min(stale.len() as u64) as usize;
        file.write_all_at(&stale[..n], offset)
            .map_err(io("write", path))?;
        offset += n as u64;
    }
    file.sync_all().map_err(io("fsync", path))
}

/// Bytes per second a `clone-without-freeze` copy moves: a real copy of a real volume takes
/// seconds, while a page-cache copy of our small images takes milliseconds and writers almost
/// never catch it mid-way (unpaced, such copies passed e2fsck every time).
pub const UNFROZEN_COPY_RATE: u64 = 16 << 20;

/// The data extents of `src` into a new `dst` at `bytes_per_sec`, in 1 MiB steps, durable.
pub fn slow_copy(src: &Path, dst: &Path, bytes_per_sec: u64) -> Result<(), StorageError> {
    let result = slow_copy_into(src, dst, bytes_per_sec);
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

fn slow_copy_into(src: &Path, dst: &Path, bytes_per_sec: u64) -> Result<(), StorageError> {
    use rustix::fs::{SeekFrom as At, seek};
    let input = std::fs::File::open(src).map_err(io("open", src))?;
    let total = input.metadata().map_err(io("stat", src))?.len();
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io("create", dst))?;
    output.set_len(total).map_err(io("truncate", dst))?;
    let mut buffer = vec![0u8; 1 << 20];
    let (started, mut copied, mut pos) = (Instant::now(), 0u64, 0u64);
    while pos < total {
        let start = match seek(&input, At::Data(pos)) {
            Ok(offset) => offset,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io("seek", src)(e.into())),
        };
        let end = seek(&input, At::Hole(start)).map_or(total, |end| end.min(total));
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(buffer.len() as u64) as usize;
            input
                .read_exact_at(&mut buffer[..n], offset)
                .map_err(io("read", src))?;
            output
                .write_all_at(&buffer[..n], offset)
                .map_err(io("write", dst))?;
            offset += n as u64;
            copied += n as u64;
            // Keep to the rate: sleep for however far the copy is ahead of it.
            let due = Duration::from_secs_f64(copied as f64 / bytes_per_sec as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        pos = end.max(start + 1);
    }
    output.sync_all().map_err(io("fsync", dst))?;
    storage::fsync_parent(dst)
}

/// Offset of the first hole in `path` (its length if it has none).
pub fn first_hole(path: &Path) -> Result<u64, StorageError> {
    let mut file = std::fs::File::open(path).map_err(io("open", path))?;
    let hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0))
        .map_err(|e| io("seek", path)(e.into()))?;
    file.seek(SeekFrom::Start(0)).map_err(io("seek", path))?;
    Ok(hole)
}

/// Replaces a volume image with zeros of the same length (its data is gone). A new file is
/// renamed over the old one rather than zeroing it in place: a loop device, and a filesystem
/// mounted from it, keep the old file whole, so the damage shows at the next stage and never
/// under a live mount (where the kernel would meet a filesystem changing beneath it).
pub fn zero_image(path: &Path) -> Result<(), StorageError> {
    let len = std::fs::metadata(path).map_err(io("stat", path))?.len();
    let fresh = path.with_extension("zeroed");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&fresh)
        .map_err(io("create", &fresh))?;
    file.set_len(len).map_err(io("truncate", &fresh))?;
    file.sync_all().map_err(io("fsync", &fresh))?;
    std::fs::rename(&fresh, path).map_err(io("rename", &fresh))?;
    storage::fsync_parent(path)
}

/// What a fault does to a mounted copy: each is what some naive file-level copy loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Symlinks removed, every other non-directory mode 0644.
    DropModesAndSymlinks,
    /// As `cp -r` run as root makes it: everything root's, mtimes now, no xattrs, each name
    /// of a hard-linked file a file of its own; modes kept.
    CopyLikeCpR,
    /// Everything root's; modes kept (chown alone clears setuid and setgid: they are put back).
    Reown,
}

/// Mounts a copied image on its own loop device under `scratch`, damages the filesystem in
/// it, and unmounts and detaches again on every path.
pub fn damage_mounted_copy(
    image: &Path,
    fs: FsType,
    scratch: &Path,
    damage: Damage,
) -> Result<(), StorageError> {
    std::fs::create_dir_all(scratch).map_err(io("create", scratch))?;
    let device = storage::loopdev::attach(image)?;
    let result = storage::mount::mount_filesystem(&device, scratch, fs, false).and_then(|()| {
        let walked = match damage {
            Damage::DropModesAndSymlinks => strip(scratch),
            Damage::CopyLikeCpR | Damage::Reown => rewrite(scratch, damage, true),
        };
        let unmounted = storage::mount::unmount(scratch);
        walked.and(unmounted)
    });
    let detached = storage::loopdev::detach(&device);
    let _ = std::fs::remove_dir(scratch);
    result.and(detached)
}

fn strip(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        let kind = std::fs::symlink_metadata(&path)
            .map_err(io("stat", &path))?
            .file_type();
        if kind.is_symlink() {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        } else if kind.is_dir() {
            strip(&path)?;
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(io("chmod", &path))?;
        }
    }
    Ok(())
}

/// Depth first, each directory after its contents (which move its mtime). The top-level
/// `lost+found` is mkfs's, not copied data: left alone.
fn rewrite(dir: &Path, damage: Damage, top: bool) -> Result<(), StorageError> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        if top && entry.file_name() == "lost+found" {
            continue;
        }
        let path = entry.path();
        let md = std::fs::symlink_metadata(&path).map_err(io("stat", &path))?;
        if md.is_dir() {
            rewrite(&path, damage, false)?;
        }
        if damage == Damage::CopyLikeCpR && md.is_file() && md.nlink() > 1 {
            separate(&path, md.mode())?;
        }
        reown(&path, &md)?;
        if damage == Damage::CopyLikeCpR {
            drop_user_xattrs(&path)?;
            touch(&path)?;
        }
    }
    Ok(())
}

/// root:root, with the mode put back: chown clears setuid and setgid.
fn reown(path: &Path, md: &std::fs::Metadata) -> Result<(), StorageError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::os::unix::fs::lchown(path, Some(0), Some(0)).map_err(io("chown", path))?;
    if !md.file_type().is_symlink() {
        let mode = std::fs::Permissions::from_mode(md.mode() & 0o7777);
        std::fs::set_permissions(path, mode).map_err(io("chmod", path))?;
    }
    Ok(())
}

/// Replaces one name of a hard-linked file by a copy of its content: a file of its own.
fn separate(path: &Path, mode: u32) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".cp-r");
    let copy = path.with_file_name(name);
    let mut input = std::fs::File::open(path).map_err(io("open", path))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(io("create", &copy))?;
    std::io::copy(&mut input, &mut output).map_err(io("copy", &copy))?;
    output
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io("chmod", &copy))?;
    output.sync_all().map_err(io("fsync", &copy))?;
    std::fs::rename(&copy, path).map_err(io("rename", &copy))
}

fn drop_user_xattrs(path: &Path) -> Result<(), StorageError> {
    let errno = |op| move |e: rustix::io::Errno| io(op, path)(e.into());
    let size = rustix::fs::llistxattr_query(path).map_err(errno("list xattrs"))?;
    let mut names = vec![0u8; size];
    let len = rustix::fs::llistxattr(path, &mut names[..]).map_err(errno("list xattrs"))?;
    for name in names[..len.min(size)].split(|&c| c == 0) {
        if name.starts_with(b"user.") {
            rustix::fs::lremovexattr(path, name).map_err(errno("remove xattr"))?;
        }
    }
    Ok(())
}

/// The mtime (and atime) of now, as a copy made now has.
fn touch(path: &Path) -> Result<(), StorageError> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, utimensat};
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_NOW,
    };
    let times = Timestamps {
        last_access: now,
        last_modification: now,
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io("touch", path)(e.into()))
}
