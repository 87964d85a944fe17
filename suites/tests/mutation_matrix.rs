//! The mutation matrix: runs the suites against the reference driver once per fault and checks
//! that (a) every fault makes at least one case fail, (b) every case fails under at least one
//! fault, (c) with no fault everything passes, (d) no fault makes a harness error (what a
//! broken driver does is a conformance failure). Prints the matrix and writes
//! docs/mutation-matrix.md. Part of `cargo test --workspace`; `cargo test -p suites --test
//! mutation_matrix` runs it alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
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
use reference_driver::config::Feature;
use reference_driver::faults::Fault;
use reports::{Outcome, RunReport};

/// A driver set-up the matrix runs: the default one, and one that does not offer clones (for
/// the cases about drivers without CLONE_VOLUME).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Default,
    NoClone,
}

/// Which set-ups each fault runs in: every fault in the default one; faults about the
/// clone capability also in the no-clone one.
fn setups(fault: Option<Fault>) -> Vec<Setup> {
    match fault {
        None | Some(Fault::CloneWithoutCapability) => vec![Setup::Default, Setup::NoClone],
        Some(_) => vec![Setup::Default],
    }
}

fn all_faults() -> Vec<Fault> {
    use clap::ValueEnum;
    Fault::value_variants().to_vec()
}

fn fault_name(fault: Option<Fault>) -> String {
    use clap::ValueEnum;
    fault.map_or("(none)".into(), |f| {
        f.to_possible_value().expect("named").get_name().to_string()
    })
}

struct Outcomes {
    failed: BTreeSet<String>,
    errored: BTreeSet<String>,
    ran: BTreeSet<String>,
    leaks: usize,
    seconds: f64,
}

