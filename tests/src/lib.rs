//! Shared helpers for qexec's integration and conformance suites.
