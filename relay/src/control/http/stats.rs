//! Request counts and latencies of the control API, by route, method and status.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::telemetry::Histogram;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Per-route counters. A short lock per request: this is the control path, not the data path.
#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, &'static str, u16), u64>,
    latency: BTreeMap<(String, &'static str), Histogram>,
}

impl Stats {
    /// Counts one request and its time.
    pub(crate) fn record(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner
            .requests
            .entry((route.to_owned(), method, status))
            .or_default() += 1;
        inner
            .latency
            .entry((route.to_owned(), method))
            .or_insert_with(|| Histogram::new(BUCKETS))
            .observe(took);
    }

    /// Appends `relay_http_requests_total` and `relay_http_request_duration_seconds`.
    pub(crate) fn render(&self, out: &mut String) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP relay_http_requests_total Control API requests, by route, method and status.\n# TYPE relay_http_requests_total counter"
        );
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "relay_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_http_request_duration_seconds Control API request latency, by route and method.\n# TYPE relay_http_request_duration_seconds histogram"
        );
        for ((route, method), h) in &inner.latency {
            let labels = format!("route=\"{route}\",method=\"{method}\"");
            h.render_series(out, "relay_http_request_duration_seconds", &labels);
        }
    }
}
