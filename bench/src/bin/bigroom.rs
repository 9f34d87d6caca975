//! One large room, end to end on the release binary:
//! `cargo run --release -p bench --bin bigroom [-- --members 10000 --runs 3]`.
//!
//! Starts the relay (built beforehand; default `--workers`), fills one room through the HTTP API
//! with participants that have fixed addresses and one audio track each, and measures:
//!
//! - join latency (`PUT .../participants/{id}`, until the reply: the participant is in force on
//!   every worker and stored) at each checkpoint size k: with k - 1 members in the room, a probe
//!   participant joins (the k-th) and leaves, `--probes` times;
//! - the time for a rule naming one participant to be in force (`POST /v1/rules`, which answers
//!   once every worker applied it) at each rule checkpoint, `--probes` times (lifted in between);
//! - the relay's RSS (`VmRSS` in `/proc/<pid>/status`) empty and full.
//!
//! Each run uses a fresh relay. Medians are printed per run and over the runs; `--json` writes
//! them as one object.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Parser;
use serde_json::{Value, json};

use bench::budget::procs::Proc;
use loadgen::api::Api;

#[derive(Parser, Debug)]
#[command(about = "Join latency, rule latency and memory of one large room")]
struct Args {
    /// The relay binary [default: the relay next to this program].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Members the room is filled to.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Room sizes at which joins are measured.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    join_at: Vec<usize>,
    /// Room sizes at which a rule naming one participant is measured.
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    rule_at: Vec<usize>,
    /// Measurements at each checkpoint.
    #[arg(long, default_value_t = 30)]
    probes: usize,
    /// Fresh relays, one after the other.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent API clients while filling (not while measuring).
    #[arg(long, default_value_t = 4)]
    fillers: usize,
    /// Extra flags for the relay (e.g. `--workers=1`).
    #[arg(long, allow_hyphen_values = true)]
    relay_arg: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured, in microseconds and kilobytes.
#[derive(Debug, Default)]
struct RunResult {
    joins: Vec<(usize, f64)>,
    rules: Vec<(usize, f64)>,
    rss_empty_kb: u64,
    rss_full_kb: u64,
    fill_seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let relay = bench::relay_bin(args.relay.as_deref())?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        eprintln!("run {} of {}", run + 1, args.runs);
        let r = one_run(&relay, &args)?;
        print_run(run + 1, &r);
        runs.push(r);
    }
    let summary = summary(&args, &runs);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

fn one_run(relay: &Path, args: &Args) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(relay);
    cmd.args(["--media", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .args(["--log", "warn", "--max-rule-changes", "1000"]);
    // The default limit (10,000 participants a room) unless the room is to be larger.
    if args.members > 10_000 {
        cmd.args(["--max-participants", &args.members.to_string()]);
    }
    cmd.arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(&args.relay_arg);
    let mut proc = Proc::spawn("relay", cmd, None, &dir.path().join("relay.log"))?;
    let line = proc.wait_line("relay ready", Duration::from_secs(30))?;
    let control: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("control="))
        .ok_or_else(|| anyhow!("no control= in {line:?}"))?
        .parse()?;
    let api = Arc::new(Api::new(&control.to_string(), None));
    api.put_room("big")?;
    // Let start-up settle before the empty figure.
    std::thread::sleep(Duration::from_millis(500));
    let mut result = RunResult {
        rss_empty_kb: rss_kb(proc.pid())?,
        ..RunResult::default()
    };
    let mut checkpoints: Vec<usize> = args
        .join_at
        .iter()
        .chain(&args.rule_at)
        .copied()
        .filter(|&k| k <= args.members)
        .collect();
    checkpoints.push(args.members);
    checkpoints.retain(|&k| k > 0);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let started = Instant::now();
    let mut size = 0;
    for k in checkpoints {
        if args.join_at.contains(&k) {
            fill(&api, size, k - 1, args.fillers)?;
            size = k - 1;
            proc.check_alive()?;
            let us = probe_joins(&api, k, args.probes)?;
            result.joins.push((k, us));
        }
        fill(&api, size, k, args.fillers)?;
        size = k;
        proc.check_alive()?;
        if args.rule_at.contains(&k) {
            let us = probe_rules(&api, k, args.probes)?;
            result.rules.push((k, us));
        }
    }
    result.fill_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    result.rss_full_kb = rss_kb(proc.pid())?;
    proc.stop();
    Ok(result)
}

/// Adds members `from..to`, `fillers` requests at a time.
fn fill(api: &Arc<Api>, from: usize, to: usize, fillers: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(from));
    let threads: Vec<_> = (0..fillers.max(1))
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return Ok(());
                    }
                    api.put_participant("big", &format!("p{i}"), &member(i))?;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow!("a filler panicked"))??;
    }
    Ok(())
}

