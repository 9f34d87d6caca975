//! Trunk routing without sockets: two or three relays' tables, each with the others' members
//! as remote members, and datagrams carried between them as the workers would.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::packet::rtp::Ssrc;
use crate::packet::trunk::{self, Epoch, NodeNo};
use crate::rules::{RuleId, RuleSet};

const A: u16 = 1;
const B: u16 = 2;
const C: u16 = 3;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A relay's trunk address.
fn trunk_addr(node: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, node as u8], 9000))
}

fn epoch(node: u16) -> Epoch {
    Epoch(100 + u32::from(node))
}

/// A participant: local on `home` when `home == here` (with media port `port`), remote
/// otherwise; its number is its port.
fn member<'a>(
    id: &'a str,
    slot: u16,
    here: u16,
    home: u16,
    port: u16,
    tracks: &[(u32, MediaKind)],
    subscribe: Option<&'a [String]>,
) -> Participant<'a> {
    Participant {
        id,
        slot,
        region: None,
        addr: (here == home).then(|| addr(port)),
        tracks: tracks.iter().map(|&(s, k)| (Ssrc(s), k)).collect(),
        subscribe,
        counters: Arc::new(ParticipantCounters::new(1)),
        ice: None,
        webrtc: None,
        number: u32::from(port),
        peer: (here != home).then_some(home),
    }
}

/// The room as relay `here` compiles it: pa (publisher, audio 11 and video 12) and ra on A,
/// rb1 and rb2 on B, rc on C (which subscribes only to rb1 unless `rc_all`).
fn relay(here: u16, rules: &RuleSet, rc_only: &[String]) -> Table {
    let only = if rc_only.is_empty() {
        None
    } else {
        Some(rc_only)
    };
    let people = [
        member(
            "pa",
            0,
            here,
            A,
            1,
            &[(11, MediaKind::Audio), (12, MediaKind::Video)],
            None,
        ),
        member("ra", 1, here, A, 2, &[], None),
        member("rb1", 2, here, B, 3, &[(31, MediaKind::Audio)], None),
        member("rb2", 3, here, B, 4, &[], None),
        member("rc", 4, here, C, 5, &[], only),
    ];
    let compiled = compile_all("r", &people, rules, |_| {
        Some(Arc::new(RuleCounters::new(1)))
    })
    .unwrap();
    let mut t = Table::new();
    t.apply(Update::Room {
        id: RoomId(1),
        room: compiled.room,
        slots: compiled.slots,
    });
    let peers = [A, B, C].into_iter().filter(|&n| n != here).map(|n| {
        Peer::new(
            &format!("n{n}"),
            NodeNo(n),
            epoch(n),
            trunk_addr(n),
            Arc::new(TrunkCounters::new(1)),
        )
    });
    let local = Local {
        node: NodeNo(here),
        epoch: epoch(here),
    };
    t.apply(Update::Peers(Arc::new(Peers::new(local, peers))));
    t
}

fn rtp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload");
    p
}

/// A PLI from `sender` about `media`.
fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// Routes a datagram from local source port `from` on relay `t`: (verdict, local ports,
/// trunk copies as whole datagrams with their destination).
#[allow(clippy::type_complexity)]
fn send(t: &Table, from: u16, buf: &[u8]) -> (Verdict, Vec<u16>, Vec<(SocketAddr, Vec<u8>)>) {
    let (mut local, mut trunks) = (Vec::new(), Vec::new());
    let v = t.route_fleet(0, &addr(from), buf, |d| match d {
        Dest::Local(d, _) => local.push(d.as_socket().unwrap().port()),
        Dest::Trunk(d, header) => {
            let mut whole = header.to_vec();
            whole.extend_from_slice(buf);
            trunks.push((d.as_socket().unwrap(), whole));
        }
    });
    local.sort();
    trunks.sort();
    (v, local, trunks)
}

