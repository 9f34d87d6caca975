//! What a worker does with one received datagram, whatever the backend.
//!
//! Both backends call [`Datapath::handle`] once per datagram, in arrival order, with the source
//! address, the bytes, and an [`Output`] that queues sends. Everything that depends on the content
//! of a datagram (the routing decision, the verdict counters, and the STUN hook) lives here and
//! nowhere else; the backends only move bytes.

use std::net::SocketAddr;

use socket2::SockAddr;

use super::SLOT_SIZE;
use super::stats::BatchCounts;
use crate::route::{DropReason, Table, Verdict};

/// Where the sends that one datagram causes go. Implemented by each backend over its send queue.
pub(crate) trait Output {
    /// Queues the datagram being handled, unchanged, for `dest`.
    fn forward(&mut self, dest: &SockAddr);
    /// Queues a datagram the relay made itself (a STUN response) for `dest`. The bytes are
    /// copied: the caller may reuse its buffer at once.
    #[allow(
        dead_code,
        reason = "the STUN handler calls it from `Datapath::handle`"
    )]
    fn reply(&mut self, dest: &SockAddr, bytes: &[u8]);
}

/// A worker's routing state and the counters of its current batch.
pub(crate) struct Datapath {
    /// The worker index, which selects the counter cells it writes.
    pub(crate) worker: usize,
    /// The worker's own routing table, changed only between batches.
    pub(crate) table: Table,
    /// Counts of the batch in progress, published once per batch.
    pub(crate) counts: BatchCounts,
}

impl Datapath {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            worker,
            table: Table::new(),
            counts: BatchCounts::default(),
        }
    }

    /// Handles one datagram: routes it, queues its sends on `out`, and counts the outcome.
    ///
    /// `src` is `None` when the kernel gave no usable address; `truncated` when the datagram was
    /// larger than the receive buffer.
    #[inline]
    pub(crate) fn handle(
        &mut self,
        src: Option<SocketAddr>,
        bytes: &[u8],
        truncated: bool,
        out: &mut impl Output,
    ) {
        let counts = &mut self.counts;
        counts.packets_in += 1;
        counts.bytes_in += bytes.len() as u64;
        let verdict = match src {
            _ if truncated || bytes.len() > SLOT_SIZE => Verdict::Drop(DropReason::Oversize),
            None => Verdict::Drop(DropReason::UnknownSource),
            Some(src) => self
                .table
                .route(self.worker, &src, bytes, |dest| out.forward(dest)),
        };
        match verdict {
            Verdict::Forward(_) => {}
            // The ICE layer answers STUN here: a Binding response goes out through `out.reply`,
            // and a latched address goes to the control thread. Until then it is a counted drop.
            Verdict::Stun => counts.drops[DropReason::Stun.index()] += 1,
            Verdict::Drop(reason) => counts.drops[reason.index()] += 1,
        }
    }
}
