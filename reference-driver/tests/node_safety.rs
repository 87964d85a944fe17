//! Node operations that cannot be half-done, and never harm what is not theirs: failed detaches, mounts removed behind the driver's back, volumes
//! without a filesystem, mounts that were at the staging path first, the clone-shares-source
//! fault (one filesystem, one loop device), and SIGKILL mid-stage. After each step the host
//! (/proc/self/mountinfo, the loop devices bound to the image) must agree with state.json, and
//! no filesystem may have been frozen (the node dirs are on the test's own scratch ext4).
//!
//! Where a step needs the host to misbehave, the driver runs with a `losetup` wrapper first on
//! its PATH that passes through to the real one but can, per knob file, fail one detach or
//! sleep after an attach or before a detach.

mod common;
#[path = "node_support/mod.rs"]
mod support;

use std::fs;

use common::*;
use csi_proto::v1 as csi;
use support::*;
use tonic::Code;

// ---------- the tests ----------

#[tokio::test(flavor = "multi_thread")]
async fn failed_detach_is_recorded_and_retried() {
    let mut h = with_knobs(Harness::start().await).await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");

    // Retried by the next NodeUnstage.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    let device = loops_of(&image(&h, &vol)).pop().unwrap();
    set_knob(&h, "fail-detach", true);
    let err = unstage(&h, &vol, &staging, None).await.unwrap_err();
    assert!(err.message().contains("injected detach failure"), "{err:?}");
    assert!(
        staged_record(&h, &vol).is_none(),
        "staged kept after a successful unmount"
    );
    assert!(mounts_at(&staging).is_empty());
    assert_eq!(node_work(&h, &vol)["pending_detach"][0], device.as_str());
    assert_eq!(loops_of(&image(&h, &vol)), vec![device.clone()]);
    // Not staged: a clone and a snapshot copy the image and freeze nothing.
    clone_and_snapshot(&h, &vol, "pending").await;
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);

    // Retried by the next NodeStage, before it attaches.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    set_knob(&h, "fail-detach", true);
    assert!(unstage(&h, &vol, &staging, None).await.is_err());
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    assert_agree(&h, &vol, &staging, true);
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);

    // A start-up retry that fails again stays pending for the next NodeUnstage.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    set_knob(&h, "fail-detach", true);
    assert!(unstage(&h, &vol, &staging, None).await.is_err());
    set_knob(&h, "fail-detach", true);
    h.stop();
    h.restart().await;
    assert!(
        !knob(&h, "fail-detach").exists(),
        "start-up did not retry the detach"
    );
    assert_eq!(
        node_work(&h, &vol)["pending_detach"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);

    // Retried at start-up.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    set_knob(&h, "fail-detach", true);
    assert!(unstage(&h, &vol, &staging, None).await.is_err());
    h.stop();
    h.restart().await;
    assert_agree(&h, &vol, &staging, true);

    // Retried by DeleteVolume, with no NodeUnstage or restart between: refused while the
    // detach fails again (image kept), then the volume goes and nothing is left.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    set_knob(&h, "fail-detach", true);
    assert!(unstage(&h, &vol, &staging, None).await.is_err());
    let img = image(&h, &vol);
    set_knob(&h, "fail-detach", true);
    let request = csi::DeleteVolumeRequest {
        volume_id: vol.clone(),
        ..Default::default()
    };
    let err = h.ctl().delete_volume(request).await.unwrap_err();
    assert!(err.message().contains("injected detach failure"), "{err:?}");
    assert!(img.exists() && h.volume_ids().await.contains(&vol));
    assert_eq!(loops_of(&img).len(), 1, "the device was not kept pending");
    h.delete(&vol).await;
    assert!(!img.exists(), "image kept after DeleteVolume");
    assert!(loops_of(&img).is_empty() && node_work(&h, &vol).is_null());
    never_frozen(&h, "failed detaches");
}

