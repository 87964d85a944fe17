//! Every FIFREEZE the driver issues goes through here, and only onto a filesystem proven to be
//! the staged volume's own.
//!
//! The kernel freezes whatever filesystem holds the path it is given. A staging path whose
//! mount is gone (unmounted behind our back, a stale state record, a restart after a reboot)
//! is a plain directory on the machine's root filesystem; freezing it, then writing the copy
//! to a state dir on that same filesystem, would block every writer on the machine for good.
//! So a freeze happens only after [`prove`]: the staging path is opened
//! `O_DIRECTORY|O_NOFOLLOW`, and that open fd must be on the volume's loop device (`st_dev` of
//! the fd = `st_rdev` of the device), the device must be bound to this volume's image per the
//! kernel's own record (`LOOP_GET_STATUS64`: device and inode of the backing file), and the
//! filesystem must not be one that holds `/`, the state dir or the copy's destination. FIFREEZE
//! and FITHAW are then issued on that same fd: an open fd pins its filesystem, so nothing can
//! swap the mount between the proof and the freeze (re-checking a path just before freezing it
//! by name, as some drivers do, leaves that window open).
//!
//! A freeze outlives the process that made it, so each one has a guardian: a child forked at
//! freeze time that holds the frozen fd and waits on a pipe from the driver. The driver thaws
//! and tells the guardian so when the copy is done; if the deadline passes first the guardian
//! thaws (and the copy is refused, see [`Frozen::release`]); if the driver dies, the kernel
//! closes the pipe and the guardian thaws at once. A timer inside the driver would die with it,
//! and `PR_SET_PDEATHSIG` fires when the forking *thread* exits, which blocking-pool threads do
//! when idle. The guardian leaves the driver's process group and ignores the usual termination
//! signals, so a group kill of the driver does not take it along, and it closes every other fd
//! so it never keeps another guardian's pipe open.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Result, StorageError, loopdev};

// _IOWR('X', 119, int) and _IOWR('X', 120, int) from linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// How long a freeze may last unless configured otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// A staged volume as the state records it.
pub struct Staged<'a> {
    pub volume_id: &'a str,
    pub staging_path: &'a Path,
    pub device: &'a Path,
    pub image: &'a Path,
}

/// The filesystem at a staging path, proven to be the staged volume's own.
pub struct Proven {
    dir: File,
    dev: u64,
    path: PathBuf,
}

fn dev_name(dev: u64) -> String {
    format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev))
}

fn refuse(message: String) -> StorageError {
    StorageError::NotProven(message)
}

/// Proves that `staged.staging_path` is the mount of the volume's own loop device and of no
/// filesystem in `never` (by `st_dev`); otherwise `NotProven`, naming what did not match.
pub fn prove(staged: &Staged<'_>, never: &[&Path]) -> Result<Proven> {
    let path = staged.staging_path;
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            refuse(format!(
                "staging path {} of volume {} cannot be opened as a directory without following links: {e}",
                path.display(),
                staged.volume_id
            ))
        })?;
    let dev = dir
        .metadata()
        .map_err(|e| StorageError::io("stat", path, e))?
        .dev();
    let (_device, rdev) = open_bound_device(staged)?;
    if dev != rdev {
        return Err(refuse(format!(
            "staging path {} is on device {}, not on volume {}'s loop device {} ({})",
            path.display(),
            dev_name(dev),
            staged.volume_id,
            staged.device.display(),
            dev_name(rdev)
        )));
    }
    for other in never {
        let other_dev = std::fs::metadata(other)
            .map_err(|e| refuse(format!("cannot stat {}: {e}", other.display())))?
            .dev();
        if other_dev == dev {
            return Err(refuse(format!(
                "staging path {} is on device {}, the filesystem of {}, which is never frozen",
                path.display(),
                dev_name(dev),
                other.display()
            )));
        }
    }
    Ok(Proven {
        dir,
        dev,
        path: path.to_path_buf(),
    })
}

/// Opens the recorded loop device (no symlinks) and proves the kernel has it bound to the
/// volume's image; returns the open device and its `st_rdev`.
pub fn open_bound_device(staged: &Staged<'_>) -> Result<(File, u64)> {
    let device = staged.device;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| {
            refuse(format!(
                "loop device {} of volume {} cannot be opened: {e}",
                device.display(),
                staged.volume_id
            ))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| StorageError::io("stat", device, e))?;
    if !meta.file_type().is_block_device() {
        return Err(refuse(format!(
            "{} recorded for volume {} is not a block device",
            device.display(),
            staged.volume_id
        )));
    }
    let image =
        std::fs::metadata(staged.image).map_err(|e| StorageError::io("stat", staged.image, e))?;
    let bound = loopdev::backing_file_id(file.as_fd()).map_err(|e| {
        refuse(format!(
            "{} recorded for volume {} is not a bound loop device: {e}",
            device.display(),
            staged.volume_id
        ))
    })?;
    let same_dev = dev_name(bound.0) == dev_name(image.dev());
    if !same_dev || bound.1 != image.ino() {
        return Err(refuse(format!(
            "loop device {} is bound to inode {} on {}, not to volume {}'s image {} (inode {} on {})",
            device.display(),
            bound.1,
            dev_name(bound.0),
            staged.volume_id,
            staged.image.display(),
            image.ino(),
            dev_name(image.dev())
        )));
    }
    Ok((file, meta.rdev()))
}

