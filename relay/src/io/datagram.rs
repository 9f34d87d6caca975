//! What a worker does with one received datagram, whatever the backend.
//!
//! Both backends call [`Datapath::handle`] once per datagram, in arrival order, with the source
//! address, the bytes, and an [`Output`] that queues sends. Everything that depends on the content
//! of a datagram (the routing decision, the verdict counters, STUN answers and latch requests)
//! lives here and nowhere else; the backends only move bytes.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::Sender;
use socket2::SockAddr;

use super::SLOT_SIZE;
use super::stats::BatchCounts;
use crate::route::{DropReason, Latch, StunAction, StunGuard, Table, Verdict};

/// Room for a STUN response: header, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT, or an
/// error with a short reason, all well under this.
const STUN_REPLY_SIZE: usize = 256;

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
    /// Bounds the HMAC work that STUN requests cause.
    guard: StunGuard,
    /// Latch requests to the control thread.
    latches: Sender<Latch>,
    /// DTLS datagrams of WebRTC legs to the DTLS thread.
    dtls: Sender<super::dtls::Inbound>,
    /// Milliseconds since the worker started, read once per batch (STUN rate limits).
    now_ms: u64,
    start: Instant,
    reply: [u8; STUN_REPLY_SIZE],
}

impl Datapath {
    pub(crate) fn new(
        worker: usize,
        latches: Sender<Latch>,
        dtls: Sender<super::dtls::Inbound>,
    ) -> Self {
        Self {
            worker,
            table: Table::new(),
            counts: BatchCounts::default(),
            guard: StunGuard::new(),
            latches,
            dtls,
            now_ms: 1,
            start: Instant::now(),
            reply: [0; STUN_REPLY_SIZE],
        }
    }

    /// Reads the clock for the batch that starts: one read per batch, never per datagram.
    pub(crate) fn begin_batch(&mut self) {
        self.now_ms = self.start.elapsed().as_millis() as u64 + 1;
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
        self.counts.packets_in += 1;
        self.counts.bytes_in += bytes.len() as u64;
        let verdict = match src {
            _ if truncated || bytes.len() > SLOT_SIZE => Verdict::Drop(DropReason::Oversize),
            None => Verdict::Drop(DropReason::UnknownSource),
            Some(src) => self
                .table
                .route(self.worker, &src, bytes, |dest| out.forward(dest)),
        };
        match verdict {
            Verdict::Forward(_) => {}
            Verdict::Dtls => {
                // Handshake traffic only: a copy per datagram, never per media packet.
                let leg = src.and_then(|s| Some((s, self.table.dtls_leg(&s)?)));
                if let Some((src, leg)) = leg {
                    let inbound = super::dtls::Inbound {
                        leg,
                        src,
                        bytes: bytes.to_vec(),
                    };
                    if self.dtls.try_send(inbound).is_err() {
                        self.counts.drops[DropReason::DtlsQueueFull.index()] += 1;
                    }
                }
            }
            Verdict::Stun => {
                let Some(src) = src else {
                    return;
                };
                let action = self.table.stun(
                    self.worker,
                    self.now_ms,
                    &mut self.guard,
                    &src,
                    bytes,
                    &mut self.reply,
                );
                match action {
                    StunAction::Reply { len, latch } => {
                        out.reply(&SockAddr::from(src), &self.reply[..len]);
                        if let Some(latch) = latch {
                            // The control thread applies latches; if it is behind, the client's
                            // next check retries.
                            let _ = self.latches.try_send(latch);
                        }
                    }
                    StunAction::Drop(reason) => self.counts.drops[reason.index()] += 1,
                }
            }
            Verdict::Drop(reason) => self.counts.drops[reason.index()] += 1,
        }
    }
}
