//! The mutation matrix, both ways: runs the suites against the reference driver once per fault
//! and once per legal variant, and checks that (a) every fault makes at least one case fail,
//! (b) every case fails under at least one fault other than the catch-all `clone-unimplemented`
//! (no false pass), (c) with no fault, and (d) with each legal variant, everything passes (no
//! false failure), (e) no fault makes a harness error (what a broken driver does is a
//! conformance failure). Prints the matrix and writes it to `target/tmp/mutation-matrix.md`,
//! never into the source tree. Part of `cargo test --workspace`; `cargo test -p suites --test
//! mutation_matrix` runs it alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::plan::{Selection, plan};
use harness::profile::DriverProfile;
use harness::runner::{ReportPaths, RunOptions, run};
use harness::target::{Surfaces, TargetSpec};

/// The CSI-level suites against an in-process driver; the Kubernetes suites run in .ci/run.
const CSI_ONLY: Surfaces = Surfaces {
    csi: true,
    kubernetes: false,
};
use harness::profile::ClonePolicy;
use reference_driver::config::Feature;
use reference_driver::faults::Fault;
use reference_driver::variants::Variant;
use reports::{Outcome, RunReport};

/// A driver set-up the matrix runs: the default one, and one that does not offer clones (for
/// the cases about drivers without CLONE_VOLUME).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Default,
    NoClone,
}

/// How the driver is changed for one run: not at all, by a fault, or by a legal variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Clean,
    Fault(Fault),
    Variant(Variant),
}

/// The fault that is only the catch-all "clone is broken": killing a case with it alone says
/// nothing about the case's own rule.
const CATCH_ALL: Fault = Fault::CloneUnimplemented;

/// Faults whose effect depends on timing (a race, a late copy, writers catching a copy): a
/// case they alone kill could pass a broken driver on an unlucky run, so each case must also
/// fall to a deterministic fault.
const TIMING_BASED: [Fault; 3] = [
    Fault::CloneReturnsBeforeDurable,
    Fault::CloneWithoutFreeze,
    Fault::ConcurrentCreatesRace,
];

/// Which set-ups each run uses: everything in the default one; the clean run and faults about
/// the clone capability also in the no-clone one.
fn setups(mode: Mode) -> Vec<Setup> {
    match mode {
        Mode::Clean | Mode::Fault(Fault::CloneWithoutCapability) => {
            vec![Setup::Default, Setup::NoClone]
        }
        _ => vec![Setup::Default],
    }
}

fn all_modes() -> Vec<Mode> {
    use clap::ValueEnum;
    std::iter::once(Mode::Clean)
        .chain(Fault::value_variants().iter().map(|f| Mode::Fault(*f)))
        .chain(Variant::value_variants().iter().map(|v| Mode::Variant(*v)))
        .collect()
}

fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .expect("named")
        .get_name()
        .to_string()
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Clean => "(none)".into(),
        Mode::Fault(f) => value_name(&f),
        Mode::Variant(v) => format!("variant {}", value_name(&v)),
    }
}

struct Outcomes {
    failed: BTreeSet<String>,
    errored: BTreeSet<String>,
    ran: BTreeSet<String>,
    leaks: usize,
    seconds: f64,
}

