//! Measurements: one load point against the relay, rtpengine or the direct path, the knee
//! search, and the floors (raw kernel send rate).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use loadgen::blast::{BlastConfig, blast};
use loadgen::report::{Burst, JoinLatency, Latency};
use loadgen::scenario::{Addressing, Send, Target, Webinar};
use loadgen::{Report, Scenario};
use serde::Serialize;
use serde_json::json;

use super::core::{CoreUse, Sampler};
use super::procs::{self, Relay, Rtpengine};
use super::spec::{Media, ScenarioSpec, Search, Step, WebinarSpec};

/// One load point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// `relay`, `rtpengine` or `direct`.
    pub target: String,
    /// Load multiplier (of the scenario's rate or rooms).
    pub mult: f64,
    /// Rooms.
    pub rooms: u32,
    /// Packets per second the senders were asked to send (`step = "rate"`).
    pub requested_pps: Option<f64>,
    /// Packets per second the senders sent.
    pub offered_pps: f64,
    /// Datagrams per second the relay sent (its counter), or rtpengine's deliveries as loadgen
    /// received them.
    pub egress_pps: f64,
    /// Loss seen by the relay's counters: 1 - packets out / (sent × fan-out).
    pub relay_loss: Option<f64>,
    /// Loss seen by the receivers loadgen reads.
    pub sampled_loss: f64,
    /// Deliveries that must not have happened.
    pub misdelivered: u64,
    /// One-way latency at the receivers loadgen reads.
    pub latency_us: Latency,
    /// Its part until the copy was queued on the receiver's socket (kernel receive timestamp).
    pub delivery_us: Latency,
    /// Its part waiting in the receiver's socket for loadgen to read it.
    pub socket_wait_us: Latency,
    /// CPU ns of the process under test per datagram it sent.
    pub cpu_ns_per_packet: Option<f64>,
    /// Datagrams per receive batch of the relay's workers, on average (its counters).
    pub batch_mean: Option<f64>,
    /// Frames loadgen sent over 1 ms late (the generator falling behind).
    pub late_frames: u64,
    /// Kernel UDP receive-buffer drops during the point (sinks fill up by design).
    pub udp_rcvbuf_errors: u64,
    /// Kernel UDP datagrams sent during the point (relay and loadgen together).
    pub udp_out_datagrams: u64,
    /// The whole core under test over the send window (absent when nothing is pinned).
    pub core: Option<CoreUse>,
    /// Latency minus the direct path's at the same load, when the direct path was measured.
    pub added_us: Option<Added>,
    /// Under the loss limit and the latency bound, with no misdelivery, at the rate asked.
    pub ok: bool,
    /// Which bound it failed.
    pub bound: Option<Bound>,
    /// What failed, in words.
    pub limited_by: Option<String>,
    /// loadgen's errors, if any.
    pub errors: Vec<String>,
}

/// The bound a load point failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// Loss at or above the loss limit (the system's counters or the read receivers).
    Loss,
    /// Added p99 above the latency limit.
    Latency,
    /// loadgen could not offer the rate asked: the generator's limit, not the system's.
    Loadgen,
    /// A copy reached someone who must not get it.
    Misdelivery,
}

impl Bound {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Latency => "latency",
            Self::Loadgen => "loadgen",
            Self::Misdelivery => "misdelivery",
        }
    }
}

/// Added latency, µs (negative when noise puts the direct path above).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Added {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Added {
    /// `measured` minus `direct`.
    pub fn of(measured: &Point, direct: &Point) -> Self {
        let d = |a: u64, b: u64| a as f64 - b as f64;
        let (m, f) = (&measured.latency_us, &direct.latency_us);
        Self {
            p50: d(m.p50, f.p50),
            p99: d(m.p99, f.p99),
            p999: d(m.p999, f.p999),
        }
    }
}

