//! Results: the JSON record, the table, the budget checks, and the latency-versus-load plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde::Serialize;

use super::core::CoreUse;
pub use super::measure::Added;
use super::measure::{BlastFloor, HopFloor, Point, Sweep, WebinarPoint};
use super::side::{self, SideResult};
use super::spec::{Budget, Compare, ScenarioSpec, WebinarSpec};

/// Latency at a share of the knee, with the direct path at the same load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPoint {
    /// Share of the knee's load.
    pub fraction: f64,
    /// The system under test.
    pub measured: Point,
    /// The direct path (no relay) at the same load.
    pub direct: Point,
    /// Measured minus direct, µs.
    pub added_us: Added,
}

/// One system's results in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// The knee search.
    pub sweep: Sweep,
    /// Latency at 25%, 50% and 80% of the knee.
    pub latency: Vec<LoadPoint>,
}

impl SystemResult {
    /// The load point at `fraction` of the knee.
    pub fn at(&self, fraction: f64) -> Option<&LoadPoint> {
        self.latency
            .iter()
            .find(|l| (l.fraction - fraction).abs() < 1e-9)
    }
}

/// A budget check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Measured value (absent: could not be measured, which fails).
    pub value: Option<f64>,
    /// `<=` or `>=`.
    pub op: &'static str,
    /// The limit.
    pub limit: f64,
    /// Met.
    pub pass: bool,
}

impl Check {
    /// A check of `value` against `limit` with `op` (`<=` or `>=`); an absent value fails.
    pub fn new(name: &str, value: Option<f64>, op: &'static str, limit: f64) -> Self {
        let pass = value.is_some_and(|v| if op == "<=" { v <= limit } else { v >= limit });
        Self {
            name: name.to_owned(),
            value,
            op,
            limit,
            pass,
        }
    }
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario as run.
    pub spec: ScenarioSpec,
    /// The relay's backend in this scenario.
    pub relay_backend: String,
    /// The raw kernel send rate to as many sockets as the fan-out.
    pub blast: BlastFloor,
    /// One loopback hop across the two cores.
    pub hop: HopFloor,
    /// The relay.
    pub relay: SystemResult,
    /// rtpengine, or why it is absent.
    pub rtpengine: Option<SystemResult>,
    /// Why there is no rtpengine result, when there is none.
    pub rtpengine_note: Option<String>,
    /// The budget checks (relay only).
    pub checks: Vec<Check>,
}

/// Checks the relay's results against `budget` (and rtpengine's, where it ran).
pub fn checks(
    relay: &SystemResult,
    rtpengine: Option<&SystemResult>,
    blast: &BlastFloor,
    hop: &HopFloor,
    budget: &Budget,
) -> Vec<Check> {
    let knee = relay.sweep.knee_point();
    let at50 = relay.at(0.5);
    let at80 = relay.at(0.8);
    let cpu = at80.and_then(|l| l.measured.cpu_ns_per_packet);
    let mut out = vec![
        Check::new(
            "egress_at_knee / raw_blast_rate",
            knee.map(|k| k.egress_pps / blast.pps.max(1.0)),
            ">=",
            budget.egress_vs_blast,
        ),
        Check::new(
            "p50_added_us @50%",
            at50.map(|l| l.added_us.p50),
            "<=",
            budget.p50_added_us,
        ),
    ];
    if let Some(limit) = budget.p50_over_hop_us {
        out.push(Check::new(
            "p50_added_us - one_hop_p50_us @50%",
            at50.map(|l| l.added_us.p50 - hop.hop_p50_us),
            "<=",
            limit,
        ));
    }
    out.push(Check::new(
        "p99_added_us @80%",
        at80.map(|l| l.added_us.p99),
        "<=",
        budget.p99_added_us,
    ));
    out.push(Check::new(
        "p999_added_us @50%",
        at50.map(|l| l.added_us.p999),
        "<=",
        budget.p999_added_us,
    ));
    out.push(Check::new(
        "cpu_per_packet / blast_cpu_per_packet @80%",
        cpu.map(|c| c / blast.cpu_ns_per_packet.max(1e-9)),
        "<=",
        budget.cpu_vs_blast,
    ));
    if let Some(limit) = budget.egress_vs_rtpengine {
        let theirs = rtpengine.and_then(|r| r.sweep.knee_point());
        out.push(Check::new(
            "egress_at_knee / rtpengine_egress_at_knee",
            knee.zip(theirs)
                .map(|(k, t)| k.egress_pps / t.egress_pps.max(1.0)),
            ">=",
            limit,
        ));
    }
    if let Some(limit) = budget.p50_vs_rtpengine {
        let theirs = rtpengine.and_then(|r| r.at(0.5));
        out.push(Check::new(
            "p50_added / rtpengine_p50_added @50%",
            at50.zip(theirs)
                .map(|(m, t)| m.added_us.p50 / t.added_us.p50.max(1.0)),
            "<=",
            limit,
        ));
    }
    out
}

