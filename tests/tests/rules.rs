//! Drop rules through the real binary: scope, timing, counters, expiry, durability, audit,
//! transparency and privacy.

use std::time::{Duration, Instant};

use e2e::{Client, Options, Relay, rtcp_pli, rtcp_sr, rtp};
use serde_json::json;

/// Room r1: a (audio 1, video 2), b (audio 3), c (nothing). Room r2: d (audio 4), e (nothing).
struct Setup {
    relay: Relay,
    a: Client,
    b: Client,
    c: Client,
    d: Client,
    e: Client,
}

fn setup_with(relay: Relay) -> Setup {
    let (a, b, c, d, e) = (
        Client::new(),
        Client::new(),
        Client::new(),
        Client::new(),
        Client::new(),
    );
    relay.room("r1");
    relay.room("r2");
    relay.join("r1", "a", &a, &[(1, "audio"), (2, "video")]);
    relay.join("r1", "b", &b, &[(3, "audio")]);
    relay.join("r1", "c", &c, &[]);
    relay.join("r2", "d", &d, &[(4, "audio")]);
    relay.join("r2", "e", &e, &[]);
    Setup {
        relay,
        a,
        b,
        c,
        d,
        e,
    }
}

fn setup() -> Setup {
    setup_with(Relay::start())
}

/// Sends one packet from `from` and returns who got it (by index into `clients`).
fn who_gets(s: &Setup, from: &Client, packet: &[u8]) -> Vec<&'static str> {
    from.send(s.relay.media, packet);
    let names = ["a", "b", "c", "d", "e"];
    let clients = [&s.a, &s.b, &s.c, &s.d, &s.e];
    let mut got = Vec::new();
    for (n, c) in names.iter().zip(clients) {
        let r = c.recv_all(Duration::from_millis(150));
        assert!(r.len() <= 1, "{n} got {} copies", r.len());
        if r.first().is_some_and(|p| p == packet) {
            got.push(*n);
        }
    }
    got
}

#[test]
fn refuses_rules_without_basis_or_target_and_says_why() {
    let relay = Relay::start();
    let exp = e2e::rfc3339_in(3600);
    let cases = [
        (
            json!({"match": {"regions": ["CN"]}, "expires_at": exp}),
            "missing_basis",
        ),
        (
            json!({"match": {}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}, "expires_at": exp}),
            "empty_match",
        ),
        (
            json!({"match": {"rooms": ["r1"]}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}, "expires_at": exp}),
            "empty_match",
        ),
        (
            json!({"match": {"regions": ["CN"]}, "basis": {"authority": "", "reference": "R", "jurisdiction": "CN"}, "expires_at": exp}),
            "missing_basis",
        ),
        (
            json!({"match": {"regions": ["cn"]}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}, "expires_at": exp}),
            "invalid_region",
        ),
        (
            json!({"match": {"regions": ["CN"]}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}, "expires_at": "2001-01-01T00:00:00Z"}),
            "expired",
        ),
        (
            json!({"match": {"regions": ["CN"]}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}}),
            "missing_expiry",
        ),
        (
            json!({"match": {"regoins": ["CN"]}, "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}, "expires_at": exp}),
            "invalid_json",
        ),
    ];
    for (body, code) in cases {
        let (status, v) = relay.call("POST", "/v1/rules", Some(&body));
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["error"]["code"], code, "{body} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let list = relay.ok("GET", "/v1/rules", None);
    assert_eq!(
        list["rules"].as_array().unwrap().len(),
        0,
        "nothing was added"
    );
    let (status, _) = relay.call("DELETE", "/v1/rules/1", Some(&json!({"reason": "x"})));
    assert_eq!(status, 404);
}

#[test]
fn a_send_rule_silences_one_participant_and_nothing_else() {
    let s = setup();
    assert_eq!(who_gets(&s, &s.a, &rtp(1, 1, b"x")), ["b", "c"]);
    let id = s.relay.rule(json!({"match": {"participants": [{"room": "r1", "participant": "a"}]}, "direction": "send"}));
    // In force when the call returned: the very next packet is dropped.
    assert!(who_gets(&s, &s.a, &rtp(1, 2, b"x")).is_empty());
    assert!(who_gets(&s, &s.a, &rtp(2, 3, b"video")).is_empty());
    assert!(
        who_gets(&s, &s.a, &rtcp_sr(1)).is_empty(),
        "its RTCP is stopped too"
    );
    // Everybody else goes on, and a still receives.
    assert_eq!(who_gets(&s, &s.b, &rtp(3, 1, b"y")), ["a", "c"]);
    assert_eq!(who_gets(&s, &s.d, &rtp(4, 1, b"z")), ["e"]);
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["participants_matched"], 1);
    assert_eq!(r["participants_matched_total"], 1);
    assert_eq!(r["packets_dropped_by_direction"]["send"], 3);
    assert_eq!(r["state"], "active");
    s.relay.lift(id);
    // Lifted when the call returned: the very next packet arrives.
    assert_eq!(who_gets(&s, &s.a, &rtp(1, 4, b"x")), ["b", "c"]);
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["state"], "lifted");
    assert_eq!(r["participants_matched"], 0);
}

