//! The control plane against the real binary: slow clients, probes that never wait, the ops
//! listener, events, restarts that keep meetings, drain, SIGHUP, tokens, the OpenAPI document.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::control::{EventStream, Trickler, timed_get};
use e2e::{Client, Options, PATIENT, Relay, rtp, stun_request};
use serde_json::{Value, json};

/// Tests that time the relay run one at a time: each has the machine to itself.
fn timed() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every probe path, answered without a token and without the control thread.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

/// Probes every `every` until `stop`; returns each probe's latency.
fn probe_until(addr: SocketAddr, stop: &AtomicBool, every: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for path in PROBES {
            let (status, took) = timed_get(addr, path, None);
            assert_eq!(status, 200, "{path}");
            out.push(took);
        }
        std::thread::sleep(every);
    }
    out
}

#[test]
fn slow_clients_cannot_stall_probes_or_the_api_and_are_cut_off() {
    let _alone = timed();
    let relay = Relay::start();
    relay.room("r");
    // 64 clients announce a megabyte and send a byte a second: on /healthz (no token needed,
    // so anyone who reaches the port can) and on a real endpoint that reads its body.
    let mut slow: Vec<Trickler> = (0..56)
        .map(|_| Trickler::start(relay.control, "POST", "/healthz", 1_000_000))
        .chain((0..8).map(|i| {
            Trickler::start(
                relay.control,
                "PUT",
                &format!("/v1/rooms/r/participants/slow{i}"),
                1_000_000,
            )
        }))
        .collect();
    let start = Instant::now();
    let mut probes = Vec::new();
    let mut calls = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(12) {
        if n % 10 == 0 {
            for s in &mut slow {
                s.tick();
            }
            let t = Instant::now();
            relay.ok("PUT", &format!("/v1/rooms/busy{}", n / 10), None);
            calls.push(t.elapsed());
        }
        for path in PROBES {
            let (status, took) = timed_get(relay.control, path, None);
            assert_eq!(status, 200, "{path}");
            probes.push(took);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in &mut slow {
        s.tick();
    }
    let worst = *probes.iter().max().unwrap();
    let p50 = percentile(&mut probes, 0.5);
    let worst_call = *calls.iter().max().unwrap();
    eprintln!(
        "64 slow clients: {} probes, p50 {p50:?}, worst {worst:?}; {} control calls, worst {worst_call:?}",
        probes.len(),
        calls.len()
    );
    assert!(worst < Duration::from_millis(100), "a probe took {worst:?}");
    assert!(
        worst_call < Duration::from_millis(1000),
        "a control call took {worst_call:?}"
    );
    let cut: Vec<Option<Duration>> = slow.iter().map(Trickler::closed_after).collect();
    for (i, c) in cut.iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("slow client {i} still connected after 12 s"));
        assert!(
            c <= Duration::from_secs(11),
            "slow client {i} cut off after {c:?}"
        );
    }
    // Nothing half-read was applied.
    let room = relay.ok("GET", "/v1/rooms/r", None);
    assert_eq!(room["participants"], json!([]));
}

#[test]
fn probes_never_wait_for_changes_in_flight() {
    let _alone = timed();
    let relay = Relay::start_with(Options {
        args: vec!["--max-rule-changes".into(), "10000".into()],
        ..Default::default()
    });
    relay.room("big");
    for i in 0..200u32 {
        let body = json!({"address": format!("127.0.0.1:{}", 20_000 + i),
            "tracks": [{"ssrc": i + 1, "kind": "audio"}], "region": "CN"});
        relay.ok(
            "PUT",
            &format!("/v1/rooms/big/participants/p{i}"),
            Some(&body),
        );
    }
    // One thread keeps the control thread busy with region rules that recompile the big room
    // and commit to the database; another probes.
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let control = relay.control;
    let busy = {
        let (stop, changes) = (stop.clone(), changes.clone());
        std::thread::spawn(move || {
            let agent = ureq::agent();
            while !stop.load(Ordering::Relaxed) {
                let rule = json!({"match": {"regions": ["CN"]}, "direction": "receive",
                    "basis": {"authority": "A", "reference": "busy", "jurisdiction": "CN"},
                    "expires_at": e2e::rfc3339_in(600)});
                let r: Value = agent
                    .post(&format!("http://{control}/v1/rules"))
                    .send_json(rule)
                    .expect("rule")
                    .into_json()
                    .unwrap();
                let id = r["id"].as_u64().unwrap();
                agent
                    .delete(&format!("http://{control}/v1/rules/{id}"))
                    .send_json(json!({"reason": "busy"}))
                    .expect("lift");
                changes.fetch_add(2, Ordering::Relaxed);
            }
        })
    };
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || probe_until(control, &stop, Duration::from_millis(20)))
    };
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    let mut probes = prober.join().unwrap();
    let worst = *probes.iter().max().unwrap();
    let p50 = percentile(&mut probes, 0.5);
    let done = changes.load(Ordering::Relaxed);
    eprintln!(
        "{done} rule changes in 5 s on a 200-member room; {} probes, p50 {p50:?}, worst {worst:?}",
        probes.len()
    );
    assert!(done >= 10, "the control thread was kept busy");
    assert!(worst < Duration::from_millis(100), "a probe took {worst:?}");
}

