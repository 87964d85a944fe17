//! Node units: each stage/publish and its inverse runs to completion in its own task, so a
//! cancelled RPC (client deadline) stops only the caller's wait, and a driver told to stop
//! (SIGTERM) waits for the units in flight before it exits. After each step the host (mounts,
//! loop devices bound to the image) must agree with state.json.
//!
//! The driver runs with the `losetup` wrapper of `node_support` first on its PATH, which can
//! sleep after an attach or before a detach to hold a unit in flight.

mod common;
#[path = "node_support/mod.rs"]
mod support;

use std::fs;
use std::time::Duration;

use common::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_stage_and_unstage_complete_as_a_unit() {
    let h = with_knobs(Harness::start().await).await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");

    set_knob(&h, "slow-attach", true);
    let r = stage(&h, &vol, &staging, &mount_cap(""), Some(SHORT)).await;
    assert!(r.is_err(), "the stage should outlast its deadline");
    set_knob(&h, "slow-attach", false);
    // The unit goes on without its caller and records what it did.
    wait_for("the cancelled stage to be recorded", || {
        staged_record(&h, &vol).is_some()
    })
    .await;
    wait_for("the intent to clear", || node_work(&h, &vol).is_null()).await;
    assert_agree(&h, &vol, &staging, true);
    never_frozen(&h, "cancelled stage");
    // The CO's retry is the idempotent case: verified, nothing mounted twice.
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    assert_agree(&h, &vol, &staging, true);
    fs::write(staging.join("kept"), b"data").unwrap();

    set_knob(&h, "slow-detach", true);
    let r = unstage(&h, &vol, &staging, Some(SHORT)).await;
    assert!(r.is_err(), "the unstage should outlast its deadline");
    set_knob(&h, "slow-detach", false);
    // `staged` went with the unmount; the detach finishes without the caller.
    assert!(
        staged_record(&h, &vol).is_none(),
        "still staged after the unmount"
    );
    wait_for("the cancelled unstage to detach", || {
        loops_of(&image(&h, &vol)).is_empty() && node_work(&h, &vol).is_null()
    })
    .await;
    assert_agree(&h, &vol, &staging, true);
    unstage(&h, &vol, &staging, None).await.unwrap();
    clone_and_snapshot(&h, &vol, "after-cancel").await;

    // Many short deadlines at random points of stage and unstage: every settled state agrees.
    for round in 0..6u64 {
        let d = Duration::from_millis(5 + round * 15);
        let _ = stage(&h, &vol, &staging, &mount_cap(""), Some(d)).await;
        let _ = unstage(&h, &vol, &staging, Some(d)).await;
        // The next call waits for the units in flight (the volume lock is fair).
        stage(&h, &vol, &staging, &mount_cap(""), None)
            .await
            .unwrap();
        assert_agree(&h, &vol, &staging, true);
        assert_eq!(fs::read(staging.join("kept")).unwrap(), b"data");
        unstage(&h, &vol, &staging, None).await.unwrap();
        assert_agree(&h, &vol, &staging, true);
    }
    never_frozen(&h, "cancellations");
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_units_whose_callers_are_gone() {
    let mut h = with_knobs(Harness::start().await).await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");
    let img = image(&h, &vol);

    // A stage whose caller gave up is still attaching when the driver is told to stop.
    set_knob(&h, "slow-attach", true);
    let r = stage(&h, &vol, &staging, &mount_cap(""), Some(SHORT)).await;
    assert!(r.is_err(), "the stage should outlast its deadline");
    wait_for("the attach", || !list_loops(&img).is_empty()).await;
    let status = h.stop();
    set_knob(&h, "slow-attach", false);
    assert!(status.success(), "driver exit after SIGTERM: {status}");
    // Read while the driver is down: nothing at start-up has repaired anything yet.
    assert!(staged_record(&h, &vol).is_some(), "the stage was cut off");
    assert!(node_work(&h, &vol).is_null(), "{}", node_work(&h, &vol));
    assert_agree(&h, &vol, &staging, true);

    // An unstage whose caller gave up is about to detach when the driver is told to stop.
    h.restart().await;
    set_knob(&h, "slow-detach", true);
    let r = unstage(&h, &vol, &staging, Some(SHORT)).await;
    assert!(r.is_err(), "the unstage should outlast its deadline");
    let status = h.stop();
    set_knob(&h, "slow-detach", false);
    assert!(status.success(), "driver exit after SIGTERM: {status}");
    assert!(staged_record(&h, &vol).is_none());
    assert_agree(&h, &vol, &staging, true);

    h.restart().await;
    never_frozen(&h, "shutdown");
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn second_sigterm_stops_the_wait_and_start_up_finishes_the_unit() {
    let mut h = with_knobs(Harness::start().await).await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");
    let img = image(&h, &vol);

    set_knob(&h, "slow-attach", true);
    let r = stage(&h, &vol, &staging, &mount_cap(""), Some(SHORT)).await;
    assert!(r.is_err(), "the stage should outlast its deadline");
    wait_for("the attach", || !list_loops(&img).is_empty()).await;
    h.signal(rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The second SIGTERM comes while the unit still sleeps in the wrapper (2 s after attach).
    let status = h.stop();
    set_knob(&h, "slow-attach", false);
    assert!(status.success(), "driver exit after SIGTERM: {status}");
    assert!(
        staged_record(&h, &vol).is_none(),
        "the wait was not cut short"
    );
    assert!(!node_work(&h, &vol)["intent"].is_null(), "intent recorded");

    // Start-up reconciliation undoes what the cut unit left on the host.
    h.restart().await;
    assert_agree(&h, &vol, &staging, true);
    never_frozen(&h, "second signal");
    h.delete(&vol).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_publish_and_unpublish_leave_record_and_mount_agreeing() {
    let h = Harness::start().await;
    let vol = h
        .create_ok(req("v", mount_cap(""), VOL, None))
        .await
        .volume_id;
    let staging = staging_dir(&h, "v");
    stage(&h, &vol, &staging, &mount_cap(""), None)
        .await
        .unwrap();
    let target = staging.parent().unwrap().join("target");
    let long = Duration::from_secs(30);
    for round in 0..8u64 {
        let d = Duration::from_millis(1 + round * 7);
        let _ = publish_call(&h, &vol, &staging, &target, d).await;
        let _ = unpublish_call(&h, &vol, &target, d).await;
        let _ = publish_call(&h, &vol, &staging, &target, d).await;
        // Waits for the units in flight (the volume lock is fair), then is the idempotent case.
        publish_call(&h, &vol, &staging, &target, long)
            .await
            .unwrap();
        let recorded = h.state_json()["volumes"][&vol]["published"]
            .as_object()
            .map_or(0, |m| m.len());
        assert_eq!(recorded, 1, "round {round}: {}", h.state_json());
        assert_eq!(
            mounts_at(&target).len(),
            1,
            "round {round}: one bind at the target"
        );
        unpublish_call(&h, &vol, &target, long).await.unwrap();
        assert!(
            mounts_at(&target).is_empty() && !target.exists(),
            "round {round}"
        );
        assert!(
            h.state_json()["volumes"][&vol]["published"]
                .as_object()
                .is_none_or(|m| m.is_empty())
        );
        assert!(node_work(&h, &vol).is_null(), "{}", node_work(&h, &vol));
    }
    unstage(&h, &vol, &staging, None).await.unwrap();
    assert_agree(&h, &vol, &staging, true);
    never_frozen(&h, "cancelled publishes");
    h.delete(&vol).await;
}
