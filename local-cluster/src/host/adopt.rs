//! Recording the processes a run starts indirectly. containerd starts each shim as a daemon
//! that leaves its parent, and would be reparented to init, out of reach of any ppid chain. So
//! the harness makes itself a child subreaper while the cluster runs: such orphans become its
//! children, which only descendants of the harness can, and a scan of its children records each
//! one (by pid and start time) into the run's record. Children the harness had before the
//! cluster started are not the run's: a shell's `cmd > >(tee log)` makes `tee` a child of the
//! harness, and killing it at tear-down would cut the harness's own output.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::process::{Pid, getpid, set_child_subreaper};

use super::pid::{self, ProcessId};
use super::record::{CHILD, LiveRecord};

/// Between scans of our children: a shim is recorded at most this long after it detached (a
/// harness killed within that window leaves that shim unrecorded; reading our threads'
/// `children` files is cheap enough to do often).
const SCAN_EVERY: Duration = Duration::from_millis(50);

/// The running scan; [`Adopter::stop`] (or drop) ends it within one interval.
pub struct Adopter {
    record: Arc<LiveRecord>,
    /// Our children before the cluster started: never recorded.
    earlier: Arc<BTreeSet<ProcessId>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Adopter {
    /// Makes this process a subreaper and starts recording its children into `record`.
    pub fn start(record: Arc<LiveRecord>) -> Adopter {
        if let Err(e) = set_child_subreaper(Some(getpid())) {
            tracing::warn!("cannot become a child subreaper ({e}): shims may escape the record");
        }
        let earlier = Arc::new(children_now());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (record, stop, earlier) = (record.clone(), stop.clone(), earlier.clone());
            std::thread::Builder::new()
                .name("local-cluster-adopt".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        scan(&record, &earlier);
                        std::thread::sleep(SCAN_EVERY);
                    }
                })
                .map_err(|e| tracing::warn!("cannot start the adoption scan: {e}"))
                .ok()
        };
        Adopter {
            record,
            earlier,
            stop,
            thread,
        }
    }

    /// One scan now, so that tear-down works from a complete record.
    pub fn scan_now(&self) {
        scan(&self.record, &self.earlier);
    }

    /// Ends the scan and the subreaper role.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = set_child_subreaper(None::<Pid>);
    }
}

impl Drop for Adopter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn children_now() -> BTreeSet<ProcessId> {
    pid::own_children()
        .into_iter()
        .filter_map(ProcessId::of)
        .collect()
}

/// Records every live child not recorded yet, except those that were there before.
fn scan(record: &LiveRecord, earlier: &BTreeSet<ProcessId>) {
    for child in pid::own_children() {
        let Some(id) = ProcessId::of(child).filter(ProcessId::is_alive) else {
            continue;
        };
        if earlier.contains(&id) {
            continue;
        }
        if let Err(e) = record.add(CHILD, id) {
            tracing::warn!("record child process {}: {e}", id.pid);
        }
    }
}
