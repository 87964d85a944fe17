//! The adoption scan records a daemon that left its parent, as a containerd shim does, and
//! never a child the harness had before.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use super::{Scene, eventually, gone};
use crate::host::procs::send;
use crate::host::{Adopter, ProcessId, Registry, RunRecord, SweepOptions, clean_stale};

#[test]
fn host_adopt_records_a_detached_grandchild() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let registry = Registry::at(&base);
    let lock = registry.lock().expect("lock");
    let snapshot = crate::host::HostSnapshot::take_with(
        &base.join("run"),
        &crate::host::HostSpec {
            proc_sys: base.clone(),
            sysctls: Vec::new(),
            paths: Vec::new(),
        },
    )
    .expect("snapshot");
    let record = registry
        .create(&lock, RunRecord::new(ProcessId::current(), snapshot))
        .expect("record");
    // A child from before the cluster (a shell's `> >(tee log)`) is not the run's.
    let mut earlier = Command::new("sleep").arg("60").spawn().expect("sleep");
    let earlier_id = ProcessId::of(earlier.id() as i32).expect("the earlier child runs");
    let mut adopter = Adopter::start(record.clone());

    // The shell starts a sleep in the background and exits: the sleep is an orphan.
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("shell");
    let mut out = String::new();
    shell
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    shell.wait().expect("shell exits");
    let orphan: i32 = out.trim().parse().expect("pid");
    let id = ProcessId::of(orphan).expect("the orphan runs");
    let recorded = eventually(Duration::from_secs(5), || {
        record
            .get()
            .processes
            .iter()
            .any(|p| p.id == id && p.name == "child")
    });
    adopter.scan_now();
    adopter.stop();
    let _ = send(id, Signal::KILL);
    let _ = earlier.kill();
    let _ = earlier.wait();
    assert!(recorded, "{:?}", record.get().processes);
    assert!(
        !record.get().processes.iter().any(|p| p.id == earlier_id),
        "a child from before the cluster was recorded: {:?}",
        record.get().processes
    );
    assert!(eventually(Duration::from_secs(5), || gone(orphan)));
    // The owner (this test) lives: its record is left alone.
    let report = clean_stale(&registry, &lock, &SweepOptions::default());
    assert_eq!(report.alive().count(), 1);
    record.remove().expect("remove");
}
