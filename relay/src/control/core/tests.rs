//! The control core without I/O: commands in, outcomes out, rollback exact.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::control::body::{SubscribeBody, TrackBody};

fn limits() -> Limits {
    Limits {
        max_rooms: 10,
        max_participants: 5,
        max_tracks: 4,
        rule_changes_per_sec: 100,
        latch_timeout: Duration::from_secs(2),
        event_history: 100,
    }
}

struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            mono: Instant::now(),
        }
    }
    fn now(&self) -> Now {
        Now {
            wall: self.wall,
            mono: self.mono,
        }
    }
    fn advance(&mut self, d: Duration) {
        self.wall += d;
        self.mono += d;
    }
}

fn no_geo(_: IpAddr) -> Option<[u8; 2]> {
    None
}

fn core(clock: &Clock) -> Core {
    Core::new(
        limits(),
        2,
        "127.0.0.1:40000".parse().unwrap(),
        Restore::default(),
        clock.now(),
    )
    .unwrap()
}

fn ice(n: u8) -> IceBody {
    IceBody {
        ufrag: format!("ufrag{n}"),
        pwd: format!("{:0>24}", n),
    }
}

/// Handles a command and settles it as carried out; returns the reply.
fn run(
    core: &mut Core,
    clock: &Clock,
    cmd: Command,
) -> Result<(u16, serde_json::Value, Vec<Event>), ApiError> {
    let out = core.handle(clock.now(), &no_geo, cmd)?;
    core.commit();
    let (s, v) = out.reply.unwrap_or((204, serde_json::Value::Null));
    Ok((s, v, out.events))
}

fn join(
    core: &mut Core,
    clock: &Clock,
    room: &str,
    id: &str,
    n: u8,
    addr: Option<&str>,
    ssrc: u32,
) -> (u16, serde_json::Value) {
    let body = ParticipantBody {
        address: addr.map(str::to_owned),
        tracks: vec![TrackBody {
            ssrc,
            kind: crate::route::MediaKind::Audio,
        }],
        ..ParticipantBody::default()
    };
    let (s, v, _) = run(
        core,
        clock,
        Command::PutParticipant {
            room: room.into(),
            id: id.into(),
            body,
            fresh_ice: ice(n),
        },
    )
    .unwrap();
    (s, v)
}

#[test]
fn rooms_and_participants_with_events_and_writes() {
    let clock = Clock::new();
    let mut c = core(&clock);
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutRoom {
                room: "r".into(),
                plain_legs: None,
            },
        )
        .unwrap();
    assert_eq!(out.reply.as_ref().unwrap().0, 201);
    assert_eq!(out.events[0].kind, "room_created");
    assert_eq!(c.store_ops().len(), 1, "the room is written");
    assert!(c.changed().is_empty() || c.changed().rooms.contains("r"));
    c.commit();
    let (s, _) = join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    assert_eq!(s, 201);
    let (s, v) = join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    assert_eq!(s, 200, "replaced");
    assert_eq!(v["address_set"], true);
    assert_eq!(c.sizes(), (1, 1));
    // The written record never holds the address.
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PatchParticipant {
                room: "r".into(),
                id: "a".into(),
                patch: ParticipantPatch {
                    region: Some(Some("HK".into())),
                    ..ParticipantPatch::default()
                },
            },
        )
        .unwrap();
    assert_eq!(out.events[0].kind, "participant_changed");
    let ops = c.store_ops();
    assert_eq!(ops.len(), 1);
    let StoreOp::PutParticipant(rec) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert!(!rec.state.contains("127.0.0.1"), "{}", rec.state);
    assert!(rec.state.contains("HK"));
    c.commit();
}

