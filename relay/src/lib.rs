//! Relay library.

pub mod rules;
pub mod store;
