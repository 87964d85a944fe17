//! Loop devices of the run: those whose backing file (as /sys/block/loopN/loop/backing_file
//! shows it) is at or below the run directory, proven by device and inode: the file that path
//! names now must be the one the device is bound to (LOOP_GET_STATUS64), or, for a backing file
//! already deleted, the device's file must have lived on the run directory's filesystem. A name
//! alone is never enough. Before a device is detached, every mount of it — anywhere, since a
//! driver may mount it outside the run directory — is unmounted, or the kernel would only mark
//! it for detaching once released.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::mountinfo::{self, Mount};
use super::mounts;
use super::options::SweepOptions;
use super::paths::{RunDir, shown_path};
use super::report::{DetachedLoop, SweepReport};

const SYS_BLOCK: &str = "/sys/block";

/// `LOOP_CLR_FD` and `LOOP_GET_STATUS64` from linux/loop.h (not in the libc crate).
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// `struct loop_info64` from linux/loop.h: only the first two fields are read.
#[repr(C)]
#[allow(dead_code)] // the layout must be whole for the kernel to fill it
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// A loop device bound to a file of the run.
#[derive(Clone, Debug)]
pub(crate) struct LoopDevice {
    /// `loopN`, its name under /sys/block.
    name: String,
    device: PathBuf,
    backing: PathBuf,
    /// The file it is bound to: its identity, which (unlike the backing path, which turns into
    /// `/` when the file's mount is detached) stays the same until the device is unbound.
    bound: Bound,
    /// `major:minor` of the device and of its partitions, to find their mounts.
    numbers: Vec<String>,
}

impl LoopDevice {
    /// Whether `m` mounts this device or one of its partitions.
    fn is_mounted_by(&self, m: &Mount) -> bool {
        self.numbers.contains(&m.dev) || Path::new(&m.source) == self.device
    }

    /// Leftover lines: the device itself and each place it is still mounted.
    pub(crate) fn leftover_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "loop device {} of the run is still attached to {}",
            self.device.display(),
            self.backing.display()
        )];
        if let Ok(table) = mountinfo::read() {
            for m in table.iter().filter(|m| self.is_mounted_by(m)) {
                lines.push(format!(
                    "loop device {} is still mounted at {}",
                    self.device.display(),
                    m.mount_point.display()
                ));
            }
        }
        lines
    }
}

/// Every loop device bound to a file of the run, then those stacked on one of them; a device
/// whose backing path names the run directory but cannot be proven to be bound to one of its
/// files is left alone and reported in `problems`. In discovery order: a stacked device comes
/// after the one below it.
pub(crate) fn find(run: &RunDir, problems: &mut Vec<String>) -> Vec<LoopDevice> {
    let Ok(entries) = std::fs::read_dir(SYS_BLOCK) else {
        return Vec::new();
    };
    let mut all: Vec<LoopDevice> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("loop"))
        .filter_map(|name| describe(&name))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let mut found = Vec::new();
    let mut unproven = Vec::new();
    for device in all.iter().filter(|d| run.contains(&d.backing)) {
        match proven(device, run) {
            Ok(()) => found.push(device.clone()),
            Err(why) => unproven.push((device, why)),
        }
    }
    add_stacked(&all, &mut found);
    for (device, why) in unproven {
        if !found.iter().any(|f| f.name == device.name) {
            problems.push(format!(
                "loop device {} names {} but is left alone: {why}",
                device.device.display(),
                device.backing.display()
            ));
        }
    }
    found
}

/// Adds the loop devices bound to the device node of one in `found` (by its device number):
/// the kubelet binds one over each block volume it maps, which keeps ours open. Its backing
/// path is a bind mount below the run directory, and only `/` once that is unmounted.
fn add_stacked(all: &[LoopDevice], found: &mut Vec<LoopDevice>) {
    for _ in 0..all.len() {
        let more: Vec<LoopDevice> = all
            .iter()
            .filter(|d| !found.iter().any(|f| f.name == d.name))
            .filter(|d| {
                let rdev = d.bound.rdev;
                let number = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
                rdev != 0 && found.iter().any(|f| f.numbers.contains(&number))
            })
            .cloned()
            .collect();
        if more.is_empty() {
            return;
        }
        found.extend(more);
    }
}

