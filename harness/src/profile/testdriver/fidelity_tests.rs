//! The file means what e2e's decoder makes of it: case-sensitive keys, e2e's class precedence,
//! and the default entry e2e keeps in `SupportedFsType`.

use super::tests::{load_files, load_text};
use crate::profile::{ClassSource, Discoverable};

/// A class file that must not be read when FromName wins.
const OTHER_SC: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  \
                        name: other\nprovisioner: other.example\nparameters:\n  tier: gold\n  \
                        csi.storage.k8s.io/fstype: xfs\n";
const EXT4_SC: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  \
                       name: c\nprovisioner: d.example\nparameters:\n  \
                       csi.storage.k8s.io/fstype: ext4\n";

#[test]
fn keys_in_the_wrong_case_are_ignored_and_named() {
    // Every key below is one e2e drops: the lower-case StorageClass is never read (its file
    // does not exist), the lower-case capabilities and size range leave e2e's defaults.
    let text = "storageClass:\n  FromFile: missing.yaml\nDriverInfo:\n  Name: d.example\n  \
                capabilities:\n    pvcDataSource: true\n  SupportedSizeRange:\n    min: 1Mi\n  \
                Capabilities:\n    snapshotdatasource: true\n";
    let (p, warnings) = load_text(text).unwrap();
    assert!(!p.capabilities.clone && !p.capabilities.snapshot);
    assert_eq!(p.sizes.min_bytes, 5 << 30);
    assert!(p.kubernetes.storage_class.is_created());
    let joined = warnings.join("\n");
    for (key, meant) in [
        ("storageClass", "StorageClass"),
        ("DriverInfo.capabilities", "DriverInfo.Capabilities"),
        (
            "DriverInfo.SupportedSizeRange.min",
            "DriverInfo.SupportedSizeRange.Min",
        ),
        (
            "DriverInfo.Capabilities.snapshotdatasource",
            "DriverInfo.Capabilities.snapshotDataSource",
        ),
    ] {
        let expected =
            format!("ignored by e2e: key \"{key}\" is case-sensitive, did you mean \"{meant}\"?");
        assert!(joined.contains(&expected), "{expected}\n{joined}");
    }

    // Only the exact spelling names the driver, as in e2e.
    let err = load_text("driverInfo:\n  Name: d.example\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("DriverInfo.Name: missing"), "{err}");
}

#[test]
fn from_name_wins_over_a_class_file() {
    let td = "StorageClass:\n  FromName: true\n  FromFile: sc.yaml\nDriverInfo:\n  \
              Name: d.example\n";
    let (p, warnings) = load_files(&[("td.yaml", td), ("sc.yaml", OTHER_SC)]).unwrap();
    // Neither the file's provisioner, parameters nor fs type are used.
    assert_eq!(p.name, "d.example");
    assert!(p.parameters.is_empty() && p.fs_type.is_none());
    assert!(p.kubernetes.storage_class.is_created());
    let joined = warnings.join("\n");
    assert!(
        joined.contains(
            "StorageClass sets FromName, FromFile; like e2e the harness uses \
                         StorageClass.FromName"
        ),
        "{joined}"
    );
}

#[test]
fn supported_fs_types_keep_e2e_default_entry() {
    let fs = |types: &str| format!("DriverInfo:\n  Name: d.example\n  SupportedFsType: {types}\n");

    // Listed types join the default entry: the run requests the default and names the others.
    let (p, w) = load_text(&fs("{xfs: {}, ext4: }")).unwrap();
    assert_eq!(p.fs_type, None);
    let joined = w.join("\n");
    assert!(
        joined.contains(
            "with its default entry and with ext4, xfs; this run requests the default entry \
             (no fs_type: the driver's default); to test ext4, xfs as e2e does, run again with \
             --fs-type ext4 (one run per type)"
        ),
        "{joined}"
    );

    // Only the default entry, written out: nothing to say.
    let (p, w) = load_text(&fs("{\"\": {}}")).unwrap();
    assert_eq!(p.fs_type, None);
    assert!(w.iter().all(|w| !w.contains("SupportedFsType")), "{w:?}");

    // The class's fstype is the default entry; a listed type equal to it adds nothing.
    let td = format!(
        "StorageClass:\n  FromFile: sc.yaml\n{}",
        fs("{ext4: {}, xfs: {}}")
    );
    let (p, w) = load_files(&[("td.yaml", &td), ("sc.yaml", EXT4_SC)]).unwrap();
    assert_eq!(p.fs_type.as_deref(), Some("ext4"));
    let joined = w.join("\n");
    assert!(
        joined.contains(
            "with its default entry and with xfs; this run requests the default \
                         entry (the StorageClass file's csi.storage.k8s.io/fstype \"ext4\")"
        ),
        "{joined}"
    );

    // null empties e2e's set; a list or a name is refused by e2e's decoder.
    let (p, w) = load_text(&fs("null")).unwrap();
    assert_eq!(p.fs_type, None);
    assert!(w.join("\n").contains("SupportedFsType is null"), "{w:?}");
    for refused in ["[xfs]", "xfs", "{xfs: yes}"] {
        let err = load_text(&fs(refused)).unwrap_err().to_string();
        assert!(
            err.contains("DriverInfo.SupportedFsType"),
            "{refused}: {err}"
        );
        assert!(err.contains("e2e refuses"), "{refused}: {err}");
    }
}

#[test]
fn capabilities_the_format_cannot_declare_are_left_to_the_driver() {
    let text = "DriverInfo:\n  Name: d.example\n  TopologyKeys: [zone]\n  Capabilities:\n    \
                topology: yes\n    groupSnapshot: true\n    seLinuxMount: true\n";
    let (p, w) = load_text(text).unwrap();
    let c = &p.capabilities;
    assert!(c.topology);
    assert_eq!(p.topology_keys, ["zone"]);
    for d in Discoverable::ALL {
        assert!(c.undecided(d), "{d}");
    }
    assert!(!c.stage_unstage && !c.controller_publish && !c.list_volumes && !c.get_volume);
    // Current capability names are known, and nothing is forced off.
    let joined = w.join("\n");
    assert!(!joined.contains("unknown capability"), "{joined}");
    assert!(!joined.contains("ignored by e2e"), "{joined}");
    assert!(!joined.contains("taken as false"), "{joined}");
    assert!(matches!(p.kubernetes.snapshot_class, ClassSource::Created));
}
