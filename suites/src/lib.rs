//! Clone conformance case tables (work in progress, issue 3).
