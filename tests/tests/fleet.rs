//! A fleet of real relays on real etcd (Debian's, started by each test on loopback): joining and
//! the fence, rules posted on one relay in force on every relay when the call returns (no packet
//! leaks after the reply), `relays_in`, lifting from another relay, the fleet audit chain
//! mirrored and verified offline, a relay that does not acknowledge fenced before the call
//! returns, relays that lose etcd forwarding nothing, and a room shared among each relay's
//! workers with media crossing the trunks.

mod webrtc;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::control::EventStream;
use e2e::etcd::Etcd;
use e2e::{Client, Options, Relay, relay_bin, rfc3339_in, roomy, rtp};
use serde_json::{Value, json};

const TTL: Duration = Duration::from_secs(3);

fn fleet_relay(etcd: &Etcd, node: &str, region: &str) -> Relay {
    fleet_relay_with(etcd, node, region, &["--workers", "1"])
}

/// A fleet relay with `extra` flags.
fn fleet_relay_with(etcd: &Etcd, node: &str, region: &str, extra: &[&str]) -> Relay {
    let mut args: Vec<String> = vec![
        "--etcd".into(),
        etcd.endpoints().join(","),
        "--node".into(),
        node.into(),
        "--region".into(),
        region.into(),
        "--trunk".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let relay = Relay::start_with(Options {
        args,
        ..Default::default()
    });
    wait_for(Duration::from_secs(5), &format!("{node} ready"), || {
        relay.call("GET", "/readyz", None).0 == 200
    });
    relay
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A rule body with a test basis and a one-hour expiry.
fn rule(mut body: Value) -> Value {
    let obj = body.as_object_mut().unwrap();
    obj.insert(
        "basis".into(),
        json!({"authority": "Test Court", "reference": "T-14", "jurisdiction": "CN"}),
    );
    obj.insert("expires_at".into(), Value::String(rfc3339_in(3600)));
    body
}

/// A participant that sends RTP (ssrc, seq counting up) every millisecond until stopped;
/// `next` is the seq it sends next.
struct Sender {
    addr: SocketAddr,
    next: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(ssrc: u32, to: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let next = Arc::new(AtomicU16::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (next.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most two minutes of packets.
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

/// The RTP sequence numbers among datagrams.
fn seqs(packets: &[Vec<u8>]) -> Vec<u16> {
    packets
        .iter()
        .filter(|p| p.len() >= 12)
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect()
}

/// Whether `c` receives a packet with seq `from` or later within `timeout` (reading one at a
/// time, so a steady stream never keeps it reading).
fn gets_from(c: &Client, from: u16, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        let got = seqs(&c.recv_n(1, until.saturating_duration_since(Instant::now())));
        if got.iter().any(|s| *s >= from) {
            return true;
        }
    }
    false
}

/// On `relay`: room `room`, a sender `p` in `region` (ssrc) and a receiver `q`.
fn room_with_sender(relay: &Relay, room: &str, region: &str, ssrc: u32) -> (Sender, Client) {
    relay.room(room);
    let sender = Sender::start(ssrc, relay.media);
    let body = json!({"address": sender.addr.to_string(), "region": region,
        "tracks": [{"ssrc": ssrc, "kind": "audio"}]});
    relay.ok(
        "PUT",
        &format!("/v1/rooms/{room}/participants/p"),
        Some(&body),
    );
    let q = Client::new();
    relay.join(room, "q", &q, &[]);
    (sender, q)
}

fn fleet_metric(relay: &Relay, series: &str) -> u64 {
    relay.metric(series)
}

#[test]
fn a_region_rule_posted_on_one_relay_is_in_force_on_the_others_when_the_call_returns() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let b = fleet_relay(&etcd, "b", "CN");
    let c = fleet_relay(&etcd, "c", "US");
    for r in [&a, &b, &c] {
        wait_for(Duration::from_secs(2), "3 nodes", || {
            fleet_metric(r, "relay_fleet_nodes") == 3
        });
        assert_eq!(fleet_metric(r, "relay_fleet_fenced"), 0);
    }
    // A CN participant on b and one on c, each sending to a receiver on its relay.
    // (Participants are fleet-wide: each relay's room has its own name here.)
    let (b_sender, b_recv) = room_with_sender(&b, "rb", "CN", 11);
    let (c_sender, c_recv) = room_with_sender(&c, "rc", "CN", 12);
    // Placement: the live relay of the region, else the least loaded (a: nobody on it yet).
    let place = |region: &str| {
        a.ok(
            "POST",
            "/v1/placements",
            Some(&json!({"room": "r", "region": region})),
        )
    };
    let p = place("CN");
    assert_eq!(
        (p["node"].as_str(), p["in_region"].as_bool()),
        (Some("b"), Some(true)),
        "{p}"
    );
    assert_eq!(p["control"], b.control.to_string());
    wait_for(Duration::from_secs(2), "loads registered", || {
        let p = place("DE");
        p["node"] == "a" && p["in_region"] == false
    });
    assert!(!b_recv.recv_n(20, Duration::from_secs(2)).is_empty());
    assert!(!c_recv.recv_n(20, Duration::from_secs(2)).is_empty());

    // Posted on a (HK), limited to relays in CN: b enforces it, c does not.
    let body =
        rule(json!({"match": {"regions": ["CN"]}, "direction": "send", "relays_in": ["CN"]}));
    let started = Instant::now();
    let (status, v) = a.call("POST", "/v1/rules", Some(&body));
    let took = started.elapsed();
    assert_eq!(status, 201, "{v}");
    let first_after = b_sender.next_seq();
    assert_eq!(v["in_force_on"], json!(["a", "b", "c"]), "{v}");
    assert_eq!(v["fenced"], json!([]), "{v}");
    assert_eq!(v["relays_in"], json!(["CN"]), "{v}");
    let id = v["id"].as_u64().expect("rule id");
    eprintln!("rule round trip across 3 relays: {took:?}");

    // Nothing b forwards after the reply: every packet the sender sent from then on is dropped
    // (what was forwarded before may still sit in the receiver's socket).
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<u16> = seqs(&b_recv.recv_all(Duration::from_millis(200)))
        .into_iter()
        .filter(|s| *s >= first_after)
        .collect();
    assert!(late.is_empty(), "b forwarded {late:?} after the reply");
    // The sender kept sending (so the check above saw something to drop): b's rule drops grow.
    wait_for(Duration::from_secs(5), "b's rule drops", || {
        fleet_metric(&b, "relay_dropped_packets_total{reason=\"rule\"}") > 100
    });
    // c is not in CN: its CN participant is not touched.
    assert!(gets_from(
        &c_recv,
        c_sender.next_seq(),
        Duration::from_secs(2)
    ));
    assert_eq!(
        fleet_metric(&c, "relay_dropped_packets_total{reason=\"rule\"}"),
        0
    );
    let on_b = b.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(on_b["state"], "active");
    assert_eq!(on_b["participants_matched"], 1);
    assert_eq!(c.call("GET", &format!("/v1/rules/{id}"), None).0, 404);
    // The transparency report of any relay aggregates the fleet: b alone enforces the rule.
    wait_for(Duration::from_secs(2), "fleet report", || {
        let t = c.ok("GET", "/v1/transparency", None);
        let rule = t["fleet"]["per_rule"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id).cloned());
        t["fleet"]["relays"].as_array().map(Vec::len) == Some(3)
            && rule.is_some_and(|r| r["enforced_by"] == json!(["b"]) && r["jurisdiction"] == "CN")
    });

    // Lifted through c (which does not enforce it but knows it): media flows on b again.
    let (status, v) = c.call(
        "DELETE",
        &format!("/v1/rules/{id}"),
        Some(&json!({"reason": "order withdrawn"})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["in_force_on"], json!(["a", "b", "c"]), "{v}");
    assert!(
        gets_from(&b_recv, b_sender.next_seq(), Duration::from_secs(2)),
        "b forwards again"
    );
    assert_eq!(
        b.ok("GET", &format!("/v1/rules/{id}"), None)["state"],
        "lifted"
    );
    // A second lift anywhere is refused.
    let (status, _) = a.call(
        "DELETE",
        &format!("/v1/rules/{id}"),
        Some(&json!({"reason": "again"})),
    );
    assert_eq!(status, 409);
    drop((b_sender, c_sender));

    // Every relay mirrors the fleet chain (rule_added, rule_lifted) and it verifies offline.
    for r in [&a, &b, &c] {
        let dir = r.data_dir.join("fleet");
        wait_for(Duration::from_secs(2), "mirror", || {
            std::fs::metadata(dir.join("relay.db")).is_ok() && verify(&dir).contains("2 entries")
        });
    }
}

#[test]
fn a_rule_that_expires_is_recorded_once_in_the_fleet_chain() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let b = fleet_relay(&etcd, "b", "CN");
    for r in [&a, &b] {
        wait_for(Duration::from_secs(2), "2 nodes", || {
            fleet_metric(r, "relay_fleet_nodes") == 2
        });
    }
    let mut body = rule(json!({"match": {"regions": ["CN"]}, "direction": "send"}));
    body["expires_at"] = json!(rfc3339_in(3));
    let v = a.ok("POST", "/v1/rules", Some(&body));
    let id = v["id"].as_u64().expect("rule id");
    // Both relays expire it on their own clocks, and both try to record that in the fleet's
    // chain: one append wins, the other finds the record changed and writes nothing.
    for r in [&a, &b] {
        wait_for(Duration::from_secs(8), "expired", || {
            r.ok("GET", &format!("/v1/rules/{id}"), None)["state"] == "expired"
        });
    }
    for r in [&a, &b] {
        let dir = r.data_dir.join("fleet");
        wait_for(Duration::from_secs(5), "rule_expired mirrored", || {
            verify(&dir).contains("2 entries")
        });
    }
    // Give the slower relay's attempt time to land if it (wrongly) could.
    std::thread::sleep(Duration::from_secs(2));
    for r in [&a, &b] {
        let text = verify(&r.data_dir.join("fleet"));
        assert!(text.contains("2 entries"), "{text}");
        let actions = fleet_actions(&r.data_dir.join("fleet"));
        assert_eq!(actions, ["rule_added", "rule_expired"], "{text}");
    }
    // An expired rule cannot be lifted, through either relay.
    for r in [&a, &b] {
        let (status, v) = r.call(
            "DELETE",
            &format!("/v1/rules/{id}"),
            Some(&json!({"reason": "too late"})),
        );
        assert_eq!(status, 409, "{v}");
    }
}

/// The actions of the fleet chain mirrored in `dir`, in order.
fn fleet_actions(dir: &std::path::Path) -> Vec<String> {
    let store = relay::store::Store::open(dir).unwrap();
    store
        .entries(0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// `relay audit verify --data-dir DIR`: its output (it must succeed).
fn verify(dir: &std::path::Path) -> String {
    let out = Command::new(relay_bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {text}");
    text
}

#[test]
fn a_relay_that_does_not_acknowledge_is_fenced_before_the_call_returns() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let mut c = fleet_relay(&etcd, "c", "CN");
    wait_for(Duration::from_secs(2), "2 nodes", || {
        fleet_metric(&a, "relay_fleet_nodes") == 2
    });
    // c hangs (SIGSTOP): it can neither apply nor ack.
    let pid = c.pid() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let started = Instant::now();
    let (status, v) = a.call(
        "POST",
        "/v1/rules",
        Some(&rule(json!({"match": {"regions": ["CN"]}}))),
    );
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["in_force_on"], json!(["a"]), "{v}");
    assert_eq!(v["fenced"], json!(["c"]), "{v}");
    // Not before c's lease could have ended (it expires while c is stopped, or is revoked
    // after the one-TTL ack wait, and then one more TTL passes).
    assert!(
        took >= TTL - Duration::from_millis(500),
        "answered after {took:?}"
    );
    assert!(
        took < 2 * TTL + Duration::from_secs(2),
        "answered after {took:?}"
    );
    let id = v["id"].as_u64().unwrap();
    // c finds its lease gone, rejoins, applies the rule and forwards again.
    wait_for(Duration::from_secs(3 * TTL.as_secs()), "c rejoined", || {
        c.call("GET", "/readyz", None).0 == 200
    });
    assert_eq!(
        c.ok("GET", &format!("/v1/rules/{id}"), None)["state"],
        "active"
    );
    wait_for(Duration::from_secs(2), "a sees c again", || {
        fleet_metric(&a, "relay_fleet_nodes") == 2
    });
    c.kill9();
}

#[test]
fn relays_that_lose_etcd_fence_themselves_and_forward_nothing_until_back() {
    let mut etcd = Etcd::start(1).unwrap();
    let b = fleet_relay(&etcd, "b", "CN");
    let (sender, q) = room_with_sender(&b, "r", "DE", 21);
    assert!(!q.recv_n(20, Duration::from_secs(2)).is_empty());
    // The only etcd member dies: no keepalive is answered any more.
    etcd.kill9(0).unwrap();
    let cut = Instant::now();
    wait_for(TTL + Duration::from_millis(500), "b fenced", || {
        fleet_metric(&b, "relay_fleet_fenced") == 1
    });
    eprintln!("fenced {:?} after etcd died", cut.elapsed());
    let (status, v) = b.call("GET", "/readyz", None);
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "fenced");
    // Forwards nothing: what the sender sends from now on is counted as `fenced`.
    let from = sender.next_seq();
    std::thread::sleep(Duration::from_millis(300));
    let leaked: Vec<u16> = seqs(&q.recv_all(Duration::from_millis(200)))
        .into_iter()
        .filter(|s| *s >= from)
        .collect();
    assert!(leaked.is_empty(), "forwarded while fenced: {leaked:?}");
    assert!(fleet_metric(&b, "relay_dropped_packets_total{reason=\"fenced\"}") > 100);
    // etcd back: the relay rejoins (or its lease survived) and forwards again.
    etcd.restart(0).unwrap();
    wait_for(Duration::from_secs(15), "b unfenced", || {
        fleet_metric(&b, "relay_fleet_fenced") == 0
    });
    assert!(
        gets_from(&q, sender.next_seq(), Duration::from_secs(2)),
        "forwards again"
    );
}

#[test]
fn without_etcd_the_relay_is_alone_and_says_nothing_of_a_fleet() {
    let relay = Relay::start();
    assert_eq!(relay.call("GET", "/readyz", None).0, 200);
    let p = relay.ok("POST", "/v1/placements", Some(&json!({"room": "r"})));
    assert_eq!(p["node"], Value::Null);
    assert_eq!(p["control"], relay.control.to_string());
    let (status, v) = relay.call(
        "POST",
        "/v1/placements",
        Some(&json!({"room": "r", "region": "c n"})),
    );
    assert_eq!(status, 400, "{v}");
    let text = relay.metrics_text();
    assert!(!text.contains("relay_fleet_"), "no fleet metrics alone");
    // The fleet flags need --etcd.
    let out = Command::new(relay_bin())
        .args(["serve", "--region", "CN", "--control", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--etcd"));
}

#[test]
fn rooms_span_relays_and_a_lost_relay_names_its_participants() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let mut b = fleet_relay(&etcd, "b", "CN");
    wait_for(Duration::from_secs(2), "2 nodes", || {
        fleet_metric(&a, "relay_fleet_nodes") == 2
    });
    let mut events = EventStream::open(a.control, None, None, None);
    a.room("m");
    b.room("m");
    let (x, y) = (Client::new(), Client::new());
    b.ok(
        "PUT",
        "/v1/rooms/m/participants/x",
        Some(&json!({"address": x.addr().to_string(), "region": "CN",
            "tracks": [{"ssrc": 5, "kind": "audio"}]})),
    );
    a.join("m", "y", &y, &[]);
    // Any relay lists every participant with the relay it lives on.
    let mut listed = Value::Null;
    wait_for(Duration::from_secs(2), "x seen on a", || {
        listed = a.ok("GET", "/v1/rooms/m", None);
        listed["participants"].as_array().map(Vec::len) == Some(2)
    });
    let nodes: Vec<(String, String)> = listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["participant"].as_str().unwrap().to_owned(),
                p["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(nodes.contains(&("x".into(), "b".into())), "{listed}");
    assert!(nodes.contains(&("y".into(), "a".into())), "{listed}");
    wait_for(Duration::from_secs(2), "y seen on b", || {
        b.ok("GET", "/v1/rooms/m", None)["participants"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    });
    // Changing x through a is refused, naming b.
    let (status, v) = a.call(
        "PATCH",
        "/v1/rooms/m/participants/x",
        Some(&json!({"region": "HK"})),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "wrong_node");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("relay b"),
        "{v}"
    );
    // b dies: within TTL + 1 s a says so and names x.
    b.kill9();
    let killed = Instant::now();
    let lost = events
        .until("node_lost", TTL + Duration::from_secs(1))
        .expect("node_lost within TTL + 1 s");
    eprintln!("node_lost {:?} after kill -9", killed.elapsed());
    assert_eq!(lost.data["node"], "b");
    assert_eq!(
        lost.data["participants"],
        json!([{"room": "m", "participant": "x"}]),
        "{:?}",
        lost.data
    );
    // x is placed again on a: accepted now.
    let p = a.ok(
        "POST",
        "/v1/placements",
        Some(&json!({"room": "m", "region": "CN"})),
    );
    assert_eq!(p["node"], "a", "{p}");
    a.ok(
        "PUT",
        "/v1/rooms/m/participants/x",
        Some(&json!({"address": x.addr().to_string(), "region": "CN",
            "tracks": [{"ssrc": 5, "kind": "audio"}]})),
    );
    x.send(a.media, &rtp(5, 1, b"again"));
    assert_eq!(
        y.recv_n(1, Duration::from_secs(2)).len(),
        1,
        "y gets x again"
    );
}

/// Two relays that both accept a PUT for one participant id (each before it saw the other's
/// key) settle on one: the fleet's key names the last writer, and the other relay lets go of its
/// participant with `participant_left` reason `replaced`, naming the relay that holds it.
#[test]
fn a_participant_put_on_two_relays_at_once_ends_on_one_and_the_other_says_so() {
    const IDS: usize = 40;
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let b = fleet_relay(&etcd, "b", "US");
    wait_for(Duration::from_secs(2), "2 nodes", || {
        fleet_metric(&a, "relay_fleet_nodes") == 2
    });
    let mut on = [
        EventStream::open(a.control, None, None, None),
        EventStream::open(b.control, None, None, None),
    ];
    let mut clashes = 0;
    // Rounds until PUTs have clashed (each round's 40 pairs start at once on both relays; a
    // round without a clash means every pair was ordered by the watch, which is also right).
    for round in 0..3 {
        let room = format!("c{round}");
        a.room(&room);
        wait_for(Duration::from_secs(2), "the room known on b", || {
            listed_rooms(&b).iter().any(|(r, _)| *r == room)
        });
        let barrier = std::sync::Barrier::new(2);
        let put = |r: &Relay| -> Vec<u16> {
            barrier.wait();
            (0..IDS)
                .map(|i| {
                    let path = format!("/v1/rooms/{room}/participants/x{i}");
                    r.call("PUT", &path, Some(&json!({"tracks": []}))).0
                })
                .collect()
        };
        let (sa, sb) = std::thread::scope(|s| {
            let ha = s.spawn(|| put(&a));
            let hb = s.spawn(|| put(&b));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let mut both = Vec::new();
        for i in 0..IDS {
            for st in [sa[i], sb[i]] {
                assert!(matches!(st, 201 | 409), "x{i}: {} / {}", sa[i], sb[i]);
            }
            assert!(sa[i] == 201 || sb[i] == 201, "x{i} accepted nowhere");
            if sa[i] == 201 && sb[i] == 201 {
                both.push(format!("x{i}"));
            }
        }
        // Both relays settle on one relay per id, the same one.
        let path = format!("/v1/rooms/{room}");
        let mut views = (Vec::new(), Vec::new());
        wait_for(Duration::from_secs(5), "one relay per id on both", || {
            views = (
                members(&a.ok("GET", &path, None)),
                members(&b.ok("GET", &path, None)),
            );
            views.0 == views.1 && views.0.len() == IDS
        });
        // Each clash: exactly one relay let go, naming the other, which is the one listed.
        let mut replaced = Vec::new();
        for (events, node) in on.iter_mut().zip(["a", "b"]) {
            let deadline = Instant::now() + Duration::from_millis(500);
            while let Some(e) = events.next(deadline.saturating_duration_since(Instant::now())) {
                if e.kind == "participant_left" && e.data["room"] == room.as_str() {
                    assert_eq!(e.data["reason"], "replaced", "{:?}", e.data);
                    let id = e.data["participant"].as_str().unwrap().to_owned();
                    let holder = e.data["node"].as_str().unwrap().to_owned();
                    assert_ne!(holder, node);
                    assert!(
                        views.0.contains(&(id.clone(), holder.clone())),
                        "{id} said to be on {holder}: {:?}",
                        views.0
                    );
                    replaced.push(id);
                }
            }
        }
        replaced.sort();
        both.sort();
        assert_eq!(replaced, both, "one participant_left replaced per clash");
        eprintln!(
            "round {round}: {} of {IDS} PUTs accepted by both relays",
            both.len()
        );
        clashes += both.len();
        if clashes > 0 {
            break;
        }
    }
    assert!(
        clashes > 0,
        "no PUT pair clashed in 3 rounds: the path was not exercised"
    );
}

/// A relay restarted from its database after a room was deleted fleet-wide while it was down
/// closes that room (it was deleted); the rooms the fleet still holds come back with their
/// participants.
#[test]
fn a_relay_restarted_from_its_database_closes_rooms_deleted_while_it_was_down() {
    let etcd = Etcd::start(1).unwrap();
    let data = tempfile::tempdir().unwrap();
    let start_a = || {
        let args: Vec<String> = vec![
            "--etcd".into(),
            etcd.endpoints().join(","),
            "--node".into(),
            "a".into(),
            "--region".into(),
            "HK".into(),
            "--trunk".into(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            "1".into(),
        ];
        let relay = Relay::start_with(Options {
            args,
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        });
        // A restarted node waits for its previous life's lease to go (up to two TTLs).
        wait_for(TTL * 3, "a ready", || {
            relay.call("GET", "/readyz", None).0 == 200
        });
        relay
    };
    let mut a = start_a();
    let b = fleet_relay(&etcd, "b", "US");
    for room in ["gone", "kept"] {
        a.room(room);
        a.join(room, "p", &Client::new(), &[(7, "audio")]);
    }
    wait_for(Duration::from_secs(2), "rooms known on b", || {
        let listed = listed_rooms(&b);
        ["gone", "kept"]
            .iter()
            .all(|r| listed.iter().any(|(l, _)| l == r))
    });
    a.kill9();
    let closed = b.ok("DELETE", "/v1/rooms/gone", None);
    assert_eq!(closed["closed"], true, "{closed}");
    let a = start_a();
    wait_for(Duration::from_secs(3), "gone closed on a", || {
        a.call("GET", "/v1/rooms/gone", None).0 == 404
    });
    let kept = a.ok("GET", "/v1/rooms/kept", None);
    assert_eq!(members(&kept), [("p".to_owned(), "a".to_owned())], "{kept}");
    assert!(
        !listed_rooms(&a).iter().any(|(r, _)| r == "gone"),
        "{:?}",
        listed_rooms(&a)
    );
}

/// The participant ids and nodes a room view lists, sorted.
fn members(view: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = view["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["participant"].as_str().unwrap_or("").to_owned(),
                p["node"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The rooms `GET /v1/rooms` lists, with their participant counts.
fn listed_rooms(relay: &Relay) -> Vec<(String, u64)> {
    relay.ok("GET", "/v1/rooms", None)["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["participants"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rooms_are_fleet_objects_created_anywhere_joined_everywhere_deleted_anywhere() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let b = fleet_relay(&etcd, "b", "CN");
    let c = fleet_relay(&etcd, "c", "US");
    wait_for(Duration::from_secs(2), "3 nodes", || {
        fleet_metric(&a, "relay_fleet_nodes") == 3
    });
    // Created on a only; b and c take participants into it at once (whether or not their
    // watch has brought it yet).
    let (status, created) = a.call("PUT", "/v1/rooms/m", Some(&json!({"plain_legs": true})));
    assert_eq!(status, 201, "{created}");
    let (x, y, z) = (Client::new(), Client::new(), Client::new());
    b.join("m", "x", &x, &[(5, "audio")]);
    c.join("m", "z", &z, &[]);
    a.join("m", "y", &y, &[]);
    // A room nobody created is still 404 for a participant, as on one relay.
    let (status, v) = b.call(
        "PUT",
        "/v1/rooms/nowhere/participants/q",
        Some(&json!({"tracks": []})),
    );
    assert_eq!(status, 404, "{v}");
    // Every relay lists the room with all three participants, each with its node, and the
    // settings it was created with.
    let want: Vec<(String, String)> = [("x", "b"), ("y", "a"), ("z", "c")]
        .iter()
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect();
    for relay in [&a, &b, &c] {
        wait_for(Duration::from_secs(2), "all members listed", || {
            members(&relay.ok("GET", "/v1/rooms/m", None)) == want
        });
        let view = relay.ok("GET", "/v1/rooms/m", None);
        assert_eq!(view["plain_legs"], true, "{view}");
        assert!(
            listed_rooms(relay).contains(&("m".to_owned(), 3)),
            "{:?}",
            listed_rooms(relay)
        );
    }
    // A participant of another relay answers with its fleet summary and node.
    let remote = c.ok("GET", "/v1/rooms/m/participants/x", None);
    assert_eq!(remote["node"], "b", "{remote}");
    assert_eq!(remote["tracks"][0]["ssrc"], 5, "{remote}");
    assert!(remote.get("address").is_none(), "no address: {remote}");
    let local = b.ok("GET", "/v1/rooms/m/participants/x", None);
    assert_eq!(local["node"], "b", "{local}");
    let (status, _) = c.call("GET", "/v1/rooms/m/participants/nobody", None);
    assert_eq!(status, 404);
    // The settings are the fleet's: creating it again elsewhere is 200, the other value 409.
    let (status, v) = c.call("PUT", "/v1/rooms/m", None);
    assert_eq!(status, 200, "{v}");
    let (status, v) = b.call("PUT", "/v1/rooms/m", Some(&json!({"plain_legs": false})));
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "plain_legs_fixed");
    // Media crosses: x on b reaches y on a and z on c.
    x.send(b.media, &rtp(5, 1, b"rooms"));
    assert_eq!(y.recv_n(1, Duration::from_secs(2)).len(), 1, "y gets x");
    assert_eq!(z.recv_n(1, Duration::from_secs(2)).len(), 1, "z gets x");
    // A room with no part on a relay is listed and shown there too.
    a.room("n");
    wait_for(Duration::from_secs(2), "n listed on c", || {
        listed_rooms(&c).contains(&("n".to_owned(), 0))
    });
    let view = c.ok("GET", "/v1/rooms/n", None);
    assert_eq!(view["participants"], json!([]), "{view}");
    // Deleted on c: every relay closes its part, with the events a single relay sends.
    let mut on_a = EventStream::open(a.control, None, None, None);
    let mut on_b = EventStream::open(b.control, None, None, None);
    let closed = c.ok("DELETE", "/v1/rooms/m", None);
    assert_eq!(closed["closed"], true, "{closed}");
    assert_eq!(closed["participants"], 3, "{closed}");
    for (events, node) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let e = events
            .until("room_closed", Duration::from_secs(2))
            .unwrap_or_else(|| panic!("room_closed on {node}"));
        assert_eq!(e.data["room"], "m");
    }
    for relay in [&a, &b, &c] {
        wait_for(Duration::from_secs(2), "m gone", || {
            relay.call("GET", "/v1/rooms/m", None).0 == 404
                && !listed_rooms(relay).iter().any(|(r, _)| r == "m")
        });
    }
    let (status, v) = b.call(
        "PUT",
        "/v1/rooms/m/participants/x",
        Some(&json!({"tracks": []})),
    );
    assert_eq!(status, 404, "{v}");
    let (status, _) = a.call("DELETE", "/v1/rooms/m", None);
    assert_eq!(status, 404);
    // A room outlives the relay it was created on.
    drop(a);
    wait_for(TTL + Duration::from_secs(2), "a gone", || {
        fleet_metric(&c, "relay_fleet_nodes") == 2
    });
    assert!(listed_rooms(&c).contains(&("n".to_owned(), 0)));
    c.join("n", "w", &Client::new(), &[]);
    wait_for(Duration::from_secs(2), "w seen on b", || {
        members(&b.ok("GET", "/v1/rooms/n", None)) == [("w".to_owned(), "c".to_owned())]
    });
}

#[test]
fn no_trunk_copy_goes_to_a_relay_where_a_relays_in_rule_blocks_every_receiver() {
    let etcd = Etcd::start(1).unwrap();
    let a = fleet_relay(&etcd, "a", "HK");
    let b = fleet_relay(&etcd, "b", "CN");
    let c = fleet_relay(&etcd, "c", "US");
    wait_for(Duration::from_secs(2), "3 nodes", || {
        fleet_metric(&a, "relay_fleet_nodes") == 3
    });
    // A publisher on a; a CN participant receiving on b (a CN relay) and one on c (a US relay).
    let (sender, _) = room_with_sender(&a, "m", "HK", 21);
    let (on_b, on_c) = (Client::new(), Client::new());
    for (relay, client, id) in [(&b, &on_b, "rb"), (&c, &on_c, "rc")] {
        relay.ok(
            "PUT",
            &format!("/v1/rooms/m/participants/{id}"),
            Some(&json!({"address": client.addr().to_string(), "region": "CN", "tracks": []})),
        );
    }
    for (client, who) in [(&on_b, "b's receiver"), (&on_c, "c's receiver")] {
        let from = sender.next_seq();
        assert!(
            gets_from(client, from, Duration::from_secs(3)),
            "{who} gets media"
        );
    }
    let sent = |peer: &str| {
        fleet_metric(
            &a,
            &format!("relay_trunk_packets_sent_total{{peer=\"{peer}\"}}"),
        )
    };
    let before = sent("b");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sent("b") > before + 100, "copies to b before the rule");
    // CN participants may not receive, enforced by CN relays only: b's receiver is blocked on b,
    // c's is not on c. a sends b nothing from the reply on, and c everything.
    let (status, v) = a.call(
        "POST",
        "/v1/rules",
        Some(&rule(
            json!({"match": {"regions": ["CN"]}, "direction": "receive",
            "relays_in": ["CN"]}),
        )),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let (b0, c0) = (sent("b"), sent("c"));
    std::thread::sleep(Duration::from_millis(500));
    let (b1, c1) = (sent("b"), sent("c"));
    assert_eq!(b1, b0, "no copy to b after the reply");
    assert!(c1 > c0 + 200, "c still gets copies: {c0} -> {c1}");
    let from = sender.next_seq();
    assert!(
        gets_from(&on_c, from, Duration::from_secs(2)),
        "c's receiver still gets media"
    );
    assert!(
        !gets_from(&on_b, from, Duration::from_millis(300)),
        "b's receiver gets nothing"
    );
    // The rule is not a's: a does not list it and does not count it.
    assert_eq!(a.call("GET", &format!("/v1/rules/{id}"), None).0, 404);
    // Lifted (through c), copies to b resume from the reply on.
    let (status, v) = c.call(
        "DELETE",
        &format!("/v1/rules/{id}"),
        Some(&json!({"reason": "withdrawn"})),
    );
    assert_eq!(status, 200, "{v}");
    let from = sender.next_seq();
    assert!(
        gets_from(&on_b, from, Duration::from_secs(2)),
        "b's receiver gets media again"
    );
    assert!(sent("b") > b1, "copies to b again");
}

/// Benchmark (docs/BENCHMARKS.md, "Fleet"): `POST /v1/rules` to 201 on a fleet of three relays
/// on loopback against the same POST on one relay alone, p50 and p99 of 200 rules each, and a
/// bare etcd transaction of the same shape (CAS on a head key, two puts) through etcd's HTTP
/// gateway in the same run.
/// `RELAY_BIN=$PWD/target/release/relay cargo test -p e2e --test fleet -- --ignored --nocapture rule_round_trip`
///
/// With `RELAY_BENCH_TRACE=DIR`, each fleet relay logs the fleet's steps at debug level to
/// `DIR/{node}.log` (commit, watch event, applied, ack written, ack seen, answered: each with its
/// revision or rule id and a timestamp) and the calls go to `DIR/calls.tsv` (rule id, wall-clock
/// start in microseconds since the epoch, round trip in microseconds).
#[test]
#[ignore = "benchmark: run by hand on a quiet machine"]
fn rule_round_trip_bench() {
    const N: usize = 200;
    let trace = std::env::var_os("RELAY_BENCH_TRACE").map(std::path::PathBuf::from);
    let fast = |r: &mut Options| {
        r.args.extend(["--max-rule-changes".into(), "10000".into()]);
    };
    let time = |relay: &Relay, calls: Option<&std::path::Path>| {
        let mut lines = String::new();
        let mut took: Vec<Duration> = (0..N)
            .map(|i| {
                let body = rule(json!({"match": {"participants": [{"room": "r", "participant": format!("p{i}")}]}}));
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                let t = Instant::now();
                let (status, v) = relay.call("POST", "/v1/rules", Some(&body));
                let took = t.elapsed();
                assert_eq!(status, 201, "{v}");
                lines.push_str(&format!(
                    "{}\t{}\t{}\n",
                    v["id"],
                    wall.as_micros(),
                    took.as_micros()
                ));
                took
            })
            .collect();
        if let Some(path) = calls {
            std::fs::write(path, lines).unwrap();
        }
        took.sort();
        (took[N / 2], took[N * 99 / 100])
    };
    let mut alone_opts = Options::default();
    fast(&mut alone_opts);
    let alone = Relay::start_with(alone_opts);
    let (p50, p99) = time(&alone, None);
    eprintln!("one relay alone:        p50 {p50:?} p99 {p99:?}");
    let etcd = Etcd::start(1).unwrap();
    let start = |node: &str| {
        let mut o = Options {
            args: vec![
                "--etcd".into(),
                etcd.endpoints().join(","),
                "--node".into(),
                node.into(),
                "--trunk".into(),
                "127.0.0.1:0".into(),
            ],
            ..Default::default()
        };
        if let Some(dir) = &trace {
            o.stderr = Some(dir.join(format!("{node}.log")));
            o.env.push((
                "RELAY_LOG".into(),
                "info,relay::fleet=debug,relay::control::owner::fleet=debug".into(),
            ));
        }
        fast(&mut o);
        Relay::start_with(o)
    };
    let fleet = [start("a"), start("b"), start("c")];
    wait_for(Duration::from_secs(5), "3 nodes", || {
        fleet_metric(&fleet[0], "relay_fleet_nodes") == 3
    });
    let calls = trace.as_ref().map(|d| d.join("calls.tsv"));
    let fsyncs = etcd_fsyncs(&etcd);
    let (p50, p99) = time(&fleet[0], calls.as_deref());
    eprintln!("fleet of 3, 1 etcd:     p50 {p50:?} p99 {p99:?}");
    let (count, secs) = etcd_fsyncs(&etcd);
    eprintln!(
        "  etcd WAL fsyncs meanwhile: {} ({:.2} per rule), mean {:.2} ms",
        count - fsyncs.0,
        (count - fsyncs.0) / N as f64,
        (secs - fsyncs.1) * 1e3 / (count - fsyncs.0).max(1.0)
    );
    // The store alone, same run, same member: one transaction like the rule's (compare the head
    // key's mod revision, put the head and an entry) over a kept-alive HTTP connection to etcd's
    // gateway (JSON on top of gRPC, so an upper bound of what the relay's gRPC client pays).
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let url = format!("{}/v3/kv/txn", etcd.endpoints()[0]);
    let b64 = |s: &str| base64_encode(s.as_bytes());
    let head = b64("bench/head");
    let mut head_rev = 0u64;
    let mut took: Vec<Duration> = (0..N)
        .map(|i| {
            let body = json!({
                "compare": [{"key": head, "target": "MOD", "result": "EQUAL", "mod_revision": head_rev.to_string()}],
                "success": [
                    {"request_put": {"key": head, "value": b64(&i.to_string())}},
                    {"request_put": {"key": b64(&format!("bench/entry/{i}")), "value": b64(&"x".repeat(300))}},
                ],
            });
            let t = Instant::now();
            let v: Value = agent
                .post(&url)
                .send_string(&body.to_string())
                .unwrap()
                .into_json()
                .unwrap();
            let took = t.elapsed();
            assert_eq!(v["succeeded"], json!(true), "{v}");
            head_rev = v["header"]["revision"].as_str().unwrap().parse().unwrap();
            took
        })
        .collect();
    took.sort();
    eprintln!(
        "bare etcd txn (HTTP):   p50 {:?} p99 {:?}",
        took[N / 2],
        took[N * 99 / 100]
    );
}

/// etcd's WAL fsyncs so far (count, seconds), from the first member's metrics.
fn etcd_fsyncs(etcd: &Etcd) -> (f64, f64) {
    let text = ureq::get(&format!("{}/metrics", etcd.endpoints()[0]))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("etcd_disk_wal_fsync_duration_seconds_count"),
        value("etcd_disk_wal_fsync_duration_seconds_sum"),
    )
}

/// Standard base64 (etcd's JSON gateway carries keys and values so).
fn base64_encode(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// CPU time of every thread of process `pid`, from `/proc/<pid>/task/*/schedstat` (ns).
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// A trunk benchmark on loopback (noisy on a shared machine; run it with the release binary):
/// `cargo test -p e2e --release --test fleet -- --ignored trunk_cost --nocapture`.
///
/// Two relays (one worker each) on one etcd; a publisher on A sends `PACKETS` RTP packets at
/// `RATE`, each carrying its send time, to `k` receivers either on A (a local fan-out) or on B
/// (one trunk copy A→B, B fans out). Prints the relays' CPU time per packet (every thread, from
/// schedstat, less an idle period as long) and the one-way latency from the publisher's send
/// to the first receiver (p50, p99), local against one trunk hop.
#[test]
#[ignore = "a benchmark: run by hand with --release"]
fn trunk_cost_and_hop_latency() {
    const PACKETS: u32 = 20_000;
    const RATE: u32 = 4_000;
    let mut etcd = Etcd::start(1).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let a = fleet_relay(&etcd, "a", "X");
    let b = fleet_relay(&etcd, "b", "X");
    let base = Instant::now();
    for (round, (k, on_b)) in [(1usize, false), (1, true), (10, false), (10, true)]
        .into_iter()
        .enumerate()
    {
        let room = format!("t{round}");
        for r in [&a, &b] {
            r.ok("PUT", &format!("/v1/rooms/{room}"), None);
        }
        let ssrc = 0x7000 + round as u32;
        let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.ok(
            "PUT",
            &format!("/v1/rooms/{room}/participants/pub"),
            Some(
                &json!({"address": publisher.local_addr().unwrap().to_string(),
                         "tracks": [{"ssrc": ssrc, "kind": "audio"}]}),
            ),
        );
        let receivers: Vec<UdpSocket> = (0..k)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let at = if on_b { &b } else { &a };
        for (i, r) in receivers.iter().enumerate() {
            at.ok(
                "PUT",
                &format!("/v1/rooms/{room}/participants/r{i}"),
                Some(&json!({"address": r.local_addr().unwrap().to_string()})),
            );
        }
        wait_for(Duration::from_secs(5), "participants known", || {
            a.ok("GET", &format!("/v1/rooms/{room}"), None)["participants"]
                .as_array()
                .is_some_and(|l| l.len() == k + 1)
                && b.ok("GET", &format!("/v1/rooms/{room}"), None)["participants"]
                    .as_array()
                    .is_some_and(|l| l.len() == k + 1)
        });
        // The first receiver measures latency; the others are drained.
        let stop = Arc::new(AtomicBool::new(false));
        let mut drains = Vec::new();
        let mut lat = None;
        for (i, r) in receivers.into_iter().enumerate() {
            let stop = stop.clone();
            let handle = std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut buf = [0u8; 2048];
                r.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = r.recv(&mut buf)
                        && i == 0
                        && n >= 20
                    {
                        let now = base.elapsed().as_nanos() as u64;
                        let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                        out.push(now.saturating_sub(sent));
                    }
                }
                out
            });
            if i == 0 {
                lat = Some(handle);
            } else {
                drains.push(handle);
            }
        }
        let pause = Duration::from_secs(1) * PACKETS / RATE;
        let idle = (cpu_ns(a.pid()), cpu_ns(b.pid()));
        std::thread::sleep(pause);
        let idle = (cpu_ns(a.pid()) - idle.0, cpu_ns(b.pid()) - idle.1);
        let before = (cpu_ns(a.pid()), cpu_ns(b.pid()));
        let start = Instant::now();
        let gap = Duration::from_secs(1) / RATE;
        for seq in 0..PACKETS {
            let due = start + gap * seq;
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            let mut payload = (base.elapsed().as_nanos() as u64).to_be_bytes().to_vec();
            payload.extend_from_slice(&[0u8; 152]);
            publisher
                .send_to(&rtp(ssrc, seq as u16, &payload), a.media)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let used = (cpu_ns(a.pid()) - before.0, cpu_ns(b.pid()) - before.1);
        stop.store(true, Ordering::Relaxed);
        let mut lat = lat.unwrap().join().unwrap();
        for d in drains {
            d.join().unwrap();
        }
        lat.sort_unstable();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
        let per = |ns: u64, idle: u64| (ns.saturating_sub(idle)) as f64 / f64::from(PACKETS);
        eprintln!(
            "{k:>2} receiver(s) {}: A {:>6.0} ns/packet, B {:>6.0} ns/packet; latency p50 {:?} \
             p99 {:?} ({} of {PACKETS} received by the first)",
            if on_b { "on B (trunk)" } else { "on A (local)" },
            per(used.0, idle.0),
            per(used.1, idle.1),
            pct(0.5).map(|n| Duration::from_nanos(*n)),
            pct(0.99).map(|n| Duration::from_nanos(*n)),
            lat.len(),
        );
    }
    etcd.kill9(0).unwrap();
}

/// A room shared among the workers on two relays with two workers each (`--handoff-min-members
/// 2`): a hot publisher's local copies are handed off by chunk while its trunk copies go from
/// the worker that received it, and trunk ingress fans out from the worker that received it.
/// Every receiver gets each publisher's packets in order (and all of them unless a hand-off was
/// refused, which is counted), and each relay gets each packet of the other's publishers once.
#[test]
fn a_hot_room_across_relays_keeps_order_and_sends_one_trunk_copy_per_packet() {
    const N: u16 = 100;
    // Sixteen publishers on a. The room is one chunk, so only publishers the kernel hashes to
    // the worker that does not own it hand off: that none does has a chance of 1 in 65,536.
    const PUBS: u32 = 16;
    let mut etcd = Etcd::start(1).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let hot = ["--workers", "2", "--handoff-min-members", "2"];
    let a = fleet_relay_with(&etcd, "a", "X", &hot);
    let b = fleet_relay_with(&etcd, "b", "X", &hot);
    for r in [&a, &b] {
        r.room("h");
    }
    let socket = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        roomy(&s);
        s
    };
    let join = |r: &Relay, id: &str, s: &UdpSocket, tracks: Value| {
        let body = json!({"address": s.local_addr().unwrap().to_string(), "tracks": tracks});
        r.ok(
            "PUT",
            &format!("/v1/rooms/h/participants/{id}"),
            Some(&body),
        );
    };
    // (socket, ssrc, relay it sends to): PUBS on a, one on b.
    let mut pubs = Vec::new();
    for i in 0..=PUBS {
        let (at, ssrc) = if i < PUBS {
            (&a, 0x5000 + i)
        } else {
            (&b, 0x6000)
        };
        let s = socket();
        join(
            at,
            &format!("p{i}"),
            &s,
            json!([{"ssrc": ssrc, "kind": "audio"}]),
        );
        pubs.push((s, ssrc, at.media));
    }
    let mut receivers = Vec::new();
    for (at, name) in [(&a, "ra0"), (&a, "ra1"), (&b, "rb0"), (&b, "rb1")] {
        let s = socket();
        join(at, name, &s, json!([]));
        receivers.push((name, s));
    }
    let members = pubs.len() + receivers.len();
    wait_for(Duration::from_secs(5), "participants known", || {
        [&a, &b].iter().all(|r| {
            r.ok("GET", "/v1/rooms/h", None)["participants"]
                .as_array()
                .is_some_and(|l| l.len() == members)
        })
    });
    // Bounded: N rounds of one packet per publisher, 4 ms apart (about 4,250 packets/s in).
    for seq in 1..=N {
        for (s, ssrc, to) in &pubs {
            s.send_to(&rtp(*ssrc, seq, b"hot room"), to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(4));
    }
    let refused = |r: &Relay| r.metric("relay_handoff_full_total");
    let trunk_in = |r: &Relay, peer: &str| {
        r.metric(&format!(
            "relay_trunk_packets_received_total{{peer=\"{peer}\"}}"
        ))
    };
    wait_for(Duration::from_secs(5), "trunk copies counted", || {
        trunk_in(&b, "a") >= u64::from(PUBS) * u64::from(N) && trunk_in(&a, "b") >= u64::from(N)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        trunk_in(&b, "a"),
        u64::from(PUBS) * u64::from(N),
        "one copy a->b per packet"
    );
    assert_eq!(trunk_in(&a, "b"), u64::from(N), "one copy b->a per packet");
    // Everything from a comes from one address: b's trunk group spreads it by sender (the
    // publishers' numbers are consecutive, so half of them go to each worker), not by 4-tuple.
    let per_worker: Vec<u64> = (0..2)
        .map(|w| b.metric(&format!("relay_worker_packets_in_total{{worker=\"{w}\"}}")))
        .collect();
    assert!(
        per_worker
            .iter()
            .all(|&n| n >= u64::from(PUBS) * u64::from(N) / 4),
        "b's workers received {per_worker:?}: a's trunk traffic was not spread"
    );
    assert!(
        a.metric("relay_handoff_out_total") > 0,
        "no publisher's fan-out on a was shared"
    );
    let lossless = refused(&a) == 0 && refused(&b) == 0;
    let mut buf = [0u8; 2048];
    for (name, s) in &receivers {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut by_ssrc = std::collections::BTreeMap::<u32, Vec<u16>>::new();
        while let Ok(n) = s.recv(&mut buf) {
            assert!(n >= 12, "{name}: a short datagram");
            let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
            by_ssrc
                .entry(ssrc)
                .or_default()
                .push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        for (_, ssrc, _) in &pubs {
            let got = by_ssrc.remove(ssrc).unwrap_or_default();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{name}: publisher {ssrc:#x} out of order: {got:?}"
            );
            if lossless {
                assert_eq!(
                    got,
                    (1..=N).collect::<Vec<_>>(),
                    "{name}: publisher {ssrc:#x}"
                );
            }
        }
        assert!(by_ssrc.is_empty(), "{name}: unexpected SSRCs {by_ssrc:?}");
    }
    eprintln!(
        "hot room across relays: hand-offs a {} b {}, refused a {} b {}",
        a.metric("relay_handoff_out_total"),
        b.metric("relay_handoff_out_total"),
        refused(&a),
        refused(&b)
    );
}

/// The datagrams `sock` receives until it has been quiet for `quiet`.
fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// (SSRC, seq, payload) of each RTP packet among `packets` (first byte 128-191, not RTCP).
fn rtp_of(packets: &[Vec<u8>]) -> Vec<(u32, u16, Vec<u8>)> {
    packets
        .iter()
        .filter(|p| p.len() >= 12 && (128..=191).contains(&p[0]) && !(192..=223).contains(&p[1]))
        .map(|p| {
            let ssrc = u32::from_be_bytes(p[8..12].try_into().unwrap());
            (ssrc, u16::from_be_bytes([p[2], p[3]]), p[12..].to_vec())
        })
        .collect()
}

/// The payload the test's WebRTC publisher sends in packet `seq` of track `ssrc`.
fn webrtc_payload(ssrc: u32, seq: u16) -> Vec<u8> {
    format!("webrtc over a trunk {ssrc:#x} {seq}").into_bytes()
}

#[test]
fn a_webrtc_publisher_on_one_relay_is_received_on_another_sealed_and_plain() {
    use loadgen::profile::Kind;
    use loadgen::webrtc::{self as leg, Srtp};

    const N: u16 = 200;
    const AUDIO: u32 = 0xA001;
    const VIDEO: u32 = 0xA002;
    let timeout = Duration::from_secs(10);
    let mut etcd = Etcd::start(1).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let a = fleet_relay(&etcd, "a", "X");
    let b = fleet_relay(&etcd, "b", "X");
    // plain_legs is the room's, fleet-wide: b's plain participant may get the clear copy.
    a.ok("PUT", "/v1/rooms/w", Some(&json!({"plain_legs": true})));
    let api_a = loadgen::api::Api::new(&a.control.to_string(), None);
    let api_b = loadgen::api::Api::new(&b.control.to_string(), None);
    let socket = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        roomy(&s);
        s
    };

    // wa publishes audio and video on a: publish exchange, ICE, DTLS (dimpl), SRTP keys.
    let wa_sock = socket();
    let mut wa = leg::publish(
        &api_a,
        "w",
        "wa",
        &[(AUDIO, Kind::Audio), (VIDEO, Kind::Video)],
        &wa_sock,
        timeout,
    )
    .expect("wa's publish leg on a");
    // On b: pb, a plain receiver; wb, a WebRTC receiver. wb publishes first (nothing is sent
    // on that leg) so that b's room has a codec of each kind (codecs are each relay's own), then
    // subscribes: b's offer lists wa's tracks, which live on a.
    // Sockets with room for the whole burst: the test reads after it is sent.
    let plain_receiver = |r: &Relay, room: &str, id: &str| {
        let s = socket();
        s.set_nonblocking(false).unwrap();
        let body = json!({"address": s.local_addr().unwrap().to_string(), "tracks": []});
        r.ok(
            "PUT",
            &format!("/v1/rooms/{room}/participants/{id}"),
            Some(&body),
        );
        s
    };
    let pb = plain_receiver(&b, "w", "pb");
    let wb_pub = socket();
    leg::publish(
        &api_b,
        "w",
        "wb",
        &[(0xB001, Kind::Audio), (0xB002, Kind::Video)],
        &wb_pub,
        timeout,
    )
    .expect("wb's publish leg on b");
    wait_for(timeout, "b knows wa", || {
        members(&b.ok("GET", "/v1/rooms/w", None))
            .iter()
            .any(|(id, node)| id == "wa" && node == "a")
    });
    let wb_sock = socket();
    let mut wb = leg::subscribe(&api_b, "w", "wb", &wb_sock, timeout).expect("wb's subscribe leg");
    wait_for(timeout, "a knows pb and wb", || {
        members(&a.ok("GET", "/v1/rooms/w", None)).len() == 3
    });
    let Srtp::Send(egress) = &mut wa.srtp else {
        panic!("a publish leg seals")
    };
    let Srtp::Receive(ingress) = &mut wb.srtp else {
        panic!("a subscribe leg opens")
    };
    let sent_before = fleet_metric(&a, "relay_trunk_packets_sent_total{peer=\"b\"}");
    let received_before = fleet_metric(&b, "relay_trunk_packets_received_total{peer=\"a\"}");

    // A bounded burst: N packets per track, sealed with wa's keys, 1 ms apart.
    let mut sealed = [0u8; 1500];
    for seq in 1..=N {
        for ssrc in [AUDIO, VIDEO] {
            let clear = rtp(ssrc, seq, &webrtc_payload(ssrc, seq));
            let n = egress.protect_rtp(&clear, &mut sealed).unwrap();
            wa_sock.send_to(&sealed[..n], wa.relay).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let expected: Vec<(u32, u16, Vec<u8>)> = [AUDIO, VIDEO]
        .iter()
        .flat_map(|&s| (1..=N).map(move |q| (s, q, webrtc_payload(s, q))))
        .collect();
    let sorted = |mut v: Vec<(u32, u16, Vec<u8>)>| {
        v.sort();
        v
    };

    // pb gets the clear RTP exactly as wa sealed it, every packet once, in order per track.
    wb_sock.set_nonblocking(false).unwrap();
    let plain = rtp_of(&drain(&pb, Duration::from_millis(500)));
    for ssrc in [AUDIO, VIDEO] {
        let seqs: Vec<u16> = plain.iter().filter(|p| p.0 == ssrc).map(|p| p.1).collect();
        assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "pb, track {ssrc:#x}");
    }
    assert_eq!(sorted(plain), expected, "pb");
    // wb gets each packet sealed for its own leg by b; it opens with wb's keys to the same RTP.
    let mut opened = Vec::new();
    for mut d in drain(&wb_sock, Duration::from_millis(500)) {
        if !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
            continue;
        }
        let n = ingress
            .unprotect_rtp(&mut d)
            .unwrap_or_else(|e| panic!("wb cannot open a copy: {e:?}"));
        d.truncate(n);
        opened.push(d);
    }
    let opened = rtp_of(&opened);
    for ssrc in [AUDIO, VIDEO] {
        let seqs: Vec<u16> = opened.iter().filter(|p| p.0 == ssrc).map(|p| p.1).collect();
        assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "wb, track {ssrc:#x}");
    }
    assert_eq!(sorted(opened), expected, "wb");

    // One trunk copy a->b per packet, counted on both sides; nothing dropped at b.
    let sent = fleet_metric(&a, "relay_trunk_packets_sent_total{peer=\"b\"}") - sent_before;
    let received =
        fleet_metric(&b, "relay_trunk_packets_received_total{peer=\"a\"}") - received_before;
    assert_eq!((sent, received), (2 * u64::from(N), 2 * u64::from(N)));
    for reason in [
        "plain_legs",
        "srtp",
        "srtp_auth",
        "srtp_replay",
        "srtp_egress",
        "trunk_malformed",
        "trunk_unknown_sender",
    ] {
        for r in [&a, &b] {
            assert_eq!(
                r.metric(&format!(
                    "relay_dropped_packets_total{{reason=\"{reason}\"}}"
                )),
                0,
                "{reason}"
            );
        }
    }

    // A room without plain_legs: the copy still crosses (pv is a receiver of b's, which b
    // judges), and b withholds it from pv, counted, as it would a local WebRTC publisher's.
    a.room("v");
    let wv_sock = socket();
    let mut wv = leg::publish(
        &api_a,
        "v",
        "wv",
        &[(0xC001, Kind::Audio)],
        &wv_sock,
        timeout,
    )
    .expect("wv's publish leg on a");
    let pv = plain_receiver(&b, "v", "pv");
    wait_for(timeout, "a knows pv", || {
        members(&a.ok("GET", "/v1/rooms/v", None)).len() == 2
    });
    let Srtp::Send(egress) = &mut wv.srtp else {
        panic!("a publish leg seals")
    };
    for seq in 1..=50u16 {
        let clear = rtp(0xC001, seq, b"no plain legs here");
        let n = egress.protect_rtp(&clear, &mut sealed).unwrap();
        wv_sock.send_to(&sealed[..n], wv.relay).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_for(timeout, "b withholds 50 copies", || {
        b.metric("relay_dropped_packets_total{reason=\"plain_legs\"}") == 50
    });
    assert!(
        rtp_of(&drain(&pv, Duration::from_millis(300))).is_empty(),
        "pv got a WebRTC publisher's media in a room without plain_legs"
    );
}

/// Two aiortc participants (an independent WebRTC stack: aioice, OpenSSL DTLS, libsrtp, libvpx,
/// libopus), one on each relay, publish to and subscribe to each other: each relay removes its
/// publisher's SRTP once, the clear media crosses the trunk with the W bit, and the other relay
/// seals it for its subscriber, who decodes audio and video; its feedback (PLI, NACK, RR) crosses
/// back. Runs in a network namespace with only `lo` (etcd and both relays inside it).
#[test]
fn aiortc_participants_on_two_relays_decode_each_other() {
    if webrtc::in_own_netns("aiortc_participants_on_two_relays_decode_each_other") {
        return;
    }
    let mut etcd = Etcd::start(1).unwrap();
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let a = fleet_relay(&etcd, "a", "X");
    let b = fleet_relay(&etcd, "b", "X");
    a.room("r");
    let mut alice = webrtc::Peer::aiortc();
    alice.name = "alice";
    let mut bob = webrtc::Peer::aiortc();
    bob.name = "bob";
    // Each publishes on its own relay (which also gives each relay's room the same aiortc
    // codec numbers), then subscribes there to the other, who lives on the other relay.
    webrtc::publish(&a, &mut alice, "alice");
    webrtc::publish(&b, &mut bob, "bob");
    for (r, other) in [(&a, "bob"), (&b, "alice")] {
        wait_for(
            Duration::from_secs(10),
            "the other relay's publisher known",
            || {
                members(&r.ok("GET", "/v1/rooms/r", None))
                    .iter()
                    .any(|(id, _)| id == other)
            },
        );
    }
    let alice_sub = webrtc::subscribe(&a, &mut alice, "alice");
    let bob_sub = webrtc::subscribe(&b, &mut bob, "bob");
    let stats = |peer: &mut webrtc::Peer, pc: &Value| peer.call(json!({"op": "stats", "id": pc}));
    let count = |s: &Value, key: &str| s[key].as_u64().unwrap_or(0);
    for (peer, pc) in [(&mut alice, &alice_sub), (&mut bob, &bob_sub)] {
        let decoded = webrtc::wait_for(45, || {
            let s = stats(peer, pc);
            (count(&s, "framesDecoded") > 30 && count(&s, "audioFramesDecoded") > 50).then_some(s)
        });
        let name = peer.name;
        let s = decoded.unwrap_or_else(|| {
            panic!(
                "{name} decodes too little across relays: {} a {} b {}",
                stats(peer, pc),
                a.metrics_text(),
                b.metrics_text()
            )
        });
        eprintln!("{name} receives {s}");
        let received = count(&s, "packetsReceived");
        let lost = s["packetsLost"].as_i64().unwrap_or(0);
        assert!(lost * 50 <= received as i64, "lost {lost} of {received}");
    }
    for (r, peer) in [(&a, "b"), (&b, "a")] {
        assert!(
            r.metric(&format!(
                "relay_trunk_packets_received_total{{peer=\"{peer}\"}}"
            )) > 100
        );
        for reason in ["srtp_auth", "srtp_egress", "trunk_malformed", "plain_legs"] {
            assert_eq!(
                r.metric(&format!(
                    "relay_dropped_packets_total{{reason=\"{reason}\"}}"
                )),
                0,
                "{reason}"
            );
        }
    }
}
