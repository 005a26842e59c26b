//! What a user sees when something fails: the connection's [`Context`] maps QUIC,
//! TLS and stream failures to [`ClientError`]s that say what failed and what to do.

use quinn::{ConnectionError, ReadError, VarInt};

use qexec_protocol::{ErrorCode, ErrorResponse, JobId, SpawnFailure};
use qexec_tls::ServerCertVerdict;

use crate::error::ClientError;
use crate::stream::{ReadFailure, WriteFailure};

/// TLS alert numbers (RFC 8446 §6) as they appear in QUIC CRYPTO_ERROR codes
/// (0x100 + alert, RFC 9001 §4.8).
mod alert {
    pub(super) const HANDSHAKE_FAILURE: u8 = 40;
    pub(super) const BAD_CERTIFICATE: u8 = 42;
    pub(super) const UNSUPPORTED_CERTIFICATE: u8 = 43;
    pub(super) const CERTIFICATE_REVOKED: u8 = 44;
    pub(super) const CERTIFICATE_EXPIRED: u8 = 45;
    pub(super) const CERTIFICATE_UNKNOWN: u8 = 46;
    pub(super) const UNKNOWN_CA: u8 = 48;
    pub(super) const ACCESS_DENIED: u8 = 49;
    pub(super) const CERTIFICATE_REQUIRED: u8 = 116;
    pub(super) const NO_APPLICATION_PROTOCOL: u8 = 120;
}

/// What the error mapping needs to know about the connection.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) addr: String,
    pub(crate) ca: std::path::PathBuf,
    pub(crate) cert: std::path::PathBuf,
    pub(crate) server_name: String,
    pub(crate) verdict: ServerCertVerdict,
    /// The connection's QUIC idle timeout ([`ClientConfig::idle_timeout`](crate::ClientConfig::idle_timeout)).
    pub(crate) idle_timeout: std::time::Duration,
}

impl Context {
    /// Maps a connection-level failure to the error a user should see.
    pub(crate) fn connection_error(&self, e: &ConnectionError) -> ClientError {
        if let Some(problem) = self.verdict.get() {
            return ClientError::ServerCertUntrusted {
                problem,
                ca: self.ca.clone(),
                name: self.server_name.clone(),
            };
        }
        let lost = |reason: String| ClientError::ConnectionLost {
            addr: self.addr.clone(),
            reason,
        };
        match e {
            ConnectionError::ConnectionClosed(close) => {
                let code = u64::from(close.error_code);
                match crypto_alert(code) {
                    Some(alert::NO_APPLICATION_PROTOCOL) => ClientError::NoCommonProtocol {
                        addr: self.addr.clone(),
                    },
                    // spec: QX-TLS-2 (rustls answers a peer with no suite or group in
                    // common with handshake_failure; certificate problems have their
                    // own alerts)
                    Some(a @ alert::HANDSHAKE_FAILURE) => ClientError::HandshakeFailed {
                        addr: self.addr.clone(),
                        reason: if close.reason.is_empty() {
                            alert_name(a).to_owned()
                        } else {
                            format!(
                                "{}: {}",
                                alert_name(a),
                                String::from_utf8_lossy(&close.reason)
                            )
                        },
                    },
                    Some(
                        a @ (alert::BAD_CERTIFICATE
                        | alert::UNSUPPORTED_CERTIFICATE
                        | alert::CERTIFICATE_REVOKED
                        | alert::CERTIFICATE_EXPIRED
                        | alert::CERTIFICATE_UNKNOWN
                        | alert::UNKNOWN_CA
                        | alert::ACCESS_DENIED
                        | alert::CERTIFICATE_REQUIRED),
                    ) => ClientError::CertRejected {
                        cert: self.cert.clone(),
                        reason: alert_name(a).to_owned(),
                    },
                    _ => lost(format!("closed by the server: {close}")),
                }
            }
            ConnectionError::ApplicationClosed(close) => {
                let code = u32::try_from(close.error_code.into_inner())
                    .ok()
                    .and_then(ErrorCode::from_u32);
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                match code {
                    Some(ErrorCode::ShuttingDown) => ClientError::ShuttingDown {
                        addr: self.addr.clone(),
                    },
                    Some(ErrorCode::Unauthenticated) => ClientError::CertRejected {
                        cert: self.cert.clone(),
                        reason: if reason.is_empty() {
                            "unauthenticated".to_owned()
                        } else {
                            reason
                        },
                    },
                    Some(c) => lost(format!("closed by the server ({c}): {reason}")),
                    None => lost(format!(
                        "closed by the server with unknown code {}: {reason}",
                        close.error_code
                    )),
                }
            }
            ConnectionError::TransportError(t) => match crypto_alert(u64::from(t.code)) {
                Some(alert::NO_APPLICATION_PROTOCOL) => ClientError::NoCommonProtocol {
                    addr: self.addr.clone(),
                },
                _ => lost(format!("transport error: {t}")),
            },
            ConnectionError::TimedOut => lost(format!(
                "no answer for {:?} (the server or the network went away)",
                self.idle_timeout
            )),
            ConnectionError::Reset => lost("the server reset the connection (restarted?)".into()),
            ConnectionError::LocallyClosed => lost("closed by this client".into()),
            other => lost(other.to_string()),
        }
    }

