//! Feedback messages: RTPFB and PSFB (RFC 4585 §6), with the FCI of the ones the router must
//! look into: generic NACK (RFC 4585 §6.2.1), PLI (§6.3.1), FIR (RFC 5104 §4.3.1), REMB
//! (draft-alvestrand-rmcat-remb §2.2) and transport-cc (draft-holmer-rmcat-transport-wide-cc-
//! extensions §3.1, only its media source field).
//!
//! ```text
//! header (FMT, PT=205/206) | SSRC of packet sender | SSRC of media source | FCI ...
//! FIR entry:  SSRC | seq nr (8) | reserved (24)
//! REMB FCI:   'R' 'E' 'M' 'B' | num SSRC (8) | BR exp (6) | BR mantissa (18) | SSRC ...
//! NACK entry: PID (16) | BLP (16)
//! ```

use crate::packet::rtcp::{Error, MediaSsrcs, Packet, Type, read_ssrc};
use crate::packet::rtp::Ssrc;

/// RTPFB FMT of a generic NACK (RFC 4585 §6.2.1).
pub const NACK: u8 = 1;
/// RTPFB FMT of transport-wide congestion control feedback (transport-cc).
pub const TWCC: u8 = 15;
/// PSFB FMT of a picture loss indication (RFC 4585 §6.3.1).
pub const PLI: u8 = 1;
/// PSFB FMT of a full intra request (RFC 5104 §4.3.1).
pub const FIR: u8 = 4;
/// PSFB FMT of application layer feedback (RFC 4585 §6.4), used by REMB.
pub const AFB: u8 = 15;

impl<'a> Packet<'a> {
    /// The media source SSRC field of an RTPFB or PSFB packet (the FCI may name others; see
    /// [`Packet::media_ssrcs`]). `None` for other types.
    pub fn media_source(&self) -> Option<Ssrc> {
        if !self.is_feedback() {
            return None;
        }
        read_ssrc(self.body(), 4)
    }

    /// The feedback control information of an RTPFB or PSFB packet. `None` for other types.
    pub fn fci(&self) -> Option<&'a [u8]> {
        if !self.is_feedback() {
            return None;
        }
        self.body().get(FCI_AT..)
    }

    /// The sequence numbers a generic NACK reports lost, in packet order (empty for anything
    /// but RTPFB FMT 1).
    pub fn nack_lost(&self) -> NackLost<'a> {
        let fci = match self.fci() {
            Some(fci) if self.packet_type() == Type::RTPFB && self.count_or_fmt() == NACK => fci,
            _ => &[],
        };
        NackLost {
            entries: fci.chunks_exact(4),
            pid: 0,
            mask: 0,
        }
    }

    /// The estimated maximum bitrate of a REMB message in bits per second (saturating), or
    /// `None` if this is not one.
    pub fn remb_bitrate(&self) -> Option<u64> {
        if self.packet_type() != Type::PSFB || self.count_or_fmt() != AFB {
            return None;
        }
        let fci = self.fci()?;
        if !fci.starts_with(REMB_ID) {
            return None;
        }
        let word = u32::from_be_bytes([*fci.get(4)?, *fci.get(5)?, *fci.get(6)?, *fci.get(7)?]);
        let exp = (word >> 18) & 0x3f;
        let mantissa = u64::from(word & 0x3_ffff);
        if mantissa.leading_zeros() < exp {
            return Some(u64::MAX);
        }
        Some(mantissa << exp)
    }

    fn is_feedback(&self) -> bool {
        matches!(self.packet_type(), Type::RTPFB | Type::PSFB)
    }
}

/// Iterator over the sequence numbers a generic NACK reports lost; see [`Packet::nack_lost`].
#[derive(Clone, Debug)]
pub struct NackLost<'a> {
    entries: core::slice::ChunksExact<'a, u8>,
    pid: u16,
    /// Bit 0: `pid` itself; bit i+1: BLP bit i, meaning `pid + i + 1`.
    mask: u32,
}

