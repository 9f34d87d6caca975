//! Settings shared by every criterion benchmark: short enough that `cargo bench -p bench` runs in
//! a few minutes on two cores, with plots off.

use std::time::Duration;

use criterion::Criterion;

/// 30 samples of 2 s after 0.5 s of warm-up; 10,000 bootstrap resamples (the default 100,000
/// took minutes per group on two cores).
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .nresamples(10_000)
        .without_plots()
}
