//! Two aiortc participants (PyPI; aioice, OpenSSL DTLS, libsrtp, libvpx and libopus: a WebRTC
//! stack none of us wrote and that shares no code with Chromium) join a room through the relay
//! binary: each publishes generated audio and video through the publish exchange and subscribes
//! to the other through the subscribe exchange, and decodes what the relay forwards. A send rule
//! on one stops its media at the other while the API call returns; lifting it resumes it.
//!
//! Runs in a network namespace with only `lo`. Needs tests/browser/.venv with aiortc:
//! `tests/install-deps.sh`.

mod webrtc;

use std::thread;
use std::time::Duration;

use e2e::Relay;
use serde_json::{Value, json};
use webrtc::{Peer, in_own_netns, publish, subscribe, wait_for};

fn stats(peer: &mut Peer, pc: &Value) -> Value {
    peer.call(json!({"op": "stats", "id": pc}))
}

fn count(s: &Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or(0)
}

/// Waits until the connection `pc` of `peer` has decoded more than `video` video frames and
/// `audio` audio frames; panics with both sides' view if it does not within `secs` seconds.
fn decodes(relay: &Relay, peer: &mut Peer, pc: &Value, video: u64, audio: u64, secs: u64) -> Value {
    wait_for(secs, || {
        let s = stats(peer, pc);
        (count(&s, "framesDecoded") > video && count(&s, "audioFramesDecoded") > audio).then_some(s)
    })
    .unwrap_or_else(|| {
        let name = peer.name;
        panic!(
            "{name} decodes too little: {} relay {} metrics {}",
            stats(peer, pc),
            relay.ok("GET", "/v1/rooms/r", None),
            relay.metrics_text()
        )
    })
}

#[test]
fn two_aiortc_participants_see_each_other_and_a_send_rule_stops_one() {
    if in_own_netns("two_aiortc_participants_see_each_other_and_a_send_rule_stops_one") {
        return;
    }
    let relay = Relay::start();
    relay.ok("PUT", "/v1/rooms/r", None);
    let mut alice = Peer::aiortc();
    alice.name = "alice";
    let mut bob = Peer::aiortc();
    bob.name = "bob";
    let a_pub = publish(&relay, &mut alice, "a");
    let b_pub = publish(&relay, &mut bob, "b");
    let a_sub = subscribe(&relay, &mut alice, "a");
    let b_sub = subscribe(&relay, &mut bob, "b");

    // Media crosses the relay both ways: SRTP from each publish leg is authenticated and
    // decrypted, sealed again for the other's subscribe leg, and decodes there.
    let a_stats = decodes(&relay, &mut alice, &a_sub, 30, 50, 45);
    let b_stats = decodes(&relay, &mut bob, &b_sub, 30, 50, 45);
    eprintln!("alice receives {a_stats}\nbob receives {b_stats}");
    for (peer, id, sub) in [(&mut alice, "a", &a_sub), (&mut bob, "b", &b_sub)] {
        let s = stats(peer, sub);
        let p = relay.ok("GET", &format!("/v1/rooms/r/participants/{id}"), None);
        assert_eq!(p["transport"], "webrtc", "{p}");
        assert_eq!(p["dtls"], "connected", "{p}");
        let legs = p["legs"].as_array().unwrap();
        assert_eq!(legs.len(), 2, "{p}");
        // Both sides name the same SRTP profile on each leg, and aiortc is the DTLS client.
        let publish_stats = stats(peer, if id == "a" { &a_pub } else { &b_pub });
        for (leg, side) in legs.iter().zip([&publish_stats, &s]) {
            assert_eq!(leg["dtls"], "connected", "{p}");
            assert_eq!(side["dtlsState"], "connected", "{side}");
            assert_eq!(side["dtlsRole"], "client", "the relay is the DTLS server");
            assert!(
                side["srtpCipher"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("SRTP_")),
                "{side}"
            );
            assert_eq!(leg["srtp_profile"], side["srtpCipher"], "{p} {side}");
        }
        let received = count(&s, "packetsReceived");
        let lost = s["packetsLost"].as_i64().unwrap_or(0);
        assert!(lost * 50 <= received as i64, "lost {lost} of {received}");
        assert!(count(&publish_stats, "packetsSent") > 0, "{publish_stats}");
    }
    // Nothing failed authentication on the way in.
    assert_eq!(
        relay.metric("relay_dropped_packets_total{reason=\"srtp_auth\"}"),
        0
    );

    // A send rule on bob: once the API call returns, alice receives nothing more from him (what
    // was in flight and in aiortc's jitter buffer drains within the pause), while bob still
    // decodes alice.
    let rule = relay.rule(json!({
        "match": {"participants": [{"room": "r", "participant": "b"}]},
        "direction": "send"
    }));
    thread::sleep(Duration::from_secs(1));
    let before = stats(&mut alice, &a_sub);
    let b_before = stats(&mut bob, &b_sub);
    thread::sleep(Duration::from_secs(2));
    let after = stats(&mut alice, &a_sub);
    let b_after = stats(&mut bob, &b_sub);
    for key in ["packetsReceived", "framesDecoded", "audioFramesDecoded"] {
        assert!(
            count(&after, key) <= count(&before, key) + 2,
            "alice still receives bob ({key}): {before} -> {after}"
        );
    }
    assert!(
        count(&b_after, "framesDecoded") > count(&b_before, "framesDecoded") + 10,
        "bob stopped decoding alice: {b_before} -> {b_after}"
    );
    assert!(
        count(&b_after, "audioFramesDecoded") > count(&b_before, "audioFramesDecoded") + 20,
        "bob stopped hearing alice: {b_before} -> {b_after}"
    );
    assert!(relay.metric("relay_dropped_packets_total{reason=\"rule\"}") > 0);

    // Lifting it resumes bob's media at alice.
    relay.lift(rule);
    decodes(
        &relay,
        &mut alice,
        &a_sub,
        count(&after, "framesDecoded") + 10,
        count(&after, "audioFramesDecoded") + 20,
        20,
    );
}
