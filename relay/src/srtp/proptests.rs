//! Property tests: protect then unprotect gives back the clear bytes for any packet, keys and
//! profile; unprotecting arbitrary bytes never panics and, when it fails, moves no state; any
//! change to a protected packet is caught.

use proptest::prelude::*;

use super::tests::{rtp_with, seal, seal_rtcp};
use super::*;

fn profile() -> impl Strategy<Value = Profile> {
    prop::sample::select(Profile::ALL.to_vec())
}

/// A leg's two ends from random master key bytes.
fn ends(profile: Profile, bytes: &[u8]) -> (Egress, Ingress) {
    let key = &bytes[..profile.key_len()];
    let salt = &bytes[32..32 + profile.salt_len()];
    let m = MasterKey::new(profile, key, salt).unwrap();
    (
        Egress::new(Keys::new(&m).unwrap()),
        Ingress::new(Keys::new(&m).unwrap()),
    )
}

/// A clear RTCP compound: a valid first header, then anything.
fn rtcp(ssrc: u32, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(body);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn protect_then_unprotect_round_trips(
        profile in profile(),
        key in prop::collection::vec(any::<u8>(), 46),
        ssrc: u32,
        first_seq: u16,
        packets in prop::collection::vec(
            (0u8..16, 0u16..4, prop::collection::vec(any::<u8>(), 0..1400)),
            1..8,
        ),
        rtcp_body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let (mut tx, mut rx) = ends(profile, &key);
        for (n, (csrcs, ext, payload)) in packets.iter().enumerate() {
            let seq = first_seq.wrapping_add(n as u16);
            let clear = rtp_with(ssrc, seq, *csrcs, *ext, payload);
            let protected = seal(&mut tx, &clear).unwrap();
            prop_assert_eq!(protected.len(), clear.len() + profile.rtp_overhead());
            let mut buf = protected.clone();
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &clear[..]);
        }
        let clear = rtcp(ssrc, &rtcp_body);
        let protected = seal_rtcp(&tx, &clear).unwrap();
        let mut buf = protected;
        let n = rx.unprotect_rtcp(&mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &clear[..]);
    }

    #[test]
    fn unprotect_of_arbitrary_bytes_fails_cleanly(
        profile in profile(),
        datagram in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (mut tx, mut rx) = ends(profile, &[7; 46]);
        // Give the SSRC the datagram names some state, so a wrong move would show.
        let named = |at: usize| datagram.get(at..at + 4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        if let Some(ssrc) = named(8) {
            let p = seal(&mut tx, &rtp_with(ssrc, 1, 0, 0, b"x")).unwrap();
            rx.unprotect_rtp(&mut p.clone()).unwrap();
        }
        if let Some(ssrc) = named(4) {
            let p = seal_rtcp(&tx, &rtcp(ssrc, b"")).unwrap();
            rx.unprotect_rtcp(&mut p.clone()).unwrap();
        }
        let rtp_before = named(8).and_then(|s| rx.rtp_state(Ssrc(s)).cloned());
        let rtcp_before = named(4).and_then(|s| rx.rtcp_state(Ssrc(s)).cloned());
        let mut buf = datagram.clone();
        if let Err(_e) = rx.unprotect_rtp(&mut buf) {
            prop_assert_eq!(named(8).and_then(|s| rx.rtp_state(Ssrc(s)).cloned()), rtp_before);
        }
        let mut buf = datagram.clone();
        if let Err(_e) = rx.unprotect_rtcp(&mut buf) {
            prop_assert_eq!(named(4).and_then(|s| rx.rtcp_state(Ssrc(s)).cloned()), rtcp_before);
        }
    }

    /// Every byte of an SRTP or SRTCP packet is authenticated: change any and it fails.
    #[test]
    fn any_change_is_caught(
        profile in profile(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        at: prop::sample::Index,
        flip in 1u8..=255,
    ) {
        let (mut tx, mut rx) = ends(profile, &[9; 46]);
        let clear = rtp_with(0xabcd, 77, 1, 1, &payload);
        let mut forged = seal(&mut tx, &clear).unwrap();
        let i = at.index(forged.len());
        forged[i] ^= flip;
        prop_assert!(rx.unprotect_rtp(&mut forged).is_err());
        prop_assert!(rx.rtp_state(Ssrc(0xabcd)).is_none());

        let mut forged = seal_rtcp(&tx, &rtcp(0xabcd, &payload)).unwrap();
        let i = at.index(forged.len());
        forged[i] ^= flip;
        prop_assert!(rx.unprotect_rtcp(&mut forged).is_err());
    }
}
