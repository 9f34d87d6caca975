//! Behaviour of a leg end to end: an [`Egress`] seals, an [`Ingress`] with the same master key
//! opens. Rollover across sequence wraps, reordering, jumps, late and replayed packets, forged
//! packets that must move nothing, and the egress guard against index reuse. Helpers here are
//! shared by the other test modules.

use super::*;

/// Bytes from hex digits; whitespace is ignored.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// A clear RTP packet: V=2, PT 96, the given SSRC and sequence number, `csrcs` CSRCs, an
/// RFC 8285 one-byte extension of `ext_words` words when non-zero, and `payload`.
pub(crate) fn rtp_with(ssrc: u32, seq: u16, csrcs: u8, ext_words: u16, payload: &[u8]) -> Vec<u8> {
    let mut b0 = 0x80 | (csrcs & 0x0f);
    if ext_words > 0 {
        b0 |= 0x10;
    }
    let mut p = vec![b0, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..csrcs & 0x0f {
        p.extend_from_slice(&(0x0c00 + u32::from(c)).to_be_bytes());
    }
    if ext_words > 0 {
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&ext_words.to_be_bytes());
        p.extend((0..ext_words * 4).map(|i| i as u8));
    }
    p.extend_from_slice(payload);
    p
}

/// A plain clear RTP packet with a 160-byte payload that depends on `seq`.
pub(crate) fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..160).map(|i| (i as u8) ^ (seq as u8)).collect();
    rtp_with(ssrc, seq, 0, 0, &payload)
}

/// A clear RTCP receiver report from `ssrc` (RFC 3550 §6.4.2) with one report block.
pub(crate) fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

/// A master key for `profile`, distinct per `seed`.
pub(crate) fn master(profile: Profile, seed: u8) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| i.wrapping_mul(13) ^ seed ^ 0x5a)
        .collect();
    MasterKey::new(profile, &key, &salt).unwrap()
}

/// The two ends of one direction of a leg: what the relay seals and what the peer opens.
pub(crate) fn pair(profile: Profile, seed: u8) -> (Egress, Ingress) {
    let m = master(profile, seed);
    (
        Egress::new(Keys::new(&m).unwrap()),
        Ingress::new(Keys::new(&m).unwrap()),
    )
}

pub(crate) fn seal(e: &mut Egress, clear: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; clear.len() + e.profile().rtp_overhead()];
    let n = e.protect_rtp(clear, &mut out)?;
    out.truncate(n);
    Ok(out)
}

pub(crate) fn open(i: &mut Ingress, protected: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = protected.to_vec();
    let n = i.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub(crate) fn seal_rtcp(e: &Egress, clear: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; clear.len() + e.profile().rtcp_overhead()];
    let n = e.protect_rtcp(clear, &mut out)?;
    out.truncate(n);
    Ok(out)
}

pub(crate) fn open_rtcp(i: &mut Ingress, protected: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = protected.to_vec();
    let n = i.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

const SSRC: u32 = 0x1234_5678;

#[test]
fn round_trip_every_profile_and_header_shape() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 1);
        for (i, (csrcs, ext)) in [(0, 0), (3, 0), (0, 2), (15, 5)].into_iter().enumerate() {
            let clear = rtp_with(SSRC, 100 + i as u16, csrcs, ext, b"payload bytes");
            let protected = seal(&mut tx, &clear).unwrap();
            assert_eq!(protected.len(), clear.len() + profile.rtp_overhead());
            // The header stays in the clear, the payload does not.
            let header = clear.len() - 13;
            assert_eq!(protected[..header], clear[..header], "{profile}");
            assert_ne!(protected[header..clear.len()], clear[header..], "{profile}");
            assert_eq!(open(&mut rx, &protected).unwrap(), clear, "{profile}");
        }
        // An empty payload still carries a tag.
        let clear = rtp_with(SSRC, 200, 0, 0, &[]);
        assert_eq!(
            open(&mut rx, &seal(&mut tx, &clear).unwrap()).unwrap(),
            clear
        );
        // RTCP.
        let clear = rtcp_rr(SSRC);
        let protected = seal_rtcp(&tx, &clear).unwrap();
        assert_eq!(protected.len(), clear.len() + profile.rtcp_overhead());
        assert_eq!(protected[..8], clear[..8]);
        assert_eq!(open_rtcp(&mut rx, &protected).unwrap(), clear, "{profile}");
    }
}

