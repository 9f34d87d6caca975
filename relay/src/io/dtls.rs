//! DTLS datagrams from WebRTC legs, on their way from the workers to the DTLS thread.
//!
//! A worker copies a DTLS datagram from a latched WebRTC leg's address into an [`Inbound`] and
//! offers it to a bounded channel: handshakes are a few datagrams per leg, so the copy costs
//! nothing that matters, and a full channel is a counted drop (`dtls_queue_full`), never a wait
//! (the client retransmits). DTLS from any other source stays a counted drop (`dtls`). The
//! DTLS thread sends its flights with a clone of a worker's socket: every socket of the
//! SO_REUSEPORT group sends from the media port, and a clone joins no group, so it takes no
//! share of incoming traffic (a new socket bound to the port would).

use std::net::SocketAddr;

use crate::route::DtlsLeg;

/// DTLS datagrams waiting for the DTLS thread, over all workers.
pub const QUEUE: usize = 1024;

/// One DTLS datagram from a WebRTC leg.
#[derive(Debug)]
pub struct Inbound {
    /// The leg and its session.
    pub leg: DtlsLeg,
    /// Its source: the leg's latched address.
    pub src: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}
