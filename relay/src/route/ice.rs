//! ICE-lite answers to STUN Binding requests (RFC 8445 §2.5 and §7.3, RFC 8489).
//!
//! The relay is a lite agent, so it is always the controlled agent and never sends checks of its
//! own. A Binding request whose USERNAME starts with a participant's relay-side ufrag and whose
//! MESSAGE-INTEGRITY (or MESSAGE-INTEGRITY-SHA256) verifies with its pwd proves the source address
//! belongs to that participant: the worker answers with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and
//! FINGERPRINT, and asks the control thread to latch the address.
//!
//! Failed requests get no answer: silence costs nothing and reflects nothing to a spoofed source.
//! HMAC work is rate-limited per source address and per worker, so a flood of bad requests costs
//! a hash lookup and a bucket check per packet. A request carrying ICE-CONTROLLED means the peer
//! also believes it is controlled (a role conflict, §7.3.1.1); a lite agent cannot take the
//! controlling role, so it answers 487 Role Conflict and latches nothing, which tells a full agent
//! to switch to controlling.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use super::table::{DropReason, RoomId};
use crate::packet::stun::{self, BindingResponse, Class, ErrorResponse, Message};

/// Relay-side ICE credentials of one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The relay's username fragment for this participant.
    pub ufrag: Box<str>,
    /// The relay's password for this participant: the HMAC key.
    pub pwd: Box<str>,
}

/// A request to bind a participant to the address its authenticated request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latch {
    /// The room.
    pub room: RoomId,
    /// The participant id.
    pub participant: Arc<str>,
    /// The source address of the request.
    pub addr: SocketAddr,
    /// The leg the request's ufrag names.
    pub leg: super::Leg,
}

/// What to do with a STUN datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StunAction {
    /// Send the first `len` bytes of the output buffer back to the source; latch if asked.
    Reply {
        /// Length of the response written to the caller's buffer.
        len: usize,
        /// Set when the participant's address must change to the source.
        latch: Option<Latch>,
    },
    /// Nothing to send.
    Drop(DropReason),
}

/// Per-worker limits on HMAC work: per source address and in total.
#[derive(Debug)]
pub struct StunGuard {
    hasher: RandomState,
    sources: Box<[Bucket]>,
    total: Bucket,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Tokens in thousandths.
    milli: u64,
    last_ms: u64,
}

/// Buckets for source addresses; colliding sources share one, which only makes them stricter.
const SOURCE_BUCKETS: usize = 4096;
/// Checks per second one source address may cost (a full agent sends a few per second).
const PER_SOURCE_RATE: u64 = 50;
/// Checks per second one worker spends on HMAC at most.
const TOTAL_RATE: u64 = 20_000;

impl StunGuard {
    /// A guard with full buckets.
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            sources: vec![Bucket::default(); SOURCE_BUCKETS].into_boxed_slice(),
            total: Bucket::default(),
        }
    }

    /// Takes one token for `src` and one from the worker's total, if both have one.
    fn allow(&mut self, now_ms: u64, src: &SocketAddr) -> bool {
        let i = (self.hasher.hash_one(src) as usize) % SOURCE_BUCKETS;
        let source = &mut self.sources[i];
        if !source.take(now_ms, PER_SOURCE_RATE) {
            return false;
        }
        self.total.take(now_ms, TOTAL_RATE)
    }
}

impl Default for StunGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Bucket {
    /// Refills at `rate` tokens a second up to one second's worth, then takes one.
    fn take(&mut self, now_ms: u64, rate: u64) -> bool {
        let cap = rate * 1000;
        if self.last_ms == 0 {
            self.milli = cap;
        } else {
            let elapsed = now_ms.saturating_sub(self.last_ms);
            self.milli = (self.milli + elapsed.saturating_mul(rate)).min(cap);
        }
        self.last_ms = now_ms.max(1);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Answers one STUN datagram from `src` for the participant `member` found by its ufrag.
///
/// `pwd` is that participant's password and `current` its address now.
pub(crate) fn answer(
    msg: &Message<&[u8]>,
    src: SocketAddr,
    pwd: &[u8],
    out: &mut [u8],
) -> Result<usize, DropReason> {
    if msg.fingerprint_offset().is_some() && msg.check_fingerprint().is_err() {
        return Err(DropReason::StunMalformed);
    }
    let verified = if msg.integrity_sha256_offset().is_some() {
        msg.verify_integrity_sha256(pwd)
    } else {
        msg.verify_integrity(pwd)
    };
    if verified.is_err() {
        return Err(DropReason::StunUnauthorized);
    }
    let tid = msg.transaction_id();
    let written = if msg.ice_controlled().is_some() {
        ErrorResponse {
            transaction_id: tid,
            code: 487,
            reason: "Role Conflict",
            software: None,
        }
        .emit(out)
    } else {
        BindingResponse {
            transaction_id: tid,
            mapped: src,
            software: None,
            integrity_key: pwd,
        }
        .emit(out)
    };
    written.map_err(|_| DropReason::StunMalformed)
}

/// Parses a datagram as a Binding request.
pub(crate) fn request(buf: &[u8]) -> Result<Message<&[u8]>, DropReason> {
    let msg = Message::new_checked(buf).map_err(|_| DropReason::StunMalformed)?;
    if msg.class() != Class::Request || msg.method() != stun::BINDING {
        // Indications (keepalives) and stray responses: nothing to answer.
        return Err(DropReason::Stun);
    }
    Ok(msg)
}

/// The relay-side ufrag a request names: RFC 8445 §7.2.2, USERNAME is
/// "<receiver's ufrag>:<sender's ufrag>".
pub(crate) fn local_ufrag(username: &[u8]) -> &[u8] {
    username.split(|&b| b == b':').next().unwrap_or(username)
}

/// Applies the rate limit; separate so that unknown users cost no bucket.
pub(crate) fn allow(guard: &mut StunGuard, now_ms: u64, src: &SocketAddr) -> bool {
    guard.allow(now_ms, src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let mut b = Bucket::default();
        let taken = (0..200).filter(|_| b.take(1000, 50)).count();
        assert_eq!(taken, 50, "a full bucket holds one second");
        assert!(!b.take(1000, 50));
        assert!(b.take(1020, 50), "20 ms refill one token at 50/s");
        assert!(!b.take(1020, 50));
    }

    #[test]
    fn guard_limits_each_source() {
        let mut g = StunGuard::new();
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let allowed = (0..1000).filter(|_| g.allow(5, &a)).count();
        assert_eq!(allowed as u64, PER_SOURCE_RATE);
    }
}
