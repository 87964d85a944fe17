use std::path::Path;

use super::*;
use crate::profile::{DriverProfile, Timeouts};

const SC: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast\n\
                  provisioner: x.example.com\nparameters:\n  type: thin\n  \
                  csi.storage.k8s.io/fstype: xfs\nmountOptions: [noatime]\n\
                  allowVolumeExpansion: true\nvolumeBindingMode: WaitForFirstConsumer\n\
                  reclaimPolicy: Retain\n";
const VSC: &str = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\n\
                   metadata:\n  name: snaps\ndriver: x.example.com\ndeletionPolicy: Delete\n\
                   parameters:\n  tier: cold\n";

fn minimal(extra: &str) -> String {
    format!("name: x.example.com\ncapabilities:\n  mount: true\n{extra}")
}

fn parse(extra: &str) -> Result<DriverProfile, ProfileError> {
    DriverProfile::from_yaml(&minimal(extra), "x.yaml")
}

fn err(extra: &str) -> String {
    parse(extra).unwrap_err().to_string()
}

/// Writes the manifests beside a profile in `conf/` and loads it; the directory lives as long
/// as the returned guard.
fn load_in(
    files: &[(&str, &str)],
    extra: &str,
) -> (tempfile::TempDir, Result<DriverProfile, ProfileError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("conf").join(name), text).unwrap();
    }
    let profile = dir.path().join("conf/p.yaml");
    std::fs::write(&profile, minimal(extra)).unwrap();
    let loaded = DriverProfile::load(&profile);
    (dir, loaded)
}

fn load_with(files: &[(&str, &str)], extra: &str) -> Result<DriverProfile, ProfileError> {
    load_in(files, extra).1
}

fn load_err(files: &[(&str, &str)], extra: &str) -> String {
    load_with(files, extra).unwrap_err().to_string()
}

const FILES: &str = "kubernetes:\n  storage_class:\n    file: sc.yaml\n  snapshot_class:\n    \
                     file: vsc.yaml\n";

#[test]
fn defaults_create_both_classes() {
    let p = parse("").unwrap();
    assert_eq!(p.kubernetes, KubernetesSettings::default());
    assert!(p.kubernetes.storage_class.is_created() && p.kubernetes.snapshot_class.is_created());
    assert_eq!(p.kubernetes.pod_image, None);
    let t = Timeouts::default();
    assert_eq!((t.bind_secs, t.pod_secs, t.delete_secs), (300, 300, 300));
    assert!(!p.to_yaml().contains("storage_class"), "{}", p.to_yaml());
    // An empty section and empty values are the defaults too.
    assert_eq!(parse("kubernetes: {}\n").unwrap(), p);
    let empty = parse("kubernetes:\n  storage_class:\n  pod_image: ''\n").unwrap();
    assert_eq!(empty.kubernetes, KubernetesSettings::default());
}

#[test]
fn existing_classes_and_pod_image() {
    let text = "kubernetes:\n  storage_class:\n    existing: fast-ssd\n  snapshot_class: \
                {existing: csi-snapclass}\n  pod_image: docker.io/library/busybox:1.37\n";
    let p = parse(text).unwrap();
    let k = &p.kubernetes;
    assert_eq!(k.storage_class, ClassSource::Existing("fast-ssd".into()));
    assert_eq!(
        k.snapshot_class,
        ClassSource::Existing("csi-snapclass".into())
    );
    assert_eq!(
        k.pod_image.as_deref(),
        Some("docker.io/library/busybox:1.37")
    );
    let out = p.to_yaml();
    assert!(out.contains("existing: fast-ssd"), "{out}");
    assert_eq!(DriverProfile::from_yaml(&out, "out").unwrap(), p);
}

