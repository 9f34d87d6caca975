//! Where a whole RTCP datagram goes: the routing summary the router acts on.

use crate::packet::rtcp::{Compound, Error, MediaSsrcs, Type, compound, read_ssrc};
use crate::packet::rtp::Ssrc;

/// How to route one RTCP datagram; see [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Sender information: the compound holds an SR, or only SDES, BYE, APP, XR (or unknown)
    /// packets. It follows the sender's media to that media's subscribers.
    ///
    /// An SR may also carry report blocks, and the same compound may carry RTPFB/PSFB
    /// feedback: then `also_feedback` is set and the caller should *also* send the datagram to
    /// the publishers of the media SSRCs it names. It is `None` when the compound names no
    /// media SSRC.
    Sender {
        /// Sender SSRC of the first sub-packet.
        sender: Ssrc,
        /// The feedback part, when the compound names at least one media SSRC.
        also_feedback: Option<Feedback<'a>>,
    },
    /// Receiver feedback (RR, NACK, PLI, FIR, REMB, transport-cc, ...) without an SR: route it
    /// to the publishers of the media SSRCs it names. An RR with no report block names none.
    Feedback {
        /// Sender SSRC of the first sub-packet (the receiver that sends the feedback).
        sender: Ssrc,
        /// The media SSRCs to route to.
        feedback: Feedback<'a>,
    },
    /// SRTCP with the E flag set (RFC 3711 §3.4): only the first 8 bytes (the first header and
    /// the sender SSRC) are readable.
    Encrypted {
        /// The SSRC in bytes 4..8.
        sender: Ssrc,
    },
}

/// The feedback part of a cleartext compound: lets the caller walk the media SSRCs it names
/// without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feedback<'a> {
    /// The checked compound, without any SRTCP trailer.
    compound: &'a [u8],
}

impl<'a> Feedback<'a> {
    /// Every media SSRC the compound names, across all its sub-packets, in order; duplicates
    /// are kept (see [`Packet::media_ssrcs`](crate::packet::rtcp::Packet::media_ssrcs) for
    /// which SSRCs each type names).
    pub fn media_ssrcs(&self) -> FeedbackSsrcs<'a> {
        FeedbackSsrcs {
            packets: compound(self.compound),
            current: MediaSsrcs::EMPTY,
        }
    }

    /// The sub-packets of the compound (all of them checked already).
    pub fn packets(&self) -> Compound<'a> {
        compound(self.compound)
    }

    /// The compound's bytes, without the SRTCP trailer if there was one.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.compound
    }
}

/// Iterator over all the media SSRCs of a compound; see [`Feedback::media_ssrcs`].
#[derive(Clone, Debug)]
pub struct FeedbackSsrcs<'a> {
    packets: Compound<'a>,
    current: MediaSsrcs<'a>,
}

impl Iterator for FeedbackSsrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        loop {
            if let Some(ssrc) = self.current.next() {
                return Some(ssrc);
            }
            // The compound was checked whole by `classify`, so `Err` cannot come; stop if it did.
            self.current = self.packets.next()?.ok()?.media_ssrcs();
        }
    }
}

impl core::iter::FusedIterator for FeedbackSsrcs<'_> {}

