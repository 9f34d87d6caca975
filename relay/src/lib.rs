//! relay: a thread-per-core media relay with scoped, audited drop rules.
//!
//! `packet`, `route` and `rules` are the sans-IO core: pure functions and data over byte slices.
//! `io` moves bytes between sockets and that core; `control` owns the state and publishes changes
//! to workers; `store` keeps rules and the audit log on disk; `fleet` links a relay to the
//! others of its fleet through etcd.

pub mod config;
pub mod control;
pub mod fleet;
pub mod io;
pub mod packet;
pub mod route;
pub mod rules;
pub mod store;
