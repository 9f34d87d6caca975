//! Routing tests without sockets: compile rooms, install them, route datagrams.

use std::net::SocketAddr;
use std::sync::Arc;

use super::testing::same_room;
use super::*;
use crate::packet::rtp::Ssrc;
use crate::rules::RuleSet;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn member<'a>(
    id: &'a str,
    slot: u16,
    port: Option<u16>,
    tracks: &[(u32, MediaKind)],
) -> Participant<'a> {
    Participant {
        id,
        slot,
        region: None,
        addr: port.map(addr),
        tracks: tracks.iter().map(|&(s, k)| (Ssrc(s), k)).collect(),
        subscribe: None,
        counters: Arc::new(ParticipantCounters::new(1)),
        ice: None,
        webrtc: None,
        number: 0,
        peer: None,
    }
}

fn rtp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload");
    p
}

fn route(table: &Table, from: u16, buf: &[u8]) -> (Verdict, Vec<SocketAddr>) {
    let mut out = Vec::new();
    let v = table.route(0, &addr(from), buf, |d| out.push(d.as_socket().unwrap()));
    out.sort();
    (v, out)
}

fn compiled(participants: &[Participant<'_>], rules: &RuleSet) -> Compiled {
    compile_all("r", participants, rules, |_| None).unwrap()
}

fn install(t: &mut Table, c: Compiled) {
    t.apply(Update::Room {
        id: RoomId(1),
        room: c.room,
        slots: c.slots,
    });
}

fn table_with(participants: &[Participant<'_>]) -> Table {
    let mut t = Table::new();
    install(&mut t, compiled(participants, &RuleSet::new()));
    t
}

#[test]
fn fan_out_reaches_everyone_else() {
    let t = table_with(&[
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, Some(2), &[(22, MediaKind::Video)]),
        member("c", 2, Some(3), &[]),
    ]);
    assert_eq!(
        route(&t, 1, &rtp(11)),
        (Verdict::Forward(2), vec![addr(2), addr(3)])
    );
    assert_eq!(
        route(&t, 2, &rtp(22)),
        (Verdict::Forward(2), vec![addr(1), addr(3)])
    );
}

#[test]
fn unknown_source_and_undeclared_ssrc_drop() {
    let t = table_with(&[
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, Some(2), &[]),
    ]);
    assert_eq!(
        route(&t, 9, &rtp(11)).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(
        route(&t, 1, &rtp(12)).0,
        Verdict::Drop(DropReason::UndeclaredSsrc)
    );
    // b is in the room but declared no track.
    assert_eq!(
        route(&t, 2, &rtp(11)).0,
        Verdict::Drop(DropReason::UndeclaredSsrc)
    );
    assert_eq!(
        route(&t, 1, &[0x80, 96, 0]).0,
        Verdict::Drop(DropReason::MalformedRtp)
    );
    assert_eq!(route(&t, 1, &[22, 3, 1]).0, Verdict::Drop(DropReason::Dtls));
    assert_eq!(route(&t, 1, &[99]).0, Verdict::Drop(DropReason::NotMedia));
    assert_eq!(route(&t, 1, &[]).0, Verdict::Drop(DropReason::NotMedia));
}

#[test]
fn subscriptions_limit_fan_out() {
    let list = ["b".to_owned()];
    let mut c = member("c", 2, Some(3), &[]);
    c.subscribe = Some(&list);
    let t = table_with(&[
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, Some(2), &[(22, MediaKind::Audio)]),
        c,
    ]);
    assert_eq!(route(&t, 1, &rtp(11)).1, vec![addr(2)]);
    assert_eq!(route(&t, 2, &rtp(22)).1, vec![addr(1), addr(3)]);
}

#[test]
fn rules_shape_fan_out_and_count() {
    let mut rules = RuleSet::new();
    let rule = |who: &str, direction: &str, media: &str| {
        let spec = serde_json::json!({
            "match": {"participants": [{"room": "r", "participant": who}]},
            "direction": direction, "media": media,
            "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
            "expires_at": "2099-01-01T00:00:00Z"});
        crate::rules::compile(&crate::rules::parse(spec.to_string().as_bytes()).unwrap()).unwrap()
    };
    rules.insert(crate::rules::RuleId(1), rule("a", "send", "video"));
    rules.insert(crate::rules::RuleId(2), rule("c", "receive", "audio"));
    let send = Arc::new(RuleCounters::new(1));
    let recv = Arc::new(RuleCounters::new(1));
    let counters = |id: crate::rules::RuleId| Some(if id.0 == 1 { &send } else { &recv }.clone());
    let participants = [
        member(
            "a",
            0,
            Some(1),
            &[(11, MediaKind::Audio), (12, MediaKind::Video)],
        ),
        member("b", 1, Some(2), &[]),
        member("c", 2, Some(3), &[]),
    ];
    let mut t = Table::new();
    install(
        &mut t,
        compile_all("r", &participants, &rules, counters).unwrap(),
    );
    assert_eq!(route(&t, 1, &rtp(11)), (Verdict::Forward(1), vec![addr(2)]));
    assert_eq!(recv.dropped_receive.sum(), 1);
    assert_eq!(route(&t, 1, &rtp(12)).0, Verdict::Drop(DropReason::Rule));
    assert_eq!(send.dropped_send.sum(), 1);
}

