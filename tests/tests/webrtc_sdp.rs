//! The relay's SDP in real WebRTC stacks: Debian's Chromium (through playwright-core,
//! tests/browser/sdp_peer.mjs), Firefox ESR (tests/browser/firefox_peer.mjs) and aiortc
//! (tests/browser/aiortc_peer.py) must accept the
//! publish answers and subscribe offers `relay::sdp` builds from their own descriptions, and
//! the relay must read what they answer. No media flows here: this checks the descriptions.
//!
//! Needs `chromium`, `firefox-esr`, `node` with tests/browser/node_modules and the aiortc venv in
//! tests/browser/.venv: `tests/install-deps.sh` installs them.

mod webrtc;

use relay::sdp::{self, CodecTable, Slot};
use serde_json::{Value, json};
use webrtc::{Peer, local};

/// (kind, [payload types in order]) of each sender after the answer was applied.
fn sender_codecs(reply: &Value) -> Vec<(String, Vec<u64>)> {
    reply["senders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let pts = s["codecs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["payloadType"].as_u64().unwrap())
                .collect();
            (s["kind"].as_str().unwrap_or("").to_owned(), pts)
        })
        .collect()
}

#[test]
fn chromium_accepts_the_publish_answer_and_sends_with_the_rooms_numbers() {
    let mut chromium = Peer::chromium();
    let local = local();

    // 1. A new room: the offer's own numbers, a data channel rejected.
    let offer = chromium.call(json!({"op": "publish_offer", "datachannel": true}));
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, &CodecTable::new(), &local).unwrap();
    assert_eq!(
        publish.tracks.len(),
        2,
        "Chromium declares a=ssrc for audio and video"
    );
    assert!(
        publish.tracks[1].rtx_ssrc.is_some(),
        "and an RTX SSRC for video"
    );
    assert_eq!(
        publish.answer.media[2].port, 0,
        "the data channel section is rejected"
    );
    let reply = chromium
        .call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    assert_eq!(reply["signalingState"], "stable");
    let codecs = sender_codecs(&reply);
    let vp8 = publish.table.entry(sdp::Codec::Vp8).unwrap();
    let opus = publish.table.entry(sdp::Codec::Opus).unwrap();
    assert_eq!(
        codecs[0].1.first().copied(),
        Some(u64::from(opus.pt)),
        "{codecs:?}"
    );
    assert_eq!(
        codecs[1].1.first().copied(),
        Some(u64::from(vp8.pt)),
        "{codecs:?}"
    );

    // 2. A room whose VP8 has other numbers (121/122, unused by Chromium): the answer carries
    //    the room's numbers and Chromium sends VP8 with them (RFC 3264 §6.1).
    let renumbered = renumber_vp8(offer["sdp"].as_str().unwrap(), 121, 122);
    let room = CodecTable::new()
        .negotiate(&sdp::parse(&renumbered).unwrap(), |_| false)
        .unwrap()
        .table;
    assert_eq!(room.entry(sdp::Codec::Vp8).map(|e| e.pt), Some(121));
    let offer = chromium.call(json!({"op": "publish_offer", "datachannel": false}));
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, &room, &local).unwrap();
    let reply = chromium
        .call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    let codecs = sender_codecs(&reply);
    assert_eq!(
        codecs[1].1.first().copied(),
        Some(121),
        "VP8 is sent as the room's 121: {codecs:?}"
    );
    assert!(codecs[1].1.contains(&122), "with RTX as 122: {codecs:?}");

    // 3. A room that aiortc opened (Opus 96, VP8 97/98, H.264 101/102): the numbers collide with
    //    Chromium's own (its VP8 is 96, its VP8 RTX 97), and it still sends as answered.
    expect_sent_as_answered(
        &mut chromium,
        json!({"op": "publish_offer"}),
        &foreign_room("aiortc"),
    );
}

