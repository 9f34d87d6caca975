//! SRTP and SRTCP for WebRTC legs (RFC 3711, RFC 7714), over aws-lc-rs.
//!
//! Read first: RFC 3711 §3 (packet formats, index and replay), §4.3 (key derivation); RFC 7714
//! §8-§9 (AES-GCM on RTP and RTCP); RFC 5764 §4.1.2 and §4.2 (DTLS-SRTP profiles and keying
//! material).
//!
//! # Model
//!
//! A WebRTC leg is one participant's transport. Its DTLS handshake (elsewhere) gives a
//! [`Profile`] and keying material; [`split_keying_material`] turns that into two
//! [`MasterKey`]s, one per direction (the relay is always the DTLS server). Each becomes a
//! [`Keys`]: the six session keys derived (§4.3) and expanded into aws-lc-rs keys once.
//!
//! | struct | one per | holds | used through |
//! |---|---|---|---|
//! | [`Keys`] | leg and direction | expanded session keys | shared read-only (`Send + Sync`) |
//! | [`Ingress`] | leg | remote keys; per SSRC: ROC, highest index, replay [`Window`] for SRTP and SRTCP | `&mut`, the worker that receives the leg |
//! | [`Egress`] | leg (one [`Egress::sibling`] per worker that forwards to it) | local keys and the leg's SRTCP index (shared by siblings); per SSRC: highest index sent, [`Window`] of indices sent | `&mut`, each forwarding worker |
//! | [`Window`] | SSRC of a leg, per direction | highest index, bitmap of the last [`REPLAY_WINDOW`] | inside the above; movable |
//!
//! Per-SSRC state lives in a table sized when the leg is set up ([`MAX_SSRCS`] by default); a
//! new SSRC beyond it is refused with [`Error::SsrcTableFull`]. After set-up nothing here
//! allocates, locks, logs or reads a clock: every call takes the bytes and returns a length or
//! an [`Error`]. No input panics. (One allocation per thread remains, outside this module:
//! aws-lc allocates a thread's error queue the first time one of its operations fails there,
//! for example the first forged packet a worker sees. `relay/tests/srtp_alloc.rs` checks the
//! rest, in Rust and in C.)
//!
//! MKIs are not supported (DTLS-SRTP does not use them), nor key derivation rates other than
//! 0, nor the NULL cipher profiles.
//!
//! # Calling order (a worker)
//!
//! 1. When a leg's DTLS completes: [`split_keying_material`], then
//!    `Ingress::new(Keys::new(&keys.remote)?)` and `Egress::new(Keys::new(&keys.local)?)`
//!    (and [`Egress::sibling`] for every other worker that forwards to the leg).
//! 2. RTP from the leg: route on the clear header first (SSRC, and whether anyone receives it),
//!    then [`Ingress::unprotect_rtp`] on the receive buffer. `Ok(n)`: the clear packet is
//!    `buf[..n]`; forward it. `Err(e)`: drop it and count `e` ([`Error::name`]); nothing moved.
//! 3. For each receiver of a clear packet: a plain leg sends the receive buffer itself; a WebRTC
//!    leg gets [`Egress::protect_rtp`] into its own preallocated slot (clear length plus
//!    [`Profile::rtp_overhead`]). [`Error::IndexReuse`] means that (SSRC, sequence number) was
//!    already sealed for this leg: drop and count it (never retry under the same keys).
//! 4. SRTCP from the leg: [`Ingress::unprotect_rtcp`], route the clear compound, and re-protect
//!    each copy with [`Egress::protect_rtcp`] (the leg's own SRTCP index, E flag set).
//! 5. A packet the relay originates for one receiver can be sealed in place
//!    ([`Egress::protect_rtp_in_place`], [`Egress::protect_rtcp_in_place`]).
//!
//! ```
//! use relay::srtp::{self, Egress, Error, Ingress, Keys, Profile};
//!
//! // What DTLS gave one leg (from the exporter; the relay is the DTLS server).
//! let profile = Profile::from_id(0x0007).unwrap(); // SRTP_AEAD_AES_128_GCM
//! let material = [7u8; 56];
//! let keys = srtp::split_keying_material(profile, &material)?;
//! let mut ingress = Ingress::new(Keys::new(&keys.remote)?);
//! let mut egress = Egress::new(Keys::new(&keys.local)?);
//!
//! // The browser's side of the same leg, to have a packet to receive.
//! let mut browser = Egress::new(Keys::new(&keys.remote)?);
//! let clear = [0x80, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42, b'h', b'i'];
//! let mut datagram = [0u8; 64];
//! let n = browser.protect_rtp(&clear, &mut datagram)?;
//!
//! // Ingress: unprotect in the receive buffer.
//! let n = ingress.unprotect_rtp(&mut datagram[..n])?;
//! assert_eq!(datagram[..n], clear);
//!
//! // Egress: one sealed copy per WebRTC receiver, into its own slot.
//! let mut slot = [0u8; 1500];
//! let sealed = egress.protect_rtp(&datagram[..n], &mut slot)?;
//! assert_eq!(sealed, n + profile.rtp_overhead());
//! // The same packet again would reuse its index: refused, and counted by the caller.
//! assert_eq!(egress.protect_rtp(&datagram[..n], &mut slot), Err(Error::IndexReuse));
//! # Ok::<(), Error>(())
//! ```
//!
//! # What it never does
//!
//! It never moves a ROC or a window for a packet that did not authenticate (RFC 3711 §3.3 updates
//! them in its last step, after authentication), never seals two packets under one (keys, SSRC,
//! index; RFC 7714 §8.4, §9.4), and never rewrites a header: the RTP header and payload a receiver decrypts are the
//! ones the publisher sent.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod egress;
mod ingress;
mod kdf;
mod keys;
mod profile;
mod replay;
mod table;

