//! `csi-clone-conformance`: `run`, `list`, `profile check`, `local-cluster clean`. Exit codes:
//! `harness::exit`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use csi_proto::transport::Endpoint;
use harness::exit;
use harness::plan::{Selection, plan};
use harness::profile::{DriverProfile, load_testdriver};
use harness::progress::TerminalProgress;
use harness::runner::{ReportPaths, RunError, RunOptions, run};
pub use harness::steps::error_chain;
use harness::target::{Surfaces, TargetSpec, find_reference_driver};
use local_cluster::DriverCommand;

#[derive(Parser, Debug)]
#[command(
    name = "csi-clone-conformance",
    version,
    about = "Conformance tests for CSI volume cloning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the suites against the embedded reference driver (default) or a driver endpoint.
    Run(Box<RunArgs>),
    /// List the cases (offline: no driver is contacted).
    List(SelectArgs),
    /// Driver profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// The single-node cluster of `run --local-cluster`.
    #[command(subcommand)]
    LocalCluster(LocalClusterCommand),
}

#[derive(Subcommand, Debug)]
pub enum LocalClusterCommand {
    /// Undo local clusters whose harness was killed (processes, mounts, loop devices, sysctls,
    /// host paths), from their records in /var/lib/csi-clone-conformance/local-cluster; a
    /// cluster whose harness still runs is left alone. Every run does this first, too.
    Clean,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Validate a profile and print its effective settings.
    Check {
        /// The driver profile YAML.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Default, Clone)]
pub struct SelectArgs {
    /// Run only cases whose name contains one of these (libtest-style filters).
    pub filters: Vec<String>,
    /// Skip cases whose name contains this (repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Filters and --skip match whole names only.
    #[arg(long)]
    pub exact: bool,
    /// Our strict driver profile (default: the built-in profile of the reference driver).
    #[arg(long, conflicts_with = "testdriver")]
    pub profile: Option<PathBuf>,
    /// A Kubernetes e2e external driver file (testdriver.yaml) instead of a profile.
    #[arg(long)]
    pub testdriver: Option<PathBuf>,
    /// `list`: plan for a Kubernetes target (as with --kubeconfig or --local-cluster).
    #[arg(long, hide = true)]
    pub kubernetes: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// A running driver: unix:///path.sock or tcp://host:port. Default: start the reference driver.
    #[arg(long, conflicts_with_all = ["kubeconfig", "cluster", "local_cluster"])]
    pub endpoint: Option<Endpoint>,
    /// Target a Kubernetes cluster through this kubeconfig (the driver must be installed there).
    #[arg(long, conflicts_with = "local_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, conflicts_with = "local_cluster")]
    pub context: Option<String>,
    /// Target a Kubernetes cluster found the usual way: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long, conflicts_with = "local_cluster")]
    pub cluster: bool,
    /// Start a single-node Kubernetes cluster on this machine (upstream binaries from --k8s-bin,
    /// root needed) with the driver in it, run the Kubernetes suites, tear it all down.
    #[arg(long)]
    pub local_cluster: bool,
    /// The CSI driver the local cluster runs (default: the reference driver). A command line;
    /// {endpoint} is replaced by its socket path, {endpoint_url} by unix://PATH, {node_id} by
    /// the node name and {state_dir} by a directory the run removes. Needs --profile or
    /// --testdriver.
    #[arg(long, requires = "local_cluster")]
    pub driver_cmd: Option<String>,
    /// The name the driver must report in GetPluginInfo (default: the profile's name).
    #[arg(long, requires = "local_cluster")]
    pub driver_name: Option<String>,
    /// Directory of the upstream binaries (default: $CSI_CLONE_K8S_BIN, else
    /// ~/.cache/csi-clone-conformance/k8s-bin/current, as ci/install-k8s.sh makes it).
    #[arg(long, requires = "local_cluster")]
    pub k8s_bin: Option<PathBuf>,
    /// Seconds each local-cluster component may take to start.
    #[arg(long, default_value_t = 120, requires = "local_cluster")]
    pub start_timeout: u64,
    /// Feature gates for the local cluster's API server and controller manager, e.g.
    /// `CrossNamespaceVolumeDataSource=true` (csi-provisioner gets that one too, with the
    /// ReferenceGrant permissions it then needs).
    #[arg(long, value_delimiter = ',', requires = "local_cluster")]
    pub feature_gates: Vec<String>,
    /// Mount volumes with this fs type instead of the profile's fs_type ("" leaves it to the
    /// driver). With --testdriver, the run requests e2e's default entry and names the other
    /// SupportedFsType entries; this covers one of them.
    #[arg(long)]
    pub fs_type: Option<String>,
    /// Image of the writer/reader pods on a cluster (default: the profile's, else busybox).
    #[arg(long, conflicts_with = "local_cluster")]
    pub pod_image: Option<String>,
    /// The driver's node service, if it listens elsewhere than --endpoint.
    #[arg(long, requires = "endpoint")]
    pub node_endpoint: Option<Endpoint>,
    /// The reference driver binary for the embedded target (default: next to this binary).
    #[arg(long, conflicts_with_all = ["endpoint", "driver_cmd"])]
    pub driver_bin: Option<PathBuf>,
    /// Extra arguments for the embedded reference driver (e.g. --driver-arg=--default-fs-type=xfs).
    #[arg(
        long = "driver-arg",
        allow_hyphen_values = true,
        conflicts_with_all = ["endpoint", "driver_cmd"]
    )]
    pub driver_args: Vec<String>,
    #[arg(long, default_value = "target/csi-clone/junit.xml")]
    pub junit: PathBuf,
    #[arg(long, default_value = "target/csi-clone/summary.json")]
    pub json: PathBuf,
    #[arg(long, default_value = "target/csi-clone/summary.md")]
    pub markdown: PathBuf,
    /// Seed for all generated data and names (default: random; printed and reported).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of simultaneous clones in the concurrency suite.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub parallel_clones: u64,
    /// Cases run at once.
    #[arg(long, default_value_t = 2)]
    pub test_threads: usize,
    /// List the selected cases instead of running them (offline).
    #[arg(long)]
    pub list: bool,
    /// Where staging and target paths (and the embedded driver's state) go.
    #[arg(long, default_value = "/var/tmp/csi-clone-conformance")]
    pub work_dir: PathBuf,
    /// More output (each case's RPC trace on failure, skipped cases).
    #[arg(short, long)]
    pub verbose: bool,
    /// Less output (failures and the summary only).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Loads the profile the arguments name; prints warnings; `Err` carries the message.
pub fn load_profile(select: &SelectArgs) -> Result<(DriverProfile, String), String> {
    if let Some(path) = &select.testdriver {
        let (profile, warnings) = load_testdriver(path).map_err(|e| error_chain(&e))?;
        for warning in warnings {
            // Each warning names its file (the driver file or a class file it names).
            eprintln!("warning: {warning}");
        }
        return Ok((profile, path.display().to_string()));
    }
    match &select.profile {
        Some(path) => Ok((
            DriverProfile::load(path).map_err(|e| error_chain(&e))?,
            path.display().to_string(),
        )),
        None => Ok((
            DriverProfile::reference(),
            "reference (built-in)".to_string(),
        )),
    }
}

pub fn selection(select: &SelectArgs) -> Selection {
    Selection {
        filters: select.filters.clone(),
        skip: select.skip.clone(),
        exact: select.exact,
    }
}

/// Prints `name: test` lines like libtest's `--list`, with skip reasons on stderr.
fn list(select: &SelectArgs) -> i32 {
    let (profile, _) = match load_profile(select) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::PROFILE;
        }
    };
    let surfaces = if select.kubernetes {
        Surfaces {
            csi: false,
            kubernetes: true,
        }
    } else {
        Surfaces {
            csi: true,
            kubernetes: false,
        }
    };
    let planned = plan(&crate::all(), &profile, &selection(select), surfaces);
    for item in &planned {
        println!("{}: test", item.name);
        if let Some(reason) = &item.skip_reason {
            eprintln!("  (skipped with this profile: {reason})");
        }
    }
    if planned.is_empty() {
        exit::NOTHING_SELECTED
    } else {
        exit::PASSED
    }
}