    /// Maps a stream read failure.
    pub(crate) fn read_error(&self, e: ReadFailure) -> ClientError {
        match e {
            ReadFailure::Frame(source) => ClientError::Frame {
                addr: self.addr.clone(),
                source,
            },
            ReadFailure::Stream(ReadError::ConnectionLost(c)) => self.connection_error(&c),
            ReadFailure::Stream(ReadError::Reset(code)) => self.reset_error(code, "reset"),
            ReadFailure::Stream(other) => ClientError::Protocol {
                addr: self.addr.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Maps a stream write failure.
    pub(crate) fn write_error(&self, e: WriteFailure) -> ClientError {
        match e {
            WriteFailure::Encode(e) => ClientError::Protocol {
                addr: self.addr.clone(),
                reason: e.to_string(),
            },
            WriteFailure::Stream(quinn::WriteError::ConnectionLost(c)) => self.connection_error(&c),
            WriteFailure::Stream(quinn::WriteError::Stopped(code)) => {
                self.reset_error(code, "stopped")
            }
            WriteFailure::Stream(other) => ClientError::Protocol {
                addr: self.addr.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// A stream the server reset or stopped with an error code.
    fn reset_error(&self, code: VarInt, how: &str) -> ClientError {
        match u32::try_from(code.into_inner())
            .ok()
            .and_then(ErrorCode::from_u32)
        {
            Some(ErrorCode::ShuttingDown) => ClientError::ShuttingDown {
                addr: self.addr.clone(),
            },
            Some(code) => ClientError::Server {
                code,
                message: format!("the server {how} the stream"),
            },
            None => ClientError::Protocol {
                addr: self.addr.clone(),
                reason: format!("the server {how} a stream with unknown code {code}"),
            },
        }
    }

    /// Maps an `Error` answer.
    pub(crate) fn server_error(&self, e: ErrorResponse, job: Option<JobId>) -> ClientError {
        match (e.code, job) {
            (ErrorCode::NotFound, Some(job)) => ClientError::NotFound { job },
            (ErrorCode::SpawnFailed, _) => ClientError::Spawn {
                failure: e.spawn.unwrap_or(SpawnFailure::Other),
                message: e.message,
            },
            (ErrorCode::ShuttingDown, _) => ClientError::ShuttingDown {
                addr: self.addr.clone(),
            },
            (code, _) => ClientError::Server {
                code,
                message: e.message,
            },
        }
    }

    pub(crate) fn unexpected(&self, request: &str, got: &impl std::fmt::Debug) -> ClientError {
        let mut got = format!("{got:?}");
        got.truncate(200);
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason: format!("unexpected answer to {request}: {got}"),
        }
    }
}

fn crypto_alert(code: u64) -> Option<u8> {
    (0x100..=0x1ff)
        .contains(&code)
        .then(|| (code - 0x100) as u8)
}

fn alert_name(a: u8) -> &'static str {
    match a {
        alert::HANDSHAKE_FAILURE => "TLS alert handshake_failure",
        alert::BAD_CERTIFICATE => "TLS alert bad_certificate",
        alert::UNSUPPORTED_CERTIFICATE => "TLS alert unsupported_certificate",
        alert::CERTIFICATE_REVOKED => "TLS alert certificate_revoked",
        alert::CERTIFICATE_EXPIRED => "TLS alert certificate_expired",
        alert::CERTIFICATE_UNKNOWN => "TLS alert certificate_unknown",
        alert::UNKNOWN_CA => "TLS alert unknown_ca: not signed by the server's CA",
        alert::ACCESS_DENIED => "TLS alert access_denied",
        alert::CERTIFICATE_REQUIRED => "TLS alert certificate_required",
        _ => "TLS alert",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_from_crypto_codes() {
        assert_eq!(crypto_alert(0x100 + 48), Some(alert::UNKNOWN_CA));
        assert_eq!(crypto_alert(0x178), Some(alert::NO_APPLICATION_PROTOCOL));
        assert_eq!(crypto_alert(0x0a), None);
        assert_eq!(crypto_alert(0x200), None);
    }
}
