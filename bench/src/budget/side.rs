//! The relay and rtpengine side by side: the same offered rates for both, one after the other
//! at every rate (the host's speed drifts over minutes, so two whole sweeps one after the other
//! would compare two different hosts), each knee bounded by loss and by added p99, and the
//! issue-12 checks on the result.

use anyhow::Result;
use serde::Serialize;

use super::measure::{self, Point, Sweep};
use super::output::{Check, LoadPoint};
use super::procs::{Relay, Rtpengine};
use super::spec::{Search, SideBySide};

/// One offered rate: the direct path, and each system that ran there.
#[derive(Debug, Clone, Serialize)]
pub struct RateStep {
    /// Packets per second asked of loadgen.
    pub requested_pps: f64,
    /// The direct path (no relay) at this rate.
    pub direct: Point,
    /// The relay, with its added latency.
    pub relay: Option<Point>,
    /// rtpengine, with its added latency.
    pub rtpengine: Option<Point>,
}

/// The whole side-by-side run.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// As configured.
    pub spec: SideBySide,
    /// The relay's backend.
    pub relay_backend: String,
    /// Every rate, in the order run.
    pub steps: Vec<RateStep>,
    /// The relay's search (its points in the order run).
    pub relay: Sweep,
    /// rtpengine's search, when it ran.
    pub rtpengine: Option<Sweep>,
    /// The relay at 80% of its latency-bounded knee, with the direct path there.
    pub relay_at_80: Option<LoadPoint>,
    /// rtpengine at 80% of its own knee.
    pub rtpengine_at_80: Option<LoadPoint>,
    /// Why rtpengine did not run, when it did not.
    pub rtpengine_note: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

/// One system's search over shared rates: a pass is a knee candidate below the lowest failure.
#[derive(Default)]
struct Track {
    points: Vec<Point>,
    /// Highest passing multiplier below `hi`.
    lo: Option<f64>,
    /// Lowest failing multiplier.
    hi: Option<f64>,
}

impl Track {
    fn searching(&self) -> bool {
        self.hi.is_none()
    }

    fn add(&mut self, p: Point) {
        let m = p.mult;
        if p.ok {
            if self.hi.is_none_or(|hi| m < hi) {
                self.lo = Some(self.lo.map_or(m, |lo| lo.max(m)));
            }
        } else if self.hi.is_none_or(|hi| m < hi) {
            self.hi = Some(m);
            // A pass above a lower failure no longer counts.
            self.lo = self
                .points
                .iter()
                .filter(|q| q.ok && q.mult < m)
                .map(|q| q.mult)
                .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        }
        self.points.push(p);
    }

    /// The next refining multiplier, halving the gap geometrically.
    fn mid(&self) -> Option<f64> {
        Some((self.lo? * self.hi?).sqrt())
    }

    fn sweep(self) -> Sweep {
        let knee = self
            .lo
            .and_then(|lo| self.points.iter().position(|p| p.ok && p.mult == lo));
        let failure = self
            .hi
            .and_then(|hi| self.points.iter().find(|p| !p.ok && p.mult == hi));
        Sweep {
            knee,
            not_reached: self.hi.is_none(),
            limited_by: failure.and_then(|p| p.limited_by.clone()),
            bound: failure.and_then(|p| p.bound),
            steps: self.points,
        }
    }
}

