//! qexec client library: connect to qexecd over QUIC with mutual TLS and drive jobs.
//!
//! It depends on `qexec-protocol` (wire types) and `qexec-tls` (the one TLS
//! configuration both sides use), never on the server. The `qexec` command line is
//! its own crate, `qexec-cli`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qexec_client::ClientError> {
//! use qexec_client::{Client, ClientConfig, OutputEvent, default_config_dir};
//! use qexec_protocol::{Limits, StartRequest};
//!
//! let client = Client::connect(&ClientConfig::from_pki_dir(&default_config_dir())).await?;
//! let mut job = client
//!     .run(StartRequest {
//!         argv: vec![b"echo".to_vec(), b"hi".to_vec()],
//!         env: vec![],
//!         cwd: None,
//!         limits: Limits::default(),
//!         timeout_ms: None,
//!         stdin: false,
//!         follow: true,
//!         stop_on_detach: true,
//!     })
//!     .await?;
//! let output = job.output.as_mut().expect("run always follows");
//! while let Some(event) = output.next().await? {
//!     match event {
//!         OutputEvent::Data { data, .. } => print!("{}", String::from_utf8_lossy(&data)),
//!         OutputEvent::End(status) => println!("ended: {:?}", status.state),
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
mod context;
mod error;
mod output;
pub mod pool;
mod routing;
mod stdin;
mod stream;
mod tls;
pub mod units;

pub use client::{Client, StartedJob, TerminalJob, TerminalWriter, clamp_window_size};
pub use config::{
    CONFIG_FILE, ClientConfig, ConfigError, ConfigFile, DEFAULT_ADDR, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_PORT, GroupProblem, Profile, default_config_dir,
};
pub use error::{ClientError, CredentialKind};
pub use output::{OutputEvent, OutputSubscription};
pub use qexec_tls::ServerCertProblem;
pub use stdin::{MAX_STDIN_CHUNK, StdinWriter};
