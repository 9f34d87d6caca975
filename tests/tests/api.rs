//! The control API of the real binary: validation, errors, tokens, configuration, shutdown.

use std::time::Duration;

use e2e::{Client, Options, Relay};
use serde_json::json;

/// Asserts a 4xx with the given status and error code, and returns the message.
fn refused(
    relay: &Relay,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
    code: &str,
) -> String {
    let (s, v) = relay.call_raw(method, path, body, relay.token.as_deref());
    assert_eq!(s, status, "{method} {path} {body:?} -> {v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let relay = Relay::start();
    let (a, b) = (Client::new(), Client::new());
    relay.room("r");
    relay.join("r", "a", &a, &[(1, "audio")]);
    let before = relay.ok("GET", "/v1/rooms/r", None);
    let p = "/v1/rooms/r/participants/b";

    refused(&relay, "PUT", p, Some("{not json"), 400, "invalid_json");
    let msg = refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"adress":"127.0.0.1:5"}"#),
        400,
        "invalid_json",
    );
    assert!(msg.contains("adress"), "the unknown field is named: {msg}");
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"address":"nowhere"}"#),
        400,
        "invalid_address",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"region":"china"}"#),
        400,
        "invalid_region",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"tracks":[{"ssrc":1,"kind":"audio"}]}"#),
        409,
        "ssrc_in_use",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"tracks":[{"ssrc":5,"kind":"smell"}]}"#),
        400,
        "invalid_json",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"tracks":[{"ssrc":5,"kind":"audio"},{"ssrc":5,"kind":"video"}]}"#),
        400,
        "duplicate_ssrc",
    );
    let many: Vec<_> = (100..200)
        .map(|s| json!({"ssrc": s, "kind": "audio"}))
        .collect();
    refused(
        &relay,
        "PUT",
        p,
        Some(&json!({"tracks": many}).to_string()),
        400,
        "too_many_tracks",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(&json!({"address": a.addr().to_string()}).to_string()),
        409,
        "address_in_use",
    );
    refused(
        &relay,
        "PUT",
        p,
        Some(r#"{"ice":{"ufrag":"ab","pwd":"short"}}"#),
        400,
        "invalid_ice",
    );
    refused(&relay, "PUT", p, None, 400, "missing_body");
    let long = "x".repeat(129);
    refused(
        &relay,
        "PUT",
        &format!("/v1/rooms/{long}"),
        None,
        400,
        "invalid_id",
    );
    refused(
        &relay,
        "PUT",
        "/v1/rooms/r/participants/b%20c",
        Some("{}"),
        400,
        "invalid_id",
    );
    refused(
        &relay,
        "PUT",
        "/v1/rooms/nope/participants/b",
        Some("{}"),
        404,
        "not_found",
    );
    refused(
        &relay,
        "GET",
        "/v1/rooms/r/participants/zz",
        None,
        404,
        "not_found",
    );
    refused(&relay, "DELETE", "/v1/rooms/zz", None, 404, "not_found");
    refused(&relay, "POST", "/v1/rooms/r", None, 404, "no_such_endpoint");
    let huge = format!("{{\"region\":\"{}\"}}", "A".repeat(1 << 20));
    refused(&relay, "PUT", p, Some(&huge), 413, "body_too_large");
    // A refused PATCH changes nothing either.
    refused(
        &relay,
        "PATCH",
        "/v1/rooms/r/participants/a",
        Some(r#"{"tracks":[{"ssrc":1,"kind":"audio"}],"region":"xx"}"#),
        400,
        "invalid_region",
    );

    let after = relay.ok("GET", "/v1/rooms/r", None);
    assert_eq!(before["participants"], after["participants"]);
    // And forwarding still works as before.
    relay.join("r", "b", &b, &[]);
    a.send(relay.media, &e2e::rtp(1, 1, b"ok"));
    assert_eq!(b.recv_n(1, e2e::PATIENT).len(), 1);
}

#[test]
fn participant_reply_carries_media_address_and_ice() {
    let relay = Relay::start();
    relay.room("r");
    let c = Client::new();
    let v = relay.join("r", "a", &c, &[(1, "audio")]);
    assert_eq!(v["media_address"], relay.media.to_string());
    assert!(v["ice"]["ufrag"].as_str().unwrap().len() >= 4);
    assert!(v["ice"]["pwd"].as_str().unwrap().len() >= 22);
    let body = json!({"ice": {"ufrag": "evtj", "pwd": "VOkJxbRl1RmTxUk/WvJxBt"}});
    let v = relay.ok("PUT", "/v1/rooms/r/participants/b", Some(&body));
    assert_eq!(v["ice"], body["ice"]);
    assert_eq!(v["region_source"], "unknown");
    let v = relay.ok(
        "PATCH",
        "/v1/rooms/r/participants/b",
        Some(&json!({"region": "HK"})),
    );
    assert_eq!(v["region"], "HK");
    assert_eq!(v["region_source"], "signaling");
    let info = relay.ok("GET", "/v1/info", None);
    assert_eq!(info["media_addresses"][0], relay.media.to_string());
    assert!(info["workers"].as_u64().unwrap() >= 1);
    assert!(info["backend"] == "mmsg" || info["backend"] == "io_uring");
    let rooms = relay.ok("GET", "/v1/rooms", None);
    assert_eq!(rooms["rooms"][0]["participants"], 2);
}

#[test]
fn token_is_required_when_set() {
    let relay = Relay::start_with(Options {
        args: vec!["--control-token".into(), "s3cret".into()],
        token: Some("s3cret".into()),
        ..Default::default()
    });
    let (s, v) = relay.call_raw("GET", "/v1/rooms", None, None);
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    let (s, _) = relay.call_raw("PUT", "/v1/rooms/r", None, Some("wrong"));
    assert_eq!(s, 401);
    let (s, _) = relay.call_raw("PUT", "/v1/rooms/r", None, Some("s3cre"));
    assert_eq!(s, 401);
    let (s, _) = relay.call_raw("GET", "/v1/rooms/r", None, Some("s3cret"));
    assert_eq!(s, 404, "the refused PUT created nothing");
    relay.ok("PUT", "/v1/rooms/r", None);
    // Health and metrics stay open for probes and scrapers.
    let (s, _) = relay.call_raw("GET", "/healthz", None, None);
    assert_eq!(s, 200);
}

#[test]
fn settings_come_from_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "media = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nworkers = 3\n",
    )
    .unwrap();
    let relay = Relay::start_with(Options {
        args: vec!["--config".into(), file.display().to_string()],
        env: vec![("RELAY_WORKERS".into(), "1".into())],
        no_addresses: true,
        ..Default::default()
    });
    let info = relay.ok("GET", "/v1/info", None);
    assert_eq!(info["workers"], 1, "environment beats the file");
}

