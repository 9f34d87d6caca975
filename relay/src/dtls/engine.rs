//! Many handshakes for the DTLS thread: a bound on how many run at once, a bounded queue per
//! participant, and round-robin service so that one flooding source gets one turn in N.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use dimpl::Config;

use super::cert::Certificate;
use super::handshake::{self, Handshake, Limits, Output, State};
use crate::sdp::Fingerprint;

/// Bounds of an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Handshakes in [`State::Connecting`] at once; [`Engine::start`] refuses more. One full
    /// handshake cost 2.4-3.6 ms of CPU for server and client together in memory
    /// (`cargo bench -p bench --bench webrtc -- dtls`, noisy machine), so 256 in flight is about
    /// half a second of the DTLS thread, not minutes.
    pub max_handshakes: usize,
    /// Datagrams queued per participant between two [`Engine::process`] turns; the rest are
    /// dropped and counted. A client's largest flight is a handful of datagrams.
    pub queue_per_participant: usize,
    /// The bounds of each handshake.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_handshakes: 256,
            queue_per_participant: 8,
            limits: Limits::default(),
        }
    }
}

/// [`Engine::start`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// [`EngineConfig::max_handshakes`] handshakes are connecting already; retry later (the
    /// client retransmits its ClientHello) or refuse the participant.
    TooManyHandshakes,
}

/// What [`Engine::push`] did with a datagram (the drops are counted in [`Counters`] too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushResult {
    /// Queued for the next [`Engine::process`].
    Queued,
    /// No handshake for this participant: [`Engine::start`] was not called, or it was removed.
    UnknownParticipant,
    /// Its queue is full: the source sends faster than its share of the DTLS thread.
    QueueFull,
    /// Its handshake failed or was closed: nothing more is processed for it.
    Finished,
}

/// What the engine counted since it was made. Failures are also returned as
/// [`Output::Failed`], for the caller's own per-reason counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Handshakes started.
    pub started: u64,
    /// [`Engine::start`] calls refused with [`StartError::TooManyHandshakes`].
    pub refused: u64,
    /// Handshakes that connected.
    pub connected: u64,
    /// Handshakes that failed.
    pub failed: u64,
    /// Datagrams handed to a handshake.
    pub processed: u64,
    /// Datagrams dropped: [`PushResult::UnknownParticipant`].
    pub unknown_participant: u64,
    /// Datagrams dropped: [`PushResult::QueueFull`].
    pub queue_full: u64,
    /// Datagrams dropped: [`PushResult::Finished`].
    pub finished: u64,
}

/// The handshakes of the DTLS thread, keyed by the caller's participant handle `H`.
///
/// Fairness: every participant has its own bounded queue, and [`Engine::process`] serves the
/// queues round-robin, one datagram per participant per round. A latched source belongs to one
/// participant (an address belongs to at most one participant relay-wide), so a source that
/// floods gets one datagram in N processed, its excess is dropped at its own queue, and its
/// handshake fails after [`Limits::max_datagrams`]: it cannot take more than its share.
pub struct Engine<H> {
    cert: Certificate,
    config: EngineConfig,
    dimpl_config: Arc<Config>,
    entries: HashMap<H, Entry>,
    ready: VecDeque<H>,
    outputs: VecDeque<(H, Output)>,
    counters: Counters,
}

struct Entry {
    handshake: Handshake,
    queue: VecDeque<Vec<u8>>,
}

