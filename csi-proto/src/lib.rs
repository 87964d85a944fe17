//! CSI (Container Storage Interface) v1 wire types and gRPC stubs.
//!
//! Everything under [`v1`] is generated at build time from this crate's own
//! `proto/csi.proto`, which was written for this project from the CSI
//! specification v1.12.0 definitions (Identity, Controller and Node services;
//! GroupController and SnapshotMetadata are not included).
//!
//! Generated layout (prost/tonic conventions):
//! * messages: `csi_proto::v1::CreateVolumeRequest`, ...
//! * nested types and oneofs live in a snake_case module named after the
//!   parent message, e.g. `v1::volume_content_source::Type`.
//! * servers: `v1::identity_server::{Identity, IdentityServer}`,
//!   `v1::controller_server::{Controller, ControllerServer}`,
//!   `v1::node_server::{Node, NodeServer}`.
//! * clients: `v1::identity_client::IdentityClient`,
//!   `v1::controller_client::ControllerClient`, `v1::node_client::NodeClient`.

/// Generated code for the `csi.v1` protobuf package.
pub mod v1 {
    #![allow(clippy::all)]
    #![allow(missing_docs)]
    tonic::include_proto!("csi.v1");
}

pub mod authority;
pub mod transport;

/// The CSI specification version these definitions follow.
pub const CSI_SPEC_VERSION: &str = "1.12.0";

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    fn volume_source(id: &str) -> VolumeContentSource {
        VolumeContentSource {
            r#type: Some(volume_content_source::Type::Volume(
                volume_content_source::VolumeSource {
                    volume_id: id.to_string(),
                },
            )),
        }
    }

    #[test]
    fn create_volume_request_with_volume_source_roundtrips() {
        let req = CreateVolumeRequest {
            name: "clone-1".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(
                    volume_capability::MountVolume {
                        fs_type: "ext4".into(),
                        mount_flags: vec![],
                        volume_mount_group: String::new(),
                    },
                )),
                access_mode: Some(volume_capability::AccessMode {
                    mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
            }],
            volume_content_source: Some(volume_source("src-vol")),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let back = CreateVolumeRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
        match back.volume_content_source.and_then(|s| s.r#type) {
            Some(volume_content_source::Type::Volume(v)) => assert_eq!(v.volume_id, "src-vol"),
            other => panic!("unexpected source: {other:?}"),
        }
    }

    #[test]
    fn wire_facts() {
        // name = field 1, length-delimited.
        let req = CreateVolumeRequest {
            name: "a".into(),
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x0a, 0x01, b'a']);

        // volume_content_source = field 6, length-delimited => tag 0x32.
        let req = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource::default()),
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x32, 0x00]);

        // VolumeContentSource.volume = field 2 (0x12), VolumeSource.volume_id = field 1.
        assert_eq!(
            volume_source("v").encode_to_vec(),
            vec![0x12, 0x03, 0x0a, 0x01, b'v']
        );
        // VolumeContentSource.snapshot = field 1 (0x0a), SnapshotSource.snapshot_id = field 1.
        let snap = VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: "s".into(),
                },
            )),
        };
        assert_eq!(snap.encode_to_vec(), vec![0x0a, 0x03, 0x0a, 0x01, b's']);

        // Volume.content_source = field 4 (0x22).
        let vol = Volume {
            content_source: Some(VolumeContentSource::default()),
            ..Default::default()
        };
        assert_eq!(vol.encode_to_vec(), vec![0x22, 0x00]);

        // Capability enum values.
        use controller_service_capability::rpc::Type as C;
        assert_eq!(C::CreateDeleteSnapshot as i32, 5);
        assert_eq!(C::CloneVolume as i32, 7);
        assert_eq!(C::ExpandVolume as i32, 9);
        assert_eq!(C::ModifyVolume as i32, 14);
        assert_eq!(C::GetSnapshot as i32, 15);
        use node_service_capability::rpc::Type as N;
        assert_eq!(N::StageUnstageVolume as i32, 1);
        assert_eq!(N::ExpandVolume as i32, 3);
        assert_eq!(N::VolumeMountGroup as i32, 6);
        assert_eq!(
            volume_capability::access_mode::Mode::SingleNodeMultiWriter as i32,
            7
        );
        assert_eq!(
            plugin_capability::service::Type::ControllerService as i32,
            1
        );
        assert_eq!(plugin_capability::volume_expansion::Type::Offline as i32, 2);
        assert_eq!(volume_usage::Unit::Inodes as i32, 2);
    }

    #[test]
    fn spec_version() {
        assert_eq!(crate::CSI_SPEC_VERSION, "1.12.0");
    }
}
