//! The budget runner: starts the release relay (and rtpengine when present) on one core, drives
//! it with loadgen from the other, finds each scenario's loss knee, measures added latency and
//! CPU per packet, and compares them with the budgets of `bench/budgets.toml`.

pub mod core;
pub mod measure;
pub mod output;
pub mod procs;
pub mod side;
pub mod spec;
