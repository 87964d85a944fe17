//! Tests of `freeze.rs`. Every freeze here is of a small loop-mounted ext4 the test makes;
//! proofs that must fail are only ever asked to prove, never to freeze.

use super::*;
use crate::storage::test_util::{LoopGuard, MountGuard, skip_reason};
use crate::storage::{FsType, image};
use std::sync::mpsc;

/// A loop-mounted ext4 of the test's own; thawed (in case), unmounted and detached on drop.
struct Scratch {
    image: PathBuf,
    mount: MountGuard,
    device: LoopGuard,
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Option<Scratch> {
        if let Some(why) = skip_reason(&["losetup", "mkfs.ext4"]) {
            eprintln!("skipping: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("vol.img");
        image::create_sparse(&image, 16 << 20).unwrap();
        image::make_filesystem(&image, FsType::Ext4).unwrap();
        let device = LoopGuard(loopdev::attach(&image).unwrap());
        let target = dir.path().join("staging");
        std::fs::create_dir(&target).unwrap();
        crate::storage::mount::mount_filesystem(&device.0, &target, FsType::Ext4, false).unwrap();
        Some(Scratch {
            image,
            mount: MountGuard(target),
            device,
            dir,
        })
    }

    fn staged(&self) -> Staged<'_> {
        Staged {
            volume_id: "vol-test",
            staging_path: &self.mount.0,
            device: &self.device.0,
            image: &self.image,
        }
    }

    fn never(&self) -> [&Path; 2] {
        [Path::new("/"), self.dir.path()]
    }

    /// Whether the scratch filesystem was frozen (a FITHAW that found it frozen thaws it).
    fn was_frozen(&self) -> bool {
        let dir = File::open(&self.mount.0).unwrap();
        thaw_fd(dir.as_fd()).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(dir) = File::open(&self.mount.0) {
            let _ = thaw_fd(dir.as_fd());
        }
    }
}

fn assert_refused(result: Result<Proven>, needle: &str) {
    match result {
        Err(StorageError::NotProven(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        Err(other) => panic!("expected NotProven, got {other:?}"),
        Ok(p) => panic!("proved {}", p.path.display()),
    }
}

#[test]
fn proof_refuses_what_is_not_the_volumes_own_mount() {
    let Some(s) = Scratch::new() else { return };
    let never = s.never();
    // A plain directory: the machine's filesystem, not the loop device.
    let plain = s.dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let staged = Staged {
        staging_path: &plain,
        ..s.staged()
    };
    assert_refused(
        prove(&staged, &never),
        "not on volume vol-test's loop device",
    );
    // A symlink to / is never followed.
    let link = s.dir.path().join("link");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let staged = Staged {
        staging_path: &link,
        ..s.staged()
    };
    assert_refused(prove(&staged, &never), "without following links");
    // The right mount, but the device is bound to another image.
    let other = s.dir.path().join("other.img");
    image::create_sparse(&other, 1 << 20).unwrap();
    let staged = Staged {
        image: &other,
        ..s.staged()
    };
    assert_refused(prove(&staged, &never), "is bound to inode");
    // The right mount recorded with another (unbound, or non-block) device.
    let staged = Staged {
        device: &other,
        ..s.staged()
    };
    assert_refused(prove(&staged, &never), "is not a block device");
    // A filesystem on the never-freeze list.
    let inside = s.mount.0.join("x");
    std::fs::create_dir(&inside).unwrap();
    assert_refused(prove(&s.staged(), &[&inside]), "which is never frozen");
    // And the real thing.
    let proven = prove(&s.staged(), &never).unwrap();
    assert!(!proven.thaw_leftover().unwrap());
    proven.sync().unwrap();
    assert!(!s.was_frozen());
}

/// Writes and fsyncs a file on `dir` in a thread; the receiver hears when it is done.
fn write_in_thread(dir: &Path, name: &str) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    let path = dir.join(name);
    std::thread::spawn(move || {
        let _ = std::fs::write(&path, b"x").and_then(|()| File::open(&path)?.sync_all());
        let _ = tx.send(());
    });
    rx
}

fn reaped(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid; `status` is writable.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

#[test]
fn freeze_holds_writers_until_release_and_reaps_its_guardian() {
    let Some(s) = Scratch::new() else { return };
    let frozen = prove(&s.staged(), &s.never())
        .unwrap()
        .freeze(Duration::from_secs(20))
        .unwrap();
    let pid = frozen.guardian.pid;
    let written = write_in_thread(&s.mount.0, "during");
    assert!(
        written.recv_timeout(Duration::from_millis(300)).is_err(),
        "a write went through a frozen filesystem"
    );
    frozen.release().unwrap();
    written.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(reaped(pid), "guardian {pid} left unreaped");
    assert!(!s.was_frozen());
}

#[test]
fn the_deadline_thaws_and_release_reports_it() {
    let Some(s) = Scratch::new() else { return };
    let frozen = prove(&s.staged(), &s.never())
        .unwrap()
        .freeze(Duration::from_millis(300))
        .unwrap();
    let written = write_in_thread(&s.mount.0, "after-deadline");
    written.recv_timeout(Duration::from_secs(5)).unwrap();
    match frozen.release() {
        Err(StorageError::FreezeLapsed { detail, .. }) => {
            assert!(detail.contains("deadline"), "{detail}")
        }
        other => panic!("expected FreezeLapsed, got {other:?}"),
    }
    assert!(!s.was_frozen());
}

#[test]
fn a_second_freeze_of_one_filesystem_waits_for_the_first() {
    let Some(s) = Scratch::new() else { return };
    let first = prove(&s.staged(), &s.never())
        .unwrap()
        .freeze(Duration::from_secs(20))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let second = prove(&s.staged(), &s.never())
                .unwrap()
                .freeze(Duration::from_secs(20));
            tx.send(()).unwrap();
            second.unwrap().release().unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        first.release().unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    });
    assert!(!s.was_frozen());
}

const CHILD_ENV: &str = "FREEZE_GUARDIAN_CHILD";

/// Not a test on its own: the process `the_guardian_thaws_when_the_driver_dies` starts and
/// SIGKILLs. Freezes the scratch filesystem named in the environment, says so, and waits.
#[test]
#[ignore = "run by the_guardian_thaws_when_the_driver_dies"]
fn guardian_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\n').collect();
    let [path, device, image, marker] = parts[..] else {
        panic!("bad {CHILD_ENV}")
    };
    let staged = Staged {
        volume_id: "vol-test",
        staging_path: Path::new(path),
        device: Path::new(device),
        image: Path::new(image),
    };
    let frozen = prove(&staged, &[Path::new("/")])
        .unwrap()
        .freeze(Duration::from_secs(60))
        .unwrap();
    std::fs::write(marker, frozen.guardian.pid.to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn the_guardian_thaws_when_the_driver_dies() {
    let Some(s) = Scratch::new() else { return };
    let marker = s.dir.path().join("frozen");
    let spec = [s.mount.0.as_path(), &s.device.0, &s.image, marker.as_path()]
        .map(|p| p.to_str().unwrap().to_string())
        .join("\n");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "storage::freeze::tests::guardian_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !marker.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marker.exists(), "the child never froze the filesystem");
    // The guardian sees the pipe close at once; a write must go through well within the
    // 60 s deadline (a FITHAW that found it still frozen would also end the test's hold).
    let written = write_in_thread(&s.mount.0, "after-kill");
    let thawed = written.recv_timeout(Duration::from_secs(3)).is_ok();
    let still_frozen = s.was_frozen();
    assert!(thawed && !still_frozen, "the guardian did not thaw");
}
