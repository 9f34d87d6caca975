//! SDP from real programs (testdata/, captured with tests/browser/capture.mjs and
//! aiortc_capture.py), the relay's answers and offers built from them, and properties.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

const CHROMIUM_OFFER: &str = include_str!("testdata/chromium_publish_offer.sdp");
const CHROMIUM_ANSWER: &str = include_str!("testdata/chromium_recvonly_answer.sdp");
const AIORTC_OFFER: &str = include_str!("testdata/aiortc_publish_offer.sdp");
const FIREFOX_OFFER: &str = include_str!("testdata/firefox_publish_offer.sdp");

fn local() -> Local {
    Local {
        ice: IceCredentials { ufrag: "evtj".to_owned(), pwd: "VOkJxbRl1RmTxUk/WvJxBt".to_owned() },
        fingerprint: Fingerprint::parse(
            "sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
        )
        .unwrap(),
        addresses: vec!["127.0.0.1:40000".parse().unwrap(), "[::1]:40000".parse().unwrap()],
        session_id: 4242,
        session_version: 1,
    }
}

#[test]
fn parses_chromium_publish_offer() {
    let s = parse(CHROMIUM_OFFER).unwrap();
    assert_eq!(s.bundle, ["0", "1"]);
    assert_eq!(s.media.len(), 2);
    let (audio, video) = (&s.media[0], &s.media[1]);
    assert_eq!(audio.kind, MediaKind::Audio);
    assert_eq!(audio.line, 8);
    assert_eq!(audio.mid.as_deref(), Some("0"));
    assert_eq!(audio.direction, Direction::SendOnly);
    assert!(audio.rtcp_mux && audio.rtcp_rsize);
    assert_eq!(s.ice_of(audio).unwrap().ufrag, "UXcH");
    assert_eq!(s.ice_of(audio).unwrap().pwd, "YH0aVUJ57LGntBkna0uagNCH");
    assert_eq!(s.fingerprints_of(audio)[0].hash, HashFunction::Sha256);
    assert_eq!(s.setup_of(audio), Some(Setup::ActPass));
    let opus = audio.payload(111).unwrap();
    assert_eq!(
        (opus.encoding.as_str(), opus.clock_rate, opus.channels),
        ("opus", 48000, Some(2))
    );
    assert_eq!(opus.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
    assert_eq!(opus.rtcp_fb, ["transport-cc"]);
    assert_eq!(audio.ssrcs.len(), 1);
    assert_eq!(audio.ssrcs[0].ssrc, 3403956634);
    assert_eq!(audio.ssrcs[0].cname.as_deref(), Some("QHclbWbB7gPMuUm4"));
    assert_eq!(audio.extmaps.len(), 4);
    assert_eq!(audio.extmaps[3].uri, "urn:ietf:params:rtp-hdrext:sdes:mid");
    assert_eq!(
        audio.msid.as_ref().unwrap().stream,
        "d20e6453-d24a-40b8-9fa5-c711fd205743"
    );
    assert_eq!(video.payloads.len(), 23);
    assert_eq!(
        video.payload(96).unwrap().rtcp_fb,
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!(video.payload(97).unwrap().fmtp.as_deref(), Some("apt=96"));
    assert_eq!(
        video.ssrc_groups,
        [SsrcGroup {
            semantics: "FID".into(),
            ssrcs: vec![124262192, 2454110272]
        }]
    );
    assert_eq!(
        video
            .ssrc(2454110272)
            .unwrap()
            .msid
            .as_ref()
            .unwrap()
            .track
            .as_deref(),
        Some("9625146d-a425-4baa-8a31-6d3192136176")
    );
    assert!(video.candidates.is_empty() && !video.end_of_candidates);
}

#[test]
fn parses_aiortc_offer_with_three_fingerprints_and_candidates() {
    let s = parse(AIORTC_OFFER).unwrap();
    let audio = &s.media[0];
    let hashes: Vec<_> = audio.fingerprints.iter().map(|f| f.hash).collect();
    assert_eq!(
        hashes,
        [
            HashFunction::Sha256,
            HashFunction::Sha384,
            HashFunction::Sha512
        ]
    );
    assert_eq!(audio.candidates.len(), 2);
    assert_eq!(audio.candidates[1].address, "fd00::2");
    assert_eq!(audio.candidates[0].typ, "host");
    assert!(audio.end_of_candidates);
    assert_eq!(s.ice_of(audio).unwrap().ufrag, "ZLUI");
    assert!(s.ice.is_none());
    assert_eq!(audio.payload(96).unwrap().encoding, "opus");
    assert!(
        s.media[1]
            .payload(101)
            .unwrap()
            .fmtp
            .as_deref()
            .unwrap()
            .contains("42e01f")
    );
}

#[test]
fn firefox_offer_with_bundle_only_second_section() {
    let s = parse(FIREFOX_OFFER).unwrap();
    // Session-level fingerprint, port 0 + a=bundle-only on the video section (max-bundle).
    assert_eq!(s.fingerprints.len(), 1);
    let video = &s.media[1];
    assert_eq!(
        (video.port, video.bundle_only, video.is_active()),
        (0, true, true)
    );
    assert_eq!(s.fingerprints_of(video), s.fingerprints.as_slice());
    let p = answer_publish(&s, &CodecTable::new(), &local()).unwrap();
    let entries: Vec<_> = p
        .table
        .entries()
        .iter()
        .map(|e| (e.codec, e.pt, e.rtx))
        .collect();
    // Debian's Firefox ESR offers no H.264 (OpenH264 is a download).
    assert_eq!(
        entries,
        [(Codec::Opus, 109, None), (Codec::Vp8, 120, Some(124))]
    );
    assert_eq!(p.tracks.len(), 2);
    assert_eq!(
        (p.tracks[1].ssrc, p.tracks[1].rtx_ssrc),
        (1306033615, Some(1964651653))
    );
    assert_eq!(p.answer.media[1].port, 9);
    assert!(!write(&p.answer).contains("bundle-only"));
}

#[test]
fn parses_chromium_recvonly_answer() {
    let s = parse(CHROMIUM_ANSWER).unwrap();
    assert!(
        s.media
            .iter()
            .all(|m| m.direction == Direction::RecvOnly && m.ssrcs.is_empty())
    );
    assert_eq!(s.setup_of(&s.media[0]), Some(Setup::Active));
}

#[test]
fn publish_answer_to_chromium() {
    let offer = parse(CHROMIUM_OFFER).unwrap();
    let p = answer_publish(&offer, &CodecTable::new(), &local()).unwrap();
    let entries: Vec<_> = p
        .table
        .entries()
        .iter()
        .map(|e| (e.codec, e.pt, e.rtx))
        .collect();
    assert_eq!(
        entries,
        [
            (Codec::Opus, 111, None),
            (Codec::Vp8, 96, Some(97)),
            (Codec::H264, 108, Some(109))
        ]
    );
    assert_eq!(p.tracks.len(), 2);
    assert_eq!(
        (
            p.tracks[0].kind.clone(),
            p.tracks[0].ssrc,
            p.tracks[0].rtx_ssrc
        ),
        (MediaKind::Audio, 3403956634, None)
    );
    assert_eq!(
        (p.tracks[1].ssrc, p.tracks[1].rtx_ssrc),
        (124262192, Some(2454110272))
    );
    assert_eq!(
        p.tracks[1].msid.track.as_deref(),
        Some("9625146d-a425-4baa-8a31-6d3192136176")
    );
    assert_eq!(p.remote.ice.ufrag, "UXcH");
    assert_eq!(p.remote.fingerprints, offer.media[0].fingerprints);

    let text = write(&p.answer);
    for needed in [
        "a=ice-lite\r\n",
        "a=group:BUNDLE 0 1\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 108 109\r\n",
        "a=recvonly\r\n",
        "a=setup:passive\r\n",
        "a=rtcp-mux\r\n",
        "a=ice-ufrag:evtj\r\n",
        "a=fingerprint:sha-256 AB:CD:EF:01",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n",
        "a=candidate:2 1 udp 2130706175 ::1 40000 typ host\r\n",
        "a=end-of-candidates\r\n",
        "a=rtcp-fb:96 nack\r\n",
        "a=rtcp-fb:96 nack pli\r\n",
        "a=rtcp-fb:108 ccm fir\r\n",
        "a=fmtp:97 apt=96\r\n",
        "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
        "a=rtpmap:111 opus/48000/2\r\n",
    ] {
        assert!(text.contains(needed), "missing {needed:?} in\n{text}");
    }
    for banned in [
        "transport-cc",
        "goog-remb",
        "extmap",
        "sdes:mid",
        "sendrecv",
        "rtcp-rsize",
        "a=ssrc",
    ] {
        assert!(!text.contains(banned), "{banned:?} in\n{text}");
    }
    let back = parse(&text).unwrap();
    assert_eq!(strip_lines(back), p.answer);
}

#[test]
fn publish_answer_to_aiortc_and_a_later_chromium_in_the_same_room() {
    let aiortc = parse(AIORTC_OFFER).unwrap();
    let first = answer_publish(&aiortc, &CodecTable::new(), &local()).unwrap();
    let entries: Vec<_> = first
        .table
        .entries()
        .iter()
        .map(|e| (e.codec, e.pt, e.rtx))
        .collect();
    assert_eq!(
        entries,
        [
            (Codec::Opus, 96, None),
            (Codec::Vp8, 97, Some(98)),
            (Codec::H264, 101, Some(102))
        ]
    );
    assert_eq!(first.tracks[1].rtx_ssrc, Some(3514402296));
    // aiortc has no a=msid per SSRC but one per section.
    assert_eq!(
        first.tracks[0].msid.track.as_deref(),
        Some("ebfabac2-81ec-4e04-816c-07b17e6aea46")
    );
    // Chromium gives 96 to VP8 and 97 to its RTX, the room gives 96 to Opus: the answer still
    // carries the room's numbers (the relay only receives here; browsers send with the
    // answer's numbers, tests/tests/webrtc_sdp.rs).
    let chromium = parse(CHROMIUM_OFFER).unwrap();
    let second = answer_publish(&chromium, &first.table, &local()).unwrap();
    assert_eq!(second.table, first.table, "nothing new for the room");
    let text = write(&second.answer);
    assert!(
        text.contains("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"),
        "{text}"
    );
    assert!(
        text.contains("m=video 9 UDP/TLS/RTP/SAVPF 97 98 101 102\r\n"),
        "{text}"
    );
    assert!(text.contains("a=fmtp:98 apt=97\r\n"), "{text}");
}

#[test]
fn codec_mismatch_where_the_relay_would_send_with_other_numbers() {
    // RFC 3264 §6.1: an answerer that sends uses the offer's numbers. A room with Chromium's
    // numbers cannot send VP8 to an aiortc offer that wants it as 97.
    let room = CodecTable::new()
        .negotiate(&parse(CHROMIUM_OFFER).unwrap(), |_| false)
        .unwrap()
        .table;
    let aiortc = parse(AIORTC_OFFER).unwrap();
    let err = room
        .negotiate(&aiortc, |m| m.kind == MediaKind::Video)
        .unwrap_err();
    assert_eq!(
        (err.codec, err.rtx, err.room_pt, err.offer_pt, err.line),
        (Codec::Vp8, false, 96, 97, 30)
    );
    assert!(
        err.to_string()
            .starts_with("VP8: the room sends payload type 96"),
        "{err}"
    );
    assert_eq!(ExchangeError::CodecMismatch(err).code(), "codec_mismatch");
    // Same numbers: nothing to refuse.
    let same = room
        .negotiate(&parse(CHROMIUM_OFFER).unwrap(), |_| true)
        .unwrap();
    assert_eq!(same.table, room);
    // Only the RTX differs.
    let rtx = CHROMIUM_OFFER
        .replace(" 96 97 102", " 96 121 102")
        .replace("a=rtpmap:97 rtx", "a=rtpmap:121 rtx")
        .replace("a=fmtp:97 apt", "a=fmtp:121 apt");
    let err = room.negotiate(&parse(&rtx).unwrap(), |_| true).unwrap_err();
    assert_eq!(
        (err.codec, err.rtx, err.room_pt, err.offer_pt),
        (Codec::Vp8, true, 97, 121)
    );
}

#[test]
fn later_offer_with_other_free_numbers_is_answered_with_the_rooms() {
    // A room whose VP8 is 121/122 (numbers Chromium does not use): its offer is answered with
    // them, and its tracks stay as declared.
    let chromium = parse(CHROMIUM_OFFER).unwrap();
    let room = CodecTable::new()
        .negotiate(&parse(&renumbered(CHROMIUM_OFFER)).unwrap(), |_| false)
        .unwrap()
        .table;
    assert_eq!(
        room.entry(Codec::Vp8).map(|e| (e.pt, e.rtx)),
        Some((121, Some(122)))
    );
    let p = answer_publish(&chromium, &room, &local()).unwrap();
    assert_eq!(p.table, room);
    assert!(write(&p.answer).contains("m=video 9 UDP/TLS/RTP/SAVPF 121 122 108 109\r\n"));
}

/// The Chromium offer with VP8 moved from 96/97 to 121/122.
pub(crate) fn renumbered(offer: &str) -> String {
    offer
        .replace(" 96 97 ", " 121 122 ")
        .replace(":96 ", ":121 ")
        .replace(":97 ", ":122 ")
        .replace("apt=96", "apt=121")
}

#[test]
fn data_channel_and_unknown_codecs_are_rejected_with_port_0() {
    let mut text = CHROMIUM_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2");
    text.push_str("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n");
    text.push_str("m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:3\r\na=rtpmap:98 VP9/90000\r\na=sendonly\r\na=rtcp-mux\r\n");
    let offer = parse(&text).unwrap();
    let p = answer_publish(&offer, &CodecTable::new(), &local()).unwrap();
    assert_eq!(p.answer.bundle, ["0", "1"]);
    let rejected: Vec<_> = p
        .answer
        .media
        .iter()
        .filter(|m| m.port == 0)
        .map(|m| m.mid.clone().unwrap())
        .collect();
    assert_eq!(rejected, ["2", "3"]);
    let written = write(&p.answer);
    assert!(
        written.contains("m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"),
        "{written}"
    );
    assert_eq!(p.tracks.len(), 2);
}

#[test]
fn publish_offers_the_relay_cannot_take_name_the_line() {
    let cases: &[(&str, &str, usize)] = &[
        // Chromium without a=ssrc (as with rid-based simulcast).
        ("a=ssrc:3403956634 cname:QHclbWbB7gPMuUm4\r\n", "", 8),
        ("a=setup:actpass", "a=setup:passive", 8),
        ("a=rtcp-mux\r\n", "", 8),
        ("a=group:BUNDLE 0 1", "a=group:BUNDLE 1", 8),
    ];
    for (from, to, line) in cases {
        let text = if *from == "a=ssrc:3403956634 cname:QHclbWbB7gPMuUm4\r\n" {
            CHROMIUM_OFFER
                .lines()
                .filter(|l| !l.starts_with("a=ssrc:3403956634"))
                .collect::<Vec<_>>()
                .join("\r\n")
        } else {
            CHROMIUM_OFFER.replacen(from, to, 1)
        };
        let err = answer_publish(&parse(&text).unwrap(), &CodecTable::new(), &local()).unwrap_err();
        let ExchangeError::Invalid(e) = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (e.line, err.code(), err.status()),
            (*line, "invalid_sdp", 400),
            "{from}: {err}"
        );
    }
    let sim = CHROMIUM_OFFER.replace("a=ssrc-group:FID", "a=ssrc-group:SIM");
    let err = answer_publish(&parse(&sim).unwrap(), &CodecTable::new(), &local()).unwrap_err();
    assert!(err.to_string().contains("simulcast"), "{err}");
}

#[test]
fn subscribe_offer_and_chromium_style_answer() {
    let offer = parse(CHROMIUM_OFFER).unwrap();
    let p = answer_publish(&offer, &CodecTable::new(), &local()).unwrap();
    let slots: Vec<Slot> = p
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| Slot::Track {
            mid: i.to_string(),
            track: t.clone(),
        })
        .collect();
    let sub = offer_subscribe(&slots, &p.table, &local()).unwrap();
    let text = write(&sub);
    for needed in [
        "a=ice-lite\r\n",
        "a=group:BUNDLE 0 1\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 108 109\r\n",
        "a=sendonly\r\n",
        "a=setup:actpass\r\n",
        "a=ssrc-group:FID 124262192 2454110272\r\n",
        "a=ssrc:124262192 cname:QHclbWbB7gPMuUm4\r\n",
        "a=ssrc:2454110272 msid:d20e6453-d24a-40b8-9fa5-c711fd205743 9625146d-a425-4baa-8a31-6d3192136176\r\n",
        "a=msid:d20e6453-d24a-40b8-9fa5-c711fd205743 9c484e73-752f-42a5-879d-b78f19f8571d\r\n",
    ] {
        assert!(text.contains(needed), "missing {needed:?} in\n{text}");
    }
    assert!(!text.contains("extmap") && !text.contains("transport-cc"));
    // The captured Chromium recvonly answer has the same shape (mids 0 and 1).
    let answer = parse(CHROMIUM_ANSWER).unwrap();
    let a = read_subscribe_answer(&answer, &sub).unwrap();
    assert_eq!(a.accepted, ["0", "1"]);
    assert_eq!(a.remote.ice.ufrag, "7+VL");
    assert_eq!(a.remote.fingerprints.len(), 1);
    // A passive answer would make the relay the DTLS client.
    let passive = parse(&CHROMIUM_ANSWER.replace("a=setup:active", "a=setup:passive")).unwrap();
    assert_eq!(
        read_subscribe_answer(&passive, &sub).unwrap_err().code(),
        "invalid_sdp"
    );
    // A stopped slot is port 0 and left out of BUNDLE.
    let slots = vec![
        slots[0].clone(),
        Slot::Stopped {
            mid: "1".into(),
            kind: MediaKind::Video,
        },
    ];
    let sub = offer_subscribe(&slots, &p.table, &local()).unwrap();
    assert_eq!(sub.bundle, ["0"]);
    assert!(write(&sub).contains("m=video 0 UDP/TLS/RTP/SAVPF 96 108\r\n"));
    assert_eq!(
        offer_subscribe(&[], &p.table, &local()).unwrap_err().code(),
        "invalid_sdp"
    );
}

