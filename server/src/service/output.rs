//! Output streams: one server-opened unidirectional stream per subscription
//! (`Start{follow}` or `Attach`): `Header`, `Data`…, `End`, FIN (spec: QX-STREAM-*).

use qexec_protocol::{ErrorCode, JobId, OutputFrame, frame};
use quinn::{VarInt, WriteError};

use super::OUTPUT_PRIORITY;
use super::conn::{ConnCtx, SubscriptionPermit};
use super::request::Refusal;
use crate::job::{FollowEvent, Follower};

/// Largest payload of one `Data` frame (spec: QX-LIMIT-11).
const MAX_DATA: usize = qexec_protocol::limits::MAX_OUTPUT_CHUNK;

/// A permit for one more output stream on this connection and of its identity, or
/// the refusal (spec: QX-SRV-1, QX-SRV-9).
pub(crate) fn subscription_permit(ctx: &ConnCtx) -> Result<SubscriptionPermit, Refusal> {
    ctx.subscription_permit()
}

fn code(c: ErrorCode) -> VarInt {
    VarInt::from_u32(c.as_u32())
}

/// Streams a job's output from `from` on a new output stream until `End`, the client
/// cancels (STOP_SENDING → reset with `Cancelled`) or the connection goes away.
pub(crate) async fn pump(
    ctx: &ConnCtx,
    request_stream: u64,
    job: JobId,
    from: u64,
    mut follower: Follower,
) {
    let opened = tokio::select! {
        s = ctx.conn.open_uni() => s,
        _ = ctx.conn.closed() => return,
    };
    let Ok(mut send) = opened else { return };
    let _ = send.set_priority(OUTPUT_PRIORITY);
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let mut shutdown = ctx.shared.shutting_down.subscribe();
    let mut buf = Vec::with_capacity(MAX_DATA + 64);
    let header = OutputFrame::Header {
        request_stream,
        job,
        from,
    };
    if frame::encode_into(&header, &mut buf).is_err() {
        let _ = send.reset(code(ErrorCode::Internal));
        return;
    }
    loop {
        if !buf.is_empty() {
            match send.write_all(&buf).await {
                Ok(()) => buf.clear(),
                Err(WriteError::Stopped(_)) => {
                    let _ = send.reset(code(ErrorCode::Cancelled));
                    return;
                }
                Err(_) => return,
            }
        }
        let event = tokio::select! {
            ev = follower.next() => ev,
            s = &mut stopped => {
                // spec: QX-STREAM-15
                if matches!(s, Ok(Some(_))) {
                    let _ = send.reset(code(ErrorCode::Cancelled));
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s) => {
                // spec: QX-ERR-8
                let _ = send.reset(code(ErrorCode::ShuttingDown));
                return;
            }
        };
        let encoded = match event {
            Ok(Some(FollowEvent::Data {
                stream,
                offset,
                data,
            })) => data
                .chunks(MAX_DATA)
                .zip((0u64..).map(|i| offset + i * MAX_DATA as u64))
                .try_for_each(|(chunk, offset)| {
                    let f = OutputFrame::Data {
                        stream,
                        offset,
                        data: chunk.to_vec(),
                    };
                    frame::encode_into(&f, &mut buf)
                }),
            Ok(Some(FollowEvent::End(status))) => {
                let end = OutputFrame::End { status: *status };
                if frame::encode_into(&end, &mut buf).is_ok() && send.write_all(&buf).await.is_ok()
                {
                    let _ = send.finish();
                }
                return;
            }
            Ok(None) => {
                tracing::error!(%job, "job output ended without a final status");
                let _ = send.reset(code(ErrorCode::Internal));
                return;
            }
            Err(e) => {
                tracing::warn!(%job, error = %e, "reading job output failed");
                let _ = send.reset(code(ErrorCode::Internal));
                return;
            }
        };
        if encoded.is_err() {
            let _ = send.reset(code(ErrorCode::Internal));
            return;
        }
    }
}