/// Delivers a trunk datagram from relay `origin` to relay `t`: (verdict, local ports).
fn deliver(t: &Table, origin: u16, buf: &[u8]) -> (Verdict, Vec<u16>) {
    let mut local = Vec::new();
    let (v, withheld) = t.route_trunk(0, &trunk_addr(origin), buf, |d, _| {
        local.push(d.as_socket().unwrap().port())
    });
    assert_eq!(withheld, 0, "a plain sender's media is never withheld");
    local.sort();
    (v, local)
}

#[test]
fn a_track_crosses_once_per_relay_with_a_receiver_and_fans_out_there() {
    let only_rb1 = ["rb1".to_owned()];
    let rules = RuleSet::new();
    let (a, b, c) = (
        relay(A, &rules, &only_rb1),
        relay(B, &rules, &only_rb1),
        relay(C, &rules, &only_rb1),
    );
    // pa's audio: ra here, one copy to B (rb1 and rb2 there), none to C (rc listens to rb1).
    let (v, local, trunks) = send(&a, 1, &rtp(11));
    assert_eq!(local, [2]);
    assert_eq!(trunks.len(), 1);
    assert_eq!(v, Verdict::Forward(2));
    let (to, datagram) = &trunks[0];
    assert_eq!(*to, trunk_addr(B));
    let p = trunk::Packet::new_checked(&datagram[..]).unwrap();
    assert_eq!(
        p.header(),
        trunk::Header {
            content: trunk::Content::Rtp,
            media: trunk::Media::Audio,
            webrtc: false,
            origin: NodeNo(A),
            room: trunk::RoomNo(room_number("r")),
            sender: trunk::ParticipantNo(1),
            epoch: epoch(A),
        }
    );
    assert_eq!(
        p.payload(),
        &rtp(11)[..],
        "the datagram behind the header is untouched"
    );
    let peers = a.peers();
    assert_eq!(peers.get(B).unwrap().counters.sent.sum(), 1);
    assert_eq!(peers.get(C).unwrap().counters.sent.sum(), 0);
    // On B: to rb1 and rb2, never on to another trunk (route_trunk has no trunk output).
    assert_eq!(deliver(&b, A, datagram), (Verdict::Forward(2), vec![3, 4]));
    assert_eq!(b.peers().get(A).unwrap().counters.received.sum(), 1);
    // The same datagram at C (had it been sent there) reaches nobody.
    assert_eq!(deliver(&c, A, datagram), (Verdict::Forward(0), vec![]));

    // rb1's audio from B: to its locals (rb2), one copy to A (pa, ra), one to C (rc listed it).
    let (_, local, trunks) = send(&b, 3, &rtp(31));
    assert_eq!(local, [4]);
    let to: Vec<_> = trunks.iter().map(|(a, _)| *a).collect();
    assert_eq!(to, [trunk_addr(A), trunk_addr(C)]);
    assert_eq!(
        deliver(&a, B, &trunks[0].1),
        (Verdict::Forward(2), vec![1, 2])
    );
    assert_eq!(deliver(&c, B, &trunks[1].1), (Verdict::Forward(1), vec![5]));
}

