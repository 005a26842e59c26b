//! Asking a worker how busy it is: the `Info` request, which doubles as the pool's
//! liveness check.

use std::time::Duration;

use qexec_protocol::{ErrorCode, ServerInfo};

use crate::client::Client;
use crate::pool::state::Load;

impl From<&ServerInfo> for Load {
    fn from(info: &ServerInfo) -> Self {
        Self {
            running_jobs: info.running_jobs,
            max_jobs: info.max_jobs,
            caller_running_jobs: info.caller_running_jobs,
            max_jobs_per_user: info.max_jobs_per_user,
        }
    }
}

/// The worker's load, `None` when the server answered but does not say (a qexecd
/// older than `Info` answers `Unsupported`; any other refusal is treated alike), or
/// why it is not answering: no answer within `limit`, or a failure of the connection
/// or stream, means the connection is not usable.
pub(crate) async fn probe(client: &Client, limit: Duration) -> Result<Option<Load>, String> {
    match tokio::time::timeout(limit, client.info()).await {
        Err(_) => Err(format!("no answer to Info within {} ms", limit.as_millis())),
        Ok(Ok(info)) => Ok(Some(Load::from(&info))),
        // spec: QX-VER-3 (an unknown request is refused with Unsupported)
        Ok(Err(e)) if e.code() == Some(ErrorCode::Unsupported) => Ok(None),
        // The server answered: it is there, its capacity is unknown.
        Ok(Err(e)) if e.code().is_some() => Ok(None),
        Ok(Err(e)) => Err(e.to_string()),
    }
}
