//! A UDP relay on loopback that delays every datagram by a fixed one-way delay in
//! each direction: the "long path" of section 3 (the kernel here has no netem).
//!
//! One client at a time: datagrams from the client go to the server after the delay,
//! datagrams from the server go back to the last client address seen. Two threads
//! per direction (one receives and stamps, one waits for each stamp and sends), so
//! the order of datagrams is kept and receiving never waits for sending.
//!
//! The relay takes the CPU a kernel qdisc would not, on the same cores as qexecd and
//! the client, so it moves datagrams in batches: it receives with GRO (up to 64
//! datagrams of one size in one buffer, their boundaries kept as the buffer's
//! stride) and sends each batch with GSO at the same segment size, so the receiver
//! sees the same datagrams. Through a relay that copied one datagram per system call
//! the path was limited by the relay itself (about two thirds of the loopback rate
//! with no delay at all). Section 3 also measures the relay with no delay, so what
//! the delay costs is seen apart from what the relay costs.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};

/// How often the threads look at the stop flag when idle.
const POLL: Duration = Duration::from_millis(50);
/// Room for one receive: a GRO batch is at most 64 KiB.
const RECV_BUF: usize = 1 << 16;

/// Datagrams received together: `data` holds them back to back, each `stride` bytes
/// but the last.
struct Batch {
    due: Instant,
    data: Vec<u8>,
    stride: usize,
}

/// One relay socket with quinn-udp's batching state.
struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl Socket {
    fn bind() -> std::io::Result<Self> {
        let io = UdpSocket::bind("127.0.0.1:0")?;
        // Room for bursts while a relay thread waits for the CPU (as qexec's own
        // sockets have): a drop here would be a loss the path does not have.
        qexec_tls::size_socket_buffers(&io);
        io.set_read_timeout(Some(POLL))?;
        let state = UdpSocketState::new((&io).into())?;
        Ok(Self { io, state })
    }

    /// The next batch and who sent it; `None` when nothing came within [`POLL`].
    fn recv(&self, one_way: Duration) -> Option<(Batch, SocketAddr)> {
        let mut data = vec![0u8; RECV_BUF];
        let mut meta = [RecvMeta::default()];
        let n = self
            .state
            .recv(
                (&self.io).into(),
                &mut [IoSliceMut::new(&mut data)],
                &mut meta,
            )
            .ok()?;
        if n == 0 {
            return None;
        }
        let m = meta[0];
        data.truncate(m.len);
        Some((
            Batch {
                due: Instant::now() + one_way,
                data,
                stride: m.stride.max(1),
            },
            m.addr,
        ))
    }

    /// Sends `batch` to `to` as the datagrams it was received as. A full socket
    /// buffer drops them, as a router would.
    fn send(&self, batch: &Batch, to: SocketAddr) {
        let segment_size = (batch.data.len() > batch.stride).then_some(batch.stride);
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &batch.data,
            segment_size,
            src_ip: None,
        };
        let _ = self.state.send((&self.io).into(), &t);
    }
}

/// A running relay; stopped (threads joined) on drop.
#[derive(Debug)]
pub(crate) struct DelayRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayRelay {
    /// Relays `127.0.0.1:<new port>` ⇄ `server`, `one_way` each direction.
    pub(crate) fn start(server: SocketAddr, one_way: Duration) -> anyhow::Result<Self> {
        let front = Arc::new(Socket::bind()?);
        let back = Arc::new(Socket::bind()?);
        let addr = front.io.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let mut threads = Vec::new();

        // client → server
        let (tx, rx) = mpsc::channel::<Batch>();
        {
            let (front, stop, client) = (front.clone(), stop.clone(), client.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((batch, from)) = front.recv(one_way) {
                        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                        if tx.send(batch).is_err() {
                            return;
                        }
                    }
                }
            }));
        }
        {
            let (back, stop) = (back.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                deliver(&rx, &stop, |b| back.send(b, server));
            }));
        }
        // server → client
        let (tx, rx) = mpsc::channel::<Batch>();
        {
            let (back, stop) = (back.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Only the server sends to this socket's port.
                    if let Some((batch, _)) = back.recv(one_way)
                        && tx.send(batch).is_err()
                    {
                        return;
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                deliver(&rx, &stop, |b| {
                    if let Some(to) = *client.lock().unwrap_or_else(|e| e.into_inner()) {
                        front.send(b, to);
                    }
                });
            }));
        }
        Ok(Self {
            addr,
            stop,
            threads,
        })
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Sends each queued batch once its time has come, in order.
fn deliver(rx: &mpsc::Receiver<Batch>, stop: &AtomicBool, mut send: impl FnMut(&Batch)) {
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(POLL) {
            Ok(batch) => {
                let now = Instant::now();
                if batch.due > now {
                    std::thread::sleep(batch.due - now);
                }
                send(&batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