#[test]
fn a_receive_rule_on_video_mutes_only_that() {
    let s = setup();
    let id = s.relay.rule(json!({
        "match": {"participants": [{"room": "r1", "participant": "c"}]},
        "direction": "receive", "media": "video"
    }));
    assert_eq!(who_gets(&s, &s.a, &rtp(2, 1, b"video")), ["b"]);
    assert_eq!(who_gets(&s, &s.a, &rtp(1, 2, b"audio")), ["b", "c"]);
    // Feedback about a video track it may not receive does not go back either.
    assert!(who_gets(&s, &s.c, &rtcp_pli(9, 2)).is_empty());
    assert_eq!(who_gets(&s, &s.b, &rtcp_pli(3, 2)), ["a"]);
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["packets_dropped_by_direction"]["receive"], 2);
}

#[test]
fn a_region_rule_applies_across_rooms_and_to_later_joiners() {
    let s = setup();
    let id = s
        .relay
        .rule(json!({"match": {"regions": ["CN"]}, "direction": "both"}));
    assert_eq!(
        who_gets(&s, &s.a, &rtp(1, 1, b"x")),
        ["b", "c"],
        "nobody is in CN yet"
    );
    s.relay.ok(
        "PATCH",
        "/v1/rooms/r1/participants/b",
        Some(&json!({"region": "CN"})),
    );
    assert_eq!(who_gets(&s, &s.a, &rtp(1, 2, b"x")), ["c"]);
    assert!(who_gets(&s, &s.b, &rtp(3, 1, b"y")).is_empty());
    // A participant who joins later in another room is covered as it joins.
    let f = Client::new();
    let body = json!({"address": f.addr().to_string(), "region": "CN", "tracks": [{"ssrc": 6, "kind": "audio"}]});
    s.relay
        .ok("PUT", "/v1/rooms/r2/participants/f", Some(&body));
    assert!(who_gets(&s, &f, &rtp(6, 1, b"f")).is_empty());
    assert_eq!(who_gets(&s, &s.d, &rtp(4, 1, b"d")), ["e"]);
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["participants_matched"], 2);
    assert_eq!(r["participants_matched_total"], 2);
    // Limited to one room, the same region rule leaves the other room alone.
    s.relay.lift(id);
    s.relay
        .rule(json!({"match": {"regions": ["CN"], "rooms": ["r2"]}, "direction": "send"}));
    assert_eq!(who_gets(&s, &s.b, &rtp(3, 2, b"y")), ["a", "c"]);
    assert!(who_gets(&s, &f, &rtp(6, 2, b"f")).is_empty());
}

#[test]
fn an_expired_rule_stops_within_a_second_and_is_audited() {
    let s = setup();
    let id = s.relay.rule(json!({
        "match": {"participants": [{"room": "r1", "participant": "a"}]},
        "direction": "send",
        "expires_at": e2e::rfc3339_in(2),
    }));
    assert!(who_gets(&s, &s.a, &rtp(1, 1, b"x")).is_empty());
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    let expires = r["expires_at"].as_str().unwrap().to_owned();
    // Poll until the rule is expired; it must happen within a second of expires_at.
    let start = Instant::now();
    loop {
        let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
        if r["state"] == "expired" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "rule {expires} never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(start.elapsed() < Duration::from_millis(3200));
    assert_eq!(who_gets(&s, &s.a, &rtp(1, 2, b"x")), ["b", "c"]);
    let audit = s.relay.ok("GET", "/v1/audit", None);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"rule_added"), "{actions:?}");
    assert!(actions.contains(&"rule_expired"), "{actions:?}");
}

#[test]
fn rules_survive_a_crash_and_the_audit_chain_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut s = setup_with(Relay::start_with(opts.clone()));
    let id = s.relay.rule(json!({"match": {"participants": [{"room": "r1", "participant": "a"}]}, "direction": "send"}));
    let lifted = s.relay.rule(json!({"match": {"regions": ["HK"]}}));
    s.relay.lift(lifted);
    assert!(who_gets(&s, &s.a, &rtp(1, 1, b"x")).is_empty());
    s.relay.kill9();

    // After kill -9, the rule is in force again from the first packet.
    let s = setup_with(Relay::start_with(opts));
    assert!(who_gets(&s, &s.a, &rtp(1, 2, b"x")).is_empty());
    assert_eq!(who_gets(&s, &s.b, &rtp(3, 1, b"y")), ["a", "c"]);
    let r = s.relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["state"], "active");
    let r = s.relay.ok("GET", &format!("/v1/rules/{lifted}"), None);
    assert_eq!(r["state"], "lifted");
    drop(s);

    let verify = || {
        std::process::Command::new(e2e::relay_bin())
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Change one entry's detail behind the relay's back: verify names it.
    let db = dir.path().join("relay.db");
    let conn = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DROP TRIGGER IF EXISTS audit_no_update; UPDATE audit SET detail = replace(detail, 'T-1', 'T-2') WHERE seq = 2;")
        .output();
    let out = match conn {
        Ok(o) if o.status.success() => verify(),
        Ok(o) => panic!("sqlite3 failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("the sqlite3 command is needed for this test: {e}"),
    };
    assert!(!out.status.success());
    let msg =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains('2'), "names the first bad entry: {msg}");
}

