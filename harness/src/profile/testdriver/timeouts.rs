//! e2e `Timeouts` (a map of Go durations, `framework/timeouts.go`) into profile timeouts.
//!
//! e2e parses every value with Go's `time.ParseDuration`, then copies them into its
//! `TimeoutContext` through `encoding/json`, whose field matching ignores case. One value that
//! does not parse makes e2e log it and keep its defaults for every timeout.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Walk;
use crate::profile::{ProfileError, Timeouts};

/// The fields of e2e's `TimeoutContext`; other keys are warned about (e2e ignores them).
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
        let texts = self.duration_texts(&map)?;
        let mut given: BTreeMap<&str, u64> = BTreeMap::new();
        // serde_json's map iterates in byte order, as Go's json.Marshal writes a map: of two
        // keys naming one field in different case, the later one wins in e2e, and here.
        for (key, text) in texts {
            let secs = match go_duration_secs(text) {
                Ok(secs) => secs,
                Err(reason) => {
                    self.warn(format!(
                        "Timeouts.{key}: {reason}; e2e then keeps its default for every \
                         timeout, and so does the harness"
                    ));
                    return Ok(Timeouts::default());
                }
            };
            match TIMEOUT_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(k) => {
                    given.insert(*k, secs);
                }
                None => self.warn(format!(
                    "unknown key \"Timeouts.{key}\" (not an e2e timeout; ignored)"
                )),
            }
        }
        Ok(mapped(&given))
    }

    /// The values as text. The map is a Go map[string]string, so e2e's decoder refuses the
    /// whole file over a value that is not a string, before any duration is parsed.
    fn duration_texts<'m>(
        &self,
        map: &'m Map<String, Value>,
    ) -> Result<Vec<(&'m str, &'m str)>, ProfileError> {
        (map.iter())
            .map(|(key, value)| match value {
                Value::String(s) => Ok((key.as_str(), s.as_str())),
                Value::Null => Ok((key.as_str(), "")),
                _ => Err(self.error(
                    &format!("Timeouts.{key}"),
                    "expected a Go duration string such as \"5m\" (e2e refuses the file)",
                )),
            })
            .collect()
    }
}

/// The profile timeouts the given e2e timeouts imply.
fn mapped(given: &BTreeMap<&str, u64>) -> Timeouts {
    let largest = |limit: Limit| {
        (MAPPED.iter())
            .filter(|(_, l)| *l == limit)
            .filter_map(|(k, _)| given.get(k).copied())
            .max()
    };
    let mut timeouts = Timeouts::default();
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
    timeouts
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
    fn an_unparsable_timeout_keeps_every_default_as_in_e2e() {
        let text = "DriverInfo:\n  Name: d.example\nTimeouts:\n  PodStart: soon\n  \
                    ClaimProvision: 9m\n";
        let (p, warnings) = load_text(text).unwrap();
        assert_eq!(p.timeouts, Timeouts::default());
        let joined = warnings.join("\n");
        assert!(
            joined.contains("Timeouts.PodStart: invalid duration \"soon\"")
                && joined.contains("e2e then keeps its default for every timeout"),
            "{joined}"
        );
        // A number is refused by e2e's decoder, before any duration is parsed.
        let err = load_text("DriverInfo:\n  Name: d\nTimeouts:\n  Poll: soon\n  PodStart: 300\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Timeouts.PodStart: expected a Go duration string"),
            "{err}"
        );
    }

    #[test]
    fn timeout_keys_match_fields_in_any_case_as_encoding_json_does() {
        // "podStart" sorts after "PodStart", so it wins, as in e2e.
        let text = "DriverInfo:\n  Name: d.example\nTimeouts:\n  PodStart: 4m\n  \
                    podStart: 6m\n  dataSourceProvision: 9m\n";
        let (p, warnings) = load_text(text).unwrap();
        assert_eq!((p.timeouts.pod_secs, p.timeouts.clone_secs), (360, 540));
        assert!(!warnings.join("\n").contains("Timeouts."), "{warnings:?}");
    }
}
