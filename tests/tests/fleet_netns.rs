//! A fleet across network namespaces: etcd and three relays, each in a namespace of its own with
//! its own address on a bridge, clients in the relays' namespaces. A region rule posted on relay
//! A is in force on B and C when the call returns; B cut off from etcd by nftables fences itself
//! and forwards nothing while A and C go on; `kill -9` of the etcd leader of a 3-member cluster
//! fences no relay. One loadgen, in multi-relay mode with its clients in the relays'
//! namespaces, runs a room with participants on all three relays and finds no loss and no
//! misdelivery across the fleet.
//!
//! Needs root, `ip`, `nft` and Debian's etcd (`tests/install-deps.sh`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::etcd::Etcd;
use e2e::netns::{Hook, Host, Lan};
use e2e::{Options, Relay, rfc3339_in, roomy, rtp};
use serde_json::{Value, json};

const TTL: Duration = Duration::from_secs(3);
const TOKEN: &str = "fleet-test-token";

/// A relay running in a host's namespace; its API is reached from inside that namespace.
struct NsRelay {
    relay: Relay,
    host: Host,
}

impl NsRelay {
    fn start(host: &Host, etcd: &[String], node: &str, region: &str) -> Self {
        let addr = host.addr;
        let relay = Relay::start_with(Options {
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), host.ns.clone()],
            no_addresses: true,
            token: Some(TOKEN.into()),
            args: vec![
                "--media".into(),
                format!("{addr}:0"),
                "--control".into(),
                format!("{addr}:0"),
                "--control-token".into(),
                TOKEN.into(),
                "--etcd".into(),
                etcd.join(","),
                "--node".into(),
                node.into(),
                "--region".into(),
                region.into(),
                "--trunk".into(),
                format!("{addr}:40001"),
                "--workers".into(),
                "1".into(),
            ],
            ..Default::default()
        });
        let r = Self {
            relay,
            host: host.clone(),
        };
        wait_for(Duration::from_secs(5), &format!("{node} ready"), || {
            r.call("GET", "/readyz", None).0 == 200
        });
        r
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("http://{}{}", self.relay.control, path);
        let method = method.to_owned();
        let body = body.map(Value::to_string);
        self.host
            .run(move || {
                let req = ureq::request(&method, &url)
                    .timeout(Duration::from_secs(15))
                    .set("Authorization", &format!("Bearer {TOKEN}"));
                let result = match body {
                    Some(b) => req.set("Content-Type", "application/json").send_string(&b),
                    None => req.call(),
                };
                let resp = match result {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("{method} {url}: {e}"),
                };
                let status = resp.status();
                let text = resp.into_string().unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            })
            .unwrap()
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} -> {status} {v}"
        );
        v
    }

    fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.call("GET", "/metrics", None);
        text.as_str()
            .unwrap_or("")
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metric {series}"))
    }

    /// Room `room` with a sender `p` in `region` (sending from this namespace) and a receiver
    /// `q` listening in it.
    fn room_with_sender(&self, room: &str, region: &str, ssrc: u32) -> (Sender, Receiver) {
        self.ok("PUT", &format!("/v1/rooms/{room}"), None);
        let sender = Sender::start(&self.host, ssrc, self.relay.media);
        let receiver = Receiver::start(&self.host);
        let body = json!({"address": sender.addr.to_string(), "region": region,
            "tracks": [{"ssrc": ssrc, "kind": "audio"}]});
        self.ok(
            "PUT",
            &format!("/v1/rooms/{room}/participants/p"),
            Some(&body),
        );
        let body = json!({"address": receiver.addr.to_string()});
        self.ok(
            "PUT",
            &format!("/v1/rooms/{room}/participants/q"),
            Some(&body),
        );
        (sender, receiver)
    }
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends RTP (seq counting up) every millisecond from inside a namespace until dropped.
struct Sender {
    addr: SocketAddr,
    next: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(host: &Host, ssrc: u32, to: SocketAddr) -> Self {
        let ip = host.addr;
        let sock = host.run(move || UdpSocket::bind((ip, 0)).unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let next = Arc::new(AtomicU16::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (next.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let seq = n.fetch_add(1, Ordering::SeqCst);
                let _ = sock.send_to(&rtp(ssrc, seq, b"fleet"), to);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            addr,
            next,
            stop,
            thread: Some(thread),
        }
    }

    fn next_seq(&self) -> u16 {
        self.next.load(Ordering::SeqCst)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket in a namespace (a socket keeps the namespace it was made in).
struct Receiver {
    addr: SocketAddr,
    sock: UdpSocket,
}

impl Receiver {
    fn start(host: &Host) -> Self {
        let ip: Ipv4Addr = host.addr;
        let sock = host.run(move || UdpSocket::bind((ip, 0)).unwrap()).unwrap();
        Self {
            addr: sock.local_addr().unwrap(),
            sock,
        }
    }

    /// The RTP seqs of what arrives within `wait` of the last datagram (at most 10 s).
    fn seqs(&self, wait: Duration) -> Vec<u16> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_secs(10);
        self.sock.set_read_timeout(Some(wait)).unwrap();
        while let Ok(n) = self.sock.recv(&mut buf) {
            if n >= 12 {
                out.push(u16::from_be_bytes([buf[2], buf[3]]));
            }
            if Instant::now() > until {
                break;
            }
        }
        out
    }

    /// Whether anything sent from seq `from` on arrives within `timeout` (reading one datagram
    /// at a time, so a steady stream never keeps it reading).
    fn gets_from(&self, from: u16, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) if n >= 12 && u16::from_be_bytes([buf[2], buf[3]]) >= from => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

fn rule(mut body: Value) -> Value {
    let obj = body.as_object_mut().unwrap();
    obj.insert(
        "basis".into(),
        json!({"authority": "Test Court", "reference": "T-14", "jurisdiction": "CN"}),
    );
    obj.insert("expires_at".into(), Value::String(rfc3339_in(3600)));
    body
}

#[test]
fn a_region_rule_posted_on_a_is_in_force_on_b_and_c_when_the_call_returns() {
    let lan = Lan::new(&["etcd", "a", "b", "c"]).unwrap();
    let mut etcd = Etcd::start_on(&[lan.host("etcd")]).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let endpoints = etcd.endpoints();
    let a = NsRelay::start(lan.host("a"), &endpoints, "a", "HK");
    let b = NsRelay::start(lan.host("b"), &endpoints, "b", "CN");
    let c = NsRelay::start(lan.host("c"), &endpoints, "c", "CN");
    for r in [&a, &b, &c] {
        wait_for(Duration::from_secs(3), "3 nodes", || {
            r.metric("relay_fleet_nodes") == 3
        });
    }
    // Participants are fleet-wide: each relay's room has its own name here.
    let (b_send, b_recv) = b.room_with_sender("rb", "CN", 11);
    let (c_send, c_recv) = c.room_with_sender("rc", "CN", 12);
    let (a_send, a_recv) = a.room_with_sender("ra", "CN", 13);
    assert!(b_recv.gets_from(1, Duration::from_secs(2)));
    assert!(c_recv.gets_from(1, Duration::from_secs(2)));

    let body =
        rule(json!({"match": {"regions": ["CN"]}, "direction": "send", "relays_in": ["CN"]}));
    let started = Instant::now();
    let (status, v) = a.call("POST", "/v1/rules", Some(&body));
    let took = started.elapsed();
    let (b_from, c_from) = (b_send.next_seq(), c_send.next_seq());
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["in_force_on"], json!(["a", "b", "c"]), "{v}");
    eprintln!("POST on a to 201, 3 relays in namespaces: {took:?}");
    // No packet sent after the reply leaves b or c.
    std::thread::sleep(Duration::from_millis(300));
    for (name, recv, from) in [("b", &b_recv, b_from), ("c", &c_recv, c_from)] {
        let leaked: Vec<u16> = recv
            .seqs(Duration::from_millis(200))
            .into_iter()
            .filter(|s| *s >= from)
            .collect();
        assert!(
            leaked.is_empty(),
            "{name} forwarded {leaked:?} after the reply"
        );
    }
    // a is in HK: its CN participant still gets through there.
    assert!(a_recv.gets_from(a_send.next_seq(), Duration::from_secs(2)));

    // b cut off from etcd: it fences itself within TTL + 0.5 s and forwards nothing; a and c
    // go on.
    let lift = json!({"reason": "order withdrawn"});
    let id = v["id"].as_u64().unwrap();
    a.ok("DELETE", &format!("/v1/rules/{id}"), Some(&lift));
    assert!(b_recv.gets_from(b_send.next_seq(), Duration::from_secs(2)));
    let etcd_ip = lan.host("etcd").addr;
    let handle = lan
        .host("b")
        .block(Hook::Output, &format!("ip daddr {etcd_ip} tcp dport 2379"))
        .unwrap();
    let cut = Instant::now();
    wait_for(TTL + Duration::from_millis(500), "b fenced", || {
        b.metric("relay_fleet_fenced") == 1
    });
    eprintln!("b fenced {:?} after the cut", cut.elapsed());
    let from = b_send.next_seq();
    std::thread::sleep(Duration::from_millis(300));
    let leaked: Vec<u16> = b_recv
        .seqs(Duration::from_millis(200))
        .into_iter()
        .filter(|s| *s >= from)
        .collect();
    assert!(leaked.is_empty(), "b forwarded {leaked:?} while fenced");
    assert!(b.metric("relay_dropped_packets_total{reason=\"fenced\"}") > 0);
    for (name, r, recv, send) in [("a", &a, &a_recv, &a_send), ("c", &c, &c_recv, &c_send)] {
        assert_eq!(r.metric("relay_fleet_fenced"), 0, "{name}");
        assert!(
            recv.gets_from(send.next_seq(), Duration::from_secs(1)),
            "{name}"
        );
    }
    wait_for(TTL + Duration::from_secs(1), "a sees b go", || {
        a.metric("relay_fleet_nodes") == 2
    });
    // Back on the network: b rejoins, catches up and forwards again.
    lan.host("b").unblock(Hook::Output, handle).unwrap();
    wait_for(Duration::from_secs(15), "b back", || {
        b.metric("relay_fleet_fenced") == 0
    });
    assert!(b_recv.gets_from(b_send.next_seq(), Duration::from_secs(2)));
    drop((a_send, b_send, c_send));
    etcd.kill9(0).unwrap();
}

#[test]
fn killing_the_etcd_leader_of_three_fences_no_relay() {
    let lan = Lan::new(&["e1", "e2", "e3", "a", "b"]).unwrap();
    let hosts = [lan.host("e1"), lan.host("e2"), lan.host("e3")];
    // A relay rides out a leader change that ends within TTL - margin - TTL/10 = 2.45 s of the
    // kill (fleet::fence). etcd's default election timeout (1 s, randomized up to 2 s) leaves
    // little of that on a loaded 2-core CI machine running three members and two relays (one
    // CI run saw a relay fence); 500 ms, as OPERATIONS.md advises on a LAN, leaves plenty.
    let mut etcd = Etcd::start_on_electing(&hosts, Some(Duration::from_millis(500))).unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    let endpoints = etcd.endpoints();
    let a = NsRelay::start(lan.host("a"), &endpoints, "a", "HK");
    let b = NsRelay::start(lan.host("b"), &endpoints, "b", "CN");
    let (a_send, a_recv) = a.room_with_sender("r", "HK", 1);
    assert!(a_recv.gets_from(1, Duration::from_secs(2)));
    let leader = etcd.leader(Duration::from_secs(10)).unwrap();
    etcd.kill9(leader).unwrap();
    let killed = Instant::now();
    // Watch both relays for two TTLs: neither may fence, and a's media never stops.
    let until = killed + 2 * TTL;
    let mut elected = None;
    while Instant::now() < until {
        if elected.is_none() && etcd.leader(Duration::ZERO).is_ok() {
            elected = Some(killed.elapsed());
        }
        for (name, r) in [("a", &a), ("b", &b)] {
            assert_eq!(
                r.metric("relay_fleet_fenced"),
                0,
                "{name} fenced {:?} after the leader's kill (new leader after {elected:?})",
                killed.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("new etcd leader {elected:?} after the kill");
    assert_eq!(
        a.metric("relay_dropped_packets_total{reason=\"fenced\"}"),
        0
    );
    assert!(a_recv.gets_from(a_send.next_seq(), Duration::from_secs(1)));
    // A rule still goes through on the two members left.
    let (status, v) = b.call(
        "POST",
        "/v1/rules",
        Some(&rule(json!({"match": {"regions": ["CN"]}}))),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["in_force_on"], json!(["a", "b"]), "{v}");
}

/// A PLI (RTCP PSFB, FMT 1) from `sender` about `media`.
fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// Sends RTP seqs `from..from + n` of `ssrc` from `sock` to `to`, one every 500 µs.
fn burst(sock: &UdpSocket, ssrc: u32, to: SocketAddr, from: u16, n: u16) {
    for seq in from..from + n {
        sock.send_to(&rtp(ssrc, seq, b"trunked"), to).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// What each receiver got since the last read: RTP seqs of `ssrc` (anything else fails).
fn got(name: &str, r: &Receiver, ssrc: u32) -> Vec<u16> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    r.sock
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    while let Ok(n) = r.sock.recv(&mut buf) {
        assert!(n >= 12, "{name} got a {n}-byte datagram");
        let got_ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        assert_eq!(got_ssrc, ssrc, "{name} got another SSRC (misdelivery)");
        out.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    out
}

/// Trunk datagrams leaving `from` for each other relay, as the kernel counts them, and as
/// `from`'s metrics count them.
struct TrunkCount<'a> {
    from: &'a NsRelay,
    to: Vec<(&'a str, String)>,
}

impl<'a> TrunkCount<'a> {
    fn new(from: &'a NsRelay, peers: &[(&'a str, &NsRelay)]) -> Self {
        let mut to = Vec::new();
        for (name, peer) in peers {
            let counter = format!("trunk_{}_to_{name}", from.host.name);
            from.host
                .count(
                    &counter,
                    Hook::Output,
                    &format!(
                        "ip daddr {} udp sport 40001 udp dport 40001",
                        peer.host.addr
                    ),
                )
                .unwrap();
            to.push((*name, counter));
        }
        Self { from, to }
    }

    /// (kernel, metric) per peer, in the order given.
    fn read(&self) -> Vec<(u64, u64)> {
        self.to
            .iter()
            .map(|(name, counter)| {
                (
                    self.from.host.counter(counter).unwrap().packets,
                    self.from.metric(&format!(
                        "relay_trunk_packets_sent_total{{peer=\"{name}\"}}"
                    )),
                )
            })
            .collect()
    }
}

fn delta(after: &[(u64, u64)], before: &[(u64, u64)]) -> Vec<(u64, u64)> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.0 - b.0, a.1 - b.1))
        .collect()
}

#[test]
fn media_crosses_a_trunk_once_per_relay_that_may_receive_it() {
    const N: u16 = 200;
    const SSRC: u32 = 0x0a0a_0001;
    let lan = Lan::new(&["etcd", "a", "b", "c"]).unwrap();
    let mut etcd = Etcd::start_on(&[lan.host("etcd")]).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let endpoints = etcd.endpoints();
    let a = NsRelay::start(lan.host("a"), &endpoints, "a", "HK");
    let mut b = NsRelay::start(lan.host("b"), &endpoints, "b", "CN");
    let c = NsRelay::start(lan.host("c"), &endpoints, "c", "US");
    for r in [&a, &b, &c] {
        wait_for(Duration::from_secs(3), "3 nodes", || {
            r.metric("relay_fleet_nodes") == 3
        });
        r.ok("PUT", "/v1/rooms/m", None);
    }
    // The publisher and one receiver on a; receivers on b and c, in their regions.
    let pa = Receiver::start(&a.host);
    let ra = Receiver::start(&a.host);
    roomy(&pa.sock);
    roomy(&ra.sock);
    let join = |r: &NsRelay, id: &str, addr: SocketAddr, region: &str, tracks: Value| {
        let body = json!({"address": addr.to_string(), "region": region, "tracks": tracks});
        r.ok(
            "PUT",
            &format!("/v1/rooms/m/participants/{id}"),
            Some(&body),
        );
    };
    join(
        &a,
        "pa",
        pa.addr,
        "HK",
        json!([{"ssrc": SSRC, "kind": "audio"}]),
    );
    join(&a, "ra", ra.addr, "HK", json!([]));
    let mut rb: Vec<(String, Receiver)> = Vec::new();
    let mut rc: Vec<(String, Receiver)> = Vec::new();
    let add = |r: &NsRelay, list: &mut Vec<(String, Receiver)>, prefix: &str, region: &str, n| {
        for i in list.len()..n {
            let id = format!("{prefix}{i}");
            let recv = Receiver::start(&r.host);
            roomy(&recv.sock);
            join(r, &id, recv.addr, region, json!([]));
            list.push((id, recv));
        }
    };
    // Every relay knows every participant before media flows.
    let known = |n: usize| {
        for r in [&a, &b, &c] {
            wait_for(
                Duration::from_secs(5),
                "participants known fleet-wide",
                || {
                    r.ok("GET", "/v1/rooms/m", None)["participants"]
                        .as_array()
                        .is_some_and(|l| l.len() == n)
                },
            );
        }
    };
    let counts = TrunkCount::new(&a, &[("b", &b), ("c", &c)]);
    let mut seq = 1;
    // Sends N packets from pa and checks who got them.
    let mut round = |expect_trunks: [u64; 2],
                     to_ra: bool,
                     to_b: bool,
                     to_c: bool,
                     rb: &[(String, Receiver)],
                     rc: &[(String, Receiver)]| {
        let before = counts.read();
        burst(&pa.sock, SSRC, a.relay.media, seq, N);
        let want: Vec<u16> = (seq..seq + N).collect();
        seq += N;
        std::thread::sleep(Duration::from_millis(200));
        let all = |on: bool| if on { want.clone() } else { Vec::new() };
        assert_eq!(got("ra", &ra, SSRC), all(to_ra), "ra");
        for (id, r) in rb {
            assert_eq!(got(id, r, SSRC), all(to_b), "{id}");
        }
        for (id, r) in rc {
            assert_eq!(got(id, r, SSRC), all(to_c), "{id}");
        }
        assert!(got("pa", &pa, SSRC).is_empty(), "pa gets its own media");
        let d = delta(&counts.read(), &before);
        let n = u64::from(N);
        assert_eq!(
            d,
            vec![
                (expect_trunks[0] * n, expect_trunks[0] * n),
                (expect_trunks[1] * n, expect_trunks[1] * n)
            ],
            "trunk datagrams a->b, a->c (kernel, metric)"
        );
    };

    // One receiver per remote relay, then twenty: one copy per relay either way.
    add(&b, &mut rb, "rb", "CN", 1);
    add(&c, &mut rc, "rc", "US", 1);
    known(4);
    round([1, 1], true, true, true, &rb, &rc);
    add(&b, &mut rb, "rb", "CN", 20);
    add(&c, &mut rc, "rc", "US", 20);
    known(42);
    round([1, 1], true, true, true, &rb, &rc);
    let received = |r: &NsRelay| r.metric("relay_trunk_packets_received_total{peer=\"a\"}");
    assert_eq!(received(&b), 2 * u64::from(N));
    assert_eq!(received(&c), 2 * u64::from(N));

    // Feedback from a receiver on c about pa's SSRC crosses back to a and reaches pa.
    rc[0]
        .1
        .sock
        .send_to(&pli(0x0c0c_0000, SSRC), c.relay.media)
        .unwrap();
    let mut buf = [0u8; 2048];
    pa.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = pa.sock.recv(&mut buf).expect("the PLI reaches pa");
    assert_eq!(&buf[..n], &pli(0x0c0c_0000, SSRC)[..], "untouched");

    // Nobody on c may receive: no copy to c.
    let us = a.ok(
        "POST",
        "/v1/rules",
        Some(&rule(
            json!({"match": {"regions": ["US"]}, "direction": "receive"}),
        )),
    );
    round([1, 0], true, true, false, &rb, &rc);
    // A send rule on pa: nothing leaves a, trunk included.
    let pa_rule = b.ok(
        "POST",
        "/v1/rules",
        Some(&rule(
            json!({"match": {"participants": [{"room": "m", "participant": "pa"}]},
                          "direction": "send"}),
        )),
    );
    round([0, 0], false, false, false, &rb, &rc);
    let lift = json!({"reason": "order withdrawn"});
    for v in [&us, &pa_rule] {
        let id = v["id"].as_u64().unwrap();
        c.ok("DELETE", &format!("/v1/rules/{id}"), Some(&lift));
    }
    round([1, 1], true, true, true, &rb, &rc);

    // kill -9 of b while pa sends, for longer than b's lease lives on (a then takes b's
    // participants out of the room): ra and c's receivers lose nothing.
    const LONG: u16 = 8000;
    let from = seq;
    let sender = {
        let sock = pa.sock.try_clone().unwrap();
        let to = a.relay.media;
        std::thread::spawn(move || burst(&sock, SSRC, to, from, LONG))
    };
    std::thread::sleep(Duration::from_millis(300));
    b.relay.kill9();
    let killed = Instant::now();
    wait_for(TTL + Duration::from_secs(2), "a sees b go", || {
        a.metric("relay_fleet_nodes") == 2
    });
    eprintln!("a saw b go {:?} after kill -9", killed.elapsed());
    sender.join().unwrap();
    assert!(
        killed.elapsed() > TTL,
        "the burst outlived b's lease ({:?})",
        killed.elapsed()
    );
    seq += LONG;
    std::thread::sleep(Duration::from_millis(200));
    let want: Vec<u16> = (from..from + LONG).collect();
    assert_eq!(got("ra", &ra, SSRC), want, "ra during b's death");
    for (id, r) in &rc {
        assert_eq!(got(id, r, SSRC), want, "{id} during b's death");
    }
    for (_, r) in &rb {
        let _ = got("rb", r, SSRC);
    }
    // b's participants, placed again once a has seen b go, receive again (straight from a).
    // No live relay is in CN now: the least loaded of the others is a (2 participants, c 20).
    wait_for(Duration::from_secs(3), "a's load registered", || {
        let p = c.ok(
            "POST",
            "/v1/placements",
            Some(&json!({"room": "m", "region": "CN"})),
        );
        p["node"] == "a" && p["in_region"] == false
    });
    for (id, r) in &rb {
        wait_for(
            Duration::from_secs(2),
            "b's participant placed on a",
            || {
                let body = json!({"address": r.addr.to_string(), "region": "CN", "tracks": []});
                a.call(
                    "PUT",
                    &format!("/v1/rooms/m/participants/{id}"),
                    Some(&body),
                )
                .0 < 300
            },
        );
    }
    let before = counts.read();
    burst(&pa.sock, SSRC, a.relay.media, seq, N);
    std::thread::sleep(Duration::from_millis(200));
    let want: Vec<u16> = (seq..seq + N).collect();
    for (id, r) in &rb {
        assert_eq!(got(id, r, SSRC), want, "{id} placed on a");
    }
    for (id, r) in &rc {
        assert_eq!(got(id, r, SSRC), want, "{id}");
    }
    let d = delta(&counts.read(), &before);
    assert_eq!(d[1], (u64::from(N), u64::from(N)), "a->c still one copy");
    etcd.kill9(0).unwrap();
}

/// Every trunk datagram relay `r` sent, to every peer (the sum of its per-peer series).
fn trunk_sent(r: &NsRelay) -> u64 {
    let (_, text) = r.call("GET", "/metrics", None);
    text.as_str()
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("relay_trunk_packets_sent_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn loadgen_counts_a_room_on_three_relays_in_namespaces() {
    const PARTICIPANTS: u64 = 6;
    let lan = Lan::new(&["etcd", "a", "b", "c"]).unwrap();
    let mut etcd = Etcd::start_on(&[lan.host("etcd")]).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let endpoints = etcd.endpoints();
    let a = NsRelay::start(lan.host("a"), &endpoints, "a", "HK");
    let b = NsRelay::start(lan.host("b"), &endpoints, "b", "CN");
    let c = NsRelay::start(lan.host("c"), &endpoints, "c", "US");
    let relays = [&a, &b, &c];
    for r in relays {
        wait_for(Duration::from_secs(3), "3 nodes", || {
            r.metric("relay_fleet_nodes") == 3
        });
    }
    let before: u64 = relays.iter().map(|r| trunk_sent(r)).sum();
    // One room, two participants on each relay, every one sending audio to the five others
    // (addresses latched with STUN from inside each relay's namespace): one loadgen knows every
    // sender, so it counts loss and misdelivery across the fleet.
    let controls: Vec<String> = relays.iter().map(|r| r.relay.control.to_string()).collect();
    let namespaces: Vec<&str> = relays.iter().map(|r| r.host.ns.as_str()).collect();
    let loadgen = |more: &[&str]| -> Value {
        let started = Instant::now();
        let out = std::process::Command::new(e2e::loadgen_bin())
            .args(["--control", &controls.join(",")])
            .args(["--netns", &namespaces.join(",")])
            .args(["--token", TOKEN])
            .args(["--rooms", "1", "--participants", &PARTICIPANTS.to_string()])
            .args([
                "--profile",
                "audio",
                "--duration",
                "3",
                "--max-packets",
                "2000",
            ])
            .arg("--json")
            .args(more)
            .output()
            .expect("run loadgen");
        assert!(
            out.status.success(),
            "loadgen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!(
            "loadgen {more:?} across 3 relays ({:?}): {r}",
            started.elapsed()
        );
        assert_eq!(r["relays"], 3, "{r}");
        assert_eq!(
            (r["lost"].as_u64(), r["misdelivered"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
        assert_eq!(
            r.get("cross_relay_lost"),
            None,
            "none lost between relays: {r}"
        );
        assert_eq!(r["errors"], json!([]), "{r}");
        assert_eq!(r["control"]["failed"], 0, "{r}");
        // loadgen deleted its room on a: it is gone from the whole fleet.
        for relay in relays {
            wait_for(Duration::from_secs(3), "the room gone fleet-wide", || {
                relay.ok("GET", "/v1/rooms", None)["rooms"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
            });
        }
        r
    };
    let r = loadgen(&[]);
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}"));
    let sent = n("sent");
    assert!(sent >= 500, "{r}");
    assert_eq!(n("expected"), sent * (PARTICIPANTS - 1), "{r}");
    assert_eq!(n("received"), n("expected"), "{r}");
    // Of each packet's five receivers, four are on the two other relays.
    assert_eq!(n("cross_relay_expected"), sent * 4, "{r}");
    // Each packet crossed a trunk once to each of the two other relays.
    let after: u64 = relays.iter().map(|r| trunk_sent(r)).sum();
    assert_eq!(after - before, 2 * sent, "trunk datagrams");
    // Again with three drop rules posted on a during the run (random participants, directions
    // and media; fleet-wide when the call returns): what they stop is neither lost nor
    // misdelivered anywhere.
    let r = loadgen(&["--rules-per-min", "60", "--seed", "1"]);
    assert_eq!(r["control"]["rules_added"], 3, "{r}");
    let (sent, expected) = (r["sent"].as_u64().unwrap(), r["expected"].as_u64().unwrap());
    assert!(
        expected < sent * (PARTICIPANTS - 1),
        "the rules stopped nothing: {r}"
    );
    etcd.kill9(0).unwrap();
}
