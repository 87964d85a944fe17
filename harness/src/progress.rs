//! Progress on stderr while the run goes: one line per case, failures in full, a closing
//! count line. Stdout stays for libtest-mimic and `--list`.

use std::io::Write;

use reports::{Outcome, Reporter, RunEvent};

pub struct TerminalProgress {
    pub verbose: bool,
    pub quiet: bool,
}

impl Reporter for TerminalProgress {
    fn event(&mut self, event: &RunEvent) {
        let mut err = std::io::stderr().lock();
        match event {
            RunEvent::RunStarted {
                run,
                selected,
                skipped,
            } => {
                let _ = writeln!(
                    err,
                    "csi-clone-conformance: {selected} cases ({skipped} skipped) against {} {} at {} (profile {}, seed {})",
                    run.driver_name, run.driver_version, run.endpoint, run.profile, run.seed
                );
            }
            RunEvent::CaseStarted { id } if self.verbose => {
                let _ = writeln!(err, "  START {id}");
            }
            RunEvent::CaseStarted { .. } => {}
            RunEvent::CaseFinished { record } => match &record.outcome {
                Outcome::Pass if !self.quiet => {
                    let _ = writeln!(err, "  PASS  {} ({:.2}s)", record.id, record.duration_secs);
                }
                Outcome::Pass => {}
                Outcome::Advisory { note } => {
                    let _ = writeln!(
                        err,
                        "  ADVISORY {} ({:.2}s): {note}",
                        record.id, record.duration_secs
                    );
                }
                Outcome::Skipped { reason } if self.verbose => {
                    let _ = writeln!(err, "  SKIP  {}: {reason}", record.id);
                }
                Outcome::Skipped { .. } => {}
                Outcome::Fail {
                    message,
                    expected,
                    actual,
                } => {
                    let _ = writeln!(err, "  FAIL  {}: {message}", record.id);
                    let _ = writeln!(err, "        rule: {}", record.rule);
                    if let Some(expected) = expected {
                        let _ = writeln!(err, "        expected: {expected}");
                    }
                    if let Some(actual) = actual {
                        let _ = writeln!(err, "        actual:   {actual}");
                    }
                    if self.verbose {
                        for line in &record.trace {
                            let _ = writeln!(err, "        | {line}");
                        }
                    }
                }
                Outcome::Error { message } => {
                    let _ = writeln!(err, "  ERROR {}: {message}", record.id);
                }
            },
            RunEvent::RunFinished {
                duration_secs,
                leaks,
                target_lost,
            } => {
                if let Some(lost) = target_lost {
                    let _ = writeln!(err, "  TARGET LOST {lost}");
                }
                for leak in leaks {
                    let _ = writeln!(err, "  LEAK  {leak}");
                }
                let _ = writeln!(err, "csi-clone-conformance finished in {duration_secs:.1}s");
            }
        }
    }
}
