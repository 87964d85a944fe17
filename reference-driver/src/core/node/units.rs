//! The node units in flight, so that a stopping driver can wait for them: a unit whose caller
//! is gone is awaited by nobody else, and a runtime that shuts down under it would cut it
//! between its host work and its state update (start-up reconciliation would then repair it,
//! but only at the next start).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub(crate) struct NodeUnits {
    tracker: TaskTracker,
    /// What each running unit is, for the log when a shutdown cannot wait any longer.
    running: Arc<Mutex<BTreeMap<u64, String>>>,
    next: AtomicU64,
}

/// Takes a unit off `running` when its task ends, however it ends.
struct Running {
    running: Arc<Mutex<BTreeMap<u64, String>>>,
    key: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.key);
    }
}

fn lock(m: &Mutex<BTreeMap<u64, String>>) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeUnits {
    /// Spawns `work` as a tracked task; `what` names it in the shutdown log.
    pub(crate) fn spawn<F>(&self, what: String, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(key, what);
        let guard = Running {
            running: Arc::clone(&self.running),
            key,
        };
        self.tracker.spawn(async move {
            let _running = guard;
            work.await
        })
    }

    /// Waits up to `deadline` for every unit, including any spawned meanwhile; returns what was
    /// still running when it expired.
    pub(crate) async fn finish(&self, deadline: Duration) -> Vec<String> {
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        lock(&self.running).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn finish_waits_for_units_and_names_those_past_the_deadline() {
        let units = NodeUnits::default();
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        // Its handle is dropped at once, as when the RPC that started it is cancelled.
        drop(units.spawn("quick".into(), async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            d.store(true, Ordering::SeqCst);
        }));
        assert!(units.finish(Duration::from_secs(10)).await.is_empty());
        assert!(
            done.load(Ordering::SeqCst),
            "finish returned before the unit ended"
        );

        let units = NodeUnits::default();
        let slow = units.spawn("NodeStageVolume vol-1".into(), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let quick = units.spawn("NodeUnstageVolume vol-2".into(), async {});
        quick.await.unwrap();
        let left = units.finish(Duration::from_millis(200)).await;
        assert_eq!(left, vec!["NodeStageVolume vol-1".to_string()]);
        slow.abort();
    }
}
