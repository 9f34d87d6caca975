//! What a worker does with one received datagram, whatever the backend.
//!
//! Both backends call [`Datapath::handle`] once per datagram, in arrival order, with the source
//! address, the bytes, and an [`Output`] that queues sends. Everything that depends on the content
//! of a datagram (the routing decision, the verdict counters, STUN answers and latch requests)
//! lives here and nowhere else; the backends only move bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::SLOT_SIZE;
use super::srtp_state::SrtpState;
use super::stats::BatchCounts;
use crate::fleet::Status;
use crate::packet::{demux, trunk};
use crate::route::{
    Addr, DropReason, Hot, Latch, Legs, Share, Sink, StunAction, StunGuard, Table, Update, Verdict,
};
use crate::srtp::{Egress, Error as SrtpError};

/// Room for a STUN response: header, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT, or an
/// error with a short reason, all well under this.
const STUN_REPLY_SIZE: usize = 256;

/// Where the sends that one datagram causes go. Implemented by each backend over its send queue.
pub(crate) trait Output {
    /// Queues the datagram being handled, unchanged, for `dest`.
    fn forward(&mut self, dest: &Addr);
    /// Queues a datagram the relay made itself (a STUN response) for `dest`. The bytes are
    /// copied: the caller may reuse its buffer at once.
    #[allow(
        dead_code,
        reason = "the STUN handler calls it from `Datapath::handle`"
    )]
    fn reply(&mut self, dest: &Addr, bytes: &[u8]);
    /// Queues a datagram that `write` makes in a free slot of the plan (an SRTP copy sealed
    /// straight into it), returning its length or `None` to send nothing.
    fn reply_with(&mut self, dest: &Addr, write: &mut dyn FnMut(&mut [u8]) -> Option<usize>);
    /// Hands the datagram being handled to worker `to` for its share of `hot`'s fan-out
    /// (`io::handoff`). Returns false, counted, when it could not: that share is dropped.
    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool;
    /// Queues the datagram being handled, unchanged, for the peer relay whose trunk address is
    /// `dest`, from this worker's trunk socket, behind `header` (two iovecs: the header is
    /// copied into the send, the datagram is not).
    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]);
    /// Queues a trunk datagram made of `header` and a copy of `bytes` (the clear copy of a
    /// WebRTC leg's datagram) for the peer relay at `dest`, from this worker's trunk socket, in
    /// a reply slot of the plan. The caller has checked that it fits ([`plan::REPLY_SIZE`]).
    ///
    /// [`plan::REPLY_SIZE`]: super::plan::REPLY_SIZE
    fn trunk_copy(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN], bytes: &[u8]);
}

/// The [`Sink`] of the routing decision over a backend's [`Output`]: plain receivers get the
/// datagram unchanged, WebRTC receivers a copy sealed for their leg.
struct Fwd<'a, O> {
    out: &'a mut O,
    packet: &'a [u8],
    egress: &'a mut HashMap<u64, Egress>,
    counts: &'a mut BatchCounts,
}

impl<O: Output> Sink for Fwd<'_, O> {
    #[inline]
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<Legs>>) {
        match legs {
            None => self.out.forward(dest),
            Some(l) => seal(l, dest, self.packet, self.egress, self.counts, self.out),
        }
    }

    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        self.out.hand_off(to, hot)
    }

    #[inline]
    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]) {
        self.out.trunk(dest, header);
    }
}

/// The [`Sink`] of a WebRTC leg's clear copy (in the worker's scratch buffer): WebRTC receivers
/// get a copy sealed for their leg, plain receivers a copy only in a `plain_legs` room (else
/// counted), and each peer relay one trunk datagram of the header and a copy of the clear bytes
/// (the received buffer holds the SRTP bytes, which must not cross).
struct Clear<'a, O> {
    out: &'a mut O,
    clear: &'a [u8],
    plain_legs: bool,
    egress: &'a mut HashMap<u64, Egress>,
    counts: &'a mut BatchCounts,
}

impl<O: Output> Sink for Clear<'_, O> {
    #[inline]
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<Legs>>) {
        match legs {
            Some(l) => seal(l, dest, self.clear, self.egress, self.counts, self.out),
            None if self.plain_legs => self.out.reply(dest, self.clear),
            None => self.counts.drops[DropReason::PlainLegs.index()] += 1,
        }
    }

    /// Never asked: `route_clear` shares nothing.
    fn hand_off(&mut self, _: usize, _: &Hot) -> bool {
        false
    }

    #[inline]
    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]) {
        if trunk::HEADER_LEN + self.clear.len() > super::plan::REPLY_SIZE {
            self.counts.drops[DropReason::Oversize.index()] += 1;
            return;
        }
        self.out.trunk_copy(dest, header, self.clear);
    }
}