#[test]
fn rules_decide_which_relays_get_a_copy() {
    let rule = |who: &str, direction: &str| {
        let spec = serde_json::json!({
            "match": {"participants": [{"room": "r", "participant": who}]},
            "direction": direction, "media": "all",
            "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
            "expires_at": "2099-01-01T00:00:00Z"});
        crate::rules::compile(&crate::rules::parse(spec.to_string().as_bytes()).unwrap()).unwrap()
    };
    // Nobody on B may receive: no copy to B; rc (subscribe-all) on C still gets one.
    let mut rules = RuleSet::new();
    rules.insert(RuleId(1), rule("rb1", "receive"));
    rules.insert(RuleId(2), rule("rb2", "receive"));
    let a = relay(A, &rules, &[]);
    let (_, local, trunks) = send(&a, 1, &rtp(12));
    assert_eq!(local, [2]);
    assert_eq!(
        trunks.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [trunk_addr(C)]
    );
    // One of B's two may: the copy goes.
    let mut rules = RuleSet::new();
    rules.insert(RuleId(1), rule("rb1", "receive"));
    let a = relay(A, &rules, &[]);
    assert_eq!(send(&a, 1, &rtp(12)).2.len(), 2);
    // A send rule on pa: nothing leaves A, trunk included.
    let mut rules = RuleSet::new();
    rules.insert(RuleId(1), rule("pa", "send"));
    let a = relay(A, &rules, &[]);
    let (v, local, trunks) = send(&a, 1, &rtp(12));
    assert_eq!(v, Verdict::Drop(DropReason::Rule));
    assert!(local.is_empty() && trunks.is_empty());
    // A receive rule is enforced by the receiver's relay too, whatever the sender sent.
    let b = relay(B, &rules_with(rule("rb2", "receive")), &[]);
    let plain = relay(A, &RuleSet::new(), &[]);
    let (_, _, trunks) = send(&plain, 1, &rtp(12));
    let to_b = &trunks.iter().find(|(a, _)| *a == trunk_addr(B)).unwrap().1;
    assert_eq!(deliver(&b, A, to_b), (Verdict::Forward(1), vec![3]));
}

fn rules_with(r: crate::rules::Rule) -> RuleSet {
    let mut rules = RuleSet::new();
    rules.insert(RuleId(9), r);
    rules
}

#[test]
fn feedback_about_a_remote_publisher_goes_back_over_its_trunk() {
    let rules = RuleSet::new();
    let (a, b) = (relay(A, &rules, &[]), relay(B, &rules, &[]));
    // rb1 on B asks pa (on A) for a key frame: one trunk copy to A, sender rb1 (number 3).
    let (v, local, trunks) = send(&b, 3, &pli(31, 12));
    assert_eq!(v, Verdict::Forward(1));
    assert!(local.is_empty());
    assert_eq!(trunks.len(), 1);
    let (to, datagram) = &trunks[0];
    assert_eq!(*to, trunk_addr(A));
    let p = trunk::Packet::new_checked(&datagram[..]).unwrap();
    assert_eq!(p.content(), trunk::Content::Rtcp);
    assert_eq!(p.media(), trunk::Media::Unspecified);
    assert_eq!(p.sender(), trunk::ParticipantNo(3));
    // A routes it as it would locally: to pa, and to nobody else.
    assert_eq!(deliver(&a, B, datagram), (Verdict::Forward(1), vec![1]));
    // Feedback arriving over a trunk about a publisher on a third relay goes nowhere (split
    // horizon): rc's relay would have sent it to that relay itself.
    let c = relay(C, &rules, &[]);
    let (_, _, trunks) = send(&c, 5, &pli(55, 31));
    assert_eq!(trunks.len(), 1, "to B only");
    assert_eq!(
        deliver(&a, C, &trunks[0].1),
        (Verdict::Drop(DropReason::NoRoute), vec![])
    );
}