/// Median join latency (µs) of a probe participant joining as the `k`-th.
fn probe_joins(api: &Api, k: usize, probes: usize) -> Result<f64> {
    let mut samples = Vec::with_capacity(probes);
    for n in 0..probes {
        // Probe ids and addresses stay clear of the members'.
        let i = 1_000_000 + n;
        let start = Instant::now();
        api.put_participant("big", "probe", &member(i))?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        api.delete_participant("big", "probe")?;
    }
    eprintln!("  join as the {k}th: median {:.0} µs", median(&mut samples));
    Ok(median(&mut samples))
}

/// Median time (µs) for a rule naming one participant of a room of `k` to be in force.
fn probe_rules(api: &Api, k: usize, probes: usize) -> Result<f64> {
    let body = json!({
        "match": {"participants": [{"room": "big", "participant": format!("p{}", k / 2)}]},
        "direction": "both",
        "basis": {"authority": "Benchmark", "reference": "bigroom", "jurisdiction": "DE"},
        "expires_at": "2099-12-31T00:00:00Z"
    });
    let mut samples = Vec::with_capacity(probes);
    for _ in 0..probes {
        let start = Instant::now();
        let id = api.post_rule(&body)?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        api.delete_rule(&id, "benchmark")?;
    }
    eprintln!("  rule in {k}: median {:.0} µs", median(&mut samples));
    Ok(median(&mut samples))
}

/// Member `i`: a fixed address of its own (nothing listens there; no media flows in this
/// benchmark), one audio track, subscribed to everybody.
fn member(i: usize) -> Value {
    let host = 1 + i / 60_000;
    let port = 1_024 + i % 60_000;
    json!({
        "address": format!("127.0.{}.{}:{port}", host / 250, 1 + host % 250),
        "tracks": [{"ssrc": 100_000 + i, "kind": "audio"}],
        "subscribe": "all",
    })
}

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_run(run: usize, r: &RunResult) {
    println!(
        "run {run}: filled in {:.1} s; RSS empty {} KB, full {} KB (+{:.1} MB)",
        r.fill_seconds,
        r.rss_empty_kb,
        r.rss_full_kb,
        (r.rss_full_kb.saturating_sub(r.rss_empty_kb)) as f64 / 1024.0
    );
    for (k, us) in &r.joins {
        println!("  join as the {k}th member: {us:.0} µs (median)");
    }
    for (k, us) in &r.rules {
        println!("  rule in force, room of {k}: {us:.0} µs (median)");
    }
}

/// Medians over the runs, each run's value beside them, and the targets' ratios.
fn summary(args: &Args, runs: &[RunResult]) -> Value {
    let over = |pick: &dyn Fn(&RunResult) -> Option<f64>| -> Value {
        let mut each: Vec<f64> = runs.iter().filter_map(pick).collect();
        let runs = each.clone();
        json!({"median": median(&mut each), "runs": runs})
    };
    let mut joins = serde_json::Map::new();
    for k in &args.join_at {
        let v = over(&|r| r.joins.iter().find(|(n, _)| n == k).map(|(_, us)| *us));
        joins.insert(k.to_string(), v);
    }
    let mut rules = serde_json::Map::new();
    for k in &args.rule_at {
        let v = over(&|r| r.rules.iter().find(|(n, _)| n == k).map(|(_, us)| *us));
        rules.insert(k.to_string(), v);
    }
    let rss = over(&|r| Some(r.rss_full_kb.saturating_sub(r.rss_empty_kb) as f64 / 1024.0));
    let ratio = |m: &serde_json::Map<String, Value>, a: usize, b: usize| -> Value {
        let get = |k: usize| m.get(&k.to_string())?.get("median")?.as_f64();
        match (get(a), get(b)) {
            (Some(x), Some(y)) => json!(x / y),
            _ => Value::Null,
        }
    };
    json!({
        "members": args.members,
        "probes": args.probes,
        "join_latency_us": joins,
        "rule_in_force_us": rules,
        "rss_over_empty_mb": rss,
        "join_10000_over_100": ratio(&joins, 10_000, 100),
        "rule_10000_over_10": ratio(&rules, 10_000, 10),
    })
}