#[test]
fn in_place_and_copy_give_the_same_bytes() {
    for profile in Profile::ALL {
        let (mut a, _) = pair(profile, 2);
        let (mut b, _) = pair(profile, 2);
        let clear = rtp_with(SSRC, 7, 2, 1, &[0xaa; 300]);
        let copied = seal(&mut a, &clear).unwrap();
        let mut buf = clear.clone();
        buf.resize(clear.len() + profile.rtp_overhead(), 0);
        let n = b.protect_rtp_in_place(&mut buf, clear.len()).unwrap();
        assert_eq!(buf[..n], copied[..], "{profile}");

        let rr = rtcp_rr(SSRC);
        let copied = seal_rtcp(&a, &rr).unwrap();
        let mut buf = rr.clone();
        buf.resize(rr.len() + profile.rtcp_overhead(), 0);
        let n = b.protect_rtcp_in_place(&mut buf, rr.len()).unwrap();
        assert_eq!(buf[..n], copied[..], "{profile}");
    }
}

#[test]
fn sequence_wrap_advances_the_roc_on_both_ends() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 3);
        let mut seq = 65_530u16;
        for _ in 0..12 {
            let clear = rtp(SSRC, seq);
            assert_eq!(
                open(&mut rx, &seal(&mut tx, &clear).unwrap()).unwrap(),
                clear
            );
            seq = seq.wrapping_add(1);
        }
        assert_eq!(tx.rtp_state(Ssrc(SSRC)).unwrap().roc(), 1, "{profile}");
        assert_eq!(rx.rtp_state(Ssrc(SSRC)).unwrap().roc(), 1, "{profile}");
        assert_eq!(
            rx.rtp_state(Ssrc(SSRC)).unwrap().highest(),
            Some(1 << 16 | 5)
        );
    }
}

#[test]
fn reordering_across_the_wrap() {
    let (mut tx, mut rx) = pair(Profile::AeadAes128Gcm, 4);
    // The relay receives 65,534, 0, 65,535, 1 (reordered before it) and forwards them so.
    let sealed: Vec<(u16, Vec<u8>)> = [65_534u16, 0, 65_535, 1]
        .into_iter()
        .map(|s| (s, seal(&mut tx, &rtp(SSRC, s)).unwrap()))
        .collect();
    assert_eq!(
        tx.rtp_state(Ssrc(SSRC)).unwrap().highest(),
        Some(1 << 16 | 1)
    );
    // The receiver gets them in yet another order. (Its first packet of an SSRC fixes ROC 0, as
    // for any SRTP receiver, so that one must come from before the wrap.)
    for at in [0usize, 3, 1, 2] {
        let (s, p) = &sealed[at];
        assert_eq!(open(&mut rx, p).unwrap(), rtp(SSRC, *s), "seq {s}");
    }
    let state = rx.rtp_state(Ssrc(SSRC)).unwrap();
    assert_eq!((state.roc(), state.highest()), (1, Some(1 << 16 | 1)));
}

#[test]
fn a_jump_of_more_than_half_the_sequence_is_refused_and_moves_nothing() {
    let m = master(Profile::Aes128CmHmacSha1_80, 5);
    let mut tx = Egress::new(Keys::new(&m).unwrap());
    let mut rx = Ingress::new(Keys::new(&m).unwrap());
    for seq in 990..=1000 {
        open(&mut rx, &seal(&mut tx, &rtp(SSRC, seq)).unwrap()).unwrap();
    }
    let before = rx.rtp_state(Ssrc(SSRC)).cloned();
    // A sender that really is 40,000 packets ahead, still in ROC 0 (a fresh egress seals seq
    // 41,000 under index 41,000).
    let mut ahead = Egress::new(Keys::new(&m).unwrap());
    let jumped = seal(&mut ahead, &rtp(SSRC, 41_000)).unwrap();
    // Appendix A reads it as ROC - 1: below zero, so too old. Nothing moves.
    assert_eq!(open(&mut rx, &jumped), Err(Error::TooOld));
    assert_eq!(rx.rtp_state(Ssrc(SSRC)).cloned(), before);
    // The relay's own egress estimates the same way and refuses to seal it.
    assert_eq!(seal(&mut tx, &rtp(SSRC, 41_000)), Err(Error::IndexReuse));
    // The stream carries on from where it was.
    assert!(open(&mut rx, &seal(&mut tx, &rtp(SSRC, 1001)).unwrap()).is_ok());
}

