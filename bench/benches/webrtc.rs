//! What the WebRTC edge's control-side steps cost: reading a browser's SDP, building the
//! relay's answer, and one full DTLS-SRTP handshake (the DTLS thread's work per participant).
//! None of this is per packet.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay::dtls::{Certificate, Handshake, Limits, Output, fingerprint_of};
use relay::sdp::{self, CodecTable, HashFunction, IceCredentials, Local};

const CHROMIUM_OFFER: &str =
    include_str!("../../relay/src/sdp/testdata/chromium_publish_offer.sdp");

fn local(cert: &Certificate) -> Local {
    Local {
        ice: IceCredentials {
            ufrag: "evtj".into(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
        },
        fingerprint: cert.fingerprint().clone(),
        addresses: vec![
            "127.0.0.1:40000".parse().unwrap(),
            "[::1]:40000".parse().unwrap(),
        ],
        session_id: 1,
        session_version: 1,
    }
}

fn sdp(c: &mut Criterion) {
    let cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let local = local(&cert);
    let mut g = c.benchmark_group("sdp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_chromium_offer", |b| {
        b.iter(|| sdp::parse(black_box(CHROMIUM_OFFER)).unwrap())
    });
    let offer = sdp::parse(CHROMIUM_OFFER).unwrap();
    g.bench_function("answer_publish_and_write", |b| {
        b.iter(|| {
            let p = sdp::answer_publish(black_box(&offer), &CodecTable::new(), &local).unwrap();
            sdp::write(&p.answer)
        })
    });
    g.finish();
}

/// One handshake between our server and a dimpl client in memory: both sides' CPU (the client
/// does as much asymmetric crypto as the server), so an upper bound of the server's share.
fn dtls(c: &mut Criterion) {
    let server_cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let client_cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
    let expected = vec![fingerprint_of(
        HashFunction::Sha256,
        &client_cert.certificate,
    )];
    let config = Arc::new(dimpl::Config::default());
    let mut g = c.benchmark_group("dtls");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handshake_server_and_client", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut client = dimpl::Dtls::new_12(Arc::clone(&config), client_cert.clone(), now);
            client.set_active(true);
            let mut server = Handshake::new(&server_cert, expected.clone(), Limits::default(), now);
            let mut buf = vec![0u8; 2048];
            let mut connected = false;
            for _ in 0..20 {
                let mut to_server = Vec::new();
                client.handle_timeout(now).unwrap();
                loop {
                    match client.poll_output(&mut buf) {
                        dimpl::Output::Packet(p) => to_server.push(p.to_vec()),
                        dimpl::Output::Timeout(_) => break,
                        _ => {}
                    }
                }
                for d in to_server {
                    server.handle_datagram(now, &d);
                }
                while let Some(o) = server.poll_output() {
                    match o {
                        Output::Transmit(d) => client.handle_packet(&d).unwrap(),
                        Output::Connected(_) => connected = true,
                        o => panic!("{o:?}"),
                    }
                }
                if connected {
                    break;
                }
            }
            assert!(connected);
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = sdp, dtls }
criterion_main!(benches);
