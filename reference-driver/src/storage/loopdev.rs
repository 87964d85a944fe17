//! Loop devices via `losetup`, and the one ioctl that says what a device is bound to.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::{Result, StorageError, run};

const ATTACH_ATTEMPTS: u32 = 5;

/// Serializes attaches within this process; other processes can still race,
/// which the retry in `attach` covers.
static ATTACH_LOCK: Mutex<()> = Mutex::new(());

/// Attaches `image` to a free loop device and returns /dev/loopN. Retries when
/// a concurrent attach grabbed the device losetup picked.
pub fn attach(image: &Path) -> Result<PathBuf> {
    let _guard = ATTACH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut attempt = 1;
    loop {
        let args = [
            "--find".as_ref(),
            "--show".as_ref(),
            "--direct-io=off".as_ref(),
            image.as_os_str(),
        ];
        match run("losetup", args) {
            Ok(out) => {
                let dev = out.trim();
                if dev.is_empty() {
                    return Err(StorageError::Command {
                        command: format!("losetup --find --show {}", image.display()),
                        stderr: "no device name printed".into(),
                    });
                }
                return Ok(PathBuf::from(dev));
            }
            Err(StorageError::Command { stderr, .. })
                if attempt < ATTACH_ATTEMPTS && is_attach_race(&stderr) =>
            {
                tracing::debug!(image = %image.display(), attempt, %stderr, "loop attach raced, retrying");
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The free device losetup found was taken before it could bind it.
fn is_attach_race(stderr: &str) -> bool {
    stderr.contains("Device or resource busy") || stderr.contains("failed to set up loop device")
}

/// Detaches (`losetup -d`). Not-attached / missing device → Ok. If the device
/// is still in use (mounted), the kernel detaches it once the last user goes.
pub fn detach(device: &Path) -> Result<()> {
    if !device.exists() {
        return Ok(());
    }
    match run("losetup", ["-d".as_ref(), device.as_os_str()]) {
        Err(StorageError::Command { stderr, .. })
            if stderr.contains("No such device or address") =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}

/// Loop devices currently backed by `image`. losetup matches the backing file
/// by device and inode, so any path spelling of the image finds them.
pub fn attached_devices(image: &Path) -> Result<Vec<PathBuf>> {
    let image = match image.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("canonicalize", image, e)),
    };
    let args = [
        "--list".as_ref(),
        "--noheadings".as_ref(),
        "--output".as_ref(),
        "NAME".as_ref(),
        "--associated".as_ref(),
        image.as_os_str(),
    ];
    let out = run("losetup", args)?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Re-reads the backing file size after the image grew (`losetup -c <device>`).
pub fn refresh_capacity(device: &Path) -> Result<()> {
    run("losetup", ["-c".as_ref(), device.as_os_str()]).map(drop)
}

/// Size of a block device (or regular file) in bytes; seeking to the end of a
/// block device reports its size without needing an ioctl.
pub fn device_size(device: &Path) -> Result<u64> {
    let mut f = File::open(device).map_err(|e| StorageError::io("open", device, e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| StorageError::io("seek", device, e))
}

/// `struct loop_info64` of linux/loop.h (kernel ABI, 232 bytes): what LOOP_GET_STATUS64 fills.
#[repr(C)]
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

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);

/// `LOOP_GET_STATUS64` from linux/loop.h.
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// The backing file of an open loop device as (st_dev, st_ino), from the kernel's own record
/// (LOOP_GET_STATUS64) rather than the `backing_file` name, which can be renamed or replaced.
/// Not a loop device → ENOTTY/EINVAL; an unbound loop device → ENXIO.
pub fn backing_file_id(device: std::os::fd::BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero bytes are a valid LoopInfo64 (integers and byte arrays only).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the call's duration, and `info` is a writable loop_info64
    // of exactly the size the kernel writes.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_GET_STATUS64, &mut info) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((info.lo_device, info.lo_inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::image;
    use crate::storage::test_util::{LoopGuard, skip_reason};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn race_detection() {
        assert!(is_attach_race(
            "losetup: /x.img: failed to set up loop device: Device or resource busy"
        ));
        assert!(!is_attach_race(
            "losetup: /x.img: failed to open: No such file"
        ));
    }

    #[test]
    fn detach_tolerates_missing_device() {
        detach(Path::new("/dev/loop-does-not-exist")).unwrap();
    }

    #[test]
    fn attach_list_detach() {
        if let Some(why) = skip_reason(&["losetup"]) {
            eprintln!("skipping attach_list_detach: {why}");
            return;
        }
        let td = tempfile::tempdir().unwrap();
        let img = td.path().join("a.img");
        image::create_sparse(&img, 16 * MIB).unwrap();
        assert!(attached_devices(&img).unwrap().is_empty());

        // Two concurrent attaches of different images must get different devices.
        let img2 = td.path().join("b.img");
        image::create_sparse(&img2, 8 * MIB).unwrap();
        let h = std::thread::spawn({
            let img2 = img2.clone();
            move || attach(&img2).map(LoopGuard)
        });
        let dev = LoopGuard(attach(&img).unwrap());
        let dev2 = h.join().unwrap().unwrap();
        assert_ne!(dev.0, dev2.0);

        // A non-canonical spelling of the image path still finds the device.
        let odd = td.path().join(".").join("a.img");
        assert_eq!(attached_devices(&odd).unwrap(), vec![dev.0.clone()]);
        assert_eq!(device_size(&dev.0).unwrap(), 16 * MIB);
        assert_eq!(device_size(&dev2.0).unwrap(), 8 * MIB);
        // The kernel's record of the backing file is the image's device and inode.
        {
            use std::os::fd::AsFd;
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&img).unwrap();
            let opened = File::open(&dev.0).unwrap();
            let (lo_dev, lo_ino) = backing_file_id(opened.as_fd()).unwrap();
            assert_eq!(lo_ino, meta.ino());
            let split = |d: u64| (rustix::fs::major(d), rustix::fs::minor(d));
            assert_eq!(split(lo_dev), split(meta.dev()));
            let not_loop = File::open(&img).unwrap();
            assert!(backing_file_id(not_loop.as_fd()).is_err());
        }

        let path = dev.0.clone();
        detach(&path).unwrap();
        std::mem::forget(dev);
        assert!(attached_devices(&img).unwrap().is_empty());
        // Detaching `path` again is not tested: a parallel test may own it by now.
        assert!(
            attached_devices(&td.path().join("missing.img"))
                .unwrap()
                .is_empty()
        );
    }
}
