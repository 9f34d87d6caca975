//! Egress: protecting what the relay sends to one WebRTC leg, into a per-receiver slot or in
//! place.
//!
//! The relay never rewrites sequence numbers, so the index it seals a forwarded packet under is
//! the one the receiver will estimate from that sequence number (RFC 3711 Appendix A, run on the
//! highest index sent so far, starting at ROC 0 for an SSRC the leg has not been sent yet). Two
//! different packets with the same SSRC and sequence number then get the same index: a publisher
//! that rejoins with its old SSRC and restarts its sequence, or a retransmission on the media
//! SSRC. Under GCM one reused nonce gives away the XOR of two plaintexts and lets anyone forge
//! tags, so every (SSRC, index) is sealed at most once: a window of the indices sent refuses
//! repeats and anything older than it.

use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::packet::rtp::Ssrc;

use super::keys::RTCP_HEADER;
use super::replay::Window;
use super::table::Table;
use super::{Error, Keys, MAX_SSRCS, Profile, rtp_header};

/// The send side of one leg: the local (server) keys, the leg's SRTCP index, and per SSRC the
/// highest index sent and the window of indices sent.
///
/// Owned by the worker that forwards to the leg, used through `&mut`. When several workers
/// forward to one leg, each holds a [`Egress::sibling`]: they share the keys and the SRTCP
/// index counter (an atomic), and each keeps the SSRCs that reach it. Each SSRC's state must
/// live in exactly one sibling at a time; move it with [`Egress::take_stream`] and
/// [`Egress::put_stream`] when its publisher moves to another worker, and never drop it while
/// the keys live, or a rejoining publisher could reuse indices.
#[derive(Debug)]
pub struct Egress {
    shared: Arc<Shared>,
    rtp: Table<Window>,
}

impl Egress {
    /// Send state for a leg with the local `keys`, for up to [`MAX_SSRCS`] SSRCs (allocated
    /// here, once). A subscriber receives a few SSRCs per publisher: size bigger rooms with
    /// [`Egress::with_capacity`].
    pub fn new(keys: Keys) -> Self {
        Self::with_capacity(keys, MAX_SSRCS)
    }

