//! The one table of exit codes of `csi-clone-conformance` (also in README.md).

/// Every selected case passed (skips allowed) and nothing leaked.
pub const PASSED: i32 = 0;
/// Bad command line.
pub const USAGE: i32 = 2;
/// The driver profile or testdriver file is invalid.
pub const PROFILE: i32 = 3;
/// The target could not be started or did not answer Probe.
pub const UNREACHABLE: i32 = 4;
/// A cluster target lacks something the suites need (preflight names each missing piece).
pub const NOT_READY: i32 = 7;
/// Filters selected no case.
pub const NOTHING_SELECTED: i32 = 5;
/// No conformance failure, but the harness or the machine failed some case (or reports could
/// not be written): the verdict is incomplete.
pub const HARNESS_ERROR: i32 = 6;
/// The target stopped answering mid-run (a Probe after a failed case got no answer): one
/// verdict for the run, not a failure per case; the report names the case and the cause.
pub const TARGET_LOST: i32 = 8;
/// At least one conformance failure (or a leak): the libtest convention.
pub const FAILURES: i32 = 101;
/// Interrupted by SIGINT (Ctrl-C) after cleaning up; SIGHUP gives 129 and SIGTERM 143. A
/// second signal during the cleanup exits at once with the code of that signal, after
/// printing what is left (docs/harness.md, "Deadlines and signals").
pub const INTERRUPTED: i32 = 130;

/// The exit code a finished run deserves.
pub fn for_report(report: &reports::RunReport) -> i32 {
    let counts = report.counts();
    if report.target_lost.is_some() {
        TARGET_LOST
    } else if counts.failed > 0 || !report.leaks.is_empty() {
        FAILURES
    } else if counts.errors > 0 {
        HARNESS_ERROR
    } else {
        PASSED
    }
}
