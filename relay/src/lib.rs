//! relay: a thread-per-core media relay with scoped, audited drop rules.
//!
//! `packet`, `route`, `rules` and `srtp` are the sans-IO core: pure functions and data over byte
//! slices.
//! `io` moves bytes between sockets and that core; `control` owns the state and publishes changes
//! to workers; `store` keeps rules and the audit log on disk; `telemetry` renders the metrics that
//! need no control state (build, process, change apply time); `fleet` links a relay to the others
//! of its fleet through etcd. `sdp` (offer/answer for WebRTC legs) and `dtls` (the DTLS-SRTP
//! server handshake) are pure building blocks of the WebRTC edge.

pub mod config;
pub mod control;
pub mod dtls;
pub mod fleet;
pub mod io;
pub mod packet;
pub mod route;
pub mod rules;
pub mod sdp;
pub mod srtp;
pub mod store;
pub mod telemetry;
