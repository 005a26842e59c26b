//! Output streams: one server-opened unidirectional stream per subscription
//! (`Start{follow}` or `Attach`): `Header`, `Data`…, `End`, FIN (spec: QX-STREAM-*).

use bytes::Bytes;
use qexec_protocol::{ErrorCode, JobId, OutputFrame, OutputStream, frame};
use quinn::{VarInt, WriteError};

use super::OUTPUT_PRIORITY;
use super::conn::{ConnCtx, SubscriptionPermit};
use super::request::Refusal;
use crate::job::{FollowEvent, Follower};

/// Largest payload of one `Data` frame (spec: QX-LIMIT-11).
const MAX_DATA: usize = qexec_protocol::limits::MAX_OUTPUT_CHUNK;
/// Bytes after which an output stream counts as bulk and is sent after the
/// connection's other output streams (an interactive job's small writes never wait
/// behind a bulk transfer queued on the same connection).
const BULK_AFTER: u64 = 1 << 20;

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
    follower: Follower,
) {
    pump_at(ctx, request_stream, job, from, follower, OUTPUT_PRIORITY).await;
}

/// [`pump`] with the stream's QUIC send priority: a terminal job's own output stream
/// goes before other output of the connection (spec: QX-TERM-8), so a bulk transfer
/// of another job cannot queue the echo of a keystroke behind it.
pub(crate) async fn pump_at(
    ctx: &ConnCtx,
    request_stream: u64,
    job: JobId,
    from: u64,
    mut follower: Follower,
    priority: i32,
) {
    let opened = tokio::select! {
        s = ctx.conn.open_uni() => s,
        _ = ctx.conn.closed() => return,
    };
    let Ok(mut send) = opened else { return };
    let _ = send.set_priority(priority);
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let mut shutdown = ctx.shared.shutting_down.subscribe();
    let mut head = Vec::with_capacity(64);
    let header = OutputFrame::Header {
        request_stream,
        job,
        from,
    };
    if frame::encode_into(&header, &mut head).is_err() {
        let _ = send.reset(code(ErrorCode::Internal));
        return;
    }
    // Frames waiting to be written: small encoded heads and the job's output bytes
    // themselves (`Bytes` shared with the reader, never copied here: quinn keeps
    // them until acknowledged). At most one read's worth of output (64 KiB) is
    // pending while the stream has no credit (spec: QX-SEC-4).
    let mut pending: Vec<Bytes> = vec![Bytes::from(std::mem::take(&mut head))];
    let mut sent = 0u64;
    loop {
        if !pending.is_empty() {
            match send.write_all_chunks(&mut pending[..]).await {
                Ok(()) => pending.clear(),
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
            })) => {
                let was = sent;
                sent += data.len() as u64;
                // A terminal's own stream keeps its priority (spec: QX-TERM-8).
                if priority == OUTPUT_PRIORITY && was < BULK_AFTER && sent >= BULK_AFTER {
                    let _ = send.set_priority(OUTPUT_PRIORITY - 1);
                }
                data_frames(stream, offset, data, &mut pending)
            }
            Ok(Some(FollowEvent::End(status))) => {
                let end = OutputFrame::End { status: *status };
                if frame::encode_into(&end, &mut head).is_ok()
                    && send.write_all(&head).await.is_ok()
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

/// Queues `data` as `Data` frames of at most [`MAX_DATA`] bytes each (spec:
/// QX-LIMIT-11): per frame an encoded head, then a slice of `data` (no copy).
fn data_frames(
    stream: OutputStream,
    offset: u64,
    mut data: Bytes,
    pending: &mut Vec<Bytes>,
) -> Result<(), qexec_protocol::EncodeError> {
    let mut offset = offset;
    while !data.is_empty() {
        let chunk = data.split_to(data.len().min(MAX_DATA));
        let mut head = Vec::with_capacity(24);
        frame::encode_data_head(stream, offset, chunk.len(), &mut head)?;
        offset += chunk.len() as u64;
        pending.push(Bytes::from(head));
        pending.push(chunk);
    }
    Ok(())
}