#[test]
fn refused_commands_change_nothing() {
    let clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutParticipant {
                room: "r".into(),
                id: "b".into(),
                body: ParticipantBody {
                    tracks: vec![TrackBody {
                        ssrc: 1,
                        kind: crate::route::MediaKind::Video,
                    }],
                    ..ParticipantBody::default()
                },
                fresh_ice: ice(2),
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::SsrcInUse);
    assert!(c.journal.is_empty());
    assert!(c.changed().is_empty());
    assert_eq!(c.sizes(), (1, 1));
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::DeleteRoom { room: "zz".into() },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutRoom {
                room: "a b".into(),
                plain_legs: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidId);
}

#[test]
fn rollback_restores_everything_and_names_the_rooms_to_republish() {
    let clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    join(&mut c, &clock, "r", "b", 2, Some("127.0.0.1:5002"), 2);
    let before = serde_json::to_value(c.room_view("r").unwrap()).unwrap();

    // Closing the room, then failing to carry it out.
    c.handle(
        clock.now(),
        &no_geo,
        Command::DeleteRoom { room: "r".into() },
    )
    .unwrap();
    assert_eq!(c.sizes(), (0, 0));
    let changed = c.changed();
    assert_eq!(changed.removed.len(), 1);
    assert!(c.store_ops().contains(&StoreOp::DeleteRoom("r".into())));
    let back = c.rollback();
    assert!(
        matches!(&back[..], [Update::Room { slots, .. }] if slots.len() == 2),
        "the closed room is installed again, whole: {back:?}"
    );
    assert_eq!(c.sizes(), (1, 2));
    let after = serde_json::to_value(c.room_view("r").unwrap()).unwrap();
    assert_eq!(before, after);
    // The indexes came back too: the address is still taken.
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutParticipant {
                room: "r".into(),
                id: "c".into(),
                body: ParticipantBody {
                    address: Some("127.0.0.1:5000".into()),
                    ..ParticipantBody::default()
                },
                fresh_ice: ice(3),
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::AddressInUse);

    // A rule added and rolled back is gone, and its id is never shown.
    let rule = json!({"match": {"participants": [{"room": "r", "participant": "a"}]},
        "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
        "expires_at": "2030-01-01T00:00:00Z"});
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::AddRule {
                body: rule.to_string().into_bytes(),
            },
        )
        .unwrap();
    assert_eq!(out.reply.unwrap().0, 201);
    assert!(
        c.changed().rooms.contains("r"),
        "the rule's room recompiles"
    );
    assert!(matches!(c.store_ops()[0], StoreOp::AddRule { .. }));
    c.rollback();
    assert!(c.rule_metrics().is_empty());
    let (_, v, _) = run(&mut c, &clock, Command::ListRules).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 0);
}

