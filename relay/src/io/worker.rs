//! One data-plane worker: a loop pinned to one core that owns one socket and one routing table.
//!
//! Each turn: apply pending control messages, receive a batch, hand every datagram to
//! [`Datapath::handle`](super::datagram::Datapath::handle), send the batch, publish counters.
//! The backend decides how to receive, send and sleep; this file holds what both share.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use socket2::Socket;

use super::Backend;
use super::handoff::{Handoff, Links};
use super::stats::WorkerStats;
use crate::route::{Latch, Update};

/// A message from the control thread to a worker.
#[derive(Debug)]
pub(crate) enum Message {
    /// Apply the update, then acknowledge.
    Update(Update, Sender<()>),
    /// Finish the current batch and exit.
    Shutdown,
}

/// Batch sizes and switches of a worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Datagrams per `recvmmsg`.
    pub(crate) recv_batch: usize,
    /// Sends submitted at once.
    pub(crate) send_batch: usize,
    /// Sends one plan holds (`plan::width`).
    pub(crate) plan_sends: usize,
    /// Buffers in the io_uring provided-buffer ring (a power of two).
    pub(crate) ring_buffers: usize,
    /// Join runs of equal-size datagrams into GSO sends.
    pub(crate) gso: bool,
    /// Spin instead of sleeping when there is nothing to do.
    pub(crate) busy_poll: bool,
    /// Rooms of at least this many members share their fan-out among the workers.
    pub(crate) handoff_min_members: usize,
    /// The most an idle worker polls before it sleeps.
    pub(crate) idle_spin: std::time::Duration,
}

pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) socket: Socket,
    /// In fleet mode, this worker's socket of the trunk port's SO_REUSEPORT group: trunk
    /// datagrams to and from peer relays.
    pub(crate) trunk: Option<Socket>,
    pub(crate) wake: Arc<OwnedFd>,
    pub(crate) rx: Receiver<Message>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) settings: Settings,
    /// Where authenticated STUN sends latch requests for the control thread.
    pub(crate) latches: Sender<Latch>,
    /// The hand-off rings between workers (`io::handoff`).
    pub(crate) links: Arc<Links>,
    /// The fleet's fencing status, in fleet mode.
    pub(crate) fence: Option<Arc<crate::fleet::Status>>,
    /// DTLS datagrams of WebRTC legs to the DTLS thread.
    pub(crate) dtls: Sender<super::dtls::Inbound>,
}

impl Worker {
    /// Runs the worker on `backend` until shutdown; `ready` hears once whether set-up worked.
    pub(crate) fn run(
        self,
        backend: Backend,
        ready: impl FnOnce(io::Result<()>),
    ) -> io::Result<()> {
        match backend {
            Backend::Mmsg => super::mmsg::run(&self, ready),
            Backend::IoUring => super::uring::run(&self, ready),
        }
    }

    /// This worker's end of the hand-off links.
    pub(crate) fn handoff(&self) -> Handoff {
        Handoff::new(
            self.links.clone(),
            self.index,
            self.settings.handoff_min_members,
        )
    }

    /// Applies every pending message. Returns false on shutdown.
    pub(crate) fn apply_messages(&self, path: &mut super::datagram::Datapath) -> bool {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Message::Update(update, ack) => {
                    path.apply(update);
                    // The control thread may have given up waiting; nothing to do then.
                    let _ = ack.send(());
                }
                Message::Shutdown => return false,
            }
        }
        true
    }
}