#[test]
fn removing_a_room_forgets_its_addresses() {
    let mut t = table_with(&[
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, Some(2), &[]),
    ]);
    t.apply(Update::RemoveRoom(RoomId(1)));
    assert_eq!(
        route(&t, 1, &rtp(11)).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(t.rooms(), 0);
}

#[test]
fn a_leave_reindexes_only_its_slot() {
    let everyone = [
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, Some(2), &[]),
        member("c", 2, Some(3), &[]),
    ];
    let first = compiled(&everyone, &RuleSet::new());
    let mut t = Table::new();
    let base = first.room.clone();
    install(&mut t, first);
    // c leaves: the roster is a and b; only c changed.
    let roster = compiled(&everyone[..2], &RuleSet::new());
    let next = compile(
        "r",
        &base,
        &ListRoster(&everyone[..2]),
        &[Change {
            id: "c",
            was: Some(2),
        }],
        &RuleSet::new(),
        |_| None,
    )
    .unwrap();
    assert_eq!(&*next.slots, &[2]);
    same_room(&next.room, &roster.room).unwrap();
    install(&mut t, next);
    assert_eq!(route(&t, 1, &rtp(11)).1, vec![addr(2)]);
    assert_eq!(
        route(&t, 3, &rtp(11)).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
}

#[test]
fn a_slot_given_twice_is_refused() {
    let err = compile_all(
        "r",
        &[
            member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
            member("b", 0, Some(2), &[(12, MediaKind::Audio)]),
        ],
        &RuleSet::new(),
        |_| None,
    )
    .unwrap_err();
    assert_eq!(err, CompileError::SlotTaken(0));
}

#[test]
fn members_without_address_get_nothing() {
    let t = table_with(&[
        member("a", 0, Some(1), &[(11, MediaKind::Audio)]),
        member("b", 1, None, &[]),
    ]);
    assert_eq!(route(&t, 1, &rtp(11)), (Verdict::Forward(0), vec![]));
}

/// Each receiver once, in slot order, from its dense address, with its legs exactly when it is
/// WebRTC: a chunk that mixes both kinds takes the loop that reads legs, a chunk of plain
/// receivers the one that never reads a member, and a WebRTC member whose subscribe leg has not
/// latched gets nothing.
#[test]
fn the_walk_gives_webrtc_receivers_their_legs_and_plain_ones_none() {
    let names: Vec<String> = (0..130).map(|i| format!("m{i}")).collect();
    let legs = |sub: Option<u16>| Arc::new(Legs::new(None, None, None, sub.map(addr)));
    let everyone: Vec<Participant<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut m = member(
                n,
                i as u16,
                Some(1000 + i as u16),
                &[(i as u32, MediaKind::Audio)],
            );
            // Chunk 0: every third member WebRTC (m30 without a subscribe leg); chunk 1 plain;
            // chunk 2 (m128, m129): m129 WebRTC.
            if (i < 64 && i % 3 == 0 && i > 0) || i == 129 {
                m.webrtc = Some(legs((i != 30).then_some(5000 + i as u16)));
            }
            m
        })
        .collect();
    let mut t = Table::new();
    install(&mut t, compiled(&everyone, &RuleSet::new()));
    let mut out = Vec::new();
    let v = t.route_legs(0, &addr(1000), &rtp(0), |d, l| {
        out.push((d.as_socket().unwrap().port(), l.is_some()))
    });
    let want: Vec<(u16, bool)> = (1..130u16)
        .filter(|&i| i != 30)
        .map(|i| {
            let webrtc = (i < 64 && i % 3 == 0) || i == 129;
            (if webrtc { 5000 + i } else { 1000 + i }, webrtc)
        })
        .collect();
    assert_eq!(v, Verdict::Forward(want.len()));
    assert_eq!(out, want);
}

