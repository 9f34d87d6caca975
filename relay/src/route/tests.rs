//! Routing tests without sockets: compile rooms, install them, route datagrams.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::packet::rtp::Ssrc;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn member(name: &str, port: Option<u16>, tracks: &[(u32, MediaKind)]) -> MemberSpec {
    MemberSpec {
        name: Arc::from(name),
        addr: port.map(addr),
        tracks: tracks.iter().map(|&(s, k)| (Ssrc(s), k)).collect(),
        subscription: Subscription::All,
        blocks: Blocks::default(),
        counters: Arc::new(ParticipantCounters::new(1)),
        ice: None,
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

fn table_with(specs: &[MemberSpec]) -> Table {
    let mut t = Table::new();
    t.apply(Update::Room(
        RoomId(1),
        Arc::new(Room::compile(specs).unwrap()),
    ));
    t
}

#[test]
fn fan_out_reaches_everyone_else() {
    let t = table_with(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[(22, MediaKind::Video)]),
        member("c", Some(3), &[]),
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
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[]),
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
    let mut c = member("c", Some(3), &[]);
    c.subscription = Subscription::Only(vec![1]);
    let t = table_with(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[(22, MediaKind::Audio)]),
        c,
    ]);
    assert_eq!(route(&t, 1, &rtp(11)).1, vec![addr(2)]);
    assert_eq!(route(&t, 2, &rtp(22)).1, vec![addr(1), addr(3)]);
}

#[test]
fn rules_shape_fan_out_and_count() {
    let send = Arc::new(RuleCounters::new(1));
    let recv = Arc::new(RuleCounters::new(1));
    let mut a = member(
        "a",
        Some(1),
        &[(11, MediaKind::Audio), (12, MediaKind::Video)],
    );
    a.blocks.send[MediaKind::Video.index()] = Some(send.clone());
    let mut c = member("c", Some(3), &[]);
    c.blocks.receive[MediaKind::Audio.index()] = Some(recv.clone());
    let t = table_with(&[a, member("b", Some(2), &[]), c]);
    assert_eq!(route(&t, 1, &rtp(11)), (Verdict::Forward(1), vec![addr(2)]));
    assert_eq!(recv.dropped_receive.sum(), 1);
    assert_eq!(route(&t, 1, &rtp(12)).0, Verdict::Drop(DropReason::Rule));
    assert_eq!(send.dropped_send.sum(), 1);
}

#[test]
fn removing_a_room_forgets_its_addresses() {
    let mut t = table_with(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[]),
    ]);
    t.apply(Update::RemoveRoom(RoomId(1)));
    assert_eq!(
        route(&t, 1, &rtp(11)).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(t.rooms(), 0);
}

#[test]
fn replacing_a_room_drops_a_removed_member() {
    let mut t = table_with(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[]),
        member("c", Some(3), &[]),
    ]);
    let room = Room::compile(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[]),
    ]);
    t.apply(Update::Room(RoomId(1), Arc::new(room.unwrap())));
    assert_eq!(route(&t, 1, &rtp(11)).1, vec![addr(2)]);
    assert_eq!(
        route(&t, 3, &rtp(11)).0,
        Verdict::Drop(DropReason::UnknownSource)
    );
}

#[test]
fn duplicate_ssrc_is_refused() {
    let err = Room::compile(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", Some(2), &[(11, MediaKind::Audio)]),
    ])
    .unwrap_err();
    assert_eq!(err, CompileError::DuplicateSsrc(Ssrc(11)));
}

#[test]
fn members_without_address_get_nothing() {
    let t = table_with(&[
        member("a", Some(1), &[(11, MediaKind::Audio)]),
        member("b", None, &[]),
    ]);
    assert_eq!(route(&t, 1, &rtp(11)), (Verdict::Forward(0), vec![]));
}
