//! A small ext4 of the test's own, loop-mounted, that holds the node side of a test (staging
//! and publish directories). A driver that FIFREEZEs a path that is no longer its volume's
//! mount freezes the filesystem holding that path: with the node dirs here, that is this
//! scratch filesystem, never the machine's root. A watcher thread tries FITHAW on it (and on
//! the filesystem of the test's temp dir) every few milliseconds, so a regression cannot hang
//! the test machine, and records every thaw that found a filesystem frozen: the test fails on
//! any such record.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// _IOWR('X', 120, int) from linux/fs.h.
const FITHAW: libc::c_ulong = 0xC004_5878;
const SCRATCH_MIB: u64 = 64;
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// Deadline of every external command run here.
const COMMAND_SECS: &str = "30";

pub struct ScratchFs {
    mount_point: PathBuf,
    device: String,
    watcher: Option<Watcher>,
    // Last: removed after the unmount in `drop`.
    _dir: tempfile::TempDir,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    thaws: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl ScratchFs {
    /// A fresh, mounted scratch filesystem, watched together with the filesystems holding
    /// `also_watch`; `None` where this process cannot make one (not root, no losetup/mkfs).
    pub fn new(also_watch: &[&Path]) -> Option<ScratchFs> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("scratch-fs-")
            .tempdir()
            .ok()?;
        let image = dir.path().join("scratch.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).ok()?;
        File::create(&image)
            .and_then(|f| f.set_len(SCRATCH_MIB << 20))
            .ok()?;
        run("mkfs.ext4", &["-q", "-F", path_str(&image)])?;
        let device = run("losetup", &["--find", "--show", path_str(&image)])?;
        let device = device.trim().to_string();
        if let Err(e) = rustix::mount::mount(
            &device,
            &mount_point,
            "ext4",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        ) {
            let _ = run("losetup", &["-d", &device]);
            panic!(
                "mount scratch ext4 {device} on {}: {e}",
                mount_point.display()
            );
        }
        let mut watched = vec![mount_point.clone()];
        watched.extend(also_watch.iter().map(|p| p.to_path_buf()));
        Some(ScratchFs {
            watcher: Some(Watcher::start(&watched)),
            mount_point,
            device,
            _dir: dir,
        })
    }

    /// Where the test's node directories go.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Every time a watched filesystem was found frozen (and thawed) so far.
    pub fn thaws(&self) -> Vec<String> {
        self.watcher
            .as_ref()
            .map(|w| w.thaws.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Panics if any watched filesystem was ever found frozen.
    pub fn assert_never_frozen(&self, step: &str) {
        let thaws = self.thaws();
        assert!(
            thaws.is_empty(),
            "{step}: a filesystem that is not a volume's own was frozen (thawed by the test): {thaws:?}"
        );
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let thaws = self.thaws();
        if let Some(mut watcher) = self.watcher.take() {
            watcher.stop.store(true, Ordering::SeqCst);
            if let Some(thread) = watcher.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = rustix::mount::unmount(&self.mount_point, rustix::mount::UnmountFlags::DETACH);
        let _ = run("losetup", &["-d", &self.device]);
        if !thaws.is_empty() && !std::thread::panicking() {
            panic!(
                "a filesystem that is not a volume's own was frozen (thawed by the test): {thaws:?}"
            );
        }
    }
}

impl Watcher {
    fn start(paths: &[PathBuf]) -> Watcher {
        let files: Vec<(PathBuf, File)> = paths
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display())),
                )
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thaws = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, thaws) = (stop.clone(), thaws.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    for (path, file) in &files {
                        // SAFETY: the fd is open and ours; FITHAW ignores its argument.
                        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FITHAW, 0) };
                        if rc == 0 {
                            let line =
                                format!("{} frozen at +{:?}", path.display(), started.elapsed());
                            thaws.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                        }
                    }
                    std::thread::sleep(WATCH_EVERY);
                }
            })
        };
        Watcher {
            stop,
            thaws,
            thread: Some(thread),
        }
    }
}

/// Runs `program` under `timeout`; its stdout, or `None` if it is missing or failed.
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .args(["-k", "5", COMMAND_SECS, program])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
