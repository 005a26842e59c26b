//! A UDP relay on loopback that delays every datagram by a fixed one-way delay in
//! each direction: the "long path" of section 3 (the kernel here has no netem).
//!
//! One client at a time: datagrams from the client go to the server after the delay,
//! datagrams from the server go back to the last client address seen. Two threads
//! per direction (one receives and stamps, one waits for each stamp and sends), so
//! the order of datagrams is kept and receiving never waits for sending.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the threads look at the stop flag when idle.
const POLL: Duration = Duration::from_millis(50);
/// Largest datagram relayed (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;

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
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(server)?;
        // Room for bursts while a relay thread waits for the CPU (as qexec's own
        // sockets have): a drop here would be a loss the path does not have. (Not
        // quinn's socket set-up: it turns on GRO, which would merge datagrams.)
        for s in [&front, &back] {
            let s = socket2::SockRef::from(s);
            let _ = s.set_recv_buffer_size(qexec_tls::SOCKET_BUFFER);
            let _ = s.set_send_buffer_size(qexec_tls::SOCKET_BUFFER);
        }
        front.set_read_timeout(Some(POLL))?;
        back.set_read_timeout(Some(POLL))?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let front = Arc::new(front);
        let back = Arc::new(back);
        let mut threads = Vec::new();

        // client → server
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        {
            let (front, stop, client) = (front.clone(), stop.clone(), client.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                        if tx
                            .send((Instant::now() + one_way, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }));
        }
        {
            let (back, stop) = (back.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                deliver(&rx, &stop, |d| back.send(d).map(drop));
            }));
        }
        // server → client
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        {
            let (back, stop) = (back.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = back.recv(&mut buf)
                        && tx
                            .send((Instant::now() + one_way, buf[..n].to_vec()))
                            .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                deliver(&rx, &stop, |d| {
                    match *client.lock().unwrap_or_else(|e| e.into_inner()) {
                        Some(to) => front.send_to(d, to).map(drop),
                        None => Ok(()),
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

/// Sends each queued datagram once its time has come, in order.
fn deliver(
    rx: &mpsc::Receiver<(Instant, Vec<u8>)>,
    stop: &AtomicBool,
    mut send: impl FnMut(&[u8]) -> std::io::Result<()>,
) {
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(POLL) {
            Ok((at, datagram)) => {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                // A full socket buffer drops the datagram, as a router would.
                let _ = send(&datagram);
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
