//! How long the sweep waits at each step; every wait is bounded by one of these.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// From SIGTERM to SIGKILL.
    pub term_grace: Duration,
    /// From SIGKILL until a process that is still there is reported (and left: a process in D
    /// state cannot be reaped, and the rest of the clean-up must still happen).
    pub kill_wait: Duration,
    /// From LOOP_CLR_FD until a device that is still attached is reported (the kernel defers
    /// the detach while someone holds the device open).
    pub detach_wait: Duration,
    /// Interval between checks while waiting.
    pub poll: Duration,
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            term_grace: Duration::from_secs(5),
            kill_wait: Duration::from_secs(2),
            detach_wait: Duration::from_secs(2),
            poll: Duration::from_millis(50),
        }
    }
}
