//! Forwarding through the real binary over real loopback sockets.

use e2e::{Client, PATIENT, QUIET, Relay, rtcp_nack, rtcp_pli, rtcp_rr, rtcp_sr, rtp};

/// a, b, c in room r1 with one track each; d, e in room r2.
struct Setup {
    relay: Relay,
    a: Client,
    b: Client,
    c: Client,
    d: Client,
    e: Client,
}

fn setup() -> Setup {
    let relay = Relay::start();
    let (a, b, c, d, e) = (
        Client::new(),
        Client::new(),
        Client::new(),
        Client::new(),
        Client::new(),
    );
    relay.room("r1");
    relay.room("r2");
    relay.join("r1", "a", &a, &[(0xa, "audio"), (0xa2, "video")]);
    relay.join("r1", "b", &b, &[(0xb, "audio")]);
    relay.join("r1", "c", &c, &[(0xc, "video")]);
    relay.join("r2", "d", &d, &[(0xd, "audio")]);
    relay.join("r2", "e", &e, &[(0xe, "audio")]);
    Setup {
        relay,
        a,
        b,
        c,
        d,
        e,
    }
}

#[test]
fn fan_out_is_byte_identical_to_everyone_else_in_the_room_only() {
    let s = setup();
    // Odd sizes, a CSRC, an extension and padding: whatever the relay does, it must not touch it.
    let mut packets = Vec::new();
    for i in 0..20u16 {
        let mut p = rtp(0xa, i, &vec![i as u8; 17 + usize::from(i) * 31]);
        if i % 2 == 0 {
            p[0] |= 0x10; // extension bit with a one-word RFC 8285 one-byte header extension
            let ext = [0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0];
            p.splice(12..12, ext);
        }
        packets.push(p);
    }
    for p in &packets {
        s.a.send(s.relay.media, p);
    }
    let got_b = s.b.recv_n(packets.len(), PATIENT);
    let got_c = s.c.recv_n(packets.len(), PATIENT);
    assert_eq!(
        got_b, packets,
        "b must get every packet, byte for byte, in order"
    );
    assert_eq!(
        got_c, packets,
        "c must get every packet, byte for byte, in order"
    );
    assert!(s.a.recv_all(QUIET).is_empty(), "no echo to the sender");
    assert!(s.d.recv_all(QUIET).is_empty(), "nothing crosses rooms");
    assert!(s.e.recv_all(QUIET).is_empty(), "nothing crosses rooms");
    // The other room works on its own.
    let p = rtp(0xd, 1, b"room two");
    s.d.send(s.relay.media, &p);
    assert_eq!(s.e.recv_n(1, PATIENT), vec![p]);
    assert!(s.a.recv_all(QUIET).is_empty());
    assert!(s.relay.metric("relay_packets_out_total") >= 41);
}

#[test]
fn unknown_sources_and_undeclared_ssrcs_are_dropped_and_counted() {
    let s = setup();
    let stranger = Client::new();
    for i in 0..5 {
        stranger.send(s.relay.media, &rtp(0xa, i, b"spoof"));
        s.a.send(s.relay.media, &rtp(0x999, i, b"undeclared"));
        // b's SSRC from a's address: declared in the room, but not by a.
        s.a.send(s.relay.media, &rtp(0xb, i, b"not yours"));
    }
    s.a.send(s.relay.media, &[0x17, 0xfe, 0xfd, 0, 0]); // a DTLS record
    s.a.send(s.relay.media, &[0x80, 96, 0]); // truncated RTP
    for c in [&s.a, &s.b, &s.c, &s.d, &s.e] {
        assert!(c.recv_all(QUIET).is_empty());
    }
    let m = |r: &str| {
        s.relay
            .metric(&format!("relay_dropped_packets_total{{reason=\"{r}\"}}"))
    };
    assert_eq!(m("unknown_source"), 5);
    assert_eq!(m("undeclared_ssrc"), 10);
    assert_eq!(m("dtls"), 1);
    assert_eq!(m("malformed_rtp"), 1);
    assert_eq!(s.relay.metric("relay_packets_out_total"), 0);
    let a = s.relay.ok("GET", "/v1/rooms/r1/participants/a", None);
    // Undeclared SSRCs and malformed RTP count on the participant; DTLS is refused before lookup.
    assert_eq!(a["counters"]["packets_dropped"], 11);
}

#[test]
fn sender_reports_follow_media_and_feedback_goes_to_the_publisher_only() {
    let s = setup();
    let sr = rtcp_sr(0xa);
    s.a.send(s.relay.media, &sr);
    assert_eq!(s.b.recv_n(1, PATIENT), vec![sr.clone()]);
    assert_eq!(s.c.recv_n(1, PATIENT), vec![sr]);
    assert!(s.a.recv_all(QUIET).is_empty());

    let pli = rtcp_pli(0xb, 0xa2);
    s.b.send(s.relay.media, &pli);
    assert_eq!(s.a.recv_n(1, PATIENT), vec![pli]);
    let nack = rtcp_nack(0xc, 0xa, 7);
    s.c.send(s.relay.media, &nack);
    assert_eq!(s.a.recv_n(1, PATIENT), vec![nack]);
    let rr = rtcp_rr(0xc, 0xb);
    s.c.send(s.relay.media, &rr);
    assert_eq!(s.b.recv_n(1, PATIENT), vec![rr]);
    for c in [&s.a, &s.b, &s.c, &s.d, &s.e] {
        assert!(
            c.recv_all(QUIET).is_empty(),
            "feedback reached someone else"
        );
    }
    // Feedback about a publisher in another room goes nowhere.
    s.b.send(s.relay.media, &rtcp_pli(0xb, 0xd));
    assert!(s.d.recv_all(QUIET).is_empty());
}