/// Runs `side` against `relay` and, when given, `engine`.
pub fn run(
    side: &SideBySide,
    search: &Search,
    relay: &mut Relay,
    mut engine: Option<&mut Rtpengine>,
    rtpengine_note: Option<String>,
) -> Result<SideResult> {
    let spec = side.scenario();
    let (secs, limit, bound) = (
        search.step_seconds,
        search.loss_limit,
        search.p99_added_limit_us,
    );
    let mut steps: Vec<RateStep> = Vec::new();
    let mut r = Track::default();
    let mut e = Track::default();
    // One rate: the direct path, then the relay, then rtpengine.
    let mut at = |m: f64,
                  run_relay: bool,
                  run_engine: bool,
                  r: &mut Track,
                  e: &mut Track,
                  engine: &mut Option<&mut Rtpengine>|
     -> Result<()> {
        let direct = measure::direct_point(&spec, m, secs, limit)?;
        eprintln!("    x{m:<7.2} {}", measure::line(&direct));
        let mut step = RateStep {
            requested_pps: spec.rate.unwrap_or(0.0) * m,
            direct,
            relay: None,
            rtpengine: None,
        };
        if run_relay {
            let mut p = measure::relay_point(relay, &spec, m, secs, limit)?;
            measure::latency_bound(&mut p, &step.direct, bound);
            eprintln!("    x{m:<7.2} {}", measure::line(&p));
            step.relay = Some(p.clone());
            r.add(p);
        }
        if let (true, Some(engine)) = (run_engine, engine.as_deref_mut()) {
            let mut p = measure::rtpengine_point(engine, &spec, m, secs, limit)?;
            measure::latency_bound(&mut p, &step.direct, bound);
            eprintln!("    x{m:<7.2} {}", measure::line(&p));
            step.rtpengine = Some(p.clone());
            e.add(p);
        }
        steps.push(step);
        Ok(())
    };
    let with_engine = engine.is_some();
    let mut m = 1.0;
    for _ in 0..search.max_steps {
        let run_engine = with_engine && e.searching();
        if !r.searching() && !run_engine {
            break;
        }
        at(m, r.searching(), run_engine, &mut r, &mut e, &mut engine)?;
        m *= side.step_factor;
    }
    for _ in 0..search.refine_steps {
        // rtpengine's bracket first, with the relay at the same rate (the comparison covers
        // every rate up to rtpengine's knee), then the relay's own bracket.
        if let Some(mid) = e.mid().filter(|_| with_engine) {
            let relay_too = r.hi.is_none_or(|hi| mid < hi);
            at(mid, relay_too, true, &mut r, &mut e, &mut engine)?;
        }
        if let Some(mid) = r.mid() {
            at(mid, true, false, &mut r, &mut e, &mut engine)?;
        }
    }
    let at_80 = |knee: Option<f64>,
                 point: &mut dyn FnMut(f64) -> Result<Point>|
     -> Result<Option<LoadPoint>> {
        let Some(k) = knee else { return Ok(None) };
        let m = 0.8 * k;
        let direct = measure::direct_point(&spec, m, secs, limit)?;
        let mut measured = point(m)?;
        measure::latency_bound(&mut measured, &direct, bound);
        eprintln!("     80%     {}", measure::line(&measured));
        Ok(Some(LoadPoint {
            fraction: 0.8,
            added_us: measured.added_us.unwrap_or_default(),
            measured,
            direct,
        }))
    };
    let relay_at_80 = at_80(r.lo, &mut |m| {
        measure::relay_point(relay, &spec, m, secs, limit)
    })?;
    let rtpengine_at_80 = match engine {
        Some(engine) => at_80(e.lo, &mut |m| {
            measure::rtpengine_point(engine, &spec, m, secs, limit)
        })?,
        None => None,
    };
    let relay_sweep = r.sweep();
    let engine_sweep = with_engine.then(|| e.sweep());
    let checks = checks(
        side,
        &steps,
        &relay_sweep,
        engine_sweep.as_ref(),
        relay_at_80.as_ref(),
    );
    Ok(SideResult {
        spec: side.clone(),
        relay_backend: relay.backend.clone(),
        steps,
        relay: relay_sweep,
        rtpengine: engine_sweep,
        relay_at_80,
        rtpengine_at_80,
        rtpengine_note,
        checks,
    })
}

/// The issue-12 checks of a side-by-side run.
pub fn checks(
    side: &SideBySide,
    steps: &[RateStep],
    relay: &Sweep,
    rtpengine: Option<&Sweep>,
    at_80: Option<&LoadPoint>,
) -> Vec<Check> {
    let b = &side.budget;
    let theirs = rtpengine.and_then(Sweep::knee_point);
    let mut out = Vec::new();
    if b.latency_le_rtpengine {
        // The worst excess of the relay's added latency over rtpengine's, at every rate up to
        // rtpengine's knee where both ran; a rate where the relay did not run fails.
        let worst = |pick: fn(&measure::Added) -> f64| -> Option<f64> {
            let knee = theirs?.mult;
            let mut worst: Option<f64> = None;
            for s in steps {
                let Some(e) = &s.rtpengine else { continue };
                if e.mult > knee * (1.0 + 1e-9) {
                    continue;
                }
                let r = s.relay.as_ref()?;
                let d = pick(&r.added_us?) - pick(&e.added_us?);
                worst = Some(worst.map_or(d, |w| w.max(d)));
            }
            worst
        };
        out.push(Check::new(
            "(issue 12) worst relay - rtpengine added p50, us, at rates up to rtpengine's knee",
            worst(|a| a.p50),
            "<=",
            0.0,
        ));
        out.push(Check::new(
            "(issue 12) worst relay - rtpengine added p99, us, at rates up to rtpengine's knee",
            worst(|a| a.p99),
            "<=",
            0.0,
        ));
    }
    out.push(Check::new(
        "(issue 12) latency-bounded knee egress / rtpengine's",
        relay
            .knee_point()
            .zip(theirs)
            .map(|(k, t)| k.egress_pps / t.egress_pps.max(1.0)),
        ">=",
        b.knee_vs_rtpengine,
    ));
    out.push(Check::new(
        "(issue 12) loss @80% of the latency-bounded knee",
        at_80.map(|l| {
            l.measured
                .relay_loss
                .unwrap_or(0.0)
                .max(l.measured.sampled_loss)
        }),
        "<=",
        b.loss_at_80,
    ));
    out.push(Check::new(
        "(issue 12) added p99 @80% of the latency-bounded knee, us",
        at_80.map(|l| l.added_us.p99),
        "<=",
        b.p99_added_at_80_us,
    ));
    out
}

