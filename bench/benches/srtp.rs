//! Per-packet cost of SRTP: sealing a copy of a clear RTP packet into a receiver's slot
//! (`Egress::protect_rtp`, what the relay does once per WebRTC receiver) and opening one in place
//! (`Ingress::unprotect_rtp`, once per packet from a WebRTC publisher), for each profile at an
//! audio-sized (200 B) and a video-sized (1,200 B) packet.
//!
//! Protect bumps the sequence number each iteration, since the egress refuses to seal one index
//! twice. Unprotect needs a fresh packet each iteration for the same reason (the replay window),
//! so criterion seals it in untimed set-up (`iter_batched_ref`).

mod common;

use std::hint::black_box;

use bench::fixtures;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use relay::srtp::{Egress, Ingress, Keys, MasterKey, Profile};

/// Whole RTP packet sizes: header and payload, before SRTP's tag.
const SIZES: [usize; 2] = [200, 1_200];

fn master(profile: Profile) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8).collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8).map(|b| !b).collect();
    MasterKey::new(profile, &key, &salt).expect("lengths are the profile's")
}

/// A clear RTP packet of `size` bytes (12-byte header).
fn clear(size: usize) -> Vec<u8> {
    fixtures::rtp(0x1111, &[], 0, size - 12, 0)
}

/// Writes the next sequence number into a clear packet.
fn next_seq(packet: &mut [u8], seq: &mut u16) {
    *seq = seq.wrapping_add(1);
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
}

fn protect(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_protect");
    g.throughput(Throughput::Elements(1));
    for profile in Profile::ALL {
        for size in SIZES {
            let mut egress = Egress::new(Keys::new(&master(profile)).expect("keys"));
            let mut packet = clear(size);
            let mut out = vec![0u8; size + profile.rtp_overhead()];
            let mut seq = 0u16;
            assert_eq!(egress.protect_rtp(&packet, &mut out), Ok(out.len()));
            g.bench_function(
                BenchmarkId::new(profile.name(), format!("bytes={size}")),
                |b| {
                    b.iter(|| {
                        next_seq(&mut packet, &mut seq);
                        egress.protect_rtp(black_box(&packet), black_box(&mut out))
                    })
                },
            );
        }
    }
    g.finish();
}

fn unprotect(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_unprotect");
    g.throughput(Throughput::Elements(1));
    for profile in Profile::ALL {
        for size in SIZES {
            let m = master(profile);
            let mut egress = Egress::new(Keys::new(&m).expect("keys"));
            let mut ingress = Ingress::new(Keys::new(&m).expect("keys"));
            let mut packet = clear(size);
            let mut seq = 0u16;
            let mut seal = || {
                next_seq(&mut packet, &mut seq);
                let mut out = vec![0u8; size + profile.rtp_overhead()];
                egress.protect_rtp(&packet, &mut out).expect("seals");
                out
            };
            let mut first = seal();
            assert_eq!(ingress.unprotect_rtp(&mut first), Ok(size));
            g.bench_function(
                BenchmarkId::new(profile.name(), format!("bytes={size}")),
                |b| {
                    b.iter_batched_ref(
                        &mut seal,
                        |buf| ingress.unprotect_rtp(black_box(buf)),
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = protect, unprotect
}
criterion_main!(benches);
