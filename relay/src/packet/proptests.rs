//! Property tests: no parser panics on any input, checked views keep their invariants, and
//! builders round-trip through the parsers.

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;

use crate::packet::demux::{self, Kind};
use crate::packet::rtcp::{self, Route};
use crate::packet::rtp::{self, Ssrc};
use crate::packet::stun::{self, BindingRequest, BindingResponse, Class, ErrorResponse, Message};
use crate::packet::trunk;

/// Reads everything a checked RTP view offers and checks that the parts add up.
fn exercise_rtp(buf: &[u8]) {
    let Ok(p) = rtp::Packet::new_checked(buf) else {
        return;
    };
    let _ = (p.version(), p.padding(), p.marker(), p.payload_type());
    let _ = (p.sequence_number(), p.timestamp(), p.ssrc());
    assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
    assert_eq!(
        p.header_len() + p.payload().len() + p.padding_len(),
        buf.len()
    );
    if let Some((_, data)) = p.extension() {
        assert!(data.len() % 4 == 0 && p.has_extension());
    }
}

/// Reads everything RTCP offers on `buf`.
fn exercise_rtcp(buf: &[u8]) {
    let mut total = 0;
    for packet in rtcp::compound(buf) {
        let Ok(p) = packet else {
            break;
        };
        total += p.as_bytes().len();
        let _ = (
            p.packet_type(),
            p.count_or_fmt(),
            p.padding(),
            p.sender_ssrc(),
        );
        let _ = (p.sender_info(), p.media_source(), p.fci(), p.remb_bitrate());
        assert!(p.body().len() + 4 + p.padding_len() == p.as_bytes().len());
        assert!(p.media_ssrcs().count() <= p.as_bytes().len() / 4);
        assert!(p.report_blocks().count() <= 31);
        assert!(p.nack_lost().count() <= p.as_bytes().len() * 5);
        for block in p.report_blocks() {
            let _ = (block.ssrc(), block.cumulative_lost(), block.jitter());
        }
    }
    assert!(total <= buf.len());
    match rtcp::classify(buf) {
        Ok(Route::Feedback { feedback, .. })
        | Ok(Route::Sender {
            also_feedback: Some(feedback),
            ..
        }) => {
            assert!(feedback.media_ssrcs().count() <= buf.len() / 4);
            assert!(feedback.packets().all(|p| p.is_ok()));
        }
        Ok(_) | Err(_) => {}
    }
}

/// Reads everything a checked STUN view offers.
fn exercise_stun(buf: &[u8]) {
    let Ok(m) = Message::new_checked(buf) else {
        return;
    };
    let _ = (m.class(), m.method(), m.transaction_id(), m.length());
    let _ = (
        m.username(),
        m.software(),
        m.realm(),
        m.nonce(),
        m.priority(),
    );
    let _ = (m.ice_controlling(), m.ice_controlled(), m.use_candidate());
    let _ = (m.xor_mapped_address(), m.error_code());
    let _ = (
        m.verify_integrity(b"key"),
        m.verify_integrity_sha256(b"key"),
    );
    let _ = m.check_fingerprint();
    let end: usize = m
        .attributes()
        .map(|a| a.offset + 4 + a.value.len())
        .max()
        .unwrap_or(20);
    assert!(end <= buf.len());
}

/// Reads everything a checked trunk view offers and checks that the parts add up.
fn exercise_trunk(buf: &[u8]) {
    let Ok(p) = trunk::Packet::new_checked(buf) else {
        return;
    };
    let h = p.header();
    assert!(matches!(p.version(), trunk::VERSION_4 | trunk::VERSION));
    // A header is written as version 5 only with W: a version 5 header without it is written
    // back as the version 4 one, every other byte the same.
    let mut written = [0u8; trunk::HEADER_LEN];
    written.copy_from_slice(&buf[..trunk::HEADER_LEN]);
    if !p.webrtc() {
        written[0] = trunk::VERSION_4;
    }
    assert_eq!(h.to_bytes(), written);
    assert_eq!(p.payload().len() + trunk::HEADER_LEN, buf.len());
    let inner = demux::classify(p.payload());
    assert!(matches!(
        (h.content, inner),
        (trunk::Content::Rtp, Kind::Rtp) | (trunk::Content::Rtcp, Kind::Rtcp)
    ));
    assert_eq!(demux::classify(buf), Kind::Other);
}