/// Whether the device is bound to a file of the run, by device and inode.
fn proven(device: &LoopDevice, run: &RunDir) -> Result<(), String> {
    let Bound { dev, ino, .. } = device.bound;
    match std::fs::symlink_metadata(&device.backing) {
        Ok(meta) if (meta.dev(), meta.ino()) == (dev, ino) => Ok(()),
        Ok(_) => Err("that path names another file now".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Deleted while bound: only its filesystem is left to compare.
            let run_dev = std::fs::metadata(run.path()).map(|m| m.dev());
            if run_dev.is_ok_and(|d| d == dev) {
                Ok(())
            } else {
                Err("its file is deleted and was not on the run directory's filesystem".into())
            }
        }
        Err(e) => Err(format!("stat the backing file: {e}")),
    }
}

/// The file a loop device is bound to, as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bound {
    /// `st_dev` and `st_ino` of the file.
    dev: u64,
    ino: u64,
    /// `st_rdev` when the file is a device node, else 0.
    rdev: u64,
}

fn bound_file(device: &Path) -> Result<Bound, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| format!("open: {e}"))?;
    // SAFETY: all-zero is a valid LoopInfo64 (integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one loop_info64 into `info`, which lives for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info) };
    if rc != 0 {
        return Err(format!(
            "LOOP_GET_STATUS64: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Bound {
        dev: info.lo_device,
        ino: info.lo_inode,
        rdev: info.lo_rdevice,
    })
}

/// The device `loopN` if it is bound to a file.
fn describe(name: &str) -> Option<LoopDevice> {
    let sys = Path::new(SYS_BLOCK).join(name);
    let backing = backing_file(name)?;
    let device = Path::new("/dev").join(name);
    let bound = bound_file(&device).ok()?;
    let mut numbers = vec![read_trimmed(&sys.join("dev"))?];
    // Partitions appear as /sys/block/loopN/loopNpM, each with its own dev file.
    if let Ok(entries) = std::fs::read_dir(&sys) {
        for entry in entries.flatten() {
            if entry.file_name().as_bytes().starts_with(name.as_bytes()) {
                numbers.extend(read_trimmed(&entry.path().join("dev")));
            }
        }
    }
    Some(LoopDevice {
        name: name.to_string(),
        device,
        backing,
        bound,
        numbers,
    })
}

fn backing_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(SYS_BLOCK).join(name).join("loop/backing_file");
    let bytes = std::fs::read(path).ok()?;
    Some(shown_path(OsStr::from_bytes(&bytes)))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Unmounts and detaches each device, reporting what worked and what did not.
pub(crate) fn detach_all(
    devices: Vec<LoopDevice>,
    options: &SweepOptions,
    report: &mut SweepReport,
) {
    // Stacked devices first: each holds the one below it open.
    for device in devices.into_iter().rev() {
        if !still_bound(&device) {
            continue; // already detached, or rebound to something else since we looked
        }
        mounts::unmount_all(|m| device.is_mounted_by(m), report);
        match detach(&device, options) {
            Ok(()) => report.detached.push(DetachedLoop {
                device: device.device.clone(),
                backing_file: device.backing.clone(),
            }),
            Err(reason) => report.failed.push(format!(
                "detach loop device {} ({}): {reason}",
                device.device.display(),
                device.backing.display()
            )),
        }
    }
}

/// LOOP_CLR_FD, then a bounded wait for the binding to disappear from sysfs (the kernel defers
/// it while the device is still open elsewhere).
fn detach(device: &LoopDevice, options: &SweepOptions) -> Result<(), String> {
    clear_fd(&device.device)?;
    let deadline = Instant::now() + options.detach_wait;
    loop {
        if !still_bound(device) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "still attached after {:?}: the device is held open elsewhere",
                options.detach_wait
            ));
        }
        std::thread::sleep(options.poll);
    }
}

/// Whether the device is still bound to the same file.
fn still_bound(device: &LoopDevice) -> bool {
    bound_file(&device.device).is_ok_and(|bound| bound == device.bound)
}

fn clear_fd(device: &Path) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| format!("open: {e}"))?;
    // SAFETY: LOOP_CLR_FD takes no argument pointer; the fd is open for the whole call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENXIO) => Ok(()), // not bound any more
        _ => Err(format!("LOOP_CLR_FD: {error}")),
    }
}