impl Iterator for NackLost<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        while self.mask == 0 {
            let e = self.entries.next()?;
            self.pid = u16::from_be_bytes([e[0], e[1]]);
            self.mask = u32::from(u16::from_be_bytes([e[2], e[3]])) << 1 | 1;
        }
        let bit = self.mask.trailing_zeros();
        self.mask &= self.mask - 1;
        // Sequence numbers wrap (RFC 3550 §5.1).
        Some(self.pid.wrapping_add(bit as u16))
    }
}

impl core::iter::FusedIterator for NackLost<'_> {}

/// Checks the feedback header and the FCI shapes the router reads.
pub(super) fn check(packet_type: Type, fmt: u8, body: &[u8]) -> Result<(), Error> {
    let Some(fci) = body.get(FCI_AT..) else {
        return Err(Error::Truncated);
    };
    let ok = match (packet_type, fmt) {
        // RFC 4585 §6.2.1: one or more 32-bit entries.
        (Type::RTPFB, NACK) => !fci.is_empty() && fci.len() % 4 == 0,
        // RFC 5104 §4.3.1.2: one or more 8-byte entries.
        (Type::PSFB, FIR) => !fci.is_empty() && fci.len() % FIR_ENTRY_LEN == 0,
        (Type::PSFB, AFB) if fci.starts_with(REMB_ID) => {
            remb_ssrc_list(fci).is_some_and(|(list, n)| list.len() >= n * 4)
        }
        _ => true,
    };
    if !ok {
        return Err(Error::BadFeedback);
    }
    Ok(())
}

/// The media SSRCs a PSFB packet names (see [`Packet::media_ssrcs`]).
pub(super) fn psfb_media_ssrcs(fmt: u8, body: &[u8]) -> MediaSsrcs<'_> {
    let fci = body.get(FCI_AT..).unwrap_or(&[]);
    if fmt == FIR {
        return MediaSsrcs::new(fci, FIR_ENTRY_LEN, fci.len() / FIR_ENTRY_LEN);
    }
    if fmt == AFB
        && fci.starts_with(REMB_ID)
        && let Some((list, n)) = remb_ssrc_list(fci)
    {
        return MediaSsrcs::new(list, 4, n);
    }
    MediaSsrcs::new(body.get(4..).unwrap_or(&[]), 0, 1)
}

/// Splits a REMB FCI into its SSRC list and the count announced for it.
fn remb_ssrc_list(fci: &[u8]) -> Option<(&[u8], usize)> {
    let n = usize::from(*fci.get(4)?);
    Some((fci.get(8..)?, n))
}