/// A worker's routing state and the counters of its current batch.
pub(crate) struct Datapath {
    /// The worker index, which selects the counter cells it writes.
    pub(crate) worker: usize,
    /// How this worker shares large fan-outs with the others (`keep` set by the backend per
    /// batch).
    pub(crate) share: Share,
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
    /// SRTP state of the WebRTC legs this worker serves.
    srtp: SrtpState,
    /// The fleet's fencing status (fleet mode only), read once per batch into `fenced`.
    fence: Option<Arc<Status>>,
    fenced: bool,
}

impl Datapath {
    pub(crate) fn new(
        worker: usize,
        latches: Sender<Latch>,
        dtls: Sender<super::dtls::Inbound>,
        fence: Option<Arc<Status>>,
    ) -> Self {
        Self {
            worker,
            share: Share::alone(worker),
            table: Table::new(),
            counts: BatchCounts::default(),
            guard: StunGuard::new(),
            latches,
            dtls,
            now_ms: 1,
            start: Instant::now(),
            reply: [0; STUN_REPLY_SIZE],
            srtp: SrtpState::new(),
            fenced: fence.is_some(),
            fence,
        }
    }

    /// Applies a routing update, and creates or drops the SRTP state of the legs it changes.
    pub(crate) fn apply(&mut self, update: Update) {
        let before = SrtpState::sessions(&self.table, &update);
        let after_key = match &update {
            Update::Room { .. } => Some(update.clone()),
            Update::RemoveRoom(_) | Update::Peers(_) => None,
        };
        self.table.apply(update);
        let now = after_key.map_or_else(Vec::new, |u| SrtpState::sessions(&self.table, &u));
        self.srtp.settle(before, now);
    }

