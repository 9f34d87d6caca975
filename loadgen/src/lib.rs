//! loadgen: plays a signaling server and many RTP clients against the relay (or rtpengine, or
//! itself) and measures loss, duplicates, reordering, jitter, latency and misdelivery.
#![warn(missing_docs)]

pub mod api;
pub mod blast;
pub mod cli;
pub(crate) mod client;
pub(crate) mod io;
pub mod model;
pub mod netns;
pub mod profile;
pub mod report;
pub mod rtp;
pub mod rtpengine;
mod run;
pub mod scenario;
pub mod stats;
mod stun;
pub mod webrtc;
mod wheel;

pub use report::Report;
pub use run::{Options, run, run_with};
pub use scenario::Scenario;
