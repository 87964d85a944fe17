//! The sweep against real processes, mounts and loop devices in temp run dirs.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Scene, eventually, gone, sleeper};
use crate::host::{ProcessId, SweepOptions, SweepReport, sweep, sweep_with};

fn backing_file_exists(device: &str) -> bool {
    let name = device.trim_start_matches("/dev/");
    Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists()
}

/// The pid of a child of `parent`, once it has one.
fn child_of(parent: i32) -> Option<i32> {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        let path = format!("/proc/{parent}/task/{parent}/children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found = text.split_whitespace().next().and_then(|p| p.parse().ok());
        found.is_some()
    });
    found
}

fn killed(report: &SweepReport, pid: i32) -> bool {
    report.killed.iter().any(|k| k.pid == pid)
}

fn id(pid: i32) -> ProcessId {
    ProcessId::of(pid).expect("process started")
}

#[test]
fn host_sweep_kills_started_processes_and_descendants_only() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    std::fs::write(run.join("file"), "x").expect("file");

    // Started by the cluster: a shell whose child shell runs a sleep (its grandchild).
    let mut started = Command::new("sh");
    started.args(["-c", "sh -c 'sleep 60; true'; true"]);
    let started = scene.spawn(started);
    let child = child_of(started).expect("the shell's shell");
    let grandchild = child_of(child).expect("the inner shell's sleep");
    // Not started by the cluster, though they name the run directory: a process whose cwd is
    // in it (a shell that `cd`s there), and a `tail -f` of one of its files.
    let mut in_cwd = sleeper();
    in_cwd.current_dir(&run);
    let in_cwd = scene.spawn(in_cwd);
    let mut tail = Command::new("tail");
    tail.args(["-f", &run.join("file").to_string_lossy()]);
    let tail = scene.spawn(tail);
    // A stale record: the pid of a live process with another start time (a reused pid).
    let reused = ProcessId {
        start: id(tail).start + 1,
        ..id(tail)
    };

    let report = sweep(&run, &[id(started), reused]);
    assert!(report.is_clean(), "{:?}", report.failed);
    for pid in [started, child, grandchild] {
        assert!(killed(&report, pid), "{pid} not in {:?}", report.killed);
    }
    assert!(report.killed.iter().all(|k| k.signal == "SIGTERM"));
    assert_eq!(report.killed.len(), 3, "{:?}", report.killed);
    assert!(scene.exited(started), "the started process still runs");
    for pid in [child, grandchild] {
        assert!(
            eventually(Duration::from_secs(5), || gone(pid)),
            "{pid} runs"
        );
    }
    for pid in [in_cwd, tail] {
        assert!(
            !scene.exited(pid),
            "{pid}, not started by the cluster, was killed"
        );
    }
    let me = i32::try_from(std::process::id()).expect("pid");
    assert!(!killed(&report, me));
}

#[test]
fn host_sweep_never_kills_the_caller_or_its_ancestors() {
    let me = ProcessId::current();
    let parent = super::super::pid::stat(me.pid).expect("own stat").ppid;
    let mut owned = vec![me];
    owned.extend(ProcessId::of(parent));
    let mut scene = Scene::new();
    let report = sweep(&scene.dir(), &owned);
    assert!(report.killed.is_empty(), "{:?}", report.killed);
    assert!(report.is_clean(), "{:?}", report.failed);
}

#[test]
fn host_sweep_unmounts_nested_mounts_deepest_first() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    let source = base.join("source");
    std::fs::create_dir_all(&source).expect("source");
    std::fs::write(source.join("keep"), "keep").expect("keep");
    scene.mount_tmpfs(&run.join("a"));
    scene.bind(&source, &run.join("a/b"));
    // A mount hidden under a later mount on its parent is reached once the parent goes.
    scene.mount_tmpfs(&run.join("c/d"));
    scene.mount_tmpfs(&run.join("c"));

    let report = sweep(&run, &[]);
    assert!(report.is_clean(), "{:?}", report.failed);
    let order: Vec<_> = report
        .unmounted
        .iter()
        .map(|u| u.mount_point.clone())
        .collect();
    let at = |p: &str| order.iter().position(|m| *m == run.join(p)).expect(p);
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(at("a/b") < at("a"), "{order:?}");
    assert!(at("c") < at("c/d"), "{order:?}");
    assert!(Scene::mounts_below(&run).is_empty());
    assert!(source.join("keep").exists(), "the bind source is untouched");
}

