//! ICE-lite STUN latching through the real binary.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use e2e::{Client, Options, PATIENT, Relay, rtp, stun_request as request};
use hmac::{Hmac, Mac};
use relay::packet::stun::{Class, Message};
use serde_json::json;
use sha1::Sha1;

/// RFC 5769 §2.1 sample request: USERNAME "evtj:h6vY", password "VOkJxbRl1RmTxUk/WvJxBt",
/// with PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY and FINGERPRINT.
/// <https://www.rfc-editor.org/rfc/rfc5769#section-2.1>
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];
const RFC5769_PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// Checks MESSAGE-INTEGRITY of a response by hand (RFC 8489 §14.5), independently of the
/// relay's own parser: HMAC-SHA1 over the message up to the attribute, with the length field
/// covering the attribute.
fn integrity_ok(resp: &[u8], pwd: &str) -> bool {
    let mut off = 20;
    while off + 4 <= resp.len() {
        let t = u16::from_be_bytes([resp[off], resp[off + 1]]);
        let l = usize::from(u16::from_be_bytes([resp[off + 2], resp[off + 3]]));
        if t == 0x0008 {
            let mut head = resp[..off].to_vec();
            let len = (off + 24 - 20) as u16;
            head[2..4].copy_from_slice(&len.to_be_bytes());
            let mut mac = Hmac::<Sha1>::new_from_slice(pwd.as_bytes()).unwrap();
            mac.update(&head);
            return mac.verify_slice(&resp[off + 4..off + 24]).is_ok();
        }
        off += 4 + l.div_ceil(4) * 4;
    }
    false
}

fn exchange(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(req, to).unwrap();
    let mut buf = [0u8; 1500];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

fn latched(relay: &Relay, room: &str, id: &str) -> serde_json::Value {
    relay.ok("GET", &format!("/v1/rooms/{room}/participants/{id}"), None)
}

/// Polls until the participant's `latched` is `want`, for at most `within`.
fn wait_latched(relay: &Relay, id: &str, want: bool, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = latched(relay, "r", id);
        if v["latched"] == want {
            return v;
        }
        assert!(start.elapsed() < within, "{id} latched != {want}: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rfc5769_request_is_authenticated_and_answered() {
    let relay = Relay::start();
    relay.room("r");
    let body = json!({"ice": {"ufrag": "evtj", "pwd": RFC5769_PWD}});
    relay.ok("PUT", "/v1/rooms/r/participants/p", Some(&body));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resp = exchange(&sock, relay.media, &RFC5769_REQUEST).expect("an answer");
    let msg = Message::new_checked(&resp[..]).unwrap();
    assert_eq!(msg.transaction_id(), RFC5769_REQUEST[8..20]);
    // The sample request carries ICE-CONTROLLED: a lite agent is always controlled, so that is a
    // role conflict, answered 487 without latching.
    assert_eq!(msg.class(), Class::Error);
    assert_eq!(msg.error_code().unwrap().0, 487);
    msg.check_fingerprint().unwrap();
    assert_eq!(latched(&relay, "r", "p")["latched"], false);

    // A wrong password gets silence, and is counted.
    let relay2 = Relay::start();
    relay2.room("r");
    let body = json!({"ice": {"ufrag": "evtj", "pwd": "AAAAAAAAAAAAAAAAAAAAAA"}});
    relay2.ok("PUT", "/v1/rooms/r/participants/p", Some(&body));
    assert!(exchange(&sock, relay2.media, &RFC5769_REQUEST).is_none());
    assert_eq!(
        relay2.metric("relay_dropped_packets_total{reason=\"stun_unauthorized\"}"),
        1
    );
}

/// Room r with a (fixed address, SSRC 1) and b (SSRC 2, no address, generated credentials);
/// returns a's client, b's PUT reply and b's relay-side ufrag and pwd.
fn a_and_unlatched_b(relay: &Relay) -> (Client, serde_json::Value, String, String) {
    relay.room("r");
    let a = Client::new();
    relay.join("r", "a", &a, &[(1, "audio")]);
    let v = relay.ok(
        "PUT",
        "/v1/rooms/r/participants/b",
        Some(&json!({"tracks": [{"ssrc": 2, "kind": "audio"}]})),
    );
    let ufrag = v["ice"]["ufrag"].as_str().unwrap().to_owned();
    let pwd = v["ice"]["pwd"].as_str().unwrap().to_owned();
    (a, v, ufrag, pwd)
}

#[test]
fn an_authenticated_binding_latches_the_address_and_media_flows() {
    let relay = Relay::start();
    let (a, v, ufrag, pwd) = a_and_unlatched_b(&relay);
    assert!(ufrag.len() >= 4 && pwd.len() >= 22);
    assert_eq!(v["media_address"], relay.media.to_string());
    assert_eq!(v["latched"], false);
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();

    // Before latching, b's media is from an unknown source.
    b.send_to(&rtp(2, 1, b"early"), relay.media).unwrap();
    assert!(a.recv_all(Duration::from_millis(100)).is_empty());

    let resp = exchange(&b, relay.media, &request(&ufrag, &pwd, 7)).expect("success response");
    let msg = Message::new_checked(&resp[..]).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.xor_mapped_address(), Some(b.local_addr().unwrap()));
    msg.check_fingerprint().unwrap();
    assert!(
        integrity_ok(&resp, &pwd),
        "MESSAGE-INTEGRITY verifies with the pwd"
    );
    let v = wait_latched(&relay, "b", true, PATIENT);
    assert!(v["latched_since"].is_string());
    assert!(!v.to_string().contains(&b.local_addr().unwrap().to_string()));

    b.send_to(&rtp(2, 2, b"latched"), relay.media).unwrap();
    assert_eq!(a.recv_n(1, PATIENT), vec![rtp(2, 2, b"latched")]);
    a.send(relay.media, &rtp(1, 1, b"to b"));
    let mut buf = [0u8; 100];
    b.set_read_timeout(Some(PATIENT)).unwrap();
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &rtp(1, 1, b"to b")[..]);
    assert_eq!(relay.metric("relay_latches_total"), 1);
}

