//! A handshake flood from a latched WebRTC leg, against the relay binary: the flooding leg
//! (this test: a publish exchange with a captured Chromium offer, ICE with USE-CANDIDATE, then
//! DTLS records as fast as a bounded loop sends them, real ClientHellos from a `dimpl` client
//! and garbage handshake records) gets no more than its share of the DTLS thread. Meanwhile two
//! aiortc participants complete their handshakes on both legs and decode each other's media, and
//! the flood's excess shows up in the counters.
//!
//! Runs in a network namespace with only `lo`. Needs tests/browser/.venv with aiortc:
//! `tests/install-deps.sh`.

mod webrtc;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use e2e::Relay;
use relay::packet::stun;
use serde_json::{Value, json};
use webrtc::{Peer, in_own_netns, publish, subscribe, wait_for};

/// The flood: at most this many datagrams, for at most [`FLOOD_FOR`].
const FLOOD_MAX: u64 = 600_000;
const FLOOD_FOR: Duration = Duration::from_secs(60);

/// `a=<name>:` from an SDP text.
fn attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no a={name} in {sdp}"))
        .trim()
}

/// Joins room `f` as participant `flood` with a captured Chromium offer and latches `socket`
/// as its publish leg (a Binding request with USE-CANDIDATE, as a controlling agent sends).
fn latch_flooder(relay: &Relay, socket: &UdpSocket) {
    relay.ok("PUT", "/v1/rooms/f", None);
    let offer = include_str!("../../relay/src/sdp/testdata/chromium_publish_offer.sdp");
    let answer = relay.ok(
        "POST",
        "/v1/rooms/f/participants/flood/webrtc/publish",
        Some(&json!({"sdp": offer})),
    );
    let answer = answer["sdp"].as_str().unwrap();
    let username = format!(
        "{}:{}",
        attribute(answer, "ice-ufrag"),
        attribute(offer, "ice-ufrag")
    );
    let pwd = attribute(answer, "ice-pwd");
    let request = stun::BindingRequest {
        transaction_id: rand::random(),
        username: username.as_bytes(),
        priority: 0x6e00_01ff,
        ice_controlling: Some(rand::random()),
        use_candidate: true,
        integrity_key: pwd.as_bytes(),
        fingerprint: true,
    };
    let mut out = vec![0; request.buffer_len()];
    let n = request.emit(&mut out).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let latched = wait_for(10, || {
        socket.send_to(&out[..n], relay.media).unwrap();
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        stun::Message::new_checked(&buf[..len])
            .is_ok_and(|m| m.class() == stun::Class::Success)
            .then_some(())
    });
    assert!(
        latched.is_some(),
        "the relay did not answer the flooder's STUN"
    );
    let p = relay.ok("GET", "/v1/rooms/f/participants/flood", None);
    assert_eq!(p["legs"][0]["latched"], true, "{p}");
}

/// What the flood sends: a real ClientHello (dimpl as the client, DTLS 1.2) and handshake
/// records with a ClientHello type and garbage inside.
fn flood_datagrams() -> Vec<Vec<u8>> {
    let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
    let mut client = dimpl::Dtls::new_12(Arc::new(dimpl::Config::default()), cert, Instant::now());
    client.set_active(true);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    // The first flight goes out at the client's first timeout.
    for _ in 0..4 {
        loop {
            match client.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => out.push(p.to_vec()),
                dimpl::Output::Timeout(t) => {
                    let _ = client.handle_timeout(t);
                    break;
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    assert!(
        out.first().is_some_and(|d| d.first() == Some(&22)),
        "dimpl sent no ClientHello"
    );
    for i in 0..8u8 {
        // Record: handshake (22), DTLS 1.2, epoch 0, sequence i, length; then a ClientHello
        // header (type 1) whose body is noise.
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, i, 0, 100, 1, 0, 0, 88];
        d.extend((0..96).map(|_| rand::random::<u8>()));
        out.push(d);
    }
    out
}

/// Sends `datagrams` round and round to `to` until `stop` or the bounds; returns the count.
fn flood(socket: UdpSocket, to: SocketAddr, datagrams: Vec<Vec<u8>>, stop: &AtomicBool) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    'out: while sent < FLOOD_MAX && start.elapsed() < FLOOD_FOR {
        for d in &datagrams {
            if stop.load(Ordering::Relaxed) {
                break 'out;
            }
            if socket.send_to(d, to).is_ok() {
                sent += 1;
            }
        }
        // About ten datagrams a millisecond: a flood, and still bounded on a shared machine.
        thread::sleep(Duration::from_millis(1));
    }
    sent
}