#[test]
fn host_sweep_unmounts_busy_mount_lazily() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    scene.mount_tmpfs(&run.join("busy"));
    let held = File::create(run.join("busy/held")).expect("held file");

    let report = sweep(&run, &[]);
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.unmounted.len(), 1);
    assert!(report.unmounted[0].lazy, "{:?}", report.unmounted);
    assert!(Scene::mounts_below(&run).is_empty());
    drop(held);
}

#[test]
fn host_sweep_detaches_loop_device_backed_in_run_dir() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    let device = scene.loop_device(&run.join("disk.img"), 8, false);
    assert!(backing_file_exists(&device));

    let report = sweep(&run, &[]);
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.detached.len(), 1, "{:?}", report.detached);
    assert_eq!(report.detached[0].device, Path::new(&device));
    assert_eq!(report.detached[0].backing_file, run.join("disk.img"));
    assert!(!backing_file_exists(&device));
}

#[test]
fn host_sweep_detaches_a_loop_device_stacked_on_one_of_the_run() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    let lower = scene.loop_device(&run.join("block.img"), 8, false);
    // As the kubelet maps a block volume: the device node bind-mounted into the run directory,
    // and a loop device over that path. Once the (busy) bind mount is lazily unmounted, the
    // upper device's backing path reads `/`.
    let node = run.join("volumeDevices/dev/pod-uid");
    std::fs::create_dir_all(node.parent().expect("parent")).expect("dir");
    File::create(&node).expect("mount point");
    super::run("mount", &["--bind", &lower, &node.to_string_lossy()]);
    let upper = scene.loop_over(&node.to_string_lossy());

    let report = sweep(&run, &[]);
    assert!(report.is_clean(), "{:?}", report.failed);
    let detached: Vec<_> = report.detached.iter().map(|d| d.device.clone()).collect();
    assert_eq!(
        detached,
        [Path::new(&upper), Path::new(&lower)],
        "upper first"
    );
    assert!(!backing_file_exists(&upper) && !backing_file_exists(&lower));
}

#[test]
fn host_sweep_unmounts_loop_device_mounted_elsewhere() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    let elsewhere = scene.dir().join("mnt");
    std::fs::create_dir_all(&elsewhere).expect("mount point");
    let device = scene.loop_device(&run.join("fs.img"), 16, true);
    super::run("mount", &[&device, &elsewhere.to_string_lossy()]);

    let report = sweep(&run, &[]);
    assert!(report.is_clean(), "{:?}", report.failed);
    let unmounted: Vec<_> = report.unmounted.iter().map(|u| &u.mount_point).collect();
    assert_eq!(unmounted, [&elsewhere]);
    assert_eq!(report.detached.len(), 1, "{:?}", report.detached);
    assert!(Scene::mounts_below(&elsewhere).is_empty());
    assert!(!backing_file_exists(&device));
}

#[test]
fn host_sweep_refuses_root() {
    let report = sweep(Path::new("/"), &[]);
    assert!(report.killed.is_empty() && report.unmounted.is_empty());
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
}

#[test]
fn host_sweep_escalates_to_sigkill() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    let mut stubborn = Command::new("sh");
    stubborn
        .args(["-c", "trap '' TERM; sleep 60; true"])
        .current_dir(&run);
    let pid = scene.spawn(stubborn);
    // Its child exists only once the trap is set.
    let child = child_of(pid).expect("the shell's sleep");
    let options = SweepOptions {
        term_grace: Duration::from_millis(300),
        ..SweepOptions::default()
    };

    let report = sweep_with(&run, &[id(pid)], &options);
    assert!(report.is_clean(), "{:?}", report.failed);
    let shell = report
        .killed
        .iter()
        .find(|k| k.pid == pid)
        .expect("shell killed");
    assert_eq!(shell.signal, "SIGKILL");
    assert!(scene.exited(pid));
    assert!(eventually(Duration::from_secs(5), || gone(child)));
}
