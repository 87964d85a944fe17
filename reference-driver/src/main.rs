//! `reference-driver`: serve the reference CSI driver on a unix socket or TCP endpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use reference_driver::config::{DriverConfig, Feature, parse_duration, parse_size};
use reference_driver::core::Driver;
use reference_driver::faults::Fault;
use reference_driver::server::{self, Endpoint};
use reference_driver::storage::FsType;
use reference_driver::variants::Variant;

/// Hostpath-style reference CSI driver with real, independent clones.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to serve: unix:///absolute/path.sock or tcp://host:port.
    #[arg(long)]
    endpoint: Endpoint,
    /// Directory for state.json, volume images and snapshot images.
    #[arg(long)]
    state_dir: PathBuf,
    /// Node id reported by NodeGetInfo (default: the host name).
    #[arg(long)]
    node_id: Option<String>,
    /// Plugin name reported by GetPluginInfo.
    #[arg(long, default_value = reference_driver::config::DEFAULT_DRIVER_NAME)]
    driver_name: String,
    /// Largest volume the driver creates or expands to (bytes, or Ki/Mi/Gi/Ti suffix).
    #[arg(long, default_value = "1Ti", value_parser = parse_size)]
    max_volume_size: u64,
    /// Size of a new empty volume when the request has no capacity_range.
    #[arg(long, default_value = "1Gi", value_parser = parse_size)]
    default_volume_size: u64,
    /// Filesystem for mount volumes whose capability leaves fs_type empty.
    #[arg(long, default_value = "ext4", value_parser = parse_fs)]
    default_fs_type: FsType,
    /// Optional capabilities to advertise (comma-separated); CREATE_DELETE_VOLUME is always on.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Feature::ALL.to_vec())]
    features: Vec<Feature>,
    /// Test aid: milliseconds to sleep after each copied chunk, to widen crash windows.
    #[arg(long, hide = true)]
    copy_pace_ms: Option<u64>,
    /// Longest a source filesystem stays frozen while it is copied (`30s`, `500ms`); a copy
    /// that takes longer is refused and the filesystem thawed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    freeze_deadline: Duration,
    /// Make the driver deliberately non-conformant in a named way (repeatable; for harness
    /// self-tests, see docs/mutation-matrix.md).
    #[arg(long = "fault", value_enum)]
    faults: Vec<Fault>,
    /// Answer in another way the CSI spec allows (repeatable; conformant, unlike a fault:
    /// for proving the harness accepts every legal answer, see docs/mutation-matrix.md).
    #[arg(long = "variant", value_enum)]
    variants: Vec<Variant>,
}

fn parse_fs(text: &str) -> Result<FsType, String> {
    FsType::parse(text).ok_or_else(|| format!("unsupported filesystem {text:?} (use ext4 or xfs)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = DriverConfig::new(args.state_dir);
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    config.driver_name = args.driver_name;
    config.max_volume_size = args.max_volume_size;
    config.default_volume_size = args.default_volume_size;
    config.default_fs_type = args.default_fs_type;
    config.features = args.features.into_iter().collect();
    config.copy_pace = args.copy_pace_ms.map(Duration::from_millis);
    config.freeze_deadline = args.freeze_deadline;
    config.faults = args.faults.into_iter().collect();
    config.variants = args.variants.into_iter().collect();
    if !config.variants.is_empty() {
        tracing::info!(variants = ?config.variants, "legal variants on");
    }
    if !config.faults.is_empty() {
        tracing::warn!(faults = ?config.faults, "deliberately non-conformant: faults injected");
    }
    tracing::info!(state_dir = %config.state_dir.display(), features = ?config.features, "starting");
    let driver = Driver::open(config).context("opening the state dir")?;
    server::serve(Arc::new(driver), &args.endpoint)
        .await
        .context("serving CSI")?;
    Ok(())
}
