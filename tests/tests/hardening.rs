//! Hostile input, floods, overload, limits and shutdown, against the real binary.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::{Client, Options, PATIENT, Relay, one_core_relay, pin_to_last_core, rtp};
use serde_json::json;

/// The load tests take the whole machine (two cores): run them one at a time.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `packets` round-robin from each of `socks` in turn to `to`, as fast as one thread (one
/// core) can, until `stop` or `limit` elapses; returns how many datagrams were sent.
fn flood(
    socks: Vec<UdpSocket>,
    to: std::net::SocketAddr,
    packets: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        pin_to_last_core();
        let deadline = Instant::now() + limit;
        let mut n = 0u64;
        'outer: loop {
            for p in &packets {
                for sock in &socks {
                    if sock.send_to(p, to).is_ok() {
                        n += 1;
                    }
                }
                if n.is_multiple_of(256)
                    && (stop.load(Ordering::Relaxed) || Instant::now() > deadline)
                {
                    break 'outer;
                }
            }
        }
        n
    })
}

/// Garbage of every kind the issue lists.
fn garbage() -> Vec<Vec<u8>> {
    let mut bad_csrc = rtp(1, 1, b"");
    bad_csrc[0] = 0x8f; // 15 CSRCs in a 12-byte packet
    let mut bad_ext = rtp(1, 1, &[0xbe, 0xde, 0x00, 0xff]);
    bad_ext[0] |= 0x10; // extension of 255 words that is not there
    let bad_rtcp = vec![0x80, 200, 0x00, 0x40, 0, 0, 0, 1]; // SR claiming 260 bytes
    let mut bad_stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    bad_stun.extend_from_slice(&[7; 12]);
    bad_stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, 0, 0, 0, 0]); // USERNAME longer than message
    vec![
        vec![],
        vec![0x80],
        bad_csrc,
        bad_ext,
        bad_rtcp,
        bad_stun,
        vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10], // DTLS handshake record
        vec![0x42; 65_000],                                      // 64 KB datagram
        vec![0xff; 100],                                         // not media
    ]
}

