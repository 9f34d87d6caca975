//! One participant's DTLS 1.2 server handshake over dimpl, with the relay's checks and bounds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls};

use super::cert::{Certificate, fingerprint_of};
use super::keys::{SrtpKeys, SrtpProfile};
use crate::sdp::Fingerprint;

/// What one handshake may cost, and its timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Datagrams one handshake may take before it fails with [`Failure::TooManyRecords`]. A
    /// browser's full handshake is two or three flights of one to five datagrams each, plus
    /// retransmissions: 64 leaves room for a lossy path and none for a flood. After the
    /// handshake, further datagrams past this count are ignored (counted), never fed to dimpl.
    pub max_datagrams: u32,
    /// From [`Handshake::new`] to connected, at most; then [`Failure::HandshakeTimeout`]. The
    /// client may need a while for ICE first (it starts DTLS after its first ICE success).
    pub max_duration: Duration,
    /// First retransmission timeout of our flights, doubled at each retry (RFC 6347 §4.2.4.1
    /// suggests 1 s; mediasoup and LiveKit start at 100 ms so that a lost last flight does not
    /// stall media for seconds).
    pub first_rto: Duration,
    /// Retransmissions of one flight before the handshake fails.
    pub flight_retries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_datagrams: 64,
            max_duration: Duration::from_secs(30),
            first_rto: Duration::from_millis(100),
            // 100 ms doubling over 7 retries: the last one goes out 12.7 s after the first send.
            flight_retries: 7,
        }
    }
}

/// Why a handshake failed: one counter each (`dtls_handshakes_total{result=code()}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No connection within [`Limits::max_duration`], or a flight was retransmitted
    /// [`Limits::flight_retries`] times without an answer.
    HandshakeTimeout,
    /// The client's certificate matches none of the fingerprints from its SDP (or it sent none).
    BadFingerprint,
    /// More than [`Limits::max_datagrams`] datagrams, or dimpl's receive queue overflowed.
    TooManyRecords,
    /// Anything else the DTLS layer refused: a fatal alert, a bad Finished, no common cipher
    /// suite or SRTP profile, a close during the handshake.
    ProtocolError,
}

impl Failure {
    /// The code counted and shown in the API.
    pub fn code(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::BadFingerprint => "bad_fingerprint",
            Self::TooManyRecords => "too_many_records",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// Where a handshake is; the API's `"dtls"` field (`new` is a participant without one yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Started, not connected yet.
    Connecting,
    /// Keys handed out; the handshake still answers retransmissions.
    Connected,
    /// Failed; every further datagram is ignored.
    Failed(Failure),
    /// The client closed the connection (`close_notify`) after connecting.
    Closed,
}

/// What a handshake asks the caller to do. Drain with [`Handshake::poll_output`] after every
/// call that takes `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to the participant's address.
    Transmit(Vec<u8>),
    /// The handshake completed and the client's certificate matches its SDP: install the keys.
    Connected(SrtpKeys),
    /// The handshake failed; nothing more will come from it.
    Failed(Failure),
    /// The client sent `close_notify` after connecting: its keys are no longer in use.
    Closed,
}

/// One participant's handshake. The relay is the server; DTLS 1.2 only.
pub struct Handshake {
    dtls: Dtls,
    /// `None` until the client's SDP is known (see [`Handshake::new_awaiting_fingerprints`]).
    expected: Option<Vec<Fingerprint>>,
    /// The client's certificate (DER), kept until it is checked.
    peer_cert: Option<Vec<u8>>,
    limits: Limits,
    deadline: Instant,
    datagrams: u32,
    ignored: u32,
    state: State,
    keys: Option<SrtpKeys>,
    dimpl_connected: bool,
    next_timeout: Option<Instant>,
    detail: Option<String>,
    outputs: VecDeque<Output>,
    buf: Vec<u8>,
}

impl Handshake {
    /// Starts a handshake at `now` that will accept a client certificate matching any of
    /// `expected` (the `a=fingerprint` lines of the client's SDP; RFC 8122 §5 allows several,
    /// for several certificates or hash functions). An empty list fails every handshake with
    /// [`Failure::BadFingerprint`].
    pub fn new(
        cert: &Certificate,
        expected: Vec<Fingerprint>,
        limits: Limits,
        now: Instant,
    ) -> Self {
        Self::with_config(&config(&limits), cert, Some(expected), limits, now)
    }

