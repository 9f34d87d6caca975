//! One hot publisher, end to end on the release binary: egress of one publisher to N receivers
//! with `--workers 1` and with more workers, which share the fan-out (`io::handoff`):
//! `cargo run --release -p bench --bin hotpub [-- --receivers 2000 --runs 3]`.
//!
//! Each run starts a fresh relay (workers pinned to cores 0, 1, ...), puts one publisher (one
//! audio track) and `--receivers` receivers in one room, each receiver a real loopback socket,
//! and sends 200-byte RTP at `--rate` packets/s, more than the relay can fan out. The generator
//! is one thread on the same cores (unpinned): it is the noise to state, with the machine's other
//! load.
//!
//! Egress is counted where the copies land, not where the relay says it sent them: during the
//! warm-up each receiver's socket holds almost nothing (the smallest receive buffer); at the
//! start of the window every receiver is emptied and given a `--rcvbuf` buffer, at the end
//! given the smallest buffer again (later copies are dropped), and then emptied while counting.
//! What the receivers got in the window, over its length, is the egress. Beside it: the relay's
//! own count (`relay_packets_out_total`, which includes copies the receivers' sockets dropped),
//! the receivers' kernel drops (/proc/net/udp), the CPU of every core from /proc/stat (softirq
//! included) and the relay process's CPU.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};

use bench::budget::core::{CpuTicks, parse_stat};
use bench::budget::procs::{Proc, cpu_ns, cpus, metrics};
use loadgen::api::Api;

#[derive(Parser, Debug)]
#[command(about = "Egress of one publisher to many receivers, one worker against several")]
struct Args {
    /// The relay binary [default: the relay next to this program].
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
    /// Seconds of warm-up, then of measurement. The receivers hold the window's copies in
    /// kernel memory until it ends (about 1 KB each), which the kernel's UDP memory limit
    /// (`net.ipv4.udp_mem`, its first value) bounds: a run that reaches it fails.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Each receiver's receive buffer during the window, bytes (SO_RCVBUFFORCE).
    #[arg(long, default_value_t = 4 << 20)]
    rcvbuf: usize,
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

/// What one run measured, per second of the window.
#[derive(Debug, Clone, Default)]
struct RunResult {
    workers: usize,
    /// Copies the receivers' sockets got.
    egress: f64,
    /// Copies the relay counted as sent (`relay_packets_out_total`).
    relay_counted: f64,
    /// Copies the receivers' sockets dropped (their buffers full).
    receiver_drops: f64,
    /// Datagrams the publisher sent.
    offered: f64,
    /// Hand-offs, and refused ones (that share dropped).
    handoff: f64,
    handoff_full: f64,
    send_errors: f64,
    /// GSO sends (one syscall, several copies to one receiver).
    gso_sends: f64,
    /// Per core, the busy share of the window (/proc/stat: one minus the measured idle share).
    core_busy: Vec<f64>,
    /// The relay process's CPU, in cores.
    relay_cpu: f64,
    /// The kernel's UDP memory at the end of the window, as a share of its limit.
    udp_mem_share: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let relay = bench::relay_bin(args.relay.as_deref())?;
    let mut results: Vec<RunResult> = Vec::new();
    for run in 0..args.runs {
        for &w in &args.workers {
            let r =
                one_run(&relay, &args, w).with_context(|| format!("run {run}, --workers {w}"))?;
            let busy: Vec<String> = r
                .core_busy
                .iter()
                .map(|b| format!("{:.0}%", b * 100.0))
                .collect();
            println!(
                "run {run} workers {w}: egress {:.0}/s at the receivers (relay counted {:.0}/s, \
                 receivers dropped {:.0}/s), offered {:.0}/s in, hand-offs {:.0}/s, refused \
                 {:.0}/s, send errors {:.0}/s, GSO sends {:.0}/s; cores busy {}, relay {:.2} cores, \
                 UDP memory {:.0}% of its limit",
                r.egress,
                r.relay_counted,
                r.receiver_drops,
                r.offered,
                r.handoff,
                r.handoff_full,
                r.send_errors,
                r.gso_sends,
                busy.join(" "),
                r.relay_cpu,
                r.udp_mem_share * 100.0,
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

/// Sets a socket's receive buffer; 0 gives the kernel's smallest.
fn set_rcvbuf(s: &UdpSocket, bytes: usize) -> Result<()> {
    let size = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket with a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(std::io::Error::last_os_error()).context("SO_RCVBUF")
}

/// Reads every datagram queued on the sockets; returns how many.
fn drain(sockets: &[UdpSocket]) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    for s in sockets {
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// The receivers' kernel drops, summed (the `drops` column of /proc/net/udp).
fn receiver_drops(ports: &std::collections::HashSet<String>) -> Result<u64> {
    let table = std::fs::read_to_string("/proc/net/udp")?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ports
                .contains(*f.get(1)?)
                .then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum())
}

/// The kernel's UDP memory in pages (/proc/net/sockstat) and the limit above which it refuses
/// receive memory beyond each socket's minimum: `net.ipv4.udp_mem`'s first value (UDP keeps
/// no memory-pressure state, so the kernel suppresses allocations from there on).
fn udp_memory() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/net/sockstat")?;
    let used = stat
        .lines()
        .find_map(|l| l.strip_prefix("UDP: "))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| *w == "mem")?;
            f.get(i + 1)?.parse().ok()
        })
        .ok_or_else(|| anyhow!("no UDP memory in /proc/net/sockstat"))?;
    let limit = std::fs::read_to_string("/proc/sys/net/ipv4/udp_mem")?
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("unreadable /proc/sys/net/ipv4/udp_mem"))?;
    Ok((used, limit))
}

