//! Telling a driver that broke a rule from one that is gone. After a case that did not pass,
//! one Probe with a short deadline: no answer means the target was lost, which the run
//! reports once (its own exit code) instead of failing every case after it.

use std::time::Duration;

use csi_proto::v1 as csi;
use tonic::Code;

use crate::context::CaseCtx;

/// A live driver answers Probe at once; a hung or dead one never does.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// `Err(cause)` when the target does not answer a Probe. Any answer the driver itself sent,
/// ready or not, even an error code, shows it is there. Targets without a CSI endpoint (a
/// cluster) are not probed.
pub(super) async fn check(ctx: &CaseCtx) -> Result<(), String> {
    if !ctx.has_csi() {
        return Ok(());
    }
    let limit = PROBE_LIMIT.min(ctx.rpc_timeout());
    let Ok(mut identity) = ctx.identity() else {
        return Ok(());
    };
    match ctx.timed(limit, identity.probe(csi::ProbeRequest {})).await {
        Ok(_) => Ok(()),
        Err(status) if !unreachable(status.code()) => Ok(()),
        Err(status) => Err(format!(
            "(Probe: {:?} {})",
            status.code(),
            status.message().trim()
        )),
    }
}

/// Codes a transport gives when nothing answered (or our own deadline passed).
fn unreachable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
    )
}