#[test]
fn the_ops_listener_serves_probes_only_and_without_a_token() {
    let relay = Relay::start_with(Options {
        args: vec![
            "--ops".into(),
            "127.0.0.1:0".into(),
            "--control-token".into(),
            "t0k".into(),
        ],
        token: Some("t0k".into()),
        ..Default::default()
    });
    let ops = relay.ops.expect("the ready line names the ops address");
    for path in PROBES {
        assert_eq!(timed_get(ops, path, None).0, 200, "{path}");
    }
    assert_eq!(timed_get(ops, "/v1/info", Some("t0k")).0, 404);
    assert_eq!(timed_get(relay.control, "/v1/info", None).0, 401);
    assert_eq!(timed_get(relay.control, "/v1/info", Some("t0k")).0, 200);
}

#[test]
fn several_tokens_are_valid_at_once() {
    let relay = Relay::start_with(Options {
        args: vec!["--control-token".into(), "old,new".into()],
        token: Some("new".into()),
        ..Default::default()
    });
    for t in ["old", "new"] {
        let (s, _) = relay.call_raw("PUT", "/v1/rooms/r", None, Some(t));
        assert!(s == 201 || s == 200, "{t}: {s}");
    }
    assert_eq!(relay.call_raw("GET", "/v1/rooms", None, Some("ol")).0, 401);
}

/// Latches `sock` as participant `id` with STUN, retrying until the relay answers.
fn latch(sock: &UdpSocket, media: SocketAddr, ice: &Value, within: Duration) -> Duration {
    let req = stun_request(
        ice["ufrag"].as_str().unwrap(),
        ice["pwd"].as_str().unwrap(),
        7,
    );
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < within {
        sock.send_to(&req, media).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 20
            && buf[0] == 0x01
            && buf[1] == 0x01
        {
            return start.elapsed();
        }
    }
    panic!("no Binding success within {within:?}");
}

