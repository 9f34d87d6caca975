//! What drop rules cost: per packet (nothing that grows with the number of rules) and per
//! compilation of a whole room (start-up; a rule change compiles only the participants it
//! matches: see `rooms.rs`).
//!
//! Rooms are compiled as the control plane does it, with `route::compile`: for each member,
//! `RuleSet::effect` on its subject gives the rules that block it, mapped to the rules' live
//! counters, which clear its bits in the room's masks or stop its tracks.

mod common;

use std::hint::black_box;

use bench::fixtures::{self, Targets};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use relay::route::Verdict;

/// Rule counts of the sweep.
const RULES: [usize; 3] = [0, 10, 1_000];
/// Members of the room forwarded in.
const MEMBERS: usize = 10;

fn rules_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_forward");
    g.throughput(Throughput::Elements(1));
    let mut cases: Vec<(String, usize, Targets)> = RULES
        .iter()
        .map(|&n| (format!("rules={n}"), n, Targets::Elsewhere))
        .collect();
    cases.push((
        "rules=1000+1_receiver_blocked".to_owned(),
        1_000,
        Targets::OneReceiver,
    ));
    let src = fixtures::addr(fixtures::ROOM_ID.0, 0);
    let buf = fixtures::rtp(fixtures::audio_ssrc(0), &[], 0, fixtures::PAYLOAD_LEN, 0);
    for (name, n, targets) in cases {
        let set = fixtures::rule_set(n, targets);
        let counters = fixtures::rule_counters(&set);
        let specs = fixtures::member_specs(fixtures::ROOM_ID.0, MEMBERS);
        let table = fixtures::ruled_table(&specs, &set, &counters, 0);
        let blocked = usize::from(targets == Targets::OneReceiver);
        let mut sent = 0usize;
        let verdict = table.route(0, &src, &buf, |_| sent += 1);
        assert_eq!(verdict, Verdict::Forward(MEMBERS - 1 - blocked), "{name}");
        let mut dests = [(std::ptr::null::<u8>(), 0u32); MEMBERS];
        g.bench_function(
            BenchmarkId::new("rtp", format!("members={MEMBERS}/{name}")),
            |b| {
                b.iter(|| {
                    let mut k = 0;
                    let verdict = table.route(0, black_box(&src), black_box(&buf), |dest| {
                        if let Some(slot) = dests.get_mut(k) {
                            *slot = (dest.as_ptr().cast(), dest.len());
                            k += 1;
                        }
                    });
                    black_box(&dests[..k]);
                    verdict
                })
            },
        );
    }
    g.finish();
}

fn rules_effect(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_effect");
    g.throughput(Throughput::Elements(1));
    let unmatched = fixtures::participant(0);
    let matched = fixtures::participant(1);
    for n in RULES {
        // Nobody in the room is named: the common case on a join.
        let set = fixtures::rule_set(n, Targets::Elsewhere);
        let subject = fixtures::subject(&unmatched);
        assert!(set.effect(&subject).is_none());
        let id = BenchmarkId::new("unmatched", format!("rules={n}"));
        g.bench_function(id, |b| {
            b.iter(|| black_box(&set).effect(black_box(&subject)))
        });
        // The same rules plus one that names the subject.
        let set = fixtures::rule_set(n, Targets::OneReceiver);
        let subject = fixtures::subject(&matched);
        assert!(!set.effect(&subject).is_none());
        let id = BenchmarkId::new("matched", format!("rules={}", set.len()));
        g.bench_function(id, |b| {
            b.iter(|| black_box(&set).effect(black_box(&subject)))
        });
    }
    g.finish();
}

fn rules_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_compile");
    for members in [10, 100] {
        g.throughput(Throughput::Elements(members as u64));
        for n in [0, 1_000] {
            let set = fixtures::rule_set(n, Targets::OneReceiver);
            let counters = fixtures::rule_counters(&set);
            let specs = fixtures::member_specs(fixtures::ROOM_ID.0, members);
            let param = format!("members={members}/rules={}", set.len());
            // A whole room from scratch, rules applied: what start-up costs per room.
            g.bench_function(BenchmarkId::new("compile_all", &param), |b| {
                b.iter(|| {
                    fixtures::compile_room(fixtures::ROOM, black_box(&specs), &set, &counters).len()
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = rules_forward, rules_effect, rules_compile
}
criterion_main!(benches);
