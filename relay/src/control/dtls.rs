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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::{SockAddr, Socket};

use super::core::{DtlsReport, DtlsState};
use crate::dtls::{Certificate, Engine, EngineConfig, Output};
use crate::io::dtls::Inbound;
use crate::route::DtlsLeg;

/// A session's handshake is removed after this long without a datagram.
pub const IDLE: Duration = Duration::from_secs(120);
/// Datagrams fed to handshakes per round (one per session per round: fair between sources).
const BUDGET: usize = 64;

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
    socket: Socket,
    reports: Sender<DtlsReport>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dtls".into())
        .spawn(move || run(cert, &inbound, &socket, &reports))
}

fn run(
    cert: Certificate,
    inbound: &Receiver<Inbound>,
    socket: &Socket,
    reports: &Sender<DtlsReport>,
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
        match inbound.recv_timeout(wait) {
            Ok(first) => {
                let now = Instant::now();
                accept(&mut engine, &mut known, reports, first, now);
                for more in inbound.try_iter().take(BUDGET * 4) {
                    accept(&mut engine, &mut known, reports, more, now);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while engine.process(now, BUDGET) > 0 {
            drain(&mut engine, &known, socket, reports);
        }
        engine.handle_timeout(now);
        drain(&mut engine, &known, socket, reports);
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
            Output::Connected(keys) => {
                report(
                    reports,
                    &k.leg,
                    DtlsState::Connected,
                    Some(keys.profile.name()),
                    None,
                );
            }
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
    });
}
