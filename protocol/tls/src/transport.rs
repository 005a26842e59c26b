//! QUIC transport settings both sides agree on: the flow-control windows
//! (spec/security.md, "Flow control"). One definition, used by qexecd, the client
//! library and the tests.

/// Per-stream receive window the server advertises (client → server bytes buffered
/// per control stream): one maximum frame (1 MiB) plus headroom.
pub const STREAM_RECEIVE_WINDOW: u32 = (1 << 20) + (64 << 10);
/// Per-connection receive window the server advertises: eight streams' worth.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * STREAM_RECEIVE_WINDOW;
/// Bytes the server keeps in flight (unacknowledged) per connection.
pub const SEND_WINDOW: u64 = 16 << 20;
/// Receive window a client advertises per (output) stream: one maximum frame, so
/// one stalled follower blocks only its own stream.
pub const CLIENT_STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Receive window a client advertises per connection: sixteen stalled streams' worth.
pub const CLIENT_CONNECTION_RECEIVE_WINDOW: u32 = 16 * CLIENT_STREAM_RECEIVE_WINDOW;
/// Output streams a client lets the server have open at once (one per follower).
pub const CLIENT_MAX_OUTPUT_STREAMS: u32 = 1024;

/// The transport settings a client uses: the client windows above and room for
/// [`CLIENT_MAX_OUTPUT_STREAMS`] output streams. Callers add keep-alive and idle
/// timeouts of their own.
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(CLIENT_STREAM_RECEIVE_WINDOW.into())
        .receive_window(CLIENT_CONNECTION_RECEIVE_WINDOW.into())
        .max_concurrent_uni_streams(CLIENT_MAX_OUTPUT_STREAMS.into());
    t
}

// Checked at compile time: a control stream's window holds one whole frame (so a
// maximum request is never stuck behind flow control), and a connection holds
// several streams' worth.
const _: () = {
    assert!(STREAM_RECEIVE_WINDOW as usize >= qexec_protocol::MAX_WIRE_FRAME_LEN);
    assert!(CONNECTION_RECEIVE_WINDOW >= 2 * STREAM_RECEIVE_WINDOW);
    assert!(CLIENT_CONNECTION_RECEIVE_WINDOW >= 2 * CLIENT_STREAM_RECEIVE_WINDOW);
};