#[tokio::test(flavor = "multi_thread")]
async fn restage_verifies_the_mount_and_repairs_or_refuses() {
    let h = Harness::start().await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    fs::write(staging.join("kept"), b"data").unwrap();

    // Unmounted behind the driver's back: the re-stage mounts the recorded device again.
    rustix::mount::unmount(&staging, rustix::mount::UnmountFlags::empty()).unwrap();
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    assert_agree(&h, &vol, &staging, true);
    assert_eq!(fs::read(staging.join("kept")).unwrap(), b"data");
    clone_and_snapshot(&h, &vol, "remounted").await;

    // Replaced by another filesystem: refused, and the other mount is left alone.
    rustix::mount::unmount(&staging, rustix::mount::UnmountFlags::empty()).unwrap();
    mount_tmpfs(&staging);
    let r = stage(&h, &vol, &staging, &mount_cap(""), None).await;
    assert_eq!(code_of(r), Code::FailedPrecondition);
    let r = unstage(&h, &vol, &staging, None).await;
    assert_eq!(code_of(r), Code::FailedPrecondition);
    assert_eq!(
        mounts_at(&staging)[0].1,
        "tmpfs",
        "the foreign mount was touched"
    );
    never_frozen(&h, "foreign mount at staging");
    rustix::mount::unmount(&staging, rustix::mount::UnmountFlags::empty()).unwrap();
    // Now nothing is mounted there: the unstage finishes (detach) and the host agrees.
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_errors_touch_only_what_they_made() {
    let h = Harness::start().await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;

    // A mount already at the staging path: refused, and it stays.
    let staging = staging_dir(&h, "pre");
    mount_tmpfs(&staging);
    fs::write(staging.join("theirs"), b"x").unwrap();
    let r = stage(&h, &vol, &staging, &mount_cap(""), None).await;
    assert_eq!(code_of(r), Code::FailedPrecondition);
    let mounts = mounts_at(&staging);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].1, "tmpfs");
    assert!(staging.join("theirs").exists());
    assert!(loops_of(&image(&h, &vol)).is_empty());
    rustix::mount::unmount(&staging, rustix::mount::UnmountFlags::empty()).unwrap();

    // The mount itself fails (no filesystem left in the image): nothing attached or mounted.
    let staging = staging_dir(&h, "bad");
    let img = fs::OpenOptions::new()
        .write(true)
        .open(image(&h, &vol))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&img, &vec![0u8; 1 << 20], 0).unwrap();
    img.sync_all().unwrap();
    let r = stage(&h, &vol, &staging, &mount_cap(""), None).await;
    assert_ne!(code_of(r), Code::Ok);
    assert!(staged_record(&h, &vol).is_none());
    assert_agree(&h, &vol, &staging, true);
    never_frozen(&h, "failed stages");
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_stage_of_a_volume_without_filesystem_is_refused() {
    let h = Harness::with_args(&["--fault", "failed-clone-leaks"]).await;
    let src = h
        .create_ok(req("src", mount_cap(""), 2 * VOL, None))
        .await
        .volume_id;
    // Smaller than its source: OUT_OF_RANGE, and the fault leaves a volume with no filesystem.
    h.create_err(
        req("leaked", mount_cap(""), VOL, vol_src(&src)),
        Code::OutOfRange,
    )
    .await;
    let leaked = h
        .volumes()
        .await
        .into_iter()
        .find(|v| v.volume_id != src)
        .expect("the fault leaks a volume")
        .volume_id;
    assert!(h.state_json()["volumes"][&leaked]["fs_type"].is_null());
    let staging = staging_dir(&h, "leaked");
    let r = stage(&h, &leaked, &staging, &mount_cap(""), None).await;
    assert_eq!(code_of(r), Code::FailedPrecondition);
    assert_agree(&h, &leaked, &staging, true);
    // Nothing staged, so a clone or snapshot of it has nothing to freeze.
    let snap = h.snapshot("leaked-snap", &leaked).await;
    never_frozen(&h, "clone of a volume without filesystem");
    h.delete_snapshot(&snap.snapshot_id).await;
    h.delete(&leaked).await;
    h.delete(&src).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_shares_source_mounts_one_filesystem_once() {
    let h = Harness::with_args(&["--fault", "clone-shares-source"]).await;
    for (round, source_first) in [(0, true), (1, false)] {
        let src = h
            .create_ok(req(&format!("src{round}"), mount_cap(""), VOL, None))
            .await
            .volume_id;
        let src_staging = staging_dir(&h, &format!("src{round}"));
        stage(&h, &src, &src_staging, &mount_cap(""), None)
            .await
            .unwrap();
        let clone = h
            .create_ok(req(
                &format!("clone{round}"),
                mount_cap(""),
                0,
                vol_src(&src),
            ))
            .await
            .volume_id;
        let clone_staging = staging_dir(&h, &format!("clone{round}"));
        stage(&h, &clone, &clone_staging, &mount_cap(""), None)
            .await
            .unwrap();
        never_frozen(&h, "clone of a staged source");

        let loops = loops_of(&image(&h, &src));
        assert_eq!(
            loops.len(),
            1,
            "one loop device for the shared image: {loops:?}"
        );
        assert_eq!(
            loops_of(&image(&h, &clone)),
            loops,
            "the clone's image is the source's"
        );
        let dev = rdev(&loops[0]);
        let mut on_device = mounts_of_dev(&dev, &h.node_root);
        on_device.sort();
        let mut expected = vec![
            src_staging.canonicalize().unwrap(),
            clone_staging.canonicalize().unwrap(),
        ];
        expected.sort();
        assert_eq!(
            on_device, expected,
            "one ext4 ({dev}), seen at both staging paths"
        );
        // The fault is still the fault: writes leak both ways.
        fs::write(clone_staging.join("leak"), b"x").unwrap();
        assert!(src_staging.join("leak").exists());

        let order = if source_first {
            [(&src, &src_staging), (&clone, &clone_staging)]
        } else {
            [(&clone, &clone_staging), (&src, &src_staging)]
        };
        unstage(&h, order[0].0, order[0].1, None).await.unwrap();
        assert_eq!(
            loops_of(&image(&h, &src)),
            loops,
            "detached while still in use"
        );
        assert_eq!(
            mounts_of_dev(&dev, &h.node_root),
            vec![order[1].1.canonicalize().unwrap()]
        );
        assert!(order[1].1.join("leak").exists());
        unstage(&h, order[1].0, order[1].1, None).await.unwrap();
        assert!(loops_of(&image(&h, &src)).is_empty());
        assert!(mounts_of_dev(&dev, &h.node_root).is_empty());
        assert!(h.state_json()["node_work"].is_null(), "{}", h.state_json());
        h.delete(&clone).await;
        h.delete(&src).await;
    }
    never_frozen(&h, "shared source");
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_shares_source_block_volumes_share_one_device() {
    let h = Harness::with_args(&["--fault", "clone-shares-source"]).await;
    let src = h
        .create_ok(req("src", block_cap(), VOL, None))
        .await
        .volume_id;
    let src_staging = staging_dir(&h, "src");
    stage(&h, &src, &src_staging, &block_cap(), None)
        .await
        .unwrap();
    let clone = h
        .create_ok(req("clone", block_cap(), 0, vol_src(&src)))
        .await
        .volume_id;
    let clone_staging = staging_dir(&h, "clone");
    stage(&h, &clone, &clone_staging, &block_cap(), None)
        .await
        .unwrap();
    let loops = loops_of(&image(&h, &src));
    assert_eq!(loops.len(), 1, "{loops:?}");
    let state = h.state_json();
    assert_eq!(
        state["volumes"][&clone]["staged"]["device"],
        loops[0].as_str()
    );
    unstage(&h, &src, &src_staging, None).await.unwrap();
    assert_eq!(
        loops_of(&image(&h, &clone)),
        loops,
        "detached under the clone"
    );
    unstage(&h, &clone, &clone_staging, None).await.unwrap();
    assert!(loops_of(&image(&h, &clone)).is_empty());
    h.delete(&clone).await;
    h.delete(&src).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_sigkill_reconciles_the_node() {
    let mut h = with_knobs(Harness::start().await).await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");

    // Killed between attach and mount: the intent is recorded, the device is not.
    set_knob(&h, "slow-attach", true);
    let in_flight = {
        let (h_node, vol, staging) = (h.node(), vol.clone(), staging.clone());
        tokio::spawn(async move {
            let mut node = h_node;
            node.node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: vol,
                staging_target_path: s(&staging),
                volume_capability: Some(mount_cap("")),
                ..Default::default()
            })
            .await
        })
    };
    let img = image(&h, &vol);
    wait_for("the attach", || !loops_of(&img).is_empty()).await;
    assert!(
        !node_work(&h, &vol)["intent"].is_null(),
        "intent recorded before attaching"
    );
    h.kill();
    set_knob(&h, "slow-attach", false);
    let _ = in_flight.await;
    h.restart().await;
    assert_agree(&h, &vol, &staging, true);

    // Killed after the mount, before the record: simulated by dropping the record.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    h.kill();
    let state_file = h.state_dir.join("state.json");
    let mut state = h.state_json();
    state["volumes"][&vol]["staged"] = serde_json::Value::Null;
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(mounts_at(&staging).len(), 1);
    h.restart().await;
    assert_agree(&h, &vol, &staging, true);

    // Killed between a publish's bind and its record: the intent names the target, and the
    // restart unmounts it; a bind of the staged volume that the driver never made (a CO's own,
    // say) is not the driver's to remove.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    let target = staging.parent().unwrap().join("target");
    h.node()
        .node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: s(&staging),
            target_path: s(&target),
            volume_capability: Some(mount_cap("")),
            ..Default::default()
        })
        .await
        .unwrap();
    let foreign = staging.parent().unwrap().join("co-bind");
    fs::create_dir_all(&foreign).unwrap();
    rustix::mount::mount_bind(&staging, &foreign).unwrap();
    h.kill();
    let mut state = h.state_json();
    state["volumes"][&vol]["published"] = serde_json::json!({});
    state["node_work"] = serde_json::json!({ &vol: { "intent": { "publish": s(&target) } } });
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    h.restart().await;
    assert!(
        mounts_at(&target).is_empty(),
        "the unrecorded publish bind stayed"
    );
    assert_eq!(
        mounts_at(&foreign).len(),
        1,
        "a bind the driver never made was removed"
    );
    assert_agree(&h, &vol, &staging, true);
    rustix::mount::unmount(&foreign, rustix::mount::UnmountFlags::empty()).unwrap();
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);

    // A record whose mount went while the driver was down: dropped, device detached.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    h.kill();
    rustix::mount::unmount(&staging, rustix::mount::UnmountFlags::empty()).unwrap();
    h.restart().await;
    assert!(staged_record(&h, &vol).is_none());
    assert_agree(&h, &vol, &staging, true);
    clone_and_snapshot(&h, &vol, "after-restart").await;
    never_frozen(&h, "restarts");
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_compared_normalised() {
    let h = Harness::start().await;
    let vol = h
        .create_ok(req("v", block_cap(), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");
    let odd_staging = staging.join("..").join("staging");
    stage(&h, &vol, &odd_staging, &block_cap(), None)
        .await
        .unwrap();
    stage(&h, &vol, &staging, &block_cap(), None).await.unwrap();
    let target = staging.parent().unwrap().join("target");
    let odd_target = staging.parent().unwrap().join("x/../target");
    h.node()
        .node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: s(&staging),
            target_path: s(&odd_target),
            volume_capability: Some(block_cap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mounts_at(&target).len(), 1);
    h.node()
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: vol.clone(),
            target_path: s(&target),
        })
        .await
        .unwrap();
    assert!(
        mounts_at(&target).is_empty() && !target.exists(),
        "the mount leaked"
    );
    unstage(&h, &vol, &odd_staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, false);
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_never_covers_what_a_target_holds() {
    let h = Harness::start().await;
    for (name, cap) in [("m", mount_cap("ext4")), ("b", block_cap())] {
        let vol = h
            .create_ok(req(name, cap.clone(), VOL, None))
            .await
            .volume_id;
        let staging = staging_dir(&h, name);
        stage(&h, &vol, &staging, &cap, None).await.unwrap();
        let parent = staging.parent().unwrap().to_path_buf();
        let publish = |target: &std::path::Path| {
            let (mut node, vol, cap) = (h.node(), vol.clone(), cap.clone());
            let request = csi::NodePublishVolumeRequest {
                volume_id: vol,
                staging_target_path: s(&staging),
                target_path: s(target),
                volume_capability: Some(cap),
                ..Default::default()
            };
            async move { node.node_publish_volume(request).await.map(drop) }
        };
        // The other kind of node where the target should be: malformed.
        let wrong_kind = parent.join("wrong-kind");
        match name {
            "m" => fs::write(&wrong_kind, b"").unwrap(),
            _ => fs::create_dir(&wrong_kind).unwrap(),
        }
        let err = publish(&wrong_kind).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        // The right kind, holding something a bind would hide: refused, left as it was.
        let occupied = parent.join("occupied");
        match name {
            "m" => {
                fs::create_dir(&occupied).unwrap();
                fs::write(occupied.join("keep.txt"), b"user data").unwrap();
            }
            _ => fs::write(&occupied, b"user data").unwrap(),
        }
        let err = publish(&occupied).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        assert!(mounts_at(&occupied).is_empty(), "{name}: mounted over");
        let kept = match name {
            "m" => fs::read(occupied.join("keep.txt")).unwrap(),
            _ => fs::read(&occupied).unwrap(),
        };
        assert_eq!(kept, b"user data", "{name}");
        unstage(&h, &vol, &staging, None).await.unwrap();
        h.delete(&vol).await;
    }
}
