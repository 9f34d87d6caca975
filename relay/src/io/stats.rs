//! Per-worker traffic counters, written by their worker once per batch and read by the control
//! thread for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use super::send::Sent;
use crate::route::DropReason;

/// Counters of one worker. Only that worker writes them.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Datagrams received.
    pub packets_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Datagrams sent.
    pub packets_out: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Sends the kernel refused.
    pub send_errors: AtomicU64,
    /// Receive batches processed.
    pub batches: AtomicU64,
    /// Sends that carried several datagrams as one UDP_SEGMENT (GSO) send.
    pub gso_sends: AtomicU64,
    /// Times the kernel refused GSO on this worker's socket, which turned it off (0 or 1).
    pub gso_fallbacks: AtomicU64,
    /// Times the io_uring multishot receive ended (no free buffer, or the kernel stopped it) and
    /// was armed again.
    pub recv_rearms: AtomicU64,
    /// Packets whose fan-out share this worker handed to another worker (one per peer).
    pub handoff_out: AtomicU64,
    /// Hand-offs refused (the peer's ring was full, or no receive buffer could be lent): that
    /// share of the packet was dropped, never sent by this worker (per-receiver order).
    pub handoff_full: AtomicU64,
    /// Hand-offs from other workers whose share this worker sent.
    pub handoff_in: AtomicU64,
    /// Drops by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// Counts gathered during one batch, then published with one store per counter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) packets_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) send_errors: u64,
    pub(crate) gso_sends: u64,
    pub(crate) gso_fallbacks: u64,
    pub(crate) recv_rearms: u64,
    pub(crate) handoff: super::handoff::Counts,
    pub(crate) drops: [u64; DropReason::ALL.len()],
}

impl BatchCounts {
    /// Adds what a group of sends did.
    pub(crate) fn add_sent(&mut self, s: Sent) {
        self.packets_out += s.packets;
        self.bytes_out += s.bytes;
        self.send_errors += s.errors;
    }
}

impl WorkerStats {
    /// Adds one batch's counts. Single writer: relaxed load and store.
    pub(crate) fn publish(&self, c: &BatchCounts) {
        fn bump(a: &AtomicU64, n: u64) {
            if n != 0 {
                a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            }
        }
        bump(&self.packets_in, c.packets_in);
        bump(&self.bytes_in, c.bytes_in);
        bump(&self.packets_out, c.packets_out);
        bump(&self.bytes_out, c.bytes_out);
        bump(&self.send_errors, c.send_errors);
        bump(&self.batches, 1);
        bump(&self.gso_sends, c.gso_sends);
        bump(&self.gso_fallbacks, c.gso_fallbacks);
        bump(&self.recv_rearms, c.recv_rearms);
        bump(&self.handoff_out, c.handoff.out);
        bump(&self.handoff_full, c.handoff.full);
        bump(&self.handoff_in, c.handoff.taken);
        for (a, &n) in self.drops.iter().zip(&c.drops) {
            bump(a, n);
        }
    }

    /// Reads one counter.
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}