/// FIFREEZE or FITHAW on `fd`; the kernel ignores the argument.
fn freeze_ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: the fd is open for the call; FIFREEZE/FITHAW read no memory from the argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, 0) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// FITHAW: Ok(true) if it was frozen, Ok(false) if it was not (EINVAL).
fn thaw_fd(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    match freeze_ioctl(fd, FITHAW) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Proven {
    /// syncfs of the proven filesystem (the `clone-without-freeze` fault's only flush).
    pub fn sync(&self) -> Result<()> {
        rustix::fs::syncfs(&self.dir).map_err(|e| StorageError::io("syncfs", &self.path, e.into()))
    }

    /// Thaws a freeze that a dead driver left behind; true if it was frozen.
    pub fn thaw_leftover(&self) -> Result<bool> {
        thaw_fd(self.dir.as_fd()).map_err(|e| StorageError::io("thaw", &self.path, e))
    }

    /// Freezes the proven filesystem for at most `deadline`, guarded (see the module doc).
    /// Freezes of one filesystem by this process queue here: the kernel refuses a second one.
    pub fn freeze(self, deadline: Duration) -> Result<Frozen> {
        let slot = Slot::take(self.dev, deadline * 2 + Duration::from_secs(10), &self.path)?;
        freeze_ioctl(self.dir.as_fd(), FIFREEZE)
            .map_err(|e| StorageError::io("freeze", &self.path, e))?;
        let guardian = match Guardian::spawn(self.dir.as_fd(), deadline) {
            Ok(guardian) => guardian,
            Err(e) => {
                let _ = thaw_fd(self.dir.as_fd());
                return Err(StorageError::io("fork freeze guardian for", &self.path, e));
            }
        };
        tracing::debug!(path = %self.path.display(), pid = guardian.pid, ?deadline, "frozen");
        Ok(Frozen {
            proven: self,
            guardian,
            deadline,
            done: false,
            _slot: slot,
        })
    }
}

/// A frozen filesystem: writers block and its image is consistent until [`Frozen::release`]
/// (or drop) thaws it, or the deadline does.
pub struct Frozen {
    proven: Proven,
    guardian: Guardian,
    deadline: Duration,
    done: bool,
    _slot: Slot,
}

impl Frozen {
    /// Thaws. Err(`FreezeLapsed`) if the freeze was no longer in force (the guardian's
    /// deadline, or another thaw): what was copied under it is not point-in-time.
    pub fn release(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.done = true;
        let thawed = thaw_fd(self.proven.dir.as_fd());
        // If our own thaw failed, the guardian is left to thaw (pipe closed, no dismissal).
        let exit = self.guardian.dismiss(thawed.is_ok());
        let path = &self.proven.path;
        match thawed {
            Ok(true) => Ok(()),
            Ok(false) => Err(StorageError::FreezeLapsed {
                path: path.clone(),
                detail: match exit {
                    Some(EXIT_DEADLINE_THAWED) => {
                        format!("its {:?} deadline passed", self.deadline)
                    }
                    _ => "something else thawed it".into(),
                },
            }),
            Err(e) => Err(StorageError::io("thaw", path, e)),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.finish()
        {
            tracing::error!(path = %self.proven.path.display(), error = %e, "thaw on drop");
        }
    }
}

/// Devices this process has frozen, so a second freeze of one waits instead of failing.
static FROZEN_DEVICES: Mutex<std::collections::BTreeSet<u64>> =
    Mutex::new(std::collections::BTreeSet::new());
static DEVICE_THAWED: Condvar = Condvar::new();

struct Slot(u64);

impl Slot {
    fn take(dev: u64, wait: Duration, path: &Path) -> Result<Slot> {
        let held = FROZEN_DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        let (mut held, waited) = DEVICE_THAWED
            .wait_timeout_while(held, wait, |h| h.contains(&dev))
            .unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() {
            return Err(StorageError::FreezeBusy {
                path: path.to_path_buf(),
            });
        }
        held.insert(dev);
        Ok(Slot(dev))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = FROZEN_DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.0);
        DEVICE_THAWED.notify_all();
    }
}

/// Guardian exit codes: dismissed by the driver (nothing to do), or thawed by it.
const EXIT_DISMISSED: i32 = 0;
const EXIT_DEADLINE_THAWED: i32 = 10;
const EXIT_DEADLINE_NOT_FROZEN: i32 = 11;
const EXIT_ORPHAN_THAWED: i32 = 20;
const EXIT_ORPHAN_NOT_FROZEN: i32 = 21;
/// The byte that dismisses a guardian; EOF without it means the driver is gone.
const DISMISS: u8 = b'd';
/// How long the driver waits for a dismissed guardian to exit before killing it.
const REAP_WITHIN: Duration = Duration::from_secs(5);

struct Guardian {
    pid: libc::pid_t,
    dismiss: Option<OwnedFd>,
}

impl Guardian {
    fn spawn(frozen: BorrowedFd<'_>, deadline: Duration) -> std::io::Result<Guardian> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these fds; nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let until_ms = monotonic_ms() + i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX / 2);
        let fd_limit = open_fd_limit();
        // SAFETY: the child runs only `guardian_main`, which makes async-signal-safe calls on
        // plain integers (no allocation, no locks) and never returns, as required after fork
        // in a multi-threaded process.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => guardian_main(
                frozen.as_raw_fd(),
                read.as_raw_fd(),
                write.as_raw_fd(),
                until_ms,
                fd_limit,
            ),
            pid => Ok(Guardian {
                pid,
                dismiss: Some(write),
            }),
        }
    }

    /// Closes the guardian's pipe, first telling it the driver has thawed when `thawed`
    /// (else it thaws itself), and reaps it; its exit code if it exited.
    fn dismiss(&mut self, thawed: bool) -> Option<i32> {
        if let Some(pipe) = self.dismiss.take()
            && thawed
        {
            // SAFETY: writes one byte from a live local to an fd we own. EPIPE (the guardian
            // already left) is fine: Rust programs ignore SIGPIPE.
            unsafe { libc::write(pipe.as_raw_fd(), (&DISMISS as *const u8).cast(), 1) };
        }
        self.reap()
    }

    fn reap(&self) -> Option<i32> {
        let started = Instant::now();
        loop {
            let mut status: libc::c_int = 0;
            let flags = match started.elapsed() < REAP_WITHIN {
                true => libc::WNOHANG,
                false => {
                    // SAFETY: signals our own child, which has not been reaped (pid still ours).
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    0
                }
            };
            // SAFETY: waits for our own child; `status` is a writable int.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
            if rc == self.pid {
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if rc < 0 {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn monotonic_ms() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a writable timespec; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec * 1000 + now.tv_nsec / 1_000_000
}

fn open_fd_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    match rc {
        0 => limit.rlim_cur.min(1 << 20) as libc::c_int,
        _ => 1 << 16,
    }
}

/// The guardian, in the child of fork: async-signal-safe calls only (see the module doc).
fn guardian_main(
    frozen: libc::c_int,
    read: libc::c_int,
    write: libc::c_int,
    until_ms: i64,
    fd_limit: libc::c_int,
) -> ! {
    // SAFETY: every call below is async-signal-safe and works on integers and stack values.
    unsafe {
        libc::close(write);
        libc::setsid();
        for signal in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        close_all_but(frozen, read, fd_limit);
        let code = loop {
            let left = until_ms - monotonic_ms();
            if left <= 0 {
                break thaw_exit(frozen, EXIT_DEADLINE_THAWED, EXIT_DEADLINE_NOT_FROZEN);
            }
            let mut ready = libc::pollfd {
                fd: read,
                events: libc::POLLIN,
                revents: 0,
            };
            let rc = libc::poll(&mut ready, 1, left.min(i64::from(i32::MAX)) as libc::c_int);
            let interrupted = *libc::__errno_location() == libc::EINTR;
            if rc == 0 || (rc < 0 && interrupted) {
                continue;
            }
            let mut byte = 0u8;
            let n = libc::read(read, (&mut byte as *mut u8).cast(), 1);
            if n == 1 && byte == DISMISS {
                break EXIT_DISMISSED;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break thaw_exit(frozen, EXIT_ORPHAN_THAWED, EXIT_ORPHAN_NOT_FROZEN);
        };
        libc::_exit(code)
    }
}

/// FITHAW from the guardian; which exit code says whether it was still frozen.
///
/// # Safety
/// Async-signal-safe; `fd` is any integer (a bad one just fails the ioctl).
unsafe fn thaw_exit(fd: libc::c_int, thawed: i32, not_frozen: i32) -> i32 {
    // SAFETY: see the function's contract.
    match unsafe { libc::ioctl(fd, FITHAW, 0) } {
        0 => thawed,
        _ => not_frozen,
    }
}

/// Closes every fd but `a` and `b` (close_range, else one by one up to `limit`).
///
/// # Safety
/// Async-signal-safe; only for the forked guardian, which owns nothing else.
unsafe fn close_all_but(a: libc::c_int, b: libc::c_int, limit: libc::c_int) {
    let (low, high) = (a.min(b), a.max(b));
    for (first, last) in [
        (0, low - 1),
        (low + 1, high - 1),
        (high + 1, libc::c_int::MAX),
    ] {
        if first > last {
            continue;
        }
        // SAFETY: close_range on integer bounds; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            for fd in first..=last.min(limit) {
                // SAFETY: closing an integer fd; EBADF for unused ones is fine.
                unsafe { libc::close(fd) };
            }
        }
    }
}

#[cfg(test)]
#[path = "freeze_tests.rs"]
mod tests;
