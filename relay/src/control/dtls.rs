//! The DTLS thread: one `dtls::Engine` for every WebRTC leg, fed by the workers.
//!
//! Workers hand it the DTLS datagrams of latched WebRTC legs (`io::dtls::Inbound`, over a
//! bounded channel). A datagram of a session it has not seen starts a handshake with the
//! fingerprints from the client's SDP, which come with the datagram from the workers' routing
//! table (a subscribe leg may start before the client's answer arrived: it then waits for them).
//! Flights go out with `sendto` on a clone of a worker's socket. Each state change goes to the
//! control thread as a [`DtlsReport`]; keys never touch the database or a log.
//!
//! A session not heard from for [`IDLE`] is removed (a connected handshake stays that long to
//! answer a client's retransmitted last flight).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use socket2::{SockAddr, Socket};

use super::core::{DtlsReport, DtlsState};
use crate::dtls::{Certificate, Counters, Engine, EngineConfig, Output};
use crate::io::dtls::Inbound;
use crate::route::{DtlsLeg, SrtpLeg};
use crate::srtp;
use std::sync::Arc;

/// A session's handshake is removed after this long without a datagram.
pub const IDLE: Duration = Duration::from_secs(120);
/// Datagrams fed to handshakes per round (one per session per round: fair between sources).
const BUDGET: usize = 64;

/// What the control thread tells the DTLS thread.
#[derive(Debug)]
pub enum Order {
    /// A session's client fingerprints, learnt from the client's answer: its handshake may
    /// have started before (the browser starts DTLS as soon as it answered).
    Fingerprints {
        /// The leg session.
        session: u64,
        /// The fingerprints.
        fingerprints: Vec<crate::sdp::Fingerprint>,
    },
}

/// What the DTLS thread's engine counted, for `/metrics`: a copy of its [`Counters`] made after
/// each round, so that a scrape reads atomics and never waits for the thread.
#[derive(Debug, Default)]
pub struct Stats {
    started: AtomicU64,
    refused: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    processed: AtomicU64,
    unknown_participant: AtomicU64,
    queue_full: AtomicU64,
    finished: AtomicU64,
}

impl Stats {
    fn store(&self, c: &Counters) {
        let pairs = [
            (&self.started, c.started),
            (&self.refused, c.refused),
            (&self.connected, c.connected),
            (&self.failed, c.failed),
            (&self.processed, c.processed),
            (&self.unknown_participant, c.unknown_participant),
            (&self.queue_full, c.queue_full),
            (&self.finished, c.finished),
        ];
        for (cell, v) in pairs {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// The counters as of the DTLS thread's last round.
    pub fn load(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            started: get(&self.started),
            refused: get(&self.refused),
            connected: get(&self.connected),
            failed: get(&self.failed),
            processed: get(&self.processed),
            unknown_participant: get(&self.unknown_participant),
            queue_full: get(&self.queue_full),
            finished: get(&self.finished),
        }
    }
}

struct Known {
    leg: DtlsLeg,
    src: SocketAddr,
    heard: Instant,
    awaiting: bool,
}

/// Starts the DTLS thread. It stops when every worker's sender is gone.
pub fn spawn(
    cert: Certificate,
    inbound: Receiver<Inbound>,
    orders: Receiver<Order>,
    socket: Socket,
    reports: Sender<DtlsReport>,
    stats: Arc<Stats>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dtls".into())
        .spawn(move || run(cert, &inbound, &orders, &socket, &reports, &stats))
}

fn run(
    cert: Certificate,
    inbound: &Receiver<Inbound>,
    orders: &Receiver<Order>,
    socket: &Socket,
    reports: &Sender<DtlsReport>,
    stats: &Stats,
) {
    let mut engine: Engine<u64> = Engine::new(cert, EngineConfig::default());
    let mut known: HashMap<u64, Known> = HashMap::new();
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        let wait = engine
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        crossbeam_channel::select! {
            recv(inbound) -> first => {
                let Ok(first) = first else {
                    return;
                };
                let now = Instant::now();
                accept(&mut engine, &mut known, reports, first, now);
                for more in inbound.try_iter().take(BUDGET * 4) {
                    accept(&mut engine, &mut known, reports, more, now);
                }
            }
            recv(orders) -> order => match order {
                Ok(Order::Fingerprints { session, fingerprints }) => {
                    if let Some(k) = known.get_mut(&session)
                        && k.awaiting
                    {
                        k.awaiting = !engine.set_fingerprints(session, fingerprints);
                    }
                }
                Err(_) => return,
            },
            default(wait) => {}
        }
        let now = Instant::now();
        while engine.process(now, BUDGET) > 0 {
            drain(&mut engine, &known, socket, reports);
        }
        engine.handle_timeout(now);
        drain(&mut engine, &known, socket, reports);
        stats.store(&engine.counters());
        if now.duration_since(last_sweep) > Duration::from_secs(5) {
            last_sweep = now;
            known.retain(|id, k| {
                let keep = now.duration_since(k.heard) < IDLE;
                if !keep {
                    engine.remove(*id);
                }
                keep
            });
        }
    }
}