/// Decides how to route one RTCP datagram.
///
/// # Rules
///
/// The whole compound is checked first (see [`compound`]); a malformed one is an error.
/// `sender` is always the sender SSRC of the first sub-packet
/// ([`Packet::sender_ssrc`](crate::packet::rtcp::Packet::sender_ssrc)); without one the result
/// is [`Error::MissingSsrc`]. Then:
///
/// 1. the compound holds an SR: [`Route::Sender`], with `also_feedback` when it names any media
///    SSRC (report blocks of the SR, or feedback packets alongside it);
/// 2. otherwise it holds an RR, RTPFB or PSFB: [`Route::Feedback`];
/// 3. otherwise (SDES, BYE, APP, XR, unknown types only): [`Route::Sender`] without feedback.
///
/// # SRTCP
///
/// An SRTCP packet (RFC 3711 §3.4) is the compound, encrypted after its first 8 bytes, then a
/// 32-bit word `E | SRTCP index`, then an optional MKI and the authentication tag. This relay
/// never has the keys, so it guesses the trailer's place:
///
/// 1. If the whole datagram parses as a plain compound ending exactly at its end, and every
///    packet type is in 192..=223 (the RTCP range RFC 5761 §4 reserves), it is plain RTCP.
/// 2. Otherwise, for a trailer of 14, 8 and 4 bytes (4-byte word plus an 80-bit or 32-bit
///    HMAC-SHA1 tag, RFC 3711 §5.2; or no tag after the index, as AEAD SRTCP in RFC 7714 §9
///    places its tag inside the encrypted part), where the part before the trailer is at
///    least 8 bytes, a multiple of 4 and holds the first packet's declared length:
///    - E clear: if that part parses as a plain compound as in step 1, it is routed as one
///      (authenticated but unencrypted SRTCP; the caller forwards the whole datagram);
///    - E set: the datagram is [`Route::Encrypted`] unless another candidate parses as
///      cleartext.
/// 3. Otherwise the plain result stands: the plain route if the compound parsed (with an
///    unusual type), else its error.
///
/// An MKI is not supported (DTLS-SRTP does not use one). The guess can be fooled only by
/// ciphertext that happens to parse as a valid compound ending right at a candidate trailer,
/// and a wrong guess still routes by the cleartext sender SSRC.
pub fn classify(buf: &[u8]) -> Result<Route<'_>, Error> {
    let plain = Summary::of(buf);
    if let Ok(summary) = plain
        && summary.plausible
    {
        return summary.route(buf);
    }
    if let Some(route) = srtcp(buf) {
        return Ok(route);
    }
    plain?.route(buf)
}

/// Tries the SRTCP trailer candidates (step 2 of [`classify`]).
fn srtcp(buf: &[u8]) -> Option<Route<'_>> {
    let sender = read_ssrc(buf, 4)?;
    if buf[0] >> 6 != 2 {
        return None;
    }
    let first_len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
    let mut encrypted = false;
    for trailer in SRTCP_TRAILERS {
        let Some(split) = buf.len().checked_sub(trailer) else {
            continue;
        };
        if split < 8 || split % 4 != 0 || first_len > split {
            continue;
        }
        if buf[split] & E_FLAG != 0 {
            encrypted = true;
            continue;
        }
        let body = &buf[..split];
        if let Ok(summary) = Summary::of(body)
            && summary.plausible
            && let Ok(route) = summary.route(body)
        {
            return Some(route);
        }
    }
    encrypted.then_some(Route::Encrypted { sender })
}

/// What one pass over a compound learned.
#[derive(Clone, Copy, Debug)]
struct Summary {
    sender: Option<Ssrc>,
    has_sr: bool,
    has_feedback: bool,
    names_media: bool,
    /// Every packet type is in the RTCP range 192..=223.
    plausible: bool,
}

impl Summary {
    fn of(buf: &[u8]) -> Result<Self, Error> {
        let mut s = Self {
            sender: None,
            has_sr: false,
            has_feedback: false,
            names_media: false,
            plausible: true,
        };
        if buf.is_empty() {
            return Err(Error::Truncated);
        }
        for (i, packet) in compound(buf).enumerate() {
            let packet = packet?;
            let t = packet.packet_type();
            if i == 0 {
                s.sender = packet.sender_ssrc();
            }
            s.has_sr |= t == Type::SR;
            s.has_feedback |= matches!(t, Type::RR | Type::RTPFB | Type::PSFB);
            s.names_media |= packet.media_ssrcs().next().is_some();
            s.plausible &= (192..=223).contains(&t.0);
        }
        Ok(s)
    }

    fn route(self, compound: &[u8]) -> Result<Route<'_>, Error> {
        let sender = self.sender.ok_or(Error::MissingSsrc)?;
        let feedback = Feedback { compound };
        if self.has_sr {
            let also_feedback = self.names_media.then_some(feedback);
            return Ok(Route::Sender {
                sender,
                also_feedback,
            });
        }
        if self.has_feedback {
            return Ok(Route::Feedback { sender, feedback });
        }
        Ok(Route::Sender {
            sender,
            also_feedback: None,
        })
    }
}

/// SRTCP trailers tried, longest first: E|index word plus a 10-byte tag
/// (AES_CM_128_HMAC_SHA1_80), a 4-byte tag (AES_CM_128_HMAC_SHA1_32), or no tag (AEAD).
const SRTCP_TRAILERS: [usize; 3] = [14, 8, 4];
const E_FLAG: u8 = 0x80;

#[cfg(test)]
mod tests {
    use super::*;