    /// Starts a handshake before the client's fingerprints are known: when the relay made the
    /// offer (subscribe), the client may start DTLS before its answer reaches the relay. The
    /// handshake runs, but no keys come out until [`Handshake::set_fingerprints`] supplied the
    /// fingerprints and the certificate matched one of them (the deadline still applies).
    pub fn new_awaiting_fingerprints(cert: &Certificate, limits: Limits, now: Instant) -> Self {
        Self::with_config(&config(&limits), cert, None, limits, now)
    }

    pub(crate) fn with_config(
        config: &Arc<Config>,
        cert: &Certificate,
        expected: Option<Vec<Fingerprint>>,
        limits: Limits,
        now: Instant,
    ) -> Self {
        Self {
            dtls: Dtls::new_12(Arc::clone(config), cert.dimpl(), now),
            expected,
            peer_cert: None,
            limits,
            deadline: now + limits.max_duration,
            datagrams: 0,
            ignored: 0,
            state: State::Connecting,
            keys: None,
            dimpl_connected: false,
            next_timeout: None,
            detail: None,
            outputs: VecDeque::new(),
            buf: vec![0; OUTPUT_BUF],
        }
    }

    /// Feeds one DTLS datagram received at `now` from the participant's latched address.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        match self.state {
            State::Connecting | State::Connected => {}
            State::Failed(_) | State::Closed => {
                self.ignored += 1;
                return;
            }
        }
        self.datagrams = self.datagrams.saturating_add(1);
        if self.datagrams > self.limits.max_datagrams {
            if self.state == State::Connected {
                self.ignored += 1;
                return;
            }
            return self.fail(Failure::TooManyRecords, "datagram limit reached".into());
        }
        if self.check_deadline(now) {
            return;
        }
        let result = self
            .dtls
            .handle_timeout(now)
            .and_then(|()| self.dtls.handle_packet(datagram));
        self.after(result);
    }

    /// Runs timers due at `now`: retransmits our last flight, fails a handshake past its
    /// deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Connecting | State::Connected) || self.check_deadline(now) {
            return;
        }
        let result = self.dtls.handle_timeout(now);
        self.after(result);
    }

    /// Supplies (or replaces) the fingerprints from the client's SDP while connecting; a
    /// certificate already received is checked at once. Ignored once connected or failed.
    pub fn set_fingerprints(&mut self, expected: Vec<Fingerprint>) {
        if self.state != State::Connecting {
            return;
        }
        self.expected = Some(expected);
        if self.peer_cert.is_some() && !self.check_peer() {
            return self.fail(Failure::BadFingerprint, "certificate mismatch".into());
        }
        self.try_connect();
    }

    /// The next output to act on, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Handshake::handle_timeout`] must run next; `None` once failed or closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting => Some(
                self.next_timeout
                    .map_or(self.deadline, |t| t.min(self.deadline)),
            ),
            State::Connected => self.next_timeout,
            State::Failed(_) | State::Closed => None,
        }
    }

    /// Where the handshake is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Datagrams ignored: after a failure, or past the limit once connected.
    pub fn ignored(&self) -> u32 {
        self.ignored
    }

    /// What went wrong, in words, for a log line (never contains key material or addresses).
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Fails when `now` is past the deadline of an unfinished handshake; true if it did.
    fn check_deadline(&mut self, now: Instant) -> bool {
        if self.state == State::Connecting && now >= self.deadline {
            self.fail(Failure::HandshakeTimeout, "handshake deadline".into());
            return true;
        }
        false
    }

    /// Drains dimpl after a call, or fails on its error (every dimpl error is fatal).
    fn after(&mut self, result: Result<(), dimpl::Error>) {
        if let Err(e) = result {
            let failure = match e {
                dimpl::Error::Timeout(_) => Failure::HandshakeTimeout,
                dimpl::Error::ReceiveQueueFull | dimpl::Error::TransmitQueueFull => {
                    Failure::TooManyRecords
                }
                _ => Failure::ProtocolError,
            };
            if self.state == State::Connected {
                // After the keys went out an error ends the DTLS session, not the SRTP one.
                self.state = State::Closed;
                self.detail = Some(e.to_string());
                self.outputs.push_back(Output::Closed);
                return;
            }
            return self.fail(failure, e.to_string());
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => self.outputs.push_back(Output::Transmit(p.to_vec())),
                dimpl::Output::BufferTooSmall { needed } => {
                    if needed > MAX_OUTPUT_BUF {
                        return self.fail(Failure::ProtocolError, "oversized record".into());
                    }
                    self.buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.next_timeout = Some(t);
                    break;
                }
                dimpl::Output::PeerCert(der) => {
                    self.peer_cert = Some(der.to_vec());
                    if self.expected.is_some() && !self.check_peer() {
                        return self.fail(Failure::BadFingerprint, "certificate mismatch".into());
                    }
                }
                dimpl::Output::KeyingMaterial(material, profile) => {
                    let keys = SrtpProfile::from_dimpl(profile)
                        .and_then(|p| SrtpKeys::from_exporter(p, &material));
                    let Some(keys) = keys else {
                        return self
                            .fail(Failure::ProtocolError, "unusable keying material".into());
                    };
                    self.keys = Some(keys);
                }
                dimpl::Output::Connected => self.dimpl_connected = true,
                dimpl::Output::CloseNotify => {
                    if self.state == State::Connecting {
                        return self.fail(Failure::ProtocolError, "close during handshake".into());
                    }
                    self.state = State::Closed;
                    self.outputs.push_back(Output::Closed);
                    return;
                }
                // No data channels: application data is not negotiated, so it is dropped.
                dimpl::Output::ApplicationData(_) => {}
                _ => {}
            }
        }
        self.try_connect();
    }

    /// Hands out the keys once dimpl is connected, the fingerprints are known and the client's
    /// certificate matched one of them.
    fn try_connect(&mut self) {
        if self.state != State::Connecting || !self.dimpl_connected {
            return;
        }
        if self.peer_cert.is_none() {
            return self.fail(Failure::BadFingerprint, "no client certificate".into());
        }
        if self.expected.is_none() {
            return; // connected on the wire; keys wait for the client's SDP
        }
        if !self.check_peer() {
            return self.fail(Failure::BadFingerprint, "certificate mismatch".into());
        }
        let Some(keys) = self.keys.take() else {
            return self.fail(Failure::ProtocolError, "no SRTP profile negotiated".into());
        };
        self.state = State::Connected;
        self.outputs.push_back(Output::Connected(keys));
    }

    /// Whether the client's certificate matches one of the expected fingerprints.
    fn check_peer(&self) -> bool {
        let (Some(der), Some(expected)) = (&self.peer_cert, &self.expected) else {
            return false;
        };
        expected
            .iter()
            .any(|fp| fingerprint_of(fp.hash, der) == *fp)
    }

    fn fail(&mut self, failure: Failure, detail: String) {
        self.state = State::Failed(failure);
        self.detail = Some(detail);
        self.keys = None;
        self.outputs.push_back(Output::Failed(failure));
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("datagrams", &self.datagrams)
            .finish_non_exhaustive()
    }
}

/// The dimpl configuration for the relay's server side.
pub(crate) fn config(limits: &Limits) -> Arc<Config> {
    let config = Config::builder()
        // ICE proved the address before any DTLS gets here: no HelloVerifyRequest round trip.
        .use_server_cookie(false)
        .require_client_certificate(true)
        .flight_start_rto(limits.first_rto)
        .flight_retries(limits.flight_retries)
        // dimpl's own deadline, counted from the first ClientHello; ours counts from `new`.
        .handshake_timeout(limits.max_duration)
        .build()
        .expect("a fixed configuration that dimpl accepts (covered by every handshake test)");
    Arc::new(config)
}

/// dimpl's MTU is 1150: records are at most that, so the buffer rarely grows.
const OUTPUT_BUF: usize = 1500;
/// A record larger than this is a bug in the peer or in dimpl; refuse rather than grow.
const MAX_OUTPUT_BUF: usize = 16 * 1024;