/// CPU time the process has used (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[10] + f[11]) * 1000 / hz)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn drops(relay: &Relay, reason: &str) -> u64 {
    relay.metric(&format!(
        "relay_dropped_packets_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn garbage_floods_are_dropped_counted_and_a_real_stream_loses_nothing() {
    let _one_at_a_time = heavy();
    let relay = one_core_relay();
    relay.room("r");
    let (a, b, known) = (
        Client::new(),
        Client::new(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    relay.join("r", "a", &a, &[(1, "audio")]);
    relay.join("r", "b", &b, &[]);
    let body = json!({"address": known.local_addr().unwrap().to_string(), "tracks": [{"ssrc": 9, "kind": "audio"}]});
    relay.ok("PUT", "/v1/rooms/r/participants/k", Some(&body));

    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_time(relay.pid());
    let unknown = UdpSocket::bind("127.0.0.1:0").unwrap();
    let f = flood(
        vec![unknown, known],
        relay.media,
        garbage(),
        stop.clone(),
        Duration::from_secs(5),
    );
    // 50 packets a second for 2 seconds, while both floods run.
    for i in 0..100u16 {
        a.send(relay.media, &rtp(1, i, b"legitimate voice frame"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = b.recv_n(100, PATIENT);
    stop.store(true, Ordering::Relaxed);
    let sent = f.join().unwrap();
    let cpu = cpu_time(relay.pid()) - cpu_before;
    let read = relay.metric("relay_packets_in_total");
    eprintln!(
        "flood: {sent} sent, {read} read by the relay, {} dropped by the kernel; relay CPU {cpu:?} = {:.2} us per datagram read",
        relay.metric("relay_socket_drops_total"),
        cpu.as_secs_f64() * 1e6 / read.max(1) as f64
    );
    assert_eq!(
        got.len(),
        100,
        "the real stream lost packets during a flood of {sent}; kernel drops at the relay: {}",
        relay.metric("relay_socket_drops_total")
    );
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p, &rtp(1, i as u16, b"legitimate voice frame"));
    }
    std::thread::sleep(Duration::from_millis(300));
    for reason in [
        "unknown_source",
        "not_media",
        "malformed_rtp",
        "malformed_rtcp",
        "stun_malformed",
        "dtls",
        "oversize",
    ] {
        assert!(drops(&relay, reason) > 0, "no {reason} drops counted");
    }
    // Every datagram the relay read is forwarded or dropped under exactly one reason.
    let text = relay.call_raw("GET", "/metrics", None, None).1;
    let text = text.as_str().unwrap();
    let dropped: u64 = text
        .lines()
        .filter(|l| l.starts_with("relay_dropped_packets_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let received = relay.metric("relay_packets_in_total");
    assert_eq!(received, dropped + 100, "in = dropped + forwarded");
    eprintln!("flood: {sent} garbage datagrams sent, {received} read by the relay");
}

#[test]
fn overload_drops_at_the_socket_keeps_the_api_answering_and_every_stream_recovers() {
    let _one_at_a_time = heavy();
    let relay = one_core_relay();
    relay.room("big");
    // One publisher fanned out to 40 sinks: the relay must send 40 datagrams per one received,
    // so a single sending thread can offer far more than the relay can forward.
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let body = json!({"address": publisher.local_addr().unwrap().to_string(), "tracks": [{"ssrc": 1, "kind": "video"}]});
    relay.ok("PUT", "/v1/rooms/big/participants/pub", Some(&body));
    let sinks: Vec<Client> = (0..40).map(|_| Client::new()).collect();
    for (i, s) in sinks.iter().enumerate() {
        relay.join("big", &format!("s{i}"), s, &[]);
    }
    // Small rooms with their own streams, to check each one recovers.
    let mut pairs = Vec::new();
    for i in 0..5 {
        let room = format!("small{i}");
        relay.room(&room);
        let (x, y) = (Client::new(), Client::new());
        relay.join(&room, "x", &x, &[(100 + i, "audio")]);
        relay.join(&room, "y", &y, &[]);
        pairs.push((x, y, 100 + i));
    }
    let rss_before = rss_kib(relay.pid());
    let offered = Arc::new(AtomicBool::new(false));
    let payload = vec![0x55u8; 1000];
    let packets: Vec<Vec<u8>> = (0..64).map(|i| rtp(1, i, &payload)).collect();
    let f = flood(
        vec![publisher],
        relay.media,
        packets,
        offered.clone(),
        Duration::from_secs(10),
    );

    // During the overload the API and health check answer within 100 ms.
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let t = Instant::now();
        let (s, _) = relay.call_raw("GET", "/healthz", None, None);
        assert_eq!(s, 200);
        relay.ok("GET", "/v1/rooms/small0", None);
        worst = worst.max(t.elapsed() / 2);
        // Readiness and metrics answer at the forwarding knee too.
        for probe in ["/readyz", "/metrics"] {
            let (status, took) = e2e::control::timed_get(relay.control, probe, None);
            assert_eq!(status, 200, "{probe}");
            worst = worst.max(took);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = f.join().unwrap();
    let out = relay.metric("relay_packets_out_total");
    let rss_after = rss_kib(relay.pid());
    eprintln!(
        "overload: offered {sent} datagrams ({} sends asked), forwarded {out}; worst API call {worst:?}; RSS {rss_before} -> {rss_after} KiB",
        sent * 40
    );
    assert!(
        worst < Duration::from_millis(100),
        "API answered in {worst:?}"
    );
    assert!(out < sent * 40, "the relay was really overloaded");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );

    // Within a second of the end of the overload, every stream is forwarded again.
    std::thread::sleep(Duration::from_millis(200));
    for s in &sinks {
        s.recv_all(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    for (x, y, ssrc) in &pairs {
        x.send(relay.media, &rtp(*ssrc, 1, b"after"));
        let got = y.recv_n(1, deadline.saturating_duration_since(Instant::now()));
        assert_eq!(
            got,
            vec![rtp(*ssrc, 1, b"after")],
            "stream {ssrc} did not recover"
        );
    }
}

#[test]
fn api_limits_refuse_and_change_nothing() {
    let relay = Relay::start_with(Options {
        args: vec![
            "--max-rooms".into(),
            "2".into(),
            "--max-participants".into(),
            "2".into(),
            "--max-rule-changes".into(),
            "1".into(),
        ],
        ..Default::default()
    });
    relay.room("r1");
    relay.room("r2");
    let (s, v) = relay.call("PUT", "/v1/rooms/r3", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("too_many_rooms"))
    );
    relay.room("r1"); // idempotent, not a new room
    relay.ok("PUT", "/v1/rooms/r1/participants/a", Some(&json!({})));
    relay.ok("PUT", "/v1/rooms/r1/participants/b", Some(&json!({})));
    let (s, v) = relay.call("PUT", "/v1/rooms/r1/participants/c", Some(&json!({})));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("room_full")));
    relay.ok("PUT", "/v1/rooms/r1/participants/b", Some(&json!({}))); // replacing is fine
    // Rule changes: a burst of two, then 429 until the bucket refills.
    let mut codes = Vec::new();
    for i in 0..4 {
        let body = json!({"match": {"regions": ["CN"]},
            "basis": {"authority": "A", "reference": format!("R{i}"), "jurisdiction": "CN"},
            "expires_at": e2e::rfc3339_in(600)});
        codes.push(relay.call("POST", "/v1/rules", Some(&body)).0);
    }
    assert_eq!(codes, [201, 201, 429, 429]);
    let rules = relay.ok("GET", "/v1/rules", None);
    assert_eq!(
        rules["rules"].as_array().unwrap().len(),
        2,
        "refused rules were not stored"
    );
    assert_eq!(
        relay.ok("GET", "/v1/rooms", None)["rooms"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn sigterm_flushes_the_audit_log_and_a_second_one_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut relay = Relay::start_with(opts.clone());
    relay.room("r");
    let a = Client::new();
    relay.join("r", "a", &a, &[(1, "audio")]);
    let t = Instant::now();
    let status = relay
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(2))
        .expect("exits within 2 s");
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(2));
    let relay = Relay::start_with(opts.clone());
    let audit = relay.ok("GET", "/v1/audit", None);
    let actions: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["relay_started", "relay_stopped", "relay_started"]);
    drop(relay);

    // Two signals in a row: the second exits at once, whatever the first was doing.
    let mut relay = Relay::start_with(opts);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(relay.pid() as i32, libc::SIGTERM) };
    let status = relay
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(2))
        .expect("exits at once");
    let _ = status;
}