    // SR from 0xa1 with no block, 28 bytes.
    const SR: [u8; 28] = [
        0x80, 0xc8, 0x00, 0x06, 0x00, 0x00, 0x00, 0xa1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0,
        0, 4, 0, 0, 0, 5,
    ];
    // SR from 0xa1 with blocks about 0x11 and 0x22.
    const SR_BLOCKS: [u8; 76] = {
        let mut b = [0u8; 76];
        let head = [0x82, 0xc8, 0x00, 0x12, 0x00, 0x00, 0x00, 0xa1];
        let mut i = 0;
        while i < 8 {
            b[i] = head[i];
            i += 1;
        }
        b[31] = 0x11;
        b[55] = 0x22;
        b
    };
    // SDES for 0xa1 with CNAME "ab".
    const SDES: [u8; 16] = [
        0x81, 0xca, 0x00, 0x03, 0x00, 0x00, 0x00, 0xa1, 0x01, 0x02, 0x61, 0x62, 0, 0, 0, 0,
    ];
    // RR from 0xb2 about 0x11.
    const RR: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 0x81;
        b[1] = 0xc9;
        b[3] = 0x07;
        b[7] = 0xb2;
        b[11] = 0x11;
        b
    };
    // PLI from 0xb2 about 0x33.
    const PLI: [u8; 12] = [0x81, 0xce, 0x00, 0x02, 0, 0, 0, 0xb2, 0, 0, 0, 0x33];
    // NACK from 0xb2 about 0x44, seq 1.
    const NACK: [u8; 16] = [
        0x81, 0xcd, 0x00, 0x03, 0, 0, 0, 0xb2, 0, 0, 0, 0x44, 0, 1, 0, 0,
    ];
    // REMB from 0xb2 about 0x55 and 0x66.
    const REMB: [u8; 28] = [
        0x8f, 0xce, 0x00, 0x06, 0, 0, 0, 0xb2, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0x02, 0x0f,
        0xd0, 0x90, 0, 0, 0, 0x55, 0, 0, 0, 0x66,
    ];
    // BYE for 0xa1.
    const BYE: [u8; 8] = [0x81, 0xcb, 0x00, 0x01, 0, 0, 0, 0xa1];

    fn cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
        let mut out = [0u8; N];
        let mut at = 0;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        assert_eq!(at, N);
        out
    }

    fn ssrcs(f: Feedback<'_>) -> Vec<u32> {
        f.media_ssrcs().map(|s| s.0).collect()
    }

    #[test]
    fn sender_report_follows_media() {
        let b: [u8; 44] = cat(&[&SR, &SDES]);
        assert_eq!(
            classify(&b),
            Ok(Route::Sender {
                sender: Ssrc(0xa1),
                also_feedback: None
            })
        );
    }

    #[test]
    fn sender_report_with_blocks_is_also_feedback() {
        let b: [u8; 104] = cat(&[&SR_BLOCKS, &SDES, &PLI]);
        let Ok(Route::Sender {
            sender,
            also_feedback: Some(f),
        }) = classify(&b)
        else {
            panic!("{:?}", classify(&b));
        };
        assert_eq!(sender, Ssrc(0xa1));
        assert_eq!(ssrcs(f), [0x11, 0x22, 0x33]);
        assert_eq!(f.packets().count(), 3);
        assert_eq!(f.as_bytes(), &b[..]);
    }

    #[test]
    fn receiver_feedback_goes_to_publishers() {
        let b: [u8; 48] = cat(&[&RR, &SDES]);
        let Ok(Route::Feedback { sender, feedback }) = classify(&b) else {
            panic!();
        };
        assert_eq!(sender, Ssrc(0xb2));
        assert_eq!(ssrcs(feedback), [0x11]);

        let b: [u8; 88] = cat(&[&RR, &NACK, &REMB, &PLI]);
        let Ok(Route::Feedback { feedback, .. }) = classify(&b) else {
            panic!();
        };
        assert_eq!(ssrcs(feedback), [0x11, 0x44, 0x55, 0x66, 0x33]);
    }

    #[test]
    fn reduced_size_feedback() {
        // RFC 5506: a lone PLI.
        let Ok(Route::Feedback { sender, feedback }) = classify(&PLI) else {
            panic!();
        };
        assert_eq!(sender, Ssrc(0xb2));
        assert_eq!(ssrcs(feedback), [0x33]);
    }

    #[test]
    fn empty_receiver_report_names_nobody() {
        let rr = [0x80, 0xc9, 0x00, 0x01, 0, 0, 0, 0xb2];
        let b: [u8; 24] = cat(&[&rr, &SDES]);
        let Ok(Route::Feedback { feedback, .. }) = classify(&b) else {
            panic!();
        };
        assert_eq!(feedback.media_ssrcs().count(), 0);
    }

    #[test]
    fn sender_only_packets() {
        let app = [0x80, 0xcc, 0, 2, 0, 0, 0, 0xa1, b'n', b'a', b'm', b'e'];
        let xr = [0x80, 0xcf, 0, 1, 0, 0, 0, 0xa1];
        let b: [u8; 24] = cat(&[&SDES, &BYE]);
        for buf in [&SDES[..], &BYE, &app, &xr, &b] {
            assert_eq!(
                classify(buf),
                Ok(Route::Sender {
                    sender: Ssrc(0xa1),
                    also_feedback: None
                }),
                "{buf:02x?}"
            );
        }
    }

    #[test]
    fn srtcp_encrypted() {
        // SR header and sender in clear, then 36 bytes of "ciphertext".
        let mut enc = [0xdeu8; 64];
        enc[..8].copy_from_slice(&SR[..8]);
        let index = [0x80, 0x00, 0x00, 0x2a];
        let tag10 = [0x77u8; 10];
        let b: [u8; 78] = cat(&[&enc, &index, &tag10]);
        assert_eq!(classify(&b), Ok(Route::Encrypted { sender: Ssrc(0xa1) }));
        let b: [u8; 72] = cat(&[&enc, &index, &tag10[..4]]);
        assert_eq!(classify(&b), Ok(Route::Encrypted { sender: Ssrc(0xa1) }));
        // AEAD: tag inside the encrypted part, index last.
        let b: [u8; 68] = cat(&[&enc, &index]);
        assert_eq!(classify(&b), Ok(Route::Encrypted { sender: Ssrc(0xa1) }));
        // A single-packet SRTCP whose index word would parse as an RTCP header of type 0.
        let one: [u8; 36] = cat(&[&SR, &[0x80, 0x00, 0x00, 0x01], &tag10[..4]]);
        assert_eq!(classify(&one), Ok(Route::Encrypted { sender: Ssrc(0xa1) }));
    }

    #[test]
    fn srtcp_unencrypted_parses_inner_compound() {
        let inner: [u8; 48] = cat(&[&RR, &SDES]);
        let index = [0x00, 0x00, 0x00, 0x07];
        let tag = [0x80u8; 10];
        for tag_len in [10, 4, 0] {
            let mut b = [0u8; 62];
            let n = 48 + 4 + tag_len;
            b[..n].copy_from_slice(&cat::<62>(&[&inner, &index, &tag])[..n]);
            let Ok(Route::Feedback { sender, feedback }) = classify(&b[..n]) else {
                panic!("tag {tag_len}: {:?}", classify(&b[..n]));
            };
            assert_eq!(sender, Ssrc(0xb2));
            assert_eq!(feedback.as_bytes(), &inner[..]);
            assert_eq!(ssrcs(feedback), [0x11]);
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(classify(&[]), Err(Error::Truncated));
        assert_eq!(classify(&[0x80, 0xc8]), Err(Error::Truncated));
        let mut b = PLI;
        b[0] = 0x41;
        assert_eq!(classify(&b), Err(Error::BadVersion));
        // Length one word too long, too short for any SRTCP trailer.
        let mut b = PLI;
        b[3] = 3;
        assert_eq!(classify(&b), Err(Error::BadLength));
        // An SDES with no chunk names no sender.
        assert_eq!(classify(&[0x80, 0xca, 0, 0]), Err(Error::MissingSsrc));
        // A malformed second packet, with an E-clear word where a trailer could sit.
        let b: [u8; 36] = cat(&[&PLI, &[0x81, 0xcd, 0, 1, 0, 0, 0, 1], &[0; 16]]);
        assert_eq!(classify(&b), Err(Error::Truncated));
    }

    #[test]
    fn unusual_type_still_routes() {
        // Type 0x80 is outside 192..=223 and no SRTCP trailer fits: the plain parse stands.
        let odd = [0x80, 0x80, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b: [u8; 28] = cat(&[&PLI, &odd]);
        let Ok(Route::Feedback { feedback, .. }) = classify(&b) else {
            panic!("{:?}", classify(&b));
        };
        assert_eq!(ssrcs(feedback), [0x33]);
    }
}