#[test]
fn late_packets_within_the_window_pass_once_older_ones_never() {
    let (mut tx, mut rx) = pair(Profile::AeadAes256Gcm, 6);
    let held = seal(&mut tx, &rtp(SSRC, 10)).unwrap();
    let too_late = seal(&mut tx, &rtp(SSRC, 11)).unwrap();
    for seq in 12..=(11 + REPLAY_WINDOW as u16) {
        open(&mut rx, &seal(&mut tx, &rtp(SSRC, seq)).unwrap()).unwrap();
    }
    // Highest is 11 + 1024: index 11 is 1024 behind (outside), 12 would be the oldest inside.
    assert_eq!(open(&mut rx, &held), Err(Error::TooOld));
    assert_eq!(open(&mut rx, &too_late), Err(Error::TooOld));
    let (mut tx2, mut rx2) = pair(Profile::AeadAes256Gcm, 6);
    let late = seal(&mut tx2, &rtp(SSRC, 500)).unwrap();
    for seq in 501..=1400 {
        open(&mut rx2, &seal(&mut tx2, &rtp(SSRC, seq)).unwrap()).unwrap();
    }
    assert_eq!(open(&mut rx2, &late).unwrap(), rtp(SSRC, 500));
    assert_eq!(open(&mut rx2, &late), Err(Error::Replayed));
}

#[test]
fn duplicates_are_refused() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 7);
        let p = seal(&mut tx, &rtp(SSRC, 3)).unwrap();
        assert!(open(&mut rx, &p).is_ok());
        assert_eq!(open(&mut rx, &p), Err(Error::Replayed), "{profile}");
        let r = seal_rtcp(&tx, &rtcp_rr(SSRC)).unwrap();
        assert!(open_rtcp(&mut rx, &r).is_ok());
        assert_eq!(open_rtcp(&mut rx, &r), Err(Error::Replayed), "{profile}");
    }
}

#[test]
fn a_forged_packet_moves_neither_roc_nor_window() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 8);
        for seq in 65_500..=65_535 {
            open(&mut rx, &seal(&mut tx, &rtp(SSRC, seq)).unwrap()).unwrap();
        }
        let before = rx.rtp_state(Ssrc(SSRC)).cloned();
        // The packet that would take the ROC to 1, with one bit flipped in each place.
        let good = seal(&mut tx, &rtp(SSRC, 0)).unwrap();
        for at in [1, 5, 12, 40, good.len() - 1] {
            let mut forged = good.clone();
            forged[at] ^= 0x10;
            assert!(open(&mut rx, &forged).is_err(), "{profile} byte {at}");
            assert_eq!(
                rx.rtp_state(Ssrc(SSRC)).cloned(),
                before,
                "{profile} byte {at}"
            );
        }
        // A forged packet of a new SSRC creates no state.
        let mut stranger = seal(&mut tx, &rtp(0x0bad_f00d, 1)).unwrap();
        let last = stranger.len() - 1;
        stranger[last] ^= 1;
        assert_eq!(open(&mut rx, &stranger), Err(Error::AuthFailed));
        assert!(rx.rtp_state(Ssrc(0x0bad_f00d)).is_none());
        // The genuine packet still passes, and only then the ROC moves.
        assert_eq!(open(&mut rx, &good).unwrap(), rtp(SSRC, 0));
        assert_eq!(rx.rtp_state(Ssrc(SSRC)).unwrap().roc(), 1);

        // SRTCP: a forged index cannot move the window either.
        let r = seal_rtcp(&tx, &rtcp_rr(SSRC)).unwrap();
        open_rtcp(&mut rx, &r).unwrap();
        let before = rx.rtcp_state(Ssrc(SSRC)).cloned();
        let mut forged = seal_rtcp(&tx, &rtcp_rr(SSRC)).unwrap();
        let trailer =
            forged.len() - profile.rtcp_overhead() + if profile.is_aead() { 16 } else { 0 };
        forged[trailer + 2] ^= 0x40; // the SRTCP index
        assert_eq!(
            open_rtcp(&mut rx, &forged),
            Err(Error::AuthFailed),
            "{profile}"
        );
        assert_eq!(rx.rtcp_state(Ssrc(SSRC)).cloned(), before, "{profile}");
    }
}

