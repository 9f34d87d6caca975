//! `relay::sdp` and `relay::dtls` with real browsers, end to end on loopback: the browser takes
//! the relay's publish answer, runs ICE against a tiny ICE-lite responder in the test (the
//! relay's own `packet::stun`), and completes DTLS with `dtls::Handshake` as the server, which
//! checks the browser's certificate against the fingerprint of its offer. Then the browser sends
//! SRTP. Each test runs in a network namespace of its own with only `lo`.
//!
//! Firefox is not here: in a namespace with only `lo` it gathered no ICE candidate even with
//! `media.peerconnection.ice.loopback` set, so its ICE failed before any DTLS.

mod webrtc;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use relay::dtls::{Certificate, Handshake, Limits, Output, SrtpKeys};
use relay::packet::stun;
use relay::sdp::{self, CodecTable, Fingerprint, IceCredentials, Local, Slot};
use serde_json::{Value, json};
use webrtc::{Peer, in_own_netns};

/// What the test's ICE-lite + DTLS server saw.
#[derive(Debug, Default)]
struct Served {
    stun_answered: usize,
    use_candidate: bool,
    keys: Option<SrtpKeys>,
    failure: Option<String>,
    srtp_after_keys: usize,
}

/// Serves STUN and DTLS on `socket` until `stop`, as the relay will: ICE-lite answers with the
/// participant's pwd, DTLS to the handshake.
/// Fingerprints that arrive on `late` (the subscribe answer) go to the handshake. `nominated` is
/// set when a check with USE-CANDIDATE arrives.
fn serve(
    socket: UdpSocket,
    mut hs: Handshake,
    pwd: String,
    late: mpsc::Receiver<Vec<Fingerprint>>,
    stop: Arc<AtomicBool>,
    nominated: Arc<AtomicBool>,
) -> Served {
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut served = Served::default();
    let mut buf = [0u8; 2048];
    let mut reply = [0u8; 512];
    let mut peer = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(fingerprints) = late.try_recv() {
            hs.set_fingerprints(fingerprints);
            drain(&socket, &mut hs, peer, &mut served);
        }
        let now = Instant::now();
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            hs.handle_timeout(now);
            drain(&socket, &mut hs, peer, &mut served);
            continue;
        };
        let datagram = &buf[..n];
        match datagram[0] {
            0..=3 => {
                let Ok(msg) = stun::Message::new_checked(datagram) else {
                    continue;
                };
                if msg.class() != stun::Class::Request
                    || msg.verify_integrity(pwd.as_bytes()).is_err()
                {
                    continue;
                }
                served.use_candidate |= msg.use_candidate();
                if msg.use_candidate() {
                    nominated.store(true, Ordering::Relaxed);
                }
                let response = stun::BindingResponse {
                    transaction_id: msg.transaction_id(),
                    mapped: from,
                    software: None,
                    integrity_key: pwd.as_bytes(),
                };
                let len = response.emit(&mut reply).unwrap();
                socket.send_to(&reply[..len], from).unwrap();
                served.stun_answered += 1;
            }
            20..=63 => {
                peer = Some(from);
                hs.handle_datagram(now, datagram);
                drain(&socket, &mut hs, peer, &mut served);
            }
            128..=191 if served.keys.is_some() => served.srtp_after_keys += 1,
            _ => {}
        }
    }
    served
}

fn drain(
    socket: &UdpSocket,
    hs: &mut Handshake,
    peer: Option<std::net::SocketAddr>,
    served: &mut Served,
) {
    while let Some(o) = hs.poll_output() {
        match o {
            Output::Transmit(d) => {
                socket.send_to(&d, peer.expect("only answers")).unwrap();
            }
            Output::Connected(keys) => served.keys = Some(keys),
            Output::Failed(f) => served.failure = Some(format!("{f:?}: {:?}", hs.detail())),
            Output::Closed => {}
        }
    }
}

