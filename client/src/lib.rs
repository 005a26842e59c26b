//! qexec client library: connect to qexecd over QUIC with mutual TLS and drive jobs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
