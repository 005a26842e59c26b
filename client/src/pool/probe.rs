//! Asking a worker how busy it is: the `Info` request, which doubles as the pool's
//! liveness check.

use std::time::Duration;

use qexec_protocol::{ErrorCode, ServerInfo};

use crate::client::Client;

/// Why a worker gave no load.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// No answer within the limit: the server (or the path to it) is slow or gone;
    /// the connection itself may still be fine.
    Late(String),
    /// The connection or the stream failed: the connection is not usable.
    Failed(String),
}

impl NoAnswer {
    pub(crate) fn reason(self) -> String {
        match self {
            Self::Late(r) | Self::Failed(r) => r,
        }
    }
}

/// The worker's load, `None` when the server answered but does not say (a qexecd
/// older than `Info` answers `Unsupported`; any other refusal is treated alike).
pub(crate) async fn probe(
    client: &Client,
    limit: Duration,
) -> Result<Option<ServerInfo>, NoAnswer> {
    match tokio::time::timeout(limit, client.info()).await {
        Err(_) => Err(NoAnswer::Late(format!(
            "no answer to Info within {} ms",
            limit.as_millis()
        ))),
        Ok(Ok(info)) => Ok(Some(info)),
        // spec: QX-VER-3, QX-INFO-8 (an older server refuses Info with Unsupported)
        Ok(Err(e)) if e.code() == Some(ErrorCode::Unsupported) => Ok(None),
        // The server answered: it is there, its capacity is unknown.
        Ok(Err(e)) if e.code().is_some() => Ok(None),
        Ok(Err(e)) => Err(NoAnswer::Failed(e.to_string())),
    }
}
