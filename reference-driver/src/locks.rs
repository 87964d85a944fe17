//! Per-key locks: one per request name and one per volume, never a global lock across a copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// A map of lazily created read/write locks. Entries that nobody holds are pruned on access,
/// so the map stays as small as the number of keys in use.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl KeyedLocks {
    fn entry(&self, key: &str) -> Arc<RwLock<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only this map holds an idle lock (strong count 1): safe to drop it.
        locks.retain(|k, lock| k == key || Arc::strong_count(lock) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Shared hold: e.g. several clones reading one source at once.
    pub async fn shared(&self, key: &str) -> OwnedRwLockReadGuard<()> {
        self.entry(key).read_owned().await
    }

    /// Exclusive hold: e.g. creating a name, deleting or expanding a volume, staging it.
    pub async fn exclusive(&self, key: &str) -> OwnedRwLockWriteGuard<()> {
        self.entry(key).write_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shared_holders_coexist_and_exclusive_waits() {
        let locks = Arc::new(KeyedLocks::default());
        let a = locks.shared("v").await;
        let _b = locks.shared("v").await;
        let other = locks.exclusive("w").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.exclusive("v").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        drop(_b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        drop(other);
    }
}
