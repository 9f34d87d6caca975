//! Per-packet cost of the routing table: source lookup, fan-out planning, the miss path, and
//! STUN answers.
//!
//! One datagram per iteration. `emit` records each destination's address pointer and length in a
//! preallocated array, as the worker's send queue does, so the fan-out cost includes touching
//! every destination but no syscall.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;

use bench::fixtures::{self, PWD};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use relay::route::{DropReason, StunAction, StunGuard, Table, Verdict};

/// Room sizes of the fan-out sweep.
const SIZES: [usize; 3] = [2, 10, 100];
/// Other rooms in every table, so that the address index holds thousands of entries.
const OTHER_ROOMS: u32 = 999;

/// A send list as the worker keeps it: preallocated, address pointer and length per entry.
struct Sends {
    dests: [(*const u8, u32); 128],
    n: usize,
}

impl Sends {
    fn new() -> Self {
        Self {
            dests: [(std::ptr::null(), 0); 128],
            n: 0,
        }
    }

    /// Routes one datagram and records its destinations; returns the verdict.
    #[inline]
    fn route(&mut self, table: &Table, src: &SocketAddr, buf: &[u8]) -> Verdict {
        self.n = 0;
        let verdict = table.route(0, src, buf, |dest| {
            if let Some(slot) = self.dests.get_mut(self.n) {
                *slot = (dest.as_ptr().cast(), dest.len());
                self.n += 1;
            }
        });
        black_box(&self.dests[..self.n]);
        verdict
    }
}

fn route_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_fanout");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let table = fixtures::table(
            &fixtures::member_specs(fixtures::ROOM_ID.0, size),
            OTHER_ROOMS,
        );
        let src = fixtures::addr(fixtures::ROOM_ID.0, 0);
        let buf = fixtures::rtp(fixtures::audio_ssrc(0), &[], 0, fixtures::PAYLOAD_LEN, 0);
        let mut sends = Sends::new();
        assert_eq!(sends.route(&table, &src, &buf), Verdict::Forward(size - 1));
        g.bench_function(BenchmarkId::new("rtp", format!("members={size}")), |b| {
            b.iter(|| sends.route(&table, black_box(&src), black_box(&buf)))
        });
    }
    g.finish();
}

fn route_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_miss");
    g.throughput(Throughput::Elements(1));
    let buf = fixtures::rtp(0x5555, &[], 0, fixtures::PAYLOAD_LEN, 0);
    for others in [0, OTHER_ROOMS] {
        let table = fixtures::table(&fixtures::member_specs(fixtures::ROOM_ID.0, 10), others);
        let src = fixtures::stranger();
        let mut sends = Sends::new();
        let unknown = Verdict::Drop(DropReason::UnknownSource);
        assert_eq!(sends.route(&table, &src, &buf), unknown);
        let rooms = others + 1;
        g.bench_function(
            BenchmarkId::new("unknown_source", format!("rooms={rooms}")),
            |b| b.iter(|| sends.route(&table, black_box(&src), black_box(&buf))),
        );
    }
    g.finish();
}

fn route_rtcp(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_rtcp");
    g.throughput(Throughput::Elements(1));
    let size = 10;
    let table = fixtures::table(
        &fixtures::member_specs(fixtures::ROOM_ID.0, size),
        OTHER_ROOMS,
    );
    let publisher = fixtures::audio_ssrc(0);
    let receiver = fixtures::audio_ssrc(1);
    let mut sr_sdes = fixtures::rtcp_sr(publisher, fixtures::audio_ssrc(2));
    sr_sdes.extend_from_slice(&fixtures::rtcp_sdes(publisher));
    let cases = [
        // Follows the media to the 9 others, and its report block goes back to member 2
        // (already among them, so sent once).
        ("sr_sdes", 0, sr_sdes, size - 1),
        ("nack", 1, fixtures::rtcp_nack(receiver, publisher), 1),
        ("pli", 1, fixtures::rtcp_pli(receiver + 1, publisher + 1), 1),
        (
            "srtcp_encrypted",
            0,
            fixtures::srtcp_encrypted(publisher, receiver),
            size - 1,
        ),
    ];
    let mut sends = Sends::new();
    for (name, member, buf, sent) in &cases {
        let src = fixtures::addr(fixtures::ROOM_ID.0, *member);
        assert_eq!(
            sends.route(&table, &src, buf),
            Verdict::Forward(*sent),
            "{name}"
        );
        g.bench_function(BenchmarkId::new(*name, format!("members={size}")), |b| {
            b.iter(|| sends.route(&table, black_box(&src), black_box(buf)))
        });
    }
    g.finish();
}

fn route_stun(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_stun");
    g.throughput(Throughput::Elements(1));
    let table = fixtures::table(
        &fixtures::member_specs(fixtures::ROOM_ID.0, 10),
        OTHER_ROOMS,
    );
    // Member 3 checks consent from the address it is already bound to: no latch.
    let src = fixtures::addr(fixtures::ROOM_ID.0, 3);
    let ufrag = fixtures::ufrag(fixtures::ROOM_ID.0, 3);
    let good = fixtures::binding_request(&ufrag, PWD.as_bytes());
    let bad_password = fixtures::binding_request(&ufrag, b"not-the-password-at-all");
    let unknown_ufrag = fixtures::binding_request("nobody", PWD.as_bytes());
    let mut out = [0u8; 512];
    let mut guard = StunGuard::new();

    // The rate limit refills with time; a clock that moves a second per request keeps every
    // bucket full, so the HMAC paths are timed, not the limit.
    let mut now_ms = 1_000u64;
    let mut stun = |buf: &[u8], step: u64| {
        now_ms += step;
        table.stun(0, now_ms, &mut guard, &src, buf, &mut out)
    };
    assert!(matches!(
        stun(&good, 1_000),
        StunAction::Reply { latch: None, .. }
    ));
    let unauthorized = StunAction::Drop(DropReason::StunUnauthorized);
    assert_eq!(stun(&bad_password, 1_000), unauthorized);
    let unknown = StunAction::Drop(DropReason::StunUnknownUser);
    assert_eq!(stun(&unknown_ufrag, 1_000), unknown);

    g.bench_function("answer_success", |b| {
        b.iter(|| stun(black_box(&good), 1_000))
    });
    g.bench_function("bad_password", |b| {
        b.iter(|| stun(black_box(&bad_password), 1_000))
    });
    g.bench_function("unknown_ufrag", |b| {
        b.iter(|| stun(black_box(&unknown_ufrag), 1_000))
    });
    // A flood of bad requests from one source with the clock standing still: after the first
    // fifty, each costs the parse, the ufrag lookup and an empty bucket.
    let limited = StunAction::Drop(DropReason::StunRateLimited);
    for _ in 0..100 {
        stun(&bad_password, 0);
    }
    assert_eq!(stun(&bad_password, 0), limited);
    g.bench_function("rate_limited", |b| {
        b.iter(|| stun(black_box(&bad_password), 0))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = route_fanout, route_miss, route_rtcp, route_stun
}
criterion_main!(benches);