#[cfg(test)]
mod interop;
#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod vectors;

use core::fmt;

pub use egress::Egress;
pub use ingress::Ingress;
pub use keys::Keys;
pub use profile::{LegKeys, MasterKey, Profile, split_keying_material};
pub use replay::{REPLAY_WINDOW, Window};

use crate::packet::rtp::Ssrc;

/// SSRCs per leg and direction that [`Ingress::new`] and [`Egress::new`] make room for.
pub const MAX_SSRCS: usize = 32;

/// What was wrong with a packet or a key. Every variant is a reason to drop and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than its header and the profile's tag (and, for SRTCP, the E flag and index).
    TooShort,
    /// Not version 2, or an RTP CSRC list or header extension runs past the packet.
    BadHeader,
    /// The authentication tag does not match: forged, corrupted, or under other keys.
    AuthFailed,
    /// Ingress: this index was already received (a duplicate or a replay).
    Replayed,
    /// Ingress: the index is older than the replay window, so it cannot be told from a replay.
    TooOld,
    /// Egress: this leg already sealed a packet under this SSRC and index, or the index is older
    /// than the window of sent indices. Sealing it could reuse a GCM nonce or a CTR keystream.
    /// A publisher that restarts its sequence under the same SSRC causes this until its
    /// sequence passes the old one, or the leg is rekeyed.
    IndexReuse,
    /// A new SSRC, and the leg's table of SSRCs is full.
    SsrcTableFull,
    /// The rollover counter (2^32 wraps) or the SRTCP index (2^31 packets) is used up: the leg
    /// must be rekeyed.
    KeyExhausted,
    /// The output slot has no room for the packet and the profile's overhead.
    BufferTooSmall,
    /// A master key, master salt or keying material of the wrong length for the profile.
    BadKeyLength,
}

impl Error {
    /// Every variant, in declaration order (for counter arrays).
    pub const ALL: [Self; 10] = [
        Self::TooShort,
        Self::BadHeader,
        Self::AuthFailed,
        Self::Replayed,
        Self::TooOld,
        Self::IndexReuse,
        Self::SsrcTableFull,
        Self::KeyExhausted,
        Self::BufferTooSmall,
        Self::BadKeyLength,
    ];

    /// A stable snake_case name for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadHeader => "bad_header",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::IndexReuse => "index_reuse",
            Self::SsrcTableFull => "ssrc_table_full",
            Self::KeyExhausted => "key_exhausted",
            Self::BufferTooSmall => "buffer_too_small",
            Self::BadKeyLength => "bad_key_length",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooShort => "SRTP packet shorter than its header and tag",
            Self::BadHeader => "SRTP packet header is malformed",
            Self::AuthFailed => "SRTP authentication failed",
            Self::Replayed => "SRTP packet replayed",
            Self::TooOld => "SRTP packet older than the replay window",
            Self::IndexReuse => "SRTP index already used for this leg and SSRC",
            Self::SsrcTableFull => "SRTP SSRC table of the leg is full",
            Self::KeyExhausted => "SRTP keys used up: rekey the leg",
            Self::BufferTooSmall => "SRTP output buffer too small",
            Self::BadKeyLength => "SRTP key material of the wrong length",
        })
    }
}

impl std::error::Error for Error {}

/// What the SRTP layer reads from an RTP header.
struct Header {
    /// Fixed header, CSRCs and extension: what stays in the clear.
    len: usize,
    ssrc: Ssrc,
    seq: u16,
}

/// Reads the header of an RTP or SRTP packet (RFC 3550 §5.1, §5.3.1). Unlike
/// `packet::rtp::Packet::new_checked` it leaves padding alone: under SRTP the padding count
/// is encrypted, and the last byte is part of the tag.
fn rtp_header(buf: &[u8]) -> Result<Header, Error> {
    if buf.len() < RTP_FIXED {
        return Err(Error::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(Error::BadHeader);
    }
    let mut len = RTP_FIXED + usize::from(buf[0] & 0x0f) * 4;
    if buf[0] & 0x10 != 0 {
        let Some(ext) = buf.get(len..len + 4) else {
            return Err(Error::BadHeader);
        };
        len += 4 + usize::from(u16::from_be_bytes([ext[2], ext[3]])) * 4;
    }
    if len > buf.len() {
        return Err(Error::BadHeader);
    }
    Ok(Header {
        len,
        ssrc: Ssrc(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]])),
        seq: u16::from_be_bytes([buf[2], buf[3]]),
    })
}

const RTP_FIXED: usize = 12;
