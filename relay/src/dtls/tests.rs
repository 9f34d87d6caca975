//! The relay's server handshake against dimpl as the client, in memory, with a clock we drive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::sdp::{Fingerprint, HashFunction};

/// A dimpl client (as Chrome would be: DTLS 1.2, client role) and its certificate fingerprint.
fn client(now: Instant) -> (dimpl::Dtls, dimpl::DtlsCertificate) {
    let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
    let mut dtls = dimpl::Dtls::new_12(Arc::new(dimpl::Config::default()), cert.clone(), now);
    dtls.set_active(true);
    (dtls, cert)
}

fn server_cert() -> Certificate {
    Certificate::generate(&mut StdRng::seed_from_u64(1)).unwrap()
}

/// Which direction a datagram travels, for loss and reordering filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

/// What a run ended with.
#[derive(Debug, Default)]
struct Run {
    server_keys: Option<SrtpKeys>,
    server_failure: Option<Failure>,
    client_keys: Option<(Vec<u8>, dimpl::SrtpProfile)>,
    client_connected: bool,
    datagrams: [usize; 2],
}

/// Drives `server` and `client` until both are connected, the server fails, or 60 simulated
/// seconds pass. `deliver(dir, n, datagram)` says whether the n-th datagram in that direction
/// arrives; `reorder` reverses each batch in flight.
fn run(
    server: &mut Handshake,
    client: &mut dimpl::Dtls,
    start: Instant,
    mut deliver: impl FnMut(Dir, usize, &[u8]) -> bool,
    reorder: bool,
) -> Run {
    let mut out = Run::default();
    let mut now = start;
    let mut buf = vec![0u8; 2048];
    for _ in 0..10_000 {
        // Client side: drain, collect what it sends.
        let mut to_server = Vec::new();
        let client_timeout = loop {
            match client.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => to_server.push(p.to_vec()),
                dimpl::Output::Timeout(t) => break Some(t),
                dimpl::Output::KeyingMaterial(km, profile) => {
                    out.client_keys = Some((km.to_vec(), profile));
                }
                dimpl::Output::Connected => out.client_connected = true,
                _ => {}
            }
        };
        if reorder {
            to_server.reverse();
        }
        for d in to_server {
            let n = out.datagrams[0];
            out.datagrams[0] += 1;
            if deliver(Dir::ToServer, n, &d) {
                server.handle_datagram(now, &d);
            }
        }
        // Server side: drain, deliver to the client.
        let mut to_client = Vec::new();
        while let Some(o) = server.poll_output() {
            match o {
                Output::Transmit(d) => to_client.push(d),
                Output::Connected(keys) => out.server_keys = Some(keys),
                Output::Failed(f) => out.server_failure = Some(f),
                Output::Closed => {}
            }
        }
        if reorder {
            to_client.reverse();
        }
        let sent = !to_client.is_empty();
        for d in to_client {
            let n = out.datagrams[1];
            out.datagrams[1] += 1;
            if deliver(Dir::ToClient, n, &d) {
                client.handle_timeout(now).unwrap();
                let _ = client.handle_packet(&d);
            }
        }
        if out.server_failure.is_some() || (out.server_keys.is_some() && out.client_connected) {
            return out;
        }
        if sent {
            continue; // let the client answer before time moves
        }
        if out.client_connected {
            return out; // the server connects before the client does; it may be awaiting SDP
        }
        // Nothing in flight: move the clock to the next timer.
        let next = [client_timeout, server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return out };
        now = now.max(next);
        if now > start + Duration::from_secs(60) {
            return out;
        }
        client.handle_timeout(now).unwrap();
        server.handle_timeout(now);
    }
    out
}

fn sha256(der: &[u8]) -> Fingerprint {
    fingerprint_of(HashFunction::Sha256, der)
}

#[test]
fn full_handshake_gives_both_sides_the_same_keys() {
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&cert.certificate)],
        Limits::default(),
        now,
    );
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    let keys = r.server_keys.expect("server connected");
    let (material, profile) = r.client_keys.expect("client got keys");
    assert!(r.client_connected);
    // dimpl offers all three profiles; as server we pick our first preference.
    assert_eq!(profile, dimpl::SrtpProfile::AEAD_AES_256_GCM);
    assert_eq!(keys.profile, SrtpProfile::AeadAes256Gcm);
    assert_eq!(
        keys,
        SrtpKeys::from_exporter(keys.profile, &material).unwrap()
    );
    assert_eq!(keys.client.key.len(), 32);
    assert_eq!(keys.server.salt.len(), 12);
    assert_ne!(keys.client.key, keys.server.key);
    assert_eq!(s.state(), State::Connected);
    // No cookie exchange: ClientHello, then the client's second flight (and nothing else unless
    // a retransmission was needed, which a lossless run never needs).
    assert!(r.datagrams[0] <= 6, "{:?}", r.datagrams);
}

