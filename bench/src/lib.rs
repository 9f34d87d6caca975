//! bench helpers and the `budget` runner's parts.

pub mod budget;