/// Publishes from `peer` to a server in this test and returns (what the server saw, the
/// browser's last stats).
fn publish_and_connect(mut peer: Peer) -> (Served, Value) {
    let cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = Local {
        ice: IceCredentials {
            ufrag: "r3lA".to_owned(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
        },
        fingerprint: cert.fingerprint().clone(),
        addresses: vec![socket.local_addr().unwrap()],
        session_id: 42,
        session_version: 1,
    };
    let offer = peer.call(json!({"op": "publish_offer"}));
    let parsed = sdp::parse(offer["sdp"].as_str().unwrap()).unwrap();
    let publish = sdp::answer_publish(&parsed, &CodecTable::new(), &local).unwrap();
    let hs = Handshake::new(
        &cert,
        publish.remote.fingerprints.clone(),
        Limits::default(),
        Instant::now(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let nominated = Arc::new(AtomicBool::new(false));
    let server = {
        let (stop, pwd) = (Arc::clone(&stop), local.ice.pwd.clone());
        let nominated = Arc::clone(&nominated);
        let (_, late) = mpsc::channel();
        thread::spawn(move || serve(socket, hs, pwd, late, stop, nominated))
    };
    peer.call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stats = Value::Null;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        stats = peer.call(json!({"op": "stats", "id": offer["id"]}));
        let sending = stats["packetsSent"].as_u64().unwrap_or(0) > 20;
        // Chromium may call a pair connected a few checks before it nominates it.
        let done = sending && nominated.load(Ordering::Relaxed);
        if stats["connectionState"] == "failed" || (stats["connectionState"] == "connected" && done)
        {
            break;
        }
    }
    thread::sleep(Duration::from_millis(300)); // let some SRTP arrive
    stop.store(true, Ordering::Relaxed);
    (server.join().unwrap(), stats)
}

#[test]
fn chromium_completes_ice_and_dtls_with_the_relay_as_server() {
    if in_own_netns("chromium_completes_ice_and_dtls_with_the_relay_as_server") {
        return;
    }
    let (served, stats) = publish_and_connect(Peer::chromium());
    eprintln!("chromium: {served:?} {stats}");
    let keys = served
        .keys
        .unwrap_or_else(|| panic!("no keys: {:?}, browser {stats}", served.failure));
    assert!(
        served.use_candidate,
        "Chromium nominates with USE-CANDIDATE"
    );
    assert_eq!(stats["connectionState"], "connected");
    assert_eq!(stats["dtlsState"], "connected");
    assert_eq!(stats["dtlsRole"], "client", "the relay is the DTLS server");
    assert_eq!(stats["tlsVersion"], "FEFD", "DTLS 1.2");
    assert_eq!(stats["srtpCipher"].as_str(), Some(keys.profile.name()));
    assert_eq!(
        keys.profile,
        relay::dtls::SrtpProfile::AeadAes256Gcm,
        "the server's first choice"
    );
    assert!(
        served.srtp_after_keys > 0,
        "Chromium sends SRTP once connected"
    );
}

#[test]
fn chromium_answers_the_subscribe_offer_and_connects_with_the_relay_as_server() {
    if in_own_netns("chromium_answers_the_subscribe_offer_and_connects_with_the_relay_as_server") {
        return;
    }
    let mut peer = Peer::chromium();
    let cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = Local {
        ice: IceCredentials {
            ufrag: "sUb1".to_owned(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
        },
        fingerprint: cert.fingerprint().clone(),
        addresses: vec![socket.local_addr().unwrap()],
        session_id: 43,
        session_version: 1,
    };
    // The tracks of a captured Chromium publisher.
    let publisher = sdp::parse(include_str!(
        "../../relay/src/sdp/testdata/chromium_publish_offer.sdp"
    ))
    .unwrap();
    let publish = sdp::answer_publish(&publisher, &CodecTable::new(), &local).unwrap();
    let slots: Vec<Slot> = publish
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| Slot::Track {
            mid: i.to_string(),
            track: t.clone(),
        })
        .collect();
    let offer = sdp::offer_subscribe(&slots, &publish.table, &local).unwrap();
    // The relay offers: the handshake starts before the client's fingerprint is known.
    let hs = Handshake::new_awaiting_fingerprints(&cert, Limits::default(), Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let (late_tx, late) = mpsc::channel();
    let server = {
        let (stop, pwd) = (Arc::clone(&stop), local.ice.pwd.clone());
        let nominated = Arc::new(AtomicBool::new(false));
        thread::spawn(move || serve(socket, hs, pwd, late, stop, nominated))
    };
    let reply = peer.call(json!({"op": "answer", "sdp": sdp::write(&offer)}));
    // The browser starts ICE and DTLS now; the answer reaches the relay a little later.
    thread::sleep(Duration::from_millis(500));
    let answer =
        sdp::read_subscribe_answer(&sdp::parse(reply["sdp"].as_str().unwrap()).unwrap(), &offer)
            .unwrap();
    late_tx.send(answer.remote.fingerprints.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stats = Value::Null;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        stats = peer.call(json!({"op": "stats", "id": reply["id"]}));
        if stats["connectionState"] == "failed" || stats["dtlsState"] == "connected" {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let served = server.join().unwrap();
    eprintln!("chromium subscribe: {served:?} {stats}");
    let keys = served
        .keys
        .unwrap_or_else(|| panic!("no keys: {:?}, browser {stats}", served.failure));
    assert_eq!(stats["dtlsState"], "connected");
    assert_eq!(
        stats["dtlsRole"], "client",
        "actpass offer: the browser answers active"
    );
    assert_eq!(stats["srtpCipher"].as_str(), Some(keys.profile.name()));
}