#[test]
fn trunk_ingress_accepts_only_live_peers_and_well_formed_headers() {
    let rules = RuleSet::new();
    let (a, b) = (relay(A, &rules, &[]), relay(B, &rules, &[]));
    let (_, _, trunks) = send(&a, 1, &rtp(11));
    let good = trunks
        .iter()
        .find(|(t, _)| *t == trunk_addr(B))
        .unwrap()
        .1
        .clone();
    let drop = |v: (Verdict, Vec<u16>), r: DropReason| assert_eq!(v, (Verdict::Drop(r), vec![]));
    // From an address that is no peer's trunk address (a client, or a peer's media port).
    let mut out = 0;
    let v = b.route_trunk(0, &addr(1), &good, |_, _| out += 1);
    assert_eq!(
        (v, out),
        ((Verdict::Drop(DropReason::TrunkUnknownPeer), 0), 0)
    );
    // From C's address but saying it is A; from A with an old epoch.
    drop(deliver(&b, C, &good), DropReason::TrunkUnknownPeer);
    let mut old = good.clone();
    old[15] ^= 1;
    drop(deliver(&b, A, &old), DropReason::TrunkUnknownPeer);
    // Malformed: truncated, bad version, bad flags, inner datagram not what C says.
    for bad in [&good[..10], &good[..17]] {
        drop(deliver(&b, A, bad), DropReason::TrunkMalformed);
    }
    for (at, value) in [(0, 6u8), (1, 0x61), (1, 0x80 | 0x20), (1, 0x20 | 0x10)] {
        let mut m = good.clone();
        m[at] = value;
        drop(deliver(&b, A, &m), DropReason::TrunkMalformed);
    }
    // A sender A never registered, or a room of another number.
    let mut unknown = good.clone();
    unknown[8..12].copy_from_slice(&77u32.to_be_bytes());
    drop(deliver(&b, A, &unknown), DropReason::TrunkUnknownSender);
    let mut other_room = good.clone();
    other_room[4] ^= 0xff;
    drop(deliver(&b, A, &other_room), DropReason::TrunkUnknownSender);
    // A's own media port is no trunk: a trunk datagram there is not media.
    assert_eq!(send(&b, 3, &good).0, Verdict::Drop(DropReason::NotMedia));
    // Only the good one counted as received.
    assert_eq!(deliver(&b, A, &good).0, Verdict::Forward(2));
    assert_eq!(b.peers().get(A).unwrap().counters.received.sum(), 1 + 1 + 1);
}

#[test]
fn outside_fleet_mode_nothing_goes_to_a_trunk() {
    let rules = RuleSet::new();
    let mut a = relay(A, &rules, &[]);
    a.apply(Update::Peers(Arc::new(Peers::none())));
    let (v, local, trunks) = send(&a, 1, &rtp(11));
    assert_eq!((v, local), (Verdict::Forward(1), vec![2]));
    assert!(trunks.is_empty());
}

#[test]
fn any_bytes_on_the_trunk_port_never_panic() {
    let rules = RuleSet::new();
    let b = relay(B, &rules, &[]);
    let mut x: u32 = 0x1234_5678;
    for len in 0..200 {
        let mut buf = vec![0u8; len];
        for byte in &mut buf {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        if len > 2 {
            buf[0] = 4;
        }
        let _ = deliver(&b, A, &buf);
    }
}

/// Records what a hot room's routing queues: local sends, hand-offs, trunk copies.
#[derive(Default)]
struct Hand {
    local: Vec<u16>,
    handed: Vec<(usize, Hot)>,
    trunks: Vec<(SocketAddr, [u8; trunk::HEADER_LEN])>,
}

impl Sink for Hand {
    fn forward(&mut self, dest: &crate::route::Addr, _: Option<&Arc<Legs>>) {
        self.local.push(dest.as_socket().unwrap().port());
    }

    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        self.handed.push((to, *hot));
        true
    }

    fn trunk(&mut self, dest: &crate::route::Addr, header: &[u8; trunk::HEADER_LEN]) {
        self.trunks.push((dest.as_socket().unwrap(), *header));
    }
}

