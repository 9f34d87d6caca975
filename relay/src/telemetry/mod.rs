//! Metrics that need nothing from the control state: the build, the process, and how long the
//! workers take to apply a control change.
//!
//! [`render`] appends them to the `/metrics` text the control plane writes; it reads
//! /proc/self and atomics only, so a scrape never waits for a lock the API holds.
//! [`Histogram`] is the one histogram type of the relay: fixed buckets, atomic counters, any
//! thread may observe.

#![deny(unsafe_code)]

mod histogram;
mod process;

use std::fmt::Write;

pub use histogram::{APPLY_BUCKETS, Histogram};

use crate::io::DataPlane;

/// Name of the histogram of control changes, from being sent to the workers to the last
/// worker's acknowledgement.
pub const APPLY_DURATION: &str = "relay_control_apply_duration_seconds";

/// Appends `relay_build_info`, the `process_*` metrics and
/// `relay_control_apply_duration_seconds` to `out`, in the Prometheus text format.
pub fn render(out: &mut String, plane: &DataPlane) {
    let _ = writeln!(
        out,
        "# HELP relay_build_info The relay's version and data-plane backend; always 1.\n\
         # TYPE relay_build_info gauge\n\
         relay_build_info{{version=\"{}\",backend=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        plane.backend().name()
    );
    process::render(out);
    plane.apply_duration().render(
        out,
        APPLY_DURATION,
        "Time from a control change being sent to the workers to every worker's acknowledgement.",
    );
}