/// The loadgen scenario of `spec` at `mult` against `target`.
pub fn loadgen_scenario(
    spec: &ScenarioSpec,
    mult: f64,
    seconds: f64,
    target: Target,
    control: &str,
) -> Scenario {
    let rooms = match spec.step {
        Step::Rate => spec.rooms,
        Step::Rooms => ((f64::from(spec.rooms) * mult).round() as u32).max(1),
    };
    // Against rtpengine there are no sinks: loadgen plays every receiver. WebRTC sinks need
    // a DTLS handshake each: loadgen plays them and never reads them.
    let webrtc = spec.webrtc && target == Target::Relay;
    let played = if target == Target::Rtpengine || webrtc {
        spec.size
    } else {
        spec.played()
    };
    let profile = match spec.media {
        Media::Audio => Send::Audio,
        Media::Video => Send::Video,
    };
    let mut s = Scenario::uniform(rooms, played, profile);
    // loadgen rounds the share up: just under `senders` of `played`.
    s.room[0].senders = (f64::from(spec.senders) - 0.5) / f64::from(played);
    if let Some(fps) = spec.video_fps {
        s.room[0].video_fps = fps;
    }
    if let Some(b) = spec.video_bitrate {
        s.room[0].video_bitrate = b;
    }
    s.room[0].audio_len = spec.audio_len.map(|l| [l, l]);
    s.target = target;
    s.control = control.to_owned();
    s.addressing = Addressing::Fixed;
    s.duration = seconds;
    s.drain_ms = 300;
    s.threads = 1;
    s.spin = spec.loadgen_spin;
    if webrtc {
        s.webrtc = true;
        s.unread = spec.sinks;
    }
    s.rate = match spec.step {
        Step::Rate => spec.rate.map(|r| r * mult),
        Step::Rooms => None,
    };
    s
}

fn loss(lost: u64, expected: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        lost as f64 / expected as f64
    }
}

fn base_point(target: &str, lg: &Scenario, mult: f64, r: &Report) -> Point {
    Point {
        target: target.to_owned(),
        mult,
        rooms: lg.rooms,
        requested_pps: lg.rate,
        offered_pps: r.offered_pps,
        egress_pps: r.received_pps,
        relay_loss: None,
        sampled_loss: loss(r.lost, r.expected),
        misdelivered: r.misdelivered,
        latency_us: r.latency_us,
        delivery_us: r.delivery_us,
        socket_wait_us: r.socket_wait_us,
        cpu_ns_per_packet: None,
        batch_mean: None,
        late_frames: r.late_frames,
        udp_rcvbuf_errors: 0,
        udp_out_datagrams: 0,
        core: None,
        added_us: None,
        ok: false,
        bound: None,
        limited_by: None,
        errors: r.errors.clone(),
    }
}

/// A step whose senders offered less than this share of the rate asked for measured loadgen,
/// not the system under test.
const OFFERED_SHARE: f64 = 0.95;

fn judge(p: &mut Point, limit: f64) {
    let relay_bad = p.relay_loss.is_some_and(|l| l >= limit);
    let sampled_bad = p.sampled_loss >= limit;
    let short = p
        .requested_pps
        .filter(|&r| p.offered_pps < r * OFFERED_SHARE);
    p.ok = !relay_bad && !sampled_bad && p.misdelivered == 0 && short.is_none();
    p.bound = if p.ok {
        None
    } else if p.misdelivered > 0 {
        Some(Bound::Misdelivery)
    } else if relay_bad || sampled_bad {
        Some(Bound::Loss)
    } else {
        Some(Bound::Loadgen)
    };
    p.limited_by = if p.misdelivered > 0 {
        Some("misdelivery".into())
    } else if relay_bad {
        Some(format!("{} (its own counters)", p.target))
    } else if let Some(r) = short {
        Some(format!(
            "loadgen (offered {:.0} of {r:.0} pkt/s asked)",
            p.offered_pps
        ))
    } else if sampled_bad && p.relay_loss.is_some() {
        // The relay sent every copy: the read receivers (loadgen or their sockets) lost them.
        Some("read receivers (loadgen)".into())
    } else if sampled_bad {
        Some(format!("{} or read receivers", p.target))
    } else {
        None
    };
}