#[test]
fn a_hot_rooms_trunk_copies_go_from_the_receiving_worker_and_its_ingress_is_not_shared() {
    let rules = RuleSet::new();
    let (a, b) = (relay(A, &rules, &[]), relay(B, &rules, &[]));
    let (_, _, whole) = send(&a, 1, &rtp(11));
    assert_eq!(whole.len(), 2, "to B and C");
    // Two workers, every room shared: the room's one chunk belongs to worker 0.
    for worker in [0, 1] {
        let share = Share {
            worker,
            workers: 2,
            min_members: 1,
            keep: false,
        };
        let mut sink = Hand::default();
        let v = a.route_shared(share, &addr(1), &rtp(11), &mut sink);
        // The trunk copies are this worker's whichever worker it is, with the same headers as
        // an unshared fan-out's.
        let trunks: Vec<_> = sink
            .trunks
            .iter()
            .map(|(to, h)| (*to, h.to_vec()))
            .collect();
        let expected: Vec<_> = whole
            .iter()
            .map(|(to, d)| (*to, d[..trunk::HEADER_LEN].to_vec()))
            .collect();
        assert_eq!(trunks, expected, "worker {worker}");
        // The local copy (ra) is worker 0's: sent there, or handed to it.
        let (local, handed) = if worker == 0 {
            (vec![2], vec![])
        } else {
            (vec![], vec![0])
        };
        assert_eq!(sink.local, local);
        assert_eq!(sink.handed.iter().map(|h| h.0).collect::<Vec<_>>(), handed);
        assert_eq!(v, Verdict::Forward(local.len() + 2));
        for (to, hot) in &sink.handed {
            let mut theirs = Vec::new();
            let v = a.route_hot(
                Share {
                    worker: *to,
                    ..share
                },
                hot,
                |d, _| theirs.push(d.as_socket().unwrap().port()),
            );
            assert_eq!((v, theirs), (Verdict::Forward(1), vec![2]));
        }
    }
    // pa's copy at B, a hot room there too: route_trunk serves every local receiver itself.
    assert_eq!(
        deliver(&b, A, &whole[0].1),
        (Verdict::Forward(2), vec![3, 4])
    );
}

/// Room "w" as relay `here` compiles it, with the room's `plain_legs`: wa (WebRTC publisher,
/// audio 71 and video 72, publish leg at 21) and pa2 (plain, 22) on A; wb (WebRTC receiver,
/// publish leg at 23, subscribe leg at 24) and pb (plain, 25) on B.
fn webrtc_relay(here: u16, rules: &RuleSet, plain_legs: bool) -> Table {
    let legs = |publish: u64, subscribe: Option<(u64, u16)>| {
        let session = |id| Session {
            id,
            fingerprints: None,
            srtp: None,
        };
        let mut l = Legs::new(
            Some(session(publish)),
            subscribe.map(|(id, _)| session(id)),
            None,
            subscribe.map(|(_, port)| addr(port)),
        );
        l.plain_legs = plain_legs;
        Arc::new(l)
    };
    let mut wa = member(
        "wa",
        0,
        here,
        A,
        21,
        &[(71, MediaKind::Audio), (72, MediaKind::Video)],
        None,
    );
    wa.webrtc = Some(legs(1, None));
    let mut wb = member("wb", 2, here, B, 23, &[], None);
    wb.webrtc = Some(legs(2, Some((3, 24))));
    let people = [
        wa,
        member("pa2", 1, here, A, 22, &[], None),
        wb,
        member("pb", 3, here, B, 25, &[], None),
    ];
    let compiled = compile_all("w", &people, rules, |_| {
        Some(Arc::new(RuleCounters::new(1)))
    })
    .unwrap();
    let mut room = (*compiled.room).clone();
    room.plain_legs = plain_legs;
    let mut t = Table::new();
    t.apply(Update::Room {
        id: RoomId(1),
        room: Arc::new(room),
        slots: compiled.slots,
    });
    let peers = [A, B].into_iter().filter(|&n| n != here).map(|n| {
        Peer::new(
            &format!("n{n}"),
            NodeNo(n),
            epoch(n),
            trunk_addr(n),
            Arc::new(TrunkCounters::new(1)),
        )
    });
    let local = Local {
        node: NodeNo(here),
        epoch: epoch(here),
    };
    t.apply(Update::Peers(Arc::new(Peers::new(local, peers))));
    t
}

/// What routing one datagram queued: local receivers (port, whether WebRTC) and trunk copies
/// (destination, header and datagram).
#[derive(Default)]
struct Copied {
    local: Vec<(u16, bool)>,
    trunks: Vec<(SocketAddr, Vec<u8>)>,
    datagram: Vec<u8>,
}

impl Sink for Copied {
    fn forward(&mut self, dest: &crate::route::Addr, legs: Option<&Arc<Legs>>) {
        self.local
            .push((dest.as_socket().unwrap().port(), legs.is_some()));
    }

