//! What a case is: typed metadata (id, rule, requirements), the verdict types, and the checks
//! interpreters use to turn RPC results into verdicts.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Code, Status};

use crate::context::CaseCtx;
use crate::profile::{Discoverable, DriverProfile};

/// Something a case needs from the driver or the machine, decided when the trial list is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The profile declares CLONE_VOLUME.
    Clone,
    /// The profile declares that the driver does NOT clone (negative capability cases).
    NoClone,
    /// CREATE_DELETE_SNAPSHOT.
    Snapshot,
    /// Controller EXPAND_VOLUME.
    Expansion,
    /// LIST_VOLUMES.
    ListVolumes,
    /// GET_VOLUME.
    GetVolume,
    /// Block access type.
    Block,
    /// Mount access type.
    Mount,
    /// The harness can read and write published paths (profile `data_plane: local`).
    DataPlane,
    /// Plugin VOLUME_ACCESSIBILITY_CONSTRAINTS.
    Topology,
}

impl Requirement {
    /// Why the case cannot run against `profile`, if it cannot.
    pub fn unmet(self, profile: &DriverProfile) -> Option<String> {
        let caps = &profile.capabilities;
        let (met, what) = match self {
            Requirement::Clone => (
                caps.clone,
                "the profile declares no clone support (capabilities.clone)",
            ),
            Requirement::NoClone => (
                !caps.clone,
                "the driver declares clone support; this case checks a driver without it",
            ),
            Requirement::Snapshot => (
                caps.snapshot,
                "the profile declares no snapshot support (capabilities.snapshot)",
            ),
            Requirement::Expansion => (
                caps.expansion,
                "the profile declares no controller expansion (capabilities.expansion)",
            ),
            // A capability left to the driver counts as present until the run has read it
            // (`plan::recheck` decides then).
            Requirement::ListVolumes => (
                caps.list_volumes || caps.undecided(Discoverable::ListVolumes),
                "the profile declares no LIST_VOLUMES (capabilities.list_volumes)",
            ),
            Requirement::GetVolume => (
                caps.get_volume || caps.undecided(Discoverable::GetVolume),
                "the profile declares no GET_VOLUME (capabilities.get_volume)",
            ),
            Requirement::Block => (
                caps.block,
                "the profile declares no block volumes (capabilities.block)",
            ),
            Requirement::Mount => (
                caps.mount,
                "the profile declares no mount volumes (capabilities.mount)",
            ),
            Requirement::Topology => (
                caps.topology,
                "the profile declares no topology (capabilities.topology)",
            ),
            Requirement::DataPlane => (
                profile.data_plane == crate::profile::DataPlane::Local,
                "data checks need data_plane: local (the harness on the driver's node, as root)",
            ),
        };
        (!met).then(|| what.to_string())
    }
}

/// A case's identity: `id` is `group::behaviour_sentence`; the suite name is prefixed by the runner.
#[derive(Clone, Copy, Debug)]
pub struct CaseMeta {
    pub id: &'static str,
    /// The rule the case checks, e.g. `spec: CreateVolume errors / NOT_FOUND (source does not exist)`.
    pub rule: &'static str,
    pub requires: &'static [Requirement],
}

/// The driver broke the rule.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseFailure {
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseError {
    /// A conformance failure.
    Fail(CaseFailure),
    /// The harness or the machine broke; says nothing about the driver.
    Error(String),
}

pub type CaseResult<T = ()> = Result<T, CaseError>;

pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// A runnable case: metadata plus the suite interpreter bound to one row.
#[derive(Clone)]
pub struct Case {
    pub meta: CaseMeta,
    pub run: Arc<dyn Fn(CaseCtx) -> CaseFuture + Send + Sync>,
}

/// What a suite's cases talk to: a CSI driver directly, or a Kubernetes cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Csi,
    Kubernetes,
}

impl Surface {
    /// Why a suite on this surface cannot run against a target, if it cannot.
    pub fn unmet(self, target: crate::target::Surfaces) -> Option<String> {
        match self {
            Surface::Csi if !target.csi => Some(
                "a CSI-level case: runs against the embedded driver or --endpoint, not a cluster"
                    .into(),
            ),
            Surface::Kubernetes if !target.kubernetes => Some(
                "a Kubernetes case: runs with --kubeconfig, --cluster or --local-cluster".into(),
            ),
            _ => None,
        }
    }
}

/// A suite: a name and its cases; every case of a suite runs through the same interpreter.
pub struct Suite {
    pub name: &'static str,
    pub surface: Surface,
    pub cases: Vec<Case>,
}

impl Suite {
    /// Binds each typed row to the suite's interpreter.
    pub fn from_rows<F, I, Fut>(name: &'static str, rows: &[Row<F>], interpret: I) -> Suite
    where
        F: Copy + Send + Sync + 'static,
        I: Fn(CaseCtx, Row<F>) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = CaseResult> + Send + 'static,
    {
        let cases = rows
            .iter()
            .map(|&row| Case {
                meta: row.meta,
                run: Arc::new(move |ctx| Box::pin(interpret(ctx, row)) as CaseFuture),
            })
            .collect();
        Suite {
            name,
            surface: Surface::Csi,
            cases,
        }
    }

    /// The same suite on another surface.
    pub fn on(mut self, surface: Surface) -> Suite {
        self.surface = surface;
        self
    }
}

/// One table row: the case's metadata and the suite-specific flow its interpreter runs.
#[derive(Clone, Copy, Debug)]
pub struct Row<F> {
    pub meta: CaseMeta,
    pub flow: F,
}

/// A row for a `const` table.
pub const fn row<F>(
    id: &'static str,
    rule: &'static str,
    requires: &'static [Requirement],
    flow: F,
) -> Row<F> {
    Row {
        meta: CaseMeta { id, rule, requires },
        flow,
    }
}

pub fn fail(message: impl Into<String>) -> CaseError {
    CaseError::Fail(CaseFailure {
        message: message.into(),
        expected: None,
        actual: None,
    })
}

pub fn fail_with(
    message: impl Into<String>,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> CaseError {
    CaseError::Fail(CaseFailure {
        message: message.into(),
        expected: Some(expected.into()),
        actual: Some(actual.into()),
    })
}

pub fn harness_error(message: impl Into<String>) -> CaseError {
    CaseError::Error(message.into())
}

pub fn describe_status(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// `what` must succeed; a gRPC error is a conformance failure.
pub fn expect_ok<T>(result: Result<T, Status>, what: &str) -> CaseResult<T> {
    result.map_err(|status| fail_with(format!("{what} failed"), "OK", describe_status(&status)))
}

/// `what` must fail with exactly `code`.
pub fn expect_code<T: Debug>(result: Result<T, Status>, code: Code, what: &str) -> CaseResult {
    match result {
        Err(status) if status.code() == code => Ok(()),
        Err(status) => Err(fail_with(
            format!("{what} answered the wrong code"),
            format!("{code:?}"),
            describe_status(&status),
        )),
        Ok(value) => Err(fail_with(
            format!("{what} succeeded but must fail"),
            format!("{code:?}"),
            format!("OK: {value:?}"),
        )),
    }
}

/// `condition` must hold.
pub fn ensure(
    condition: bool,
    message: &str,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> CaseResult {
    if condition {
        Ok(())
    } else {
        Err(fail_with(message, expected, actual))
    }
}

/// Equality check with both values in the failure.
pub fn ensure_eq<T: PartialEq + Debug>(actual: &T, expected: &T, message: &str) -> CaseResult {
    ensure(
        actual == expected,
        message,
        format!("{expected:?}"),
        format!("{actual:?}"),
    )
}
