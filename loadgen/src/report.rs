//! The result of a run: JSON (`--json`) and a plain table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::Tally;

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `relay`, `rtpengine` or `direct`.
    pub target: String,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Rooms (or calls).
    pub rooms: u64,
    /// Participants (one socket each).
    pub participants: u64,
    /// Relays the participants were spread over (1 unless multi-relay; `cross_relay_*` in the
    /// tallies count what went from one to another).
    pub relays: u32,
    /// Media streams.
    pub streams: u64,
    /// Packets the clients sent.
    pub sent: u64,
    /// Copies the clients received.
    pub received: u64,
    /// Deliveries that surely should have happened.
    pub expected: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Copies of a packet the receiver already had.
    pub duplicates: u64,
    /// Deliveries that must not have happened.
    pub misdelivered: u64,
    /// Packets that arrived after a later one of the same stream.
    pub reordered: u64,
    /// Multi-relay runs: expected deliveries from a sender on one relay to a receiver on
    /// another (in `expected` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub cross_relay_expected: u64,
    /// Those of them that never arrived (in `lost` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub cross_relay_lost: u64,
    /// One-way latency.
    pub latency_us: Latency,
    /// The part of it until the copy was queued on the receiver's socket (the kernel's
    /// receive timestamp): the relay's share and the network's, without the wait below.
    pub delivery_us: Latency,
    /// The rest: how long copies waited in the receiver's socket until loadgen read them
    /// (loadgen's own delay; large when loadgen itself is the bottleneck).
    pub socket_wait_us: Latency,
    /// RFC 3550 interarrival jitter over the (stream, receiver) pairs.
    pub jitter_us: Jitter,
    /// Packets per second the clients sent.
    pub offered_pps: f64,
    /// Copies per second the clients received.
    pub received_pps: f64,
    /// Per media kind: audio, video, screen.
    pub per_profile: BTreeMap<String, ProfileReport>,
    /// Datagrams written to sockets (on the direct path, one per receiver).
    pub datagrams_out: u64,
    /// Send calls the kernel refused.
    pub send_errors: u64,
    /// Frames sent more than 1 ms late: the generator itself could not keep up.
    pub late_frames: u64,
    /// Received datagrams that were not our RTP.
    pub other: u64,
    /// WebRTC legs: packets that did not seal with SRTP, or received ones that did not open.
    pub srtp_errors: u64,
    /// Control-plane activity.
    pub control: Control,
    /// Errors that did not stop the run.
    pub errors: Vec<String>,
    /// When sending started and was due to end (not in the JSON: for a caller that samples
    /// the system under test over the same window).
    #[serde(skip)]
    pub send_window: Option<(Instant, Instant)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram in µs.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Jitter summary, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Jitter {
    /// Mean of the final estimates.
    pub mean: f64,
    /// Largest final estimate.
    pub max: f64,
}

/// One media kind's share of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProfileReport {
    /// Counts.
    #[serde(flatten)]
    pub tally: Tally,
    /// One-way latency.
    pub latency_us: Latency,
}

/// What the control plane did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Control {
    /// API (or ng) calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Participants that joined after the start.
    pub joins: u64,
    /// Participants that left during the run.
    pub leaves: u64,
    /// Rules added.
    pub rules_added: u64,
    /// Rules lifted.
    pub rules_lifted: u64,
    /// Slowest call, ms.
    pub slowest_call_ms: f64,
    /// Duration of the joins made in bursts (webinar), over all bursts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_ms: Option<JoinLatency>,
    /// Each burst of joins (webinar), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub join_bursts: Vec<Burst>,
}

/// Percentiles of the duration of join calls, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JoinLatency {
    /// Calls timed.
    pub calls: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

impl JoinLatency {
    /// Percentiles (nearest rank) of call durations given in µs; None for no calls.
    pub fn of(us: &mut [u64]) -> Option<Self> {
        if us.is_empty() {
            return None;
        }
        us.sort_unstable();
        let rank = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
        let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
        Some(Self {
            calls: us.len() as u64,
            p50: ms(rank(0.5)),
            p99: ms(rank(0.99)),
            max: ms(us[us.len() - 1]),
        })
    }
}

/// One burst of joins.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Burst {
    /// When it started, s after sending started.
    pub at_s: f64,
    /// Joins that succeeded.
    pub joins: u64,
    /// Joins that failed.
    pub failed: u64,
    /// From its first call to the return of its last, ms.
    pub span_ms: f64,
    /// Duration of its calls.
    pub latency_ms: JoinLatency,
}

