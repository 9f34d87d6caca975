//! Browsers join rooms through the relay binary itself: the WebRTC API (publish and subscribe
//! exchanges), ICE-lite latching on USE-CANDIDATE, and DTLS on the relay's DTLS thread, with
//! Debian's Chromium (tests/browser/sdp_peer.mjs) in a network namespace with only `lo`.
//!
//! Needs `chromium`, `node` and tests/browser/node_modules: `tests/install-deps.sh`.

mod webrtc;

use std::thread;
use std::time::Duration;

use e2e::Relay;
use serde_json::{Value, json};
use webrtc::{Peer, in_own_netns, publish, subscribe, wait_for};

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

fn frames(peer: &mut Peer, pc: &Value) -> (u64, Value) {
    let s = peer.call(json!({"op": "stats", "id": pc}));
    (s["framesDecoded"].as_u64().unwrap_or(0), s)
}

#[test]
fn two_chromium_participants_see_each_other_and_a_send_rule_freezes_one() {
    if in_own_netns("two_chromium_participants_see_each_other_and_a_send_rule_freezes_one") {
        return;
    }
    let relay = Relay::start();
    relay.ok("PUT", "/v1/rooms/r", Some(&json!({"plain_legs": true})));
    let mut alice = Peer::chromium();
    let mut bob = Peer::chromium();
    publish(&relay, &mut alice, "a");
    publish(&relay, &mut bob, "b");
    // A third participant: ffmpeg sending Opus as plain RTP with the room's payload type.
    let opus = relay.ok("GET", "/v1/rooms/r", None)["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["codec"] == "opus")
        .expect("the room has Opus")["pt"]
        .as_u64()
        .unwrap();
    let port = free_port();
    relay.ok(
        "PUT",
        "/v1/rooms/r/participants/ffmpeg",
        Some(&json!({
            "address": format!("127.0.0.1:{port}"),
            "tracks": [{"ssrc": 515151, "kind": "audio"}],
        })),
    );
    let mut ffmpeg = ffmpeg_opus(&relay, port, 515151, opus);
    let a_sub = subscribe(&relay, &mut alice, "a");
    let b_sub = subscribe(&relay, &mut bob, "b");
    // Both decode the other's video through the relay (SRTP unprotected and sealed again).
    let decoded = |peer: &mut Peer, pc: &Value| {
        wait_for(30, || {
            let (f, s) = frames(peer, pc);
            (f > 30).then_some(s)
        })
    };
    let a_stats = decoded(&mut alice, &a_sub).unwrap_or_else(|| {
        panic!(
            "alice decodes nothing: {} {}",
            frames(&mut alice, &a_sub).1,
            relay.ok("GET", "/v1/rooms/r", None)
        )
    });
    let b_stats = decoded(&mut bob, &b_sub)
        .unwrap_or_else(|| panic!("bob decodes nothing: {}", frames(&mut bob, &b_sub).1));
    eprintln!("alice receives {a_stats}\nbob receives {b_stats}");
    for s in [&a_stats, &b_stats] {
        assert!(
            s["srtpCipher"]
                .as_str()
                .is_some_and(|c| c.starts_with("SRTP_"))
        );
        let received = s["packetsReceived"].as_u64().unwrap();
        let lost = s["packetsLost"].as_i64().unwrap_or(0);
        assert!(lost * 50 <= received as i64, "lost {lost} of {received}");
        assert!(
            s["audioPacketsReceived"].as_u64().unwrap_or(0) > 0,
            "audio: {s}"
        );
    }

    // A send rule on bob (all his media): alice's frames from him stop once the API call
    // returns, while ffmpeg's audio keeps reaching her (bob's own audio is stopped too, so the
    // audio alice still gets is ffmpeg's).
    let id = relay.rule(json!({
        "match": {"participants": [{"room": "r", "participant": "b"}]},
        "direction": "send"
    }));
    thread::sleep(Duration::from_millis(500)); // frames in flight and in the jitter buffer
    let audio = |peer: &mut Peer, pc: &Value| {
        frames(peer, pc).1["audioPacketsReceived"]
            .as_u64()
            .unwrap_or(0)
    };
    let (before, _) = frames(&mut alice, &a_sub);
    let audio_before = audio(&mut alice, &a_sub);
    thread::sleep(Duration::from_secs(2));
    let (after, _) = frames(&mut alice, &a_sub);
    let audio_after = audio(&mut alice, &a_sub);
    assert!(
        after <= before + 2,
        "alice still decodes bob: {before} -> {after}"
    );
    assert!(
        audio_after > audio_before + 40,
        "ffmpeg's audio stopped at alice: {audio_before} -> {audio_after}"
    );
    // bob still decodes alice.
    let (b1, _) = frames(&mut bob, &b_sub);
    thread::sleep(Duration::from_secs(1));
    let (b2, _) = frames(&mut bob, &b_sub);
    assert!(b2 > b1 + 5, "bob stopped decoding alice: {b1} -> {b2}");
    // Lifting it resumes them.
    relay.lift(id);
    let resumed = wait_for(15, || {
        let (f, _) = frames(&mut alice, &a_sub);
        (f > after + 10).then_some(f)
    });
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert!(resumed.is_some(), "alice did not resume decoding bob");
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// ffmpeg sending Opus (48 kHz stereo) as plain RTP with the room's payload type.
fn ffmpeg_opus(relay: &Relay, local_port: u16, ssrc: u32, pt: u64) -> std::process::Child {
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"])
        .args([
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ])
        .args([
            "-t", "60", "-ac", "2", "-c:a", "libopus", "-b:a", "32k", "-f", "rtp",
        ])
        .args(["-ssrc", &ssrc.to_string(), "-payload_type", &pt.to_string()])
        .arg(format!(
            "rtp://127.0.0.1:{}?localport={local_port}&rtcpport={}",
            relay.media.port(),
            relay.media.port()
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

/// ffmpeg sending VP8 as plain RTP (fixed address, no ICE, no DTLS) with the room's payload
/// type, from 127.0.0.1:`local_port` to the relay.
fn ffmpeg_vp8(relay: &Relay, local_port: u16, ssrc: u32, pt: u64) -> std::process::Child {
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"])
        .args(["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15"])
        .args([
            "-t",
            "30",
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-g",
            "15",
        ])
        .args(["-b:v", "300k", "-f", "rtp"])
        .args(["-ssrc", &ssrc.to_string(), "-payload_type", &pt.to_string()])
        .arg(format!(
            "rtp://127.0.0.1:{}?localport={local_port}&rtcpport={}",
            relay.media.port(),
            relay.media.port()
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

#[test]
fn chromium_decodes_plain_rtp_from_ffmpeg_in_a_plain_legs_room() {
    if in_own_netns("chromium_decodes_plain_rtp_from_ffmpeg_in_a_plain_legs_room") {
        return;
    }
    let relay = Relay::start();
    relay.ok("PUT", "/v1/rooms/r", Some(&json!({"plain_legs": true})));
    let mut alice = Peer::chromium();
    publish(&relay, &mut alice, "a");
    let room = relay.ok("GET", "/v1/rooms/r", None);
    assert_eq!(room["plain_legs"], true);
    let vp8 = room["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["codec"] == "VP8")
        .expect("the room has VP8 from Chromium's offer")["pt"]
        .as_u64()
        .unwrap();
    // ffmpeg joins as a plain participant with a fixed address and one video track.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, body) = relay.call(
        "PUT",
        "/v1/rooms/r/participants/ffmpeg",
        Some(&json!({
            "address": format!("127.0.0.1:{port}"),
            "tracks": [{"ssrc": 424242, "kind": "video"}],
        })),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        relay.ok("GET", "/v1/rooms/r/participants/ffmpeg", None)["transport"],
        "rtp"
    );
    let mut ffmpeg = ffmpeg_vp8(&relay, port, 424242, vp8);
    let a_sub = subscribe(&relay, &mut alice, "a");
    let decoded = wait_for(30, || {
        let (f, s) = frames(&mut alice, &a_sub);
        (f > 30).then_some(s)
    });
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let stats = decoded.unwrap_or_else(|| {
        panic!(
            "alice decodes nothing from ffmpeg: {} {}",
            frames(&mut alice, &a_sub).1,
            relay.ok("GET", "/v1/rooms/r/participants/ffmpeg", None)
        )
    });
    eprintln!("alice receives ffmpeg: {stats}");
}