#[test]
fn parse_errors_name_line_and_text() {
    let e = parse("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nm=audio x RTP/AVP 0\r\n").unwrap_err();
    assert_eq!((e.line, e.reason), (4, "bad m= port"));
    assert_eq!(e.to_string(), "line 4: bad m= port: `m=audio x RTP/AVP 0`");
    let bad = CHROMIUM_OFFER.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/abc");
    let e = parse(&bad).unwrap_err();
    assert_eq!(e.text, "a=rtpmap:111 opus/abc");
    assert_eq!(parse("").unwrap_err().line, 0);
    assert_eq!(
        parse("o=- 1 1 IN IP4 x\n").unwrap_err().reason,
        "the first line must be v=0"
    );
    assert!(parse(&"a".repeat(MAX + 1)).is_err());
    let many: String = std::iter::once("v=0\no=- 1 1 IN IP4 x\ns=-\n".to_owned())
        .chain((0..65).map(|i| format!("m=audio 9 RTP/AVP 0\na=mid:{i}\n")))
        .collect();
    assert_eq!(
        parse(&many).unwrap_err().reason,
        "more than 64 media sections"
    );
    let ssrcs: String = (0..17).map(|i| format!("a=ssrc:{i} cname:x\n")).collect();
    let e = parse(&format!(
        "v=0\no=- 1 1 IN IP4 x\ns=-\nm=audio 9 RTP/AVP 0\n{ssrcs}"
    ))
    .unwrap_err();
    assert_eq!(
        (e.line, e.reason),
        (21, "more than 16 SSRCs in one media section")
    );
    let group =
        "v=0\no=- 1 1 IN IP4 x\nm=video 9 RTP/AVP 96\na=ssrc:1 cname:x\na=ssrc-group:FID 1 2\n";
    assert_eq!(parse(group).unwrap_err().line, 3);
    let ufrag = "v=0\no=- 1 1 IN IP4 x\na=ice-ufrag:abcd\n";
    assert_eq!(parse(ufrag).unwrap_err().line, 3);
}