#[test]
fn nothing_personal_reaches_text_logs_audit_report_or_disk() {
    nothing_personal_reaches_logs_audit_report_or_disk("text");
}

/// The same with JSON logs, whose every line is one object with the documented keys.
#[test]
fn nothing_personal_reaches_json_logs_audit_report_or_disk() {
    nothing_personal_reaches_logs_audit_report_or_disk("json");
}

fn nothing_personal_reaches_logs_audit_report_or_disk(log_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let data = dir.path().join("data");
    let s = setup_with(Relay::start_with(Options {
        data_dir: Some(data.clone()),
        stderr: Some(log.clone()),
        args: vec!["--log-format".into(), log_format.into()],
        ..Default::default()
    }));
    let id = s.relay.rule(
        json!({"match": {"participants": [{"room": "r1", "participant": "a"}], "regions": ["CN"]}}),
    );
    s.relay.ok(
        "PATCH",
        "/v1/rooms/r1/participants/b",
        Some(&json!({"region": "CN"})),
    );
    who_gets(&s, &s.a, &rtp(1, 1, b"x"));
    s.relay.lift(id);
    let report = s.relay.ok("GET", "/v1/transparency", None).to_string();
    let audit = s.relay.ok("GET", "/v1/audit", None).to_string();
    let addresses: Vec<String> = [&s.a, &s.b, &s.c, &s.d, &s.e]
        .iter()
        .map(|c| c.addr().to_string())
        .collect();
    // Transparency: counts only, no participant or room ids.
    for needle in ["\"a\"", "\"b\"", "r1", "r2", "127.0.0.1"] {
        assert!(
            !report.contains(needle),
            "report contains {needle}: {report}"
        );
    }
    assert!(report.contains("ZZ"), "counts by jurisdiction: {report}");
    for a in &addresses {
        assert!(!audit.contains(a.as_str()), "audit contains {a}");
    }
    let mut relay = s.relay;
    relay
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(2))
        .expect("stops");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("rule added"),
        "the log is at info level: {log}"
    );
    let mut files = vec![];
    for entry in std::fs::read_dir(&data).unwrap() {
        files.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for a in &addresses {
        assert!(!log.contains(a.as_str()), "log contains {a}");
    }
    for line in log.lines() {
        let found = ip_addresses(line);
        assert!(found.is_empty(), "log line has {found:?}: {line}");
    }
    if log_format == "json" {
        let mut rule_added = false;
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v[key].is_string(), "no {key}: {line}");
            }
            // Fields sit beside the message.
            rule_added |= v["message"] == "rule added" && v["rule"].is_string();
        }
        assert!(
            rule_added,
            "the rule added event carries its rule id: {log}"
        );
    }
    for f in &files {
        let text = String::from_utf8_lossy(f);
        assert!(
            !text.contains("127.0.0.1"),
            "database contains a loopback address"
        );
    }
}

/// IP addresses in a line: runs of hex digits, dots and colons that parse as an IPv4 address, or
/// as an IPv6 address with a digit in it (so that `relay::control` is none), with or without a
/// port.
fn ip_addresses(line: &str) -> Vec<String> {
    let is_ip = |t: &str| {
        let ip = t
            .parse::<std::net::IpAddr>()
            .or_else(|_| t.parse::<std::net::SocketAddr>().map(|s| s.ip()));
        match ip {
            Ok(std::net::IpAddr::V4(_)) => true,
            Ok(std::net::IpAddr::V6(_)) => t.len() >= 3 && t.chars().any(|c| c.is_ascii_digit()),
            Err(_) => false,
        }
    };
    let edge = ['.', ':'];
    line.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter_map(|t| {
            [t, t.trim_end_matches(edge), t.trim_matches(edge)]
                .into_iter()
                .find(|c| is_ip(c))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn ip_addresses_are_found_and_module_paths_are_not() {
    assert_eq!(ip_addresses("from 127.0.0.1:5004 ok"), ["127.0.0.1:5004"]);
    assert_eq!(ip_addresses("x=10.1.2.3."), ["10.1.2.3"]);
    assert_eq!(ip_addresses("addr:10.1.2.3"), ["10.1.2.3"]);
    assert_eq!(
        ip_addresses("peer [::1]:80 and fe80::1"),
        ["::1", "fe80::1"]
    );
    assert!(ip_addresses("2026-12-06T03:19:35.627498Z relay::control::state: v0.1.0").is_empty());
}
