//! Per-packet cost of the packet layer: demux, RTP parse, RTCP classify, STUN verify.
//!
//! One datagram per iteration, so criterion's time per iteration is the time per packet.

mod common;

use std::hint::black_box;

use bench::fixtures;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay::packet::{demux, rtcp, rtp, stun};

fn demux(c: &mut Criterion) {
    let mut g = c.benchmark_group("demux");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, Vec<u8>, demux::Kind); 5] = [
        (
            "rtp",
            fixtures::rtp(0x1111, &[], 0, 160, 0),
            demux::Kind::Rtp,
        ),
        ("rtcp", fixtures::rtcp_rr(0x2222, 0x1111), demux::Kind::Rtcp),
        (
            "stun",
            fixtures::RFC5769_REQUEST.to_vec(),
            demux::Kind::Stun,
        ),
        // A DTLS 1.2 handshake record header.
        (
            "dtls",
            vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40],
            demux::Kind::Dtls,
        ),
        ("garbage", vec![0xff; 64], demux::Kind::Other),
    ];
    for (name, buf, kind) in &cases {
        assert_eq!(demux::classify(buf), *kind, "{name}");
        g.bench_function(*name, |b| b.iter(|| demux::classify(black_box(buf))));
    }
    g.finish();
}

fn rtp_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_parse");
    g.throughput(Throughput::Elements(1));
    for (name, buf) in fixtures::rtp_cases() {
        let p = rtp::Packet::new_checked(&buf[..]).expect("fixture parses");
        assert_eq!(p.ssrc(), rtp::Ssrc(0x1111), "{name}");
        assert_eq!(p.payload().len(), fixtures::PAYLOAD_LEN, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = rtp::Packet::new_checked(black_box(&buf[..])).ok()?;
                Some((p.ssrc(), p.payload().len()))
            })
        });
    }
    g.finish();
}

fn rtcp_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtcp_classify");
    g.throughput(Throughput::Elements(1));
    for (name, buf) in fixtures::rtcp_cases() {
        g.bench_function(name, |b| {
            b.iter(|| rtcp::classify(black_box(&buf[..])).is_ok())
        });
    }
    g.finish();
}

fn stun_rfc5769(c: &mut Criterion) {
    let mut g = c.benchmark_group("stun_rfc5769");
    g.throughput(Throughput::Elements(1));
    let buf = fixtures::RFC5769_REQUEST;
    let msg = stun::Message::new_checked(&buf[..]).expect("RFC 5769 request parses");
    assert_eq!(msg.verify_integrity(fixtures::RFC5769_PASSWORD), Ok(()));
    assert_eq!(msg.check_fingerprint(), Ok(()));

    g.bench_function("parse", |b| {
        b.iter(|| stun::Message::new_checked(black_box(&buf[..])).is_ok())
    });
    g.bench_function("integrity", |b| {
        b.iter(|| black_box(&msg).verify_integrity(black_box(fixtures::RFC5769_PASSWORD)))
    });
    g.bench_function("fingerprint", |b| {
        b.iter(|| black_box(&msg).check_fingerprint())
    });
    // What a worker does with an authenticated request before it answers.
    g.bench_function("parse_integrity_fingerprint", |b| {
        b.iter(|| {
            let msg = stun::Message::new_checked(black_box(&buf[..])).ok()?;
            msg.check_fingerprint().ok()?;
            msg.verify_integrity(black_box(fixtures::RFC5769_PASSWORD))
                .ok()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = demux, rtp_parse, rtcp_classify, stun_rfc5769
}
criterion_main!(benches);