fn run_once(fault: Option<Fault>, setup: Setup, work: &std::path::Path) -> Outcomes {
    let started = Instant::now();
    let name = format!("{}-{setup:?}", fault_name(fault)).replace(['(', ')'], "");
    let dir = work.join(&name);
    std::fs::create_dir_all(&dir).expect("run dir");
    let driver = common::InProcessDriver::start(&dir, "driver", |config| {
        config.faults = fault.into_iter().collect();
        if setup == Setup::NoClone {
            config.features.remove(&Feature::Clone);
        }
    });
    let mut profile = DriverProfile::reference();
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
        .unwrap_or_else(|e| panic!("run with fault {}: {e}", fault_name(fault)));
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
    let work = tempfile::Builder::new()
        .prefix("csi-clone-matrix-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let mut jobs: Vec<(Option<Fault>, Setup)> = Vec::new();
    for fault in std::iter::once(None).chain(all_faults().into_iter().map(Some)) {
        for setup in setups(fault) {
            jobs.push((fault, setup));
        }
    }
    let queue = Mutex::new(jobs.clone());
    let results: Mutex<BTreeMap<(String, Setup), Outcomes>> = Mutex::new(BTreeMap::new());
    // Two runs at a time: each already runs two cases at once on this 2-core machine.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some((fault, setup)) = queue.lock().unwrap().pop() else { break };
                let outcomes = run_once(fault, setup, work.path());
                eprintln!("matrix: fault {} ({setup:?}): {} of {} cases failed, {} errors, {} leaks, {:.1}s",
                    fault_name(fault), outcomes.failed.len(), outcomes.ran.len(), outcomes.errored.len(), outcomes.leaks, outcomes.seconds);
                results.lock().unwrap().insert((fault_name(fault), setup), outcomes);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let wall = started.elapsed().as_secs_f64();

    let mut problems = Vec::new();
    // (c) no fault: everything that ran passed, nothing leaked.
    for setup in setups(None) {
        let clean = &results[&(fault_name(None), setup)];
        for id in clean.failed.iter().chain(&clean.errored) {
            problems.push(format!("without faults ({setup:?}), {id} did not pass"));
        }
        if clean.leaks > 0 {
            problems.push(format!("without faults ({setup:?}), {} leaks", clean.leaks));
        }
    }
    // (a) every fault kills something; (b) every case is killed by something.
    let mut killers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut all_cases = BTreeSet::new();
    let mut kills = 0;
    for ((fault, _), outcomes) in &results {
        all_cases.extend(outcomes.ran.iter().cloned());
        if fault == &fault_name(None) {
            continue;
        }
        for id in &outcomes.failed {
            killers.entry(id.clone()).or_default().insert(fault.clone());
        }
    }
    let mut by_fault: BTreeMap<String, (BTreeSet<String>, usize, usize)> = BTreeMap::new();
    for ((fault, _), outcomes) in &results {
        if fault == &fault_name(None) {
            continue;
        }
        let entry = by_fault.entry(fault.clone()).or_default();
        entry.0.extend(outcomes.failed.iter().cloned());
        entry.1 += outcomes.errored.len();
        entry.2 += outcomes.leaks;
    }
    for (fault, (failed, _, _)) in &by_fault {
        kills += failed.len();
        if failed.is_empty() {
            problems.push(format!("fault {fault} made no case fail"));
        }
    }
    // (d) a fault is the driver's: it must show as failures, never as an incomplete verdict.
    for ((fault, setup), outcomes) in &results {
        if fault != &fault_name(None) && !outcomes.errored.is_empty() {
            let ids: Vec<&str> = outcomes.errored.iter().map(String::as_str).collect();
            problems.push(format!(
                "fault {fault} ({setup:?}) made harness errors, not failures: {}",
                ids.join(", ")
            ));
        }
    }
    for id in &all_cases {
        if !killers.contains_key(id) {
            problems.push(format!("case {id} failed under no fault"));
        }
    }

    let markdown = render(&by_fault, &killers, &all_cases, kills, wall, &problems);
    print!("{markdown}");
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/mutation-matrix.md");
    std::fs::write(&doc, &markdown).expect("write docs/mutation-matrix.md");
    eprintln!("matrix written to {}", doc.display());
    if problems.is_empty() {
        println!(
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {wall:.2}s"
        );
    } else {
        for problem in &problems {
            eprintln!("matrix problem: {problem}");
        }
        println!(
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {wall:.2}s"
        );
        std::process::exit(101);
    }
}

fn render(
    by_fault: &BTreeMap<String, (BTreeSet<String>, usize, usize)>,
    killers: &BTreeMap<String, BTreeSet<String>>,
    all_cases: &BTreeSet<String>,
    kills: usize,
    wall: f64,
    problems: &[String],
) -> String {
    let killed_faults = by_fault.values().filter(|(f, _, _)| !f.is_empty()).count();
    let killing_cases = all_cases
        .iter()
        .filter(|c| killers.contains_key(*c))
        .count();
    let mut out = String::new();
    out.push_str("# Mutation matrix\n\n");
    out.push_str("Written by `cargo test -p suites --test mutation_matrix` (part of `cargo test --workspace`): every\n");
    out.push_str("suite runs against the reference driver once per `--fault` (see `reference-driver/src/faults.rs`),\n");
    out.push_str("and once with no fault, in the default set-up and, for the clone-capability faults, with\n");
    out.push_str(
        "`CLONE_VOLUME` switched off. A fault is killed when at least one case fails under it.\n\n",
    );
    out.push_str("The Kubernetes (`k8s_*`) cases need a cluster; their matrix is the local-cluster fault lane\n");
    out.push_str("(`ci/local-cluster-faults.sh`, in `.ci/run`), and the cases no driver fault can kill (refusals\n");
    out.push_str("and drops made by external-provisioner or the API server) are listed with their positive\n");
    out.push_str("controls in [k8s-rules.md](k8s-rules.md#mutation-matrix).\n\n");
    out.push_str(&format!(
        "**{killed_faults} of {} faults killed; {killing_cases} of {} cases kill at least one fault; {kills} kills; clean runs {}; wall time {wall:.0} s.**\n\n",
        by_fault.len(),
        all_cases.len(),
        if problems.iter().any(|p| p.starts_with("without faults")) { "NOT green" } else { "all green" },
    ));
    if !problems.is_empty() {
        out.push_str("## Problems\n\n");
        for problem in problems {
            out.push_str(&format!("- {problem}\n"));
        }
        out.push('\n');
    }
    out.push_str("## Faults and the cases that caught them\n\n| fault | cases failed | harness errors | leaks | caught by |\n|---|--:|--:|--:|---|\n");
    for (fault, (failed, errors, leaks)) in by_fault {
        let list: Vec<&str> = failed.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "| `{fault}` | {} | {errors} | {leaks} | {} |\n",
            failed.len(),
            list.join("<br>")
        ));
    }
    out.push_str("\n## Cases and the faults they catch\n\n| case | faults caught |\n|---|---|\n");
    for case in all_cases {
        let list: Vec<String> = killers
            .get(case)
            .map(|k| k.iter().map(|f| format!("`{f}`")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{case}` | {} |\n",
            if list.is_empty() {
                "**none**".to_string()
            } else {
                list.join(" ")
            }
        ));
    }
    out
}
