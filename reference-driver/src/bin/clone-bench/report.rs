//! Results: one `Outcome` per scenario, its latency statistics, and the Markdown table
//! (the JSON is `Outcome` serialized as is).

use std::time::Duration;

use serde::Serialize;

use crate::{GIB, MIB};

/// One scenario's result: a row of the table and an element of the JSON array. `state_fs`
/// holds the images being cloned; `method` is inferred from FICLONE support there;
/// `data_bytes` is what the bench wrote into the source; `clone_secs` are CreateVolume latencies.
#[derive(Serialize, Default, Debug)]
pub struct Outcome {
    pub scenario: String,
    pub state_fs: String,
    pub method: String,
    pub volume_bytes: u64,
    pub data_bytes: u64,
    pub clone_secs: Vec<f64>,
    pub min_secs: f64,
    pub median_secs: f64,
    pub max_secs: f64,
    /// Whole clone phase: sum of sequential clones, or wall time of the concurrent burst.
    pub wall_secs: f64,
    /// Sequential: one clone at the median latency; concurrent: all clones over the wall time.
    pub data_mib_per_sec: f64,
    pub logical_mib_per_sec: f64,
    /// st_blocks * 512 of the source and first clone images (shared extents count in both).
    pub source_allocated_bytes: u64,
    pub clone_allocated_bytes: u64,
    pub verified: String,
    /// Why the scenario did not run, or how it failed; the measurements are then empty.
    pub skipped: Option<String>,
}

impl Outcome {
    /// Adds latency statistics; sequential clones are rated one at a time, a concurrent
    /// burst as a whole.
    pub fn timed(self, times: &[Duration], concurrent_wall: Option<Duration>) -> Outcome {
        let secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
        let mut sorted = secs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (wall, basis, count) = match concurrent_wall {
            Some(w) => (w.as_secs_f64(), w.as_secs_f64(), secs.len() as f64),
            None => (secs.iter().sum(), median, 1.0),
        };
        let mib_s = |bytes: u64| bytes as f64 * count / MIB as f64 / basis;
        Outcome {
            min_secs: sorted[0],
            median_secs: median,
            max_secs: sorted[sorted.len() - 1],
            wall_secs: wall,
            data_mib_per_sec: mib_s(self.data_bytes),
            logical_mib_per_sec: mib_s(self.volume_bytes),
            clone_secs: secs,
            ..self
        }
    }
}

fn size_str(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b => format!("{} MiB", b.div_ceil(MIB)),
    }
}

pub fn markdown_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| Scenario | State dir on | Method | Volume | Data | Clones \
         | Clone latency min / median / max (s) | Clone phase wall (s) | Data MiB/s \
         | Logical MiB/s | Source / clone allocated | Verified |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        if let Some(reason) = &o.skipped {
            out += &format!("| {} | | skipped: {reason} |\n", o.scenario);
            continue;
        }
        let cells = [
            o.scenario.clone(),
            o.state_fs.clone(),
            o.method.clone(),
            size_str(o.volume_bytes),
            size_str(o.data_bytes),
            o.clone_secs.len().to_string(),
            format!(
                "{:.3} / {:.3} / {:.3}",
                o.min_secs, o.median_secs, o.max_secs
            ),
            format!("{:.2}", o.wall_secs),
            format!("{:.0}", o.data_mib_per_sec),
            format!("{:.0}", o.logical_mib_per_sec),
            format!(
                "{} / {}",
                size_str(o.source_allocated_bytes),
                size_str(o.clone_allocated_bytes)
            ),
            o.verified.clone(),
        ];
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}
