//! RTCP compounds (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1, RFC 3711 §3.4): the iterator
//! tiles the datagram with sub-packets whose getters read inside them, each packet names the
//! media SSRCs a plain reference says it does, and `classify` agrees with the compound walk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::packet::rtcp::{self, Route, Type};
use relay::packet::rtp::Ssrc;

fuzz_target!(|data: &[u8]| {
    let whole = walk(data);
    check_classify(data, whole);
});

/// Walks the compound, checks every sub-packet, and says whether the whole datagram parsed.
fn walk(data: &[u8]) -> bool {
    let mut at = 0;
    let mut items = rtcp::compound(data);
    for item in items.by_ref() {
        let Ok(p) = item else {
            return false;
        };
        let bytes = p.as_bytes();
        assert_eq!(
            offset(data, bytes),
            at,
            "sub-packets must follow each other"
        );
        let declared = (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])) + 1) * 4;
        assert_eq!(bytes.len(), declared);
        assert_eq!(bytes[0] >> 6, 2);
        assert_eq!(p.packet_type(), Type(bytes[1]));
        assert_eq!(p.count_or_fmt(), bytes[0] & 0x1f);
        at += bytes.len();
        if p.padding() {
            assert_eq!(at, data.len(), "padding only on the last sub-packet");
            assert_eq!(p.padding_len(), usize::from(bytes[bytes.len() - 1]));
            assert!(p.padding_len() >= 1);
        } else {
            assert_eq!(p.padding_len(), 0);
        }
        let body = p.body();
        assert_eq!(offset(data, body), at - bytes.len() + 4);
        assert_eq!(4 + body.len() + p.padding_len(), bytes.len());
        check_packet(&p, body);
    }
    assert!(items.next().is_none(), "the iterator is fused");
    assert_eq!(at, data.len());
    true
}

fn check_packet(p: &rtcp::Packet<'_>, body: &[u8]) {
    let t = p.packet_type();
    let count = usize::from(p.count_or_fmt());
    let expected_sender = match t {
        Type::SR | Type::RR | Type::APP | Type::XR | Type::RTPFB | Type::PSFB => ssrc_at(body, 0),
        Type::SDES | Type::BYE if count > 0 => ssrc_at(body, 0),
        _ => None,
    };
    assert_eq!(p.sender_ssrc(), expected_sender);
    if matches!(
        t,
        Type::SR | Type::RR | Type::APP | Type::XR | Type::RTPFB | Type::PSFB
    ) {
        assert!(expected_sender.is_some(), "the fixed part was checked");
    }

    // Report blocks: exactly the count, each a view inside the body.
    let blocks = p.report_blocks();
    if matches!(t, Type::SR | Type::RR) {
        assert_eq!(blocks.len(), count);
        assert_eq!(p.sender_info().is_some(), t == Type::SR);
    } else {
        assert_eq!(blocks.len(), 0);
        assert_eq!(p.sender_info(), None);
    }
    for b in blocks {
        let _ = (
            b.fraction_lost(),
            b.cumulative_lost(),
            b.highest_sequence(),
            b.jitter(),
        );
        let _ = (b.last_sr(), b.delay_since_last_sr());
    }

    // Feedback getters.
    let feedback = matches!(t, Type::RTPFB | Type::PSFB);
    assert_eq!(p.media_source().is_some(), feedback);
    assert_eq!(p.fci().is_some(), feedback);
    if let Some(fci) = p.fci() {
        assert_eq!(offset(body, fci), 8);
    }
    // A NACK yields at most 17 numbers per 4-byte entry.
    let lost = p.nack_lost().take(body.len() * 5 + 1).count();
    assert!(lost <= body.len() / 4 * 17);
    let _ = p.remb_bitrate();

    // Media SSRCs, against the reference.
    let named: Vec<Ssrc> = p.media_ssrcs().take(body.len() + 1).collect();
    assert_eq!(named, reference_media_ssrcs(t, p.count_or_fmt(), body));
}

