//! The data plane: worker threads, their sockets and the publication of routing changes.
//!
//! Every worker owns a UDP socket bound with SO_REUSEPORT to the same media address, so the kernel
//! spreads senders across workers by 4-tuple. Each worker keeps its own routing table; the control
//! thread sends it [`Update`]s over a channel, wakes it through an eventfd, and waits until every
//! worker has acknowledged: when [`DataPlane::publish`] returns, the change is in force everywhere.

mod mmsg;
mod stats;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, Socket, Type};

pub use stats::WorkerStats;

use crate::route::{Latch, Update};
use worker::{Message, Sizes, Worker};

/// The backend that moves datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// recvmmsg/sendmmsg: portable, works everywhere.
    Mmsg,
}

impl Backend {
    /// The name used in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmsg => "mmsg",
        }
    }
}

/// How to start the data plane.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// The media address; port 0 picks a free port shared by all workers.
    pub media: SocketAddr,
    /// The number of workers (at least 1).
    pub workers: usize,
    /// Pin worker i to core i (modulo the cores available).
    pub pin: bool,
    /// SO_RCVBUF / SO_SNDBUF in bytes (0 keeps the kernel default).
    pub socket_buffer: usize,
    /// Datagrams per receive batch.
    pub recv_batch: usize,
    /// Sends per `sendmmsg` at most.
    pub send_batch: usize,
}

/// A handle on the running workers.
pub struct DataPlane {
    workers: Vec<WorkerHandle>,
    local_addr: SocketAddr,
    backend: Backend,
    latches: Receiver<Latch>,
}

struct WorkerHandle {
    tx: Sender<Message>,
    wake: Arc<OwnedFd>,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// The largest datagram a worker forwards; larger ones are counted as oversize and dropped.
pub const SLOT_SIZE: usize = 2048;

/// Latch requests that may wait for the control thread; more are dropped (clients retry).
const LATCH_QUEUE: usize = 4096;

/// How long the control thread waits for all workers to apply a change before giving up.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl DataPlane {
    /// Binds the sockets and starts the workers.
    pub fn start(config: &DataPlaneConfig) -> io::Result<Self> {
        let workers = config.workers.max(1);
        let first = bind(config.media, config.socket_buffer)?;
        let local_addr = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("media socket has no IP address"))?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind(local_addr, config.socket_buffer)?);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let sizes = Sizes {
            recv_batch: config.recv_batch.max(1),
            slot_size: SLOT_SIZE,
            send_queue: config.send_batch.max(1),
        };
        let mut handles = Vec::with_capacity(workers);
        let (latch_tx, latches) = crossbeam_channel::bounded(LATCH_QUEUE);
        for (index, socket) in sockets.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let wake = Arc::new(eventfd()?);
            let stats = Arc::new(WorkerStats::default());
            let worker = Worker {
                index,
                socket,
                wake: wake.clone(),
                rx,
                stats: stats.clone(),
                sizes,
                latches: latch_tx.clone(),
            };
            let pin = config.pin.then_some(index % cores);
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    if let Some(core) = pin {
                        pin_to_core(core);
                    }
                    let result = worker.run();
                    if let Err(e) = &result {
                        tracing::error!(worker = index, error = %e, "worker stopped");
                    }
                    result
                })?;
            handles.push(WorkerHandle {
                tx,
                wake,
                stats,
                thread: Some(thread),
            });
        }
        Ok(Self {
            workers: handles,
            local_addr,
            backend: Backend::Mmsg,
            latches,
        })
    }

    /// The bound media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Latch requests from authenticated STUN, for the control thread to apply.
    pub fn latches(&self) -> &Receiver<Latch> {
        &self.latches
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Each worker's counters.
    pub fn stats(&self) -> impl Iterator<Item = &WorkerStats> {
        self.workers.iter().map(|w| &*w.stats)
    }

    /// Whether every worker thread is still running.
    pub fn healthy(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.thread.as_ref().is_some_and(|t| !t.is_finished()))
    }

    /// Sends the updates to every worker and returns once all of them have applied all of them.
    pub fn publish(&self, updates: Vec<Update>) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
        let mut expected = 0;
        for w in &self.workers {
            for u in &updates {
                if w.tx
                    .send(Message::Update(u.clone(), ack_tx.clone()))
                    .is_ok()
                {
                    expected += 1;
                }
            }
            w.wake();
        }
        drop(ack_tx);
        let deadline = std::time::Instant::now() + APPLY_TIMEOUT;
        for _ in 0..expected {
            ack_rx
                .recv_deadline(deadline)
                .map_err(|_| io::Error::other("a worker did not apply the change in time"))?;
        }
        if expected != self.workers.len() * updates.len() {
            return Err(io::Error::other("a worker is not running"));
        }
        Ok(())
    }

    /// Asks every worker to finish its batch and exit, and waits for them.
    pub fn shutdown(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Message::Shutdown);
            w.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl WorkerHandle {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a u64 to an eventfd we own.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// Binds one worker socket with SO_REUSEPORT.
fn bind(addr: SocketAddr, buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Dual stack: IPv4 peers arrive as IPv4-mapped addresses, which the backend maps back.
        socket.set_only_v6(false)?;
    }
    if buffer > 0 {
        set_buffer(&socket, buffer);
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Sets the socket buffers, beyond `rmem_max` where the process may (CAP_NET_ADMIN).
fn set_buffer(socket: &Socket, bytes: usize) {
    let fd = socket.as_raw_fd();
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt with a pointer to a c_int and its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        if r != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&raw const value).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory arguments; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is a plain bit array; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin worker to its core");
        }
    }
}
