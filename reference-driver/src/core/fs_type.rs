//! The filesystem type of a new volume: fresh, its source's, or, across access types, what a
//! converting driver (`--variant=convert-access-types`) can carry over.

use super::{CreateVolume, Driver, Origin};
use crate::error::{DriverError, DriverResult};
use crate::faults::Fault;
use crate::state::{AccessType, Source};
use crate::storage::FsType;

impl Driver {
    pub(super) fn choose_fs_type(
        &self,
        request: &CreateVolume,
        origin: Option<&Origin>,
    ) -> DriverResult<Option<FsType>> {
        let mismatch_accepted = origin.is_some_and(|o| o.access_type != request.access_type)
            && self.config.fault(Fault::AccessTypeMismatchAccepted);
        let Some(origin) = origin.filter(|_| !mismatch_accepted) else {
            return Ok(match request.access_type {
                AccessType::Block => None,
                AccessType::Mount => Some(request.fs_type.unwrap_or(self.config.default_fs_type)),
            });
        };
        let what = match origin.source {
            Source::Volume(_) => "volume",
            Source::Snapshot(_) => "snapshot",
        };
        if origin.access_type != request.access_type {
            return self.converted_fs_type(request, origin, what);
        }
        if let (Some(wanted), Some(have)) = (request.fs_type, origin.fs_type)
            && wanted != have
        {
            return Err(DriverError::invalid(
                "volume_capabilities.mount.fs_type",
                format!("the source {what} holds {have}; a copy of it cannot be {wanted}"),
            ));
        }
        Ok(origin.fs_type)
    }

    /// A copy to the other access type, when the driver converts (a variant): a block copy
    /// carries the source's filesystem image as it is; a filesystem copy needs a block source
    /// that holds a filesystem (else it is refused: raw bytes cannot be a filesystem).
    fn converted_fs_type(
        &self,
        request: &CreateVolume,
        origin: &Origin,
        what: &str,
    ) -> DriverResult<Option<FsType>> {
        let refused = |why: String| {
            DriverError::invalid(
                "volume_capabilities",
                format!(
                    "the source {what} is a {:?} volume and cannot populate a {:?} volume{why}",
                    origin.access_type, request.access_type
                ),
            )
        };
        if !self.config.converts_access_types() {
            return Err(refused(String::new()));
        }
        if request.access_type == AccessType::Block {
            return Ok(None);
        }
        let found = crate::storage::image::detect_filesystem(&origin.image)?;
        match (found, request.fs_type) {
            (None, _) => Err(refused(": it holds no filesystem".into())),
            (Some(have), Some(wanted)) if have != wanted => {
                Err(refused(format!(": it holds {have}, not {wanted}")))
            }
            (Some(have), _) => Ok(Some(have)),
        }
    }
}