/// A publisher leaves and rejoins with the same SSRC, restarting its sequence. The relay must
/// not seal its new packets under indices it already used for this receiver.
#[test]
fn publisher_rejoining_with_the_same_ssrc_cannot_reuse_an_index() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 9);
        for seq in 100..=600 {
            open(&mut rx, &seal(&mut tx, &rtp(SSRC, seq)).unwrap()).unwrap();
        }
        // Rejoined: same SSRC, sequence back at 300, different payload.
        let rejoined = |seq: u16| rtp_with(SSRC, seq, 0, 0, &[0xee; 100]);
        let before = tx.rtp_state(Ssrc(SSRC)).cloned();
        for seq in [300u16, 100, 600] {
            assert_eq!(
                seal(&mut tx, &rejoined(seq)),
                Err(Error::IndexReuse),
                "{profile}"
            );
            let mut buf = rejoined(seq);
            let len = buf.len();
            buf.resize(len + profile.rtp_overhead(), 0);
            assert_eq!(
                tx.protect_rtp_in_place(&mut buf, len),
                Err(Error::IndexReuse),
                "{profile}"
            );
        }
        assert_eq!(tx.rtp_state(Ssrc(SSRC)).cloned(), before);
        // Indices never used are fine, even below the highest (nothing to reuse)...
        let fresh = seal(&mut tx, &rejoined(50)).unwrap();
        assert_eq!(open(&mut rx, &fresh).unwrap(), rejoined(50));
        // ...and so is everything past the old highest.
        assert!(open(&mut rx, &seal(&mut tx, &rejoined(601)).unwrap()).is_ok());
        // Far behind (older than the window): cannot tell, so refused.
        for seq in 602..=3000 {
            seal(&mut tx, &rtp(SSRC, seq)).unwrap();
        }
        assert_eq!(seal(&mut tx, &rejoined(700)), Err(Error::IndexReuse));
    }
}

#[test]
fn a_full_ssrc_table_refuses_new_ssrcs_only() {
    let m = master(Profile::AeadAes128Gcm, 10);
    let mut tx = Egress::with_capacity(Keys::new(&m).unwrap(), 2);
    let mut rx = Ingress::with_capacity(Keys::new(&m).unwrap(), 2);
    let mut wide_tx = Egress::new(Keys::new(&m).unwrap());
    for ssrc in [1, 2] {
        open(&mut rx, &seal(&mut tx, &rtp(ssrc, 1)).unwrap()).unwrap();
    }
    assert_eq!(seal(&mut tx, &rtp(3, 1)), Err(Error::SsrcTableFull));
    let third = seal(&mut wide_tx, &rtp(3, 1)).unwrap();
    assert_eq!(open(&mut rx, &third), Err(Error::SsrcTableFull));
    assert!(rx.rtp_state(Ssrc(3)).is_none());
    open(&mut rx, &seal(&mut tx, &rtp(2, 2)).unwrap()).unwrap();
}

#[test]
fn siblings_share_the_srtcp_index_and_move_streams() {
    let (mut a, mut rx) = pair(Profile::Aes128CmHmacSha1_80, 11);
    let mut b = a.sibling();
    // Alternate siblings: the receiver sees indices 0, 1, 2, 3, ... and no replay.
    for n in 0..8u8 {
        let e = if n % 2 == 0 { &a } else { &b };
        let p = seal_rtcp(e, &rtcp_rr(SSRC)).unwrap();
        let trailer = p.len() - 14;
        assert_eq!(
            p[trailer..trailer + 4],
            [0x80, 0, 0, n],
            "E flag and index {n}"
        );
        open_rtcp(&mut rx, &p).unwrap();
    }
    // An SSRC's send state moves with its publisher from one worker's sibling to another's.
    for seq in 1..=10 {
        seal(&mut a, &rtp(SSRC, seq)).unwrap();
    }
    let state = a.take_stream(Ssrc(SSRC)).unwrap();
    assert!(a.rtp_state(Ssrc(SSRC)).is_none());
    b.put_stream(Ssrc(SSRC), state.clone()).unwrap();
    assert_eq!(b.put_stream(Ssrc(SSRC), state), Err(Error::IndexReuse));
    assert_eq!(seal(&mut b, &rtp(SSRC, 5)), Err(Error::IndexReuse));
    assert!(seal(&mut b, &rtp(SSRC, 11)).is_ok());
}