#[test]
fn the_advertised_address_is_what_clients_are_told() {
    let relay = Relay::start_with(Options {
        args: vec!["--advertise".into(), "192.0.2.10".into()],
        ..Default::default()
    });
    relay.room("r");
    let v = relay.ok("PUT", "/v1/rooms/r/participants/p", Some(&json!({})));
    assert_eq!(
        v["media_address"],
        format!("192.0.2.10:{}", relay.media.port())
    );
    let info = relay.ok("GET", "/v1/info", None);
    assert_eq!(info["media_addresses"][0], v["media_address"]);
    assert_eq!(info["media_bound"], relay.media.to_string());
}

#[test]
fn bad_settings_stop_start_up_with_a_clear_error() {
    let out = std::process::Command::new(e2e::relay_bin())
        .args(["serve", "--control", "0.0.0.0:0", "--media", "127.0.0.1:0"])
        .env_remove("RELAY_CONTROL_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
}

#[test]
fn sigterm_stops_cleanly() {
    let mut relay = Relay::start();
    relay.room("r");
    let status = relay
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(2))
        .expect("exits within 2 s");
    assert!(status.success(), "{status:?}");
    let mut relay = Relay::start();
    let status = relay
        .signal_and_wait(libc::SIGINT, Duration::from_secs(2))
        .expect("exits within 2 s");
    assert!(status.success(), "{status:?}");
}

#[test]
fn metrics_are_prometheus_text() {
    let relay = Relay::start();
    let (s, v) = relay.call_raw("GET", "/metrics", None, None);
    assert_eq!(s, 200);
    let text = v.as_str().unwrap();
    assert!(text.contains("# TYPE relay_packets_in_total counter"));
    assert!(text.contains("relay_worker_packets_in_total{worker=\"0\"}"));
    assert!(text.contains("relay_dropped_packets_total{reason=\"unknown_source\"} 0"));
}
