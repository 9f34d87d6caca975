//! Sharing one packet's fan-out among the workers.
//!
//! The kernel gives all of one sender's packets to one worker, so a large room's fan-out would be
//! bounded by one core. In a room of at least [`Share::min_members`] members, the receivers are
//! split by chunk: the receivers of chunk `c` are always sent by worker `c % workers`, whichever
//! worker received the packet. The receiving worker sends its own chunks and hands the packet to
//! each other worker through a [`Sink`] ([`Hot`]: the room it was routed with, the sender's slot
//! and the kind); that worker later calls [`Room::each_in_share`] for its chunks.
//!
//! A receiver's copies of one sender's packets are therefore sent by one worker, in the order the
//! receiving worker handed them over: per-receiver order holds as long as the hand-off keeps FIFO
//! order per worker pair and the split does not change (it changes only when the room crosses
//! [`Share::min_members`], or when a hand-off is refused and the share is sent locally).

use std::sync::Arc;

use socket2::SockAddr;

use super::room::{CHUNK, MediaKind, Room};

/// How a worker shares large fan-outs with the other workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This worker's index.
    pub worker: usize,
    /// The number of workers; with one, nothing is shared.
    pub workers: usize,
    /// Rooms of at least this many members share their fan-out; 0 never shares.
    pub min_members: usize,
}

impl Share {
    /// A worker that never shares.
    pub fn alone(worker: usize) -> Self {
        Self {
            worker,
            workers: 1,
            min_members: 0,
        }
    }

    /// Whether fan-outs in `room` are shared.
    #[inline]
    pub fn applies(&self, room: &Room) -> bool {
        self.workers > 1 && self.min_members > 0 && room.len() >= self.min_members
    }
}

/// A packet whose fan-out is shared: what another worker needs to send its share.
#[derive(Clone, Copy, Debug)]
pub struct Hot<'a> {
    /// The room snapshot the packet was routed with; a hand-off keeps it alive.
    pub room: &'a Arc<Room>,
    /// The sender's slot.
    pub slot: u16,
    /// The kind of the sender's track.
    pub kind: MediaKind,
}

/// Where the sends of a routed datagram go.
pub trait Sink {
    /// Queues the datagram for `dest`.
    fn forward(&mut self, dest: &SockAddr);
    /// Asks worker `to` to send its share of `hot`'s receivers. Returns false when it cannot
    /// take it now: the router then sends that share itself.
    fn hand_off(&mut self, to: usize, hot: &Hot<'_>) -> bool;
}

/// A [`Sink`] over a closure that never hands off.
pub(crate) struct Emit<F>(pub(crate) F);

impl<F: FnMut(&SockAddr)> Sink for Emit<F> {
    #[inline]
    fn forward(&mut self, dest: &SockAddr) {
        (self.0)(dest);
    }

    fn hand_off(&mut self, _: usize, _: &Hot<'_>) -> bool {
        false
    }
}

impl Room {
    /// Calls `emit` for each receiver of the media of `kind` from the member in `slot` whose
    /// chunk belongs to worker `share` of `workers` (chunks `share`, `share + workers`, ...).
    /// `worker` selects the counter cells (listeners' receive rules). Returns the number
    /// emitted; 0 when the slot is empty.
    ///
    /// The shares of all workers together visit each receiver exactly once.
    pub fn each_in_share(
        &self,
        worker: usize,
        share: usize,
        workers: usize,
        slot: u16,
        kind: MediaKind,
        mut emit: impl FnMut(&SockAddr),
    ) -> usize {
        let Some(sender) = self.member(slot) else {
            return 0;
        };
        let workers = workers.max(1);
        let mut sent = 0;
        let mut c = share;
        while c < self.chunks.len() {
            sent += self.each_receiver(worker, slot, sender, kind, c..c + 1, |_, d| emit(d));
            c += workers;
        }
        sent
    }
}

/// The worker that sends to the member in `slot` when a fan-out is shared among `workers`.
pub fn sender_of(slot: u16, workers: usize) -> usize {
    (usize::from(slot) / CHUNK) % workers.max(1)
}