#[test]
fn srtcp_index_runs_out() {
    let (tx, _) = pair(Profile::AeadAes128Gcm, 12);
    tx.set_rtcp_index(0x7fff_ffff);
    let last = seal_rtcp(&tx, &rtcp_rr(SSRC)).unwrap();
    assert_eq!(last[last.len() - 4..], [0xff, 0xff, 0xff, 0xff]);
    assert_eq!(seal_rtcp(&tx, &rtcp_rr(SSRC)), Err(Error::KeyExhausted));
}

#[test]
fn bad_input_is_refused_without_moving_state() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = pair(profile, 13);
        let tag = profile.rtp_overhead();
        // Too short for a header, or for header and tag.
        assert_eq!(rx.unprotect_rtp(&mut [0x80; 11]), Err(Error::TooShort));
        let mut short = rtp_with(SSRC, 1, 0, 0, &[]);
        short.extend(std::iter::repeat_n(0, tag - 1));
        assert_eq!(rx.unprotect_rtp(&mut short), Err(Error::TooShort));
        // Version 1; CSRCs past the end; extension past the end.
        let mut v1 = rtp(SSRC, 1);
        v1[0] = 0x40;
        assert_eq!(rx.unprotect_rtp(&mut v1), Err(Error::BadHeader));
        assert_eq!(rx.unprotect_rtp(&mut [0x8f; 40]), Err(Error::BadHeader));
        let mut ext = rtp_with(SSRC, 1, 0, 1, &[]);
        ext[14] = 0xff;
        assert_eq!(rx.unprotect_rtp(&mut ext), Err(Error::BadHeader));
        assert!(rx.rtp_state(Ssrc(SSRC)).is_none());
        // SRTCP too short, or not version 2.
        assert_eq!(
            rx.unprotect_rtcp(&mut vec![0x81; 8 + profile.rtcp_overhead() - 1]),
            Err(Error::TooShort)
        );
        assert_eq!(rx.unprotect_rtcp(&mut [0x41; 40]), Err(Error::BadHeader));
        // An output slot without room for the tag, and egress input that is not RTP.
        let clear = rtp(SSRC, 1);
        let mut slot = vec![0; clear.len() + tag - 1];
        assert_eq!(
            tx.protect_rtp(&clear, &mut slot),
            Err(Error::BufferTooSmall)
        );
        let mut buf = clear.clone();
        assert_eq!(
            tx.protect_rtp_in_place(&mut buf, clear.len()),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            tx.protect_rtp_in_place(&mut buf, clear.len() + 1),
            Err(Error::BufferTooSmall)
        );
        assert!(tx.rtp_state(Ssrc(SSRC)).is_none());
        assert_eq!(
            tx.protect_rtp(&[0x80; 5], &mut [0; 64]),
            Err(Error::TooShort)
        );
        assert_eq!(
            tx.protect_rtcp(&[0x80; 5], &mut [0; 64]),
            Err(Error::TooShort)
        );
        assert_eq!(
            tx.protect_rtcp(&[0x40; 20], &mut [0; 64]),
            Err(Error::BadHeader)
        );
        assert_eq!(
            tx.protect_rtcp(&rtcp_rr(SSRC), &mut [0; 32]),
            Err(Error::BufferTooSmall)
        );
        // After all that, the first real packet is the first the leg saw.
        let p = seal(&mut tx, &clear).unwrap();
        assert_eq!(open(&mut rx, &p).unwrap(), clear);
    }
}

#[test]
fn keys_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    fn owned<T: Send>() {}
    shared::<Keys>();
    owned::<Ingress>();
    owned::<Egress>();
}

#[test]
fn errors_have_distinct_names() {
    let names: std::collections::BTreeSet<&str> = Error::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(names.len(), Error::ALL.len());
}