/// One scenario's knee egress against another's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The comparison as configured.
    pub compare: Compare,
    /// The ratio and, when `at_least` is set, whether it is met (otherwise it always passes).
    pub check: Check,
}

/// The comparisons whose two scenarios both ran.
pub fn comparisons(compare: &[Compare], results: &[ScenarioResult]) -> Vec<Comparison> {
    let knee = |name: &str| {
        results
            .iter()
            .find(|r| r.spec.name == name)
            .map(|r| r.relay.sweep.knee_point().map_or(0.0, |k| k.egress_pps))
    };
    compare
        .iter()
        .filter_map(|c| {
            let (a, b) = (knee(&c.scenario)?, knee(&c.baseline)?);
            let ratio = (b > 0.0).then(|| a / b);
            let check = match c.at_least {
                Some(limit) => Check::new(&c.name, ratio, ">=", limit),
                None => Check {
                    name: c.name.clone(),
                    value: ratio,
                    op: "",
                    limit: 0.0,
                    pass: true,
                },
            };
            Some(Comparison {
                compare: c.clone(),
                check,
            })
        })
        .collect()
}

/// A webinar's results.
#[derive(Debug, Clone, Serialize)]
pub struct WebinarResult {
    /// As configured.
    pub spec: WebinarSpec,
    /// The relay's backend.
    pub relay_backend: String,
    /// What the run measured.
    pub run: WebinarPoint,
    /// The checks.
    pub checks: Vec<Check>,
}

/// Checks a webinar run against its budget.
pub fn webinar_checks(spec: &WebinarSpec, w: &WebinarPoint) -> Vec<Check> {
    let b = &spec.budget;
    let mut out = Vec::new();
    if b.all_joined {
        out.push(Check::new(
            "listeners joined / asked",
            Some(w.joined as f64 / f64::from(w.listeners.max(1))),
            ">=",
            1.0,
        ));
    }
    out.push(Check::new(
        "join p99 ms",
        w.join_ms.map(|j| j.p99),
        "<=",
        b.join_p99_ms,
    ));
    out.push(Check::new(
        "(issue 12) join p50, last burst / first burst",
        w.join_growth(),
        "<=",
        b.join_growth,
    ));
    out.push(Check::new(
        "media loss at read listeners",
        Some(w.media.sampled_loss),
        "<=",
        b.loss,
    ));
    out.push(Check::new(
        "media p99 us",
        Some(w.media.latency_us.p99 as f64),
        "<=",
        b.media_p99_us,
    ));
    out.push(Check::new(
        "misdelivered",
        Some(w.media.misdelivered as f64),
        "<=",
        0.0,
    ));
    out
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// UTC date and time.
    pub date: String,
    /// The command line.
    pub command: String,
    /// CPUs and kernel.
    pub machine: String,
    /// Whether rtpengine was compared, and which binary, or why not.
    pub rtpengine: String,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
    /// Scenario against scenario.
    pub comparisons: Vec<Comparison>,
    /// The relay and rtpengine at the same rates.
    pub side_by_side: Vec<SideResult>,
    /// Webinars.
    pub webinars: Vec<WebinarResult>,
    /// Every budget met.
    pub pass: bool,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The knee-search scenarios' table and their checks.
fn scenario_tables(s: &mut String, run: &RunResult) {
    let _ = writeln!(
        s,
        "| scenario | system | knee egress pkt/s | ended by | limited by | blast pkt/s | added p50 @50% us | one hop p50 us | added p99.9 @50% us | added p99 @80% us | core @80% | CPU ns/pkt @80%: process / core | blast CPU ns/pkt |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for sc in &run.scenarios {
        let mut row = |name: &str, r: &SystemResult| {
            let knee = r.sweep.knee_point().map(|k| k.egress_pps);
            let limited = if r.sweep.not_reached {
                "not reached".to_owned()
            } else {
                r.sweep.limited_by.clone().unwrap_or_else(|| "-".into())
            };
            let a50 = r.at(0.5);
            let a80 = r.at(0.8);
            let core = a80.and_then(|l| l.measured.core);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} / {} | {:.0} |",
                sc.spec.name,
                name,
                opt(knee, 0),
                side::ended_by(&r.sweep),
                limited,
                sc.blast.pps,
                opt(a50.map(|l| l.added_us.p50), 0),
                opt(Some(sc.hop.hop_p50_us), 0),
                opt(a50.map(|l| l.added_us.p999), 0),
                opt(a80.map(|l| l.added_us.p99), 0),
                core_cell(core.as_ref()),
                opt(a80.and_then(|l| l.measured.cpu_ns_per_packet), 0),
                opt(core.and_then(|c| c.busy_ns_per_packet), 0),
                sc.blast.cpu_ns_per_packet
            );
        };
        row(&format!("relay ({})", sc.relay_backend), &sc.relay);
        if let Some(r) = &sc.rtpengine {
            row("rtpengine", r);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| scenario | budget | value | limit | |");
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    for sc in &run.scenarios {
        for c in &sc.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} {} | {} |",
                sc.spec.name,
                c.name,
                opt(c.value, 2),
                c.op,
                c.limit,
                if c.pass { "ok" } else { "**MISSED**" }
            );
        }
        if let Some(note) = &sc.rtpengine_note {
            let _ = writeln!(s, "| {} | rtpengine | {note} | | |", sc.spec.name);
        }
    }
}

