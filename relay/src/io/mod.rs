//! The data plane: worker threads, their sockets and the publication of routing changes.
//!
//! Every worker owns a UDP socket bound with SO_REUSEPORT to the same media address, so the kernel
//! spreads senders across workers by 4-tuple. Each worker keeps its own routing table; the control
//! thread sends it [`Update`]s over a channel, wakes it through an eventfd, and waits until every
//! worker has acknowledged: when [`DataPlane::publish`] returns, the change is in force everywhere.
//!
//! Two backends move the bytes: io_uring (`uring`, multishot receive into a provided buffer ring)
//! and the portable `mmsg` (`recvmmsg`/`sendmmsg`). Both hand every datagram to the same
//! `datagram::Datapath::handle` and plan their sends with the same `plan::Plan`.
//!
//! In rooms of at least [`DataPlaneConfig::handoff_min_members`] members, a worker hands each
//! packet to the other workers to send their share of the receivers (`io::handoff`).

mod datagram;
pub mod dtls;
mod handoff;
mod idle;
mod mmsg;
mod plan;
mod sched;
mod send;
mod socket;
mod srtp_state;
mod stats;
mod uring;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use handoff::DEFAULT_MIN_MEMBERS as DEFAULT_HANDOFF_MIN_MEMBERS;
pub use sched::WorkerPriority;
pub use stats::WorkerStats;

use crate::config::BackendChoice;
use crate::route::{Latch, Update};
use crate::telemetry::{APPLY_BUCKETS, Histogram};
use worker::{Message, Settings, Worker};

/// The backend that moves datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: multishot receive into a provided buffer ring, batched sends.
    IoUring,
    /// recvmmsg/sendmmsg: portable, works everywhere.
    Mmsg,
}

impl Backend {
    /// The name used in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
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
    /// Which backend to use; `Auto` picks io_uring where the kernel allows it.
    pub backend: BackendChoice,
    /// Pin worker i to core i (modulo the cores available).
    pub pin: bool,
    /// SO_RCVBUF / SO_SNDBUF in bytes (0 keeps the kernel default).
    pub socket_buffer: usize,
    /// Datagrams per receive batch (`recvmmsg`).
    pub recv_batch: usize,
    /// Sends submitted at once: a window of `sendmmsg` calls, or the io_uring submission queue
    /// (and half its send records). The plan's width is apart from it ([`largest_room`]).
    ///
    /// [`largest_room`]: DataPlaneConfig::largest_room
    pub send_batch: usize,
    /// Buffers in each worker's io_uring buffer ring (rounded up to a power of two).
    pub ring_buffers: usize,
    /// Send runs of equal-size datagrams to a destination as one UDP_SEGMENT (GSO) send.
    pub gso: bool,
    /// Spin instead of sleeping when idle: lower latency for a whole core per worker.
    pub busy_poll: bool,
    /// Rooms of at least this many members share each packet's fan-out among all workers
    /// (`io::handoff`); 0 never shares.
    pub handoff_min_members: usize,
    /// Members the largest room may have (`--max-participants`): each worker's send plan is as
    /// wide as its largest fan-out in such a room, so that its receivers get a burst in one GSO
    /// send (`plan::width`).
    pub largest_room: usize,
    /// In fleet mode, the fleet's status: while it says fenced, workers forward nothing
    /// (counted as drop reason `fenced`; read once per batch).
    pub fence: Option<Arc<crate::fleet::Status>>,
    /// In fleet mode, the trunk address (`--trunk`): every worker binds a socket of one
    /// SO_REUSEPORT group there, receives peer relays' trunk datagrams on it and sends its own.
    pub trunk: Option<SocketAddr>,
    /// The most an idle worker polls its socket before it sleeps (adaptive, see `io::idle`);
    /// zero sleeps at once.
    pub idle_spin: Duration,
    /// How the kernel schedules the worker threads (`io::sched`).
    pub worker_priority: WorkerPriority,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            media: SocketAddr::from(([0, 0, 0, 0], 40000)),
            workers: 1,
            backend: BackendChoice::Mmsg,
            pin: true,
            socket_buffer: 4 << 20,
            recv_batch: 64,
            send_batch: 1024,
            ring_buffers: 1024,
            gso: true,
            busy_poll: false,
            handoff_min_members: handoff::DEFAULT_MIN_MEMBERS,
            largest_room: 10_000,
            fence: None,
            trunk: None,
            idle_spin: DEFAULT_IDLE_SPIN,
            worker_priority: WorkerPriority::Normal,
        }
    }
}

