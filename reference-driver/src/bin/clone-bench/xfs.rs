//! The XFS loop-mount guard for the `-xfs-reflink` scenarios.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use crate::GIB;
use crate::host::{command, loops_backed_under, mounts_under};

/// A 24 GiB sparse XFS image with reflink, loop-mounted at `<work>/xfs`; undone on drop.
pub struct XfsLoop {
    image: PathBuf,
    pub mount: PathBuf,
    device: Option<PathBuf>,
    mounted: bool,
}

impl XfsLoop {
    pub fn setup(work: &Path) -> Result<XfsLoop> {
        let (image, mount) = (work.join("xfs.img"), work.join("xfs"));
        // Checked before the guard exists, so its Drop never removes an earlier run's files.
        let stale = image.exists() || !mounts_under(&mount)?.is_empty();
        ensure!(
            !stale,
            "{} or its mount is left from an earlier run",
            image.display()
        );
        let mut xfs = XfsLoop {
            image,
            mount,
            device: None,
            mounted: false,
        };
        // Each step records what it did, so Drop undoes exactly that if a later step fails.
        std::fs::File::create_new(&xfs.image)?.set_len(24 * GIB)?;
        command("mkfs.xfs", &["-q", "-m", "reflink=1"], &[&xfs.image])?;
        let device = command("losetup", &["--find", "--show"], &[&xfs.image])?;
        let device = xfs.device.insert(PathBuf::from(device.trim())).clone();
        std::fs::create_dir_all(&xfs.mount)?;
        command("mount", &[], &[&device, &xfs.mount])?;
        xfs.mounted = true;
        say!("xfs (reflink=1) on {} mounted", device.display());
        Ok(xfs)
    }
}

impl Drop for XfsLoop {
    fn drop(&mut self) {
        let report = |what: &str, r: Result<String>| {
            if let Err(e) = r {
                say!("cleanup: {what}: {e:#}");
            }
        };
        if self.mounted {
            // Normally nothing: a failed session may leave mounts or loop devices inside.
            let inner = mounts_under(&self.mount).unwrap_or_default();
            for m in inner.iter().rev().filter(|m| **m != self.mount) {
                report("umount", command("umount", &[], &[m]));
            }
            for dev in loops_backed_under(&self.mount) {
                report("losetup -d", command("losetup", &["-d"], &[&dev]));
            }
            report("umount xfs", command("umount", &[], &[&self.mount]));
        }
        if let Some(device) = &self.device {
            report("losetup -d", command("losetup", &["-d"], &[device]));
        }
        let _ = std::fs::remove_dir(&self.mount);
        if let Err(e) = std::fs::remove_file(&self.image) {
            say!("cleanup: remove {}: {e}", self.image.display());
        }
    }
}