/// The target the arguments describe; `Err` is a usage message.
fn target_spec(args: &RunArgs, profile: &DriverProfile) -> Result<TargetSpec, String> {
    if let Some(controller) = &args.endpoint {
        return Ok(TargetSpec::Endpoint {
            controller: controller.clone(),
            node: args.node_endpoint.clone(),
        });
    }
    if args.kubeconfig.is_some() || args.context.is_some() || args.cluster {
        return Ok(TargetSpec::Cluster {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        });
    }
    let reference = || {
        args.driver_bin.clone().or_else(find_reference_driver).ok_or_else(|| {
            "the reference-driver binary is missing: build it (cargo build --release --workspace) or pass --driver-bin, --endpoint or --driver-cmd".to_string()
        })
    };
    if !args.local_cluster {
        return Ok(TargetSpec::Embedded {
            driver_bin: reference()?,
            args: args.driver_args.clone(),
        });
    }
    let driver = match &args.driver_cmd {
        Some(command) => {
            if args.select.profile.is_none() && args.select.testdriver.is_none() {
                return Err("--driver-cmd needs --profile or --testdriver: they declare what the driver supports".into());
            }
            DriverCommand::parse(command).map_err(|e| format!("--driver-cmd: {e}"))?
        }
        None => {
            let mut argv = vec![reference()?.display().to_string()];
            argv.extend(
                [
                    "--endpoint",
                    "{endpoint_url}",
                    "--state-dir",
                    "{state_dir}",
                    "--node-id",
                    "{node_id}",
                ]
                .map(String::from),
            );
            argv.extend(args.driver_args.iter().cloned());
            DriverCommand { argv }
        }
    };
    let k8s_bin = args
        .k8s_bin
        .clone()
        .or_else(local_cluster::bins::default_dir)
        .ok_or("--k8s-bin is needed: HOME is not set, so there is no default")?;
    Ok(TargetSpec::LocalCluster {
        k8s_bin,
        driver,
        driver_name: Some(
            args.driver_name
                .clone()
                .unwrap_or_else(|| profile.name.clone()),
        ),
        start_timeout: Duration::from_secs(args.start_timeout),
        feature_gates: args.feature_gates.clone(),
    })
}