    /// Reads the clock for the batch that starts: one read per batch, never per datagram.
    pub(crate) fn begin_batch(&mut self) {
        self.now_ms = self.start.elapsed().as_millis() as u64 + 1;
        // Once per batch (two atomic loads and a clock read): a fenced relay forwards nothing
        // from the next batch on.
        self.fenced = self.fence.as_ref().is_some_and(|f| f.fenced());
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
        let verdict = match self.admit(src, bytes, truncated, DropReason::UnknownSource) {
            Ok(src) => self.route(&src, bytes, out),
            Err(drop) => drop,
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
                        out.reply(&Addr::from(src), &self.reply[..len]);
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

    /// Counts a received datagram and says whether it may be routed: not while fenced, not when
    /// oversize, and only with a source address (`no_source` is the drop without one).
    #[inline]
    fn admit(
        &mut self,
        src: Option<SocketAddr>,
        bytes: &[u8],
        truncated: bool,
        no_source: DropReason,
    ) -> Result<SocketAddr, Verdict> {
        self.counts.packets_in += 1;
        self.counts.bytes_in += bytes.len() as u64;
        match src {
            _ if self.fenced => Err(Verdict::Drop(DropReason::Fenced)),
            _ if truncated || bytes.len() > SLOT_SIZE => Err(Verdict::Drop(DropReason::Oversize)),
            None => Err(Verdict::Drop(no_source)),
            Some(src) => Ok(src),
        }
    }

    /// Handles one datagram that came in on the trunk port: checked against the live peers and
    /// routed to local receivers only (split horizon). The backend has pointed "the datagram
    /// being handled" at the inner datagram (after the header), which `forward` sends.
    #[inline]
    pub(crate) fn handle_trunk(
        &mut self,
        src: Option<SocketAddr>,
        bytes: &[u8],
        truncated: bool,
        out: &mut impl Output,
    ) {
        let verdict = match self.admit(src, bytes, truncated, DropReason::TrunkUnknownPeer) {
            Err(drop) => drop,
            Ok(src) => {
                let Self {
                    worker,
                    table,
                    counts,
                    srtp,
                    ..
                } = self;
                let inner = bytes.get(trunk::HEADER_LEN..).unwrap_or_default();
                let egress = &mut srtp.egress;
                let (verdict, withheld) =
                    table.route_trunk(*worker, &src, bytes, |dest, legs| match legs {
                        // A plain receiver gets the inner datagram zero-copy: for the clear
                        // copy of a WebRTC leg's (W), only in a `plain_legs` room.
                        None => out.forward(dest),
                        Some(l) => seal(l, dest, inner, egress, counts, out),
                    });
                counts.drops[DropReason::PlainLegs.index()] += withheld as u64;
                verdict
            }
        };
        if let Verdict::Drop(reason) = verdict {
            self.counts.drops[reason.index()] += 1;
        }
    }

    /// Routes RTP and RTCP: a plain sender's datagram goes out unchanged (zero-copy) to plain
    /// receivers; a WebRTC leg's is unprotected first; each WebRTC receiver gets a copy sealed
    /// for its leg in a slot of the plan.
    #[inline]
    fn route(&mut self, src: &SocketAddr, bytes: &[u8], out: &mut impl Output) -> Verdict {
        let Self {
            worker,
            share,
            table,
            counts,
            srtp,
            ..
        } = self;
        let SrtpState {
            ingress,
            egress,
            scratch,
        } = srtp;
        let kind = demux::classify(bytes);
        let media = matches!(kind, demux::Kind::Rtp | demux::Kind::Rtcp);
        let from_webrtc = if media {
            table.webrtc_source(src)
        } else {
            None
        };
        let Some((legs, session)) = from_webrtc else {
            let mut sink = Fwd {
                out,
                packet: bytes,
                egress,
                counts,
            };
            return table.route_shared(*share, src, bytes, &mut sink);
        };
        // A WebRTC leg: unprotect a copy in the worker's scratch buffer, then route it clear.
        // The scratch buffer is overwritten by the next datagram: its fan-out is never handed
        // off (`route_clear` shares nothing), so each of its receivers is served by this worker
        // alone, and its trunk copies carry a copy of the clear bytes.
        let plain_legs = legs.plain_legs;
        let Some(ing) = ingress.get_mut(&session.id) else {
            return Verdict::Drop(DropReason::Srtp);
        };
        let n = bytes.len();
        let Some(buf) = scratch.get_mut(..n) else {
            return Verdict::Drop(DropReason::Oversize);
        };
        buf.copy_from_slice(bytes);
        let clear = match kind {
            demux::Kind::Rtp => ing.unprotect_rtp(buf),
            _ => ing.unprotect_rtcp(buf),
        };
        let len = match clear {
            Ok(len) => len,
            Err(e) => return Verdict::Drop(srtp_drop(e)),
        };
        let mut sink = Clear {
            out,
            clear: &scratch[..len],
            plain_legs,
            egress,
            counts,
        };
        table.route_clear(*worker, src, sink.clear, &mut sink)
    }
}

impl Datapath {
    /// Sends this worker's share of a packet another worker handed it (`io::handoff`): the
    /// payload `bytes` is that worker's buffer, the routing this worker's own table (its rules,
    /// its fence). Counts a drop per job that sends nothing for a reason.
    #[inline]
    pub(crate) fn handle_hot(&mut self, hot: &Hot, bytes: &[u8], out: &mut impl Output) {
        if self.fenced {
            self.counts.drops[DropReason::Fenced.index()] += 1;
            return;
        }
        let Self {
            share,
            table,
            counts,
            srtp,
            ..
        } = self;
        let egress = &mut srtp.egress;
        let verdict = table.route_hot(*share, hot, |dest, legs| match legs {
            None => out.forward(dest),
            Some(l) => seal(l, dest, bytes, egress, counts, out),
        });
        if let Verdict::Drop(reason) = verdict {
            counts.drops[reason.index()] += 1;
        }
    }
}

/// The drop reason of a packet from a WebRTC leg that did not unprotect.
fn srtp_drop(e: SrtpError) -> DropReason {
    match e {
        SrtpError::AuthFailed => DropReason::SrtpAuth,
        SrtpError::Replayed | SrtpError::TooOld => DropReason::SrtpReplay,
        _ => DropReason::Srtp,
    }
}

/// Seals a copy of the clear `packet` for the WebRTC leg at `dest` into a slot of the plan. A
/// leg whose DTLS has not connected yet gets nothing.
#[inline]
fn seal(
    legs: &Legs,
    dest: &Addr,
    packet: &[u8],
    egress: &mut HashMap<u64, Egress>,
    counts: &mut BatchCounts,
    out: &mut impl Output,
) {
    let Some(session) = dest.as_socket().and_then(|a| legs.session_at(&a)) else {
        return;
    };
    let Some(e) = egress.get_mut(&session.id) else {
        return;
    };
    let rtcp = demux::classify(packet) == demux::Kind::Rtcp;
    let mut failed = false;
    out.reply_with(dest, &mut |slot| {
        let sealed = if rtcp {
            e.protect_rtcp(packet, slot)
        } else {
            e.protect_rtp(packet, slot)
        };
        failed = sealed.is_err();
        sealed.ok()
    });
    if failed {
        counts.drops[DropReason::SrtpEgress.index()] += 1;
    }
}