fn trunk_header() -> impl Strategy<Value = trunk::Header> {
    (
        any::<bool>(),
        0u8..3,
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(rtcp, media, origin, room, sender, epoch, webrtc)| trunk::Header {
                content: if rtcp {
                    trunk::Content::Rtcp
                } else {
                    trunk::Content::Rtp
                },
                media: [
                    trunk::Media::Unspecified,
                    trunk::Media::Audio,
                    trunk::Media::Video,
                ][usize::from(media)],
                webrtc,
                origin: trunk::NodeNo(origin),
                room: trunk::RoomNo(room),
                sender: trunk::ParticipantNo(sender),
                epoch: trunk::Epoch(epoch),
            },
        )
}

/// An RTCP sub-packet: version 2, random count and type, a random body of whole words.
fn rtcp_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..32,
        prop_oneof![192u8..=223, any::<u8>()],
        vec(any::<u8>(), 0..80),
    )
        .prop_map(|(count, pt, words)| {
            let mut p = vec![0x80 | count, pt, 0, 0];
            let body_words = words.len() / 4;
            p[3] = body_words as u8;
            p.extend_from_slice(&words[..body_words * 4]);
            p
        })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

/// RFC 3550 Appendix A.1's checks written out plainly, as a reference for `new_checked`:
/// "RTP version field must equal 2 ... If the P bit is set, then the last octet of the packet
/// must contain a valid octet count ... If the X bit is set ... the header extension ... must
/// fit", plus the CSRC list fitting in the packet.
fn rfc3550_valid(b: &[u8]) -> bool {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return false;
    }
    let mut header = 12 + 4 * (b[0] & 0x0f) as usize;
    if b[0] & 0x10 != 0 {
        if b.len() < header + 4 {
            return false;
        }
        header += 4 + 4 * u16::from_be_bytes([b[header + 2], b[header + 3]]) as usize;
    }
    if header > b.len() {
        return false;
    }
    if b[0] & 0x20 != 0 {
        let pad = b[b.len() - 1] as usize;
        return pad > 0 && pad <= b.len() - header;
    }
    true
}

