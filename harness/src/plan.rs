//! Which cases run: libtest-style selection (filters, `--skip`, `--exact`) and requirement
//! checks against the profile. Offline: nothing here talks to a driver.

use crate::case::{Case, Suite};
use crate::profile::DriverProfile;
use crate::target::Surfaces;

/// libtest semantics: a case is selected if any filter matches (substring, or whole name with
/// `exact`) or there are no filters, and no skip pattern matches.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub filters: Vec<String>,
    pub skip: Vec<String>,
    pub exact: bool,
}

impl Selection {
    pub fn selects(&self, name: &str) -> bool {
        let matches = |pattern: &String| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
    }
}

/// A selected case with its full name and, if a requirement is unmet, why it is skipped.
#[derive(Clone)]
pub struct Planned {
    /// `suite::group::behaviour`.
    pub name: String,
    pub suite: &'static str,
    pub case: Case,
    pub skip_reason: Option<String>,
}

/// The selected cases, each with the reason it is skipped on `target` with `profile`, if any.
pub fn plan(
    suites: &[Suite],
    profile: &DriverProfile,
    selection: &Selection,
    target: Surfaces,
) -> Vec<Planned> {
    suites
        .iter()
        .flat_map(|suite| {
            suite.cases.iter().map(move |case| Planned {
                name: format!("{}::{}", suite.name, case.meta.id),
                suite: suite.name,
                case: case.clone(),
                skip_reason: suite
                    .surface
                    .unmet(target)
                    .or_else(|| case.meta.requires.iter().find_map(|r| r.unmet(profile))),
            })
        })
        .filter(|planned| selection.selects(&planned.name))
        .collect()
}

/// Checks the requirements of the cases still planned to run again, once the run has read
/// from the driver what the profile left to it (`Capabilities::undeclared`): planning counted
/// those as present, and a case needing one the driver lacks is skipped now.
pub fn recheck(planned: &mut [Planned], profile: &DriverProfile) {
    for item in planned.iter_mut().filter(|p| p.skip_reason.is_none()) {
        item.skip_reason = (item.case.meta.requires.iter()).find_map(|r| r.unmet(profile));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{CaseResult, Requirement, Row, row};
    use crate::profile::Discoverable;

    #[test]
    fn capabilities_left_to_the_driver_are_decided_when_the_run_has_read_them() {
        const ROWS: &[Row<()>] = &[
            row("x::lists", "rule", &[Requirement::ListVolumes], ()),
            row("x::gets", "rule", &[Requirement::GetVolume], ()),
        ];
        let suite = Suite::from_rows("s", ROWS, |_, _| async { CaseResult::Ok(()) });
        let mut profile = DriverProfile::reference();
        profile
            .capabilities
            .leave_to_driver(Discoverable::ListVolumes);
        profile
            .capabilities
            .leave_to_driver(Discoverable::GetVolume);
        let csi = Surfaces {
            csi: true,
            kubernetes: false,
        };
        let mut planned = plan(&[suite], &profile, &Selection::default(), csi);
        assert!(planned.iter().all(|p| p.skip_reason.is_none()));
        profile
            .capabilities
            .take_from_driver(|c| c == Discoverable::GetVolume);
        recheck(&mut planned, &profile);
        let reason = planned[0].skip_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("LIST_VOLUMES"), "{reason}");
        assert_eq!(planned[1].skip_reason, None);
    }

    #[test]
    fn selection_follows_libtest() {
        let all = Selection::default();
        assert!(all.selects("size::clone::smaller_is_out_of_range"));
        let filtered = Selection {
            filters: vec!["size::".into()],
            ..Selection::default()
        };
        assert!(filtered.selects("size::clone::smaller_is_out_of_range"));
        assert!(!filtered.selects("content_source::replay::x"));
        let skipping = Selection {
            skip: vec!["smaller".into()],
            ..Selection::default()
        };
        assert!(!skipping.selects("size::clone::smaller_is_out_of_range"));
        let exact = Selection {
            filters: vec!["size::clone".into()],
            exact: true,
            ..Selection::default()
        };
        assert!(!exact.selects("size::clone::smaller_is_out_of_range"));
    }
}