#[test]
fn a_restart_keeps_meetings_and_latched_participants_come_back_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut relay = Relay::start_with(opts.clone());
    let mut events = EventStream::open(relay.control, None, None, None);
    relay.room("r");
    let (s, r) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let fixed = Client::new();
    let ps = relay.ok(
        "PUT",
        "/v1/rooms/r/participants/sender",
        Some(&json!({"tracks": [{"ssrc": 7, "kind": "audio"}], "region": "HK"})),
    );
    let pr = relay.ok(
        "PUT",
        "/v1/rooms/r/participants/receiver",
        Some(&json!({"subscribe": ["sender"]})),
    );
    relay.join("r", "fixed", &fixed, &[]);
    latch(&s, relay.media, &ps["ice"], PATIENT);
    latch(&r, relay.media, &pr["ice"], PATIENT);
    e2e::poll_until(PATIENT, || {
        relay.ok("GET", "/v1/rooms/r/participants/receiver", None)["latched"] == true
    });
    s.send_to(&rtp(7, 1, b"before"), relay.media).unwrap();
    let mut buf = [0u8; 1500];
    r.set_read_timeout(Some(PATIENT)).unwrap();
    let n = r.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &rtp(7, 1, b"before")[..]);
    let before = relay.ok("GET", "/v1/info", None);
    // The last event this signaling server saw before the crash.
    let last = events
        .until("participant_latched", PATIENT)
        .expect("latched event");

    let killed = Instant::now();
    relay.kill9();
    let relay = Relay::start_with(opts);
    let restarted = killed.elapsed();
    let info = relay.ok("GET", "/v1/info", None);
    assert_ne!(info["boot_id"], before["boot_id"]);
    assert!(info["started_at"].is_string());
    // Everything is back before the API answers: ids, tracks, subscriptions, region, ICE.
    let room = relay.ok("GET", "/v1/rooms/r", None);
    let people: Vec<&str> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["participant"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["fixed", "receiver", "sender"]);
    let sender = relay.ok("GET", "/v1/rooms/r/participants/sender", None);
    assert_eq!(sender["ice"], ps["ice"]);
    assert_eq!(sender["tracks"], json!([{"ssrc": 7, "kind": "audio"}]));
    assert_eq!(
        (sender["region"].as_str(), sender["region_source"].as_str()),
        (Some("HK"), Some("signaling"))
    );
    assert_eq!(sender["address_set"], false);
    let receiver = relay.ok("GET", "/v1/rooms/r/participants/receiver", None);
    assert_eq!(receiver["subscribe"], json!(["sender"]));
    let f = relay.ok("GET", "/v1/rooms/r/participants/fixed", None);
    assert_eq!(
        f["address_set"], false,
        "a fixed address waits for signaling"
    );
    // A signaling server resuming from before the crash hears of the restart first.
    let mut resumed = EventStream::open(relay.control, None, None, Some(last.id));
    assert_eq!(resumed.status, 200);
    let first = resumed.next(PATIENT).expect("an event");
    assert_eq!(first.kind, "relay_started");
    assert_eq!(first.data["boot_id"], info["boot_id"]);
    assert!(first.id > last.id, "ids increase across restarts");

    // The clients' next consent checks latch them again with no call from signaling; media
    // flows.
    latch(&s, relay.media, &ps["ice"], PATIENT);
    latch(&r, relay.media, &pr["ice"], PATIENT);
    let deadline = Instant::now() + PATIENT;
    let mut seq = 2;
    r.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let forwarded = loop {
        assert!(Instant::now() < deadline, "media did not flow again");
        s.send_to(&rtp(7, seq, b"after"), relay.media).unwrap();
        if let Ok(n) = r.recv(&mut buf)
            && buf[..n] == rtp(7, seq, b"after")[..]
        {
            break killed.elapsed();
        }
        seq += 1;
    };
    eprintln!(
        "kill -9 to API answering: {restarted:?}; kill -9 to a latched participant's media forwarded again: {forwarded:?}"
    );
    // The fixed participant gets media again once signaling sets its address.
    fixed.recv_all(Duration::from_millis(50));
    relay.ok(
        "PATCH",
        "/v1/rooms/r/participants/fixed",
        Some(&json!({"address": fixed.addr().to_string()})),
    );
    s.send_to(&rtp(7, 999, b"fixed"), relay.media).unwrap();
    assert_eq!(fixed.recv_n(1, PATIENT), vec![rtp(7, 999, b"fixed")]);
}