fn run_once(mode: Mode, setup: Setup, work: &std::path::Path) -> Outcomes {
    let started = Instant::now();
    let name = format!("{}-{setup:?}", mode_name(mode)).replace(['(', ')', ' '], "");
    let dir = work.join(&name);
    std::fs::create_dir_all(&dir).expect("run dir");
    let driver = common::InProcessDriver::start(&dir, "driver", |config| {
        match mode {
            Mode::Clean => {}
            Mode::Fault(fault) => drop(config.faults.insert(fault)),
            Mode::Variant(variant) => drop(config.variants.insert(variant)),
        }
        if setup == Setup::NoClone {
            config.features.remove(&Feature::Clone);
        }
    });
    let mut profile = DriverProfile::reference();
    if let Mode::Variant(variant) = mode {
        // The reference profile pins the default answers; a variant's profile says "either",
        // as a vendor's would for a driver that gives the other answer.
        profile.clone = ClonePolicy::default();
        profile.capabilities.controller_publish = variant == Variant::PublishRequired;
    }
    // The driver turns topology on for this variant and this fault; the profile says so.
    profile.capabilities.topology = matches!(
        mode,
        Mode::Variant(Variant::Topology) | Mode::Fault(Fault::CloneInAnotherZone)
    );
    profile.capabilities.clone = setup != Setup::NoClone;
    profile.timeouts.rpc_secs = 20;
    profile.timeouts.clone_secs = 30;
    let planned = plan(&suites::all(), &profile, &Selection::default(), CSI_ONLY);
    let options = RunOptions {
        target: TargetSpec::Endpoint {
            controller: driver.endpoint.clone(),
            node: None,
        },
        profile: Arc::new(profile),
        profile_label: format!("reference, {setup:?}"),
        seed: 7,
        parallel_clones: 4,
        test_threads: 2,
        reports: ReportPaths::default(),
        work_dir: dir.clone(),
        connect_timeout: Duration::from_secs(30),
        properties: BTreeMap::new(),
        pod_image: None,
        silent: true,
    };
    let report: RunReport = run(planned, options, Vec::new())
        .unwrap_or_else(|e| panic!("run with {}: {e}", mode_name(mode)));
    drop(driver);
    let mut outcomes = Outcomes {
        failed: BTreeSet::new(),
        errored: BTreeSet::new(),
        ran: BTreeSet::new(),
        leaks: report.leaks.len(),
        seconds: 0.0,
    };
    for case in &report.cases {
        match &case.outcome {
            Outcome::Skipped { .. } => continue,
            Outcome::Fail { .. } => drop(outcomes.failed.insert(case.id.clone())),
            Outcome::Error { .. } => drop(outcomes.errored.insert(case.id.clone())),
            Outcome::Pass | Outcome::Advisory { .. } => {}
        }
        outcomes.ran.insert(case.id.clone());
    }
    outcomes.seconds = started.elapsed().as_secs_f64();
    outcomes
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    if args.list {
        println!("mutation_matrix: test");
        return;
    }
    if args
        .filter
        .as_deref()
        .is_some_and(|f| !"mutation_matrix".contains(f))
        || !args.skip.is_empty()
            && args
                .skip
                .iter()
                .any(|s| "mutation_matrix".contains(s.as_str()))
    {
        println!("0 passed, 0 failed");
        return;
    }
    let started = Instant::now();
    // A matrix killed mid-run leaves mounts, loop devices and images: undo them first.
    for line in harness::leftovers::sweep(Path::new("/var/tmp"), "csi-clone-matrix-") {
        eprintln!("matrix: leftover of a killed run: {line}");
    }
    let work = tempfile::Builder::new()
        .prefix("csi-clone-matrix-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    harness::leftovers::claim(work.path()).expect("owner file");
    let mut jobs: Vec<(Mode, Setup)> = Vec::new();
    for mode in all_modes() {
        for setup in setups(mode) {
            jobs.push((mode, setup));
        }
    }
    let queue = Mutex::new(jobs.clone());
    let results: Mutex<BTreeMap<(Mode, Setup), Outcomes>> = Mutex::new(BTreeMap::new());
    // Two runs at a time: each already runs two cases at once on this 2-core machine.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some((mode, setup)) = queue.lock().unwrap().pop() else { break };
                let outcomes = run_once(mode, setup, work.path());
                eprintln!("matrix: {} ({setup:?}): {} of {} cases failed, {} errors, {} leaks, {:.1}s",
                    mode_name(mode), outcomes.failed.len(), outcomes.ran.len(), outcomes.errored.len(), outcomes.leaks, outcomes.seconds);
                results.lock().unwrap().insert((mode, setup), outcomes);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let verdict = judge(&results);
    let markdown = render(&verdict, wall);
    print!("{markdown}");
    let table = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mutation-matrix.md");
    std::fs::write(&table, &markdown).expect("write the matrix table");
    eprintln!("matrix written to {}", table.display());
    if verdict.problems.is_empty() {
        println!(
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {wall:.2}s"
        );
    } else {
        for problem in &verdict.problems {
            eprintln!("matrix problem: {problem}");
        }
        println!(
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {wall:.2}s"
        );
        std::process::exit(101);
    }
}

/// What the runs add up to.
#[derive(Default)]
struct Verdict {
    /// Fault → (cases failed, harness errors, leaks).
    by_fault: BTreeMap<String, (BTreeSet<String>, usize, usize)>,
    /// Case → the faults that made it fail.
    killers: BTreeMap<String, BTreeSet<String>>,
    /// Variant → (cases run, cases that did not pass).
    variants: BTreeMap<String, (usize, BTreeSet<String>)>,
    all_cases: BTreeSet<String>,
    kills: usize,
    problems: Vec<String>,
}

fn judge(results: &BTreeMap<(Mode, Setup), Outcomes>) -> Verdict {
    let mut v = Verdict::default();
    for ((mode, setup), outcomes) in results {
        v.all_cases.extend(outcomes.ran.iter().cloned());
        let not_passed = || outcomes.failed.iter().chain(&outcomes.errored);
        match mode {
            // (c) no fault and (d) every legal variant: everything passes, nothing leaks.
            Mode::Clean | Mode::Variant(_) => {
                let name = mode_name(*mode);
                for id in not_passed() {
                    v.problems
                        .push(format!("with {name} ({setup:?}), {id} did not pass"));
                }
                if outcomes.leaks > 0 {
                    v.problems
                        .push(format!("with {name} ({setup:?}), {} leaks", outcomes.leaks));
                }
                if let Mode::Variant(_) = mode {
                    let entry = v.variants.entry(name).or_default();
                    entry.0 += outcomes.ran.len();
                    entry.1.extend(not_passed().cloned());
                }
            }
            Mode::Fault(_) => {
                let fault = mode_name(*mode);
                // (e) a fault is the driver's: failures, never an incomplete verdict.
                if !outcomes.errored.is_empty() {
                    let ids: Vec<&str> = outcomes.errored.iter().map(String::as_str).collect();
                    v.problems.push(format!(
                        "fault {fault} ({setup:?}) made harness errors, not failures: {}",
                        ids.join(", ")
                    ));
                }
                for id in &outcomes.failed {
                    v.killers
                        .entry(id.clone())
                        .or_default()
                        .insert(fault.clone());
                }
                let entry = v.by_fault.entry(fault).or_default();
                entry.0.extend(outcomes.failed.iter().cloned());
                entry.1 += outcomes.errored.len();
                entry.2 += outcomes.leaks;
            }
        }
    }
    // (a) every fault kills something; (b) every case is killed by a fault of its own rule.
    for (fault, (failed, _, _)) in &v.by_fault {
        v.kills += failed.len();
        if failed.is_empty() {
            v.problems.push(format!("fault {fault} made no case fail"));
        }
    }
    let catch_all = value_name(&CATCH_ALL);
    let timing: Vec<String> = TIMING_BASED.iter().map(value_name).collect();
    for id in &v.all_cases {
        match v.killers.get(id) {
            None => v.problems.push(format!("case {id} failed under no fault")),
            Some(k) if k.iter().all(|f| *f == catch_all) => v.problems.push(format!(
                "case {id} fails only under the catch-all {catch_all}: no fault breaks its own rule"
            )),
            Some(k) if k.iter().all(|f| timing.contains(f) || *f == catch_all) => {
                v.problems.push(format!(
                    "case {id} fails only under timing-based faults ({}): its detection is luck",
                    k.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
            }
            Some(_) => {}
        }
    }
    v
}

fn render(v: &Verdict, wall: f64) -> String {
    let killed_faults = v
        .by_fault
        .values()
        .filter(|(f, _, _)| !f.is_empty())
        .count();
    let killing_cases = v
        .all_cases
        .iter()
        .filter(|c| v.killers.contains_key(*c))
        .count();
    let false_failures: usize = v.variants.values().map(|(_, bad)| bad.len()).sum();
    let mut out = String::new();
    out.push_str("# Mutation matrix\n\n");
    out.push_str("Written by `cargo test -p suites --test mutation_matrix` (part of `cargo test --workspace`):\n");
    out.push_str("every CSI suite runs against the reference driver once per `--fault` (no false pass: each\n");
    out.push_str("fault must fail some case) and once per legal `--variant` (no false failure: every case must\n");
    out.push_str("pass), plus a clean run, in the default set-up and, for the clone-capability faults, with\n");
    out.push_str("`CLONE_VOLUME` switched off. A case killed only by the catch-all `clone-unimplemented` is a\n");
    out.push_str("problem: no fault of its own rule proves it; so is one killed only by timing-based faults\n");
    out.push_str("(`clone-returns-before-durable`, `clone-without-freeze`, `concurrent-creates-race`): one\n");
    out.push_str("unlucky run would pass a broken driver.\n\n");
    out.push_str(&format!(
        "**{killed_faults} of {} faults killed; {killing_cases} of {} cases killed; {} kills; {} legal variants, {false_failures} false failures; {} problems; wall time {wall:.0} s.**\n\n",
        v.by_fault.len(),
        v.all_cases.len(),
        v.kills,
        v.variants.len(),
        v.problems.len(),
    ));
    if !v.problems.is_empty() {
        out.push_str("## Problems\n\n");
        for problem in &v.problems {
            out.push_str(&format!("- {problem}\n"));
        }
        out.push('\n');
    }
    out.push_str("## Legal variants\n\n| variant | cases run | did not pass |\n|---|--:|---|\n");
    for (variant, (ran, bad)) in &v.variants {
        let list: Vec<&str> = bad.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "| `{variant}` | {ran} | {} |\n",
            list.join("<br>")
        ));
    }
    out.push_str("\n## Faults and the cases that caught them\n\n| fault | cases failed | harness errors | leaks | caught by |\n|---|--:|--:|--:|---|\n");
    for (fault, (failed, errors, leaks)) in &v.by_fault {
        let list: Vec<&str> = failed.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "| `{fault}` | {} | {errors} | {leaks} | {} |\n",
            failed.len(),
            list.join("<br>")
        ));
    }
    out.push_str("\n## Cases and the faults they catch\n\n| case | faults caught |\n|---|---|\n");
    for case in &v.all_cases {
        let list: Vec<String> = v
            .killers
            .get(case)
            .map(|k| k.iter().map(|f| format!("`{f}`")).collect())
            .unwrap_or_default();
        let list = match list.is_empty() {
            true => "**none**".to_string(),
            false => list.join(" "),
        };
        out.push_str(&format!("| `{case}` | {list} |\n"));
    }
    out
}
