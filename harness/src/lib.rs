//! Conformance engine: targets, tracking client, data plane, runner (work in progress, issue 3).