/// Sender SSRC and media source SSRC come before the FCI.
const FCI_AT: usize = 8;
const FIR_ENTRY_LEN: usize = 8;
const REMB_ID: &[u8] = b"REMB";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::rtcp::compound;

    fn one(b: &[u8]) -> Packet<'_> {
        compound(b).next().unwrap().unwrap()
    }

    #[test]
    fn generic_nack() {
        // From 1 about 2: PID 0xfffe with BLP bits 0 and 2 (0xffff, 0x0001), PID 10 alone.
        let b = [
            0x81, 0xcd, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xfe, 0x00, 0x05, 0x00, 0x0a,
            0x00, 0x00,
        ];
        let p = one(&b);
        assert_eq!(p.packet_type(), Type::RTPFB);
        assert_eq!(p.count_or_fmt(), NACK);
        assert_eq!(p.sender_ssrc(), Some(Ssrc(1)));
        assert_eq!(p.media_source(), Some(Ssrc(2)));
        assert!(p.media_ssrcs().eq([Ssrc(2)]));
        assert!(p.nack_lost().eq([0xfffe, 0xffff, 0x0001, 10]));
        assert_eq!(p.remb_bitrate(), None);
        // Padding (count 2) leaves half an entry.
        let half = [
            0xa1, 0xcd, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xfe, 0x00, 0x02,
        ];
        assert_eq!(compound(&half).next(), Some(Err(Error::BadFeedback)));
    }

    #[test]
    fn nack_without_entries_is_rejected() {
        let b = [0x81, 0xcd, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(compound(&b).next(), Some(Err(Error::BadFeedback)));
    }

    #[test]
    fn transport_cc() {
        // FMT 15 from 1 about 3: base seq 5, status count 1, reference time, fb count, chunk.
        let b = [
            0x8f, 0xcd, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 3, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00,
            0x01, 0x00, 0x20, 0x01, 0x00, 0x00,
        ];
        let p = one(&b);
        assert_eq!(p.count_or_fmt(), TWCC);
        assert!(p.media_ssrcs().eq([Ssrc(3)]));
        assert_eq!(p.nack_lost().count(), 0);
    }

    #[test]
    fn pli() {
        let b = [0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 4];
        let p = one(&b);
        assert_eq!(p.count_or_fmt(), PLI);
        assert_eq!(p.fci(), Some(&[][..]));
        assert!(p.media_ssrcs().eq([Ssrc(4)]));
        // Without a media source field.
        let short = [0x81, 0xce, 0x00, 0x01, 0, 0, 0, 1];
        assert_eq!(compound(&short).next(), Some(Err(Error::Truncated)));
    }

    #[test]
    fn fir_names_its_entries() {
        // Media source field 0, entries for 5 (seq 1) and 6 (seq 2).
        let b = [
            0x84, 0xce, 0x00, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 6, 2,
            0, 0, 0,
        ];
        let p = one(&b);
        assert_eq!(p.count_or_fmt(), FIR);
        assert!(p.media_ssrcs().eq([Ssrc(5), Ssrc(6)]));
        // Half an entry.
        let c = [0x84, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(compound(&c).next(), Some(Err(Error::BadFeedback)));
        // No entry.
        let none = [0x84, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(compound(&none).next(), Some(Err(Error::BadFeedback)));
    }

    #[test]
    fn remb_names_its_list() {
        // 2 SSRCs (7, 8), exp 3, mantissa 0x3d090 = 250000: 2 Mbit/s.
        let b = [
            0x8f, 0xce, 0x00, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0x02, 0x0f,
            0xd0, 0x90, 0, 0, 0, 7, 0, 0, 0, 8,
        ];
        let p = one(&b);
        assert_eq!(p.count_or_fmt(), AFB);
        assert_eq!(p.remb_bitrate(), Some(2_000_000));
        assert!(p.media_ssrcs().eq([Ssrc(7), Ssrc(8)]));
        // Count 3 with 2 listed.
        let mut c = b;
        c[16] = 3;
        assert_eq!(compound(&c).next(), Some(Err(Error::BadFeedback)));
        // Saturating bitrate: exp 63.
        let mut d = b;
        d[17] = 0xfc | (d[17] & 0x03);
        assert_eq!(one(&d).remb_bitrate(), Some(u64::MAX));
    }

    #[test]
    fn other_afb_uses_media_source() {
        let b = [
            0x8f, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 9, b'A', b'B', b'C', b'D',
        ];
        let p = one(&b);
        assert_eq!(p.remb_bitrate(), None);
        assert!(p.media_ssrcs().eq([Ssrc(9)]));
        // "REMB" cut short.
        let c = [
            0x8f, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 9, b'R', b'E', b'M', b'B',
        ];
        assert_eq!(compound(&c).next(), Some(Err(Error::BadFeedback)));
    }

    #[test]
    fn not_feedback() {
        let rr = [0x80, 0xc9, 0x00, 0x01, 0, 0, 0, 1];
        let p = one(&rr);
        assert_eq!(p.media_source(), None);
        assert_eq!(p.fci(), None);
        assert_eq!(p.remb_bitrate(), None);
        assert_eq!(p.nack_lost().count(), 0);
    }
}