#[test]
fn bad_requests_latch_nothing_and_are_counted() {
    let relay = Relay::start();
    relay.room("r");
    let v = relay.ok("PUT", "/v1/rooms/r/participants/b", Some(&json!({})));
    let ufrag = v["ice"]["ufrag"].as_str().unwrap().to_owned();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        exchange(
            &s,
            relay.media,
            &request(&ufrag, "WrongPasswordWrongPassword", 1)
        )
        .is_none()
    );
    assert!(
        exchange(
            &s,
            relay.media,
            &request("nobody", "WrongPasswordWrongPassword", 2)
        )
        .is_none()
    );
    assert!(
        exchange(&s, relay.media, &request(&ufrag, "", 3)).is_none(),
        "no integrity"
    );
    let mut truncated = request(&ufrag, "x", 4);
    truncated.truncate(30);
    assert!(exchange(&s, relay.media, &truncated).is_none());
    let m = |r: &str| relay.metric(&format!("relay_dropped_packets_total{{reason=\"{r}\"}}"));
    assert_eq!(m("stun_unauthorized"), 2);
    assert_eq!(m("stun_unknown_user"), 1);
    assert_eq!(m("stun_malformed"), 1);
    assert_eq!(latched(&relay, "r", "b")["latched"], false);
}

#[test]
fn nat_rebinding_moves_the_participant_and_silence_unlatches_it() {
    let relay = Relay::start_with(Options {
        args: vec!["--latch-timeout".into(), "1".into()],
        ..Default::default()
    });
    let (a, _, ufrag, pwd) = a_and_unlatched_b(&relay);
    let old = UdpSocket::bind("127.0.0.1:0").unwrap();
    exchange(&old, relay.media, &request(&ufrag, &pwd, 1)).expect("answer");
    wait_latched(&relay, "b", true, PATIENT);
    let new = UdpSocket::bind("127.0.0.1:0").unwrap();
    exchange(&new, relay.media, &request(&ufrag, &pwd, 2)).expect("answer");
    // Wait for the move: media from the new address flows, the old address is unknown.
    let start = Instant::now();
    loop {
        new.send_to(&rtp(2, 9, b"new"), relay.media).unwrap();
        if !a.recv_n(1, Duration::from_millis(50)).is_empty() {
            break;
        }
        assert!(start.elapsed() < PATIENT, "rebinding never took effect");
    }
    old.send_to(&rtp(2, 10, b"old"), relay.media).unwrap();
    assert!(
        a.recv_all(Duration::from_millis(200)).is_empty(),
        "old address no longer accepted"
    );

    // Silence for longer than the latch timeout unlatches b.
    let v = wait_latched(&relay, "b", false, Duration::from_secs(4));
    assert_eq!(v["unlatched_count"], 1);
    assert!(v["last_unlatched_at"].is_string());
    a.send(relay.media, &rtp(1, 1, b"to nobody"));
    new.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 100];
    assert!(
        new.recv_from(&mut buf).is_err(),
        "nothing is sent to an unlatched address"
    );
}

#[test]
fn a_bad_stun_flood_does_not_stop_forwarding() {
    // The flood gets a core of its own, as a load generator would, and the relay the other.
    let relay = e2e::one_core_relay();
    relay.room("r");
    let (a, b) = (Client::new(), Client::new());
    relay.join("r", "a", &a, &[(1, "audio")]);
    relay.join("r", "b", &b, &[]);
    let v = relay.ok("PUT", "/v1/rooms/r/participants/c", Some(&json!({})));
    let ufrag = v["ice"]["ufrag"].as_str().unwrap().to_owned();
    let flood = request(&ufrag, "WrongPasswordWrongPassword", 9);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = relay.media;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        e2e::pin_to_last_core();
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let _ = flooder.send_to(&flood, media);
            n += 1;
        }
        n
    });
    // A 50 packets/s stream for one second loses nothing.
    let flood_start = Instant::now();
    for i in 0..50u16 {
        a.send(relay.media, &rtp(1, i, b"voice"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = b.recv_n(50, PATIENT);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = t.join().unwrap();
    let secs = flood_start.elapsed().as_secs_f64();
    assert_eq!(
        got.len(),
        50,
        "legitimate stream lost packets during a flood of {sent}"
    );
    let limited = relay.metric("relay_dropped_packets_total{reason=\"stun_rate_limited\"}");
    let unauthorized = relay.metric("relay_dropped_packets_total{reason=\"stun_unauthorized\"}");
    assert!(limited > 0, "the flood was rate-limited");
    // One source gets a one-second burst of 50 checks, then 50 a second.
    let bound = (50.0 + 50.0 * secs + 10.0) as u64;
    assert!(
        unauthorized <= bound,
        "HMAC work bounded per source: {unauthorized} > {bound}"
    );
}
