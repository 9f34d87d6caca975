//! One hot publisher, end to end on the release binary: egress of one publisher to N receivers
//! with `--workers 1` and with more workers, which share the fan-out (`io::handoff`):
//! `cargo run --release -p bench --bin hotpub [-- --receivers 2000 --runs 3]`.
//!
//! Each run starts a fresh relay (workers pinned to cores 0, 1, ...), puts one publisher (one
//! audio track) and `--receivers` receivers in one room, each receiver a real loopback socket
//! that never reads (its queue fills, then the kernel drops: the relay's send path is the same),
//! and sends 200-byte RTP at `--rate` packets/s, more than the relay can fan out. After a
//! warm-up it reads `relay_packets_out_total` at the start and the end of the window: egress is
//! their difference over the window. The generator is one thread on the same cores (unpinned):
//! it is the noise to state, with the machine's other load.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};

use bench::budget::procs::{Proc, metrics};
use loadgen::api::Api;

#[derive(Parser, Debug)]
#[command(about = "Egress of one publisher to many receivers, one worker against several")]
struct Args {
    /// The relay binary [default: <target dir>/release/relay].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Receivers in the room.
    #[arg(long, default_value_t = 2000)]
    receivers: usize,
    /// Worker counts to compare; the first is the base of the ratio.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Packets per second the publisher sends.
    #[arg(long, default_value_t = 4000)]
    rate: u64,
    /// Seconds of warm-up, then of measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Runs per worker count (alternating), each with a fresh relay.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Extra flags for the relay (e.g. `--backend=io_uring`, `--handoff-min-members=0`).
    #[arg(long, allow_hyphen_values = true)]
    relay_arg: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct RunResult {
    workers: usize,
    /// Datagrams sent per second in the window.
    egress: f64,
    /// Datagrams the publisher sent per second in the window.
    offered: f64,
    /// Hand-offs per second, and refused ones (sent locally) per second.
    handoff: f64,
    handoff_full: f64,
    send_errors: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let relay = match &args.relay {
        Some(p) => p.clone(),
        None => default_relay()?,
    };
    let mut results: Vec<RunResult> = Vec::new();
    for run in 0..args.runs {
        for &w in &args.workers {
            let r =
                one_run(&relay, &args, w).with_context(|| format!("run {run}, --workers {w}"))?;
            println!(
                "run {run} workers {w}: egress {:.0}/s (offered {:.0}/s in), hand-offs {:.0}/s, \
                 refused {:.0}/s, send errors {:.0}/s",
                r.egress, r.offered, r.handoff, r.handoff_full, r.send_errors
            );
            results.push(r);
        }
    }
    let summary = summary(&args, &results);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

fn one_run(relay: &Path, args: &Args, workers: usize) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(relay);
    cmd.args(["--media", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .args(["--log", "warn", "--workers", &workers.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(&args.relay_arg);
    let mut proc = Proc::spawn("relay", cmd, None, &dir.path().join("relay.log"))?;
    let line = proc.wait_line("relay ready", Duration::from_secs(30))?;
    let field = |key: &str| -> Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} in {line:?}"))?
            .parse()
            .with_context(|| format!("{key} in {line:?}"))
    };
    let (media, control) = (field("media=")?, field("control=")?);
    let api = Api::new(&control.to_string(), None);
    api.put_room("hot")?;
    let receivers: Vec<UdpSocket> = (0..args.receivers)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    for (i, r) in receivers.iter().enumerate() {
        let body = json!({"address": r.local_addr()?.to_string(), "tracks": []});
        api.put_participant("hot", &format!("r{i}"), &body)?;
    }
    let publisher = UdpSocket::bind("127.0.0.1:0")?;
    let body = json!({
        "address": publisher.local_addr()?.to_string(),
        "tracks": [{"ssrc": 7, "kind": "audio"}],
    });
    api.put_participant("hot", "publisher", &body)?;
    proc.check_alive()?;

    let counters = |m: &std::collections::BTreeMap<String, f64>| {
        [
            "relay_packets_out_total",
            "relay_handoff_out_total",
            "relay_handoff_full_total",
            "relay_send_errors_total",
        ]
        .map(|k| m.get(k).copied().unwrap_or(0.0))
    };
    let mut packet = vec![0u8; 200];
    packet[..2].copy_from_slice(&[0x80, 111]);
    packet[8..12].copy_from_slice(&7u32.to_be_bytes());
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let start = Instant::now();
    let window_start = start + Duration::from_secs(args.warmup);
    let end = window_start + Duration::from_secs(args.seconds);
    let mut next = start;
    let mut seq = 0u16;
    let mut sent_in_window = 0u64;
    let mut before = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if before.is_none() && now >= window_start {
            before = Some((Instant::now(), counters(&metrics(control)?)));
        }
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        seq = seq.wrapping_add(1);
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        // A full send buffer is the generator's loss, not the relay's; it counts only what went.
        if publisher.send_to(&packet, media).is_ok() && before.is_some() {
            sent_in_window += 1;
        }
        next += interval;
        if next + Duration::from_millis(100) < Instant::now() {
            next = Instant::now();
        }
    }
    let after = (Instant::now(), counters(&metrics(control)?));
    proc.check_alive()?;
    proc.stop();
    let (t0, c0) = before.ok_or_else(|| anyhow!("the window never started"))?;
    let secs = (after.0 - t0).as_secs_f64();
    if secs <= 0.0 {
        bail!("empty window");
    }
    let rate = |i: usize| (after.1[i] - c0[i]) / secs;
    Ok(RunResult {
        workers,
        egress: rate(0),
        offered: sent_in_window as f64 / secs,
        handoff: rate(1),
        handoff_full: rate(2),
        send_errors: rate(3),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summary(args: &Args, results: &[RunResult]) -> Value {
    let per: Vec<Value> = args
        .workers
        .iter()
        .map(|&w| {
            let runs: Vec<&RunResult> = results.iter().filter(|r| r.workers == w).collect();
            json!({
                "workers": w,
                "egress_per_s": runs.iter().map(|r| r.egress.round()).collect::<Vec<_>>(),
                "egress_median": median(runs.iter().map(|r| r.egress).collect()).round(),
                "handoff_full_per_s": runs.iter().map(|r| r.handoff_full.round()).collect::<Vec<_>>(),
                "send_errors_per_s": runs.iter().map(|r| r.send_errors.round()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let base = median(
        results
            .iter()
            .filter(|r| Some(&r.workers) == args.workers.first())
            .map(|r| r.egress)
            .collect(),
    );
    let ratios: Vec<Value> = args
        .workers
        .iter()
        .skip(1)
        .map(|&w| {
            let m = median(
                results
                    .iter()
                    .filter(|r| r.workers == w)
                    .map(|r| r.egress)
                    .collect(),
            );
            json!({"workers": w, "ratio_to_first": (m / base * 100.0).round() / 100.0})
        })
        .collect();
    json!({
        "receivers": args.receivers,
        "rate": args.rate,
        "seconds": args.seconds,
        "relay_args": args.relay_arg,
        "per_workers": per,
        "ratios": ratios,
    })
}

/// The release relay next to this binary (target/release/hotpub -> target/release/relay).
fn default_relay() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this binary")?;
    let path = me
        .parent()
        .map(|d| d.join("relay"))
        .ok_or_else(|| anyhow!("no directory for {}", me.display()))?;
    if !path.exists() {
        bail!(
            "no relay binary at {}: build it first with `cargo build --release -p relay` (or \
             pass --relay PATH)",
            path.display()
        );
    }
    Ok(path)
}
