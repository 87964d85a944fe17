//! Tests of the host module against temp dirs, real mounts, real loop devices and real child
//! processes (run as root). A [`Scene`] owns everything a test makes and undoes it on drop with
//! the system tools rather than with the code under test, so a failing test leaves nothing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod adopt;
mod clean;
mod leftovers;
mod snapshot;
mod sweep;

/// Everything one test made: children, loop devices, temp dirs (with any mounts below them).
pub(super) struct Scene {
    children: Vec<Child>,
    /// Device and backing file: a device the test lost may be another test's by clean-up time.
    loops: Vec<(String, PathBuf)>,
    dirs: Vec<TempDir>,
}

impl Scene {
    pub(super) fn new() -> Scene {
        Scene {
            children: Vec::new(),
            loops: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// A fresh temp dir, canonical (mountinfo shows canonical paths).
    pub(super) fn dir(&mut self) -> PathBuf {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().canonicalize().expect("canonical temp dir");
        self.dirs.push(dir);
        path
    }

    /// Starts `command` with no stdio; returns its pid.
    pub(super) fn spawn(&mut self, mut command: Command) -> i32 {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("spawn");
        let pid = i32::try_from(child.id()).expect("pid");
        self.children.push(child);
        pid
    }

    /// Whether our child `pid` has exited (reaping it).
    pub(super) fn exited(&mut self, pid: i32) -> bool {
        self.children
            .iter_mut()
            .find(|c| i32::try_from(c.id()).ok() == Some(pid))
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    pub(super) fn mount_tmpfs(&self, target: &Path) {
        std::fs::create_dir_all(target).expect("mount point");
        run(
            "mount",
            &["-t", "tmpfs", "-o", "size=4m", "tmpfs", &s(target)],
        );
    }

    pub(super) fn bind(&self, source: &Path, target: &Path) {
        std::fs::create_dir_all(target).expect("mount point");
        run("mount", &["--bind", &s(source), &s(target)]);
    }

    /// A loop device on a new sparse file of `mib` MiB; with `ext4`, formatted first.
    pub(super) fn loop_device(&mut self, file: &Path, mib: u64, ext4: bool) -> String {
        File::create(file)
            .and_then(|f| f.set_len(mib << 20))
            .expect("backing file");
        if ext4 {
            run("mkfs.ext4", &["-q", "-F", &s(file)]);
        }
        let device = run("losetup", &["-f", "--show", &s(file)]);
        self.loops.push((device.clone(), file.to_path_buf()));
        device
    }

    /// A loop device over the device node `lower`, as the kubelet makes over a mapped block
    /// volume.
    pub(super) fn loop_over(&mut self, lower: &str) -> String {
        let device = run("losetup", &["-f", "--show", lower]);
        self.loops.push((device.clone(), PathBuf::from(lower)));
        device
    }

    /// Mount points at or below `dir` now, from mountinfo as the `mount` tools see it.
    pub(super) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        super::mountinfo::parse(&text)
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(dir))
            .collect()
    }

    /// Tear-down without the code under test: children, then mounts, then loop devices.
    fn clean(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let ours: Vec<&String> = self
            .loops
            .iter()
            .filter(|(device, file)| still_backed_by(device, file))
            .map(|(device, _)| device)
            .collect();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in super::mountinfo::parse(&text) {
            if ours.contains(&&m.source) {
                quiet("umount", &["-l", &s(&m.mount_point)]);
            }
        }
        for dir in &self.dirs {
            let dir = dir
                .path()
                .canonicalize()
                .unwrap_or_else(|_| dir.path().into());
            let mut mounts = Scene::mounts_below(&dir);
            mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for mount in mounts {
                quiet("umount", &["-l", &s(&mount)]);
            }
        }
        for device in ours {
            quiet("losetup", &["-d", device]);
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Whether loop `device` is still bound to `file` (and not reused by another test).
fn still_backed_by(device: &str, file: &Path) -> bool {
    let name = device.trim_start_matches("/dev/");
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .is_ok_and(|text| Path::new(text.trim_end_matches('\n')) == file)
}

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs a tool that must succeed; returns its trimmed stdout.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().expect(tool);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a clean-up tool, ignoring failure.
fn quiet(tool: &str, args: &[&str]) {
    let _ = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `check` for up to `limit`.
pub(super) fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Whether `pid` is gone or a zombie.
pub(super) fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A `sleep 60` command, for processes that must outlive the test unless swept.
pub(super) fn sleeper() -> Command {
    let mut command = Command::new("sleep");
    command.arg("60");
    command
}

/// A fake /proc/sys with the given `name=value` sysctls.
pub(super) fn fake_proc_sys(root: &Path, values: &[(&str, &str)]) -> PathBuf {
    let proc_sys = root.join("proc-sys");
    for (name, value) in values {
        let path = proc_sys.join(name.replace('.', "/"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("sysctl dir");
        std::fs::write(path, format!("{value}\n")).expect("sysctl");
    }
    proc_sys
}

pub(super) fn set_sysctl(proc_sys: &Path, name: &str, value: &str) {
    std::fs::write(proc_sys.join(name.replace('.', "/")), format!("{value}\n")).expect("set");
}

pub(super) fn get_sysctl(proc_sys: &Path, name: &str) -> String {
    std::fs::read_to_string(proc_sys.join(name.replace('.', "/")))
        .expect("get")
        .trim()
        .to_string()
}
