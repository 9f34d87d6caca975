//! RTP packet view (RFC 3550 §5.1, §5.3.1; RFC 8285 for the extension block).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers             |
//! |                             ....                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   profile-defined (X=1)       |           length              |
//! |                  header extension (length * 4)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   payload ...   | padding ... | padding count |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! With SRTP only the payload is encrypted, so every getter here works on SRTP too (the
//! authentication tag then sits at the end of what this view calls the payload).

use core::fmt;

/// A synchronization source identifier (RFC 3550 §3). CSRCs use the same type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a buffer is not a valid RTP packet, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the 12-byte fixed header.
    Truncated,
    /// The version field is not 2.
    BadVersion,
    /// The CSRC list the CC field announces runs past the end of the buffer.
    BadCsrcCount,
    /// The extension block's header or its announced length runs past the end of the buffer.
    BadExtensionLength,
    /// The P bit is set but the padding count is zero or larger than what follows the header.
    BadPadding,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "RTP packet shorter than its fixed header",
            Self::BadVersion => "RTP version is not 2",
            Self::BadCsrcCount => "RTP CSRC list runs past the packet",
            Self::BadExtensionLength => "RTP header extension runs past the packet",
            Self::BadPadding => "RTP padding count is zero or too large",
        })
    }
}

impl std::error::Error for Error {}