/// Which media SSRCs a sub-packet names, written from the RFCs without the parser's helpers.
fn reference_media_ssrcs(t: Type, fmt: u8, body: &[u8]) -> Vec<Ssrc> {
    let every = |from: usize, stride: usize, n: usize| -> Vec<Ssrc> {
        (0..n)
            .map_while(|i| ssrc_at(body, from + i * stride))
            .collect()
    };
    match (t, fmt) {
        (Type::SR, n) => every(24, 24, usize::from(n)),
        (Type::RR, n) => every(4, 24, usize::from(n)),
        (Type::RTPFB, _) => every(4, 0, 1),
        // FIR (RFC 5104 §4.3.1.1): one SSRC per 8-byte FCI entry.
        (Type::PSFB, 4) => every(8, 8, body.len().saturating_sub(8) / 8),
        // REMB: "REMB", num SSRC, bitrate, then the SSRC list.
        (Type::PSFB, 15) if body.get(8..12) == Some(b"REMB") => match body.get(12) {
            Some(&n) => every(16, 4, usize::from(n)),
            None => every(4, 0, 1),
        },
        (Type::PSFB, _) => every(4, 0, 1),
        _ => Vec::new(),
    }
}

fn check_classify(data: &[u8], whole: bool) {
    let first_sender = rtcp::compound(data)
        .next()
        .and_then(Result::ok)
        .and_then(|p| p.sender_ssrc());
    let plausible =
        rtcp::compound(data).all(|p| p.is_ok_and(|p| (192..=223).contains(&p.packet_type().0)));
    match rtcp::classify(data) {
        Ok(Route::Sender {
            sender,
            also_feedback,
        }) => {
            if let Some(fb) = also_feedback {
                check_feedback(data, sender, fb);
                assert!(fb.media_ssrcs().next().is_some());
                assert!(fb.packets().any(|p| p.unwrap().packet_type() == Type::SR));
            }
            if whole && plausible {
                assert_eq!(Some(sender), first_sender);
            }
        }
        Ok(Route::Feedback { sender, feedback }) => {
            check_feedback(data, sender, feedback);
            assert!(
                feedback
                    .packets()
                    .all(|p| p.unwrap().packet_type() != Type::SR)
            );
            assert!(feedback.packets().any(|p| {
                matches!(
                    p.unwrap().packet_type(),
                    Type::RR | Type::RTPFB | Type::PSFB
                )
            }));
        }
        Ok(Route::Encrypted { sender }) => {
            assert_eq!(Some(sender), ssrc_at(data, 4));
            assert!(
                !(whole && plausible),
                "a clean compound is never taken for SRTCP"
            );
        }
        Err(_) => {
            assert!(
                !(whole && plausible && first_sender.is_some()),
                "a clean compound with a sender must route"
            );
        }
    }
}

/// The feedback part is a prefix of the datagram that parses whole, starts with the sender, and
/// names exactly the media SSRCs of its sub-packets, in order.
fn check_feedback(data: &[u8], sender: Ssrc, fb: rtcp::Feedback<'_>) {
    let bytes = fb.as_bytes();
    assert_eq!(offset(data, bytes), 0);
    assert!(
        data.len() - bytes.len() <= 14,
        "at most an SRTCP trailer is cut"
    );
    let packets: Vec<rtcp::Packet<'_>> = fb.packets().map(|p| p.unwrap()).collect();
    assert_eq!(
        packets.iter().map(|p| p.as_bytes().len()).sum::<usize>(),
        bytes.len()
    );
    assert_eq!(packets[0].sender_ssrc(), Some(sender));
    let expected: Vec<Ssrc> = packets.iter().flat_map(|p| p.media_ssrcs()).collect();
    let named: Vec<Ssrc> = fb.media_ssrcs().take(expected.len() + 1).collect();
    assert_eq!(named, expected);
}

fn ssrc_at(b: &[u8], at: usize) -> Option<Ssrc> {
    let w = b.get(at..at + 4)?;
    Some(Ssrc(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
}

/// Where `part` starts inside `whole`; panics if it is not inside.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        start + part.len() <= whole.len(),
        "slice outside the buffer"
    );
    start
}
