//! Retrying what a CO retries. The spec's error tables tell the caller to retry ABORTED
//! ("operation pending for volume") with exponential back-off, and UNAVAILABLE and a plugin's
//! own DEADLINE_EXCEEDED are transient by gRPC's definition; external-provisioner retries all
//! three with the same name and arguments until the plugin gives a final answer. The harness
//! does the same within one deadline and judges the final answer, so a driver that answers
//! "busy" first is not failed for it, and one that is busy forever still fails in bounded time.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::context::CaseCtx;

/// The first wait after a transient answer; it doubles up to `MAX_DELAY`.
const MIN_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Marks the harness's own timeout (see `CaseCtx::timed`): the whole budget is spent, so it is
/// final, unlike a DEADLINE_EXCEEDED the plugin sent.
pub(crate) const HARNESS_TIMEOUT: &str = "(harness timeout)";

/// Whether a CO would send the same request again after this answer.
pub fn transient(status: &Status) -> bool {
    match status.code() {
        Code::Aborted | Code::Unavailable => true,
        Code::DeadlineExceeded => !status.message().contains(HARNESS_TIMEOUT),
        _ => false,
    }
}

impl CaseCtx {
    /// Sends `call()` until it answers something other than a transient error, or `limit`
    /// has passed since the first attempt; returns the last answer. Each attempt gets the
    /// time that is left, and each retry is traced with the answer that caused it.
    pub(crate) async fn retried<T, Fut>(
        &self,
        what: &str,
        limit: Duration,
        mut call: impl FnMut() -> Result<Fut, Status>,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + limit;
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .without_max_times()
            .build();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.timed(left, call()?).await;
            let status = match answer {
                Err(status) if transient(&status) => status,
                final_answer => return final_answer,
            };
            let delay = delays.next().unwrap_or(MAX_DELAY);
            if Instant::now() + delay >= deadline {
                self.trace(format!(
                    "{what} -> {:?} {:?}; no time left to retry within {limit:?}",
                    status.code(),
                    status.message()
                ));
                return Err(status);
            }
            self.trace(format!(
                "{what} -> {:?} {:?}; retrying the same request in {delay:?}",
                status.code(),
                status.message()
            ));
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_the_ones_a_co_retries() {
        assert!(transient(&Status::aborted("operation pending")));
        assert!(transient(&Status::unavailable("restarting")));
        assert!(transient(&Status::deadline_exceeded("backend slow")));
        assert!(!transient(&Status::deadline_exceeded(format!(
            "no answer within 1s {HARNESS_TIMEOUT}"
        ))));
        for code in [Code::NotFound, Code::OutOfRange, Code::FailedPrecondition] {
            assert!(!transient(&Status::new(code, "final")));
        }
    }
}