#[test]
fn rules_apply_lift_and_expire() {
    let mut clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    let rule = json!({"match": {"participants": [{"room": "r", "participant": "a"}]},
        "direction": "send",
        "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
        "expires_at": "2027-01-15T08:00:10Z"});
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::AddRule {
                body: rule.to_string().into_bytes(),
            },
        )
        .unwrap();
    let id = out.reply.as_ref().unwrap().1["id"].as_u64().unwrap();
    assert!(c.changed().rooms.contains("r"));
    assert!(
        matches!(&out.updates[..], [Update::Room { slots, .. }] if **slots == [0]),
        "one participant changed: {:?}",
        out.updates
    );
    c.commit();
    let (_, v, _) = run(&mut c, &clock, Command::GetRule { id: id.to_string() }).unwrap();
    assert_eq!(v["participants_matched"], 1);
    assert_eq!(v["state"], "active");

    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::LiftRule {
                id: id.to_string(),
                body: br#"{"reason": ""}"#.to_vec(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidReason);
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::LiftRule {
                id: "77".into(),
                body: br#"{"reason": "x"}"#.to_vec(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::RuleNotFound);

    // Expiry: the tick after its time marks it expired and recompiles its room.
    clock.advance(Duration::from_secs(3600 * 24 * 400));
    let out = c.handle(clock.now(), &no_geo, Command::Tick).unwrap();
    assert!(out.events.iter().any(|e| e.kind == "rule_expired"));
    assert!(c.changed().rooms.contains("r"));
    assert!(
        c.store_ops()
            .iter()
            .any(|o| matches!(o, StoreOp::ExpireRule { .. }))
    );
    c.commit();
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::LiftRule {
                id: id.to_string(),
                body: br#"{"reason": "x"}"#.to_vec(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::RuleNotActive);
}

#[test]
fn latching_moves_addresses_and_silence_unlatches() {
    let mut clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    join(&mut c, &clock, "r", "a", 1, None, 1);
    join(&mut c, &clock, "r", "b", 2, Some("127.0.0.1:6000"), 2);
    let room = c.rooms["r"].id;
    let latch = |p: &str, port: u16| {
        Command::Latch(crate::route::Latch {
            room,
            participant: p.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            leg: crate::route::Leg::Main,
        })
    };
    let (_, _, events) = run(&mut c, &clock, latch("a", 5000)).unwrap();
    assert_eq!(events[0].kind, "participant_latched");
    assert!(!events[0].data.to_string().contains("127.0.0.1"));
    // a takes b's address: b is unlatched with the reason, a holds it.
    let (_, _, events) = run(&mut c, &clock, latch("a", 6000)).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["participant_unlatched", "participant_latched"]);
    assert_eq!(events[0].data["reason"], "address_taken");
    let (_, v, _) = run(
        &mut c,
        &clock,
        Command::GetParticipant {
            room: "r".into(),
            id: "b".into(),
        },
    )
    .unwrap();
    assert_eq!(v["address_set"], false);
    // Silence past the latch timeout unlatches a.
    run(&mut c, &clock, Command::Tick).unwrap();
    clock.advance(Duration::from_secs(3));
    let (_, _, events) = run(&mut c, &clock, Command::Tick).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "participant_unlatched" && e.data["reason"] == "timeout")
    );
}

#[test]
fn restored_participants_come_back_without_addresses() {
    let clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    let out = c.handle(
        clock.now(),
        &no_geo,
        Command::PutRoom {
            room: "q".into(),
            plain_legs: None,
        },
    );
    assert!(out.is_ok());
    let room_op = c.store_ops();
    c.commit();
    join(&mut c, &clock, "r", "a", 1, Some("127.0.0.1:5000"), 1);
    let rec = c.rooms["r"].participants["a"].record("r", "a");
    let StoreOp::PutRoom(room) = &room_op[0] else {
        panic!()
    };
    let restore = Restore {
        rooms: vec![crate::store::RoomRecord {
            room: "r".into(),
            created_at: room.created_at.clone(),
            state: room.state.clone(),
        }],
        participants: vec![rec],
        ..Restore::default()
    };
    let c2 = Core::new(
        limits(),
        2,
        "127.0.0.1:40000".parse().unwrap(),
        restore,
        clock.now(),
    )
    .unwrap();
    let v = serde_json::to_value(c2.room_view("r").unwrap()).unwrap();
    assert_eq!(v["participants"][0]["participant"], "a");
    assert_eq!(v["participants"][0]["address_set"], false);
    assert_eq!(v["participants"][0]["ice"]["ufrag"], "ufrag1");
    assert_eq!(
        v["participants"][0]["tracks"],
        json!([{"ssrc": 1, "kind": "audio"}])
    );
    assert!(
        matches!(&c2.install_all()[..], [Update::Room { room, slots, .. }] if room.len() == 1 && slots.len() == 1)
    );
    assert!(matches!(SubscribeBody::ALL, SubscribeBody::All(_)));
}

#[test]
fn draining_refuses_new_rooms_only() {
    let clock = Clock::new();
    let mut c = core(&clock);
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    let (_, v, events) = run(&mut c, &clock, Command::Drain { on: true }).unwrap();
    assert_eq!(v["draining"], true);
    assert_eq!(events[0].kind, "drain_started");
    let e = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutRoom {
                room: "s".into(),
                plain_legs: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.code, Code::Draining);
    let (s, _, _) = run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    assert_eq!(s, 200, "an existing room is fine");
    join(&mut c, &clock, "r", "a", 1, None, 1);
}