#[test]
fn keying_material_is_sliced_as_rfc5764_says() {
    // RFC 5764 §4.2: client key, server key, client salt, server salt.
    let material: Vec<u8> = (0..60).collect();
    let keys = SrtpKeys::from_exporter(SrtpProfile::Aes128CmHmacSha1_80, &material).unwrap();
    assert_eq!(keys.client.key, (0..16).collect::<Vec<u8>>());
    assert_eq!(keys.server.key, (16..32).collect::<Vec<u8>>());
    assert_eq!(keys.client.salt, (32..46).collect::<Vec<u8>>());
    assert_eq!(keys.server.salt, (46..60).collect::<Vec<u8>>());
    assert!(SrtpKeys::from_exporter(SrtpProfile::AeadAes128Gcm, &material).is_none());
    let material: Vec<u8> = (0..88).collect();
    let keys = SrtpKeys::from_exporter(SrtpProfile::AeadAes256Gcm, &material).unwrap();
    assert_eq!(keys.server.key, (32..64).collect::<Vec<u8>>());
    assert_eq!(keys.server.salt, (76..88).collect::<Vec<u8>>());
}

#[test]
fn any_supported_hash_of_the_right_certificate_is_accepted() {
    for hash in [
        HashFunction::Sha1,
        HashFunction::Sha384,
        HashFunction::Sha512,
    ] {
        let now = Instant::now();
        let (mut c, cert) = client(now);
        let other = dimpl::certificate::generate_self_signed_certificate().unwrap();
        // A stale fingerprint next to the right one (RFC 8122 §5 allows several).
        let expected = vec![
            sha256(&other.certificate),
            fingerprint_of(hash, &cert.certificate),
        ];
        let mut s = Handshake::new(&server_cert(), expected, Limits::default(), now);
        let r = run(&mut s, &mut c, now, |_, _, _| true, false);
        assert!(r.server_keys.is_some(), "{hash:?}: {:?}", r.server_failure);
    }
}

#[test]
fn wrong_fingerprint_fails_without_keys() {
    let now = Instant::now();
    let (mut c, _cert) = client(now);
    let other = dimpl::certificate::generate_self_signed_certificate().unwrap();
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&other.certificate)],
        Limits::default(),
        now,
    );
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    assert_eq!(r.server_failure, Some(Failure::BadFingerprint));
    assert!(r.server_keys.is_none());
    assert_eq!(s.state(), State::Failed(Failure::BadFingerprint));
    assert_eq!(s.poll_timeout(), None);
    // Nothing more is processed.
    s.handle_datagram(now, &[22, 254, 253, 0, 0]);
    assert_eq!(s.ignored(), 1);
    assert_eq!(s.poll_output(), None);
}

#[test]
fn no_fingerprint_in_sdp_fails() {
    let now = Instant::now();
    let (mut c, _) = client(now);
    let mut s = Handshake::new(&server_cert(), vec![], Limits::default(), now);
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    assert_eq!(r.server_failure, Some(Failure::BadFingerprint));
}

#[test]
fn lost_flights_are_retransmitted() {
    // Lose the first ClientHello, the server's first flight, and the client's second flight
    // once each: every side's timers must bring the handshake back.
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&cert.certificate)],
        Limits::default(),
        now,
    );
    let mut lost = Vec::new();
    let r = run(
        &mut s,
        &mut c,
        now,
        |dir, n, d| {
            let drop = match dir {
                Dir::ToServer => n == 0 || n == 2,
                Dir::ToClient => n == 0,
            };
            if drop {
                lost.push((dir, d.len()));
            }
            !drop
        },
        false,
    );
    assert!(
        r.server_keys.is_some(),
        "{:?} {:?}",
        r.server_failure,
        s.detail()
    );
    assert!(r.client_connected);
    assert_eq!(lost.len(), 3);
    assert_eq!(r.server_keys.unwrap().profile, SrtpProfile::AeadAes256Gcm);
}

