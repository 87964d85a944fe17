use super::*;
use crate::profile::SecretCall;

fn minimal(extra: &str) -> String {
    format!("name: x.example.com\ncapabilities:\n  mount: true\n{extra}")
}

#[test]
fn reference_fixture_matches_reference() {
    let parsed = DriverProfile::from_yaml(REFERENCE_YAML, "reference.yaml").unwrap();
    assert_eq!(parsed, DriverProfile::reference());
    let r = DriverProfile::reference();
    assert_eq!(r.name, "reference.csi-clone-conformance.dev");
    assert!(r.capabilities.clone && r.capabilities.stage_unstage && r.capabilities.block);
    assert_eq!(
        (r.sizes.volume_bytes, r.sizes.min_bytes, r.sizes.max_bytes),
        (64 * MI, MI, 1 << 40)
    );
    assert_eq!(r.clone.larger, LargerClone::Grow);
    assert_eq!(r.clone.delete_source_with_clones, SourceDeletion::Allowed);
    assert_eq!(r.clone.smaller, SmallerCopy::Refuse);
    assert_eq!(
        r.clone.delete_source_with_snapshots,
        SourceDeletion::Allowed
    );
    assert_eq!(r.data_plane, DataPlane::Local);
}

#[test]
fn to_yaml_round_trips() {
    for p in [
        DriverProfile::reference(),
        DriverProfile::from_yaml(&minimal(""), "m").unwrap(),
    ] {
        let text = p.to_yaml();
        assert_eq!(DriverProfile::from_yaml(&text, "out").unwrap(), p, "{text}");
    }
}

#[test]
fn unknown_keys_name_key_and_line() {
    let top = minimal("clones: true\n");
    let err = DriverProfile::from_yaml(&top, "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.yaml:4: unknown key \"clones\" in driver profile"),
        "{err}"
    );

    let nested = "name: x\ncapabilities:\n  mount: true\n  clones: true\n";
    let err = DriverProfile::from_yaml(nested, "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.yaml:4: unknown key \"clones\" in capabilities"),
        "{err}"
    );

    let flow = "name: x\n\ncapabilities: {mount: true, clones: true}\n";
    let err = DriverProfile::from_yaml(flow, "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.yaml:3: unknown key \"clones\" in capabilities"),
        "{err}"
    );

    let sizes = minimal("sizes:\n  volume: 1Gi\n");
    let err = DriverProfile::from_yaml(&sizes, "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.yaml:5: unknown key \"volume\" in sizes"),
        "{err}"
    );
}

#[test]
fn booleans_are_strict() {
    let text = "name: x\ncapabilities:\n  mount: true\n  clone: yes\n";
    let err = DriverProfile::from_yaml(text, "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("x.yaml:4:"), "{err}");
}

#[test]
fn sizes_accept_quantities_and_integers() {
    for v in ["64Mi", "67108864", "\"64Mi\""] {
        let p = DriverProfile::from_yaml(&minimal(&format!("sizes:\n  volume_bytes: {v}\n")), "x")
            .unwrap();
        assert_eq!(p.sizes.volume_bytes, 64 * MI);
    }
    let err = DriverProfile::from_yaml(&minimal("sizes:\n  volume_bytes: 64Xi\n"), "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.yaml:5:") && err.contains("sizes.volume_bytes"),
        "{err}"
    );
}

#[test]
fn min_above_volume_is_invalid_sizes() {
    let text = minimal("sizes:\n  volume_bytes: 1Mi\n  min_bytes: 2Mi\n");
    let err = DriverProfile::from_yaml(&text, "x.yaml").unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "sizes"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("x.yaml: invalid sizes:"),
        "{err}"
    );
}

#[test]
fn other_validation() {
    let no_mode = "name: x\ncapabilities:\n  clone: true\n";
    assert!(
        DriverProfile::from_yaml(no_mode, "x")
            .unwrap_err()
            .to_string()
            .contains("capabilities")
    );
    let no_caps = "name: x\n";
    let err = DriverProfile::from_yaml(no_caps, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing required key \"capabilities\""),
        "{err}"
    );
    let empty_name = "name: ''\ncapabilities:\n  mount: true\n";
    assert!(
        DriverProfile::from_yaml(empty_name, "x")
            .unwrap_err()
            .to_string()
            .contains("name")
    );
    let p = DriverProfile::from_yaml(&minimal("fs_type: ''\n"), "x").unwrap();
    assert_eq!(p.fs_type, None);
}

#[test]
fn secrets_file_resolves_relative_to_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/secrets.yaml"),
        "user: admin\npassword: hunter2\n",
    )
    .unwrap();
    let profile_path = dir.path().join("conf/p.yaml");
    std::fs::write(&profile_path, minimal("secrets_file: secrets.yaml\n")).unwrap();
    let p = DriverProfile::load(&profile_path).unwrap();
    assert_eq!(
        p.secrets.for_call(SecretCall::CreateVolume)["password"],
        "hunter2"
    );
    assert_eq!(
        p.secrets_file.as_deref(),
        Some(dir.path().join("conf/secrets.yaml").as_path())
    );
    assert!(!p.to_yaml().contains("hunter2"));

    std::fs::write(&profile_path, minimal("secrets_file: missing.yaml\n")).unwrap();
    let err = DriverProfile::load(&profile_path).unwrap_err();
    assert!(matches!(err, ProfileError::SecretsFile { .. }), "{err}");
}

#[test]
fn topology_keys_need_the_topology_capability() {
    let err = DriverProfile::from_yaml(&minimal("topology_keys: [zone]\n"), "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("topology_keys") && err.contains("capabilities.topology"),
        "{err}"
    );
    let text = "name: x.example.com\ncapabilities:\n  mount: true\n  topology: true\ntopology_keys: [zone]\n";
    let profile = DriverProfile::from_yaml(text, "x.yaml").unwrap();
    assert_eq!(profile.topology_keys, ["zone"]);
}
