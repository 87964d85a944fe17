//! Result model and report writers (work in progress, issue 3).
