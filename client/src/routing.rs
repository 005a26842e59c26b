//! Output streams: the server opens one per subscription; each is matched to the
//! request that asked for it by the `request_stream` of its `Header`
//! (spec: QX-STREAM-11).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, RecvStream, VarInt};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use qexec_protocol::{Decoder, ErrorCode, OutputFrame, OutputStreamState};

use crate::stream::FrameReader;

/// How long an output stream may take to deliver its `Header`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// An output stream matched to its request.
#[derive(Debug)]
pub(crate) struct RoutedOutput {
    pub(crate) recv: RecvStream,
    pub(crate) decoder: Decoder,
    /// The stream's state after its `Header`.
    pub(crate) state: OutputStreamState,
}

/// Requests waiting for their output stream, by control stream id.
pub(crate) type Routes = Arc<Mutex<HashMap<u64, oneshot::Sender<RoutedOutput>>>>;

/// Removes a route when the request that registered it is done or abandoned.
pub(crate) struct RouteGuard {
    pub(crate) routes: Routes,
    pub(crate) id: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Accepts the server's output streams and hands each to the request waiting for it.
/// Ends when the connection closes; owned (and aborted on drop) by its [`Client`].
pub(crate) async fn route_output_streams(conn: Connection, routes: Routes) {
    let mut headers: JoinSet<Option<(u64, RoutedOutput)>> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_uni() => match accepted {
                Ok(recv) => {
                    headers.spawn(read_header(recv));
                }
                Err(_) => break,
            },
            Some(joined) = headers.join_next(), if !headers.is_empty() => {
                let Ok(Some((request_stream, routed))) = joined else { continue };
                let waiter = routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&request_stream);
                let undelivered = match waiter {
                    Some(tx) => tx.send(routed).err(),
                    None => Some(routed),
                };
                if let Some(mut routed) = undelivered {
                    // Nobody asked for it (any more): cancel the subscription.
                    let _ = routed
                        .recv
                        .stop(VarInt::from_u32(ErrorCode::Cancelled.as_u32()));
                }
            }
        }
    }
}

/// Reads the `Header` of an output stream; `None` (and the stream stopped) if it is
/// missing, malformed or late.
async fn read_header(recv: RecvStream) -> Option<(u64, RoutedOutput)> {
    let mut reader = FrameReader::new(recv);
    let mut state = OutputStreamState::new();
    let header = tokio::time::timeout(HEADER_TIMEOUT, reader.next::<OutputFrame>()).await;
    match header {
        Ok(Ok(Some(frame @ OutputFrame::Header { request_stream, .. })))
            if state.on_frame(&frame).is_ok() =>
        {
            let (recv, decoder) = reader.into_parts();
            Some((
                request_stream,
                RoutedOutput {
                    recv,
                    decoder,
                    state,
                },
            ))
        }
        Err(_) => {
            reader.stop(ErrorCode::Timeout);
            None
        }
        Ok(_) => {
            reader.stop(ErrorCode::ProtocolViolation);
            None
        }
    }
}