fn stats(peer: &mut Peer, pc: &Value) -> Value {
    peer.call(json!({"op": "stats", "id": pc}))
}

#[test]
fn a_dtls_flood_from_a_latched_leg_is_bounded_and_other_legs_connect() {
    if in_own_netns("a_dtls_flood_from_a_latched_leg_is_bounded_and_other_legs_connect") {
        return;
    }
    let relay = Relay::start();
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    latch_flooder(&relay, &flooder);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (stop, to, datagrams) = (Arc::clone(&stop), relay.media, flood_datagrams());
        thread::spawn(move || flood(flooder, to, datagrams, &stop))
    };
    // The flood reaches the DTLS thread before anyone else starts a handshake.
    let reached = wait_for(10, || {
        (relay.metric("relay_dtls_handshakes_total{outcome=\"started\"}") >= 1).then_some(())
    });
    assert!(reached.is_some(), "{}", relay.metrics_text());

    // Two aiortc participants publish and subscribe to each other during the flood.
    relay.ok("PUT", "/v1/rooms/r", None);
    let mut alice = Peer::aiortc();
    let mut bob = Peer::aiortc();
    publish(&relay, &mut alice, "a");
    publish(&relay, &mut bob, "b");
    let a_sub = subscribe(&relay, &mut alice, "a");
    let b_sub = subscribe(&relay, &mut bob, "b");
    for (peer, sub) in [(&mut alice, &a_sub), (&mut bob, &b_sub)] {
        let decoded = wait_for(45, || {
            let s = stats(peer, sub);
            (s["framesDecoded"].as_u64().unwrap_or(0) > 10
                && s["audioFramesDecoded"].as_u64().unwrap_or(0) > 20)
                .then_some(s)
        });
        assert!(
            decoded.is_some(),
            "no media during the flood: {} {}",
            stats(peer, sub),
            relay.metrics_text()
        );
    }
    let still_flooding = !flooding.is_finished();
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().unwrap();
    assert!(still_flooding, "the flood ended before the handshakes did");
    for id in ["a", "b"] {
        let p = relay.ok("GET", &format!("/v1/rooms/r/participants/{id}"), None);
        let legs = p["legs"].as_array().unwrap();
        assert!(legs.iter().all(|l| l["dtls"] == "connected"), "{p}");
    }

    // The flooder: its handshake failed at its bound, and the datagrams over its share were
    // dropped and counted, at its own queue or at the workers' channel to the DTLS thread.
    let flood = relay.ok("GET", "/v1/rooms/f/participants/flood", None);
    assert_eq!(flood["legs"][0]["dtls"], "failed", "{flood}");
    let processed = relay.metric("relay_dtls_datagrams_total{outcome=\"processed\"}");
    let dropped = relay.metric("relay_dtls_datagrams_total{outcome=\"queue_full\"}")
        + relay.metric("relay_dtls_datagrams_total{outcome=\"finished\"}")
        + relay.metric("relay_dropped_packets_total{reason=\"dtls_queue_full\"}");
    eprintln!(
        "flood: {sent} sent, {processed} processed by the DTLS thread (all handshakes), \
         {dropped} dropped and counted; flooder {}",
        flood["legs"][0]
    );
    assert!(
        processed < 400,
        "the flood took more than its share: {processed}"
    );
    assert!(dropped * 2 > sent, "{dropped} of {sent} counted");
    assert_eq!(
        relay.metric("relay_dtls_handshakes_total{outcome=\"connected\"}"),
        4,
        "both legs of both participants"
    );
    assert!(relay.metric("relay_dtls_handshakes_total{outcome=\"failed\"}") >= 1);
}