/// A checked view of an RTP packet. Build it with [`Packet::new_checked`]; after that no
/// getter panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    // Cached by `new_checked`, so getters need no arithmetic on untrusted fields.
    header_len: usize,
    padding_len: usize,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `buffer` as RFC 3550 §5.1 and Appendix A.1 say, in their order: fixed header
    /// length, version, CSRC count, extension length (RFC 3550 §5.3.1), padding.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let buf = buffer.as_ref();
        if buf.len() < field::FIXED_LEN {
            return Err(Error::Truncated);
        }
        if buf[0] >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let mut header_len = field::FIXED_LEN + usize::from(buf[0] & 0x0f) * 4;
        if header_len > buf.len() {
            return Err(Error::BadCsrcCount);
        }
        if buf[0] & field::X_BIT != 0 {
            // RFC 3550 §5.3.1: a 4-byte header, then `length` 32-bit words.
            let Some(ext) = buf.get(header_len..header_len + 4) else {
                return Err(Error::BadExtensionLength);
            };
            header_len += 4 + usize::from(u16::from_be_bytes([ext[2], ext[3]])) * 4;
            if header_len > buf.len() {
                return Err(Error::BadExtensionLength);
            }
        }
        let mut padding_len = 0;
        if buf[0] & field::P_BIT != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included. A packet of
            // padding only (no payload) is legal and used for bandwidth probing.
            padding_len = usize::from(buf[buf.len() - 1]);
            if padding_len == 0 || header_len + padding_len > buf.len() {
                return Err(Error::BadPadding);
            }
        }
        Ok(Self {
            buffer,
            header_len,
            padding_len,
        })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole packet, header, payload and padding, exactly as received.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (always 2 once checked).
    pub fn version(&self) -> u8 {
        self.as_bytes()[0] >> 6
    }

    /// The P bit: the packet ends with padding.
    pub fn padding(&self) -> bool {
        self.as_bytes()[0] & field::P_BIT != 0
    }

    /// The X bit: a header extension follows the CSRC list.
    pub fn has_extension(&self) -> bool {
        self.as_bytes()[0] & field::X_BIT != 0
    }

    /// The CC field: how many CSRCs follow the fixed header.
    pub fn csrc_count(&self) -> u8 {
        self.as_bytes()[0] & 0x0f
    }

    /// The M bit.
    pub fn marker(&self) -> bool {
        self.as_bytes()[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.as_bytes()[1] & 0x7f
    }

    /// The 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        let b = self.as_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The 32-bit media timestamp.
    pub fn timestamp(&self) -> u32 {
        read_u32(self.as_bytes(), field::TIMESTAMP)
    }

    /// The synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(read_u32(self.as_bytes(), field::SSRC))
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = Ssrc> + '_ {
        let end = field::FIXED_LEN + usize::from(self.csrc_count()) * 4;
        self.as_bytes()[field::FIXED_LEN..end]
            .chunks_exact(4)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// The header extension as (profile-defined 16 bits, data without its 4-byte header), when
    /// the X bit is set. RFC 8285 profiles are 0xBEDE (one-byte elements) and 0x100x
    /// (two-byte elements).
    pub fn extension(&self) -> Option<(u16, &[u8])> {
        if !self.has_extension() {
            return None;
        }
        let start = field::FIXED_LEN + usize::from(self.csrc_count()) * 4;
        let b = self.as_bytes();
        let profile = u16::from_be_bytes([b[start], b[start + 1]]);
        Some((profile, &b[start + 4..self.header_len]))
    }

    /// The header length in bytes: fixed header, CSRCs and the extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// How many bytes of padding end the packet, the count byte included (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The payload, without header and padding. Borrows from the original buffer.
    pub fn payload(&self) -> &[u8] {
        let b = self.as_bytes();
        &b[self.header_len..b.len() - self.padding_len]
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

mod field {
    pub(super) const P_BIT: u8 = 0x20;
    pub(super) const X_BIT: u8 = 0x10;
    pub(super) const TIMESTAMP: usize = 4;
    pub(super) const SSRC: usize = 8;
    pub(super) const FIXED_LEN: usize = 12;
}

#[cfg(test)]
mod tests {
    use super::*;

    // V=2, PT=111, seq 0x1234, ts 0xdeadbeef, SSRC 0x11223344, payload "abcd".
    const SIMPLE: [u8; 16] = [
        0x80, 0x6f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x11, 0x22, 0x33, 0x44, 0x61, 0x62, 0x63,
        0x64,
    ];

    // V=2, P, X, CC=2, M, PT=96, 2 CSRCs, one-byte extension (1 word), payload 2 bytes,
    // padding 2 bytes.
    const FULL: [u8; 40] = [
        0xb2, 0xe0, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0xca, 0xfe, 0xba, 0xbe, // fixed
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // CSRCs
        0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, // extension
        0x01, 0x02, // payload
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // padding, count 10
    ];

    #[test]
    fn reads_simple_packet() {
        let p = Packet::new_checked(&SIMPLE[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert!(!p.has_extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 111);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), Ssrc(0x1122_3344));
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.extension(), None);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.padding_len(), 0);
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(p.as_bytes(), &SIMPLE[..]);
    }

    #[test]
    fn reads_every_field() {
        let p = Packet::new_checked(FULL).unwrap();
        assert!(p.padding());
        assert!(p.has_extension());
        assert_eq!(p.csrc_count(), 2);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 7);
        assert_eq!(p.timestamp(), 16);
        assert_eq!(p.ssrc(), Ssrc(0xcafe_babe));
        assert!(p.csrcs().eq([Ssrc(1), Ssrc(2)]));
        assert_eq!(p.extension(), Some((0xbede, &[0x10, 0xaa, 0x00, 0x00][..])));
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.padding_len(), 10);
        assert_eq!(p.payload(), [0x01, 0x02]);
        assert_eq!(p.into_inner(), FULL);
    }

    #[test]
    fn empty_extension_and_payload() {
        // X with length 0, no payload.
        let b = [
            0x90, 0x60, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x00, 0x00, 0x00,
        ];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.extension(), Some((0x1000, &[][..])));
        assert!(p.payload().is_empty());
        assert_eq!(p.ssrc(), Ssrc(5));
    }

    #[test]
    fn padding_only_packet() {
        // P set, no payload: the padding fills everything after the header (libwebrtc probes).
        let b = [0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.padding_len(), 4);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&[][..]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&SIMPLE[..11]), Err(Error::Truncated));
        assert!(Packet::new_checked(&SIMPLE[..12]).is_ok());
    }

    #[test]
    fn bad_version() {
        for first in [0x00, 0x40, 0xc0] {
            let mut b = SIMPLE;
            b[0] = first;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion));
        }
    }

    #[test]
    fn bad_csrc_count() {
        // CC=2 needs 20 bytes, only 16.
        let mut b = SIMPLE;
        b[0] = 0x82;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadCsrcCount));
        b[0] = 0x81;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.csrcs().eq([Ssrc(0x6162_6364)]));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn bad_extension_length() {
        // X set, but no room for the 4-byte extension header.
        let mut b = SIMPLE;
        b[0] = 0x90;
        b[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadExtensionLength));
        assert_eq!(
            Packet::new_checked(&b[..14]),
            Err(Error::BadExtensionLength)
        );
        // Declared length 0 fits.
        b[14..16].copy_from_slice(&[0, 0]);
        assert!(Packet::new_checked(&b[..]).is_ok());
        // CSRC list plus extension header past the end.
        let mut c = FULL;
        c[22..24].copy_from_slice(&[0x00, 0x05]);
        assert_eq!(Packet::new_checked(&c[..]), Err(Error::BadExtensionLength));
    }

    #[test]
    fn bad_padding() {
        let mut b = SIMPLE;
        b[0] = 0xa0;
        b[15] = 0;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadPadding));
        b[15] = 5;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadPadding));
        b[15] = 4;
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
        // The padding count may not reach back into the extension.
        let mut c = FULL;
        c[39] = 13;
        assert_eq!(Packet::new_checked(&c[..]), Err(Error::BadPadding));
        c[39] = 12;
        assert!(Packet::new_checked(&c[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            Error::BadPadding.to_string(),
            "RTP padding count is zero or too large"
        );
        assert_eq!(Ssrc(42).to_string(), "42");
    }
}