#[test]
fn chromium_answers_the_subscribe_offer() {
    let mut chromium = Peer::chromium();
    let local = local();
    // The publisher: another Chromium peer connection; its tracks go to the subscriber.
    let offer = chromium.call(json!({"op": "publish_offer", "datachannel": false}));
    let publish = sdp::answer_publish(
        &sdp::parse(offer["sdp"].as_str().unwrap()).unwrap(),
        &CodecTable::new(),
        &local,
    )
    .unwrap();
    let slots: Vec<Slot> = publish
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| Slot::Track {
            mid: format!("s{i}"),
            track: t.clone(),
        })
        .collect();
    let sub = sdp::offer_subscribe(&slots, &publish.table, &local).unwrap();
    let reply = chromium.call(json!({"op": "answer", "sdp": sdp::write(&sub)}));
    let answer = sdp::parse(reply["sdp"].as_str().unwrap()).unwrap();
    let read = sdp::read_subscribe_answer(&answer, &sub).unwrap();
    assert_eq!(read.accepted, ["s0", "s1"]);
    assert_eq!(answer.setup_of(&answer.media[0]), Some(sdp::Setup::Active));
    // Chromium answers with the offer's (the room's) payload types and no MID extension.
    let video = &answer.media[1];
    let vp8 = publish.table.entry(sdp::Codec::Vp8).unwrap();
    assert_eq!(
        video.formats.first().map(String::as_str),
        Some(vp8.pt.to_string().as_str())
    );
    assert!(video.extmaps.is_empty(), "{:?}", video.extmaps);
    // Tracks surface with the publisher's stream id (from a=msid / a=ssrc msid).
    let tracks = reply["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    assert_eq!(
        tracks[1]["streams"][0].as_str(),
        Some(publish.tracks[1].msid.stream.as_str())
    );
}

#[test]
fn aiortc_accepts_the_publish_answer_and_answers_the_subscribe_offer() {
    let mut aiortc = Peer::aiortc();
    let local = local();
    let offer = aiortc.call(json!({"op": "publish_offer"}));
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, &CodecTable::new(), &local).unwrap();
    assert_eq!(publish.tracks.len(), 2);
    let reply = aiortc
        .call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    assert_eq!(reply["signalingState"], "stable");
    let codecs = sender_codecs(&reply);
    let vp8 = publish.table.entry(sdp::Codec::Vp8).unwrap();
    assert_eq!(
        codecs[1].1.first().copied(),
        Some(u64::from(vp8.pt)),
        "{codecs:?}"
    );

    let slots: Vec<Slot> = publish
        .tracks
        .iter()
        .map(|t| Slot::Track {
            mid: format!("m{}", t.ssrc),
            track: t.clone(),
        })
        .collect();
    let sub = sdp::offer_subscribe(&slots, &publish.table, &local).unwrap();
    let reply = aiortc.call(json!({"op": "answer", "sdp": sdp::write(&sub)}));
    let answer = sdp::parse(reply["sdp"].as_str().unwrap()).unwrap();
    let read = sdp::read_subscribe_answer(&answer, &sub).unwrap();
    assert_eq!(read.accepted.len(), 2);
    assert_eq!(
        read.remote.fingerprints.len(),
        3,
        "aiortc sends sha-256, sha-384 and sha-512"
    );

    // A room Chromium opened (Opus 111, VP8 96/97): 96 is aiortc's Opus.
    expect_sent_as_answered(
        &mut aiortc,
        json!({"op": "publish_offer"}),
        &foreign_room("chromium"),
    );
}

