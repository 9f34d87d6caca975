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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use relay::dtls::{Certificate, Handshake, Limits, Output, SrtpKeys};
use relay::packet::stun;
use relay::sdp::{self, CodecTable, IceCredentials, Local};
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
fn serve(socket: UdpSocket, mut hs: Handshake, pwd: String, stop: Arc<AtomicBool>) -> Served {
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut served = Served::default();
    let mut buf = [0u8; 2048];
    let mut reply = [0u8; 512];
    let mut peer = None;
    while !stop.load(Ordering::Relaxed) {
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
    let server = {
        let (stop, pwd) = (Arc::clone(&stop), local.ice.pwd.clone());
        thread::spawn(move || serve(socket, hs, pwd, stop))
    };
    peer.call(json!({"op": "set_answer", "id": offer["id"], "sdp": sdp::write(&publish.answer)}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stats = Value::Null;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        stats = peer.call(json!({"op": "stats", "id": offer["id"]}));
        let sending = stats["packetsSent"].as_u64().unwrap_or(0) > 20;
        if stats["connectionState"] == "failed"
            || (stats["connectionState"] == "connected" && sending)
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