#[test]
fn a_fan_out_split_by_chunks_visits_each_receiver_once() {
    // 200 members over 4 chunks, one selective listener in the third chunk.
    let names: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let list = ["m0".to_owned()];
    let mut everyone: Vec<Participant<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            member(
                n,
                i as u16,
                Some(1000 + i as u16),
                &[(i as u32, MediaKind::Audio)],
            )
        })
        .collect();
    everyone[150].subscribe = Some(&list);
    everyone[151].subscribe = Some(&[]);
    let room = compiled(&everyone, &RuleSet::new()).room;
    assert_eq!(room.chunks(), 4);
    let sender = room.member(0).unwrap();
    let mut whole = Vec::new();
    room.each_receiver(0, 0, sender, MediaKind::Audio, 0..4, |d, _| {
        whole.push(d.as_socket().unwrap())
    });
    assert_eq!(whole.len(), 198, "everybody but the sender and m151");
    let mut parts = Vec::new();
    for range in [0..1, 1..3, 3..4] {
        room.each_receiver(0, 0, sender, MediaKind::Audio, range, |d, _| {
            parts.push(d.as_socket().unwrap())
        });
    }
    assert_eq!(parts, whole);
}

#[test]
fn slots_go_lowest_first_and_undo_exactly() {
    let mut s = Slots::new();
    assert_eq!((s.take(), s.take(), s.take()), (Some(0), Some(1), Some(2)));
    let before = s.clone();
    s.put(1);
    assert_eq!(s.take(), Some(1));
    s.put(2);
    s.put(1);
    assert!(s.take_at(1));
    assert!(s.take_at(2));
    assert_eq!(
        s, before,
        "freeing and taking back gives the same allocator"
    );
    assert!(!s.take_at(0), "taken");
    assert!(s.take_at(70));
    assert_eq!(s.take(), Some(3));
}

/// A roster over a list, for the incremental test above.
struct ListRoster<'p, 'a>(&'p [Participant<'a>]);

impl Roster for ListRoster<'_, '_> {
    fn participant(&self, id: &str) -> Option<Participant<'_>> {
        self.0.iter().find(|p| p.id == id).cloned()
    }

    fn slot(&self, id: &str) -> Option<u16> {
        self.0.iter().find(|p| p.id == id).map(|p| p.slot)
    }

    fn listeners(&self, id: &str) -> impl Iterator<Item = &str> {
        let id = id.to_owned();
        self.0
            .iter()
            .filter(move |p| p.subscribe.is_some_and(|l| l.contains(&id)))
            .map(|p| p.id)
    }
}

/// A sink that records local sends and the workers a packet was handed to, refusing worker
/// `refuse`.
struct Shares {
    local: Vec<SocketAddr>,
    handed: Vec<(usize, Hot)>,
    refuse: Option<usize>,
}

impl Shares {
    fn new(refuse: Option<usize>) -> Self {
        Self {
            local: Vec::new(),
            handed: Vec::new(),
            refuse,
        }
    }
}

impl Sink for Shares {
    fn forward(&mut self, dest: &crate::route::Addr, _: Option<&Arc<crate::route::Legs>>) {
        self.local.push(dest.as_socket().unwrap());
    }

    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        if self.refuse == Some(to) {
            return false;
        }
        self.handed.push((to, *hot));
        true
    }

    fn trunk(&mut self, _: &crate::route::Addr, _: &[u8; crate::packet::trunk::HEADER_LEN]) {
        panic!("a copy for a peer relay outside fleet mode");
    }
}

/// What worker `to` of `workers` sends of a hand-off, routed with its table `t`.
fn serve_hot(t: &Table, to: usize, workers: usize, hot: &Hot) -> (Verdict, Vec<SocketAddr>) {
    let share = Share {
        worker: to,
        workers,
        min_members: 1,
        keep: false,
    };
    let mut theirs = Vec::new();
    let v = t.route_hot(share, hot, |d, _| theirs.push(d.as_socket().unwrap()));
    (v, theirs)
}