/// Records `p`'s latency added over `direct` (the direct path at the same load) and fails a
/// point that passed everything else when its added p99 is above `limit_us`.
pub fn latency_bound(p: &mut Point, direct: &Point, limit_us: f64) {
    let added = Added::of(p, direct);
    p.added_us = Some(added);
    if p.ok && added.p99 > limit_us {
        p.ok = false;
        // With kernel receive timestamps, copies that reached the receivers' sockets within the
        // bound and then waited there for loadgen measure the generator's reading (its core
        // contended), not the system under test: the point still fails, named for loadgen.
        let delivered = p.delivery_us.p99 as f64 - direct.delivery_us.p99 as f64;
        if p.delivery_us.p99 > 0 && delivered <= limit_us {
            p.bound = Some(Bound::Loadgen);
            p.limited_by = Some(format!(
                "loadgen reading (added p99 {:.0} us > {limit_us:.0} us, but delivered to the \
                 receivers' sockets with p99 {} us and waited there up to p99 {} us)",
                added.p99, p.delivery_us.p99, p.socket_wait_us.p99
            ));
            return;
        }
        p.bound = Some(Bound::Latency);
        p.limited_by = Some(format!(
            "{} latency (added p99 {:.0} us > {limit_us:.0} us)",
            p.target, added.p99
        ));
    }
}

/// A knee-search step: `point`, then, if it passed the loss bounds, the direct path at the same
/// load and the latency bound.
pub fn bounded(
    spec: &ScenarioSpec,
    search: &Search,
    mult: f64,
    point: impl FnOnce() -> Result<Point>,
) -> Result<Point> {
    let mut p = point()?;
    if p.ok {
        let direct = direct_point(spec, mult, search.step_seconds, search.loss_limit)?;
        latency_bound(&mut p, &direct, search.p99_added_limit_us);
    }
    Ok(p)
}

/// Starts sampling the core under test (when pinned) for the process `pid`.
fn sample(core: Option<usize>, pid: u32) -> Option<Sampler> {
    let core = core?;
    match Sampler::start(core, pid) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("budget: no per-core CPU: {e:#}");
            None
        }
    }
}

/// Kernel counters around a point.
struct Udp(std::collections::BTreeMap<String, u64>);

impl Udp {
    fn now() -> Self {
        Self(procs::udp_counters())
    }
    fn delta(&self, later: &Self, key: &str) -> u64 {
        later
            .0
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.0.get(key).copied().unwrap_or(0))
    }
}

/// One point against the relay: sinks registered by fixed address, loadgen plays the rest.
pub fn relay_point(
    relay: &mut Relay,
    spec: &ScenarioSpec,
    mult: f64,
    seconds: f64,
    limit: f64,
) -> Result<Point> {
    let control = relay.control.to_string();
    let lg = loadgen_scenario(spec, mult, seconds, Target::Relay, &control);
    let api = loadgen::api::Api::new(&control, None);
    let room = |r: u32| format!("lg-r{r}");
    let mut sinks: Vec<UdpSocket> = Vec::new();
    // loadgen plays WebRTC sinks itself (`loadgen_scenario`).
    let sinks_here = if lg.webrtc { 0 } else { spec.sinks };
    for r in 0..lg.rooms {
        api.put_room(&room(r))?;
        for k in 0..sinks_here {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            let body = json!({"address": s.local_addr()?.to_string(), "subscribe": "all"});
            api.put_participant(&room(r), &format!("sink{k}"), &body)
                .context("adding a sink")?;
            sinks.push(s);
        }
    }
    let cpu0 = procs::cpu_ns(relay.proc.pid())?;
    let m0 = procs::metrics(relay.control)?;
    let u0 = Udp::now();
    let sampler = sample(relay.core, relay.proc.pid());
    let report = loadgen::run(&lg);
    let u1 = Udp::now();
    let m1 = procs::metrics(relay.control)?;
    let cpu1 = procs::cpu_ns(relay.proc.pid())?;
    for r in 0..lg.rooms {
        // loadgen closes the rooms it made; this is for runs that failed half-way.
        let _ = api.delete_room(&room(r));
    }
    drop(sinks);
    relay.proc.check_alive()?;
    let report = report?;
    let counter = |k: &str| m1.get(k).unwrap_or(&0.0) - m0.get(k).unwrap_or(&0.0);
    let out = counter("relay_packets_out_total");
    let mut p = base_point("relay", &lg, mult, &report);
    p.egress_pps = out / report.duration_s.max(1e-9);
    let expected = report.sent as f64 * f64::from(spec.fanout());
    p.relay_loss = Some(if expected > 0.0 {
        (1.0 - out / expected).max(0.0)
    } else {
        0.0
    });
    p.cpu_ns_per_packet = (out > 0.0).then(|| (cpu1 - cpu0) as f64 / out);
    let batches = counter("relay_batches_total");
    p.batch_mean = (batches > 0.0).then(|| counter("relay_packets_in_total") / batches);
    p.core = sampler.and_then(|s| s.finish(report.send_window, p.egress_pps));
    p.udp_rcvbuf_errors = u0.delta(&u1, "RcvbufErrors");
    p.udp_out_datagrams = u0.delta(&u1, "OutDatagrams");
    judge(&mut p, limit);
    Ok(p)
}

