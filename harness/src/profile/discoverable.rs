//! Capabilities a profile may leave to the driver.
//!
//! The e2e driver file has no key for several capabilities the harness needs (whether to
//! stage, to ControllerPublish, to list or get volumes). Taking them as false would fail
//! preflight for every driver that has them, so such a profile lists them as undeclared and
//! the run reads them from the driver's own advertisement before its cases start.

use std::fmt;

use super::Capabilities;

/// A capability that can be left to the driver's advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Discoverable {
    /// Controller `LIST_VOLUMES`.
    ListVolumes,
    /// Controller `GET_VOLUME`.
    GetVolume,
    /// Controller `PUBLISH_UNPUBLISH_VOLUME`.
    ControllerPublish,
    /// Node `STAGE_UNSTAGE_VOLUME`.
    StageUnstage,
}

impl Discoverable {
    pub const ALL: [Discoverable; 4] = [
        Discoverable::ListVolumes,
        Discoverable::GetVolume,
        Discoverable::ControllerPublish,
        Discoverable::StageUnstage,
    ];

    /// The profile key.
    pub fn key(self) -> &'static str {
        match self {
            Discoverable::ListVolumes => "list_volumes",
            Discoverable::GetVolume => "get_volume",
            Discoverable::ControllerPublish => "controller_publish",
            Discoverable::StageUnstage => "stage_unstage",
        }
    }
}

impl fmt::Display for Discoverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl Capabilities {
    fn flag_mut(&mut self, c: Discoverable) -> &mut bool {
        match c {
            Discoverable::ListVolumes => &mut self.list_volumes,
            Discoverable::GetVolume => &mut self.get_volume,
            Discoverable::ControllerPublish => &mut self.controller_publish,
            Discoverable::StageUnstage => &mut self.stage_unstage,
        }
    }

    /// Whether `c` waits for the driver's advertisement (planning treats it as present, so
    /// the run decides once it has asked the driver).
    pub fn undecided(&self, c: Discoverable) -> bool {
        self.undeclared.contains(&c)
    }

    /// Leaves `c` to the driver: false until `take_from_driver` sets it.
    pub fn leave_to_driver(&mut self, c: Discoverable) {
        *self.flag_mut(c) = false;
        self.undeclared.insert(c);
    }

    /// Sets every undeclared capability to what the driver advertises; `advertised` answers
    /// for one. Each is then recorded in `from_driver`.
    pub fn take_from_driver(&mut self, advertised: impl Fn(Discoverable) -> bool) {
        for c in std::mem::take(&mut self.undeclared) {
            *self.flag_mut(c) = advertised(c);
            self.from_driver.insert(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_capabilities_are_filled_from_the_driver() {
        let mut caps = Capabilities::default();
        for c in Discoverable::ALL {
            caps.leave_to_driver(c);
        }
        assert!(caps.undecided(Discoverable::StageUnstage));
        caps.take_from_driver(|c| {
            matches!(c, Discoverable::StageUnstage | Discoverable::ListVolumes)
        });
        assert!(caps.stage_unstage && caps.list_volumes);
        assert!(!caps.get_volume && !caps.controller_publish);
        assert!(caps.undeclared.is_empty());
        assert_eq!(caps.from_driver.len(), 4);
        assert!(!caps.undecided(Discoverable::StageUnstage));
    }
}