    fn hand_off(&mut self, _: usize, _: &Hot) -> bool {
        panic!("route_clear never hands off")
    }

    fn trunk(&mut self, dest: &crate::route::Addr, header: &[u8; trunk::HEADER_LEN]) {
        let mut whole = header.to_vec();
        whole.extend_from_slice(&self.datagram);
        self.trunks.push((dest.as_socket().unwrap(), whole));
    }
}

/// Routes the clear copy `buf` of what the WebRTC leg at local port `from` sent.
fn clear(t: &Table, from: u16, buf: &[u8]) -> (Verdict, Copied) {
    let mut sink = Copied {
        datagram: buf.to_vec(),
        ..Copied::default()
    };
    let v = t.route_clear(0, &addr(from), buf, &mut sink);
    sink.local.sort();
    (v, sink)
}

/// Delivers a trunk datagram from `origin` to `t`: (verdict, withheld, local receivers).
fn deliver_legs(t: &Table, origin: u16, buf: &[u8]) -> (Verdict, usize, Vec<(u16, bool)>) {
    let mut local = Vec::new();
    let (v, withheld) = t.route_trunk(0, &trunk_addr(origin), buf, |d, legs| {
        local.push((d.as_socket().unwrap().port(), legs.is_some()))
    });
    local.sort();
    (v, withheld, local)
}

#[test]
fn a_webrtc_publishers_clear_media_crosses_once_with_the_w_bit() {
    let rules = RuleSet::new();
    let a = webrtc_relay(A, &rules, true);
    // wa's clear audio: pa2 here (plain), one copy to B (wb and pb there), header version 5.
    let (v, out) = clear(&a, 21, &rtp(71));
    assert_eq!(v, Verdict::Forward(2));
    assert_eq!(out.local, [(22, false)]);
    assert_eq!(out.trunks.len(), 1);
    let (to, datagram) = &out.trunks[0];
    assert_eq!(*to, trunk_addr(B));
    // Version 5; flags 0x30: RTP, audio (01), W. Origin A, room "w", sender 21, A's epoch.
    let mut expected = vec![0x05, 0x30, 0x00, 0x01];
    expected.extend_from_slice(&room_number("w").to_be_bytes());
    expected.extend_from_slice(&[0, 0, 0, 21, 0, 0, 0, 101]);
    assert_eq!(datagram[..16], expected[..]);
    let p = trunk::Packet::new_checked(&datagram[..]).unwrap();
    assert!(p.webrtc());
    assert_eq!(
        p.payload(),
        &rtp(71)[..],
        "the clear datagram behind the header"
    );
    assert_eq!(a.peers().get(B).unwrap().counters.sent.sum(), 1);
    // Video: flags 0x50.
    let (_, out) = clear(&a, 21, &rtp(72));
    assert_eq!(out.trunks[0].1[..2], [0x05, 0x50]);
    // The same member's datagram routed as a plain sender's (route_fleet) has no W: version 4.
    let (_, _, plain) = send(&a, 21, &rtp(71));
    assert_eq!(plain[0].1[..2], [0x04, 0x20]);
    // An undeclared SSRC goes nowhere, trunk included.
    let (v, out) = clear(&a, 21, &rtp(99));
    assert_eq!(v, Verdict::Drop(DropReason::UndeclaredSsrc));
    assert!(out.local.is_empty() && out.trunks.is_empty());
}

