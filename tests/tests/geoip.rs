//! Region attribution from a MaxMind DB built with the real MaxMind writer.

use std::net::UdpSocket;
use std::path::Path;

use e2e::{Options, Relay};
use serde_json::json;

fn make_mmdb(out: &Path) {
    e2e::make_mmdb(out, &["127.0.0.0/24=CN", "127.0.1.0/24=HK", "::1/128=US"]);
}

#[test]
fn regions_come_from_the_database_unless_signaling_gives_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    make_mmdb(&db);
    let relay = Relay::start_with(Options {
        args: vec!["--geoip".into(), db.display().to_string()],
        ..Default::default()
    });
    relay.room("r");
    let put = |id: &str, body: serde_json::Value| {
        relay.ok(
            "PUT",
            &format!("/v1/rooms/r/participants/{id}"),
            Some(&body),
        )
    };
    let cn = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hk = UdpSocket::bind("127.0.1.7:0").unwrap();
    let v = put(
        "cn",
        json!({"address": cn.local_addr().unwrap().to_string()}),
    );
    assert_eq!(
        (v["region"].as_str(), v["region_source"].as_str()),
        (Some("CN"), Some("geoip"))
    );
    let v = put(
        "hk",
        json!({"address": hk.local_addr().unwrap().to_string()}),
    );
    assert_eq!(
        (v["region"].as_str(), v["region_source"].as_str()),
        (Some("HK"), Some("geoip"))
    );
    let v = put("v6", json!({"address": "[::1]:5004"}));
    assert_eq!(
        (v["region"].as_str(), v["region_source"].as_str()),
        (Some("US"), Some("geoip"))
    );
    let v = put("none", json!({"address": "127.0.2.1:5004"}));
    assert_eq!(
        (&v["region"], v["region_source"].as_str()),
        (&json!(null), Some("unknown"))
    );
    let v = put("sig", json!({"address": "127.0.0.9:5004", "region": "FR"}));
    assert_eq!(
        (v["region"].as_str(), v["region_source"].as_str()),
        (Some("FR"), Some("signaling"))
    );
    let v = put("noaddr", json!({}));
    assert_eq!(v["region_source"], "unknown");
    // A region rule matches the attributed region.
    let id = relay.rule(json!({"match": {"regions": ["HK"]}, "direction": "send"}));
    let r = relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["participants_matched"], 1);
    // Moving the participant re-attributes it.
    let v = relay.ok(
        "PATCH",
        "/v1/rooms/r/participants/hk",
        Some(&json!({"address": "127.0.0.77:5004"})),
    );
    assert_eq!(v["region"], "CN");
    let r = relay.ok("GET", &format!("/v1/rules/{id}"), None);
    assert_eq!(r["participants_matched"], 0);
}

#[test]
fn a_bad_database_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.mmdb");
    std::fs::write(&db, b"not a database").unwrap();
    let out = std::process::Command::new(e2e::relay_bin())
        .args([
            "serve",
            "--media",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--geoip")
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GeoIP"));
}