const MAX: usize = parse::MAX_BYTES;

/// Line numbers are what the parser adds; builders leave them 0.
fn strip_lines(mut s: Session) -> Session {
    for m in &mut s.media {
        m.line = 0;
    }
    s
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,11}"
}

fn ice() -> impl Strategy<Value = IceCredentials> {
    ("[a-zA-Z0-9+/]{4,8}", "[a-zA-Z0-9+/]{22,30}")
        .prop_map(|(ufrag, pwd)| IceCredentials { ufrag, pwd })
}

fn fingerprint() -> impl Strategy<Value = Fingerprint> {
    (0..5usize, proptest::collection::vec(any::<u8>(), 64)).prop_map(|(h, bytes)| {
        let hash = [
            HashFunction::Sha1,
            HashFunction::Sha224,
            HashFunction::Sha256,
            HashFunction::Sha384,
            HashFunction::Sha512,
        ][h];
        Fingerprint {
            hash,
            value: bytes[..hash.digest_len()].to_vec(),
        }
    })
}

fn msid() -> impl Strategy<Value = Msid> {
    (token(), proptest::option::of(token())).prop_map(|(stream, track)| Msid { stream, track })
}

fn media() -> impl Strategy<Value = Media> {
    (
        (
            0..2usize,
            any::<u16>(),
            proptest::collection::btree_set(0u8..=127, 1..6),
            proptest::option::of(token()),
        ),
        (
            0..4usize,
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(ice()),
            proptest::collection::vec(fingerprint(), 0..3),
        ),
        (
            proptest::option::of(0..4usize),
            proptest::collection::vec(
                (
                    token(),
                    1u16..3,
                    any::<u32>(),
                    any::<std::net::IpAddr>(),
                    any::<u16>(),
                ),
                0..3,
            ),
            any::<bool>(),
        ),
        (
            proptest::collection::btree_map(1u8..=255, token(), 0..4),
            proptest::option::of(msid()),
        ),
        (
            proptest::collection::btree_map(
                any::<u32>(),
                (token(), proptest::option::of(msid())),
                0..4,
            ),
            any::<bool>(),
        ),
        proptest::collection::vec(
            (
                "[a-zA-Z0-9]{1,8}",
                8000u32..100000,
                proptest::option::of(1u16..3),
                proptest::option::of("[a-z-]{1,10}=[0-9]{1,3}"),
                proptest::collection::vec("[a-z]{1,6}( [a-z]{1,4})?", 0..3),
            ),
            6,
        ),
    )
        .prop_map(
            |(
                (kind, port, pts, mid),
                (dir, mux, rsize, ice, fingerprints),
                (setup, cands, eoc),
                (ext, msid),
                (ssrcs, group),
                encs,
            )| {
                let payloads: Vec<Payload> = pts
                    .iter()
                    .zip(encs)
                    .map(|(pt, (enc, clock, ch, fmtp, fb))| Payload {
                        pt: *pt,
                        encoding: enc,
                        clock_rate: clock,
                        channels: ch,
                        fmtp,
                        rtcp_fb: fb,
                    })
                    .collect();
                let ssrcs: Vec<SsrcInfo> = ssrcs
                    .into_iter()
                    .map(|(ssrc, (cname, msid))| SsrcInfo {
                        ssrc,
                        cname: Some(cname),
                        msid,
                    })
                    .collect();
                let ssrc_groups = if group && ssrcs.len() >= 2 {
                    vec![SsrcGroup {
                        semantics: "FID".into(),
                        ssrcs: vec![ssrcs[0].ssrc, ssrcs[1].ssrc],
                    }]
                } else {
                    vec![]
                };
                Media {
                    line: 0,
                    kind: [MediaKind::Audio, MediaKind::Video][kind].clone(),
                    port,
                    protocol: "UDP/TLS/RTP/SAVPF".into(),
                    formats: payloads.iter().map(|p| p.pt.to_string()).collect(),
                    connection: Some("IN IP4 0.0.0.0".into()),
                    bundle_only: port == 0 && mid.is_some(),
                    mid,
                    direction: [
                        Direction::SendRecv,
                        Direction::SendOnly,
                        Direction::RecvOnly,
                        Direction::Inactive,
                    ][dir],
                    rtcp_mux: mux,
                    rtcp_rsize: rsize,
                    ice,
                    fingerprints,
                    setup: setup.map(|s| {
                        [
                            Setup::Active,
                            Setup::Passive,
                            Setup::ActPass,
                            Setup::HoldConn,
                        ][s]
                    }),
                    candidates: cands
                        .into_iter()
                        .map(|(foundation, component, priority, ip, port)| Candidate {
                            foundation,
                            component,
                            transport: "udp".into(),
                            priority,
                            address: ip.to_string(),
                            port,
                            typ: "host".into(),
                        })
                        .collect(),
                    end_of_candidates: eoc,
                    payloads,
                    extmaps: ext
                        .into_iter()
                        .map(|(id, uri)| Extmap {
                            id,
                            uri: format!("urn:x:{uri}"),
                        })
                        .collect(),
                    msid,
                    ssrcs,
                    ssrc_groups,
                }
            },
        )
}

