//! `csi-clone-conformance`: the command-line front door; all logic is in `suites::cli`.

use clap::Parser;

fn main() {
    let cli = suites::cli::Cli::try_parse().unwrap_or_else(|e| {
        let code = if e.use_stderr() {
            harness::exit::USAGE
        } else {
            harness::exit::PASSED
        };
        let _ = e.print();
        std::process::exit(code);
    });
    let verbose = matches!(&cli.command, suites::cli::Command::Run(a) if a.verbose);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // kube logs every refused connection while the harness polls a starting
                // API server; the harness reports what matters itself.
                (if verbose {
                    "debug,kube_client=info"
                } else {
                    "warn,kube_client=off"
                })
                .into()
            }),
        )
        .init();
    std::process::exit(suites::cli::main_with(cli));
}
