//! Trunk header view: accepts exactly what a plain reading of the layout in
//! `relay::packet::trunk` accepts, every getter reads the bytes it names, the header re-emits
//! to the same 16 bytes, the payload is the rest of the datagram untouched, and a trunk
//! datagram is never taken for media by the RFC 7983 demux.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::packet::demux::{self, Kind};
use relay::packet::trunk::{self, Content, Epoch, Media, NodeNo, Packet, ParticipantNo, RoomNo};

fuzz_target!(|data: &[u8]| {
    let parsed = Packet::new_checked(data);
    let valid = reference(data);
    let Ok(p) = parsed else {
        assert!(!valid, "refused a valid trunk datagram: {parsed:?}");
        return;
    };
    assert!(valid, "accepted an invalid trunk datagram");
    assert_eq!(p.as_bytes(), data);
    assert_eq!(p.version(), data[0]);
    assert_eq!(p.webrtc(), data[1] & 0x10 != 0);
    assert_eq!(demux::classify(data), Kind::Other);

    // Fields straight from the bytes.
    let rtcp = data[1] & 0x80 != 0;
    assert_eq!(p.content(), if rtcp { Content::Rtcp } else { Content::Rtp });
    let media = match (data[1] >> 5) & 3 {
        0 => Media::Unspecified,
        1 => Media::Audio,
        _ => Media::Video,
    };
    assert_eq!(p.media(), media);
    assert_eq!(p.origin(), NodeNo(u16::from_be_bytes([data[2], data[3]])));
    assert_eq!(p.room(), RoomNo(word(data, 4)));
    assert_eq!(p.sender(), ParticipantNo(word(data, 8)));
    assert_eq!(p.epoch(), Epoch(word(data, 12)));

    // The header re-emits to the same bytes (version 5 only with W, else version 4); the
    // payload is the untouched rest.
    let header = p.header();
    let mut written = [0u8; trunk::HEADER_LEN];
    written.copy_from_slice(&data[..trunk::HEADER_LEN]);
    written[0] = if p.webrtc() { 5 } else { 4 };
    assert_eq!(header.to_bytes(), written);
    let mut out = [0u8; trunk::HEADER_LEN];
    assert_eq!(header.emit(&mut out), Ok(trunk::HEADER_LEN));
    assert_eq!(out, written);
    assert_eq!(p.payload(), &data[trunk::HEADER_LEN..]);
    assert_eq!(
        demux::classify(p.payload()),
        if rtcp { Kind::Rtcp } else { Kind::Rtp }
    );
});

/// The layout read plainly: 16 bytes of header and at least two of RTP/RTCP, version 4 (W
/// reserved) or 5 (W defined), media kind not 3, reserved bits zero, and an inner first byte of
/// 128-191 whose second byte is an RTCP packet type (192-223) exactly when the C bit is set.
fn reference(data: &[u8]) -> bool {
    let reserved = match data.first() {
        Some(4) => 0x1f,
        Some(5) => 0x0f,
        _ => return false,
    };
    if data.len() < 18 {
        return false;
    }
    let flags = data[1];
    if flags & reserved != 0 || flags & 0x60 == 0x60 {
        return false;
    }
    let (first, second) = (data[16], data[17]);
    if !(128..=191).contains(&first) {
        return false;
    }
    (flags & 0x80 != 0) == (192..=223).contains(&second)
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