/// One point on the direct path (no relay): the latency floor.
pub fn direct_point(spec: &ScenarioSpec, mult: f64, seconds: f64, limit: f64) -> Result<Point> {
    let lg = loadgen_scenario(spec, mult, seconds, Target::Direct, "127.0.0.1:9");
    let report = loadgen::run(&lg)?;
    let mut p = base_point("direct", &lg, mult, &report);
    judge(&mut p, limit);
    Ok(p)
}

/// One point against rtpengine: loadgen plays every receiver (no sinks), fresh calls each time.
pub fn rtpengine_point(
    engine: &mut Rtpengine,
    spec: &ScenarioSpec,
    mult: f64,
    seconds: f64,
    limit: f64,
) -> Result<Point> {
    let lg = loadgen_scenario(
        spec,
        mult,
        seconds,
        Target::Rtpengine,
        &engine.ng.to_string(),
    );
    let cpu0 = procs::cpu_ns(engine.proc.pid())?;
    let u0 = Udp::now();
    let sampler = sample(engine.core, engine.proc.pid());
    let report = loadgen::run(&lg);
    let u1 = Udp::now();
    let cpu1 = procs::cpu_ns(engine.proc.pid())?;
    engine.proc.check_alive()?;
    let report = report?;
    let mut p = base_point("rtpengine", &lg, mult, &report);
    p.cpu_ns_per_packet =
        (report.received > 0).then(|| (cpu1 - cpu0) as f64 / report.received as f64);
    p.core = sampler.and_then(|s| s.finish(report.send_window, p.egress_pps));
    p.udp_rcvbuf_errors = u0.delta(&u1, "RcvbufErrors");
    p.udp_out_datagrams = u0.delta(&u1, "OutDatagrams");
    judge(&mut p, limit);
    Ok(p)
}

/// A webinar against the relay: the media as a load point (loss and latency at the listeners
/// loadgen reads, the core's CPU), and the joins.
#[derive(Debug, Clone, Serialize)]
pub struct WebinarPoint {
    /// Listeners asked to join.
    pub listeners: u32,
    /// Listeners that joined before the end of the run.
    pub joined: u64,
    /// Join calls that failed.
    pub failed: u64,
    /// Duration of all join calls.
    pub join_ms: Option<JoinLatency>,
    /// Each burst.
    pub bursts: Vec<Burst>,
    /// The media, from the publisher to the read listeners.
    pub media: Point,
}

impl WebinarPoint {
    /// p50 of the last burst's joins over the first burst's.
    pub fn join_growth(&self) -> Option<f64> {
        let first = self.bursts.first()?.latency_ms.p50;
        let last = self.bursts.last()?.latency_ms.p50;
        (self.bursts.len() > 1 && first > 0.0).then(|| last / first)
    }
}

