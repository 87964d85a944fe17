//! Running cases: each trial `block_on`s its case on the run's runtime under a time limit,
//! cleans up what the case made (LIFO, through the ledger) and emits its record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use reports::{CaseRecord, Outcome, RunEvent};

use super::Events;
use crate::case::CaseError;
use crate::context::CaseCtx;
use crate::plan::Planned;

pub(super) type Job = Box<dyn FnOnce() -> Result<(), Failed> + Send>;

/// The cases on `threads` worker threads, printing nothing (verdicts travel as events).
pub(super) fn run_silently(trials: Vec<(String, Option<Job>)>, threads: usize) {
    // Reversed, so popping runs the cases in plan order.
    let queue = Mutex::new(
        trials
            .into_iter()
            .rev()
            .filter_map(|(_, job)| job)
            .collect::<Vec<_>>(),
    );
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                    let _ = job();
                }
            });
        }
    });
}

pub(super) fn run_trial(
    item: Planned,
    ctx: CaseCtx,
    handle: tokio::runtime::Handle,
    events: Arc<Mutex<Events>>,
    limit: Duration,
) -> Result<(), Failed> {
    let started = Instant::now();
    Events::emit(
        &events,
        RunEvent::CaseStarted {
            id: item.name.clone(),
        },
    );
    if let Some(lost) = ctx.ledger().lost() {
        let reason = format!("not run: the target was lost {lost}");
        let record = record(
            &item,
            Outcome::Skipped { reason },
            0.0,
            Vec::new(),
            Vec::new(),
        );
        Events::emit(&events, RunEvent::CaseFinished { record });
        return Ok(());
    }
    let case = (item.case.run)(ctx.clone());
    let result = handle.block_on(async move { tokio::time::timeout(limit, case).await });
    let cleanup_errors = handle.block_on(ctx.ledger().cleanup(Some(ctx.owner())));
    // Whatever went wrong may be the target going away: one Probe tells.
    if !(matches!(result, Ok(Ok(()))) && cleanup_errors.is_empty())
        && !ctx.ledger().is_stopping()
        && let Err(cause) = handle.block_on(super::health::check(&ctx))
    {
        ctx.ledger()
            .mark_lost(format!("at case {}: no answer {cause}", item.name));
    }
    let mut outcome = match result {
        Ok(Ok(())) => match (ctx.take_violation(), ctx.take_advisory()) {
            (Some(f), _) => Outcome::Fail {
                message: f.message,
                expected: f.expected,
                actual: f.actual,
            },
            (None, Some(note)) => Outcome::Advisory { note },
            (None, None) => Outcome::Pass,
        },
        Ok(Err(CaseError::Fail(f))) => Outcome::Fail {
            message: f.message,
            expected: f.expected,
            actual: f.actual,
        },
        Ok(Err(CaseError::Error(message))) => Outcome::Error { message },
        Err(_) => Outcome::Error {
            message: format!("case did not finish within {limit:?}"),
        },
    };
    let passed = matches!(outcome, Outcome::Pass | Outcome::Advisory { .. });
    if passed && !cleanup_errors.is_empty() {
        // Removing what a case made is part of the contract (DeleteVolume, NodeUnpublish...).
        outcome = Outcome::Fail {
            message: "cleanup after the case failed".into(),
            expected: Some("every volume, snapshot, stage and publish removable".into()),
            actual: Some(cleanup_errors.join("; ")),
        };
    }
    if let Some(lost) = ctx.ledger().lost()
        && !(passed && cleanup_errors.is_empty())
    {
        // What failed here may be the loss itself: this case says nothing about the driver.
        outcome = Outcome::Error {
            message: format!("verdict void: the target was lost {lost}"),
        };
    }
    let verdict = match &outcome {
        Outcome::Pass | Outcome::Advisory { .. } | Outcome::Skipped { .. } => Ok(()),
        Outcome::Fail { message, .. } => Err(Failed::from(message.as_str())),
        Outcome::Error { message } => Err(Failed::from(format!("harness error: {message}"))),
    };
    let record = record(
        &item,
        outcome,
        started.elapsed().as_secs_f64(),
        ctx.take_trace(),
        cleanup_errors,
    );
    Events::emit(&events, RunEvent::CaseFinished { record });
    verdict
}

pub(super) fn record(
    item: &Planned,
    outcome: Outcome,
    duration_secs: f64,
    trace: Vec<String>,
    cleanup_errors: Vec<String>,
) -> CaseRecord {
    CaseRecord {
        id: item.name.clone(),
        suite: item.suite.to_string(),
        rule: item.case.meta.rule.to_string(),
        outcome,
        duration_secs,
        trace,
        cleanup_errors,
    }
}
