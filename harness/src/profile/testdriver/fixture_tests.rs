//! The driver files of public CSI drivers (`fixtures/drivers/testdriver/`, written from the
//! keys and values those projects document) load without error, mean what their authors meant,
//! and draw no warning about a key e2e knows.

use super::load_testdriver;
use super::tests::fixture;
use crate::profile::{ClassSource, Discoverable, DriverProfile, Timeouts};

const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;

/// Loads a fixture; the warnings about dropped keys must be exactly `dropped` (key names).
fn load(name: &str, dropped: &[&str]) -> (DriverProfile, String) {
    let (p, warnings) = load_testdriver(&fixture(&format!("testdriver/{name}"))).unwrap();
    let about_keys: Vec<&String> = (warnings.iter())
        .filter(|w| {
            w.contains("unknown key") || w.contains("ignored by e2e") || w.contains("capability \"")
        })
        .collect();
    assert_eq!(about_keys.len(), dropped.len(), "{name}: {about_keys:#?}");
    for key in dropped {
        assert!(
            about_keys.iter().any(|w| w.contains(&format!("\"{key}\""))),
            "{name}: {key} not named in {about_keys:#?}"
        );
    }
    // Nothing the format cannot say is taken as false.
    assert_eq!(
        p.capabilities.undeclared,
        Discoverable::ALL.into_iter().collect()
    );
    assert!(p.capabilities.mount);
    (p, warnings.join("\n"))
}

#[test]
fn hostpath() {
    let (p, w) = load("hostpath.yaml", &[]);
    assert_eq!(p.name, "hostpath.csi.k8s.io");
    let c = &p.capabilities;
    assert!(c.clone && c.snapshot && c.block && c.expansion && c.node_expansion && c.topology);
    assert_eq!(
        (p.sizes.min_bytes, p.sizes.volume_bytes),
        (1 << 20, 64 << 20)
    );
    assert_eq!((p.fs_type.as_deref(), p.topology_keys.len()), (None, 0));
    assert_eq!(p.timeouts, Timeouts::default());
    assert!(p.kubernetes.storage_class.is_created() && p.kubernetes.snapshot_class.is_created());
    assert!(!w.contains("SupportedFsType"), "{w}");
}

#[test]
fn aws_ebs() {
    let (p, w) = load("aws-ebs.yaml", &["ShortName"]);
    assert_eq!(p.name, "ebs.csi.aws.com");
    let c = &p.capabilities;
    assert!(c.snapshot && c.block && c.expansion && c.node_expansion && c.topology);
    assert!(!c.clone);
    assert!(
        w.contains("pvcDataSource is not true, so clone cases will be skipped"),
        "{w}"
    );
    let s = &p.sizes;
    assert_eq!(
        (s.min_bytes, s.max_bytes, s.volume_bytes),
        (GI, 16 * TI, GI)
    );
    // The default entry; e2e also tests the listed types.
    assert_eq!(p.fs_type, None);
    assert!(
        w.contains("with its default entry and with ext4, ntfs, xfs"),
        "{w}"
    );
    assert_eq!(p.topology_keys, ["topology.ebs.csi.aws.com/zone"]);
    assert_eq!(p.timeouts.pod_secs, 600);
    let ClassSource::File(sc) = &p.kubernetes.storage_class else {
        panic!("{:?}", p.kubernetes.storage_class);
    };
    assert_eq!(
        sc.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert!(p.parameters.is_empty());
}

#[test]
fn gcp_pd() {
    let (p, w) = load("gcp-pd.yaml", &[]);
    // The class's provisioner, not the display name.
    assert_eq!(p.name, "pd.csi.storage.gke.io");
    assert!(
        w.contains("DriverInfo.Name \"csi-gcepd-sc-xfs\" differs"),
        "{w}"
    );
    let c = &p.capabilities;
    assert!(c.clone && c.snapshot && c.block && c.expansion && c.node_expansion && c.topology);
    let s = &p.sizes;
    assert_eq!(
        (s.min_bytes, s.max_bytes, s.volume_bytes),
        (5 * GI, 64 * TI, 5 * GI)
    );
    // The class's fstype is e2e's default entry; the other listed types are named.
    assert_eq!(p.fs_type.as_deref(), Some("xfs"));
    assert!(
        w.contains("with its default entry and with ext2, ext3, ext4;"),
        "{w}"
    );
    assert_eq!(
        p.parameters.get("type").map(String::as_str),
        Some("pd-balanced")
    );
    assert_eq!(p.parameters.len(), 1);
    let labels = p.snapshot_parameters.get("labels").map(String::as_str);
    assert_eq!(labels, Some("key1=value1,key2=value2"));
    assert!(matches!(p.kubernetes.snapshot_class, ClassSource::File(_)));
    assert_eq!(p.topology_keys, ["topology.gke.io/zone"]);
    assert_eq!(p.timeouts.clone_secs, 480);
}

#[test]
fn azuredisk() {
    let (p, w) = load("azuredisk.yaml", &[]);
    assert_eq!(p.name, "disk.csi.azure.com");
    let c = &p.capabilities;
    assert!(c.snapshot && c.block && c.expansion && c.node_expansion && c.topology);
    assert!(!c.clone);
    // No size range: e2e's 5Gi minimum.
    assert_eq!((p.sizes.min_bytes, p.sizes.volume_bytes), (5 * GI, 5 * GI));
    assert_eq!(p.fs_type, None);
    assert!(!w.contains("SupportedFsType"), "{w}");
}
