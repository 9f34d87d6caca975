//! RTCP compound packets: views of each sub-packet and the routing summary of a datagram.
//!
//! Read first: RFC 3550 §6.4-6.6 and Appendix A.2 (SR, RR, SDES, BYE, APP and the compound
//! rules), RFC 4585 §6 (RTPFB/PSFB feedback), RFC 3711 §3.4 (SRTCP).
//!
//! Every sub-packet starts with the same 4-byte header:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P| RC/FMT  |      PT       |  length (32-bit words - 1)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`compound`] walks the sub-packets of one datagram; [`classify`] (in `route.rs`) tells the
//! router where the whole datagram goes:
//!
//! - a compound holding an SR is sender information and follows the sender's media
//!   ([`Route::Sender`]); if it also names media SSRCs (the SR's report blocks, or RTPFB/PSFB
//!   packets in the same compound) it is *also* feedback to their publishers
//!   (`also_feedback`), so the caller does both;
//! - otherwise a compound holding an RR, RTPFB or PSFB is receiver feedback
//!   ([`Route::Feedback`]) and goes to the publishers of the SSRCs it names: report-block SSRCs,
//!   the media source of NACK, transport-cc, PLI and other FMTs, the FCI entries of FIR, the
//!   SSRC list of REMB;
//! - otherwise (SDES, BYE, APP, XR only) it follows the sender's media;
//! - SRTCP whose E flag is set is [`Route::Encrypted`]: only its sender SSRC is known.
//!
//! See [`classify`] for the exact rules and the SRTCP trailer heuristic.
//!
//! Checks, per sub-packet, in this order: 4-byte header present, version 2, the length field
//! fits in what is left of the datagram, padding only on the last sub-packet with a non-zero
//! count that fits (RFC 3550 A.2), then the fixed part of the known types (sender SSRC, sender
//! info, report blocks, feedback header and FCI) fits. Unknown types pass with the header checks
//! only. Nothing here decrypts, allocates or copies.

mod fb;
mod report;
mod route;

use core::fmt;

use crate::packet::rtp::Ssrc;

pub use fb::{AFB, FIR, NACK, NackLost, PLI, TWCC};
pub use report::{ReportBlock, ReportBlocks, SenderInfo};
pub use route::{Feedback, FeedbackSsrcs, Route, classify};

/// An RTCP packet type (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611). Open: unknown values pass
/// through and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Type(pub u8);

impl Type {
    /// Sender report (RFC 3550 §6.4.1).
    pub const SR: Self = Self(200);
    /// Receiver report (RFC 3550 §6.4.2).
    pub const RR: Self = Self(201);
    /// Source description (RFC 3550 §6.5).
    pub const SDES: Self = Self(202);
    /// Goodbye (RFC 3550 §6.6).
    pub const BYE: Self = Self(203);
    /// Application-defined (RFC 3550 §6.7).
    pub const APP: Self = Self(204);
    /// Transport-layer feedback (RFC 4585 §6.2).
    pub const RTPFB: Self = Self(205);
    /// Payload-specific feedback (RFC 4585 §6.3).
    pub const PSFB: Self = Self(206);
    /// Extended report (RFC 3611).
    pub const XR: Self = Self(207);
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::SR => "SR",
            Self::RR => "RR",
            Self::SDES => "SDES",
            Self::BYE => "BYE",
            Self::APP => "APP",
            Self::RTPFB => "RTPFB",
            Self::PSFB => "PSFB",
            Self::XR => "XR",
            Self(other) => return write!(f, "Type({other:#04x})"),
        };
        f.write_str(name)
    }
}

/// Why a datagram is not a valid RTCP compound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A sub-packet is shorter than its 4-byte header or than the fixed part of its type.
    Truncated,
    /// A sub-packet's version field is not 2.
    BadVersion,
    /// A sub-packet's length field runs past the end of the datagram.
    BadLength,
    /// The P bit is set on a sub-packet that is not the last, or its padding count is zero or
    /// larger than the packet body.
    BadPadding,
    /// The report count (SR/RR) or SSRC count (BYE, SDES) announces more than the packet holds.
    BadCount,
    /// A feedback message's FCI does not have the shape its format requires (FIR entries,
    /// REMB SSRC list).
    BadFeedback,
    /// The first sub-packet names no sender SSRC (for example an SDES with no chunk), so the
    /// datagram cannot be routed.
    MissingSsrc,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "RTCP packet shorter than its fixed part",
            Self::BadVersion => "RTCP version is not 2",
            Self::BadLength => "RTCP length field runs past the datagram",
            Self::BadPadding => "RTCP padding misplaced, zero or too large",
            Self::BadCount => "RTCP report or SSRC count runs past the packet",
            Self::BadFeedback => "RTCP feedback FCI is malformed",
            Self::MissingSsrc => "RTCP compound names no sender SSRC",
        })
    }
}