#[test]
fn events_tell_signaling_what_happened_and_resume() {
    let relay = Relay::start_with(Options {
        args: vec![
            "--latch-timeout".into(),
            "1".into(),
            "--event-history".into(),
            "40".into(),
        ],
        ..Default::default()
    });
    let mut events = EventStream::open(relay.control, None, None, None);
    assert_eq!(events.status, 200);
    relay.room("r");
    let p = relay.ok(
        "PUT",
        "/v1/rooms/r/participants/a",
        Some(&json!({"tracks": [{"ssrc": 1, "kind": "audio"}]})),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    latch(&sock, relay.media, &p["ice"], PATIENT);
    // Silent for the latch timeout (1 s): unlatched. Read up to it before changing more.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(e) = events.next(left) else { break };
        got.push(e);
    }
    let rule = relay.rule(json!({"match": {"participants": [{"room": "r", "participant": "a"}]}}));
    relay.lift(rule);
    relay.rule(json!({"match": {"regions": ["CN"]}, "expires_at": e2e::rfc3339_in(2)}));
    relay.ok("POST", "/v1/drain", None);
    relay.ok("DELETE", "/v1/rooms/r/participants/a", None);
    relay.ok("DELETE", "/v1/rooms/r", None);

    let want = [
        "room_created",
        "participant_joined",
        "participant_latched",
        "participant_unlatched",
        "rule_added",
        "rule_lifted",
        "rule_added",
        "drain_started",
        "participant_left",
        "room_closed",
        "rule_expired",
    ];
    let deadline = Instant::now() + Duration::from_secs(8);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(e) = events.next(left) else { break };
        got.push(e);
    }
    let mut kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    let mut sorted_want = want.to_vec();
    kinds.sort_unstable();
    sorted_want.sort_unstable();
    assert_eq!(kinds, sorted_want, "{got:?}");
    for w in got.windows(2) {
        assert!(w[1].id > w[0].id, "ids increase");
    }
    for e in &got {
        assert_eq!(e.data["type"], e.kind.as_str());
        assert_eq!(e.data["id"], e.id);
        assert!(
            !e.data.to_string().contains("127.0.0.1"),
            "an event holds an address: {e:?}"
        );
    }
    let unlatched = got
        .iter()
        .find(|e| e.kind == "participant_unlatched")
        .unwrap();
    assert_eq!(unlatched.data["reason"], "timeout");
    assert_eq!(got[0].data["room"], "r");

    // Resume after the first event, by header and by query: the same next event.
    let first = got[0].id;
    for (after, header) in [(Some(first), None), (None, Some(first))] {
        let mut s = EventStream::open(relay.control, None, after, header);
        let e = s.next(PATIENT).expect("next event");
        assert_eq!(e.id, got[1].id);
    }
    // Past the history (40 events), resuming is refused: read the state again.
    relay.ok("DELETE", "/v1/drain", None);
    for i in 0..25 {
        relay.room(&format!("x{i}"));
        relay.ok("DELETE", &format!("/v1/rooms/x{i}"), None);
    }
    let s = EventStream::open(relay.control, None, Some(first), None);
    assert_eq!(s.status, 410);
    assert_eq!(s.error.as_ref().unwrap()["error"]["code"], "events_gone");
    let bad = EventStream::open(relay.control, None, None, None);
    assert_eq!(bad.status, 200);
    let (s, v) = relay.call_raw("GET", "/v1/events?after=x", None, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[test]
fn drain_refuses_new_rooms_and_keeps_the_others() {
    let relay = Relay::start();
    relay.room("r");
    let (a, b) = (Client::new(), Client::new());
    relay.join("r", "a", &a, &[(1, "audio")]);
    assert_eq!(timed_get(relay.control, "/readyz", None).0, 200);
    let v = relay.ok("POST", "/v1/drain", None);
    assert_eq!(v["draining"], true);
    assert_eq!(v["rooms"], 1);
    let (s, v) = relay.call("GET", "/readyz", None);
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("draining")));
    assert_eq!(timed_get(relay.control, "/healthz", None).0, 200, "alive");
    assert_eq!(relay.ok("GET", "/v1/info", None)["draining"], true);
    assert_eq!(relay.metric("relay_draining"), 1);
    let (s, v) = relay.call("PUT", "/v1/rooms/new", None);
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("draining")));
    // Existing rooms go on: new participants, media.
    relay.join("r", "b", &b, &[]);
    a.send(relay.media, &rtp(1, 1, b"still"));
    assert_eq!(b.recv_n(1, PATIENT), vec![rtp(1, 1, b"still")]);
    relay.ok("DELETE", "/v1/drain", None);
    assert_eq!(timed_get(relay.control, "/readyz", None).0, 200);
    relay.room("new");
}

#[test]
fn sighup_rotates_tokens_and_reloads_geoip_without_losing_a_packet() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# rotated by ops\nold\n").unwrap();
    let db = dir.path().join("country.mmdb");
    e2e::make_mmdb(&db, &["127.0.0.0/24=CN"]);
    let relay = Relay::start_with(Options {
        args: vec![
            "--control-token-file".into(),
            tokens.display().to_string(),
            "--geoip".into(),
            db.display().to_string(),
        ],
        token: Some("old".into()),
        ..Default::default()
    });
    relay.room("r");
    let (a, b) = (Client::new(), Client::new());
    let v = relay.join("r", "a", &a, &[(1, "audio")]);
    assert_eq!(
        (v["region"].as_str(), v["region_source"].as_str()),
        (Some("CN"), Some("geoip"))
    );
    relay.join("r", "b", &b, &[]);
    let status = |t: &str| relay.call_raw("GET", "/v1/rooms", None, Some(t)).0;
    assert_eq!(status("new"), 401);

    // A stream flows across both reloads, read as it comes (a socket left unread for two
    // seconds would overflow its own buffer).
    let media = relay.media;
    let receiver = std::thread::spawn(move || {
        let mut n = 0;
        while !b.recv_n(1, Duration::from_secs(1)).is_empty() {
            n += 1;
        }
        n
    });
    let sender = std::thread::spawn(move || {
        for seq in 0..400u16 {
            a.send(media, &rtp(1, seq, b"m"));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::fs::write(&tokens, "old\nnew\n").unwrap();
    let tmp = dir.path().join("country.mmdb.new");
    e2e::make_mmdb(&tmp, &["127.0.0.0/24=HK"]);
    std::fs::rename(&tmp, &db).unwrap();
    let hup = |relay: &Relay| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(relay.pid() as i32, libc::SIGHUP) };
    };
    hup(&relay);
    e2e::poll_until(PATIENT, || status("new") == 200);
    assert_eq!(status("old"), 200, "both are valid during a rotation");
    e2e::poll_until(PATIENT, || {
        relay
            .call_raw("GET", "/v1/rooms/r/participants/a", None, Some("new"))
            .1["region"]
            == "HK"
    });
    std::fs::write(&tokens, "new\n").unwrap();
    hup(&relay);
    e2e::poll_until(PATIENT, || status("old") == 401);
    sender.join().unwrap();
    assert_eq!(
        receiver.join().unwrap(),
        400,
        "every packet crossed the reloads"
    );
    assert!(relay.pid() > 0, "still running");
}

