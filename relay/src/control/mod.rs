//! The control plane: the HTTP API, the state owner, and the publication of changes to workers.
//!
//! The state lives behind one lock that only API handlers take; workers never see it. A change
//! is validated, applied to the state, compiled, and published to every worker before the call
//! returns.

pub mod api;
mod geoip;
mod http;
mod metrics;
mod rulebook;
mod state;

pub use geoip::Geoip;
pub use http::ControlServer;
pub use state::{RegionSource, State, rfc3339};
