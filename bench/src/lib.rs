//! bench helpers.

pub mod fixtures;
