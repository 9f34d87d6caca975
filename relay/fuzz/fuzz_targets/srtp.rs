//! SRTP and SRTCP (RFC 3711, RFC 7714): unprotecting arbitrary bytes never panics and, when it
//! fails, moves no state of the SSRC the bytes name; a forgery does not authenticate; a packet
//! the relay protected opens to its clear bytes, and any change to it is caught.
//!
//! The first byte picks the profile (bits 0-1) and the mode (bits 2-3): raw bytes to
//! `unprotect_rtp` or `unprotect_rtcp`, or a clear packet built from the rest, protected, then
//! changed at a fuzzed position (or not) before it is unprotected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::packet::rtp::Ssrc;
use relay::srtp::{Egress, Ingress, Keys, MasterKey, Profile};

const KEY: [u8; 32] = [0x2b; 32];
const SALT: [u8; 14] = [0xf0; 14];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let profile = Profile::ALL[usize::from(selector & 3)];
    let master = MasterKey::new(
        profile,
        &KEY[..profile.key_len()],
        &SALT[..profile.salt_len()],
    )
    .expect("fixed lengths are the profile's");
    let mut egress = Egress::new(Keys::new(&master).expect("valid key"));
    let mut ingress = Ingress::new(Keys::new(&master).expect("valid key"));
    // A 32-bit tag can be guessed (2^-32 per try); the others cannot in any fuzzing run.
    let unforgeable = profile.rtp_overhead() >= 10;
    match (selector >> 2) & 3 {
        0 => raw_rtp(&mut egress, &mut ingress, rest, unforgeable),
        1 => raw_rtcp(&egress, &mut ingress, rest),
        2 => changed_rtp(&mut egress, &mut ingress, rest, unforgeable),
        _ => changed_rtcp(&egress, &mut ingress, rest),
    }
});

/// Arbitrary bytes as SRTP, after a genuine packet of the SSRC they name gave it state.
fn raw_rtp(egress: &mut Egress, ingress: &mut Ingress, data: &[u8], unforgeable: bool) {
    let ssrc = word(data, 8).map(Ssrc);
    if let (Some(ssrc), Some(seq)) = (ssrc, data.get(2..4)) {
        let seq = u16::from_be_bytes([seq[0], seq[1]]).wrapping_sub(3);
        let mut buf = [0u8; 64];
        let clear = rtp(&mut buf, ssrc.0, seq, b"state");
        let mut out = [0u8; 96];
        let n = egress.protect_rtp(clear, &mut out).expect("a valid packet seals");
        ingress.unprotect_rtp(&mut out[..n]).expect("a genuine packet opens");
    }
    let before = ssrc.and_then(|s| ingress.rtp_state(s).cloned());
    let mut buf = data.to_vec();
    match ingress.unprotect_rtp(&mut buf) {
        Err(_) => {
            let after = ssrc.and_then(|s| ingress.rtp_state(s).cloned());
            assert_eq!(after, before, "a failure moved state");
        }
        Ok(n) => {
            assert!(!unforgeable, "arbitrary bytes authenticated");
            assert!(n <= data.len());
        }
    }
}

/// Arbitrary bytes as SRTCP, after a genuine compound of the SSRC they name gave it state.
fn raw_rtcp(egress: &Egress, ingress: &mut Ingress, data: &[u8]) {
    let ssrc = word(data, 4).map(Ssrc);
    if let Some(ssrc) = ssrc {
        let clear = rtcp(ssrc.0);
        let mut out = [0u8; 64];
        let n = egress.protect_rtcp(&clear, &mut out).expect("a valid compound seals");
        ingress.unprotect_rtcp(&mut out[..n]).expect("a genuine compound opens");
    }
    let before = ssrc.and_then(|s| ingress.rtcp_state(s).cloned());
    let mut buf = data.to_vec();
    // SRTCP tags are 80 bits or more in every profile.
    if ingress.unprotect_rtcp(&mut buf).is_ok() {
        panic!("arbitrary bytes authenticated as SRTCP");
    }
    let after = ssrc.and_then(|s| ingress.rtcp_state(s).cloned());
    assert_eq!(after, before, "a failure moved state");
}

/// `[seq: 2][position: 2][xor: 1][payload..]`: a packet the relay sealed opens to its clear
/// bytes when untouched, and fails without moving state when one byte changed.
fn changed_rtp(egress: &mut Egress, ingress: &mut Ingress, data: &[u8], unforgeable: bool) {
    let Some((head, payload)) = data.split_at_checked(5) else {
        return;
    };
    let seq = u16::from_be_bytes([head[0], head[1]]);
    let mut buf = vec![0u8; 12 + payload.len()];
    let clear = rtp(&mut buf, 0x5eed, seq, payload).to_vec();
    let mut sealed = vec![0u8; clear.len() + egress.profile().rtp_overhead()];
    let n = egress.protect_rtp(&clear, &mut sealed).expect("a valid packet seals");
    assert_eq!(n, sealed.len());
    let (at, xor) = (usize::from(u16::from_be_bytes([head[2], head[3]])), head[4]);
    if xor == 0 {
        let n = ingress.unprotect_rtp(&mut sealed).expect("an untouched packet opens");
        assert_eq!(sealed[..n], clear[..]);
        return;
    }
    sealed[at % n] ^= xor;
    if ingress.unprotect_rtp(&mut sealed).is_ok() {
        assert!(!unforgeable, "a changed packet authenticated");
        return;
    }
    assert!(ingress.rtp_state(Ssrc(0x5eed)).is_none(), "a failure moved state");
}

/// As [`changed_rtp`], for an SRTCP compound `[position: 2][xor: 1][body..]`.
fn changed_rtcp(egress: &Egress, ingress: &mut Ingress, data: &[u8]) {
    let Some((head, body)) = data.split_at_checked(3) else {
        return;
    };
    let mut clear = rtcp(0x5eed);
    clear.extend_from_slice(body);
    let mut sealed = vec![0u8; clear.len() + egress.profile().rtcp_overhead()];
    let n = egress.protect_rtcp(&clear, &mut sealed).expect("a valid compound seals");
    let (at, xor) = (usize::from(u16::from_be_bytes([head[0], head[1]])), head[2]);
    if xor == 0 {
        let n = ingress.unprotect_rtcp(&mut sealed).expect("an untouched compound opens");
        assert_eq!(sealed[..n], clear[..]);
        return;
    }
    sealed[at % n] ^= xor;
    assert!(
        ingress.unprotect_rtcp(&mut sealed).is_err(),
        "a changed compound authenticated"
    );
    assert!(ingress.rtcp_state(Ssrc(0x5eed)).is_none(), "a failure moved state");
}

/// Writes a clear RTP packet (V=2, PT 96, no CSRC or extension) into `buf`.
fn rtp<'a>(buf: &'a mut [u8], ssrc: u32, seq: u16, payload: &[u8]) -> &'a [u8] {
    buf[..2].copy_from_slice(&[0x80, 96]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&[0; 4]);
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..12 + payload.len()].copy_from_slice(payload);
    &buf[..12 + payload.len()]
}

/// A clear RTCP receiver report header from `ssrc`, no report blocks.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}
