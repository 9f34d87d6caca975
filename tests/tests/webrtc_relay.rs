//! Browsers join rooms through the relay binary itself: the WebRTC API (publish and subscribe
//! exchanges), ICE-lite latching on USE-CANDIDATE, and DTLS on the relay's DTLS thread, with
//! Debian's Chromium (tests/browser/sdp_peer.mjs) in a network namespace with only `lo`.
//!
//! Needs `chromium`, `node` and tests/browser/node_modules: `tests/install-deps.sh`.

mod webrtc;

use std::thread;
use std::time::{Duration, Instant};

use e2e::Relay;
use serde_json::{Value, json};
use webrtc::{Peer, in_own_netns};

/// Polls `f` every 250 ms until it returns `Some`, for at most `secs` seconds.
fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        thread::sleep(Duration::from_millis(250));
    }
    None
}

fn publish(relay: &Relay, peer: &mut Peer, id: &str) -> Value {
    let offer = peer.call(json!({"op": "publish_offer"}));
    let (status, answer) = relay.call(
        "POST",
        &format!("/v1/rooms/r/participants/{id}/webrtc/publish"),
        Some(&json!({"sdp": offer["sdp"]})),
    );
    assert_eq!(status, 200, "{answer}");
    let text = answer["sdp"].as_str().unwrap();
    assert!(text.contains("a=ice-lite") && text.contains("a=setup:passive"));
    peer.call(json!({"op": "set_answer", "id": offer["id"], "sdp": answer["sdp"]}));
    offer["id"].clone()
}

#[test]
fn chromium_publishes_and_subscribes_and_the_relay_completes_dtls_on_both_legs() {
    if in_own_netns("chromium_publishes_and_subscribes_and_the_relay_completes_dtls_on_both_legs") {
        return;
    }
    let relay = Relay::start();
    relay.ok("PUT", "/v1/rooms/r", None);
    let mut peer = Peer::chromium();
    let pc_a = publish(&relay, &mut peer, "a");
    let pc_b = publish(&relay, &mut peer, "b");

    // a subscribes: the relay offers b's tracks; Chromium answers on a new peer connection.
    let offer = relay.ok(
        "POST",
        "/v1/rooms/r/participants/a/webrtc/subscribe",
        Some(&json!({})),
    );
    let reply = peer.call(json!({"op": "answer", "sdp": offer["sdp"]}));
    let (status, _) = relay.call(
        "PUT",
        "/v1/rooms/r/participants/a/webrtc/subscribe",
        Some(&json!({"sdp": reply["sdp"]})),
    );
    assert_eq!(status, 204);
    let pc_sub = reply["id"].clone();

    let connected = |p: &Value| p["dtls"] == "connected";
    let a = wait_for(30, || {
        let p = relay.ok("GET", "/v1/rooms/r/participants/a", None);
        connected(&p).then_some(p)
    });
    let stats = |id: &Value, peer: &mut Peer| peer.call(json!({"op": "stats", "id": id}));
    let a = a.unwrap_or_else(|| {
        panic!(
            "a did not connect: {} browser publish {} subscribe {} metrics {}",
            relay.ok("GET", "/v1/rooms/r/participants/a", None),
            stats(&pc_a, &mut peer),
            stats(&pc_sub, &mut peer),
            relay.metrics_text()
        )
    });
    eprintln!("a: {a}");
    assert_eq!(a["transport"], "webrtc");
    assert_eq!(a["legs"][0]["leg"], "publish");
    assert_eq!(a["legs"][0]["latched"], true);
    assert_eq!(a["legs"][1]["leg"], "subscribe");
    assert_eq!(a["legs"][1]["latched"], true);
    assert_eq!(a["legs"][1]["dtls"], "connected");
    // The browser and the relay agree on the SRTP profile of each leg.
    let publish_stats = stats(&pc_a, &mut peer);
    let subscribe_stats = stats(&pc_sub, &mut peer);
    eprintln!("browser: publish {publish_stats} subscribe {subscribe_stats}");
    assert_eq!(publish_stats["dtlsState"], "connected");
    assert_eq!(
        publish_stats["dtlsRole"], "client",
        "the relay is the DTLS server"
    );
    assert_eq!(a["legs"][0]["srtp_profile"], publish_stats["srtpCipher"]);
    assert_eq!(subscribe_stats["dtlsState"], "connected");
    assert_eq!(a["legs"][1]["srtp_profile"], subscribe_stats["srtpCipher"]);
    // b published only.
    let b = wait_for(30, || {
        let p = relay.ok("GET", "/v1/rooms/r/participants/b", None);
        connected(&p).then_some(p)
    })
    .unwrap_or_else(|| panic!("b did not connect: {}", stats(&pc_b, &mut peer)));
    assert_eq!(b["legs"].as_array().unwrap().len(), 1);
    // The room's codec table came from the first offer.
    let room = relay.ok("GET", "/v1/rooms/r", None);
    assert!(!room["codecs"].as_array().unwrap().is_empty(), "{room}");
}

#[test]
fn dtls_from_a_source_that_is_no_webrtc_leg_is_dropped_and_counted() {
    if in_own_netns("dtls_from_a_source_that_is_no_webrtc_leg_is_dropped_and_counted") {
        return;
    }
    let relay = Relay::start();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // A DTLS ClientHello's first bytes (content type 22, DTLS 1.0 record version).
    for _ in 0..5 {
        socket
            .send_to(
                &[22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                relay.media,
            )
            .unwrap();
    }
    let counted = wait_for(5, || {
        (relay.metric("relay_dropped_packets_total{reason=\"dtls\"}") >= 5).then_some(())
    });
    assert!(counted.is_some(), "{}", relay.metrics_text());
}