/// Which bound ended a search, in words for the table.
pub fn ended_by(s: &Sweep) -> String {
    match (s.not_reached, s.bound) {
        (true, _) => "not reached".into(),
        (false, Some(b)) => b.name().into(),
        (false, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::measure::{Added, Bound};
    use crate::budget::spec::SideBySideBudget;
    use loadgen::report::Latency;

    fn point(target: &str, mult: f64, ok: bool, p50: f64, p99: f64) -> Point {
        Point {
            target: target.into(),
            mult,
            rooms: 100,
            requested_pps: Some(mult * 1000.0),
            offered_pps: mult * 1000.0,
            egress_pps: mult * 1000.0,
            relay_loss: Some(0.0),
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
            added_us: Some(Added {
                p50,
                p99,
                p999: p99,
            }),
            ok,
            bound: (!ok).then_some(Bound::Latency),
            limited_by: None,
            errors: Vec::new(),
        }
    }

    #[test]
    fn tracks_keep_the_highest_pass_below_the_lowest_failure() {
        let mut t = Track::default();
        t.add(point("relay", 1.0, true, 0.0, 0.0));
        t.add(point("relay", 2.0, true, 0.0, 0.0));
        t.add(point("relay", 4.0, false, 0.0, 0.0));
        assert_eq!((t.lo, t.hi), (Some(2.0), Some(4.0)));
        assert!((t.mid().unwrap() - 8f64.sqrt()).abs() < 1e-12);
        // A failure between lowers the bracket; a pass above the failure does not count.
        t.add(point("relay", 3.0, false, 0.0, 0.0));
        t.add(point("relay", 3.5, true, 0.0, 0.0));
        assert_eq!((t.lo, t.hi), (Some(2.0), Some(3.0)));
        let s = t.sweep();
        assert_eq!(s.knee_point().unwrap().mult, 2.0);
        assert_eq!(s.bound, Some(Bound::Latency));
    }

    #[test]
    fn issue_12_checks() {
        let side = SideBySide {
            name: "s".into(),
            about: "s".into(),
            calls: 100,
            packet_len: 200,
            rate: 1000.0,
            step_factor: 2.0,
            smoke_rate: 100.0,
            relay_args: Vec::new(),
            loadgen_spin: false,
            budget: SideBySideBudget {
                latency_le_rtpengine: true,
                knee_vs_rtpengine: 1.5,
                loss_at_80: 0.0,
                p99_added_at_80_us: 1000.0,
            },
        };
        let step = |m: f64, r: (bool, f64, f64), e: (bool, f64, f64)| RateStep {
            requested_pps: m * 1000.0,
            direct: point("direct", m, true, 0.0, 0.0),
            relay: Some(point("relay", m, r.0, r.1, r.2)),
            rtpengine: Some(point("rtpengine", m, e.0, e.1, e.2)),
        };
        let steps = vec![
            step(1.0, (true, 10.0, 100.0), (true, 30.0, 300.0)),
            step(2.0, (true, 12.0, 400.0), (true, 40.0, 350.0)),
            // Above rtpengine's knee: not compared.
            step(4.0, (true, 20.0, 900.0), (false, 900.0, 5000.0)),
        ];
        let mut r = Track::default();
        let mut e = Track::default();
        for s in &steps {
            r.add(s.relay.clone().unwrap());
            e.add(s.rtpengine.clone().unwrap());
        }
        let (r, e) = (r.sweep(), e.sweep());
        let at80 = LoadPoint {
            fraction: 0.8,
            measured: point("relay", 3.2, true, 15.0, 700.0),
            direct: point("direct", 3.2, true, 0.0, 0.0),
            added_us: Added {
                p50: 15.0,
                p99: 700.0,
                p999: 700.0,
            },
        };
        let c = checks(&side, &steps, &r, Some(&e), Some(&at80));
        let value = |i: usize| c[i].value.unwrap();
        assert_eq!(value(0), -20.0, "p50: the worse of 10-30 and 12-40");
        assert_eq!(value(1), 50.0, "p99: 400 against 350 at x2");
        assert!(c[0].pass && !c[1].pass);
        assert_eq!(value(2), 2.0);
        assert!(c[2].pass && c[3].pass && c[4].pass);
        // Without rtpengine the comparisons cannot pass.
        let c = checks(&side, &steps, &r, None, Some(&at80));
        assert!(!c[0].pass && !c[2].pass);
    }
}