#[test]
fn the_openapi_document_is_committed_valid_and_complete() {
    let relay = Relay::start();
    let served = relay.ok("GET", "/v1/openapi.json", None);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/openapi.json")).unwrap();
    assert_eq!(
        served, committed,
        "docs/openapi.json is what the relay serves"
    );
    // An independent validator accepts it.
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "openapi-spec-validator (pip, tests/install-deps.sh): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The server answers exactly the documented routes: every documented (path, method) is
    // an endpoint, every other method on those paths is not.
    relay.room("r");
    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() >= 14, "{}", paths.len());
    for (template, item) in paths {
        let path = template
            .replace("{room}", "r")
            .replace("{participant}", "p")
            .replace("{id}", "1");
        for method in ["GET", "PUT", "POST", "PATCH", "DELETE"] {
            if path == "/v1/events" && method == "GET" {
                continue; // a stream: checked in its own test
            }
            let documented = item.get(method.to_lowercase()).is_some();
            let (s, v) = relay.call_raw(method, &path, Some("{}"), None);
            let missing = s == 404 && v["error"]["code"] == "no_such_endpoint";
            assert_eq!(
                !missing, documented,
                "{method} {path}: {s} {v} (documented: {documented})"
            );
        }
    }
    for path in ["/", "/v1", "/v2/rooms", "/v1/rooms/r/x", "/v1/rules/1/x"] {
        let (s, v) = relay.call_raw("GET", path, None, None);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("no_such_endpoint")),
            "{path}"
        );
    }
}

/// A request the webhook receiver got: its headers (lowercase names) and body.
type Received = (Vec<(String, String)>, String);

/// A receiver that answers 500 to the first request and 200 to the others, and keeps what it got.
fn webhook_receiver() -> (SocketAddr, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let mut headers = Vec::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 { "500 Oops" } else { "200 OK" };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if n > 0
                && tx
                    .send((headers, String::from_utf8(body).unwrap()))
                    .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn the_webhook_posts_every_event_signed_in_order_and_retries() {
    use hmac::{Hmac, Mac};
    let (addr, got) = webhook_receiver();
    let secret = "a-secret-of-sixteen+";
    let relay = Relay::start_with(Options {
        args: vec!["--webhook".into(), format!("http://{addr}/hooks/relay")],
        env: vec![("RELAY_WEBHOOK_SECRET".into(), secret.into())],
        ..Default::default()
    });
    relay.room("r");
    relay.ok("DELETE", "/v1/rooms/r", None);
    let mut kinds = Vec::new();
    let mut last_id = 0;
    while kinds.len() < 3 {
        let (headers, body) = got.recv_timeout(PATIENT).expect("a webhook request");
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let ts = h("x-relay-timestamp");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h("x-relay-signature"), format!("sha256={want}"), "signed");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h("x-relay-event-type"), v["type"].as_str().unwrap());
        let id = v["id"].as_u64().unwrap();
        assert!(id > last_id, "in order");
        last_id = id;
        kinds.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        ["relay_started", "room_created", "room_closed"],
        "the refused first attempt was retried"
    );
    assert_eq!(
        relay.metric("relay_webhook_deliveries_total{result=\"error\"}"),
        1
    );
}
