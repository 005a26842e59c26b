//! Which qexecd the farm runs on: the hosts the CLI's server selection names
//! (`-s GROUP`, `--hosts`, `--hosts-file`, or the one server of `-s`/`--addr`),
//! resolved by the one function every multi-host command uses
//! ([`crate::fanout::hosts`]).

use qexec_client::pool::Worker;

use super::FarmError;
use crate::ConnArgs;

/// The workers of the connection flags, labelled as fan-out labels its hosts.
pub(super) fn resolve(conn: &ConnArgs) -> Result<Vec<Worker>, FarmError> {
    Ok(crate::fanout::hosts(conn)?
        .into_iter()
        .map(|(name, config)| Worker { name, config })
        .collect())
}
