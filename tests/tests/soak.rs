//! Soak: rooms joining and leaving, rules changing and traffic flowing for a while, then no leaked
//! file descriptors or threads, and memory growth within a stated bound.

use std::time::Duration;

use e2e::{Options, Relay};

/// How long the soak runs. CI keeps it well under a minute; set `SOAK_SECONDS` for a longer one.
fn soak_seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Memory a soak may add, beyond what the first warm-up round settled at: allocator caches and
/// the rule store's page cache, not per-packet or per-change growth.
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn run_loadgen(relay: &Relay, seconds: u64) -> serde_json::Value {
    let out = std::process::Command::new(e2e::loadgen_bin())
        .arg("--control")
        .arg(relay.control.to_string())
        .args([
            "--rooms",
            "6",
            "--participants",
            "4",
            "--profile",
            "mixed",
            "--leaves-per-min",
            "120",
            "--rules-per-min",
            "240",
            "--json",
        ])
        .args(["--duration", &seconds.to_string()])
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_long_run_of_churn_leaks_nothing() {
    let relay = Relay::start_with(Options {
        args: vec!["--max-rule-changes".into(), "100".into()],
        ..Default::default()
    });
    let pid = relay.pid();
    // Warm-up: every path taken once (rooms, STUN latching, rules, their store), so allocator
    // pools and the database file reach their working size.
    let warm = run_loadgen(&relay, 4);
    assert_eq!(warm["misdelivered"], 0, "{warm}");
    std::thread::sleep(Duration::from_millis(500));
    let (fds0, threads0, rss0) = (
        fds(pid),
        proc_status(pid, "Threads:"),
        proc_status(pid, "VmRSS:"),
    );

    let total = soak_seconds();
    let r = run_loadgen(&relay, total);
    assert_eq!(r["misdelivered"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["control"]["rules_added"].as_u64().unwrap() > 10, "{r}");
    assert!(r["control"]["joins"].as_u64().unwrap() > 5, "{r}");
    std::thread::sleep(Duration::from_millis(500));

    // loadgen closed its rooms: the relay is back to no rooms.
    assert_eq!(
        relay.ok("GET", "/v1/rooms", None)["rooms"],
        serde_json::json!([])
    );
    let (fds1, threads1, rss1) = (
        fds(pid),
        proc_status(pid, "Threads:"),
        proc_status(pid, "VmRSS:"),
    );
    eprintln!(
        "soak {total} s: {} sent, {} rules added, {} joins; fds {fds0} -> {fds1}, threads {threads0} -> {threads1}, RSS {rss0} -> {rss1} KiB",
        r["sent"], r["control"]["rules_added"], r["control"]["joins"]
    );
    // HTTP connections the API is still closing may come and go; anything per room, participant,
    // rule or packet would show as hundreds.
    assert!(
        fds1 <= fds0 + 4,
        "file descriptors leaked: {fds0} -> {fds1}"
    );
    // The HTTP server runs a thread per open connection: those come and go with the clients.
    assert!(
        threads1 <= threads0 + 2,
        "threads leaked: {threads0} -> {threads1}"
    );
    assert!(
        rss1 <= rss0 + RSS_GROWTH_BOUND_KIB,
        "RSS grew from {rss0} to {rss1} KiB, over the {RSS_GROWTH_BOUND_KIB} KiB bound"
    );
}
