//! Model test: after any sequence of control commands, each applied incrementally (the one
//! [`compile`](super::compile) from the room's last snapshot, with the members that changed),
//! the routing table forwards exactly as the plain model of `testing.rs` says, and every
//! snapshot equals the room compiled from scratch (checked inside [`World`]).
//!
//! Two sizes: many small rooms where commands collide often, and rooms of up to 140 members, so
//! that members sit in several chunks and selective lists cross chunks.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::testing::{Join, PlainRule, World, rtp_packet};
use super::*;
use crate::packet::rtp::Ssrc;
use crate::rules::{Direction, Media};

const REGIONS: [[u8; 2]; 2] = [*b"CN", *b"RU"];

#[derive(Clone, Debug)]
enum Command {
    Join {
        room: u8,
        member: u8,
        addr: Option<u16>,
        tracks: Vec<(u32, bool)>,
        only: Option<Vec<u8>>,
        region: Option<usize>,
    },
    /// Members `first..first + n` join with fixed addresses, one audio track each, subscribing to
    /// everybody: one compilation per join.
    Crowd {
        room: u8,
        first: u8,
        n: u8,
    },
    Leave {
        room: u8,
        member: u8,
    },
    Latch {
        room: u8,
        member: u8,
        addr: u16,
    },
    CloseRoom {
        room: u8,
    },
    AddRule {
        participants: Vec<(u8, u8)>,
        regions: Vec<usize>,
        rooms: Vec<u8>,
        direction: Direction,
        media: Media,
    },
    RemoveRule {
        index: usize,
    },
}

/// Commands over `rooms` rooms of member ids below `members`, addresses below `addresses`.
fn command(rooms: u8, members: u8, addresses: u16) -> impl Strategy<Value = Command> {
    let direction = prop_oneof![
        Just(Direction::Send),
        Just(Direction::Receive),
        Just(Direction::Both)
    ];
    let media = prop_oneof![Just(Media::Audio), Just(Media::Video), Just(Media::All)];
    let ssrcs = u32::from(members) * 2;
    prop_oneof![
        4 => (
            0..rooms,
            0..members,
            option::of(0..addresses),
            vec((0..ssrcs, any::<bool>()), 0..3),
            option::of(vec(0..members, 0..4)),
            option::of(0..REGIONS.len()),
        )
            .prop_map(|(room, member, addr, tracks, only, region)| Command::Join {
                room,
                member,
                addr,
                tracks,
                only,
                region,
            }),
        1 => (0..rooms, 0..members, 1..members.max(2))
            .prop_map(|(room, first, n)| Command::Crowd { room, first, n }),
        2 => (0..rooms, 0..members).prop_map(|(room, member)| Command::Leave { room, member }),
        1 => (0..rooms, 0..members, 0..addresses)
            .prop_map(|(room, member, addr)| Command::Latch { room, member, addr }),
        1 => (0..rooms).prop_map(|room| Command::CloseRoom { room }),
        2 => (
            vec((0..rooms, 0..members), 0..3),
            vec(0..REGIONS.len(), 0..2),
            vec(0..rooms, 0..2),
            direction,
            media,
        )
            .prop_map(|(participants, regions, rooms, direction, media)| {
                Command::AddRule {
                    participants,
                    regions,
                    rooms,
                    direction,
                    media,
                }
            }),
        1 => any::<usize>().prop_map(|index| Command::RemoveRule { index }),
    ]
}

fn run(world: &mut World, command: Command, members: u8) {
    match command {
        Command::Join {
            room,
            member,
            addr,
            tracks,
            only,
            region,
        } => {
            let join = Join {
                addr: addr.map(address),
                tracks: tracks
                    .into_iter()
                    .map(|(s, video)| {
                        let kind = if video {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        };
                        (Ssrc(s), kind)
                    })
                    .collect(),
                only: only.map(|l| l.into_iter().map(member_name).collect()),
                region: region.map(|r| REGIONS[r]),
                ice: None,
            };
            world.join(&room_name(room), &member_name(member), join);
        }
        Command::Crowd { room, first, n } => {
            for m in first..first.saturating_add(n).min(members) {
                let join = Join {
                    // Addresses of their own, far from the others.
                    addr: Some(address(10_000 + u16::from(room) * 256 + u16::from(m))),
                    tracks: vec![(Ssrc(100_000 + u32::from(m)), MediaKind::Audio)],
                    ..Join::default()
                };
                world.join(&room_name(room), &member_name(m), join);
            }
        }
        Command::Leave { room, member } => world.leave(&room_name(room), &member_name(member)),
        Command::Latch { room, member, addr } => {
            if world
                .person(&room_name(room), &member_name(member))
                .is_some()
            {
                world.latch(&room_name(room), &member_name(member), address(addr));
            }
        }
        Command::CloseRoom { room } => world.close(&room_name(room)),
        Command::AddRule {
            participants,
            regions,
            rooms,
            direction,
            media,
        } => {
            world.add_rule(PlainRule {
                participants: participants
                    .into_iter()
                    .map(|(r, m)| (room_name(r), member_name(m)))
                    .collect(),
                regions: regions.into_iter().map(|r| REGIONS[r]).collect(),
                rooms: rooms.into_iter().map(room_name).collect(),
                direction,
                media,
            });
        }
        Command::RemoveRule { index } => world.remove_rule(index),
    }
}

/// Checks one RTP packet from every `every`-th member with an address on each of its tracks,
/// RTCP feedback to each of their publishers, and that strangers are unknown sources.
fn check(world: &World, every: usize, strangers: u16) -> Result<(), TestCaseError> {
    prop_assert_eq!(world.table.rooms(), world.rooms());
    for (i, (room, id, addr)) in world.addressed().into_iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let person = world.person(&room, &id).expect("listed");
        for &(ssrc, _) in &person.tracks {
            world
                .check_route(addr, &rtp_packet(ssrc, 96, b"media"))
                .map_err(TestCaseError::fail)?;
        }
        // A PLI about the first track of each member of the room: feedback routing.
        let about: BTreeSet<u32> = world
            .everyone()
            .into_iter()
            .filter(|(r, _)| *r == room)
            .filter_map(|(r, m)| world.person(&r, &m)?.tracks.first().map(|t| t.0.0))
            .collect();
        for media in about {
            world
                .check_route(addr, &pli(1, media))
                .map_err(TestCaseError::fail)?;
        }
    }
    for a in 0..strangers {
        let src = address(a);
        if world.owner(src).is_none() {
            world
                .check_route(src, &rtp_packet(Ssrc(0), 96, b"x"))
                .map_err(TestCaseError::fail)?;
        }
    }
    Ok(())
}

fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0x00, 0x02];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

fn address(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + n))
}

fn room_name(room: u8) -> String {
    format!("r{room}")
}

fn member_name(member: u8) -> String {
    format!("p{member}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn small_rooms_match_model(commands in vec(command(3, 5, 8), 1..40)) {
        let mut world = World::new();
        for command in commands {
            run(&mut world, command, 5);
            check(&world, 1, 10)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rooms_over_several_chunks_match_model(commands in vec(command(2, 140, 300), 1..30)) {
        let mut world = World::new();
        for command in commands {
            run(&mut world, command, 140);
            check(&world, 13, 4)?;
        }
    }
}
