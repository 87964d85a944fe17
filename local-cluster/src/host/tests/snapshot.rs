//! Snapshot, restore, save and load against temp dirs standing in for /proc/sys and host paths.

use std::path::Path;

use super::{Scene, fake_proc_sys, get_sysctl, set_sysctl};
use crate::host::{HostError, HostSnapshot, HostSpec};

fn spec(proc_sys: &Path, sysctls: &[&str], paths: &[&Path]) -> HostSpec {
    HostSpec {
        proc_sys: proc_sys.to_path_buf(),
        sysctls: sysctls.iter().map(|s| s.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
    }
}

#[test]
fn host_snapshot_restores_changed_sysctls() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let values = [
        ("vm.overcommit_memory", "0"),
        ("kernel.panic", "0"),
        ("kernel.keys.root_maxkeys", "200"),
        ("kernel.printk", "4\t4\t1\t7"),
    ];
    let proc_sys = fake_proc_sys(&base, &values);
    let names = [
        "vm.overcommit_memory",
        "kernel.panic",
        "kernel.keys.root_maxkeys",
        "kernel.printk",
        "vm.nosuch",
    ];
    let snapshot = HostSnapshot::take_with(&base.join("run"), &spec(&proc_sys, &names, &[]))
        .expect("snapshot");
    assert_eq!(
        snapshot.sysctls["kernel.printk"].as_deref(),
        Some("4 4 1 7")
    );
    assert_eq!(snapshot.sysctls["vm.nosuch"], None);

    set_sysctl(&proc_sys, "vm.overcommit_memory", "1");
    set_sysctl(&proc_sys, "kernel.panic", "10");
    let report = snapshot.restore();
    assert!(report.is_clean(), "{:?}", report.failed);
    let restored: Vec<(&str, &str, &str)> = report
        .sysctls
        .iter()
        .map(|s| (s.name.as_str(), s.found.as_str(), s.restored.as_str()))
        .collect();
    assert_eq!(
        restored,
        [
            ("kernel.panic", "10", "0"),
            ("vm.overcommit_memory", "1", "0")
        ]
    );
    assert_eq!(get_sysctl(&proc_sys, "vm.overcommit_memory"), "0");
    assert_eq!(get_sysctl(&proc_sys, "kernel.panic"), "0");
    assert!(
        snapshot.restore().sysctls.is_empty(),
        "a second restore has nothing to do"
    );
}

#[test]
fn host_snapshot_removes_created_paths_only() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let host = base.join("host");
    let outside = base.join("outside");
    std::fs::create_dir_all(host.join("existing")).expect("existing");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("keep.txt"), "keep").expect("keep");
    let (existing, created, never) = (
        host.join("existing"),
        host.join("created/deep"),
        host.join("never"),
    );
    let proc_sys = fake_proc_sys(&base, &[]);
    let snapshot = HostSnapshot::take_with(
        &base.join("run"),
        &spec(&proc_sys, &[], &[&existing, &created, &never]),
    )
    .expect("snapshot");
    assert_eq!(
        snapshot.paths.get(&host.join("created")),
        Some(&false),
        "missing ancestor"
    );
    assert!(
        !snapshot.paths.contains_key(&host),
        "existing ancestors are not recorded"
    );

    // What the run does: fills an existing dir, creates a tree with symlinks pointing out.
    std::fs::write(existing.join("new"), "x").expect("new file");
    std::fs::create_dir_all(created.join("x/y")).expect("tree");
    std::fs::write(created.join("x/y/file"), "x").expect("file");
    std::os::unix::fs::symlink(&outside, created.join("dir-link")).expect("dir link");
    std::os::unix::fs::symlink(outside.join("keep.txt"), created.join("x/file-link"))
        .expect("file link");

    let report = snapshot.restore();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, [host.join("created")]);
    assert!(!host.join("created").exists());
    assert!(
        existing.join("new").exists(),
        "an existing path is left alone"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt")).expect("kept"),
        "keep"
    );
    assert!(!never.exists());
}

#[test]
fn host_snapshot_restore_keeps_created_path_with_mount_below() {
    let mut scene = Scene::new();
    let base = scene.dir();
    std::fs::create_dir(base.join("host")).expect("host");
    let created = base.join("host/kubelet");
    let plugins = created.join("device-plugins");
    let proc_sys = fake_proc_sys(&base, &[]);
    let paths = [created.as_path(), plugins.as_path()];
    let snapshot = HostSnapshot::take_with(&base.join("run"), &spec(&proc_sys, &[], &paths))
        .expect("snapshot");
    std::fs::create_dir_all(&plugins).expect("plugins");
    scene.mount_tmpfs(&created.join("pods/volume"));
    std::fs::write(created.join("pods/volume/data"), "precious").expect("data");

    let report = snapshot.restore();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let line = &report.failed[0];
    let expected = format!(
        "not removing {}: {} (tmpfs from tmpfs) is mounted at or below it",
        created.display(),
        created.join("pods/volume").display()
    );
    assert_eq!(line, &expected);
    assert!(created.join("pods/volume/data").exists());
    assert_eq!(
        report.removed,
        std::slice::from_ref(&plugins),
        "a child with no mount below still goes"
    );
    assert!(!plugins.exists());
}

#[test]
fn host_snapshot_save_load_roundtrip() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let proc_sys = fake_proc_sys(&base, &[("kernel.panic", "1")]);
    let paths = [base.join("a"), base.join("b/c")];
    std::fs::create_dir(&paths[0]).expect("a");
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let snapshot = HostSnapshot::take_with(
        &base.join("run"),
        &spec(&proc_sys, &["kernel.panic", "x.y"], &refs),
    )
    .expect("snapshot");
    let dir = base.join("state");
    std::fs::create_dir(&dir).expect("state dir");
    let file = dir.join("host-snapshot.json");
    snapshot.save(&file).expect("save");
    snapshot.save(&file).expect("save over");
    assert_eq!(HostSnapshot::load(&file).expect("load"), snapshot);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["host-snapshot.json"], "no temp file left");

    std::fs::write(&file, "{ not json").expect("garbage");
    assert!(matches!(
        HostSnapshot::load(&file),
        Err(HostError::Json { .. })
    ));
    let missing = HostSnapshot::load(&dir.join("missing.json"));
    assert!(matches!(missing, Err(HostError::Io { .. })));
}
