//! Which qexecd the farm runs on: names of servers in config.toml, each resolved as
//! `-s NAME` would be (its address and PKI; `--ca`, `--cert`, `--key` given on the
//! command line apply to every worker).
//!
//! The one place that turns the command line into workers: the CLI's server groups
//! (`-s GROUP`, `--hosts`, `--hosts-file`) replace `--workers` here when they land.

use qexec_client::pool::Worker;

use super::FarmError;
use crate::{CliError, ConnArgs};

/// The workers named by `names` (config.toml servers), or, with no name, the one
/// server the connection flags select (`-s`, config.toml's default, `--addr`).
pub(super) fn resolve(conn: &ConnArgs, names: &[String]) -> Result<Vec<Worker>, FarmError> {
    if names.is_empty() {
        let name = conn
            .server
            .clone()
            .or_else(|| conn.addr.clone())
            .unwrap_or_else(|| "default".to_owned());
        return Ok(vec![Worker {
            name,
            config: conn.config()?,
        }]);
    }
    if conn.addr.is_some() && names.len() > 1 {
        return Err(CliError::Usage {
            reason: "--addr (or QEXEC_ADDR) names one server; with several --workers, give \
                     each its addr in config.toml"
                .into(),
        }
        .into());
    }
    let mut workers: Vec<Worker> = Vec::with_capacity(names.len());
    for name in names {
        if name.is_empty() {
            return Err(CliError::Usage {
                reason: "--workers has an empty name".into(),
            }
            .into());
        }
        if workers.iter().any(|w| w.name == *name) {
            return Err(CliError::Usage {
                reason: format!("--workers names {name} twice"),
            }
            .into());
        }
        let one = ConnArgs {
            server: Some(name.clone()),
            addr: conn.addr.clone(),
            ca: conn.ca.clone(),
            cert: conn.cert.clone(),
            key: conn.key.clone(),
            connect_timeout: conn.connect_timeout,
        };
        workers.push(Worker {
            name: name.clone(),
            config: one.config()?,
        });
    }
    Ok(workers)
}
