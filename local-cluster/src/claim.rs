//! Taking the host for a new run: earlier runs whose harness is gone are undone first (from
//! their records), a run still alive makes the start fail (two clusters would share the
//! kubelet's host paths and sysctls), and only then is the host snapshotted and the new run's
//! record saved — all under the registry's lock, before anything of the run exists.

use std::path::Path;
use std::sync::Arc;

use crate::ClusterError;
use crate::host::{
    CleanReport, HostSnapshot, LiveRecord, ProcessId, Registry, RunRecord, SweepOptions,
    clean_stale,
};

/// Undoes every earlier run in `registry` whose harness is gone; see [`CleanReport`].
pub fn clean_earlier_runs(registry: &Registry) -> Result<CleanReport, ClusterError> {
    let lock = registry
        .lock()
        .map_err(|e| ClusterError::setup("lock the run registry", e))?;
    Ok(clean_stale(registry, &lock, &SweepOptions::default()))
}

/// Cleans up after earlier runs, then creates `root`, snapshots the host and records the run.
pub(crate) fn claim_host(
    root: &Path,
    registry: &Registry,
) -> Result<Arc<LiveRecord>, ClusterError> {
    let lock = registry
        .lock()
        .map_err(|e| ClusterError::setup("lock the run registry", e))?;
    let cleaned = clean_stale(registry, &lock, &SweepOptions::default());
    for line in cleaned.lines() {
        tracing::warn!("earlier local cluster: {line}");
    }
    if let Some(run) = cleaned.alive().next() {
        return Err(ClusterError::setup(
            "start a local cluster",
            format!(
                "another local cluster is running in {} (harness pid {}); wait for it to end",
                run.run_dir().display(),
                run.owner.pid
            ),
        ));
    }
    let failures = cleaned.failures();
    if !failures.is_empty() {
        return Err(ClusterError::setup(
            "clean up after an earlier local cluster",
            format!(
                "{}; not starting beside it (`csi-clone-conformance local-cluster clean` retries)",
                failures.join("; ")
            ),
        ));
    }
    refuse_unclaimed(root)?;
    std::fs::create_dir_all(root).map_err(|e| ClusterError::io("create", root, e))?;
    let snapshot = HostSnapshot::take(root)
        .map_err(|e| ClusterError::setup("snapshot the host's state", e))?;
    registry
        .create(&lock, RunRecord::new(ProcessId::current(), snapshot))
        .map_err(|e| ClusterError::setup("save the run record", e))
}

/// A non-empty run directory no record claims is not ours to reuse or remove.
fn refuse_unclaimed(root: &Path) -> Result<(), ClusterError> {
    let empty = std::fs::read_dir(root).map_or(true, |mut entries| entries.next().is_none());
    if empty {
        return Ok(());
    }
    Err(ClusterError::setup(
        format!("use {} as the cluster's directory", root.display()),
        "it exists, is not empty and no run record claims it; remove it or use another --work-dir",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_refuses_while_the_owner_of_a_run_lives_and_unclaimed_dirs() {
        let base = tempfile::tempdir().expect("temp dir");
        let registry = Registry::at(&base.path().join("registry"));
        let root = base.path().join("cluster");
        let record = claim_host(&root, &registry).expect("first claim");
        assert!(root.is_dir() && record.path().exists());
        assert_eq!(record.get().owner, ProcessId::current());

        let other = base.path().join("other");
        let err = claim_host(&other, &registry).unwrap_err().to_string();
        assert!(err.contains("another local cluster is running"), "{err}");
        assert!(!other.exists(), "nothing made for a refused run");
        record.remove().expect("remove");

        std::fs::write(root.join("stray"), "x").expect("stray file");
        let err = claim_host(&root, &registry).unwrap_err().to_string();
        assert!(err.contains("no run record claims it"), "{err}");
        assert!(
            root.join("stray").exists(),
            "an unclaimed dir is left as it is"
        );
    }
}