/// Runs a webinar of `listeners` for `seconds` against the relay.
pub fn webinar_point(
    relay: &mut Relay,
    spec: &WebinarSpec,
    listeners: u32,
    seconds: f64,
    limit: f64,
) -> Result<WebinarPoint> {
    let control = relay.control.to_string();
    let mut lg = Scenario::uniform(1, 1, Send::Mixed);
    lg.room[0].video_fps = spec.video_fps;
    lg.room[0].video_bitrate = spec.video_bitrate;
    lg.webinar = Some(Webinar {
        listeners,
        join_rate: spec.join_rate,
        burst: spec.burst,
        connections: spec.connections,
        read: spec.read,
        ..Webinar::default()
    });
    lg.control = control;
    lg.addressing = Addressing::Fixed;
    lg.duration = seconds;
    lg.drain_ms = 300;
    lg.threads = 1;
    let m0 = procs::metrics(relay.control)?;
    let sampler = sample(relay.core, relay.proc.pid());
    let report = loadgen::run(&lg);
    let m1 = procs::metrics(relay.control)?;
    relay.proc.check_alive()?;
    let report = report?;
    let out = m1.get("relay_packets_out_total").unwrap_or(&0.0)
        - m0.get("relay_packets_out_total").unwrap_or(&0.0);
    let mut media = base_point("relay", &lg, 1.0, &report);
    media.egress_pps = out / report.duration_s.max(1e-9);
    media.core = sampler.and_then(|s| s.finish(report.send_window, media.egress_pps));
    judge(&mut media, limit);
    let c = &report.control;
    Ok(WebinarPoint {
        listeners,
        joined: c.joins,
        failed: c.failed,
        join_ms: c.join_ms,
        bursts: c.join_bursts.clone(),
        media,
    })
}

/// A knee search.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// Every step, in the order run.
    pub steps: Vec<Point>,
    /// Index in `steps` of the highest-egress step that passed.
    pub knee: Option<usize>,
    /// The search stopped at `max_steps` without a failing step: the knee is higher.
    pub not_reached: bool,
    /// What failed at the first failing step.
    pub limited_by: Option<String>,
    /// The bound that ended the search (absent: not reached).
    pub bound: Option<Bound>,
}

impl Sweep {
    /// The knee step.
    pub fn knee_point(&self) -> Option<&Point> {
        self.knee.map(|i| &self.steps[i])
    }
}

