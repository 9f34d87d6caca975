//! RFC 7983 demultiplexing: the kind depends on the first two bytes only, matches the RFC's
//! ranges, and agrees with the RTP and RTCP parsers (whatever they accept has version 2, so it
//! lands in 128..=191).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::packet::demux::{self, Kind};
use relay::packet::{rtcp, rtp};

fuzz_target!(|data: &[u8]| {
    let kind = demux::classify(data);
    if data.len() > 2 {
        assert_eq!(kind, demux::classify(&data[..2]), "looked past byte 2");
    }
    let expected = match data {
        [b0, ..] if *b0 <= 3 => Kind::Stun,
        [b0, ..] if (20..=63).contains(b0) => Kind::Dtls,
        [b0, b1, ..] if (128..=191).contains(b0) && (192..=223).contains(b1) => Kind::Rtcp,
        [b0, _, ..] if (128..=191).contains(b0) => Kind::Rtp,
        _ => Kind::Other,
    };
    assert_eq!(kind, expected);
    if rtp::Packet::new_checked(data).is_ok() {
        assert!(
            matches!(kind, Kind::Rtp | Kind::Rtcp),
            "RTP parsed as {kind:?}"
        );
    }
    if let Some(Ok(_)) = rtcp::compound(data).next() {
        assert!(
            matches!(kind, Kind::Rtp | Kind::Rtcp),
            "RTCP parsed as {kind:?}"
        );
    }
});