/// A handle on the running workers.
pub struct DataPlane {
    workers: Vec<WorkerHandle>,
    local_addr: SocketAddr,
    trunk_addr: Option<SocketAddr>,
    backend: Backend,
    latches: Receiver<Latch>,
    /// Time from sending a change to the last acknowledgement, per [`DataPlane::publish`].
    apply_duration: Histogram,
    /// DTLS datagrams of WebRTC legs, for the DTLS thread.
    dtls: Receiver<dtls::Inbound>,
    /// A clone of a worker's socket, for DTLS flights.
    dtls_socket: socket2::Socket,
}

struct WorkerHandle {
    tx: Sender<Message>,
    wake: Arc<OwnedFd>,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// How long an idle worker polls its socket at most before it sleeps (`io::idle`).
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(0);

/// The largest datagram a worker forwards; larger ones are counted as oversize and dropped.
pub const SLOT_SIZE: usize = 2048;

/// Latch requests that may wait for the control thread; more are dropped (clients retry).
const LATCH_QUEUE: usize = 4096;

/// How long the control thread waits for all workers to apply a change before giving up.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl DataPlane {
    /// Chooses the backend, binds the sockets and starts the workers. Returns once every worker
    /// has set itself up, or the first error.
    pub fn start(config: &DataPlaneConfig) -> io::Result<Self> {
        let backend = choose(config.backend)?;
        let workers = config.workers.max(1);
        let (sockets, local_addr) =
            socket::bind_group(config.media, workers, config.socket_buffer)?;
        for s in &sockets {
            socket::dont_fragment(s)?;
        }
        let (trunks, trunk_addr) = match config.trunk {
            Some(addr) => {
                let with = |e: io::Error| io::Error::new(e.kind(), format!("--trunk {addr}: {e}"));
                let (t, a) =
                    socket::bind_group(addr, workers, config.socket_buffer).map_err(with)?;
                socket::steer_trunk_by_sender(&t[0], workers).map_err(with)?;
                (t.into_iter().map(Some).collect(), Some(a))
            }
            None => ((0..workers).map(|_| None).collect::<Vec<_>>(), None),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settings = Settings {
            recv_batch: config.recv_batch.clamp(1, 1024),
            send_batch: config.send_batch.clamp(1, 4096),
            ring_buffers: config.ring_buffers.clamp(64, 32768).next_power_of_two(),
            gso: config.gso,
            busy_poll: config.busy_poll,
            handoff_min_members: config.handoff_min_members,
            idle_spin: config.idle_spin,
            plan_sends: plan::width(config.largest_room, workers, config.handoff_min_members),
        };
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let (latch_tx, latches) = crossbeam_channel::bounded(LATCH_QUEUE);
        let (dtls_tx, dtls) = crossbeam_channel::bounded(dtls::QUEUE);
        let dtls_socket = sockets
            .first()
            .ok_or_else(|| io::Error::other("no worker socket"))?
            .try_clone()?;
        let mut plane = Self {
            workers: Vec::with_capacity(workers),
            local_addr,
            trunk_addr,
            backend,
            latches,
            apply_duration: Histogram::new(APPLY_BUCKETS),
            dtls,
            dtls_socket,
        };
        let wakes = (0..workers)
            .map(|_| socket::eventfd().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let leases = settings
            .ring_buffers
            .max(mmsg::BATCHES * settings.recv_batch);
        let links = Arc::new(handoff::Links::new(wakes.clone(), leases));
        let ends = sockets.into_iter().zip(trunks).zip(wakes);
        for (index, ((socket, trunk), wake)) in ends.enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let stats = Arc::new(WorkerStats::default());
            let worker = Worker {
                index,
                socket,
                trunk,
                wake: wake.clone(),
                rx,
                stats: stats.clone(),
                settings,
                latches: latch_tx.clone(),
                links: links.clone(),
                fence: config.fence.clone(),
                dtls: dtls_tx.clone(),
            };
            let pin = config.pin.then_some(index % cores);
            let ready = ready_tx.clone();
            let priority = config.worker_priority;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    if let Some(core) = pin {
                        socket::pin_to_core(core);
                    }
                    if let Err(e) = sched::apply(priority) {
                        let e = io::Error::new(
                            e.kind(),
                            format!(
                                "--worker-priority {priority}: {e} (below nice 0 and fifo need \
                                 CAP_SYS_NICE, or in the unit LimitNICE= / LimitRTPRIO= \
                                 and RestrictRealtime=no)"
                            ),
                        );
                        let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                    let result = worker.run(backend, |r| {
                        let _ = ready.send(r);
                    });
                    if let Err(e) = &result {
                        tracing::error!(worker = index, error = %e, "worker stopped");
                    }
                    result
                })?;
            plane.workers.push(WorkerHandle {
                tx,
                wake,
                stats,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a worker exited during start-up")),
            }
        }
        Ok(plane)
    }

    /// The bound media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound trunk address (fleet mode).
    pub fn trunk_addr(&self) -> Option<SocketAddr> {
        self.trunk_addr
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
    /// DTLS datagrams from WebRTC legs, for the DTLS thread.
    pub fn dtls_inbound(&self) -> &Receiver<dtls::Inbound> {
        &self.dtls
    }

    /// A socket that sends from the media address (a clone of a worker's), for DTLS flights.
    pub fn dtls_socket(&self) -> io::Result<socket2::Socket> {
        self.dtls_socket.try_clone()
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Each worker's counters.
    pub fn stats(&self) -> impl Iterator<Item = &WorkerStats> {
        self.workers.iter().map(|w| &*w.stats)
    }

    /// How long [`DataPlane::publish`] took from sending a change to the last acknowledgement;
    /// a change that timed out counts with the time it waited.
    pub fn apply_duration(&self) -> &Histogram {
        &self.apply_duration
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
        let start = Instant::now();
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
            socket::signal(w.wake.as_raw_fd());
        }
        drop(ack_tx);
        let deadline = start + APPLY_TIMEOUT;
        let acked = (0..expected).all(|_| ack_rx.recv_deadline(deadline).is_ok());
        self.apply_duration.observe(start.elapsed());
        if !acked {
            return Err(io::Error::other(
                "a worker did not apply the change in time",
            ));
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
            socket::signal(w.wake.as_raw_fd());
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

/// Picks the backend: io_uring when asked or allowed and the kernel has what it needs.
fn choose(choice: BackendChoice) -> io::Result<Backend> {
    // The probe runs on a thread of its own: the kernel may still send the throw-away ring's
    // task work to the thread that used it, which would interrupt a blocking call of the caller
    // with EINTR later on.
    let probe = || {
        std::thread::Builder::new()
            .name("io_uring-probe".into())
            .spawn(uring::probe)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the probe panicked".into()))
            })
    };
    match choice {
        BackendChoice::Mmsg => Ok(Backend::Mmsg),
        BackendChoice::IoUring => match probe() {
            Ok(()) => Ok(Backend::IoUring),
            Err(reason) => Err(io::Error::other(format!(
                "--backend io_uring: io_uring is not usable here: {reason}"
            ))),
        },
        BackendChoice::Auto => match probe() {
            Ok(()) => Ok(Backend::IoUring),
            Err(reason) => {
                tracing::warn!(%reason, "io_uring is not usable: using the mmsg backend");
                Ok(Backend::Mmsg)
            }
        },
    }
}