impl std::error::Error for Error {}

/// Walks the sub-packets of one RTCP datagram. Yields one `Err` at the first malformed
/// sub-packet and then stops.
pub fn compound(buf: &[u8]) -> Compound<'_> {
    Compound { rest: buf }
}

/// Iterator over the sub-packets of a compound RTCP datagram; see [`compound`].
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Packet::parse(self.rest) {
            Ok(packet) => {
                self.rest = &self.rest[packet.bytes.len()..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for Compound<'_> {}

/// A checked view of one RTCP sub-packet. Getters never panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The whole sub-packet as its length field gives it, padding included.
    bytes: &'a [u8],
    padding_len: usize,
}

impl<'a> Packet<'a> {
    /// Checks the first sub-packet of `buf` (header, padding, fixed part of its type). `buf` is
    /// what is left of the datagram, so padding is legal only when the sub-packet ends it.
    fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let [b0, _, l0, l1, ..] = *buf else {
            return Err(Error::Truncated);
        };
        if b0 >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let size = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let Some(bytes) = buf.get(..size) else {
            return Err(Error::BadLength);
        };
        let mut padding_len = 0;
        if b0 & P_BIT != 0 {
            // RFC 3550 A.2: "padding bit (P) should be zero for all but the last packet".
            padding_len = usize::from(bytes[size - 1]);
            if size != buf.len() || padding_len == 0 || padding_len > size - HEADER_LEN {
                return Err(Error::BadPadding);
            }
        }
        let packet = Self { bytes, padding_len };
        packet.check_type()?;
        Ok(packet)
    }

    /// The packet type.
    pub fn packet_type(&self) -> Type {
        Type(self.bytes[1])
    }

    /// The 5-bit field after the P bit: report count (SR, RR), source count (SDES, BYE),
    /// subtype (APP) or feedback message type FMT (RTPFB, PSFB).
    pub fn count_or_fmt(&self) -> u8 {
        self.bytes[0] & 0x1f
    }

    /// The P bit.
    pub fn padding(&self) -> bool {
        self.bytes[0] & P_BIT != 0
    }

    /// Padding bytes at the end, the count byte included (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The whole sub-packet, header and padding included, exactly as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes after the 4-byte header, without padding.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - self.padding_len]
    }

    /// The SSRC of the packet's sender: the first word of the body for SR, RR, APP, XR, RTPFB
    /// and PSFB, and the first chunk's or listed SSRC for SDES and BYE (when the count is not
    /// zero). `None` for unknown types.
    pub fn sender_ssrc(&self) -> Option<Ssrc> {
        match self.packet_type() {
            Type::SR | Type::RR | Type::APP | Type::XR | Type::RTPFB | Type::PSFB => {}
            Type::SDES | Type::BYE if self.count_or_fmt() > 0 => {}
            _ => return None,
        }
        read_ssrc(self.body(), 0)
    }

    /// The media SSRCs this packet names, that is whose publishers it is feedback for:
    /// - SR, RR: the SSRC of each report block;
    /// - RTPFB (generic NACK, transport-cc and any other FMT): the media source SSRC;
    /// - PSFB FIR (FMT 4): the SSRC of each FCI entry (RFC 5104 §4.3.1; its media source field
    ///   is unused);
    /// - PSFB REMB (FMT 15 with the "REMB" identifier): its SSRC list;
    /// - PSFB PLI and any other FMT: the media source SSRC;
    /// - everything else: none.
    pub fn media_ssrcs(&self) -> MediaSsrcs<'a> {
        let body = self.body();
        match self.packet_type() {
            Type::SR | Type::RR => self.report_block_ssrcs(),
            Type::RTPFB => MediaSsrcs::new(body.get(4..).unwrap_or(&[]), 0, 1),
            Type::PSFB => fb::psfb_media_ssrcs(self.count_or_fmt(), body),
            _ => MediaSsrcs::EMPTY,
        }
    }

    /// Checks that the fixed part of a known type fits in the body.
    fn check_type(&self) -> Result<(), Error> {
        let body = self.body();
        let count = usize::from(self.count_or_fmt());
        match self.packet_type() {
            Type::SR | Type::RR => report::check(self.packet_type(), count, body),
            Type::SDES | Type::BYE if body.len() < count.min(1) * 4 => Err(Error::BadCount),
            // BYE lists `count` SSRCs (RFC 3550 §6.6); SDES chunks are not walked here.
            Type::BYE if body.len() < count * 4 => Err(Error::BadCount),
            Type::APP if body.len() < 8 => Err(Error::Truncated),
            Type::XR if body.len() < 4 => Err(Error::Truncated),
            Type::RTPFB | Type::PSFB => fb::check(self.packet_type(), self.count_or_fmt(), body),
            _ => Ok(()),
        }
    }
}

