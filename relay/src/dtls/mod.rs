//! DTLS 1.2 server for WebRTC legs (DTLS-SRTP key exchange), sans-IO over the `dimpl` crate.
//!
//! Read first: RFC 6347 (DTLS 1.2), RFC 5764 (DTLS-SRTP, §4.2 key derivation), RFC 8122 §5
//! (certificate fingerprints in SDP), RFC 8842 (`a=setup`), RFC 8827 §6.5 (what WebRTC requires:
//! ECDHE-ECDSA with P-256 and AES-128-GCM).
//!
//! # Model
//!
//! The relay is always the DTLS **server** (`a=setup:passive` in its answers, `actpass` in its
//! offers, so the browser takes the client role) and speaks **DTLS 1.2 only**. ICE has proved the
//! client's address before any DTLS reaches us (datagrams come only from latched sources), so the
//! cookie exchange (HelloVerifyRequest) is off.
//!
//! - [`Certificate::generate`] runs once at start-up: one self-signed ECDSA P-256 certificate per
//!   process, with a random serial (Firefox refuses two certificates with the same issuer and
//!   serial). Its [`Certificate::fingerprint`] goes into every SDP the relay writes.
//! - [`Handshake`] is one participant's handshake: bytes and `now` in, [`Output`]s out. It checks
//!   the client's certificate against the fingerprint(s) from the client's SDP itself (dimpl
//!   does no PKI checks) and bounds what one handshake may cost.
//! - [`Engine`] holds many handshakes keyed by the caller's participant handle, bounds how many
//!   run at once, and shares the DTLS thread fairly between sources.
//!
//! Nothing here touches a socket, a thread or the clock: time comes in as `now`. (dimpl draws
//! its own randomness from the operating system for keys and nonces.)
//!
//! # Calling order
//!
//! With an [`Engine`] (the DTLS thread):
//!
//! 1. [`Engine::start`]`(handle, remote_fingerprints, now)` when the client's fingerprints are
//!    known (publish: from its offer, before answering). When the relay is the offerer
//!    (subscribe), the client may start DTLS before its answer arrives: call
//!    [`Engine::start_awaiting_fingerprints`]`(handle, now)` when sending the offer and
//!    [`Engine::set_fingerprints`] with the answer's; no keys come out before they matched.
//! 2. [`Engine::push`]`(handle, datagram)` for each DTLS datagram (RFC 7983 first byte 20-63)
//!    from that participant's latched address. Only queues it (bounded per handle).
//! 3. [`Engine::process`]`(now, budget)`: feeds queued datagrams to their handshakes, one per
//!    handle per round, at most `budget` in all.
//! 4. [`Engine::handle_timeout`]`(now)` when [`Engine::poll_timeout`] is due (retransmissions,
//!    deadlines).
//! 5. After any of 1-4, drain [`Engine::poll_output`] until `None`:
//!    [`Output::Transmit`] goes to the participant's address through the worker that owns the
//!    socket; [`Output::Connected`] carries the [`SrtpKeys`] for the SRTP module;
//!    [`Output::Failed`] names a [`Failure`] to count.
//! 6. [`Engine::remove`] when the participant leaves.
//!
//! A connected handshake stays in the engine: when the client's last flight or our Finished was
//! lost, the client retransmits and dimpl answers with our last flight again.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use relay::dtls::{Certificate, Engine, EngineConfig, Output};
//!
//! let cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
//! let fingerprint = cert.fingerprint().to_string(); // "sha-256 AB:CD:..." for SDP
//! assert!(fingerprint.starts_with("sha-256 "));
//! let mut engine: Engine<u32> = Engine::new(cert, EngineConfig::default());
//! let now = Instant::now(); // the DTLS thread reads the clock, not this module
//! let client_fingerprints = vec![]; // from the client's SDP: sdp::Session::fingerprints()
//! engine.start(7, client_fingerprints, now).unwrap();
//! engine.push(7, &[22, 254, 253]); // a datagram from participant 7's latched address
//! engine.process(now, 64);
//! engine.handle_timeout(now + Duration::from_secs(1));
//! while let Some((participant, output)) = engine.poll_output() {
//!     match output {
//!         Output::Transmit(datagram) => { /* send to participant's address */ }
//!         Output::Connected(keys) => { /* install keys.profile, keys.client, keys.server */ }
//!         Output::Failed(failure) => { /* count failure.code() */ }
//!         Output::Closed => { /* the client sent close_notify */ }
//!     }
//! }
//! ```
#![deny(unsafe_code)]

mod cert;
mod engine;
mod handshake;
mod keys;

pub use cert::{Certificate, CertificateError, fingerprint_of};
pub use engine::{Counters, Engine, EngineConfig, PushResult, StartError};
pub use handshake::{Failure, Handshake, Limits, Output, State};
pub use keys::{MasterKey, SrtpKeys, SrtpProfile};

#[cfg(test)]
mod tests;