#[test]
fn lost_last_server_flight_is_sent_again_after_connecting() {
    // The server connects on the client's Finished; its own ChangeCipherSpec + Finished is lost.
    // The client retransmits its flight, and the connected server answers it again.
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&cert.certificate)],
        Limits::default(),
        now,
    );
    let mut server_connected_at = None;
    let mut dropped = 0;
    let r = run(
        &mut s,
        &mut c,
        now,
        |dir, n, _| {
            if dir == Dir::ToServer && n >= 1 && server_connected_at.is_none() {
                server_connected_at = Some(n);
            }
            // The first datagrams the server sends after the client's second flight arrive.
            let drop =
                dir == Dir::ToClient && server_connected_at.is_some() && dropped == 0 && n > 0;
            if drop {
                dropped += 1;
            }
            !drop
        },
        false,
    );
    assert_eq!(dropped, 1);
    assert!(r.server_keys.is_some());
    assert!(
        r.client_connected,
        "client never got the server's last flight again"
    );
}

#[test]
fn reordered_and_duplicated_datagrams_are_handled() {
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&cert.certificate)],
        Limits::default(),
        now,
    );
    let r = run(&mut s, &mut c, now, |_, _, _| true, true);
    assert!(r.server_keys.is_some(), "{:?}", r.server_failure);
    assert!(r.client_connected);
    // Duplicates of anything after connecting change nothing and produce no second key set.
    s.handle_datagram(now, &[23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 9, 0, 0]);
    while let Some(o) = s.poll_output() {
        assert!(matches!(o, Output::Transmit(_)), "{o:?}");
    }
    assert_eq!(s.state(), State::Connected);
}

#[test]
fn handshake_deadline_fails_a_silent_client() {
    let now = Instant::now();
    let limits = Limits::default();
    let mut s = Handshake::new(&server_cert(), vec![], limits, now);
    assert_eq!(s.poll_timeout(), Some(now + limits.max_duration));
    s.handle_timeout(now + limits.max_duration - Duration::from_millis(1));
    assert_eq!(s.state(), State::Connecting);
    s.handle_timeout(now + limits.max_duration);
    assert_eq!(
        s.poll_output(),
        Some(Output::Failed(Failure::HandshakeTimeout))
    );
    assert_eq!(Failure::HandshakeTimeout.code(), "handshake_timeout");
}

#[test]
fn garbage_records_are_refused_and_counted_up_to_the_limit() {
    let now = Instant::now();
    let limits = Limits {
        max_datagrams: 10,
        ..Limits::default()
    };
    let mut s = Handshake::new(&server_cert(), vec![], limits, now);
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..10 {
        let mut d = vec![0u8; 1 + i * 37];
        rand::RngCore::fill_bytes(&mut rng, &mut d);
        d[0] = 22; // handshake content type: reaches the record parser
        s.handle_datagram(now, &d);
    }
    assert_eq!(s.state(), State::Connecting, "{:?}", s.detail());
    s.handle_datagram(now, &[22]);
    assert_eq!(s.state(), State::Failed(Failure::TooManyRecords));
    let outputs: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
    assert_eq!(
        outputs.last(),
        Some(&Output::Failed(Failure::TooManyRecords))
    );
    assert!(outputs.iter().all(|o| !matches!(o, Output::Connected(_))));
}

