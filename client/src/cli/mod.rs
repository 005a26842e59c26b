//! The `qexec` command-line interface (used by the `qexec` binary).
