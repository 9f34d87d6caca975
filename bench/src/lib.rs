//! Benchmark fixtures (criterion) and the `budget` runner's parts.

pub mod budget;
pub mod fixtures;
