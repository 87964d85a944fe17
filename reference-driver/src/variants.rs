//! Legal variants: behaviours the CSI spec allows besides the reference driver's defaults.
//! Unlike a fault, a variant is conformant, so every case must pass with any of them; the
//! mutation matrix runs each one to prove the harness accepts every answer the spec permits
//! (no false failures), as the faults prove it rejects the wrong ones (no false passes).
//! `--variant NAME` (repeatable) turns one on.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Variant {
    /// A copy whose required_bytes is below its source (and no limit_bytes) is made at the
    /// source's size instead of OUT_OF_RANGE: a volume "at least" required_bytes.
    RoundUpSmallCopies,
    /// DeleteVolume of a volume that has snapshots answers FAILED_PRECONDITION and leaves it
    /// untouched, as a plugin whose snapshots depend on their source must.
    RefuseDeleteWithSnapshots,
    /// A CreateVolume whose name or source already has a request in flight answers ABORTED
    /// ("operation pending") at once instead of queuing; the caller retries with back-off.
    AbortWhenBusy,
    /// PUBLISH_UNPUBLISH_VOLUME is advertised and enforced: NodeStageVolume needs the
    /// publish_context ControllerPublishVolume gave for this node, as attach-based drivers do.
    PublishRequired,
    /// A snapshot is cut before CreateSnapshot answers but reports ready_to_use = false for
    /// its first second (post-processing, e.g. an upload); it cannot be restored until ready.
    AsyncSnapshots,
    /// VOLUME_ACCESSIBILITY_CONSTRAINTS is advertised: the node reports a zone and itself,
    /// volumes are accessible from that zone, and requisite topologies elsewhere are refused
    /// (see `topology.rs`).
    Topology,
    /// A copy may change access type where its content survives: a block copy of a
    /// filesystem volume carries the filesystem; a filesystem copy of a block volume that
    /// holds a filesystem mounts it. A block source of raw bytes is still refused.
    ConvertAccessTypes,
}

pub type Variants = BTreeSet<Variant>;

/// How long an `AsyncSnapshots` snapshot stays not ready after it was cut.
pub const POST_PROCESSING: Duration = Duration::from_secs(1);

/// Snapshots still post-processing (`AsyncSnapshots`): id → when they become ready. In memory
/// only: after a restart every snapshot is ready, as post-processing would have finished.
#[derive(Default)]
pub struct PostProcessing {
    until: Mutex<HashMap<String, Instant>>,
}

impl PostProcessing {
    pub fn start(&self, id: &str) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.insert(id.to_string(), Instant::now() + POST_PROCESSING);
    }

    pub fn is_ready(&self, id: &str) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.retain(|_, ready_at| *ready_at > Instant::now());
        !until.contains_key(id)
    }
}

/// The key a `PublishRequired` publish_context carries, naming the node attached to.
pub const ATTACHED_TO: &str = "reference.csi-clone-conformance.dev/attached-to";

/// Volumes ControllerPublished to this node (`PublishRequired`). In memory: after a restart
/// the CO publishes again, as it does after a node restart.
#[derive(Default)]
pub struct Attachments {
    volumes: Mutex<BTreeSet<String>>,
}

impl Attachments {
    pub fn attach(&self, volume_id: &str) {
        let mut volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        volumes.insert(volume_id.to_string());
    }

    pub fn detach(&self, volume_id: &str) {
        let mut volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        volumes.remove(volume_id);
    }

    pub fn is_attached(&self, volume_id: &str) -> bool {
        let volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        volumes.contains(volume_id)
    }
}

/// Requests in flight, by key (`AbortWhenBusy`): a second request for a busy key is refused
/// rather than queued. The returned guard frees the key when the request ends.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<BTreeSet<String>>,
}

pub struct InFlightGuard<'a> {
    owner: &'a InFlight,
    keys: Vec<String>,
}

impl InFlight {
    /// Claims every key, or none (and names the busy one).
    pub fn claim(&self, keys: Vec<String>) -> Result<InFlightGuard<'_>, String> {
        let mut held = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = keys.iter().find(|k| held.contains(*k)) {
            return Err(busy.clone());
        }
        held.extend(keys.iter().cloned());
        Ok(InFlightGuard { owner: self, keys })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.owner.keys.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_refuses_a_busy_key_until_released() {
        let flight = InFlight::default();
        let first = flight
            .claim(vec!["name/a".into(), "source/s".into()])
            .unwrap();
        assert_eq!(
            flight.claim(vec!["name/b".into(), "source/s".into()]).err(),
            Some("source/s".to_string())
        );
        assert!(flight.claim(vec!["name/b".into()]).is_ok());
        drop(first);
        assert!(
            flight
                .claim(vec!["name/a".into(), "source/s".into()])
                .is_ok()
        );
    }

    #[test]
    fn post_processing_ends() {
        let pending = PostProcessing::default();
        assert!(pending.is_ready("snap-1"));
        pending.start("snap-1");
        assert!(!pending.is_ready("snap-1"));
        std::thread::sleep(POST_PROCESSING + Duration::from_millis(50));
        assert!(pending.is_ready("snap-1"));
    }
}
