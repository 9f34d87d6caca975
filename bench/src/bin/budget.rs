//! The budget runner: `cargo run --release -p bench --bin budget [-- --smoke]`.
//!
//! Starts the release relay (built beforehand) pinned to core 0, drives it with loadgen in
//! this process pinned to core 1, and compares each scenario of `bench/budgets.toml` with its
//! budgets. See docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;

use bench::budget::measure::{self, Point};
use bench::budget::output::{
    self, Added, LoadPoint, RunResult, ScenarioResult, SystemResult, WebinarResult,
};
use bench::budget::procs::{self, Relay, Rtpengine};
use bench::budget::side;
use bench::budget::spec::{Budgets, ScenarioSpec, SideBySide, WebinarSpec};

/// Shares of the knee where latency is measured.
const FRACTIONS: [f64; 3] = [0.25, 0.5, 0.8];
/// Seconds each blast floor runs.
const BLAST_SECONDS: f64 = 2.0;
/// Round trips of each hop floor.
const HOP_PINGS: u32 = 2000;

#[derive(Parser, Debug)]
#[command(about = "Latency and throughput budgets of the relay")]
struct Args {
    /// One low-load run per scenario: fails on misdelivery, loss or a crash; no timing judged.
    #[arg(long)]
    smoke: bool,
    /// The relay binary [default: the relay next to this program].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// How loadgen runs; only `in-process` (the library, in this process) exists.
    #[arg(long, default_value = "in-process")]
    loadgen_lib: String,
    /// Scenarios and budgets.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/budgets.toml"))]
    budgets: PathBuf,
    /// Only the scenarios of these names (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Compare with rtpengine and fail when it is not installed [default: compare when present].
    #[arg(long, conflicts_with = "without_rtpengine")]
    with_rtpengine: bool,
    /// Do not compare with rtpengine.
    #[arg(long)]
    without_rtpengine: bool,
    /// rtpengine config file [default: settings of our own on free ports].
    #[arg(long)]
    rtpengine_config: Option<PathBuf>,
    /// Where the JSON and SVG go [default: bench/results].
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("budget: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    if args.loadgen_lib != "in-process" {
        bail!("--loadgen-lib: only `in-process` is supported");
    }
    let relay_bin = bench::relay_bin(args.relay.as_deref())?;
    let text = std::fs::read_to_string(&args.budgets)
        .with_context(|| format!("reading {}", args.budgets.display()))?;
    let budgets = Budgets::from_toml(&text).context("budgets file")?;
    let picked = |name: &String| args.only.is_empty() || args.only.contains(name);
    let scenarios: Vec<ScenarioSpec> = budgets
        .scenario
        .iter()
        .filter(|s| picked(&s.name))
        .cloned()
        .collect();
    let sides: Vec<SideBySide> = budgets
        .side_by_side
        .iter()
        .filter(|s| picked(&s.name))
        .cloned()
        .collect();
    let webinars: Vec<WebinarSpec> = budgets
        .webinar
        .iter()
        .filter(|s| picked(&s.name))
        .cloned()
        .collect();
    if scenarios.is_empty() && sides.is_empty() && webinars.is_empty() {
        bail!("no scenario selected");
    }
    // Core 0 for the system under test, core 1 for loadgen (this thread and all it starts).
    let (sut_core, gen_core) = if procs::cpus() >= 2 {
        (Some(0), Some(1))
    } else {
        eprintln!("budget: fewer than 2 CPUs: nothing is pinned, figures mix relay and loadgen");
        (None, None)
    };
    if let Some(c) = gen_core {
        procs::pin_current_thread(c).context("pinning loadgen to core 1")?;
    }
    let start = |extra: &[String]| -> Result<Relay> {
        let relay = Relay::start(&relay_bin, sut_core, extra)?;
        eprintln!(
            "relay {} {} pid {} media {} control {} backend {} on core {sut_core:?}",
            relay_bin.display(),
            extra.join(" "),
            relay.proc.pid(),
            relay.media,
            relay.control,
            relay.backend
        );
        Ok(relay)
    };
    if args.smoke {
        return smoke(start, &budgets, &scenarios, &sides, &webinars);
    }