impl Report {
    /// Fills the totals from per-kind tallies and latency histograms.
    pub(crate) fn fill(&mut self, tallies: &[Tally; 3], latency: &[Histogram<u64>; 3]) {
        let mut all = Tally::default();
        let mut hist = latency[0].clone();
        for (i, kind) in crate::profile::Kind::ALL.iter().enumerate() {
            all.add(&tallies[i]);
            if i > 0 {
                let _ = hist.add(&latency[i]);
            }
            if tallies[i].sent > 0 || tallies[i].received > 0 {
                self.per_profile.insert(
                    kind.name().to_owned(),
                    ProfileReport {
                        tally: tallies[i],
                        latency_us: Latency::of(&latency[i]),
                    },
                );
            }
        }
        self.sent = all.sent;
        self.received = all.received;
        self.expected = all.expected;
        self.lost = all.lost;
        self.duplicates = all.duplicates;
        self.misdelivered = all.misdelivered;
        self.reordered = all.reordered;
        self.cross_relay_expected = all.cross_relay_expected;
        self.cross_relay_lost = all.cross_relay_lost;
        self.jitter_us = Jitter {
            mean: round1(all.jitter_mean_us),
            max: round1(all.jitter_max_us),
        };
        self.latency_us = Latency::of(&hist);
        if self.duration_s > 0.0 {
            self.offered_pps = (self.sent as f64 / self.duration_s).round();
            self.received_pps = (self.received as f64 / self.duration_s).round();
        }
    }

    /// A plain-text summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {}: {} rooms, {} participants, {} streams, {:.1} s",
            self.target, self.rooms, self.participants, self.streams, self.duration_s
        );
        let _ = writeln!(
            s,
            "{:<8} {:>11} {:>11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
            "media",
            "sent",
            "received",
            "lost",
            "dup",
            "misdeliv",
            "reorder",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "max us",
            "jitter"
        );
        let row = |s: &mut String, name: &str, t: &Tally, l: &Latency| {
            let _ = writeln!(
                s,
                "{:<8} {:>11} {:>11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8.1}",
                name,
                t.sent,
                t.received,
                t.lost,
                t.duplicates,
                t.misdelivered,
                t.reordered,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                t.jitter_mean_us
            );
        };
        for (name, p) in &self.per_profile {
            row(&mut s, name, &p.tally, &p.latency_us);
        }
        let all = Tally {
            sent: self.sent,
            received: self.received,
            lost: self.lost,
            duplicates: self.duplicates,
            misdelivered: self.misdelivered,
            reordered: self.reordered,
            jitter_mean_us: self.jitter_us.mean,
            ..Tally::default()
        };
        row(&mut s, "all", &all, &self.latency_us);
        let loss = if self.expected > 0 {
            100.0 * self.lost as f64 / self.expected as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "offered {:.0} pkt/s, received {:.0} pkt/s, loss {:.3}% of {} expected deliveries",
            self.offered_pps, self.received_pps, loss, self.expected
        );
        if self.relays > 1 {
            let _ = writeln!(
                s,
                "across {} relays: {} expected deliveries between relays, {} lost",
                self.relays, self.cross_relay_expected, self.cross_relay_lost
            );
        }
        let (d, w) = (&self.delivery_us, &self.socket_wait_us);
        if d.max > 0 {
            let _ = writeln!(
                s,
                "latency split: to the receiver's socket p50 {} p99 {} us, waiting there p50 {} p99 {} us",
                d.p50, d.p99, w.p50, w.p99
            );
        }
        let c = &self.control;
        if c.calls > 0 {
            let _ = writeln!(
                s,
                "control: {} calls ({} failed, slowest {:.1} ms), {} joins, {} leaves, {} rules added, {} lifted",
                c.calls,
                c.failed,
                c.slowest_call_ms,
                c.joins,
                c.leaves,
                c.rules_added,
                c.rules_lifted
            );
        }
        if let Some(j) = &c.join_ms {
            let _ = writeln!(
                s,
                "joins in {} bursts: {} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                c.join_bursts.len(),
                j.calls,
                j.p50,
                j.p99,
                j.max
            );
            for b in &c.join_bursts {
                let _ = writeln!(
                    s,
                    "  burst at {:>6.2} s: {:>5} joins ({} failed) in {:>8.1} ms, p50 {:.2} ms, p99 {:.2} ms",
                    b.at_s, b.joins, b.failed, b.span_ms, b.latency_ms.p50, b.latency_ms.p99
                );
            }
        }
        if self.late_frames > 0 || self.send_errors > 0 || self.other > 0 || self.srtp_errors > 0 {
            let _ = writeln!(
                s,
                "generator: {} late frames, {} send errors, {} non-RTP datagrams, {} SRTP errors",
                self.late_frames, self.send_errors, self.other, self.srtp_errors
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