#[test]
fn garbage_then_a_real_handshake_still_connects() {
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new(
        &server_cert(),
        vec![sha256(&cert.certificate)],
        Limits::default(),
        now,
    );
    for d in [&[22u8, 254, 253][..], &[20, 1], &[63; 40], &[23; 13]] {
        s.handle_datagram(now, d);
    }
    assert_eq!(s.state(), State::Connecting, "{:?}", s.detail());
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    assert!(
        r.server_keys.is_some(),
        "{:?} {:?}",
        r.server_failure,
        s.detail()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_datagrams_never_panic_or_connect(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
        content_type in 20u8..64,
    ) {
        let now = Instant::now();
        let mut s = Handshake::new(&server_cert(), vec![], Limits::default(), now);
        for (i, mut d) in datagrams.into_iter().enumerate() {
            if let Some(b) = d.first_mut() {
                *b = content_type;
            }
            s.handle_datagram(now + Duration::from_millis(i as u64), &d);
            while let Some(o) = s.poll_output() {
                prop_assert!(!matches!(o, Output::Connected(_)));
            }
        }
    }
}

#[test]
fn certificate_is_p256_with_a_random_serial_from_the_rng() {
    let a = Certificate::generate(&mut StdRng::seed_from_u64(42)).unwrap();
    let b = Certificate::generate(&mut StdRng::seed_from_u64(43)).unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(*a.fingerprint(), sha256(a.der()));
    let text = a.fingerprint().to_string();
    assert!(text.starts_with("sha-256 "));
    assert_eq!(text.len(), "sha-256 ".len() + 32 * 3 - 1);
    assert_eq!(Fingerprint::parse(&text).unwrap(), *a.fingerprint());
    // The serial is the 16 bytes the rng gave, made positive: find it in the DER as an INTEGER.
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut StdRng::seed_from_u64(42), &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let mut integer = vec![0x02, 16];
    integer.extend_from_slice(&serial);
    assert!(
        a.der().windows(integer.len()).any(|w| w == integer),
        "serial not in the DER"
    );
    // id-ecPublicKey with prime256v1 (1.2.840.10045.3.1.7) and ecdsa-with-SHA256.
    let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let ecdsa_sha256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    assert!(a.der().windows(p256.len()).any(|w| w == p256));
    assert!(
        a.der()
            .windows(ecdsa_sha256.len())
            .any(|w| w == ecdsa_sha256)
    );
    assert!(!format!("{a:?}").contains("private"));
}

/// An engine with participants 1..=n connecting against dimpl clients.
fn connect_many(engine: &mut Engine<u32>, n: u32, now: Instant) -> Vec<(u32, dimpl::Dtls)> {
    (1..=n)
        .map(|id| {
            let (c, cert) = client(now);
            engine
                .start(id, vec![sha256(&cert.certificate)], now)
                .unwrap();
            (id, c)
        })
        .collect()
}

/// One exchange round between the engine and its clients, without loss.
fn engine_round(engine: &mut Engine<u32>, clients: &mut [(u32, dimpl::Dtls)], now: Instant) {
    let mut buf = vec![0u8; 2048];
    for (id, c) in clients.iter_mut() {
        c.handle_timeout(now).unwrap();
        loop {
            match c.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => {
                    engine.push(*id, p);
                }
                dimpl::Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
}

fn deliver_engine_outputs(
    engine: &mut Engine<u32>,
    clients: &mut [(u32, dimpl::Dtls)],
    now: Instant,
    connected: &mut Vec<u32>,
    failed: &mut Vec<(u32, Failure)>,
) {
    while let Some((id, o)) = engine.poll_output() {
        match o {
            Output::Transmit(d) => {
                if let Some((_, c)) = clients.iter_mut().find(|(i, _)| *i == id) {
                    let _ = c.handle_packet(&d);
                }
            }
            Output::Connected(_) => connected.push(id),
            Output::Failed(f) => failed.push((id, f)),
            Output::Closed => {}
        }
    }
    let _ = now;
}

#[test]
fn engine_serves_a_flooded_thread_fairly() {
    let now = Instant::now();
    let config = EngineConfig {
        max_handshakes: 8,
        queue_per_participant: 4,
        limits: Limits {
            max_datagrams: 32,
            ..Limits::default()
        },
    };
    let mut engine = Engine::new(server_cert(), config);
    let mut clients = connect_many(&mut engine, 3, now);
    // Participant 99 floods from its latched source: it gets a handshake like everyone else.
    engine.start(99, vec![], now).unwrap();
    let mut connected = Vec::new();
    let mut failed = Vec::new();
    let mut flood_queued = 0;
    let mut flood_refused = 0;
    for round in 0..40 {
        let t = now + Duration::from_millis(round);
        // 100 datagrams from the flooder per round, against a budget of 8 per round.
        for i in 0..100u32 {
            let mut d = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];
            d.extend_from_slice(&i.to_be_bytes());
            match engine.push(99, &d) {
                PushResult::Queued => flood_queued += 1,
                _ => flood_refused += 1,
            }
        }
        engine_round(&mut engine, &mut clients, t);
        engine.process(t, 8);
        deliver_engine_outputs(&mut engine, &mut clients, t, &mut connected, &mut failed);
    }
    connected.sort();
    assert_eq!(connected, vec![1, 2, 3], "failures: {failed:?}");
    // The flooder: at most its queue per round, and failed at its datagram limit.
    assert!(flood_queued <= 4 * 40, "{flood_queued}");
    assert_eq!(failed, vec![(99, Failure::TooManyRecords)]);
    let counters = engine.counters();
    assert_eq!(counters.connected, 3);
    assert_eq!(counters.failed, 1);
    assert_eq!(counters.queue_full + counters.finished, flood_refused);
    assert!(
        counters.finished > 0 && counters.queue_full > 0,
        "{counters:?}"
    );
    assert_eq!(engine.connecting(), 0);
}

#[test]
fn engine_bounds_concurrent_handshakes() {
    let now = Instant::now();
    let config = EngineConfig {
        max_handshakes: 2,
        ..EngineConfig::default()
    };
    let mut engine: Engine<u32> = Engine::new(server_cert(), config);
    engine.start(1, vec![], now).unwrap();
    engine.start(2, vec![], now).unwrap();
    assert_eq!(
        engine.start(3, vec![], now),
        Err(StartError::TooManyHandshakes)
    );
    // Restarting one that is connecting is not a new one.
    engine.start(2, vec![], now).unwrap();
    assert_eq!(engine.counters().refused, 1);
    assert_eq!(engine.push(3, &[22]), PushResult::UnknownParticipant);
    // When one times out, there is room again.
    engine.handle_timeout(now + Limits::default().max_duration);
    let mut outputs: Vec<_> = std::iter::from_fn(|| engine.poll_output()).collect();
    outputs.sort_by_key(|(id, _)| *id);
    let timeout = || Output::Failed(Failure::HandshakeTimeout);
    assert_eq!(outputs, vec![(1, timeout()), (2, timeout())]);
    engine.start(3, vec![], now).unwrap();
    assert_eq!(engine.push(1, &[22]), PushResult::Finished);
    engine.remove(1);
    assert_eq!(engine.state(1), None);
    assert_eq!(engine.state(3), Some(State::Connecting));
}

#[test]
fn engine_connects_many_in_round_robin() {
    let now = Instant::now();
    let mut engine = Engine::new(server_cert(), EngineConfig::default());
    let mut clients = connect_many(&mut engine, 5, now);
    let mut connected = Vec::new();
    let mut failed = Vec::new();
    for round in 0..10 {
        let t = now + Duration::from_millis(round);
        engine_round(&mut engine, &mut clients, t);
        engine.process(t, 2); // a small budget: everyone still progresses
        deliver_engine_outputs(&mut engine, &mut clients, t, &mut connected, &mut failed);
    }
    connected.sort();
    assert_eq!(connected, vec![1, 2, 3, 4, 5], "{failed:?}");
    assert!(engine.poll_timeout().is_some());
}

#[test]
fn fingerprints_may_arrive_after_the_handshake() {
    // The subscribe flow: the relay offered, the client starts DTLS before its answer (with
    // its fingerprint) reaches the relay.
    let now = Instant::now();
    let (mut c, cert) = client(now);
    let mut s = Handshake::new_awaiting_fingerprints(&server_cert(), Limits::default(), now);
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    assert!(r.client_connected, "the client completes on the wire");
    assert!(r.server_keys.is_none() && r.server_failure.is_none());
    assert_eq!(s.state(), State::Connecting);
    s.set_fingerprints(vec![sha256(&cert.certificate)]);
    let Some(Output::Connected(keys)) = s.poll_output() else {
        panic!("{:?}", s.detail())
    };
    let (material, _) = r.client_keys.unwrap();
    assert_eq!(
        Some(keys),
        SrtpKeys::from_exporter(SrtpProfile::AeadAes256Gcm, &material)
    );
    assert_eq!(s.state(), State::Connected);
}

#[test]
fn late_fingerprints_that_do_not_match_fail() {
    let now = Instant::now();
    let (mut c, _) = client(now);
    let mut s = Handshake::new_awaiting_fingerprints(&server_cert(), Limits::default(), now);
    let r = run(&mut s, &mut c, now, |_, _, _| true, false);
    assert!(r.client_connected);
    let other = dimpl::certificate::generate_self_signed_certificate().unwrap();
    s.set_fingerprints(vec![sha256(&other.certificate)]);
    assert_eq!(
        s.poll_output(),
        Some(Output::Failed(Failure::BadFingerprint))
    );
    // And a client that never answers its SDP runs into the deadline.
    let (mut c, _) = client(now);
    let mut s = Handshake::new_awaiting_fingerprints(&server_cert(), Limits::default(), now);
    run(&mut s, &mut c, now, |_, _, _| true, false);
    s.handle_timeout(now + Limits::default().max_duration);
    assert_eq!(
        s.poll_output(),
        Some(Output::Failed(Failure::HandshakeTimeout))
    );
}

#[test]
fn engine_takes_fingerprints_later() {
    let now = Instant::now();
    let mut engine = Engine::new(server_cert(), EngineConfig::default());
    let (c, cert) = client(now);
    engine.start_awaiting_fingerprints(1, now).unwrap();
    let mut clients = vec![(1, c)];
    let (mut connected, mut failed) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let t = now + Duration::from_millis(round);
        engine_round(&mut engine, &mut clients, t);
        engine.process(t, 8);
        deliver_engine_outputs(&mut engine, &mut clients, t, &mut connected, &mut failed);
    }
    assert!(connected.is_empty() && failed.is_empty());
    assert!(engine.set_fingerprints(1, vec![sha256(&cert.certificate)]));
    deliver_engine_outputs(&mut engine, &mut clients, now, &mut connected, &mut failed);
    assert_eq!(connected, vec![1]);
    assert!(!engine.set_fingerprints(2, vec![]));
}
