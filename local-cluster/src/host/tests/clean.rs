//! Cleaning up after a run whose harness was killed, from its record alone: real processes,
//! a real mount and loop device, a fake /proc/sys; and a run whose harness lives, left alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Scene, eventually, fake_proc_sys, get_sysctl, gone, set_sysctl, sleeper};
use crate::host::{
    HostSnapshot, HostSpec, ProcessId, Registry, RunOutcome, RunRecord, SweepOptions, clean_stale,
};

fn fast() -> SweepOptions {
    SweepOptions {
        term_grace: Duration::from_secs(2),
        ..SweepOptions::default()
    }
}

/// A process that ran and is gone: the owner of a killed run.
fn dead_owner() -> ProcessId {
    let mut child = sleeper().spawn().expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let id = ProcessId::of(pid).expect("started");
    child.kill().expect("kill");
    child.wait().expect("reap");
    id
}

/// A run as the cluster leaves it: a run dir, a fake /proc/sys and a host path to be created.
struct FakeRun {
    dir: PathBuf,
    proc_sys: PathBuf,
    created: PathBuf,
    snapshot: HostSnapshot,
}

fn fake_run(base: &Path, name: &str) -> FakeRun {
    let root = base.join(name);
    let dir = root.join("run");
    std::fs::create_dir_all(&dir).expect("run dir");
    let proc_sys = fake_proc_sys(
        &root,
        &[("kernel.panic_on_oops", "0"), ("vm.overcommit_memory", "0")],
    );
    let created = root.join("host/var/lib/kubelet");
    let spec = HostSpec {
        proc_sys: proc_sys.clone(),
        sysctls: vec!["kernel.panic_on_oops".into(), "vm.overcommit_memory".into()],
        paths: vec![created.clone()],
    };
    let snapshot = HostSnapshot::take_with(&dir, &spec).expect("snapshot");
    // What the kubelet does.
    set_sysctl(&proc_sys, "kernel.panic_on_oops", "1");
    set_sysctl(&proc_sys, "vm.overcommit_memory", "1");
    std::fs::create_dir_all(&created).expect("created path");
    FakeRun {
        dir,
        proc_sys,
        created,
        snapshot,
    }
}

/// The pid of a child of `parent`, once it has one.
fn child_of(parent: i32) -> i32 {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        found = text.split_whitespace().next().and_then(|p| p.parse().ok());
        found.is_some()
    });
    found.expect("a child")
}

#[test]
fn host_clean_undoes_a_killed_run_and_leaves_a_live_one_alone() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let registry = Registry::at(&base.join("registry"));
    let lock = registry.lock().expect("lock");

    // The killed run: a started shell with a sleep below it, a mount, a loop device.
    let dead = fake_run(&base, "dead");
    let mut shell = Command::new("sh");
    shell.args(["-c", "sleep 60; true"]);
    let started = scene.spawn(shell);
    let grandchild = child_of(started);
    let mut bystander = sleeper();
    bystander.current_dir(&dead.dir);
    let bystander = scene.spawn(bystander);
    scene.mount_tmpfs(&dead.dir.join("kubelet/pods/volume"));
    std::fs::create_dir_all(dead.dir.join("driver")).expect("driver dir");
    let device = scene.loop_device(&dead.dir.join("driver/disk.img"), 8, false);
    let record = RunRecord::new(dead_owner(), dead.snapshot.clone());
    let record = registry.create(&lock, record).expect("record");
    record
        .add("kubelet", ProcessId::of(started).expect("started"))
        .expect("add");

    // The live run: its harness (a sleep standing in) still runs.
    let live = fake_run(&base, "live");
    let harness = ProcessId::of(scene.spawn(sleeper())).expect("harness");
    let worker = scene.spawn(sleeper());
    let live_record = registry
        .create(&lock, RunRecord::new(harness, live.snapshot.clone()))
        .expect("live record");
    live_record
        .add("etcd", ProcessId::of(worker).expect("worker"))
        .expect("add");

    let report = clean_stale(&registry, &lock, &fast());
    assert_eq!(report.runs.len(), 2, "{:?}", report.lines());
    assert!(report.failures().is_empty(), "{:?}", report.lines());
    let lines = report.lines().join("\n");
    assert!(lines.contains("cleaned up"), "{lines}");
    assert!(lines.contains("left alone"), "{lines}");
    assert!(
        report
            .runs
            .iter()
            .any(|o| matches!(o, RunOutcome::Alive { run, .. } if run.owner == harness))
    );

    assert!(scene.exited(started), "the started process runs\n{lines}");
    assert!(
        eventually(Duration::from_secs(5), || gone(grandchild)),
        "{lines}"
    );
    assert!(
        !scene.exited(bystander),
        "a process with its cwd in the run was killed"
    );
    assert_eq!(get_sysctl(&dead.proc_sys, "kernel.panic_on_oops"), "0");
    assert_eq!(get_sysctl(&dead.proc_sys, "vm.overcommit_memory"), "0");
    assert!(!dead.created.exists(), "created host path left");
    assert!(!dead.dir.exists(), "run dir left");
    assert!(Scene::mounts_below(&dead.dir).is_empty());
    let name = device.trim_start_matches("/dev/");
    assert!(!Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists());
    assert!(!record.path().exists(), "record of the cleaned run left");

    assert!(!scene.exited(worker), "the live run's process was killed");
    assert_eq!(get_sysctl(&live.proc_sys, "kernel.panic_on_oops"), "1");
    assert!(live.created.exists() && live.dir.exists());
    assert!(live_record.path().exists());
    let again = clean_stale(&registry, &lock, &fast());
    assert_eq!(
        again.runs.len(),
        1,
        "only the live run is left: {:?}",
        again.lines()
    );
}

#[test]
fn host_clean_keeps_an_unreadable_record() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let registry = Registry::at(&base);
    let lock = registry.lock().expect("lock");
    let path = base.join("runs/1-1.json");
    std::fs::write(&path, "{ not json").expect("garbage");
    let report = clean_stale(&registry, &lock, &fast());
    assert_eq!(report.failures().len(), 1, "{:?}", report.lines());
    assert!(path.exists());
}
