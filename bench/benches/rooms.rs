//! What a change costs the control plane as a function of the room it happens in: the control
//! core (`Core::handle`: validation, indexes, `route::compile` of what changed), the database
//! rows it derives (`Core::store_ops`, not the write), every worker applying the update
//! (`Table::apply`, two workers), and `Core::commit` (which drops what the change replaced).
//!
//! - `rooms_join`: one participant joins a subscribe-all room of n (fixed address, one audio
//!   track) and is timed; it then leaves, untimed, so every iteration sees the same room.
//! - `rooms_rule`: a rule naming one participant of a room of n is added and timed; it is then
//!   lifted, untimed.
//!
//! Targets (issue 12): a join into 10,000 at most 3x a join into 100; the rule in 10,000 at most
//! 3x the rule in 10.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use relay::config::Limits;
use relay::control::body::{IceBody, ParticipantBody, TrackBody};
use relay::control::core::{Command, Core, Now, Outcome, Restore};
use relay::route::{MediaKind, Table, Update};

/// Workers whose tables apply every update.
const WORKERS: usize = 2;

/// A control core holding one room of `n` participants, and the workers' tables.
struct Bench {
    core: Core,
    tables: Vec<Table>,
    clock: Now,
}

impl Bench {
    fn new(n: usize) -> Self {
        let clock = Now {
            wall: SystemTime::now(),
            mono: Instant::now(),
        };
        let limits = Limits {
            max_rooms: 10,
            max_participants: 20_000,
            max_tracks: 4,
            rule_changes_per_sec: 1_000_000_000,
            latch_timeout: Duration::from_secs(30),
            event_history: 100,
        };
        let media: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
        let core = Core::new(limits, WORKERS, media, Restore::default(), clock)
            .expect("an empty core starts");
        let mut b = Self {
            core,
            tables: (0..WORKERS).map(|_| Table::new()).collect(),
            clock,
        };
        b.carry_out(Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        });
        for i in 0..n {
            b.carry_out(join(i));
        }
        b
    }

    /// Handles a command and carries it out as the control thread does, minus the database
    /// write and the wait for acknowledgements.
    fn carry_out(&mut self, cmd: Command) -> Outcome {
        let geo = |_| None;
        let out = self
            .core
            .handle(self.clock, &geo, cmd)
            .expect("the command is accepted");
        black_box(self.core.store_ops());
        for table in &mut self.tables {
            for u in &out.updates {
                table.apply(u.clone());
            }
        }
        self.core.commit();
        out
    }
}

/// Participant `i` joins with a fixed address and one audio track, subscribing to everybody.
fn join(i: usize) -> Command {
    let port = 10_000 + (i % 50_000) as u16;
    let host = 1 + (i / 50_000) as u8;
    Command::PutParticipant {
        room: "r".into(),
        id: format!("p{i}"),
        body: ParticipantBody {
            address: Some(format!("10.0.{host}.1:{port}")),
            tracks: vec![TrackBody {
                ssrc: 1_000_000 + i as u32,
                kind: MediaKind::Audio,
            }],
            ..ParticipantBody::default()
        },
        fresh_ice: IceBody {
            ufrag: format!("uf{i}"),
            pwd: format!("{i:0>24}"),
        },
    }
}

fn leave(i: usize) -> Command {
    Command::DeleteParticipant {
        room: "r".into(),
        id: format!("p{i}"),
    }
}

fn rooms_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("rooms_join");
    for n in [100, 1_000, 10_000] {
        let mut b = Bench::new(n);
        // The newcomer is the only slot every worker indexes again.
        let out = b.carry_out(join(n));
        assert_eq!(b.core.sizes(), (1, n + 1));
        assert!(
            matches!(&out.updates[..], [Update::Room { slots, .. }] if slots.len() == 1),
            "a join changes one slot"
        );
        b.carry_out(leave(n));
        let mut next = n;
        g.bench_function(BenchmarkId::new("join", format!("members={n}")), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let start = Instant::now();
                    black_box(b.carry_out(join(next)));
                    spent += start.elapsed();
                    b.carry_out(leave(next));
                }
                spent
            })
        });
    }
    g.finish();
}

fn rooms_rule(c: &mut Criterion) {
    let mut g = c.benchmark_group("rooms_rule");
    for n in [10, 1_000, 10_000] {
        let mut b = Bench::new(n);
        let target = format!("p{}", n / 2);
        let body = serde_json::json!({
            "match": {"participants": [{"room": "r", "participant": target}]},
            "direction": "both",
            "basis": {"authority": "Bench", "reference": "1", "jurisdiction": "DE"},
            "expires_at": "2099-12-31T00:00:00Z"
        })
        .to_string()
        .into_bytes();
        let add = || Command::AddRule { body: body.clone() };
        let out = b.carry_out(add());
        let reply = out.reply.expect("a reply").1;
        assert_eq!(reply["participants_matched"], 1);
        let lift = |id: &serde_json::Value| Command::LiftRule {
            id: id.to_string(),
            body: br#"{"reason": "benchmark"}"#.to_vec(),
        };
        b.carry_out(lift(&reply["id"]));
        g.bench_function(
            BenchmarkId::new("one_participant", format!("members={n}")),
            |bench| {
                bench.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let out = b.carry_out(add());
                        spent += start.elapsed();
                        let id = out.reply.expect("a reply").1["id"].clone();
                        b.carry_out(lift(&id));
                    }
                    spent
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = rooms_join, rooms_rule
}
criterion_main!(benches);
