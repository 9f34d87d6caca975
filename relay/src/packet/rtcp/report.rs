//! Sender and receiver reports (RFC 3550 §6.4).
//!
//! ```text
//! SR: header | SSRC of sender | NTP ts (8) | RTP ts | packet count | octet count | blocks ...
//! RR: header | SSRC of sender | blocks ...
//! block (24 bytes):
//!   SSRC_n | fraction lost (8) cumulative lost (24) | ext. highest seq | jitter | LSR | DLSR
//! ```
//!
//! Profile-specific extensions may follow the blocks (RFC 3550 §6.4.1); they are left alone.

use crate::packet::rtcp::{Error, MediaSsrcs, Packet, Type, read_u32};
use crate::packet::rtp::Ssrc;

/// The sender information block of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point seconds since 1900.
    pub ntp_timestamp: u64,
    /// The same instant in RTP timestamp units.
    pub rtp_timestamp: u32,
    /// RTP data packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1), a view over its 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock<'a> {
    bytes: &'a [u8; BLOCK_LEN],
}

impl ReportBlock<'_> {
    /// The media source this block reports on.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(self.word(0))
    }

    /// Fraction of packets lost since the last report, in 1/256 units.
    pub fn fraction_lost(&self) -> u8 {
        self.bytes[4]
    }

    /// Cumulative number of packets lost (signed 24 bits: duplicates can make it negative).
    pub fn cumulative_lost(&self) -> i32 {
        // Shift the 24-bit value to the top and back to sign-extend it.
        (self.word(4) << 8) as i32 >> 8
    }

    /// Extended highest sequence number received.
    pub fn highest_sequence(&self) -> u32 {
        self.word(8)
    }

    /// Interarrival jitter, in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.word(12)
    }

    /// Middle 32 bits of the NTP timestamp of the last SR received from this source.
    pub fn last_sr(&self) -> u32 {
        self.word(16)
    }

    /// Delay since that SR, in 1/65536 seconds.
    pub fn delay_since_last_sr(&self) -> u32 {
        self.word(20)
    }

    fn word(&self, at: usize) -> u32 {
        let b = self.bytes;
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
}

/// Iterator over the report blocks of an SR or RR; see [`Packet::report_blocks`].
#[derive(Clone, Debug)]
pub struct ReportBlocks<'a> {
    blocks: core::slice::ChunksExact<'a, u8>,
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock<'a>;

    fn next(&mut self) -> Option<ReportBlock<'a>> {
        let bytes = self.blocks.next()?.try_into().ok()?;
        Some(ReportBlock { bytes })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.blocks.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

impl<'a> Packet<'a> {
    /// The sender information of an SR; `None` for other types.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != Type::SR {
            return None;
        }
        let b = self.body();
        let ntp_hi = read_u32(b, 4)?;
        let ntp_lo = read_u32(b, 8)?;
        Some(SenderInfo {
            ntp_timestamp: u64::from(ntp_hi) << 32 | u64::from(ntp_lo),
            rtp_timestamp: read_u32(b, 12)?,
            packet_count: read_u32(b, 16)?,
            octet_count: read_u32(b, 20)?,
        })
    }

    /// The report blocks of an SR or RR (empty for other types).
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks {
            blocks: self.blocks_bytes().chunks_exact(BLOCK_LEN),
        }
    }

    pub(super) fn report_block_ssrcs(&self) -> MediaSsrcs<'a> {
        let blocks = self.blocks_bytes();
        MediaSsrcs::new(blocks, BLOCK_LEN, blocks.len() / BLOCK_LEN)
    }

    /// The bytes of the report blocks the count announces, as checked by [`check`].
    fn blocks_bytes(&self) -> &'a [u8] {
        let start = match self.packet_type() {
            Type::SR => SR_BLOCKS_AT,
            Type::RR => RR_BLOCKS_AT,
            _ => return &[],
        };
        let len = usize::from(self.count_or_fmt()) * BLOCK_LEN;
        self.body().get(start..start + len).unwrap_or(&[])
    }
}