#[test]
fn firefox_accepts_the_publish_answer_and_answers_the_subscribe_offer() {
    let mut firefox = Peer::firefox();
    let local = local();
    let offer = firefox.call(json!({"op": "publish_offer", "datachannel": true}));
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, &CodecTable::new(), &local).unwrap();
    assert_eq!(
        publish.tracks.len(),
        2,
        "Firefox declares a=ssrc for audio and video"
    );
    assert!(publish.tracks[1].rtx_ssrc.is_some());
    let reply = firefox
        .call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    assert_eq!(reply["signalingState"], "stable");

    let slots: Vec<Slot> = publish
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| Slot::Track {
            mid: i.to_string(),
            track: t.clone(),
        })
        .collect();
    let sub = sdp::offer_subscribe(&slots, &publish.table, &local).unwrap();
    let reply = firefox.call(json!({"op": "answer", "sdp": sdp::write(&sub)}));
    let answer = sdp::parse(reply["sdp"].as_str().unwrap()).unwrap();
    let read = sdp::read_subscribe_answer(&answer, &sub).unwrap();
    assert_eq!(read.accepted, ["0", "1"]);

    // Rooms Chromium and aiortc opened: Opus 111 or 96, VP8 96 or 97 (Firefox: 109 and 120).
    expect_sent_as_answered(
        &mut firefox,
        json!({"op": "publish_offer"}),
        &foreign_room("chromium"),
    );
    expect_sent_as_answered(
        &mut firefox,
        json!({"op": "publish_offer"}),
        &foreign_room("aiortc"),
    );
}

/// The codec table of a room whose first publisher was `stack` (its captured offer).
fn foreign_room(stack: &str) -> CodecTable {
    let text = match stack {
        "chromium" => include_str!("../../relay/src/sdp/testdata/chromium_publish_offer.sdp"),
        _ => include_str!("../../relay/src/sdp/testdata/aiortc_publish_offer.sdp"),
    };
    CodecTable::new()
        .negotiate(&sdp::parse(text).unwrap(), |_| false)
        .unwrap()
        .table
}

/// Offers, answers with `room`'s numbers, and checks that the stack will send Opus and VP8 with
/// them (the first codec of each sender after `setRemoteDescription`).
fn expect_sent_as_answered(peer: &mut Peer, offer_request: Value, room: &CodecTable) {
    let offer = peer.call(offer_request);
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, room, &local()).unwrap();
    let reply = peer
        .call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    let codecs = sender_codecs(&reply);
    let opus = room.entry(sdp::Codec::Opus).unwrap().pt;
    let vp8 = room.entry(sdp::Codec::Vp8).unwrap();
    assert_eq!(
        codecs[0].1.first().copied(),
        Some(u64::from(opus)),
        "{}: {codecs:?}",
        peer.name
    );
    assert_eq!(
        codecs[1].1.first().copied(),
        Some(u64::from(vp8.pt)),
        "{}: {codecs:?}",
        peer.name
    );
    assert!(
        codecs[1].1.contains(&u64::from(vp8.rtx.unwrap())),
        "{}: {codecs:?}",
        peer.name
    );
}

/// The offer with VP8 and its RTX moved to other numbers (a publisher that came first).
fn renumber_vp8(offer: &str, vp8: u8, rtx: u8) -> String {
    let parsed = sdp::parse(offer).unwrap();
    let video = parsed
        .media
        .iter()
        .find(|m| m.kind == sdp::MediaKind::Video)
        .unwrap();
    let old = video
        .payloads
        .iter()
        .find(|p| p.encoding == "VP8")
        .unwrap()
        .pt;
    let old_rtx = video
        .payloads
        .iter()
        .find(|p| p.fmtp.as_deref() == Some(&format!("apt={old}")))
        .unwrap()
        .pt;
    offer
        .lines()
        .map(|l| {
            let l = if l.starts_with("m=video") {
                l.split(' ')
                    .map(|t| {
                        if t == old.to_string() {
                            vp8.to_string()
                        } else if t == old_rtx.to_string() {
                            rtx.to_string()
                        } else {
                            t.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                l.replace(&format!(":{old} "), &format!(":{vp8} "))
                    .replace(&format!(":{old_rtx} "), &format!(":{rtx} "))
                    .replace(&format!("apt={old}"), &format!("apt={vp8}"))
            };
            l + "\r\n"
        })
        .collect()
}