/// The Markdown tables of the run and their checks.
pub fn table(run: &RunResult) -> String {
    let mut s = String::new();
    if !run.scenarios.is_empty() {
        scenario_tables(&mut s, run);
    }
    for sb in &run.side_by_side {
        side_table(&mut s, sb);
    }
    for w in &run.webinars {
        webinar_table(&mut s, w);
    }
    if !run.comparisons.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "| comparison | knee egress ratio | limit | |");
        let _ = writeln!(s, "|---|---:|---:|---|");
        for c in &run.comparisons {
            let k = &c.check;
            let (limit, verdict) = match c.compare.at_least {
                Some(l) => (format!(">= {l}"), if k.pass { "ok" } else { "**MISSED**" }),
                None => ("-".into(), "reported"),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {limit} | {verdict} |",
                k.name,
                opt(k.value, 2)
            );
        }
    }
    s
}

/// "busy% (process%, ksoftirqd%, softirq%, other%, run-queue wait%)" of a core.
fn core_cell(c: Option<&CoreUse>) -> String {
    c.map_or("-".into(), |c| {
        format!(
            "{:.0}% (proc {:.0}%, ksoftirqd {:.1}%, softirq {:.0}%, other {:.0}%, waited {:.1}%)",
            c.busy * 100.0,
            c.process * 100.0,
            c.ksoftirqd * 100.0,
            c.softirq * 100.0,
            c.other * 100.0,
            c.runqueue_wait * 100.0
        )
    })
}

fn checks_rows(s: &mut String, name: &str, checks: &[Check]) {
    for c in checks {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} {} | {} |",
            c.name,
            opt(c.value, 2),
            c.op,
            c.limit,
            if c.pass { "ok" } else { "**MISSED**" }
        );
    }
}

/// The side-by-side table: every rate with both systems' added latency, then the checks.
fn side_table(s: &mut String, sb: &SideResult) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{}: {} (relay {}, rtpengine alternating point by point)",
        sb.spec.name, sb.spec.about, sb.relay_backend
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| offered pkt/s | direct p50 / p99 us | relay added p50 / p99 us | relay | relay core | rtpengine added p50 / p99 us | rtpengine | rtpengine core |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---|---|---:|---|---|");
    let mut steps: Vec<_> = sb.steps.iter().collect();
    steps.sort_by(|a, b| a.requested_pps.total_cmp(&b.requested_pps));
    let cell = |p: Option<&Point>| -> (String, String, String) {
        match p {
            None => ("-".into(), "-".into(), "-".into()),
            Some(p) => (
                p.added_us
                    .map_or("-".into(), |a| format!("{:.0} / {:.0}", a.p50, a.p99)),
                match (p.ok, p.bound) {
                    (true, _) => "ok".into(),
                    (false, Some(b)) => format!("fail ({})", b.name()),
                    (false, None) => "fail".into(),
                },
                core_cell(p.core.as_ref()),
            ),
        }
    };
    for st in steps {
        let (ra, rv, rc) = cell(st.relay.as_ref());
        let (ea, ev, ec) = cell(st.rtpengine.as_ref());
        let _ = writeln!(
            s,
            "| {:.0} | {} / {} | {ra} | {rv} | {rc} | {ea} | {ev} | {ec} |",
            st.requested_pps, st.direct.latency_us.p50, st.direct.latency_us.p99
        );
    }
    let _ = writeln!(s);
    let knee = |w: Option<&Sweep>| {
        w.map_or("-".into(), |w| {
            format!(
                "{} pkt/s (ended by {})",
                opt(w.knee_point().map(|k| k.egress_pps), 0),
                side::ended_by(w)
            )
        })
    };
    let _ = writeln!(
        s,
        "latency-bounded knee: relay {}, rtpengine {}",
        knee(Some(&sb.relay)),
        knee(sb.rtpengine.as_ref())
    );
    if let Some(note) = &sb.rtpengine_note {
        let _ = writeln!(s, "rtpengine: {note}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| scenario | budget | value | limit | |");
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    checks_rows(s, &sb.spec.name, &sb.checks);
}