    let rtpengine_bin = procs::find_rtpengine();
    let rtpengine_status = match (&rtpengine_bin, args.with_rtpengine, args.without_rtpengine) {
        (_, _, true) => "not compared (--without-rtpengine)".to_owned(),
        (None, true, _) => {
            bail!("--with-rtpengine: rtpengine is not installed (Debian package rtpengine-daemon)")
        }
        (None, false, _) => {
            "NOT COMPARED: rtpengine is not installed (Debian package rtpengine-daemon)".to_owned()
        }
        (Some(p), _, _) => format!("compared: {} ({})", p.display(), rtpengine_version(p)),
    };
    eprintln!("rtpengine: {rtpengine_status}");
    let use_rtpengine = rtpengine_bin.is_some() && !args.without_rtpengine;
    let search = &budgets.search;
    let secs = search.step_seconds;
    let limit = search.loss_limit;
    let mut results = Vec::new();
    for spec in &scenarios {
        eprintln!("== {}: {}", spec.name, spec.about);
        let len = if spec.media == bench::budget::spec::Media::Video {
            1200
        } else {
            200
        };
        let blast = measure::blast_floor(spec.fanout(), len, BLAST_SECONDS, sut_core)?;
        eprintln!(
            "   floor: blast to {} sockets, {len} B: {:.0} pkt/s, {:.0} ns CPU per packet",
            blast.sinks, blast.pps, blast.cpu_ns_per_packet
        );
        let hop = measure::hop_floor(HOP_PINGS, sut_core)?;
        eprintln!(
            "   floor: one loopback hop p50 {:.1} us (echo round trip {:.1} us)",
            hop.hop_p50_us, hop.rtt_p50_us
        );
        // Floors first, on a quiet core; then a fresh relay with this scenario's flags.
        let mut relay = start(&spec.relay_args)?;
        eprintln!("   relay knee search");
        let sweep = measure::find_knee(search, |m| {
            measure::bounded(spec, search, m, || {
                measure::relay_point(&mut relay, spec, m, secs, limit)
            })
        })?;
        let latency = latency_points(&sweep, spec, secs, limit, |m| {
            measure::relay_point(&mut relay, spec, m, secs, limit)
        })?;
        let relay_result = SystemResult { sweep, latency };
        relay.proc.check_alive()?;
        relay.proc.stop();
        let (rtpengine, rtpengine_note) = if !spec.rtpengine {
            (None, None)
        } else if let (true, Some(bin)) = (use_rtpengine, &rtpengine_bin) {
            eprintln!("   rtpengine knee search");
            let mut engine = Rtpengine::start(bin, args.rtpengine_config.as_deref(), sut_core)?;
            let sweep = measure::find_knee(search, |m| {
                measure::bounded(spec, search, m, || {
                    measure::rtpengine_point(&mut engine, spec, m, secs, limit)
                })
            })?;
            let latency = latency_points(&sweep, spec, secs, limit, |m| {
                measure::rtpengine_point(&mut engine, spec, m, secs, limit)
            })?;
            engine.proc.stop();
            (Some(SystemResult { sweep, latency }), None)
        } else {
            (None, Some(rtpengine_status.clone()))
        };
        let checks = output::checks(
            &relay_result,
            rtpengine.as_ref(),
            &blast,
            &hop,
            &spec.budget,
        );
        results.push(ScenarioResult {
            spec: spec.clone(),
            relay_backend: relay.backend.clone(),
            blast,
            hop,
            relay: relay_result,
            rtpengine,
            rtpengine_note,
            checks,
        });
    }
    let mut side_results = Vec::new();
    for sb in &sides {
        eprintln!("== {}: {}", sb.name, sb.about);
        let mut relay = start(&sb.relay_args)?;
        let mut engine = match (&rtpengine_bin, use_rtpengine) {
            (Some(bin), true) => Some(Rtpengine::start(
                bin,
                args.rtpengine_config.as_deref(),
                sut_core,
            )?),
            _ => None,
        };
        let note = engine.is_none().then(|| rtpengine_status.clone());
        let result = side::run(sb, search, &mut relay, engine.as_mut(), note)?;
        relay.proc.check_alive()?;
        relay.proc.stop();
        if let Some(e) = &mut engine {
            e.proc.check_alive()?;
            e.proc.stop();
        }
        side_results.push(result);
    }
    let mut webinar_results = Vec::new();
    for w in &webinars {
        eprintln!("== {}: {}", w.name, w.about);
        let mut relay = start(&w.relay_args)?;
        let run = measure::webinar_point(&mut relay, w, w.listeners, w.seconds, limit)?;
        eprintln!("    {}", webinar_line(&run));
        relay.proc.check_alive()?;
        relay.proc.stop();
        webinar_results.push(WebinarResult {
            spec: w.clone(),
            relay_backend: relay.backend.clone(),
            checks: output::webinar_checks(w, &run),
            run,
        });
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (date, time) = output::utc(now);
    let comparisons = output::comparisons(&budgets.compare, &results);
    let pass = results.iter().all(|s| s.checks.iter().all(|c| c.pass))
        && comparisons.iter().all(|c| c.check.pass)
        && side_results.iter().all(|s| s.checks.iter().all(|c| c.pass))
        && webinar_results
            .iter()
            .all(|s| s.checks.iter().all(|c| c.pass));
    let run = RunResult {
        date: format!("{date}T{time}"),
        // The command as one reruns it, without this machine's paths.
        command: rerun_command(std::env::args().skip(1)),
        machine: machine(),
        rtpengine: rtpengine_status,
        scenarios: results,
        comparisons,
        side_by_side: side_results,
        webinars: webinar_results,
        pass,
    };
    let table = output::table(&run);
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    let json = args.out.join(format!("{date}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&run)? + "\n")?;
    let svg = args.out.join(format!("{date}.svg"));
    output::plot(&run, &svg)?;
    println!("wrote {} and {}", json.display(), svg.display());
    println!(
        "{}",
        if pass {
            "all budgets met"
        } else {
            "BUDGET MISSED"
        }
    );
    Ok(pass)
}

/// Latency at 25%, 50% and 80% of the knee's load, with the direct path at the same loads.
fn latency_points(
    sweep: &measure::Sweep,
    spec: &ScenarioSpec,
    secs: f64,
    limit: f64,
    mut at: impl FnMut(f64) -> Result<Point>,
) -> Result<Vec<LoadPoint>> {
    let Some(knee) = sweep.knee_point() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for f in FRACTIONS {
        let m = knee.mult * f;
        let measured = at(m)?;
        let direct = measure::direct_point(spec, m, secs, limit)?;
        eprintln!("    {:>3.0}%     {}", f * 100.0, measure::line(&measured));
        eprintln!("    {:>3.0}%     {}", f * 100.0, measure::line(&direct));
        out.push(LoadPoint {
            fraction: f,
            added_us: Added::of(&measured, &direct),
            measured,
            direct,
        });
    }
    Ok(out)
}

/// One line about a webinar, for progress output.
fn webinar_line(w: &measure::WebinarPoint) -> String {
    format!(
        "{} of {} joined in {} bursts, join p50 {:.2} ms p99 {:.2} ms; {}",
        w.joined,
        w.listeners,
        w.bursts.len(),
        w.join_ms.map_or(0.0, |j| j.p50),
        w.join_ms.map_or(0.0, |j| j.p99),
        measure::line(&w.media)
    )
}

/// One low-load run per scenario, each with a fresh relay: no misdelivery, no loss, no crash.
/// Side-by-side scenarios run the relay's half; webinars run with few listeners.
fn smoke(
    start: impl Fn(&[String]) -> Result<Relay>,
    budgets: &Budgets,
    scenarios: &[ScenarioSpec],
    sides: &[SideBySide],
    webinars: &[WebinarSpec],
) -> Result<bool> {
    let mut pass = true;
    let side_specs: Vec<ScenarioSpec> = sides.iter().map(SideBySide::scenario).collect();
    for spec in scenarios.iter().chain(&side_specs) {
        let mut relay = start(&spec.relay_args)?;
        let p = measure::relay_point(
            &mut relay,
            spec,
            spec.smoke_mult,
            budgets.search.smoke_seconds,
            budgets.search.loss_limit,
        )?;
        // At low load nothing may be lost at all, by the relay or at the read receivers.
        let ok = p.misdelivered == 0 && p.sampled_loss == 0.0 && p.relay_loss == Some(0.0);
        println!(
            "smoke {:<24} {} {}",
            spec.name,
            measure::line(&p),
            if ok { "PASS" } else { "FAIL" }
        );
        if !ok {
            for e in &p.errors {
                println!("  loadgen: {e}");
            }
        }
        pass &= ok;
        relay.proc.check_alive()?;
        relay.proc.stop();
    }
    for w in webinars {
        let mut relay = start(&w.relay_args)?;
        let run = measure::webinar_point(
            &mut relay,
            w,
            w.smoke_listeners,
            w.smoke_seconds,
            budgets.search.loss_limit,
        )?;
        let m = &run.media;
        let ok = run.joined == u64::from(run.listeners)
            && m.misdelivered == 0
            && m.sampled_loss == 0.0
            && m.latency_us.p50 > 0;
        println!(
            "smoke {:<24} {} {}",
            w.name,
            webinar_line(&run),
            if ok { "PASS" } else { "FAIL" }
        );
        if !ok {
            for e in &m.errors {
                println!("  loadgen: {e}");
            }
        }
        pass &= ok;
        relay.proc.check_alive()?;
        relay.proc.stop();
    }
    println!("smoke {}", if pass { "passed" } else { "FAILED" });
    Ok(pass)
}

/// The command line as one reruns it: paths that only say where things are on this machine
/// (`--out`, `--relay`, `--budgets`, `--rtpengine-config`) are left out.
fn rerun_command(args: impl Iterator<Item = String>) -> String {
    const LOCAL: [&str; 4] = ["--out", "--relay", "--budgets", "--rtpengine-config"];
    let mut out = vec!["cargo run --release -p bench --bin budget".to_owned()];
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if LOCAL.contains(&a.as_str()) {
            skip_value = true;
        } else if !LOCAL.iter().any(|l| a.starts_with(&format!("{l}="))) {
            out.push(a);
        }
    }
    if out.len() > 1 {
        out.insert(1, "--".to_owned());
    }
    out.join(" ")
}

fn rtpengine_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions. (Not `cpus()`: this thread is pinned by now.)
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{online} CPUs ({model}), Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::rerun_command;

    #[test]
    fn the_recorded_command_leaves_local_paths_out() {
        let args = ["--only", "a,b", "--out", "/x/y", "--relay=/r", "--smoke"];
        assert_eq!(
            rerun_command(args.iter().map(|s| s.to_string())),
            "cargo run --release -p bench --bin budget -- --only a,b --smoke"
        );
        assert_eq!(
            rerun_command(std::iter::empty()),
            "cargo run --release -p bench --bin budget"
        );
    }
}