#[test]
fn removing_a_participant_stops_it_and_the_others_go_on() {
    let s = setup();
    s.relay.ok("DELETE", "/v1/rooms/r1/participants/b", None);
    let p = rtp(0xa, 1, b"after b left");
    s.a.send(s.relay.media, &p);
    assert_eq!(s.c.recv_n(1, PATIENT), vec![p]);
    assert!(
        s.b.recv_all(QUIET).is_empty(),
        "a removed participant gets nothing"
    );
    s.b.send(s.relay.media, &rtp(0xb, 2, b"b still sending"));
    assert!(s.a.recv_all(QUIET).is_empty());
    assert!(s.c.recv_all(QUIET).is_empty());
    let (status, _) = s.relay.call("GET", "/v1/rooms/r1/participants/b", None);
    assert_eq!(status, 404);
}

#[test]
fn closing_a_room_stops_it_for_everyone_and_other_rooms_go_on() {
    let s = setup();
    s.relay.ok("DELETE", "/v1/rooms/r1", None);
    s.a.send(s.relay.media, &rtp(0xa, 1, b"closed"));
    s.b.send(s.relay.media, &rtp(0xb, 1, b"closed"));
    let p = rtp(0xe, 1, b"room two goes on");
    s.e.send(s.relay.media, &p);
    assert_eq!(s.d.recv_n(1, PATIENT), vec![p]);
    for c in [&s.a, &s.b, &s.c] {
        assert!(c.recv_all(QUIET).is_empty());
    }
    let (status, _) = s.relay.call("GET", "/v1/rooms/r1", None);
    assert_eq!(status, 404);
    // The addresses are free again.
    s.relay.room("r1");
    s.relay.join("r1", "a", &s.a, &[(0xa, "audio")]);
}

#[test]
fn changes_are_in_force_when_the_call_returns() {
    let relay = Relay::start();
    let (a, b) = (Client::new(), Client::new());
    relay.room("r");
    relay.join("r", "a", &a, &[(1, "audio")]);
    // Repeatedly add b and send at once: the very first packet after the reply must arrive.
    for i in 0..20u16 {
        relay.join("r", "b", &b, &[]);
        let p = rtp(1, i, b"now");
        a.send(relay.media, &p);
        assert_eq!(b.recv_n(1, PATIENT), vec![p], "round {i}");
        relay.ok("DELETE", "/v1/rooms/r/participants/b", None);
        a.send(relay.media, &rtp(1, i, b"gone"));
        assert!(
            b.recv_all(std::time::Duration::from_millis(20)).is_empty(),
            "round {i}"
        );
    }
}

#[test]
fn subscriptions_choose_what_each_receiver_gets() {
    let relay = Relay::start();
    let (a, b, c) = (Client::new(), Client::new(), Client::new());
    relay.room("r");
    relay.join("r", "a", &a, &[(1, "audio")]);
    relay.join("r", "b", &b, &[(2, "audio")]);
    let body = serde_json::json!({
        "address": c.addr().to_string(), "subscribe": ["b"]
    });
    relay.ok("PUT", "/v1/rooms/r/participants/c", Some(&body));
    a.send(relay.media, &rtp(1, 1, b"from a"));
    b.send(relay.media, &rtp(2, 1, b"from b"));
    let got = c.recv_n(2, std::time::Duration::from_millis(500));
    assert_eq!(got, vec![rtp(2, 1, b"from b")]);
    relay.ok(
        "PATCH",
        "/v1/rooms/r/participants/c",
        Some(&serde_json::json!({"subscribe": "all"})),
    );
    a.send(relay.media, &rtp(1, 2, b"from a"));
    assert_eq!(c.recv_n(1, PATIENT), vec![rtp(1, 2, b"from a")]);
}

#[test]
fn ipv6_participants_are_forwarded() {
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine: skipping");
        return;
    };
    drop(probe);
    let relay = Relay::start_with(e2e::Options {
        args: vec![
            "--media".into(),
            "[::]:0".into(),
            "--control".into(),
            "127.0.0.1:0".into(),
        ],
        no_addresses: true,
        ..Default::default()
    });
    let a6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let b4 = Client::new();
    relay.room("r");
    let body = serde_json::json!({"address": a6.local_addr().unwrap().to_string(),
        "tracks": [{"ssrc": 1, "kind": "audio"}]});
    relay.ok("PUT", "/v1/rooms/r/participants/a", Some(&body));
    relay.join("r", "b", &b4, &[(2, "audio")]);
    let media6: std::net::SocketAddr = format!("[::1]:{}", relay.media.port()).parse().unwrap();
    let media4: std::net::SocketAddr = format!("127.0.0.1:{}", relay.media.port()).parse().unwrap();
    a6.send_to(&rtp(1, 1, b"v6"), media6).unwrap();
    assert_eq!(b4.recv_n(1, PATIENT), vec![rtp(1, 1, b"v6")]);
    b4.send(media4, &rtp(2, 1, b"v4"));
    a6.set_read_timeout(Some(PATIENT)).unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = a6.recv_from(&mut buf).expect("IPv6 participant receives");
    assert_eq!(&buf[..n], &rtp(2, 1, b"v4")[..]);
}
