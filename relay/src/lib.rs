//! Relay library.

pub mod packet;
