//! A Prometheus histogram with fixed buckets and lock-free, atomic counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts observations of a duration into fixed buckets. Any thread may observe and render at
/// once: every counter is an atomic add, nothing waits.
///
/// Each bucket counts the observations that fell into it alone; rendering sums them into the
/// cumulative `_bucket` series Prometheus expects, and `_count` is that same sum, so `_count`
/// always equals the `+Inf` bucket even while other threads observe.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; the last bucket (`+Inf`) is implicit.
    bounds: &'static [f64],
    /// One counter per bound, then one for `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of all observations in nanoseconds (wraps after 584 years of observed time).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds, in seconds, ascending and finite.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]) && bounds.iter().all(|b| b.is_finite()),
            "bounds must ascend and be finite"
        );
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes `# HELP`, `# TYPE` and the unlabelled series of metric `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of metric `name` with extra labels, given
    /// as exposition text without braces (`route="/v1/rules",method="POST"`) or empty. The
    /// caller writes `# HELP` and `# TYPE` once before the first series of the metric.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = match self.bounds.get(i) {
                Some(le) => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Buckets for the time a control change takes to reach every worker: from 50 µs (an idle worker
/// woken through its eventfd) to 5 s (the data plane's apply timeout, after which the API call
/// fails).
pub const APPLY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_matches_inf() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // on the bound: le is inclusive
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "Test.");
        assert_eq!(
            out,
            "# HELP x_seconds Test.\n\
             # TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 2\n\
             x_seconds_bucket{le=\"0.01\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\n\
             x_seconds_sum 2.0065\n\
             x_seconds_count 4\n"
        );
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn labelled_series() {
        let h = Histogram::new(&[1.0]);
        h.observe(Duration::from_millis(10));
        let mut out = String::new();
        h.render_series(&mut out, "y_seconds", "route=\"/a\"");
        assert_eq!(
            out,
            "y_seconds_bucket{route=\"/a\",le=\"1\"} 1\n\
             y_seconds_bucket{route=\"/a\",le=\"+Inf\"} 1\n\
             y_seconds_sum{route=\"/a\"} 0.01\n\
             y_seconds_count{route=\"/a\"} 1\n"
        );
    }

    #[test]
    fn observing_from_many_threads_loses_nothing() {
        let h = Histogram::new(APPLY_BUCKETS);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(Duration::from_micros((i * 37 + t) % 7_000_000));
                    }
                });
            }
        });
        assert_eq!(h.count(), 40_000);
    }

    #[test]
    fn apply_buckets_ascend_from_50_us_to_5_s() {
        assert!(APPLY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(APPLY_BUCKETS.first(), Some(&0.000_05));
        assert_eq!(APPLY_BUCKETS.last(), Some(&5.0));
    }
}