/// Joins participant `id` with a fixed address on port `port`, one audio track `ssrc`, and
/// the given subscription; returns the updates it published.
fn join_with(
    c: &mut Core,
    clock: &Clock,
    id: &str,
    port: u16,
    ssrc: u32,
    subscribe: SubscribeBody,
) -> Vec<Update> {
    let body = ParticipantBody {
        address: Some(format!("127.0.0.1:{port}")),
        tracks: vec![TrackBody {
            ssrc,
            kind: crate::route::MediaKind::Audio,
        }],
        subscribe: Some(subscribe),
        ..ParticipantBody::default()
    };
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::PutParticipant {
                room: "r".into(),
                id: id.into(),
                body,
                fresh_ice: IceBody {
                    ufrag: format!("u-{id}"),
                    pwd: format!("{id:0>24}"),
                },
            },
        )
        .unwrap();
    out.updates
}

fn only(ids: &[&str]) -> SubscribeBody {
    SubscribeBody::Only(ids.iter().map(|s| (*s).to_owned()).collect())
}

fn big_limits() -> Limits {
    Limits {
        max_participants: 1_000,
        ..limits()
    }
}

/// Where an RTP packet from each port goes through `table`, for every port in `ports`.
fn routes(table: &crate::route::Table, ports: &[u16], ssrc: impl Fn(u16) -> u32) -> Vec<Vec<u16>> {
    ports
        .iter()
        .map(|&p| {
            let mut b = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
            b.extend_from_slice(&ssrc(p).to_be_bytes());
            let mut out = Vec::new();
            let src = format!("127.0.0.1:{p}").parse().unwrap();
            table.route(0, &src, &b, |d| out.push(d.as_socket().unwrap().port()));
            out.sort_unstable();
            out
        })
        .collect()
}

#[test]
fn a_join_updates_only_its_slot_and_those_who_listed_it() {
    let clock = Clock::new();
    let mut c = Core::new(
        big_limits(),
        2,
        "127.0.0.1:40000".parse().unwrap(),
        Restore::default(),
        clock.now(),
    )
    .unwrap();
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    for i in 0..200u16 {
        join_with(
            &mut c,
            &clock,
            &format!("m{i}"),
            10_000 + i,
            u32::from(i),
            SubscribeBody::ALL,
        );
        c.commit();
    }
    // Two selective subscribers list somebody who has not joined yet.
    join_with(&mut c, &clock, "fan1", 9_001, 9_001, only(&["star"]));
    c.commit();
    join_with(&mut c, &clock, "fan2", 9_002, 9_002, only(&["star", "m3"]));
    c.commit();
    let updates = join_with(&mut c, &clock, "star", 9_000, 9_000, SubscribeBody::ALL);
    c.commit();
    let [Update::Room { room, slots, .. }] = &updates[..] else {
        panic!("{updates:?}");
    };
    assert_eq!(room.len(), 203);
    let star = c.rooms["r"].participants["star"].slot;
    let fans = [
        c.rooms["r"].participants["fan1"].slot,
        c.rooms["r"].participants["fan2"].slot,
    ];
    let mut want = [star, fans[0], fans[1]];
    want.sort_unstable();
    assert_eq!(
        &**slots,
        &want[..],
        "the newcomer and the two who listed it"
    );
    // A rule naming one participant touches that one only.
    let rule = json!({"match": {"participants": [{"room": "r", "participant": "m150"}]},
        "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
        "expires_at": "2030-01-01T00:00:00Z"});
    let out = c
        .handle(
            clock.now(),
            &no_geo,
            Command::AddRule {
                body: rule.to_string().into_bytes(),
            },
        )
        .unwrap();
    let m150 = c.rooms["r"].participants["m150"].slot;
    assert!(
        matches!(&out.updates[..], [Update::Room { slots, .. }] if **slots == [m150]),
        "{:?}",
        out.updates
    );
    assert_eq!(out.reply.unwrap().1["participants_matched"], 1);
    c.commit();
}