fn run_command(args: RunArgs) -> i32 {
    let (mut profile, mut label) = match load_profile(&args.select) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::PROFILE;
        }
    };
    if let Some(fs_type) = &args.fs_type {
        if !profile.capabilities.mount {
            eprintln!("error: --fs-type needs a profile with mount volumes (capabilities.mount)");
            return exit::USAGE;
        }
        profile.fs_type = Some(fs_type.trim().to_owned()).filter(|t| !t.is_empty());
        label = format!("{label} (--fs-type {fs_type:?})");
    }
    let target = match target_spec(&args, &profile) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::USAGE;
        }
    };
    if args.list {
        let select = SelectArgs {
            kubernetes: target.surfaces().kubernetes,
            ..args.select.clone()
        };
        return list(&select);
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let planned = plan(
        &crate::all(),
        &profile,
        &selection(&args.select),
        target.surfaces(),
    );
    let options = RunOptions {
        target,
        profile: Arc::new(profile),
        profile_label: label,
        seed,
        parallel_clones: args.parallel_clones as usize,
        test_threads: args.test_threads,
        reports: ReportPaths {
            junit: Some(args.junit.clone()),
            json: Some(args.json.clone()),
            markdown: Some(args.markdown.clone()),
        },
        work_dir: args.work_dir.clone(),
        connect_timeout: Duration::from_secs(30),
        properties: BTreeMap::new(),
        pod_image: args.pod_image.clone(),
        silent: false,
    };
    let progress = TerminalProgress {
        verbose: args.verbose,
        quiet: args.quiet,
    };
    finish(run(planned, options, vec![Box::new(progress)]), &args.junit)
}

/// Turns a run's result into the exit code, printing the closing lines.
pub fn finish(result: Result<reports::RunReport, RunError>, junit: &std::path::Path) -> i32 {
    match result {
        Ok(report) => {
            let counts = report.counts();
            println!(
                "{} passed, {} advisory, {} failed, {} skipped",
                counts.passed,
                counts.advisory,
                counts.failed + counts.errors,
                counts.skipped
            );
            eprintln!(
                "reports: {} (and the JSON and Markdown summaries beside the paths given)",
                junit.display()
            );
            exit::for_report(&report)
        }
        Err(RunError::NothingSelected) => {
            eprintln!(
                "error: no cases selected (check the filters, or `csi-clone-conformance list`)"
            );
            exit::NOTHING_SELECTED
        }
        Err(e @ RunError::Target(_)) => {
            eprintln!("error: {}", error_chain(&e));
            exit::UNREACHABLE
        }
        Err(e @ RunError::Preflight(_)) => {
            eprintln!("error: {e}");
            exit::NOT_READY
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            exit::HARNESS_ERROR
        }
    }
}

pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(17)
}

/// `local-cluster clean`: prints what it did; fails if anything could not be undone.
fn clean_command() -> i32 {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "error: local-cluster clean needs root (it stops processes, unmounts, restores sysctls)"
        );
        return exit::HARNESS_ERROR;
    }
    let registry = local_cluster::host::Registry::system();
    let report = match local_cluster::clean_earlier_runs(&registry) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::HARNESS_ERROR;
        }
    };
    if report.runs.is_empty() {
        println!("no local cluster recorded in {}", registry.dir().display());
    }
    for line in report.lines() {
        println!("{line}");
    }
    if report.failures().is_empty() {
        exit::PASSED
    } else {
        exit::HARNESS_ERROR
    }
}

pub fn main_with(cli: Cli) -> i32 {
    match cli.command {
        Command::LocalCluster(LocalClusterCommand::Clean) => clean_command(),
        Command::Run(args) => run_command(*args),
        Command::List(select) => list(&select),
        Command::Profile(ProfileCommand::Check { file }) => match DriverProfile::load(&file) {
            Ok(profile) => {
                print!("{}", profile.to_yaml());
                eprintln!("{}: valid", file.display());
                exit::PASSED
            }
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                exit::PROFILE
            }
        },
    }
}
