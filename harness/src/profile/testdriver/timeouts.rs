//! e2e `Timeouts` (a map of Go durations, `framework/timeouts.go`) into profile timeouts.

use serde_json::Value;

use super::Walk;
use crate::profile::{ProfileError, Timeouts};

/// Every e2e timeout key; others are warned about (e2e ignores them).
const TIMEOUT_KEYS: &[&str] = &[
    "Poll",
    "PodStart",
    "PodStartShort",
    "PodStartSlow",
    "PodDelete",
    "ClaimProvision",
    "DataSourceProvision",
    "ClaimProvisionShort",
    "ClaimBound",
    "PVReclaim",
    "PVBound",
    "PVCreate",
    "PVDelete",
    "PVDeleteSlow",
    "SnapshotCreate",
    "SnapshotDelete",
    "SnapshotControllerMetrics",
    "SystemPodsStartup",
    "NodeSchedulable",
    "SystemDaemonsetStartup",
    "NodeNotReady",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    Clone,
    Bind,
    Pod,
    Delete,
}

/// The e2e keys that mean what a profile timeout means. Where several keys feed one timeout,
/// the largest given value wins: a vendor raised it because something was slow, and a larger
/// limit costs time only when a case fails. Keys left out keep the profile default.
/// `ClaimProvision` is e2e's wait for a dynamically provisioned claim, `ClaimBound` for one
/// binding to an existing PV; both are waits for `Bound`.
const MAPPED: &[(&str, Limit)] = &[
    ("DataSourceProvision", Limit::Clone),
    ("ClaimProvision", Limit::Bind),
    ("ClaimBound", Limit::Bind),
    ("PodStart", Limit::Pod),
    ("PodDelete", Limit::Delete),
    ("PVDelete", Limit::Delete),
    ("SnapshotDelete", Limit::Delete),
];

impl Walk<'_> {
    pub(super) fn timeouts(&mut self, v: Option<&Value>) -> Result<Timeouts, ProfileError> {
        let map = self.mapping(v, "Timeouts")?.unwrap_or_default();
        let mut timeouts = Timeouts::default();
        let mut given: Vec<(Limit, u64)> = Vec::new();
        for (key, value) in &map {
            // A Go map keyed by field name, so case-sensitive.
            if !TIMEOUT_KEYS.contains(&key.as_str()) {
                self.warn(format!(
                    "unknown key \"Timeouts.{key}\" (not an e2e timeout; ignored)"
                ));
                continue;
            }
            let Some((_, limit)) = MAPPED.iter().find(|(k, _)| k == key) else {
                continue;
            };
            let field = format!("Timeouts.{key}");
            let text = self.string(Some(value), &field)?.unwrap_or_default();
            let secs = go_duration_secs(&text).map_err(|r| self.error(&field, r))?;
            given.push((*limit, secs));
        }
        let largest = |limit: Limit| {
            (given.iter())
                .filter(|(l, _)| *l == limit)
                .map(|(_, s)| *s)
                .max()
        };
        let slots = [
            (Limit::Clone, &mut timeouts.clone_secs),
            (Limit::Bind, &mut timeouts.bind_secs),
            (Limit::Pod, &mut timeouts.pod_secs),
            (Limit::Delete, &mut timeouts.delete_secs),
        ];
        for (limit, slot) in slots {
            if let Some(secs) = largest(limit) {
                *slot = secs;
            }
        }
        Ok(timeouts)
    }
}

/// Whole seconds, rounded up, from a Go duration such as "5m", "1h30m" or "90s".
fn go_duration_secs(text: &str) -> Result<u64, String> {
    let fail =
        || format!("invalid duration \"{text}\" (expected Go syntax such as \"5m\" or \"1h30m\")");
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut secs = 0f64;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(fail)?;
        let value: f64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(fail()),
        };
        secs += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(secs.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_text;
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("5m"), Ok(300));
        assert_eq!(go_duration_secs("1h30m"), Ok(5400));
        assert_eq!(go_duration_secs("1.5s"), Ok(2));
        assert_eq!(go_duration_secs("250ms"), Ok(1));
        assert!(go_duration_secs("5").is_err());
        assert!(go_duration_secs("5d").is_err());
    }

    #[test]
    fn cluster_timeouts_take_the_largest_mapped_key() {
        let text = "DriverInfo:\n  Name: d.example\nTimeouts:\n  DataSourceProvision: 7m\n  \
                    ClaimProvision: 2m\n  ClaimBound: 4m\n  PodStart: 90s\n  PodDelete: 1m\n  \
                    PVDelete: 8m\n  SnapshotDelete: 3m\n  PodStartSlow: 1h\n  ClaimDelete: 9m\n";
        let (p, warnings) = load_text(text).unwrap();
        let t = &p.timeouts;
        assert_eq!(
            (t.clone_secs, t.bind_secs, t.pod_secs, t.delete_secs),
            (420, 240, 90, 480)
        );
        assert_eq!(t.rpc_secs, Timeouts::default().rpc_secs);
        // ClaimDelete is not an e2e key (claims are covered by PVDelete), so it is a warning.
        let joined = warnings.join("\n");
        assert!(
            joined.contains("unknown key \"Timeouts.ClaimDelete\""),
            "{joined}"
        );
        assert!(!joined.contains("PodStartSlow"), "{joined}");
    }

    #[test]
    fn unmapped_timeouts_keep_defaults() {
        let text = "DriverInfo:\n  Name: d.example\nTimeouts:\n  ClaimProvision: 1m\n";
        let (p, _) = load_text(text).unwrap();
        assert_eq!(p.timeouts.bind_secs, 60);
        let d = Timeouts::default();
        assert_eq!(
            (p.timeouts.pod_secs, p.timeouts.delete_secs),
            (d.pod_secs, d.delete_secs)
        );
    }

    #[test]
    fn bad_cluster_timeout_names_the_key() {
        let text = "DriverInfo:\n  Name: d.example\nTimeouts:\n  PodStart: soon\n";
        let err = load_text(text).unwrap_err().to_string();
        assert!(
            err.contains("Timeouts.PodStart") && err.contains("\"soon\""),
            "{err}"
        );
    }
}
