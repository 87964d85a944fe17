//! What killed runs leave behind: a work dir made with `claim` holds an `owner` file (pid and
//! process start time); `sweep` later finds such dirs whose owner is gone and removes them
//! with what they hold on the host: mounts below them (thawed, then unmounted deepest first)
//! and loop devices backed by files inside them. A dir counts as ours only by its name prefix *and* its owner file,
//! so nothing is touched that a run of ours did not make.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const OWNER_FILE: &str = "owner";
/// `fsfreeze -u` or `losetup -d` of one mount or device.
const DETACH_LIMIT: Duration = Duration::from_secs(30);

/// Records this process as the owner of `dir`.
pub fn claim(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or_default();
    std::fs::write(dir.join(OWNER_FILE), format!("{pid} {start}\n"))
}

/// Removes every dir `<parent>/<prefix>*` whose owner process is gone; returns one line per
/// thing undone (for the caller to report).
pub fn sweep(parent: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if ours && owner_gone(&dir) == Some(true) {
            done.extend(undo(&dir));
        }
    }
    done
}

/// Some(true) when the owner file names a process that no longer runs (or a newer one with
/// its pid); None without a readable owner file (then the dir is not ours to judge).
fn owner_gone(dir: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let start: u64 = fields.next()?.parse().ok()?;
    Some(start_time(pid) != Some(start))
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

fn undo(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let mut mounts = mounts_below(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in mounts {
        // A driver killed mid-copy leaves its source frozen; a frozen filesystem outlives its
        // unmount (the freeze holds it), keeping its loop device. Thaw first; "not frozen"
        // (EINVAL) is the usual answer.
        let mut thaw = Command::new("fsfreeze");
        thaw.arg("-u")
            .arg(&mount)
            .stderr(std::process::Stdio::null());
        if run_with_deadline(&mut thaw).is_ok() {
            done.push(format!("thawed {}", mount.display()));
        }
        match rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => done.push(format!("unmounted {}", mount.display())),
            Err(e) => done.push(format!("could not unmount {}: {e}", mount.display())),
        }
    }
    for device in loops_backed_below(dir) {
        let mut detach = Command::new("losetup");
        detach.arg("-d").arg(&device);
        let detached = run_with_deadline(&mut detach);
        done.push(match detached {
            Ok(()) => format!("detached {}", device.display()),
            Err(e) => format!("could not detach {}: {e}", device.display()),
        });
    }
    // Only when nothing of the host is left in it: never delete through a mount.
    if mounts_below(dir).is_empty() && loops_backed_below(dir).is_empty() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => done.push(format!("removed {}", dir.display())),
            Err(e) => done.push(format!("could not remove {}: {e}", dir.display())),
        }
    }
    done
}

/// Runs `command` to its end, killing it (our own child) past DETACH_LIMIT.
fn run_with_deadline(command: &mut Command) -> Result<(), String> {
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + DETACH_LIMIT;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(status.to_string()),
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {DETACH_LIMIT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Loop devices whose backing file lies below `dir` (/sys/block/loopN/loop/backing_file).
fn loops_backed_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()).starts_with(dir))
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only (loop devices, mounts, FIFREEZE): skipped with a note otherwise.
    #[test]
    fn a_frozen_leftover_is_thawed_and_released() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root for loop devices and mounts");
            return;
        }
        let parent = tempfile::tempdir_in("/var/tmp").unwrap();
        let dir = parent.path().join("run-frozen");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::write(dir.join(OWNER_FILE), "999999999 1\n").unwrap();
        let image = dir.join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let ok = |c: &mut Command| assert!(run_with_deadline(c).is_ok(), "{c:?}");
        ok(Command::new("mkfs.ext4").arg("-q").arg(&image));
        ok(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&mnt));
        // Dropped before `parent`: if an assertion fails, the temp dir's removal must not
        // write into a filesystem left frozen.
        let _release = Release(mnt.clone());
        ok(Command::new("fsfreeze").arg("-f").arg(&mnt));
        let done = sweep(parent.path(), "run-");
        assert!(done.iter().any(|l| l.starts_with("thawed")), "{done:?}");
        assert!(loops_backed_below(&dir).is_empty(), "{done:?}");
        assert!(!dir.exists(), "{done:?}");
    }

    fn quiet(program: &str) -> Command {
        let mut command = Command::new(program);
        command.stderr(std::process::Stdio::null());
        command
    }

    /// Thaws and unmounts its path on drop, whatever state the test left it in.
    struct Release(PathBuf);

    impl Drop for Release {
        fn drop(&mut self) {
            let _ = run_with_deadline(quiet("fsfreeze").arg("-u").arg(&self.0));
            let _ = run_with_deadline(quiet("umount").arg(&self.0));
        }
    }

    #[test]
    fn a_live_owner_keeps_its_dir_and_a_dead_one_loses_it() {
        let parent = tempfile::tempdir().unwrap();
        let live = parent.path().join("run-live");
        std::fs::create_dir(&live).unwrap();
        claim(&live).unwrap();
        let dead = parent.path().join("run-dead");
        std::fs::create_dir_all(dead.join("a/b")).unwrap();
        std::fs::write(dead.join(OWNER_FILE), "999999999 1\n").unwrap();
        let foreign = parent.path().join("run-foreign");
        std::fs::create_dir(&foreign).unwrap();
        let done = sweep(parent.path(), "run-");
        assert!(live.exists() && foreign.exists(), "{done:?}");
        assert!(!dead.exists(), "{done:?}");
        assert_eq!(done, [format!("removed {}", dead.display())]);
    }
}