/// The webinar table: joins per burst, media, checks.
fn webinar_table(s: &mut String, w: &WebinarResult) {
    let r = &w.run;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{}: {} (relay {}): {} of {} listeners joined in {} bursts, join p50 {} ms, p99 {} ms; media p50 {} us, p99 {} us, loss {:.4}%, core {}",
        w.spec.name,
        w.spec.about,
        w.relay_backend,
        r.joined,
        r.listeners,
        r.bursts.len(),
        opt(r.join_ms.map(|j| j.p50), 2),
        opt(r.join_ms.map(|j| j.p99), 2),
        r.media.latency_us.p50,
        r.media.latency_us.p99,
        r.media.sampled_loss * 100.0,
        core_cell(r.media.core.as_ref())
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| burst at s | joins | span ms | p50 ms | p99 ms |");
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
    for b in &r.bursts {
        let _ = writeln!(
            s,
            "| {:.2} | {} | {:.1} | {:.2} | {:.2} |",
            b.at_s, b.joins, b.span_ms, b.latency_ms.p50, b.latency_ms.p99
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| scenario | budget | value | limit | |");
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    checks_rows(s, &w.spec.name, &w.checks);
}

/// Latency (p50 and p99, log scale) against egress for every system and scenario.
pub fn plot(run: &RunResult, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for sc in &run.scenarios {
        let mut systems = vec![("relay", &sc.relay)];
        if let Some(r) = &sc.rtpengine {
            systems.push(("rtpengine", r));
        }
        for (name, r) in systems {
            let mut pts: Vec<&Point> = r.sweep.steps.iter().collect();
            pts.extend(r.latency.iter().map(|l| &l.measured));
            pts.retain(|p| p.egress_pps > 0.0 && p.latency_us.p50 > 0);
            pts.sort_by(|a, b| a.egress_pps.total_cmp(&b.egress_pps));
            for (q, pick) in [("p50", 0), ("p99", 1)] {
                let line = pts
                    .iter()
                    .map(|p| {
                        let l = if pick == 0 {
                            p.latency_us.p50
                        } else {
                            p.latency_us.p99
                        };
                        (p.egress_pps / 1000.0, l as f64)
                    })
                    .collect();
                series.push((format!("{} {name} {q}", sc.spec.name), line));
            }
        }
    }
    for sb in &run.side_by_side {
        let mut systems: Vec<(&str, Vec<&Point>)> = vec![(
            "relay",
            sb.steps.iter().filter_map(|st| st.relay.as_ref()).collect(),
        )];
        if sb.rtpengine.is_some() {
            systems.push((
                "rtpengine",
                sb.steps
                    .iter()
                    .filter_map(|st| st.rtpengine.as_ref())
                    .collect(),
            ));
        }
        for (name, mut pts) in systems {
            pts.retain(|p| p.egress_pps > 0.0 && p.latency_us.p50 > 0);
            pts.sort_by(|a, b| a.egress_pps.total_cmp(&b.egress_pps));
            for (q, pick) in [("p50", 0), ("p99", 1)] {
                let line = pts
                    .iter()
                    .map(|p| {
                        let l = if pick == 0 {
                            p.latency_us.p50
                        } else {
                            p.latency_us.p99
                        };
                        (p.egress_pps / 1000.0, l as f64)
                    })
                    .collect();
                series.push((format!("{} {name} {q}", sb.spec.name), line));
            }
        }
    }
    let xmax = series
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(100.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("latency vs egress (loopback, one core)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax * 1.05, (1.0..ymax * 1.5).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("egress, thousand packets/s")
        .y_desc("one-way latency, us")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, line)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i / 2).to_rgba();
        let style = if i % 2 == 0 {
            color.stroke_width(2)
        } else {
            color.stroke_width(1)
        };
        chart
            .draw_series(LineSeries::new(line, style))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `YYYY-MM-DD` and `HH:MM:SSZ` of a Unix time (UTC).
pub fn utc(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (proleptic Gregorian), after H. Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0).0, "1970-01-01");
        assert_eq!(utc(951_782_400).0, "2000-02-29");
        assert_eq!(
            utc(1_700_000_000),
            ("2023-11-14".into(), "22:13:20Z".into())
        );
    }

    #[test]
    fn checks_compare_both_ways() {
        assert!(Check::new("a", Some(1.0), "<=", 1.0).pass);
        assert!(!Check::new("a", Some(1.1), "<=", 1.0).pass);
        assert!(Check::new("a", Some(0.9), ">=", 0.85).pass);
        assert!(!Check::new("a", None, ">=", 0.85).pass);
    }
}