#[test]
fn a_shared_fan_out_gives_each_receiver_to_one_worker_by_chunk() {
    // 300 members over 5 chunks, one selective listener; the sender is in chunk 2.
    let names: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let list = ["m130".to_owned()];
    let mut everyone: Vec<Participant<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            member(
                n,
                i as u16,
                Some(1000 + i as u16),
                &[(i as u32, MediaKind::Audio)],
            )
        })
        .collect();
    everyone[10].subscribe = Some(&list);
    everyone[11].subscribe = Some(&[]);
    let t = table_with(&everyone);
    let (_, mut whole) = route(&t, 1130, &rtp(130));
    assert_eq!(whole.len(), 298, "everybody but the sender and m11");
    whole.sort();
    for workers in [2, 3] {
        let mut all = Vec::new();
        for me in 0..workers {
            let share = Share {
                worker: me,
                workers,
                min_members: 300,
                keep: false,
            };
            let mut sink = Shares::new(None);
            let v = t.route_shared(share, &addr(1130), &rtp(130), &mut sink);
            assert_eq!(v, Verdict::Forward(sink.local.len()));
            let peers: Vec<usize> = sink.handed.iter().map(|h| h.0).collect();
            assert_eq!(peers, (0..workers).filter(|&w| w != me).collect::<Vec<_>>());
            // What the receiving worker sends itself is its chunks' receivers.
            for d in &sink.local {
                let slot = d.port() - 1000;
                assert_eq!(sender_of(slot, workers), me, "slot {slot}");
            }
            // Each worker's share, routed with its own table, is its chunks' receivers.
            for (to, hot) in &sink.handed {
                assert_eq!(hot.slot, 130);
                let (v, theirs) = serve_hot(&t, *to, workers, hot);
                assert_eq!(v, Verdict::Forward(theirs.len()));
                assert!(
                    theirs
                        .iter()
                        .all(|d| sender_of(d.port() - 1000, workers) == *to)
                );
                if me == 0 {
                    all.extend(theirs);
                }
            }
            if me == 0 {
                all.extend(sink.local);
            }
        }
        all.sort();
        assert_eq!(
            all, whole,
            "the shares of {workers} workers tile the fan-out"
        );
    }
    // A refused hand-off is dropped, not sent locally: worker 1's receivers are only ever
    // sent by worker 1, whatever happens to its ring.
    let share = Share {
        worker: 0,
        workers: 2,
        min_members: 300,
        keep: false,
    };
    let mut sink = Shares::new(Some(1));
    let v = t.route_shared(share, &addr(1130), &rtp(130), &mut sink);
    assert_eq!(v, Verdict::Forward(sink.local.len()));
    assert!(sink.handed.is_empty());
    assert!(!sink.local.is_empty());
    assert!(
        sink.local
            .iter()
            .all(|d| sender_of(d.port() - 1000, 2) == 0)
    );
    // A room below the threshold is not shared, unless peers still have this worker's jobs
    // and the room is at least half the threshold.
    for (min_members, keep, shared) in [
        (301, false, false),
        (301, true, true),
        (600, true, true),
        (601, true, false),
    ] {
        let share = Share {
            min_members,
            keep,
            ..share
        };
        let mut sink = Shares::new(None);
        t.route_shared(share, &addr(1130), &rtp(130), &mut sink);
        assert_eq!(!sink.handed.is_empty(), shared, "{min_members} {keep}");
        if !shared {
            assert_eq!(sink.local.len(), 298);
        }
    }
}

#[test]
fn a_hand_off_is_routed_with_the_peers_table() {
    let names: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let everyone: Vec<Participant<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            member(
                n,
                i as u16,
                Some(1000 + i as u16),
                &[(i as u32, MediaKind::Audio)],
            )
        })
        .collect();
    let t = table_with(&everyone);
    let share = Share {
        worker: 0,
        workers: 2,
        min_members: 128,
        keep: false,
    };
    let mut sink = Shares::new(None);
    t.route_shared(share, &addr(1000), &rtp(0), &mut sink);
    let [(1, hot)] = sink.handed[..] else {
        panic!("one hand-off to worker 1: {:?}", sink.handed);
    };
    assert!(serve_hot(&t, 1, 2, &hot).1.len() > 60);
    // The peer applied a send rule on the sender, or lost the room, before it served the job.
    let mut rules = RuleSet::new();
    let spec = serde_json::json!({
        "match": {"participants": [{"room": "r", "participant": "m0"}]},
        "direction": "send", "media": "audio",
        "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
        "expires_at": "2099-01-01T00:00:00Z"});
    let rule =
        crate::rules::compile(&crate::rules::parse(spec.to_string().as_bytes()).unwrap()).unwrap();
    rules.insert(crate::rules::RuleId(1), rule);
    let send = Arc::new(RuleCounters::new(2));
    let mut t2 = Table::new();
    install(
        &mut t2,
        compile_all("r", &everyone, &rules, |_| Some(send.clone())).unwrap(),
    );
    assert_eq!(
        serve_hot(&t2, 1, 2, &hot),
        (Verdict::Drop(DropReason::Rule), Vec::new())
    );
    assert_eq!(send.dropped_send.sum(), 1);
    assert_eq!(
        serve_hot(&Table::new(), 1, 2, &hot).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
    // A different SSRC in the slot (another member took it) sends nothing.
    let other = Hot {
        ssrc: Ssrc(999),
        ..hot
    };
    assert_eq!(
        serve_hot(&t, 1, 2, &other).0,
        Verdict::Drop(DropReason::UndeclaredSsrc)
    );
}