proptest! {
    #[test]
    fn demux_matches_first_byte(buf in vec(any::<u8>(), 0..8)) {
        let kind = demux::classify(&buf);
        match buf.first() {
            Some(0..=3) => prop_assert_eq!(kind, Kind::Stun),
            Some(20..=63) => prop_assert_eq!(kind, Kind::Dtls),
            Some(128..=191) if buf.len() >= 2 => {
                prop_assert!(matches!(kind, Kind::Rtp | Kind::Rtcp));
            }
            _ => prop_assert_eq!(kind, Kind::Other),
        }
    }

    #[test]
    fn rtp_never_panics(buf in vec(any::<u8>(), 0..200)) {
        exercise_rtp(&buf);
    }

    #[test]
    fn rtp_version2_never_panics(mut buf in vec(any::<u8>(), 12..200)) {
        buf[0] = 0x80 | (buf[0] & 0x3f);
        exercise_rtp(&buf);
        prop_assert_eq!(rtp::Packet::new_checked(&buf[..]).is_ok(), rfc3550_valid(&buf));
    }

    #[test]
    fn rtp_fields_round_trip(
        marker in any::<bool>(),
        pt in 0u8..128,
        seq in any::<u16>(),
        ts in any::<u32>(),
        ssrc in any::<u32>(),
        csrcs in vec(any::<u32>(), 0..16),
        ext in proptest::option::of((any::<u16>(), vec(any::<[u8; 4]>(), 0..4).prop_map(|w| w.concat()))),
        payload in vec(any::<u8>(), 0..64),
        padding in 0u8..8,
    ) {
        let mut b = vec![0x80 | csrcs.len() as u8, u8::from(marker) << 7 | pt];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        for c in &csrcs {
            b.extend_from_slice(&c.to_be_bytes());
        }
        if let Some((profile, data)) = &ext {
            b[0] |= 0x10;
            b.extend_from_slice(&profile.to_be_bytes());
            b.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
            b.extend_from_slice(data);
        }
        b.extend_from_slice(&payload);
        if padding > 0 {
            b[0] |= 0x20;
            b.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            b.push(padding);
        }
        let p = rtp::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.marker(), marker);
        prop_assert_eq!(p.payload_type(), pt);
        prop_assert_eq!(p.sequence_number(), seq);
        prop_assert_eq!(p.timestamp(), ts);
        prop_assert_eq!(p.ssrc(), Ssrc(ssrc));
        prop_assert!(p.csrcs().eq(csrcs.iter().map(|&c| Ssrc(c))));
        prop_assert_eq!(p.extension(), ext.as_ref().map(|(pr, d)| (*pr, &d[..])));
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_eq!(p.padding_len(), usize::from(padding));
    }

    #[test]
    fn trunk_never_panics(buf in vec(any::<u8>(), 0..64)) {
        exercise_trunk(&buf);
    }

    #[test]
    fn trunk_version4_never_panics(mut buf in vec(any::<u8>(), 16..64)) {
        buf[0] = trunk::VERSION_4;
        exercise_trunk(&buf);
    }

    #[test]
    fn trunk_version5_never_panics(mut buf in vec(any::<u8>(), 16..64)) {
        buf[0] = trunk::VERSION;
        exercise_trunk(&buf);
    }

    #[test]
    fn trunk_round_trip(
        header in trunk_header(),
        inner in vec(any::<u8>(), 2..64),
        out_len in 0usize..24,
    ) {
        // Make the inner datagram what the header says it is.
        let mut inner = inner;
        inner[0] = 0x80 | (inner[0] & 0x3f);
        inner[1] = match header.content {
            trunk::Content::Rtcp => 192 + inner[1] % 32,
            trunk::Content::Rtp => if (192..=223).contains(&inner[1]) { inner[1] - 100 } else { inner[1] },
        };
        let mut out = vec![0u8; out_len];
        match header.emit(&mut out) {
            Ok(n) => prop_assert_eq!(n, header.buffer_len()),
            Err(e) => {
                prop_assert!(out_len < trunk::HEADER_LEN);
                prop_assert_eq!(e, trunk::Error::Truncated);
            }
        }
        let mut datagram = header.to_bytes().to_vec();
        datagram.extend_from_slice(&inner);
        let p = trunk::Packet::new_checked(&datagram[..]).unwrap();
        prop_assert_eq!(p.header(), header);
        prop_assert_eq!(p.payload(), &inner[..]);
        exercise_trunk(&datagram);
    }

    #[test]
    fn rtcp_never_panics(buf in vec(any::<u8>(), 0..200)) {
        exercise_rtcp(&buf);
    }

    #[test]
    fn rtcp_compounds_never_panic(
        packets in vec(rtcp_packet(), 1..5),
        tail in vec(any::<u8>(), 0..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf: Vec<u8> = packets.concat();
        exercise_rtcp(&buf);
        buf.extend_from_slice(&tail);
        exercise_rtcp(&buf);
        exercise_rtcp(&buf[..cut.index(buf.len() + 1)]);
    }

    #[test]
    fn stun_never_panics(buf in vec(any::<u8>(), 0..200)) {
        exercise_stun(&buf);
    }

    #[test]
    fn stun_attribute_soup_never_panics(
        first in 0u8..4,
        words in vec(any::<[u8; 4]>(), 0..32),
        types in vec(prop_oneof![
            Just(0x0008u16), Just(0x001c), Just(0x8028), Just(0x0020), Just(0x0009), any::<u16>()
        ], 0..8),
    ) {
        let mut buf = vec![first, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        buf.extend_from_slice(&[7; 12]);
        buf.extend(words.concat());
        // Plant interesting attribute types (and small lengths) on word boundaries.
        for (i, t) in types.iter().enumerate() {
            let at = 20 + 4 * (i * 3 % words.len().max(1));
            if at + 4 <= buf.len() {
                buf[at..at + 2].copy_from_slice(&t.to_be_bytes());
                buf[at + 2] = 0;
                buf[at + 3] &= 0x1f;
            }
        }
        let len = (buf.len() - 20) as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        exercise_stun(&buf);
    }

    #[test]
    fn binding_request_round_trip(
        transaction_id in any::<[u8; 12]>(),
        username in vec(any::<u8>(), 0..64),
        priority in any::<u32>(),
        ice_controlling in any::<Option<u64>>(),
        use_candidate in any::<bool>(),
        key in vec(any::<u8>(), 0..40),
        fingerprint in any::<bool>(),
        out_len in 0usize..200,
    ) {
        let request = BindingRequest {
            transaction_id,
            username: &username,
            priority,
            ice_controlling,
            use_candidate,
            integrity_key: &key,
            fingerprint,
        };
        let mut out = vec![0u8; out_len];
        let Ok(n) = request.emit(&mut out) else {
            prop_assert!(out_len < request.buffer_len());
            return Ok(());
        };
        prop_assert_eq!(n, request.buffer_len());
        let m = Message::new_checked(&out[..n]).unwrap();
        prop_assert_eq!(m.class(), Class::Request);
        prop_assert_eq!(m.method(), stun::BINDING);
        prop_assert_eq!(m.transaction_id(), transaction_id);
        prop_assert_eq!(m.username(), Some(&username[..]));
        prop_assert_eq!(m.priority(), Some(priority));
        prop_assert_eq!(m.ice_controlling(), ice_controlling);
        prop_assert_eq!(m.use_candidate(), use_candidate);
        prop_assert_eq!(m.verify_integrity(&key).is_ok(), !key.is_empty());
        prop_assert_eq!(m.check_fingerprint().is_ok(), fingerprint);
    }

    #[test]
    fn binding_response_round_trip(
        transaction_id in any::<[u8; 12]>(),
        mapped in socket_addr(),
        software in proptest::option::of("[a-zA-Z0-9 .-]{0,40}"),
        key in vec(any::<u8>(), 0..100),
    ) {
        let response = BindingResponse {
            transaction_id,
            mapped,
            software: software.as_deref(),
            integrity_key: &key,
        };
        let mut out = [0u8; 128];
        let n = response.emit(&mut out).unwrap();
        prop_assert_eq!(n, response.buffer_len());
        let m = Message::new_checked(&out[..n]).unwrap();
        prop_assert_eq!(m.class(), Class::Success);
        prop_assert_eq!(m.transaction_id(), transaction_id);
        prop_assert_eq!(m.xor_mapped_address(), Some(mapped));
        prop_assert_eq!(m.software(), software.as_deref().map(str::as_bytes));
        prop_assert_eq!(m.verify_integrity(&key), Ok(()));
        prop_assert_eq!(m.check_fingerprint(), Ok(()));
    }

    #[test]
    fn error_response_round_trip(
        transaction_id in any::<[u8; 12]>(),
        code in 300u16..700,
        reason in "[a-zA-Z ]{0,60}",
    ) {
        let response = ErrorResponse { transaction_id, code, reason: &reason, software: None };
        let mut out = [0u8; 128];
        let n = response.emit(&mut out).unwrap();
        let m = Message::new_checked(&out[..n]).unwrap();
        prop_assert_eq!(m.class(), Class::Error);
        prop_assert_eq!(m.error_code(), Some((code, reason.as_bytes())));
        prop_assert_eq!(m.check_fingerprint(), Ok(()));
    }
}