/// Every core's /proc/stat ticks, and when they were read.
fn cores() -> Result<(Instant, Vec<CpuTicks>)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let at = Instant::now();
    let ticks = (0..cpus())
        .map(|c| parse_stat(&text, c).ok_or_else(|| anyhow!("no cpu{c} in /proc/stat")))
        .collect::<Result<_>>()?;
    Ok((at, ticks))
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
    let mut ports = std::collections::HashSet::new();
    for (i, r) in receivers.iter().enumerate() {
        r.set_nonblocking(true)?;
        set_rcvbuf(r, 0)?;
        ports.insert(format!("0100007F:{:04X}", r.local_addr()?.port()));
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

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let generator = {
        let (stop, sent, rate) = (stop.clone(), sent.clone(), args.rate);
        std::thread::spawn(move || generate(&publisher, media, rate, &stop, &sent))
    };
    std::thread::sleep(Duration::from_secs_f64(args.warmup));

    let counters = |m: &std::collections::BTreeMap<String, f64>| {
        [
            "relay_packets_out_total",
            "relay_handoff_out_total",
            "relay_handoff_full_total",
            "relay_send_errors_total",
            "relay_gso_sends_total",
        ]
        .map(|k| m.get(k).copied().unwrap_or(0.0))
    };
    // Open the window: empty every receiver, then let it hold what comes.
    drain(&receivers);
    let read0 = Instant::now();
    let c0 = counters(&metrics(control)?);
    let read0 = read0 + (Instant::now() - read0) / 2;
    let (cpu0, relay0, drops0, sent0) = (
        cores()?,
        cpu_ns(proc.pid())?,
        receiver_drops(&ports)?,
        sent.load(Ordering::Relaxed),
    );
    let open = Instant::now();
    for r in &receivers {
        set_rcvbuf(r, args.rcvbuf)?;
    }
    let opened = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    // Close it: the smallest buffer again, so that later copies are dropped, then count.
    let (udp_used, udp_limit) = udp_memory()?;
    let close = Instant::now();
    for r in &receivers {
        set_rcvbuf(r, 0)?;
    }
    let closed = Instant::now();
    let read1 = Instant::now();
    let c1 = counters(&metrics(control)?);
    let read1 = read1 + (Instant::now() - read1) / 2;
    let (cpu1, relay1, drops1, sent1) = (
        cores()?,
        cpu_ns(proc.pid())?,
        receiver_drops(&ports)?,
        sent.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    generator
        .join()
        .map_err(|_| anyhow!("the generator panicked"))?;
    let got = drain(&receivers);
    proc.check_alive()?;
    proc.stop();
    // Past the limit the receivers' kernel drops copies for want of memory, not of buffer, and
    // the count is what the machine can hold, not what the relay sent.
    let udp_mem_share = udp_used as f64 / udp_limit.max(1) as f64;
    if udp_mem_share > 0.95 {
        bail!(
            "the window's copies filled the kernel's UDP memory ({udp_used} of {udp_limit} pages, \
             net.ipv4.udp_mem): the count would be the machine's limit; use a shorter --seconds"
        );
    }
    // Each receiver's window runs from its own open to its own close: on average, the
    // midpoints of the two loops.
    let secs = ((close - open) + (closed - opened)).as_secs_f64() / 2.0;
    if secs <= 0.0 {
        bail!("empty window");
    }
    // The relay's counters over the time between their two reads.
    let rate = |i: usize| (c1[i] - c0[i]) / (read1 - read0).as_secs_f64();
    let ((at0, cpu0), (at1, cpu1)) = (cpu0, cpu1);
    let cpu_secs = (at1 - at0).as_secs_f64();
    Ok(RunResult {
        workers,
        egress: got as f64 / secs,
        relay_counted: rate(0),
        receiver_drops: drops1.saturating_sub(drops0) as f64 / secs,
        offered: sent1.saturating_sub(sent0) as f64 / secs,
        handoff: rate(1),
        handoff_full: rate(2),
        send_errors: rate(3),
        gso_sends: rate(4),
        core_busy: cpu1
            .iter()
            .zip(&cpu0)
            .map(|(b, a)| b.busy_since(a, cpu_secs))
            .collect(),
        // Read around the window's open and close loops, so over the time between the reads
        // (the CPU readings are taken next to them).
        relay_cpu: relay1.saturating_sub(relay0) as f64 / 1e9 / cpu_secs,
        udp_mem_share,
    })
}

/// Sends 200-byte RTP to `media` at `rate` packets/s until `stop`, counting what went.
fn generate(
    publisher: &UdpSocket,
    media: SocketAddr,
    rate: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let mut packet = vec![0u8; 200];
    packet[..2].copy_from_slice(&[0x80, 111]);
    packet[8..12].copy_from_slice(&7u32.to_be_bytes());
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = Instant::now();
    let mut seq = 0u16;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        seq = seq.wrapping_add(1);
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        // A full send buffer is the generator's loss, not the relay's; it counts only what went.
        if publisher.send_to(&packet, media).is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        next += interval;
        if next + Duration::from_millis(100) < Instant::now() {
            next = Instant::now();
        }
    }
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
                "relay_counted_per_s": runs.iter().map(|r| r.relay_counted.round()).collect::<Vec<_>>(),
                "receiver_drops_per_s": runs.iter().map(|r| r.receiver_drops.round()).collect::<Vec<_>>(),
                "gso_sends_per_s": runs.iter().map(|r| r.gso_sends.round()).collect::<Vec<_>>(),
                "core_busy": runs.iter().map(|r| r.core_busy.iter().map(|b| (b * 100.0).round() / 100.0).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "relay_cpu_cores": runs.iter().map(|r| (r.relay_cpu * 100.0).round() / 100.0).collect::<Vec<_>>(),
                "udp_mem_share_at_close": runs.iter().map(|r| (r.udp_mem_share * 100.0).round() / 100.0).collect::<Vec<_>>(),
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
        "egress_counted_at": "the receivers' sockets",
        "relay_args": args.relay_arg,
        "per_workers": per,
        "ratios": ratios,
    })
}