    /// As [`Egress::new`], for up to `ssrcs` SSRCs.
    pub fn with_capacity(keys: Keys, ssrcs: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys,
                rtcp_index: AtomicU32::new(0),
            }),
            rtp: Table::new(ssrcs, Window::new()),
        }
    }

    /// Another send state for the same leg, for another worker: same keys, same SRTCP index
    /// counter, an empty SSRC table of the same capacity (allocated here).
    pub fn sibling(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            rtp: Table::new(self.rtp.capacity(), Window::new()),
        }
    }

    /// Seals a copy of the clear RTP packet `clear` into `out` (which needs room for
    /// [`Profile::rtp_overhead`] more bytes), leaving `clear` untouched: one receive buffer,
    /// one encrypted copy per receiver. Returns the protected length.
    ///
    /// Refuses with [`Error::IndexReuse`] a packet whose (SSRC, index) this leg already sealed
    /// or that is older than the window of sent indices; nothing moves then.
    pub fn protect_rtp(&mut self, clear: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let header = rtp_header(clear)?;
        let (slot, index) = self.next_index(header.ssrc, header.seq)?;
        let len = self
            .shared
            .keys
            .seal_rtp_into(clear, out, header.len, header.ssrc.0, index)?;
        self.record(slot, header.ssrc, index)?;
        Ok(len)
    }

    /// As [`Egress::protect_rtp`], in place: `buf[..len]` is the clear packet, and `buf` has
    /// room for the tag after it. Returns the protected length.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let clear = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        let header = rtp_header(clear)?;
        let (slot, index) = self.next_index(header.ssrc, header.seq)?;
        let n = self
            .shared
            .keys
            .seal_rtp(buf, len, header.len, header.ssrc.0, index)?;
        self.record(slot, header.ssrc, index)?;
        Ok(n)
    }

    /// Seals a copy of the clear RTCP compound `clear` into `out` with the leg's next SRTCP index
    /// and the E flag set (RFC 3711 §3.4, RFC 7714 §9). `out` needs room for
    /// [`Profile::rtcp_overhead`] more bytes. Returns the protected length.
    pub fn protect_rtcp(&self, clear: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let len = clear.len();
        check_rtcp(clear)?;
        if out.len() < len + self.profile().rtcp_overhead() {
            return Err(Error::BufferTooSmall);
        }
        out[..len].copy_from_slice(clear);
        self.protect_rtcp_in_place(out, len)
    }

    /// As [`Egress::protect_rtcp`], in place: `buf[..len]` is the clear compound, with room
    /// after it.
    pub fn protect_rtcp_in_place(&self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let clear = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        check_rtcp(clear)?;
        if buf.len() < len + self.profile().rtcp_overhead() {
            return Err(Error::BufferTooSmall);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        // RFC 3711 §3.4: the index starts at 0 and counts up, one per packet, for the life of
        // the keys. An index taken and then not used (a failed seal) is simply skipped.
        let index = self
            .shared
            .rtcp_index
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                (i < RTCP_INDEX_END).then_some(i + 1)
            })
            .map_err(|_| Error::KeyExhausted)?;
        self.shared.keys.seal_rtcp(buf, len, ssrc, index)
    }

    /// Takes the send state of `ssrc` out (to put it into another worker's sibling).
    pub fn take_stream(&mut self, ssrc: Ssrc) -> Option<Window> {
        self.rtp.remove(ssrc)
    }

    /// Puts the send state of `ssrc`, taken from a sibling, into this one. Fails with
    /// [`Error::SsrcTableFull`] when it does not fit, and with [`Error::IndexReuse`] when this
    /// sibling already holds `ssrc` (the state must live in one place).
    pub fn put_stream(&mut self, ssrc: Ssrc, state: Window) -> Result<(), Error> {
        if self.rtp.find(ssrc).is_some() {
            return Err(Error::IndexReuse);
        }
        self.rtp.insert(ssrc, state).map(|_| ())
    }

    /// The send state of `ssrc`, if the leg was sent any of it.
    pub fn rtp_state(&self, ssrc: Ssrc) -> Option<&Window> {
        self.rtp.find(ssrc).map(|at| self.rtp.get(at))
    }

    /// The profile of the leg's keys.
    pub fn profile(&self) -> Profile {
        self.shared.keys.profile()
    }

    /// Sets the next SRTCP index (tests reach the end of the index space with it).
    #[cfg(test)]
    pub(super) fn set_rtcp_index(&self, index: u32) {
        self.shared.rtcp_index.store(index, Ordering::Relaxed);
    }

    /// The index to seal `seq` of `ssrc` under, if it was not sealed before.
    fn next_index(&self, ssrc: Ssrc, seq: u16) -> Result<(Option<usize>, u64), Error> {
        let slot = self.rtp.find(ssrc);
        let window = match slot {
            Some(at) => self.rtp.get(at),
            None if self.rtp.is_full() => return Err(Error::SsrcTableFull),
            None => &EMPTY,
        };
        let index = match window.estimate(seq) {
            Ok(index) => index,
            Err(Error::TooOld) => return Err(Error::IndexReuse),
            Err(e) => return Err(e),
        };
        window.check(index).map_err(|_| Error::IndexReuse)?;
        Ok((slot, index))
    }

    /// Marks `index` of `ssrc` as sealed.
    fn record(&mut self, slot: Option<usize>, ssrc: Ssrc, index: u64) -> Result<(), Error> {
        let at = match slot {
            Some(at) => at,
            None => self.rtp.insert(ssrc, Window::new())?,
        };
        self.rtp.get_mut(at).accept(index);
        Ok(())
    }
}

/// What the siblings of one leg share.
#[derive(Debug)]
struct Shared {
    keys: Keys,
    /// The next SRTCP index; [`RTCP_INDEX_END`] once all 2^31 are used.
    rtcp_index: AtomicU32,
}

/// A clear RTCP compound has at least the 8 bytes SRTCP leaves in the clear, version 2.
fn check_rtcp(clear: &[u8]) -> Result<(), Error> {
    if clear.len() < RTCP_HEADER {
        return Err(Error::TooShort);
    }
    if clear[0] >> 6 != 2 {
        return Err(Error::BadHeader);
    }
    Ok(())
}

/// The SRTCP index is 31 bits.
const RTCP_INDEX_END: u32 = 1 << 31;
/// The state of an SSRC not sent yet: ROC 0, nothing sent.
const EMPTY: Window = Window::new();