impl<H: Copy + Eq + Hash> Engine<H> {
    /// An engine that answers with `cert`.
    pub fn new(cert: Certificate, config: EngineConfig) -> Self {
        Self {
            dimpl_config: handshake::config(&config.limits),
            cert,
            config,
            entries: HashMap::new(),
            ready: VecDeque::new(),
            outputs: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Starts (or restarts, after a new SDP exchange) the handshake of `participant`, which
    /// must present a certificate matching one of `fingerprints` (from its SDP).
    pub fn start(
        &mut self,
        participant: H,
        fingerprints: Vec<Fingerprint>,
        now: Instant,
    ) -> Result<(), StartError> {
        self.start_inner(participant, Some(fingerprints), now)
    }

    fn start_inner(
        &mut self,
        participant: H,
        fingerprints: Option<Vec<Fingerprint>>,
        now: Instant,
    ) -> Result<(), StartError> {
        let replacing = self
            .entries
            .get(&participant)
            .is_some_and(|e| e.handshake.state() == State::Connecting);
        if !replacing && self.connecting() >= self.config.max_handshakes {
            self.counters.refused += 1;
            return Err(StartError::TooManyHandshakes);
        }
        let handshake = Handshake::with_config(
            &self.dimpl_config,
            &self.cert,
            fingerprints,
            self.config.limits,
            now,
        );
        // A queue left from the previous handshake belongs to it: drop it with it (and keep
        // "in `ready` exactly when its queue is not empty").
        let old = self.entries.insert(
            participant,
            Entry {
                handshake,
                queue: VecDeque::new(),
            },
        );
        if old.is_some_and(|e| !e.queue.is_empty()) {
            self.ready.retain(|h| *h != participant);
        }
        self.counters.started += 1;
        Ok(())
    }

    /// Starts `participant`'s handshake before its fingerprints are known (the relay made the
    /// offer and the answer is not in yet); keys come out only after
    /// [`Engine::set_fingerprints`]. See [`Handshake::new_awaiting_fingerprints`].
    pub fn start_awaiting_fingerprints(
        &mut self,
        participant: H,
        now: Instant,
    ) -> Result<(), StartError> {
        self.start_inner(participant, None, now)
    }

    /// Supplies the fingerprints from `participant`'s SDP to a handshake started without them;
    /// false when there is no such handshake.
    pub fn set_fingerprints(&mut self, participant: H, fingerprints: Vec<Fingerprint>) -> bool {
        let Some(entry) = self.entries.get_mut(&participant) else {
            return false;
        };
        entry.handshake.set_fingerprints(fingerprints);
        self.collect(participant);
        true
    }

    /// Forgets `participant` (it left the room). Outputs already queued for it stay queued.
    pub fn remove(&mut self, participant: H) {
        if self
            .entries
            .remove(&participant)
            .is_some_and(|e| !e.queue.is_empty())
        {
            self.ready.retain(|h| *h != participant);
        }
    }

    /// Queues a DTLS datagram from `participant`'s latched address. Cheap: a copy and a queue
    /// push; the work happens in [`Engine::process`].
    pub fn push(&mut self, participant: H, datagram: &[u8]) -> PushResult {
        let Some(entry) = self.entries.get_mut(&participant) else {
            self.counters.unknown_participant += 1;
            return PushResult::UnknownParticipant;
        };
        if matches!(entry.handshake.state(), State::Failed(_) | State::Closed) {
            self.counters.finished += 1;
            return PushResult::Finished;
        }
        if entry.queue.len() >= self.config.queue_per_participant {
            self.counters.queue_full += 1;
            return PushResult::QueueFull;
        }
        if entry.queue.is_empty() {
            self.ready.push_back(participant);
        }
        entry.queue.push_back(datagram.to_vec());
        PushResult::Queued
    }

    /// Feeds at most `budget` queued datagrams to their handshakes, one per participant per
    /// round; returns how many it fed. Queues left over wait for the next call.
    pub fn process(&mut self, now: Instant, budget: usize) -> usize {
        let mut fed = 0;
        while fed < budget {
            let Some(participant) = self.ready.pop_front() else {
                break;
            };
            // Invariant: a participant is in `ready` exactly when its queue is not empty.
            let Some(entry) = self.entries.get_mut(&participant) else {
                continue;
            };
            let Some(datagram) = entry.queue.pop_front() else {
                continue;
            };
            if !entry.queue.is_empty() {
                self.ready.push_back(participant);
            }
            entry.handshake.handle_datagram(now, &datagram);
            fed += 1;
            self.counters.processed += 1;
            self.collect(participant);
        }
        fed
    }

    /// Runs every handshake timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<H> = self
            .entries
            .iter()
            .filter(|(_, e)| e.handshake.poll_timeout().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for participant in due {
            if let Some(entry) = self.entries.get_mut(&participant) {
                entry.handshake.handle_timeout(now);
            }
            self.collect(participant);
        }
    }

    /// The next output, with the participant it concerns.
    pub fn poll_output(&mut self) -> Option<(H, Output)> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must run next (O(handshakes): the DTLS thread calls it
    /// once per wake-up, not per packet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.handshake.poll_timeout())
            .min()
    }

    /// Where `participant`'s handshake is; `None` when there is none.
    pub fn state(&self, participant: H) -> Option<State> {
        self.entries.get(&participant).map(|e| e.handshake.state())
    }

    /// Why `participant`'s handshake failed, in words (for a log line with its id).
    pub fn detail(&self, participant: H) -> Option<&str> {
        self.entries
            .get(&participant)
            .and_then(|e| e.handshake.detail())
    }

    /// Handshakes in [`State::Connecting`].
    pub fn connecting(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.handshake.state() == State::Connecting)
            .count()
    }

    /// What was counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The relay's certificate (its fingerprint goes into SDP).
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// Moves `participant`'s handshake outputs to the engine's queue, counting the outcomes.
    fn collect(&mut self, participant: H) {
        let Some(entry) = self.entries.get_mut(&participant) else {
            return;
        };
        while let Some(output) = entry.handshake.poll_output() {
            match output {
                Output::Connected(_) => self.counters.connected += 1,
                Output::Failed(_) => {
                    self.counters.failed += 1;
                    if !entry.queue.is_empty() {
                        entry.queue.clear();
                        self.ready.retain(|h| *h != participant);
                    }
                }
                Output::Transmit(_) | Output::Closed => {}
            }
            self.outputs.push_back((participant, output));
        }
    }
}

impl<H> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("handshakes", &self.entries.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}