/// Checks that an SR or RR body holds the sender SSRC, the sender info (SR) and `count` blocks.
pub(super) fn check(packet_type: Type, count: usize, body: &[u8]) -> Result<(), Error> {
    let start = if packet_type == Type::SR {
        SR_BLOCKS_AT
    } else {
        RR_BLOCKS_AT
    };
    if body.len() < start {
        return Err(Error::Truncated);
    }
    if body.len() < start + count * BLOCK_LEN {
        return Err(Error::BadCount);
    }
    Ok(())
}

const BLOCK_LEN: usize = 24;
/// Sender SSRC (4) and sender info (20).
const SR_BLOCKS_AT: usize = 24;
/// Sender SSRC.
const RR_BLOCKS_AT: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::rtcp::compound;

    // SR from 0xaabbccdd: NTP 0x0102030405060708, RTP ts 0x10, 3 packets, 300 octets, two
    // blocks about 0x11 (lost -2) and 0x22 (fraction 0x80, lost 5).
    const SR: [u8; 76] = [
        0x82, 0xc8, 0x00, 0x12, 0xaa, 0xbb, 0xcc, 0xdd, // header, sender
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // NTP
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x03, // RTP ts, packets
        0x00, 0x00, 0x01, 0x2c, // octets
        0x00, 0x00, 0x00, 0x11, 0x00, 0xff, 0xff, 0xfe, // block 1
        0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, 0x07, //
        0x12, 0x34, 0x56, 0x78, 0x00, 0x01, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x22, 0x80, 0x00, 0x00, 0x05, // block 2
        0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    ];

    #[test]
    fn reads_sender_report() {
        let p = compound(&SR).next().unwrap().unwrap();
        assert_eq!(p.packet_type(), Type::SR);
        assert_eq!(p.sender_ssrc(), Some(Ssrc(0xaabb_ccdd)));
        assert_eq!(
            p.sender_info(),
            Some(SenderInfo {
                ntp_timestamp: 0x0102_0304_0506_0708,
                rtp_timestamp: 0x10,
                packet_count: 3,
                octet_count: 300,
            })
        );
        let blocks = p.report_blocks();
        assert_eq!(blocks.len(), 2);
        let [a, b] = [
            blocks.clone().next().unwrap(),
            blocks.clone().nth(1).unwrap(),
        ];
        assert_eq!(a.ssrc(), Ssrc(0x11));
        assert_eq!(a.fraction_lost(), 0);
        assert_eq!(a.cumulative_lost(), -2);
        assert_eq!(a.highest_sequence(), 0x0001_0005);
        assert_eq!(a.jitter(), 7);
        assert_eq!(a.last_sr(), 0x1234_5678);
        assert_eq!(a.delay_since_last_sr(), 0x0001_0000);
        assert_eq!(b.ssrc(), Ssrc(0x22));
        assert_eq!(b.fraction_lost(), 0x80);
        assert_eq!(b.cumulative_lost(), 5);
        assert!(p.media_ssrcs().eq([Ssrc(0x11), Ssrc(0x22)]));
    }

    #[test]
    fn sender_report_errors() {
        // Count 3 with room for 2.
        let mut b = SR;
        b[0] = 0x83;
        assert_eq!(compound(&b).next(), Some(Err(Error::BadCount)));
        // No room for the sender info.
        assert_eq!(
            compound(&[0x80, 0xc8, 0x00, 0x01, 0, 0, 0, 1]).next(),
            Some(Err(Error::Truncated))
        );
        // Count 0 SR with a profile extension after the info is fine.
        let mut c = [0u8; 32];
        c[..4].copy_from_slice(&[0x80, 0xc8, 0x00, 0x07]);
        let p = compound(&c).next().unwrap().unwrap();
        assert_eq!(p.report_blocks().len(), 0);
        assert_eq!(p.media_ssrcs().count(), 0);
    }

    #[test]
    fn receiver_report_has_no_sender_info() {
        let rr = [0x80, 0xc9, 0x00, 0x01, 0, 0, 0, 1];
        let p = compound(&rr).next().unwrap().unwrap();
        assert_eq!(p.sender_info(), None);
        assert_eq!(p.report_blocks().len(), 0);
        assert_eq!(p.sender_ssrc(), Some(Ssrc(1)));
    }
}
