//! Sharing one packet's fan-out among the workers.
//!
//! The kernel gives all of one sender's packets to one worker, so a large room's fan-out would be
//! bounded by one core. In a room where [`Share::applies`], the receivers are split by chunk: the
//! receivers of chunk `c` are only ever sent by worker `c % workers`, whichever worker received
//! the packet. The receiving worker sends its own chunks and hands the packet to each other
//! worker through a [`Sink`] ([`Hot`]: the room, the sender's slot and SSRC); that worker routes
//! its share with its own snapshot of the room ([`Table::route_hot`](super::Table::route_hot)),
//! so that a rule in force on that worker applies to the copies it sends.
//!
//! Per-receiver order: a receiver's copies of one sender's packets are sent by one worker, in the
//! order the receiving worker handed them over (the hand-off is FIFO per worker pair). A hand-off
//! the peer cannot take (its ring is full) is dropped and counted, never sent by the receiving
//! worker instead: that would let a later local send overtake copies still queued on the peer.
//! The split changes only when the room stops being shared; [`Share::keep`] holds it while the
//! peers still have this worker's jobs queued (docs/ARCHITECTURE.md, "One hot publisher").

use std::sync::Arc;

use super::addr::Addr;
use super::leg::Legs;
use super::room::{CHUNK, MediaKind, Room};
use super::table::RoomId;
use crate::packet::rtp::Ssrc;
use crate::packet::trunk;

/// How a worker shares large fan-outs with the other workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This worker's index.
    pub worker: usize,
    /// The number of workers; with one, nothing is shared.
    pub workers: usize,
    /// Rooms of at least this many members share their fan-out; 0 never shares.
    pub min_members: usize,
    /// Set while other workers still have jobs from this worker that they have not sent: rooms
    /// down to half of `min_members` stay shared meanwhile, so that a room that shrinks below
    /// the threshold does not send locally ahead of copies still queued on a peer.
    pub keep: bool,
}

impl Share {
    /// A worker that never shares.
    pub fn alone(worker: usize) -> Self {
        Self {
            worker,
            workers: 1,
            min_members: 0,
            keep: false,
        }
    }

    /// Whether fan-outs in `room` are shared.
    #[inline]
    pub fn applies(&self, room: &Room) -> bool {
        self.workers > 1
            && self.min_members > 0
            && (room.len() >= self.min_members || (self.keep && 2 * room.len() >= self.min_members))
    }
}

/// A packet whose fan-out is shared: what another worker needs to send its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hot {
    /// The room.
    pub room: RoomId,
    /// The sender's slot.
    pub slot: u16,
    /// The SSRC of the sender's track (for RTCP, the sender report's).
    pub ssrc: Ssrc,
}

/// Where the sends of a routed datagram go.
pub trait Sink {
    /// Queues the datagram for `dest`; `legs` are the receiver's WebRTC legs (`None`: plain).
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<Legs>>);
    /// Asks worker `to` to send its share of `hot`'s receivers. Returns false when it cannot
    /// take it now: that share is then dropped (the sink counts it), never sent here.
    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool;
    /// Queues the datagram, unchanged, for the peer relay whose trunk address is `dest`, behind
    /// the trunk `header` (fleet mode only; the receiving worker sends these itself). From
    /// [`super::Table::route_clear`] the datagram is the clear copy the caller routed, not the
    /// received bytes.
    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]);
}

/// A [`Sink`] over a closure that never hands off (local receivers only).
pub(crate) struct Emit<F>(pub(crate) F);

impl<F: FnMut(&Addr, Option<&Arc<Legs>>)> Sink for Emit<F> {
    #[inline]
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<Legs>>) {
        (self.0)(dest, legs);
    }

    fn hand_off(&mut self, _: usize, _: &Hot) -> bool {
        false
    }

    /// Never called: the routes that take an `Emit` send to local receivers only.
    fn trunk(&mut self, _: &Addr, _: &[u8; trunk::HEADER_LEN]) {}
}

impl Room {
    /// Calls `emit` for each receiver of the media of `kind` from the member in `slot` whose
    /// chunk belongs to worker `share` of `workers` (chunks `share`, `share + workers`, ...).
    /// `worker` selects the counter cells (listeners' receive rules). Returns the number
    /// emitted; 0 when the slot is empty.
    ///
    /// The shares of all workers together visit each receiver exactly once.
    #[inline]
    pub(crate) fn each_in_share(
        &self,
        worker: usize,
        share: usize,
        workers: usize,
        slot: u16,
        kind: MediaKind,
        mut emit: impl FnMut(&Addr, Option<&Arc<Legs>>),
    ) -> usize {
        let Some(sender) = self.member(slot) else {
            return 0;
        };
        let workers = workers.max(1);
        let mut sent = 0;
        let mut c = share;
        while c < self.chunks.len() {
            sent += self.each_receiver(worker, slot, sender, kind, c..c + 1, &mut emit);
            c += workers;
        }
        sent
    }
}

/// The worker that sends to the member in `slot` when a fan-out is shared among `workers`.
pub fn sender_of(slot: u16, workers: usize) -> usize {
    (usize::from(slot) / CHUNK) % workers.max(1)
}
