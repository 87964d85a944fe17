//! The read-only leftovers check: one line per kind of leftover, none once swept and restored.

use std::path::PathBuf;

use super::{Scene, fake_proc_sys, set_sysctl, sleeper};
use crate::host::{HostSnapshot, HostSpec, ProcessId, leftovers, sweep};

#[test]
fn host_leftovers_names_each_kind_then_none_after_sweep_and_restore() {
    let mut scene = Scene::new();
    let base = scene.dir();
    let run = base.join("run");
    std::fs::create_dir_all(&run).expect("run");
    let proc_sys = fake_proc_sys(&base, &[("vm.overcommit_memory", "0")]);
    let created = base.join("host/var/log/pods");
    let spec = HostSpec {
        proc_sys: proc_sys.clone(),
        sysctls: vec!["vm.overcommit_memory".into()],
        paths: vec![created.clone()],
    };
    let snapshot = HostSnapshot::take_with(&run, &spec).expect("snapshot");
    assert_eq!(leftovers(&run, &[], &snapshot), Vec::<String>::new());

    let mut command = sleeper();
    command.current_dir(&run);
    let pid = scene.spawn(command);
    let owned = [ProcessId::of(pid).expect("started")];
    scene.mount_tmpfs(&run.join("mnt"));
    let device = scene.loop_device(&run.join("disk.img"), 8, false);
    set_sysctl(&proc_sys, "vm.overcommit_memory", "1");
    std::fs::create_dir_all(&created).expect("created");

    let lines = leftovers(&run, &owned, &snapshot);
    let has = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has(&format!("process {pid} ")), 1, "{lines:?}");
    assert_eq!(
        has(&format!(
            "mount of the run is still present: {}",
            run.join("mnt").display()
        )),
        1,
        "{lines:?}"
    );
    assert_eq!(
        has(&format!("loop device {device} of the run")),
        1,
        "{lines:?}"
    );
    assert_eq!(
        has("sysctl vm.overcommit_memory is 1, was 0"),
        1,
        "{lines:?}"
    );
    let top: PathBuf = base.join("host");
    assert_eq!(
        has(&format!("{} was created by the run", top.display())),
        1,
        "{lines:?}"
    );
    assert_eq!(lines.len(), 5, "one line per leftover: {lines:?}");

    let swept = sweep(&run, &owned);
    assert!(swept.is_clean(), "{:?}", swept.failed);
    let restored = snapshot.restore();
    assert!(restored.is_clean(), "{:?}", restored.failed);
    assert_eq!(leftovers(&run, &owned, &snapshot), Vec::<String>::new());
    assert!(scene.exited(pid));
}