#[test]
fn rollback_puts_every_worker_back_on_what_the_core_holds() {
    use crate::route::Table;
    let clock = Clock::new();
    let mut c = Core::new(
        big_limits(),
        2,
        "127.0.0.1:40000".parse().unwrap(),
        Restore::default(),
        clock.now(),
    )
    .unwrap();
    run(
        &mut c,
        &clock,
        Command::PutRoom {
            room: "r".into(),
            plain_legs: None,
        },
    )
    .unwrap();
    let mut worker = Table::new();
    for u in c.install_all() {
        worker.apply(u);
    }
    let mut ports: Vec<u16> = Vec::new();
    for i in 0..70u16 {
        let subscribe = if i % 9 == 4 {
            only(&["m0", "m69", "late"])
        } else {
            SubscribeBody::ALL
        };
        for u in join_with(
            &mut c,
            &clock,
            &format!("m{i}"),
            10_000 + i,
            u32::from(i),
            subscribe,
        ) {
            worker.apply(u);
        }
        c.commit();
        ports.push(10_000 + i);
    }
    ports.push(9_000);
    let ssrc = |p: u16| {
        if p == 9_000 {
            9_000
        } else {
            u32::from(p - 10_000)
        }
    };
    let before = routes(&worker, &ports, ssrc);
    let check = |c: &Core, worker: &Table| {
        let mut fresh = Table::new();
        for u in c.install_all() {
            fresh.apply(u);
        }
        let id = c.rooms["r"].id;
        crate::route::testing::same_room(worker.room(id).unwrap(), &c.rooms["r"].snapshot).unwrap();
        assert_eq!(routes(worker, &ports, ssrc), routes(&fresh, &ports, ssrc));
    };

    // Each change below reaches the worker (a timed-out publish it applied late), then fails.
    type Change<'c> = Box<dyn Fn(&mut Core) -> Vec<Update> + 'c>;
    let changes: Vec<Change<'_>> = vec![
        // A join listed by others, a leave, a rule, a room closed.
        Box::new(|c| join_with(c, &clock, "late", 9_000, 9_000, SubscribeBody::ALL)),
        Box::new(|c| {
            c.handle(
                clock.now(),
                &no_geo,
                Command::DeleteParticipant {
                    room: "r".into(),
                    id: "m0".into(),
                },
            )
            .unwrap()
            .updates
        }),
        Box::new(|c| {
            let rule = json!({"match": {"participants": [{"room": "r", "participant": "m13"}]},
                "direction": "receive",
                "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
                "expires_at": "2030-01-01T00:00:00Z"});
            c.handle(
                clock.now(),
                &no_geo,
                Command::AddRule {
                    body: rule.to_string().into_bytes(),
                },
            )
            .unwrap()
            .updates
        }),
        Box::new(|c| {
            c.handle(
                clock.now(),
                &no_geo,
                Command::DeleteRoom { room: "r".into() },
            )
            .unwrap()
            .updates
        }),
    ];
    for change in changes {
        for u in change(&mut c) {
            worker.apply(u);
        }
        assert_ne!(
            routes(&worker, &ports, ssrc),
            before,
            "the change reached the worker"
        );
        for u in c.rollback() {
            worker.apply(u);
        }
        check(&c, &worker);
        assert_eq!(routes(&worker, &ports, ssrc), before);
    }
    // And a change after the rollbacks compiles from the restored snapshot.
    for u in join_with(&mut c, &clock, "late", 9_000, 9_000, SubscribeBody::ALL) {
        worker.apply(u);
    }
    c.commit();
    check(&c, &worker);
}
