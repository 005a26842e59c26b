//! QUIC transport settings both sides agree on: the flow-control windows and the
//! path settings (spec/security.md, "Flow control", QX-SRV-5). One definition, used
//! by qexecd, the client library and the tests.

/// Per-stream receive window the server advertises (client → server bytes buffered
/// per control stream): one maximum frame (1 MiB) plus headroom.
pub const STREAM_RECEIVE_WINDOW: u32 = (1 << 20) + (64 << 10);
/// Per-connection receive window the server advertises: eight streams' worth.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * STREAM_RECEIVE_WINDOW;
/// Bytes the server keeps in flight (unacknowledged) per connection.
pub const SEND_WINDOW: u64 = 16 << 20;
/// Receive window a client advertises per (output) stream. One stream moves at most
/// one window per round trip, so this is sized for the path the harness checks
/// (10 ms one-way delay, ≥ 70 % of loopback rate): 16 MiB / 20 ms ≈ 800 MiB/s. A
/// stalled follower blocks only its own stream, after at most this much (held by
/// the client, not the server: quinn accepts writes only up to the stream's credit).
pub const CLIENT_STREAM_RECEIVE_WINDOW: u32 = 16 << 20;
/// Receive window a client advertises per connection: eight stalled streams' worth,
/// so a few stalled followers never close the connection to the others.
pub const CLIENT_CONNECTION_RECEIVE_WINDOW: u32 = 8 * CLIENT_STREAM_RECEIVE_WINDOW;
/// Largest UDP payload MTU discovery probes for (and each endpoint accepts).
/// quinn's default (1452) fits any Ethernet path; probing higher costs a few lost
/// probes where the path is smaller (quinn's search and black-hole detection fall
/// back), and where it is larger (loopback, jumbo frames) each packet carries more
/// bytes for the same per-packet work (packet building, header protection, ACKs).
/// Not higher: quinn sends up to 10 equal segments in one GSO datagram, which the
/// kernel refuses (EMSGSIZE) past 65,507 bytes in all.
pub const MTU_UPPER_BOUND: u16 = 6_500;
/// Output streams a client lets the server have open at once (one per follower).
pub const CLIENT_MAX_OUTPUT_STREAMS: u32 = 1024;

/// The transport settings a client uses: the client windows above and room for
/// [`CLIENT_MAX_OUTPUT_STREAMS`] output streams. Callers add keep-alive and idle
/// timeouts of their own.
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    tune_path(&mut t);
    t.stream_receive_window(CLIENT_STREAM_RECEIVE_WINDOW.into())
        .receive_window(CLIENT_CONNECTION_RECEIVE_WINDOW.into())
        .max_concurrent_uni_streams(CLIENT_MAX_OUTPUT_STREAMS.into());
    t
}

/// The endpoint settings both sides use: datagrams of up to [`MTU_UPPER_BOUND`]
/// bytes accepted (and advertised, so the peer's MTU discovery may probe that
/// high). quinn sizes its receive buffer by this (× 64 GRO segments × 32 per batch:
/// 13 MiB of address space), but only the bytes actually received are touched.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut e = quinn::EndpointConfig::default();
    // Within quinn's accepted range (1200..=65527): checked below at compile time.
    let _ = e.max_udp_payload_size(MTU_UPPER_BOUND);
    e
}

/// Kernel buffer asked for on each side's UDP socket, receive and send (the kernel
/// caps it at `net.core.rmem_max` / `wmem_max`). The default (~208 KiB) holds ~30
/// full packets: a reader descheduled for a millisecond at 500 MB/s drops packets,
/// and every loss halves the congestion window.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`SOCKET_BUFFER`] bytes of receive and send buffer on `socket`; where the
/// kernel refuses, the socket keeps its default (not an error).
pub fn size_socket_buffers(socket: &std::net::UdpSocket) {
    if let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) {
        let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER);
    }
}

/// A quinn endpoint on a UDP socket bound to `addr` with [`endpoint_config`] and
/// [`SOCKET_BUFFER`]-sized kernel buffers: a server endpoint when `server` is given,
/// else a client-only one.
pub fn bind_endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    size_socket_buffers(&socket);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime (tokio) is running"))?;
    quinn::Endpoint::new(endpoint_config(), server, socket, runtime)
}

/// Path settings both sides use: MTU discovery up to [`MTU_UPPER_BOUND`].
pub fn tune_path(t: &mut quinn::TransportConfig) {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
}

// Checked at compile time: a control stream's window holds one whole frame (so a
// maximum request is never stuck behind flow control), and a connection holds
// several streams' worth.
const _: () = {
    assert!(MTU_UPPER_BOUND >= 1200 && MTU_UPPER_BOUND as usize * 10 <= 65_507);
    assert!(STREAM_RECEIVE_WINDOW as usize >= qexec_protocol::MAX_WIRE_FRAME_LEN);
    assert!(CONNECTION_RECEIVE_WINDOW >= 2 * STREAM_RECEIVE_WINDOW);
    assert!(CLIENT_CONNECTION_RECEIVE_WINDOW >= 2 * CLIENT_STREAM_RECEIVE_WINDOW);
};