fn session() -> impl Strategy<Value = Session> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(ice()),
        proptest::collection::vec(fingerprint(), 0..2),
        proptest::collection::vec(media(), 0..4),
    )
        .prop_map(|(id, version, lite, ice, fingerprints, mut media)| {
            // mids are unique per session.
            for (i, m) in media.iter_mut().enumerate() {
                if let Some(mid) = &mut m.mid {
                    *mid = format!("{mid}{i}");
                }
            }
            let bundle = media.iter().filter_map(|m| m.mid.clone()).collect();
            Session {
                session_id: id,
                session_version: version,
                ice_lite: lite,
                bundle,
                ice,
                fingerprints,
                setup: None,
                media,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_of_write_gives_the_fields_back(s in session()) {
        let text = write(&s);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(strip_lines(back), s);
    }

    #[test]
    fn random_text_never_panics(text in "(?s).{0,2000}") {
        let _ = parse(&text);
    }

    #[test]
    fn random_sdp_like_lines_never_panic(lines in proptest::collection::vec(
        "(v=0|o=- [0-9]{1,3} [0-9] IN IP4 x|m=(audio|video|application) [0-9]{1,5} [A-Z/]{3,20}( [0-9a-z-]{1,4}){0,4}|a=[a-z-]{2,12}(:[ -~]{0,40})?|c=IN IP4 0.0.0.0|[a-z]=[ -~]{0,20})", 0..60)
    ) {
        let text = lines.join("\r\n");
        if let Ok(s) = parse(&text) {
            let _ = answer_publish(&s, &CodecTable::new(), &local());
            let _ = write(&s);
        }
    }

    #[test]
    fn mutated_real_offers_never_panic(cut in 0usize..6500, junk in "[ -~]{0,12}") {
        let mut text = CHROMIUM_OFFER.to_owned();
        let at = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &junk);
        if let Ok(s) = parse(&text)
            && let Ok(p) = answer_publish(&s, &CodecTable::new(), &local()) {
                prop_assert!(parse(&write(&p.answer)).is_ok());
            }
    }
}

#[test]
fn addresses_of_both_families_become_host_candidates() {
    let mut l = local();
    l.addresses = vec!["192.0.2.1:3478".parse::<SocketAddr>().unwrap()];
    let p = answer_publish(&parse(CHROMIUM_OFFER).unwrap(), &CodecTable::new(), &l).unwrap();
    assert_eq!(p.answer.media[0].candidates.len(), 1);
    assert_eq!(p.answer.media[0].candidates[0].address, "192.0.2.1");
}

fn track() -> impl Strategy<Value = (Track, bool)> {
    (
        any::<bool>(),
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        token(),
        msid(),
        any::<bool>(),
    )
        .prop_map(|(video, ssrc, rtx, cname, msid, stopped)| {
            let kind = if video {
                MediaKind::Video
            } else {
                MediaKind::Audio
            };
            let rtx_ssrc = if video {
                rtx.filter(|r| *r != ssrc)
            } else {
                None
            };
            (
                Track {
                    mid: String::new(),
                    kind,
                    ssrc,
                    rtx_ssrc,
                    cname,
                    msid,
                },
                stopped,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The builders' typed inputs come back from the text they write.
    #[test]
    fn subscribe_offer_gives_its_inputs_back(
        tracks in proptest::collection::vec(track(), 1..6),
        ice in ice(),
        fingerprint in fingerprint(),
        addresses in proptest::collection::vec(any::<SocketAddr>(), 0..3),
        session_id in any::<u64>(),
    ) {
        let table = CodecTable::new().negotiate(&parse(CHROMIUM_OFFER).unwrap(), |_| false).unwrap().table;
        let local = Local { ice: ice.clone(), fingerprint: fingerprint.clone(), addresses: addresses.clone(), session_id, session_version: 3 };
        let slots: Vec<Slot> = tracks
            .iter()
            .enumerate()
            .map(|(i, (t, stopped))| if *stopped {
                Slot::Stopped { mid: format!("m{i}"), kind: t.kind.clone() }
            } else {
                Slot::Track { mid: format!("m{i}"), track: t.clone() }
            })
            .collect();
        let offer = offer_subscribe(&slots, &table, &local).unwrap();
        let back = parse(&write(&offer)).unwrap();
        prop_assert_eq!(back.session_id, session_id);
        prop_assert!(back.ice_lite);
        let live: Vec<String> = slots.iter().filter_map(|s| match s { Slot::Track { mid, .. } => Some(mid.clone()), _ => None }).collect();
        prop_assert_eq!(&back.bundle, &live);
        for (slot, m) in slots.iter().zip(&back.media) {
            match slot {
                Slot::Stopped { mid, .. } => {
                    prop_assert_eq!(m.port, 0);
                    prop_assert_eq!(m.mid.as_ref(), Some(mid));
                }
                Slot::Track { mid, track } => {
                    prop_assert_eq!(m.mid.as_ref(), Some(mid));
                    prop_assert_eq!(m.direction, Direction::SendOnly);
                    prop_assert_eq!(back.ice_of(m), Some(&ice));
                    prop_assert_eq!(back.fingerprints_of(m), std::slice::from_ref(&fingerprint));
                    prop_assert_eq!(back.setup_of(m), Some(Setup::ActPass));
                    prop_assert!(m.rtcp_mux && m.end_of_candidates && m.extmaps.is_empty());
                    let cands: Vec<(String, u16)> = m.candidates.iter().map(|c| (c.address.clone(), c.port)).collect();
                    let want: Vec<(String, u16)> = addresses.iter().map(|a| (a.ip().to_string(), a.port())).collect();
                    prop_assert_eq!(cands, want);
                    let media = m.ssrc(track.ssrc).unwrap();
                    prop_assert_eq!(media.cname.as_ref(), Some(&track.cname));
                    prop_assert_eq!(media.msid.as_ref(), Some(&track.msid));
                    prop_assert_eq!(m.msid.as_ref(), Some(&track.msid));
                    match track.rtx_ssrc {
                        Some(rtx) => {
                            prop_assert!(m.ssrc(rtx).is_some());
                            prop_assert_eq!(&m.ssrc_groups, &vec![SsrcGroup { semantics: "FID".into(), ssrcs: vec![track.ssrc, rtx] }]);
                        }
                        None => prop_assert!(m.ssrc_groups.is_empty()),
                    }
                    // Only the room's codecs of the track's kind, with the room's numbers.
                    let pts: Vec<u8> = m.payloads.iter().map(|p| p.pt).collect();
                    let want: Vec<u8> = table.of_kind(&track.kind).iter().flat_map(|e| e.payloads()).map(|p| p.pt).collect();
                    prop_assert_eq!(pts, want);
                }
            }
        }
    }
}