fn accept(
    engine: &mut Engine<u64>,
    known: &mut HashMap<u64, Known>,
    reports: &Sender<DtlsReport>,
    msg: Inbound,
    now: Instant,
) {
    let id = msg.leg.session.id;
    let fingerprints = msg.leg.session.fingerprints.clone();
    match known.get_mut(&id) {
        Some(k) => {
            k.src = msg.src;
            k.heard = now;
            if k.awaiting
                && let Some(f) = &fingerprints
            {
                k.awaiting = !engine.set_fingerprints(id, f.to_vec());
            }
        }
        None => {
            let started = match &fingerprints {
                Some(f) => engine.start(id, f.to_vec(), now),
                None => engine.start_awaiting_fingerprints(id, now),
            };
            if started.is_err() {
                // Too many handshakes at once: the client retransmits its ClientHello.
                return;
            }
            report(reports, &msg.leg, DtlsState::Connecting, None, None);
            known.insert(
                id,
                Known {
                    leg: msg.leg,
                    src: msg.src,
                    heard: now,
                    awaiting: fingerprints.is_none(),
                },
            );
        }
    }
    engine.push(id, &msg.bytes);
}

fn drain(
    engine: &mut Engine<u64>,
    known: &HashMap<u64, Known>,
    socket: &Socket,
    reports: &Sender<DtlsReport>,
) {
    while let Some((id, output)) = engine.poll_output() {
        let Some(k) = known.get(&id) else {
            continue;
        };
        match output {
            Output::Transmit(bytes) => {
                // A lost flight is retransmitted by the handshake's timer.
                let _ = socket.send_to(&bytes, &SockAddr::from(k.src));
            }
            Output::Connected(keys) => match srtp_leg(&keys) {
                Ok(leg) => report_keys(reports, &k.leg, keys.profile.name(), leg),
                Err(e) => report(
                    reports,
                    &k.leg,
                    DtlsState::Failed,
                    None,
                    Some(format!("srtp keys: {e}")),
                ),
            },
            Output::Failed(f) => {
                let detail = engine.detail(id).map(str::to_owned);
                let why = match detail {
                    Some(d) => format!("{}: {d}", f.code()),
                    None => f.code().to_owned(),
                };
                report(reports, &k.leg, DtlsState::Failed, None, Some(why));
            }
            Output::Closed => {}
        }
    }
}

fn report(
    reports: &Sender<DtlsReport>,
    leg: &DtlsLeg,
    state: DtlsState,
    profile: Option<&'static str>,
    failure: Option<String>,
) {
    // The control thread is the only reader; if it is far behind, a state change is lost and
    // the API shows the previous one until the next.
    let _ = reports.try_send(DtlsReport {
        room: leg.room,
        participant: leg.participant.clone(),
        leg: leg.leg,
        session: leg.session.id,
        state,
        profile,
        failure,
        keys: None,
    });
}

fn report_keys(reports: &Sender<DtlsReport>, leg: &DtlsLeg, profile: &'static str, keys: SrtpLeg) {
    let _ = reports.try_send(DtlsReport {
        room: leg.room,
        participant: leg.participant.clone(),
        leg: leg.leg,
        session: leg.session.id,
        state: DtlsState::Connected,
        profile: Some(profile),
        failure: None,
        keys: Some(Arc::new(keys)),
    });
}

/// The SRTP side of DTLS keys: the relay (DTLS server) unprotects with the client's write key
/// and protects with the server's.
fn srtp_leg(keys: &crate::dtls::SrtpKeys) -> Result<SrtpLeg, srtp::Error> {
    let profile = [0x0001, 0x0007, 0x0008]
        .into_iter()
        .filter_map(srtp::Profile::from_id)
        .find(|p| p.name() == keys.profile.name())
        .ok_or(srtp::Error::BadKeyLength)?;
    let remote = srtp::MasterKey::new(profile, &keys.client.key, &keys.client.salt)?;
    let local = srtp::MasterKey::new(profile, &keys.server.key, &keys.server.salt)?;
    Ok(SrtpLeg {
        remote,
        egress: srtp::Egress::new(srtp::Keys::new(&local)?),
    })
}
