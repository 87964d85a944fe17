//! CreateVolume-with-content-source rules that csi-sanity does not check (catalogue §1.6, §6):
//! response content, missing and malformed sources, access-type mismatch, capacity vs source,
//! idempotent replays and ALREADY_EXISTS, and the CLONE_VOLUME capability gate.

mod common;

use common::*;
use csi_proto::v1::{self as csi, controller_service_capability::rpc::Type as Rpc};
use tonic::Code;

const SIZE: u64 = 16 * MIB;

fn caps() -> [(&'static str, csi::VolumeCapability); 2] {
    [("mount", mount_cap("ext4")), ("block", block_cap())]
}

fn range(required: u64, limit: u64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange {
        required_bytes: required as i64,
        limit_bytes: limit as i64,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_response_echoes_volume_source() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), SIZE, None))
            .await;
        assert_eq!(
            source_of(&src),
            None,
            "an empty volume has no content_source"
        );
        let clone = h
            .create_ok(req(
                &format!("clone-{kind}"),
                cap,
                SIZE,
                vol_src(&src.volume_id),
            ))
            .await;
        assert_eq!(
            source_of(&clone),
            Some(("volume", src.volume_id.clone())),
            "{kind}"
        );
        assert!(
            clone.capacity_bytes >= SIZE as i64,
            "{kind}: {}",
            clone.capacity_bytes
        );
        assert_ne!(clone.volume_id, src.volume_id, "{kind}");
        // ListVolumes reports the clone with the same source.
        let listed = h.volumes().await;
        let entry = listed
            .iter()
            .find(|v| v.volume_id == clone.volume_id)
            .expect("listed");
        assert_eq!(source_of(entry), source_of(&clone));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_response_echoes_snapshot_source() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), SIZE, None))
            .await;
        let snap = h.snapshot(&format!("snap-{kind}"), &src.volume_id).await;
        let restored = h
            .create_ok(req(
                &format!("restore-{kind}"),
                cap,
                SIZE,
                snap_src(&snap.snapshot_id),
            ))
            .await;
        assert_eq!(
            source_of(&restored),
            Some(("snapshot", snap.snapshot_id.clone()))
        );
        assert!(restored.capacity_bytes >= snap.size_bytes, "{kind}");
        assert_ne!(restored.volume_id, src.volume_id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_of_unknown_volume_is_not_found() {
    let h = Harness::start().await;
    let ids = [
        format!("vol-{}", uuid::Uuid::new_v4()),
        "fake-vol-id-123".to_string(),
        format!("fake-vol-id-{}", uuid::Uuid::new_v4().simple()),
    ];
    for (kind, cap) in caps() {
        for id in &ids {
            h.create_err(
                req(&format!("c-{kind}-{id}"), cap.clone(), SIZE, vol_src(id)),
                Code::NotFound,
            )
            .await;
        }
    }
    assert!(
        h.volume_ids().await.is_empty(),
        "a failed clone left a volume"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_unknown_source_id_gets_a_short_not_found() {
    // The message travels in the grpc-message header: a 100 kB id echoed whole would turn the
    // answer into a transport error for clients with a 16 KiB header limit.
    let h = Harness::start().await;
    let id = "v".repeat(100_000);
    let status = h
        .create_err(
            req("huge-id", mount_cap(""), SIZE, vol_src(&id)),
            Code::NotFound,
        )
        .await;
    let message = status.message();
    assert!(message.len() < 1024, "{} bytes", message.len());
    assert!(message.contains("(100000 bytes)"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_of_unknown_snapshot_is_not_found() {
    let h = Harness::start().await;
    for id in [
        format!("snap-{}", uuid::Uuid::new_v4()),
        "non-existing-snapshot-id".into(),
    ] {
        h.create_err(
            req(&format!("r-{id}"), mount_cap(""), SIZE, snap_src(&id)),
            Code::NotFound,
        )
        .await;
    }
    assert!(h.volume_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_of_just_deleted_volume_is_not_found() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), SIZE, None))
            .await;
        h.delete(&src.volume_id).await;
        h.create_err(
            req(&format!("clone-{kind}"), cap, SIZE, vol_src(&src.volume_id)),
            Code::NotFound,
        )
        .await;
    }
    assert!(h.volume_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_of_just_deleted_snapshot_is_not_found() {
    let h = Harness::start().await;
    let src = h.create_ok(req("src", block_cap(), SIZE, None)).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    h.delete_snapshot(&snap.snapshot_id).await;
    h.create_err(
        req("restore", block_cap(), SIZE, snap_src(&snap.snapshot_id)),
        Code::NotFound,
    )
    .await;
    assert_eq!(h.volume_ids().await, vec![src.volume_id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_source_without_type_is_invalid_argument() {
    let h = Harness::start().await;
    let mut r = req("untyped", mount_cap(""), SIZE, None);
    r.volume_content_source = Some(csi::VolumeContentSource { r#type: None });
    let status = h.create_err(r, Code::InvalidArgument).await;
    assert!(
        status.message().contains("volume_content_source"),
        "message should name the field: {}",
        status.message()
    );
    assert!(h.volume_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_source_volume_id_is_invalid_argument() {
    let h = Harness::start().await;
    let s = h
        .create_err(
            req("c", mount_cap(""), SIZE, vol_src("")),
            Code::InvalidArgument,
        )
        .await;
    assert!(s.message().contains("volume_id"), "{}", s.message());
    assert!(h.volume_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_source_snapshot_id_is_invalid_argument() {
    let h = Harness::start().await;
    let s = h
        .create_err(
            req("r", mount_cap(""), SIZE, snap_src("")),
            Code::InvalidArgument,
        )
        .await;
    assert!(s.message().contains("snapshot_id"), "{}", s.message());
    assert!(h.volume_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_with_other_access_type_is_invalid_argument() {
    let h = Harness::start().await;
    let block = h.create_ok(req("block-src", block_cap(), SIZE, None)).await;
    let mount = h
        .create_ok(req("mount-src", mount_cap("ext4"), SIZE, None))
        .await;
    h.create_err(
        req("b2m", mount_cap("ext4"), SIZE, vol_src(&block.volume_id)),
        Code::InvalidArgument,
    )
    .await;
    h.create_err(
        req(
            "b2m-default",
            mount_cap(""),
            SIZE,
            vol_src(&block.volume_id),
        ),
        Code::InvalidArgument,
    )
    .await;
    h.create_err(
        req("m2b", block_cap(), SIZE, vol_src(&mount.volume_id)),
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(
        h.volume_ids().await.len(),
        2,
        "a refused clone left a volume"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_with_other_access_type_is_invalid_argument() {
    let h = Harness::start().await;
    let block = h.create_ok(req("block-src", block_cap(), SIZE, None)).await;
    let mount = h
        .create_ok(req("mount-src", mount_cap("ext4"), SIZE, None))
        .await;
    let block_snap = h.snapshot("block-snap", &block.volume_id).await;
    let mount_snap = h.snapshot("mount-snap", &mount.volume_id).await;
    h.create_err(
        req(
            "b2m",
            mount_cap(""),
            SIZE,
            snap_src(&block_snap.snapshot_id),
        ),
        Code::InvalidArgument,
    )
    .await;
    h.create_err(
        req("m2b", block_cap(), SIZE, snap_src(&mount_snap.snapshot_id)),
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(h.volume_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_with_other_fs_type_is_invalid_argument() {
    let h = Harness::start().await;
    let ext4 = h
        .create_ok(req("ext4-src", mount_cap("ext4"), SIZE, None))
        .await;
    h.create_err(
        req("xfs", mount_cap("xfs"), 300 * MIB, vol_src(&ext4.volume_id)),
        Code::InvalidArgument,
    )
    .await;
    // An empty fs_type inherits the source's filesystem.
    let clone = h
        .create_ok(req("any", mount_cap(""), 0, vol_src(&ext4.volume_id)))
        .await;
    assert_eq!(
        clone.volume_context.get("fsType").map(String::as_str),
        Some("ext4")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_smaller_than_source_is_out_of_range() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), 32 * MIB, None))
            .await;
        assert_eq!(src.capacity_bytes, 32 * MIB as i64);
        for smaller in [16 * MIB, 32 * MIB - 4096] {
            h.create_err(
                req(
                    &format!("c-{kind}-{smaller}"),
                    cap.clone(),
                    smaller,
                    vol_src(&src.volume_id),
                ),
                Code::OutOfRange,
            )
            .await;
        }
    }
    assert_eq!(h.volume_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_limit_below_source_is_out_of_range() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), 32 * MIB, None))
            .await;
        for (required, limit) in [(0, 16 * MIB), (8 * MIB, 16 * MIB), (0, 32 * MIB - 4096)] {
            let mut r = req(
                &format!("c-{kind}-{limit}-{required}"),
                cap.clone(),
                0,
                vol_src(&src.volume_id),
            );
            r.capacity_range = range(required, limit);
            h.create_err(r, Code::OutOfRange).await;
        }
        // limit == source size is honoured exactly.
        let mut r = req(
            &format!("exact-{kind}"),
            cap.clone(),
            0,
            vol_src(&src.volume_id),
        );
        r.capacity_range = range(32 * MIB, 32 * MIB);
        assert_eq!(h.create_ok(r).await.capacity_bytes, 32 * MIB as i64);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_without_capacity_range_has_source_size() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        // Not a round number: the clone must take the source's size, not a default.
        let size = 20 * MIB + 8192;
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), size, None))
            .await;
        assert_eq!(src.capacity_bytes, size as i64);
        let clone = h
            .create_ok(req(&format!("c-{kind}"), cap, 0, vol_src(&src.volume_id)))
            .await;
        assert_eq!(clone.capacity_bytes, src.capacity_bytes, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_smaller_than_snapshot_is_out_of_range() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), 32 * MIB, None))
            .await;
        let snap = h.snapshot(&format!("snap-{kind}"), &src.volume_id).await;
        assert_eq!(snap.size_bytes, 32 * MIB as i64);
        h.create_err(
            req(
                &format!("small-{kind}"),
                cap.clone(),
                16 * MIB,
                snap_src(&snap.snapshot_id),
            ),
            Code::OutOfRange,
        )
        .await;
        let mut r = req(
            &format!("limit-{kind}"),
            cap.clone(),
            0,
            snap_src(&snap.snapshot_id),
        );
        r.capacity_range = range(0, 16 * MIB);
        h.create_err(r, Code::OutOfRange).await;
        let same = h
            .create_ok(req(
                &format!("same-{kind}"),
                cap,
                0,
                snap_src(&snap.snapshot_id),
            ))
            .await;
        assert_eq!(same.capacity_bytes, snap.size_bytes);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_replay_returns_same_volume() {
    let h = Harness::start().await;
    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), SIZE, None))
            .await;
        let request = req(
            &format!("clone-{kind}"),
            cap.clone(),
            SIZE,
            vol_src(&src.volume_id),
        );
        let first = h.create_ok(request.clone()).await;
        for _ in 0..2 {
            let again = h.create_ok(request.clone()).await;
            assert_eq!(again.volume_id, first.volume_id, "{kind}");
            assert_eq!(again.capacity_bytes, first.capacity_bytes);
            assert_eq!(source_of(&again), Some(("volume", src.volume_id.clone())));
        }
        // A replay with no capacity_range is compatible too.
        let loose = h
            .create_ok(req(
                &format!("clone-{kind}"),
                cap,
                0,
                vol_src(&src.volume_id),
            ))
            .await;
        assert_eq!(loose.volume_id, first.volume_id);
    }
    assert_eq!(h.volume_ids().await.len(), 4, "replays created volumes");
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_name_reused_with_other_source_is_already_exists() {
    let h = Harness::start().await;
    let cap = block_cap();
    let src = h.create_ok(req("src", cap.clone(), SIZE, None)).await;
    let other = h.create_ok(req("other", cap.clone(), SIZE, None)).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    let clone = h
        .create_ok(req("clone", cap.clone(), SIZE, vol_src(&src.volume_id)))
        .await;
    for source in [vol_src(&other.volume_id), snap_src(&snap.snapshot_id), None] {
        h.create_err(req("clone", cap.clone(), SIZE, source), Code::AlreadyExists)
            .await;
    }
    // And the other way round: a name first used without a source.
    h.create_err(
        req("other", cap.clone(), SIZE, vol_src(&src.volume_id)),
        Code::AlreadyExists,
    )
    .await;
    let ids = h.volume_ids().await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&clone.volume_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_replay_returns_same_volume() {
    let h = Harness::start().await;
    let cap = mount_cap("ext4");
    let src = h.create_ok(req("src", cap.clone(), SIZE, None)).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    let other_snap = h.snapshot("snap2", &src.volume_id).await;
    let request = req("restore", cap.clone(), SIZE, snap_src(&snap.snapshot_id));
    let first = h.create_ok(request.clone()).await;
    let again = h.create_ok(request).await;
    assert_eq!(again.volume_id, first.volume_id);
    assert_eq!(
        source_of(&again),
        Some(("snapshot", snap.snapshot_id.clone()))
    );
    for source in [
        snap_src(&other_snap.snapshot_id),
        vol_src(&src.volume_id),
        None,
    ] {
        h.create_err(
            req("restore", cap.clone(), SIZE, source),
            Code::AlreadyExists,
        )
        .await;
    }
    assert_eq!(h.volume_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_without_clone_capability_is_invalid_argument() {
    let h = Harness::with_args(&[
        "--features",
        "snapshot,list-volumes,list-snapshots,expand,get-capacity,get-volume",
    ])
    .await;
    let advertised = h
        .ctl()
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .expect("ControllerGetCapabilities")
        .into_inner()
        .capabilities;
    let rpcs: Vec<i32> = advertised
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(csi::controller_service_capability::Type::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    assert!(
        !rpcs.contains(&(Rpc::CloneVolume as i32)),
        "CLONE_VOLUME (7) advertised: {rpcs:?}"
    );
    assert_eq!(Rpc::CloneVolume as i32, 7);
    assert!(
        rpcs.contains(&(Rpc::CreateDeleteSnapshot as i32)),
        "{rpcs:?}"
    );

    for (kind, cap) in caps() {
        let src = h
            .create_ok(req(&format!("src-{kind}"), cap.clone(), SIZE, None))
            .await;
        h.create_err(
            req(
                &format!("clone-{kind}"),
                cap.clone(),
                SIZE,
                vol_src(&src.volume_id),
            ),
            Code::InvalidArgument,
        )
        .await;
        // Restores stay available: CREATE_DELETE_SNAPSHOT is still advertised.
        let snap = h.snapshot(&format!("snap-{kind}"), &src.volume_id).await;
        h.create_ok(req(
            &format!("restore-{kind}"),
            cap,
            SIZE,
            snap_src(&snap.snapshot_id),
        ))
        .await;
    }
    assert_eq!(h.volume_ids().await.len(), 4);
}