#[test]
fn class_files_resolve_relative_to_the_profile() {
    let (_dir, p) = load_in(&[("sc.yaml", SC), ("vsc.yaml", VSC)], FILES);
    let p = p.unwrap();
    let ClassSource::File(sc) = &p.kubernetes.storage_class else {
        panic!("{:?}", p.kubernetes.storage_class);
    };
    assert!(sc.origin.ends_with("conf/sc.yaml"), "{}", sc.origin);
    assert_eq!(sc.provisioner, "x.example.com");
    // Kept as written: the cluster's sidecars read the reserved keys.
    assert_eq!(sc.parameters.len(), 2);
    assert_eq!(sc.mount_options, ["noatime"]);
    assert_eq!(sc.allow_volume_expansion, Some(true));
    assert_eq!(
        sc.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(sc.reclaim_policy.as_deref(), Some("Retain"));
    let ClassSource::File(vsc) = &p.kubernetes.snapshot_class else {
        panic!("{:?}", p.kubernetes.snapshot_class);
    };
    assert_eq!(vsc.driver, "x.example.com");
    assert_eq!(vsc.deletion_policy.as_deref(), Some("Delete"));
    assert_eq!(vsc.parameters.get("tier").map(String::as_str), Some("cold"));
    // The profile's own CSI-level parameters are not touched by a class file.
    assert!(p.parameters.is_empty() && p.fs_type.is_none());
    // `profile check` prints the resolved paths, which load again.
    let out = p.to_yaml();
    assert!(out.contains(&format!("file: {}", sc.origin)), "{out}");
    assert_eq!(DriverProfile::from_yaml(&out, "out").unwrap(), p);
}

#[test]
fn missing_class_file_names_field_and_line() {
    let e = load_err(&[], FILES);
    assert!(
        e.contains("p.yaml:6: cannot read kubernetes.storage_class.file") && e.contains("sc.yaml"),
        "{e}"
    );
}

#[test]
fn existing_and_file_together_name_the_field_and_line() {
    let e = err("kubernetes:\n  storage_class:\n    existing: a\n    file: sc.yaml\n");
    assert!(
        e.starts_with("x.yaml:7: invalid kubernetes.storage_class: give either existing or file"),
        "{e}"
    );
    let e = err("kubernetes:\n  snapshot_class: {file: v.yaml, existing: b}\n");
    assert!(
        e.starts_with("x.yaml:5: invalid kubernetes.snapshot_class:"),
        "{e}"
    );
    let e = err("kubernetes:\n  storage_class:\n    file: ''\n");
    assert!(
        e.starts_with("x.yaml:6: invalid kubernetes.storage_class: file must not be empty"),
        "{e}"
    );
    let e = err("kubernetes:\n  storage_class: {}\n");
    assert!(
        e.starts_with("x.yaml:5: invalid kubernetes.storage_class: give existing or file"),
        "{e}"
    );
}

#[test]
fn unknown_keys_name_key_section_and_line() {
    let e = err("kubernetes:\n  pod_imag: busybox\n");
    assert!(
        e.starts_with("x.yaml:5: unknown key \"pod_imag\" in kubernetes (expected one of:"),
        "{e}"
    );
    let e = err("kubernetes:\n  storage_class:\n    exisiting: fast\n");
    assert!(
        e.starts_with(
            "x.yaml:6: unknown key \"exisiting\" in kubernetes.storage_class (expected one of: \
             existing, file)"
        ),
        "{e}"
    );
    let e = err("kubernetes:\n  snapshot_class: {name: snaps}\n");
    assert!(
        e.starts_with("x.yaml:5: unknown key \"name\" in kubernetes.snapshot_class"),
        "{e}"
    );
    // The rest of the profile is still checked first, by the typed pass.
    let e = err("kubernetes:\n  pod_imag: x\nclones: true\n");
    assert!(e.contains("\"clones\" in driver profile"), "{e}");
}

#[test]
fn class_reference_must_be_a_mapping() {
    let e = err("kubernetes:\n  storage_class: fast-ssd\n");
    assert!(e.starts_with("x.yaml:5:"), "{e}");
}

#[test]
fn file_kind_and_api_version_are_checked() {
    let deployment = SC.replace("kind: StorageClass", "kind: Deployment");
    let e = load_err(&[("sc.yaml", &deployment), ("vsc.yaml", VSC)], FILES);
    assert!(
        e.contains("sc.yaml: kind: is Deployment, expected StorageClass"),
        "{e}"
    );
    let no_kind = VSC.replace("kind: VolumeSnapshotClass\n", "");
    let e = load_err(&[("sc.yaml", SC), ("vsc.yaml", &no_kind)], FILES);
    assert!(
        e.contains("vsc.yaml: kind: missing, expected VolumeSnapshotClass"),
        "{e}"
    );
    let beta = VSC.replace(
        "snapshot.storage.k8s.io/v1",
        "snapshot.storage.k8s.io/v1beta1",
    );
    let e = load_err(&[("sc.yaml", SC), ("vsc.yaml", &beta)], FILES);
    assert!(
        e.contains("vsc.yaml: apiVersion: is snapshot.storage.k8s.io/v1beta1, expected"),
        "{e}"
    );
}

#[test]
fn file_driver_must_be_the_driver_under_test() {
    let other = SC.replace(
        "provisioner: x.example.com",
        "provisioner: other.example.com",
    );
    let e = load_err(&[("sc.yaml", &other), ("vsc.yaml", VSC)], FILES);
    assert!(
        e.contains("invalid kubernetes.storage_class:")
            && e.contains("\"other.example.com\"")
            && e.contains("\"x.example.com\""),
        "{e}"
    );
    let other = VSC.replace("driver: x.example.com", "driver: other.example.com");
    let e = load_err(&[("sc.yaml", SC), ("vsc.yaml", &other)], FILES);
    assert!(
        e.contains("invalid kubernetes.snapshot_class:") && e.contains("\"other.example.com\""),
        "{e}"
    );
    let none = SC.replace("provisioner: x.example.com\n", "");
    let e = load_err(&[("sc.yaml", &none), ("vsc.yaml", VSC)], FILES);
    assert!(e.contains("sc.yaml: provisioner: missing"), "{e}");
}

#[test]
fn class_policies_are_validated() {
    let cases = [
        (
            "WaitForFirstConsumer",
            "Later",
            "volumeBindingMode: must be Immediate or",
        ),
        (
            "Retain",
            "Recycle",
            "reclaimPolicy: must be Delete or Retain, got \"Recycle\"",
        ),
    ];
    for (good, bad, message) in cases {
        let sc = SC.replace(good, bad);
        let e = load_err(&[("sc.yaml", &sc), ("vsc.yaml", VSC)], FILES);
        assert!(e.contains(message), "{e}");
    }
    let vsc = VSC.replace("deletionPolicy: Delete", "deletionPolicy: Keep");
    let e = load_err(&[("sc.yaml", SC), ("vsc.yaml", &vsc)], FILES);
    assert!(
        e.contains("deletionPolicy: must be Delete or Retain"),
        "{e}"
    );
}

#[test]
fn strict_files_refuse_what_a_run_would_drop() {
    let cases = [
        (
            "reclaimPolicy: Retain\n",
            "reclaimPolicy: Retain\nprovisoner: x\n",
            "provisoner",
        ),
        (
            "reclaimPolicy: Retain\n",
            "reclaimPolicy: Retain\nallowedTopologies: []\n",
            "allowedTopologies",
        ),
        (
            "type: thin",
            "type: 3",
            "parameters.type: expected a string (quote the value)",
        ),
        (
            "allowVolumeExpansion: true",
            "allowVolumeExpansion: yes",
            "allowVolumeExpansion",
        ),
    ];
    for (from, to, message) in cases {
        let sc = SC.replace(from, to);
        let e = load_err(&[("sc.yaml", &sc), ("vsc.yaml", VSC)], FILES);
        assert!(e.contains("sc.yaml") && e.contains(message), "{to}: {e}");
    }
}

#[test]
fn existing_names_are_kubernetes_names() {
    for bad in ["Fast_SSD", "-fast", ""] {
        let text = format!("kubernetes:\n  storage_class:\n    existing: '{bad}'\n");
        let e = err(&text);
        assert!(
            e.contains("invalid kubernetes.storage_class:"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn cluster_timeouts_parse_and_must_be_positive() {
    let p = parse("timeouts:\n  bind_secs: 60\n  pod_secs: 120\n  delete_secs: 30\n").unwrap();
    let t = &p.timeouts;
    assert_eq!((t.bind_secs, t.pod_secs, t.delete_secs), (60, 120, 30));
    assert_eq!(t.rpc_secs, Timeouts::default().rpc_secs);
    let e = err("timeouts:\n  pod_secs: 0\n");
    assert!(
        e.starts_with("x.yaml: invalid timeouts: pod_secs must be at least 1"),
        "{e}"
    );
    let e = err("timeouts:\n  bound_secs: 1\n");
    assert!(
        e.starts_with("x.yaml:5: unknown key \"bound_secs\" in timeouts"),
        "{e}"
    );
}

#[test]
fn class_file_resolution_uses_the_working_directory_without_a_profile_path() {
    // from_yaml has no profile directory; an absolute path works from anywhere.
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc.yaml");
    std::fs::write(&sc, SC).unwrap();
    let text = format!(
        "kubernetes:\n  storage_class:\n    file: {}\n",
        sc.display()
    );
    let p = parse(&text).unwrap();
    assert!(
        matches!(&p.kubernetes.storage_class, ClassSource::File(s) if Path::new(&s.origin) == sc)
    );
}

#[test]
fn storageclass_fixture_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/drivers/storageclass.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = read_storage_class(&text, "storageclass.yaml", Issues::Fail).unwrap();
    assert_eq!(spec.provisioner, "csi.example.com");
    assert_eq!(
        spec.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
}

/// Loaded from its path: it names a snapshot class manifest beside it.
#[test]
fn example_fixture_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/drivers/example.yaml");
    let p = DriverProfile::load(&path).unwrap();
    assert_eq!(p.timeouts, Timeouts::default());
    let k = &p.kubernetes;
    assert_eq!(k.storage_class, ClassSource::Existing("fast-ssd".into()));
    assert!(matches!(&k.snapshot_class, ClassSource::File(s) if s.driver == p.name));
    assert!(k.pod_image.is_some());
}
