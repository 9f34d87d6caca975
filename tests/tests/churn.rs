//! loadgen against the real binary: rule and membership churn under moderate load, with every
//! delivery accounted for.

use e2e::{Options, Relay};

fn loadgen(relay: &Relay, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(e2e::loadgen_bin())
        .arg("--control")
        .arg(relay.control.to_string())
        .args(args)
        .arg("--json")
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("loadgen --json prints one object")
}

#[test]
fn rule_churn_never_misdelivers_and_loses_nothing_it_should_deliver() {
    let relay = Relay::start_with(Options {
        args: vec!["--max-rule-changes".into(), "100".into()],
        ..Default::default()
    });
    let r = loadgen(
        &relay,
        &[
            "--rooms",
            "4",
            "--participants",
            "4",
            "--profile",
            "mixed",
            "--duration",
            "6",
            "--rules-per-min",
            "300",
            "--leaves-per-min",
            "30",
        ],
    );
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}"));
    assert!(n("sent") > 5_000, "{r}");
    assert!(r["control"]["rules_added"].as_u64().unwrap() >= 10, "{r}");
    assert_eq!(r["control"]["failed"], 0, "{r}");
    assert_eq!(n("misdelivered"), 0, "{r}");
    // `lost` counts only deliveries that surely had to happen: every packet to a participant no
    // rule covered, and covered ones outside the change windows.
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("duplicates"), 0, "{r}");
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(r["latency_us"][k].is_u64(), "latency_us.{k} in {r}");
    }
}

#[test]
fn stun_latched_clients_get_everything() {
    let relay = Relay::start();
    let r = loadgen(
        &relay,
        &[
            "--rooms",
            "2",
            "--participants",
            "4",
            "--profile",
            "audio",
            "--duration",
            "3",
        ],
    );
    assert_eq!(r["misdelivered"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(
        r["received"].as_u64().unwrap() >= 3 * r["sent"].as_u64().unwrap() * 9 / 10,
        "{r}"
    );
    assert!(relay.metric("relay_latches_total") >= 8);
}