/// Steps the load geometrically until a step fails, then narrows the gap between the last pass
/// and the first failure `refine_steps` times.
pub fn find_knee(search: &Search, mut at: impl FnMut(f64) -> Result<Point>) -> Result<Sweep> {
    let mut sweep = Sweep {
        steps: Vec::new(),
        knee: None,
        not_reached: true,
        limited_by: None,
        bound: None,
    };
    let mut mult = 1.0;
    let mut pass: Option<f64> = None;
    for _ in 0..search.max_steps {
        let p = at(mult)?;
        eprintln!("    x{mult:<7.2} {}", line(&p));
        let ok = p.ok;
        let (failure, bound) = (p.limited_by.clone(), p.bound);
        sweep.steps.push(p);
        if ok {
            sweep.knee = Some(sweep.steps.len() - 1);
            pass = Some(mult);
            mult *= search.step_factor;
        } else {
            sweep.not_reached = false;
            sweep.limited_by = failure;
            sweep.bound = bound;
            break;
        }
    }
    if let (Some(mut lo), false) = (pass, sweep.not_reached) {
        let mut hi = mult;
        for _ in 0..search.refine_steps {
            let mid = (lo * hi).sqrt();
            let p = at(mid)?;
            eprintln!("    x{mid:<7.2} {}", line(&p));
            let ok = p.ok;
            sweep.steps.push(p);
            if ok {
                sweep.knee = Some(sweep.steps.len() - 1);
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(sweep)
}

/// One line about a point, for progress output.
pub fn line(p: &Point) -> String {
    format!(
        "{:<9} offered {:>9.0}/s egress {:>9.0}/s loss relay {:>7} read {:>7.4}% p50 {:>6} p99 {:>6} p99.9 {:>6} us{} (to socket p50 {} p99 {}, in it p99 {}) cpu {:>7}{} {}",
        p.target,
        p.offered_pps,
        p.egress_pps,
        p.relay_loss
            .map_or("-".into(), |l| format!("{:.4}%", l * 100.0)),
        p.sampled_loss * 100.0,
        p.latency_us.p50,
        p.latency_us.p99,
        p.latency_us.p999,
        p.added_us
            .map_or(String::new(), |a| format!(" (added p99 {:.0})", a.p99)),
        p.delivery_us.p50,
        p.delivery_us.p99,
        p.socket_wait_us.p99,
        p.cpu_ns_per_packet
            .map_or("-".into(), |c| format!("{c:.0}ns")),
        p.core.map_or(String::new(), |c| format!(
            " core {:.0}% (process {:.0}%, ksoftirqd {:.1}%, softirq {:.0}%, other {:.0}%; run-queue wait {:.1}%, {:.0} sleeps/s, {:.0} preempted/s) {:.0}ns/pkt{}",
            c.busy * 100.0,
            c.process * 100.0,
            c.ksoftirqd * 100.0,
            c.softirq * 100.0,
            c.other * 100.0,
            c.runqueue_wait * 100.0,
            c.sleeps_per_s,
            c.preempted_per_s,
            c.busy_ns_per_packet.unwrap_or(0.0),
            p.batch_mean.map_or(String::new(), |b| format!(" batch {b:.1}"))
        )),
        match (p.ok, p.bound) {
            (true, _) => "ok".to_owned(),
            (false, Some(b)) => format!("FAIL ({})", b.name()),
            (false, None) => "FAIL".to_owned(),
        }
    )
}

/// One loopback hop: half the round trip of a ping to an echo thread on the other core, both
/// blocking (what a datagram costs to cross the machine once, wake-up of the reader included).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HopFloor {
    /// Round trips measured.
    pub pings: u32,
    /// Median round trip, µs.
    pub rtt_p50_us: f64,
    /// Median one-way hop (half the round trip), µs.
    pub hop_p50_us: f64,
}

/// Measures [`HopFloor`]: `pings` round trips of 200 B, the echo pinned to `echo_core`.
pub fn hop_floor(pings: u32, echo_core: Option<usize>) -> Result<HopFloor> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    let echo_addr = echo.local_addr()?;
    echo.set_read_timeout(Some(Duration::from_secs(1)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let handle = std::thread::spawn(move || -> Result<()> {
        if let Some(c) = echo_core {
            procs::pin_current_thread(c)?;
        }
        let mut buf = [0u8; 2048];
        // Ends on the client's empty datagram, or on a second without one.
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            echo.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let mut rtts = Vec::with_capacity(pings as usize);
    let packet = [0x80u8; 200];
    let mut buf = [0u8; 2048];
    for _ in 0..pings {
        let t0 = Instant::now();
        client.send_to(&packet, echo_addr)?;
        if client.recv(&mut buf).is_ok() {
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        // Let both sides go idle, as a paced stream would.
        std::thread::sleep(Duration::from_micros(200));
    }
    client.send_to(&[], echo_addr)?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    anyhow::ensure!(rtts.len() * 2 > pings as usize, "echo lost most pings");
    rtts.sort_by(f64::total_cmp);
    let p50 = rtts[rtts.len() / 2];
    Ok(HopFloor {
        pings,
        rtt_p50_us: p50,
        hop_p50_us: p50 / 2.0,
    })
}

/// The raw kernel send rate: loadgen's blaster, pinned to `core`, to `sinks` unread sockets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BlastFloor {
    /// Destinations.
    pub sinks: u32,
    /// Datagram length.
    pub len: usize,
    /// Datagrams per second sent.
    pub pps: f64,
    /// CPU ns of the sending thread per datagram.
    pub cpu_ns_per_packet: f64,
}

/// Measures the blaster for `seconds`.
pub fn blast_floor(
    sinks: u32,
    len: usize,
    seconds: f64,
    core: Option<usize>,
) -> Result<BlastFloor> {
    let sockets: Vec<UdpSocket> = (0..sinks.max(1))
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<_, _>>()?;
    let cfg = BlastConfig {
        sinks: addrs,
        rate_pps: None,
        duration: Duration::from_secs_f64(seconds),
        len,
        ..BlastConfig::default()
    };
    let handle = std::thread::spawn(move || -> Result<(loadgen::blast::BlastReport, u64)> {
        if let Some(c) = core {
            procs::pin_current_thread(c)?;
        }
        let t0 = procs::thread_cpu_ns();
        let r = blast(&cfg, Instant::now())?;
        Ok((r, procs::thread_cpu_ns() - t0))
    });
    let (r, cpu) = handle
        .join()
        .map_err(|_| anyhow::anyhow!("blast thread panicked"))??;
    drop(sockets);
    Ok(BlastFloor {
        sinks,
        len,
        pps: r.pps,
        cpu_ns_per_packet: cpu as f64 / r.sent.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(mult: f64, requested: Option<f64>, offered: f64, relay_loss: f64) -> Point {
        let mut p = Point {
            target: "relay".into(),
            mult,
            rooms: 1,
            requested_pps: requested,
            offered_pps: offered,
            egress_pps: offered,
            relay_loss: Some(relay_loss),
            sampled_loss: 0.0,
            misdelivered: 0,
            latency_us: Latency::default(),
            delivery_us: Latency::default(),
            socket_wait_us: Latency::default(),
            cpu_ns_per_packet: None,
            batch_mean: None,
            late_frames: 0,
            udp_rcvbuf_errors: 0,
            udp_out_datagrams: 0,
            core: None,
            added_us: None,
            ok: false,
            bound: None,
            limited_by: None,
            errors: Vec::new(),
        };
        judge(&mut p, 0.001);
        p
    }

    #[test]
    fn a_generator_that_falls_short_ends_the_search() {
        let p = point(1.0, Some(1000.0), 900.0, 0.0);
        assert!(!p.ok);
        assert!(p.limited_by.unwrap().starts_with("loadgen"));
        assert!(point(1.0, Some(1000.0), 990.0, 0.0).ok);
        let lost = point(1.0, Some(1000.0), 900.0, 0.01);
        assert_eq!(lost.limited_by.as_deref(), Some("relay (its own counters)"));
    }

    #[test]
    fn the_latency_bound_fails_a_lossless_point() {
        let mut direct = point(1.0, None, 100.0, 0.0);
        direct.latency_us.p99 = 200;
        let mut p = point(1.0, None, 100.0, 0.0);
        p.latency_us.p99 = 1_100;
        latency_bound(&mut p, &direct, 1000.0);
        assert!(p.ok, "900 us added is within 1000");
        p.latency_us.p99 = 1_300;
        latency_bound(&mut p, &direct, 1000.0);
        assert!(!p.ok);
        assert_eq!(p.bound, Some(Bound::Latency));
        assert_eq!(p.added_us.unwrap().p99, 1_100.0);
        // Delivered in time but read late: the generator's bound.
        let mut late_read = point(1.0, None, 100.0, 0.0);
        late_read.latency_us.p99 = 4_000;
        late_read.delivery_us.p99 = 300;
        late_read.socket_wait_us.p99 = 3_800;
        latency_bound(&mut late_read, &direct, 1000.0);
        assert!(!late_read.ok);
        assert_eq!(late_read.bound, Some(Bound::Loadgen));
        late_read.ok = true;
        late_read.delivery_us.p99 = 1_500;
        latency_bound(&mut late_read, &direct, 1000.0);
        assert_eq!(late_read.bound, Some(Bound::Latency));
        // A point that lost packets keeps the loss as its bound.
        let mut lossy = point(1.0, None, 100.0, 0.5);
        lossy.latency_us.p99 = 5_000;
        latency_bound(&mut lossy, &direct, 1000.0);
        assert_eq!(lossy.bound, Some(Bound::Loss));
    }

    #[test]
    fn the_knee_is_narrowed_between_pass_and_failure() {
        let search = Search {
            step_seconds: 1.0,
            step_factor: 2.0,
            max_steps: 10,
            loss_limit: 0.001,
            smoke_seconds: 1.0,
            refine_steps: 2,
            p99_added_limit_us: 1000.0,
        };
        // Passes below x5: steps x1 x2 x4 pass, x8 fails, then x5.66 fails, x4.76 passes.
        let sweep = find_knee(&search, |m| {
            Ok(point(m, None, m * 100.0, if m < 5.0 { 0.0 } else { 0.5 }))
        })
        .unwrap();
        let mults: Vec<f64> = sweep.steps.iter().map(|p| p.mult).collect();
        assert_eq!(mults.len(), 6);
        let knee = sweep.knee_point().unwrap().mult;
        assert!((knee - 32f64.sqrt().sqrt() * 2.0).abs() < 1e-9, "{mults:?}");
        assert!(!sweep.not_reached);
        assert_eq!(sweep.bound, Some(Bound::Loss));
    }
}
