//! Test helpers: the host's tar programs, run the way a pod runs them, and a tree with the
//! awkward cases (hard links, long and non-ASCII names, special mode bits, devices).

use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{DataError, Digest, tar_digest};

/// A tar implementation: GNU tar from PATH, or busybox's applet.
pub struct Tar {
    pub name: &'static str,
    program: PathBuf,
    applet: bool,
}

impl Tar {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        if self.applet {
            c.arg("tar");
        }
        // GNU tar reads its default archive from TAPE; the pod commands rely on stdin/stdout.
        c.env_remove("TAPE");
        c
    }

    /// `tar -c -C dir .` into `tar_digest`.
    pub fn digest(&self, dir: &Path) -> Result<Digest, DataError> {
        let mut child = self
            .command()
            .args(["-c", "-C"])
            .arg(dir)
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let digest = tar_digest(child.stdout.take().unwrap());
        let status = child.wait().unwrap();
        assert!(status.success(), "{} tar -c failed: {status}", self.name);
        digest
    }

    /// `tar -x -C dir` fed by `write`.
    pub fn extract<T>(&self, dir: &Path, write: impl FnOnce(&mut dyn Write) -> T) -> T {
        let mut child = self
            .command()
            .args(["-x", "-C"])
            .arg(dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let out = write(&mut stdin);
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "{} tar -x failed: {status}", self.name);
        out
    }
}

/// GNU tar, and busybox tar if there is one: `CSI_CLONE_BUSYBOX`, else `busybox` on PATH.
pub fn tars() -> Vec<Tar> {
    let mut all = vec![Tar {
        name: "GNU",
        program: "tar".into(),
        applet: false,
    }];
    match busybox() {
        Some(program) => all.push(Tar {
            name: "busybox",
            program,
            applet: true,
        }),
        None => eprintln!("note: no busybox (set CSI_CLONE_BUSYBOX): busybox tar not tested"),
    }
    all
}

fn busybox() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CSI_CLONE_BUSYBOX").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
}

fn mode(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

/// 120 bytes: two of these in a path pass both the 100-byte name field and 255 bytes.
pub fn long_name(tag: char) -> String {
    std::iter::repeat_n(tag, 116)
        .chain("-end".chars())
        .collect()
}

/// A tree of the cases the seeded dataset lacks. `lost+found` at the top holds a file that is
/// hard-linked from outside, so tar may store the content there and link to it.
pub fn awkward_tree(root: &Path) {
    let (l1, l2) = (long_name('d'), long_name('f'));
    let deep = root.join(&l1).join(&l1);
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join(&l2), b"deep and long").unwrap();
    fs::write(root.join("plain"), b"hard-linked content").unwrap();
    fs::hard_link(root.join("plain"), root.join(&l1).join("link-to-plain")).unwrap();
    fs::hard_link(deep.join(&l2), root.join("link-to-deep")).unwrap();
    fs::create_dir(root.join("lost+found")).unwrap();
    fs::write(root.join("lost+found/#7"), b"orphan, also linked").unwrap();
    fs::hard_link(root.join("lost+found/#7"), root.join("from-lost")).unwrap();
    fs::create_dir(root.join("ünï ✓ 日本")).unwrap();
    fs::write(root.join("ünï ✓ 日本/ファイル"), b"non-ascii").unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    mode(&root.join("setuid"), 0o4755);
    for (d, m) in [("setgid", 0o2750), ("sticky", 0o1777), ("empty-dir", 0o700)] {
        fs::create_dir(root.join(d)).unwrap();
        mode(&root.join(d), m);
    }
    fs::write(root.join("setgid/empty-file"), b"").unwrap();
    mode(&root.join("setgid/empty-file"), 0o600);
    symlink(format!("{l1}/{l1}/{l2}"), root.join("long-symlink")).unwrap();
    special_files(root);
}

fn special_files(root: &Path) {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    mknodat(
        CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let dev = makedev(1, 3);
    let made = mknodat(
        CWD,
        root.join("null-dev"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        dev,
    );
    if let Err(e) = made {
        eprintln!("note: cannot mknod a device here ({e}): devices not tested");
    }
}