#[test]
fn webrtc_media_from_a_trunk_reaches_webrtc_receivers_and_plain_ones_only_with_plain_legs() {
    let rules = RuleSet::new();
    let a = webrtc_relay(A, &rules, false);
    let (_, out) = clear(&a, 21, &rtp(71));
    // Without plain_legs on A, pa2 gets nothing here either (the caller counts it
    // `plain_legs`): the Sink sees it as a plain receiver.
    assert_eq!(out.local, [(22, false)]);
    let w = &out.trunks[0].1;
    // On B without plain_legs: wb's subscribe leg gets it (to be sealed), pb is withheld.
    let b = webrtc_relay(B, &rules, false);
    assert_eq!(
        deliver_legs(&b, A, w),
        (Verdict::Forward(1), 1, vec![(24, true)])
    );
    // With plain_legs: both, pb zero-copy.
    let b = webrtc_relay(B, &rules, true);
    assert_eq!(
        deliver_legs(&b, A, w),
        (Verdict::Forward(2), 0, vec![(24, true), (25, false)])
    );
    // The same bytes without W (a plain publisher's, version 4) reach pb without plain_legs.
    let b = webrtc_relay(B, &rules, false);
    let mut v4 = w.clone();
    v4[..2].copy_from_slice(&[0x04, 0x20]);
    assert_eq!(
        deliver_legs(&b, A, &v4),
        (Verdict::Forward(2), 0, vec![(24, true), (25, false)])
    );
    // W in a version 4 header is refused, never read as a plain publisher's media.
    v4[1] = 0x30;
    assert_eq!(
        deliver_legs(&b, A, &v4),
        (Verdict::Drop(DropReason::TrunkMalformed), 0, vec![])
    );
    assert_eq!(b.peers().get(A).unwrap().counters.received.sum(), 1);
}

#[test]
fn webrtc_feedback_crosses_back_with_the_w_bit_and_rules_hold_at_both_ends() {
    let rules = RuleSet::new();
    let (a, b) = (
        webrtc_relay(A, &rules, false),
        webrtc_relay(B, &rules, false),
    );
    // wb's PLI about wa's video, unprotected at B from wb's subscribe leg: one copy to A,
    // RTCP with W (flags 0x90), sender wb (number 23); A sends it to wa's publish leg.
    let (v, out) = clear(&b, 24, &pli(5, 72));
    assert_eq!(v, Verdict::Forward(1));
    assert!(out.local.is_empty());
    let (to, datagram) = &out.trunks[0];
    assert_eq!(*to, trunk_addr(A));
    assert_eq!(datagram[..2], [0x05, 0x90]);
    assert_eq!(datagram[8..12], [0, 0, 0, 23]);
    assert_eq!(
        deliver_legs(&a, B, datagram),
        (Verdict::Forward(1), 0, vec![(21, true)])
    );

    let rule = |who: &str, direction: &str| {
        let spec = serde_json::json!({
            "match": {"participants": [{"room": "w", "participant": who}]},
            "direction": direction, "media": "all",
            "basis": {"authority": "A", "reference": "1", "jurisdiction": "US"},
            "expires_at": "2099-01-01T00:00:00Z"});
        crate::rules::compile(&crate::rules::parse(spec.to_string().as_bytes()).unwrap()).unwrap()
    };
    // A send rule on wa stops its clear copy at A, before any trunk copy.
    let a = webrtc_relay(A, &rules_with(rule("wa", "send")), true);
    let (v, out) = clear(&a, 21, &rtp(71));
    assert_eq!(v, Verdict::Drop(DropReason::Rule));
    assert!(out.local.is_empty() && out.trunks.is_empty());
    // Receive rules on both of B's members: no copy to B.
    let mut both = RuleSet::new();
    both.insert(RuleId(1), rule("wb", "receive"));
    both.insert(RuleId(2), rule("pb", "receive"));
    let a = webrtc_relay(A, &both, true);
    let (_, out) = clear(&a, 21, &rtp(71));
    assert_eq!(out.local, [(22, false)]);
    assert!(out.trunks.is_empty());
    // A receive rule on wb is enforced at B too: pb (plain_legs) still gets it.
    let a = webrtc_relay(A, &rules, true);
    let (_, out) = clear(&a, 21, &rtp(71));
    let b = webrtc_relay(B, &rules_with(rule("wb", "receive")), true);
    assert_eq!(
        deliver_legs(&b, A, &out.trunks[0].1),
        (Verdict::Forward(1), 0, vec![(25, false)])
    );
}