/// Iterator over the media SSRCs an RTCP packet names; see [`Packet::media_ssrcs`].
#[derive(Clone, Debug)]
pub struct MediaSsrcs<'a> {
    /// Starts at the next SSRC to yield.
    data: &'a [u8],
    /// Distance from one SSRC to the next (0 when only one is left to yield).
    stride: usize,
    remaining: usize,
}

impl<'a> MediaSsrcs<'a> {
    const EMPTY: Self = Self {
        data: &[],
        stride: 0,
        remaining: 0,
    };

    fn new(data: &'a [u8], stride: usize, remaining: usize) -> Self {
        Self {
            data,
            stride,
            remaining,
        }
    }
}

impl Iterator for MediaSsrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        if self.remaining == 0 {
            return None;
        }
        let Some(ssrc) = read_ssrc(self.data, 0) else {
            self.remaining = 0;
            return None;
        };
        self.remaining -= 1;
        self.data = self.data.get(self.stride..).unwrap_or(&[]);
        Some(ssrc)
    }
}

impl core::iter::FusedIterator for MediaSsrcs<'_> {}

/// Reads a big-endian SSRC at `at`, if it fits.
fn read_ssrc(b: &[u8], at: usize) -> Option<Ssrc> {
    read_u32(b, at).map(Ssrc)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

const P_BIT: u8 = 0x20;
const HEADER_LEN: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    // RR from 0x11111111 with one report block about 0x22222222, then SDES with CNAME "ab".
    pub(super) const RR_SDES: [u8; 48] = [
        0x81, 0xc9, 0x00, 0x07, 0x11, 0x11, 0x11, 0x11, // RR header, sender
        0x22, 0x22, 0x22, 0x22, 0x01, 0x00, 0x00, 0x02, // block: ssrc, fraction, lost
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x20, // highest seq, jitter
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LSR, DLSR
        0x81, 0xca, 0x00, 0x03, 0x11, 0x11, 0x11, 0x11, // SDES header, chunk SSRC
        0x01, 0x02, 0x61, 0x62, 0x00, 0x00, 0x00, 0x00, // CNAME "ab", end of items
    ];

    #[test]
    fn walks_compound() {
        let mut it = compound(&RR_SDES);
        let rr = it.next().unwrap().unwrap();
        assert_eq!(rr.packet_type(), Type::RR);
        assert_eq!(rr.count_or_fmt(), 1);
        assert!(!rr.padding());
        assert_eq!(rr.sender_ssrc(), Some(Ssrc(0x1111_1111)));
        assert!(rr.media_ssrcs().eq([Ssrc(0x2222_2222)]));
        assert_eq!(rr.as_bytes().len(), 32);
        assert_eq!(rr.body().len(), 28);
        let sdes = it.next().unwrap().unwrap();
        assert_eq!(sdes.packet_type(), Type::SDES);
        assert_eq!(sdes.sender_ssrc(), Some(Ssrc(0x1111_1111)));
        assert_eq!(sdes.media_ssrcs().count(), 0);
        assert!(it.next().is_none());
    }

    #[test]
    fn padding_on_last_packet() {
        // BYE for 0x01020304 with 4 bytes of padding.
        let b = [
            0xa1, 0xcb, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x04,
        ];
        let bye = compound(&b).next().unwrap().unwrap();
        assert!(bye.padding());
        assert_eq!(bye.padding_len(), 4);
        assert_eq!(bye.body(), [0x01, 0x02, 0x03, 0x04]);
        assert_eq!(bye.sender_ssrc(), Some(Ssrc(0x0102_0304)));
        // The same packet followed by another: padding not on the last.
        let mut two = [0u8; 20];
        two[..12].copy_from_slice(&b);
        two[12..].copy_from_slice(&[0x81, 0xcb, 0x00, 0x01, 0, 0, 0, 9]);
        assert_eq!(compound(&two).next(), Some(Err(Error::BadPadding)));
        // Zero count, and a count past the body.
        let mut z = b;
        z[11] = 0;
        assert_eq!(compound(&z).next(), Some(Err(Error::BadPadding)));
        z[11] = 9;
        assert_eq!(compound(&z).next(), Some(Err(Error::BadPadding)));
        // Padding that takes the whole body leaves a BYE too short for its count.
        z[11] = 8;
        assert_eq!(compound(&z).next(), Some(Err(Error::BadCount)));
    }

    #[test]
    fn header_errors() {
        assert_eq!(compound(&[]).next(), None);
        assert_eq!(
            compound(&[0x80, 0xc8, 0x00]).next(),
            Some(Err(Error::Truncated))
        );
        let mut b = RR_SDES;
        b[0] = 0x41;
        assert_eq!(compound(&b).next(), Some(Err(Error::BadVersion)));
        // Length field one word too long.
        let mut b = RR_SDES;
        b[35] = 0x04;
        let mut it = compound(&b);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next(), Some(Err(Error::BadLength)));
        assert_eq!(it.next(), None);
        // Trailing bytes that are not a header.
        let mut c = [0u8; 52];
        c[..48].copy_from_slice(&RR_SDES);
        assert_eq!(compound(&c).nth(2), Some(Err(Error::BadVersion)));
        assert_eq!(compound(&c[..49]).nth(2), Some(Err(Error::Truncated)));
    }

    #[test]
    fn type_fixed_parts() {
        // RR claiming two blocks with room for one.
        let mut b = RR_SDES;
        b[0] = 0x82;
        assert_eq!(compound(&b).next(), Some(Err(Error::BadCount)));
        // RR with no sender SSRC.
        assert_eq!(
            compound(&[0x80, 0xc9, 0, 0]).next(),
            Some(Err(Error::Truncated))
        );
        // SDES and BYE with count 0 are fine and name no sender.
        let p = compound(&[0x80, 0xca, 0, 0]).next().unwrap().unwrap();
        assert_eq!(p.sender_ssrc(), None);
        let p = compound(&[0x80, 0xcb, 0, 0]).next().unwrap().unwrap();
        assert_eq!(p.sender_ssrc(), None);
        // BYE claiming two SSRCs with one.
        assert_eq!(
            compound(&[0x82, 0xcb, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(Error::BadCount))
        );
        // SDES claiming a chunk with no room for it.
        assert_eq!(
            compound(&[0x81, 0xca, 0, 0]).next(),
            Some(Err(Error::BadCount))
        );
        // APP needs SSRC and name.
        assert_eq!(
            compound(&[0x80, 0xcc, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(Error::Truncated))
        );
        assert_eq!(
            compound(&[0x80, 0xcf, 0, 0]).next(),
            Some(Err(Error::Truncated))
        );
        // Unknown types pass with header checks only.
        let p = compound(&[0x80, 0xc3, 0, 0]).next().unwrap().unwrap();
        assert_eq!(p.packet_type(), Type(195));
        assert_eq!(p.sender_ssrc(), None);
        assert_eq!(p.media_ssrcs().count(), 0);
    }

    #[test]
    fn app_and_xr() {
        let app = [
            0x80, 0xcc, 0, 3, 0, 0, 0, 7, b'n', b'a', b'm', b'e', 1, 2, 3, 4,
        ];
        let p = compound(&app).next().unwrap().unwrap();
        assert_eq!(p.sender_ssrc(), Some(Ssrc(7)));
        assert_eq!(p.media_ssrcs().count(), 0);
        let xr = [0x80, 0xcf, 0, 1, 0, 0, 0, 8];
        let p = compound(&xr).next().unwrap().unwrap();
        assert_eq!(p.sender_ssrc(), Some(Ssrc(8)));
    }

    #[test]
    fn type_debug_and_error_display() {
        assert_eq!(format!("{:?}", Type::SR), "SR");
        assert_eq!(format!("{:?}", Type::PSFB), "PSFB");
        assert_eq!(format!("{:?}", Type(195)), "Type(0xc3)");
        assert_eq!(
            Error::BadLength.to_string(),
            "RTCP length field runs past the datagram"
        );
    }
}
