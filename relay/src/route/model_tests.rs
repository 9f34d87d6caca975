//! Model test: after any sequence of control commands, the compiled routing table forwards
//! exactly as a plain `BTreeMap` model of rooms, members, subscriptions and rules says.
//!
//! Rooms are compiled as the control thread does (`control::state::compile`): members in id
//! order, blocks from `RuleSet::effect`, one `Update::Room` per room a command touches. The
//! model decides who gets a track with a naive rule match, not the `RuleSet` index: a member
//! of the same room, with an address, subscribed to the sender, and neither the sender's send
//! rule nor the receiver's receive rule for that media kind in force.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;
use crate::packet::rtp::Ssrc;
use crate::rules::{
    self, Basis, Direction, Match, Media, ParticipantRef, RuleId, RuleSet, RuleSpec, Subject,
};

const ROOMS: u8 = 3;
const MEMBERS: u8 = 5;
const ADDRESSES: u16 = 8;
const SSRCS: u32 = 10;
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
    Leave {
        room: u8,
        member: u8,
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

fn command() -> impl Strategy<Value = Command> {
    let direction = prop_oneof![
        Just(Direction::Send),
        Just(Direction::Receive),
        Just(Direction::Both)
    ];
    let media = prop_oneof![Just(Media::Audio), Just(Media::Video), Just(Media::All)];
    prop_oneof![
        4 => (
            0..ROOMS,
            0..MEMBERS,
            option::of(0..ADDRESSES),
            vec((0..SSRCS, any::<bool>()), 0..3),
            option::of(vec(0..MEMBERS, 0..3)),
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
        1 => (0..ROOMS, 0..MEMBERS).prop_map(|(room, member)| Command::Leave { room, member }),
        1 => (0..ROOMS).prop_map(|room| Command::CloseRoom { room }),
        2 => (
            vec((0..ROOMS, 0..MEMBERS), 0..3),
            vec(0..REGIONS.len(), 0..2),
            vec(0..ROOMS, 0..2),
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

#[derive(Debug)]
struct Person {
    addr: Option<SocketAddr>,
    tracks: Vec<(Ssrc, MediaKind)>,
    only: Option<BTreeSet<u8>>,
    region: Option<[u8; 2]>,
}

#[derive(Debug)]
struct PlainRule {
    participants: BTreeSet<(u8, u8)>,
    regions: BTreeSet<[u8; 2]>,
    rooms: BTreeSet<u8>,
    direction: Direction,
    media: Media,
}

impl PlainRule {
    /// The contract: in one of the rooms (none listed: any), and named or in a listed region.
    fn matches(&self, room: u8, member: u8, region: Option<[u8; 2]>) -> bool {
        (self.rooms.is_empty() || self.rooms.contains(&room))
            && (self.participants.contains(&(room, member))
                || region.is_some_and(|r| self.regions.contains(&r)))
    }

    fn blocks(&self, kind: MediaKind, send: bool) -> bool {
        let direction = match self.direction {
            Direction::Both => true,
            Direction::Send => send,
            Direction::Receive => !send,
        };
        let media = match (self.media, kind) {
            (Media::All, _) => true,
            (Media::Audio, k) => k == MediaKind::Audio,
            (Media::Video, k) => k == MediaKind::Video,
        };
        direction && media
    }
}

#[derive(Default)]
struct Model {
    rooms: BTreeMap<u8, BTreeMap<u8, Person>>,
    rules: BTreeMap<u64, PlainRule>,
    next_rule: u64,
    // What the control thread keeps next to the model, to compile with.
    set: RuleSet,
    rule_counters: BTreeMap<u64, Arc<RuleCounters>>,
    table: Table,
}

impl Model {
    fn run(&mut self, command: Command) {
        match command {
            Command::Join {
                room,
                member,
                addr,
                tracks,
                only,
                region,
            } => {
                let addr = addr.map(address);
                // Refused by the control plane (409): an address somebody else holds, an SSRC
                // another member of the room declared.
                if addr.is_some_and(|a| self.owner(a).is_some_and(|o| o != (room, member))) {
                    return;
                }
                let mut declared: Vec<(Ssrc, MediaKind)> = Vec::new();
                for (s, video) in tracks {
                    if declared.iter().all(|(d, _)| d.0 != s) {
                        let kind = if video {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        };
                        declared.push((Ssrc(s), kind));
                    }
                }
                let taken = self.rooms.get(&room).is_some_and(|people| {
                    people.iter().any(|(id, p)| {
                        *id != member
                            && p.tracks.iter().any(|t| declared.iter().any(|d| d.0 == t.0))
                    })
                });
                if taken {
                    return;
                }
                let person = Person {
                    addr,
                    tracks: declared,
                    only: only.map(|l| l.into_iter().collect()),
                    region: region.map(|r| REGIONS[r]),
                };
                self.rooms.entry(room).or_default().insert(member, person);
                self.recompile(room);
            }
            Command::Leave { room, member } => {
                let Some(people) = self.rooms.get_mut(&room) else {
                    return;
                };
                if people.remove(&member).is_some() {
                    self.recompile(room);
                }
            }
            Command::CloseRoom { room } => {
                if self.rooms.remove(&room).is_some() {
                    self.table
                        .apply(Update::RemoveRoom(RoomId(u32::from(room))));
                }
            }
            Command::AddRule {
                participants,
                regions,
                rooms,
                direction,
                media,
            } => {
                let rule = PlainRule {
                    participants: participants.into_iter().collect(),
                    regions: regions.into_iter().map(|r| REGIONS[r]).collect(),
                    rooms: rooms.into_iter().collect(),
                    direction,
                    media,
                };
                let spec = RuleSpec {
                    r#match: Match {
                        regions: rule
                            .regions
                            .iter()
                            .map(|r| String::from_utf8_lossy(r).into_owned())
                            .collect(),
                        participants: rule
                            .participants
                            .iter()
                            .map(|&(r, m)| ParticipantRef {
                                room: room_name(r),
                                participant: member_name(m),
                            })
                            .collect(),
                        rooms: rule.rooms.iter().map(|&r| room_name(r)).collect(),
                    },
                    direction,
                    media,
                    basis: Some(Basis {
                        authority: "court".into(),
                        reference: "case-1".into(),
                        jurisdiction: "CN".into(),
                    }),
                    expires_at: Some("2099-01-01T00:00:00Z".into()),
                };
                let Ok(compiled) = rules::validate(&spec, 1_700_000_000) else {
                    // Only a rule that names nobody is refused here.
                    assert!(rule.participants.is_empty() && rule.regions.is_empty());
                    return;
                };
                let id = self.next_rule;
                self.next_rule += 1;
                self.set.insert(RuleId(id), compiled);
                self.rule_counters
                    .insert(id, Arc::new(RuleCounters::new(1)));
                self.rules.insert(id, rule);
                for room in self.rooms_matching(id) {
                    self.recompile(room);
                }
            }
            Command::RemoveRule { index } => {
                if self.rules.is_empty() {
                    return;
                }
                let id = *self.rules.keys().nth(index % self.rules.len()).unwrap();
                let touched = self.rooms_matching(id);
                self.rules.remove(&id);
                self.set.remove(RuleId(id)).unwrap();
                for room in touched {
                    self.recompile(room);
                }
            }
        }
    }

    /// Rooms with a member rule `id` matches: those the control thread recompiles.
    fn rooms_matching(&self, id: u64) -> Vec<u8> {
        let rule = &self.rules[&id];
        self.rooms
            .iter()
            .filter(|(r, people)| people.iter().any(|(m, p)| rule.matches(**r, *m, p.region)))
            .map(|(r, _)| *r)
            .collect()
    }

    /// Compiles a room as `control::state::compile` does and installs it.
    fn recompile(&mut self, room: u8) {
        let people = &self.rooms[&room];
        let index: BTreeMap<u8, usize> = people.keys().enumerate().map(|(i, m)| (*m, i)).collect();
        let room_id = room_name(room);
        let specs: Vec<MemberSpec> = people
            .iter()
            .map(|(&m, p)| {
                let name = member_name(m);
                let effect = self.set.effect(&Subject {
                    room: &room_id,
                    participant: &name,
                    region: p.region,
                });
                let counter = |id: Option<RuleId>| id.map(|id| self.rule_counters[&id.0].clone());
                let mut blocks = Blocks::default();
                for (kind, media) in [
                    (rules::Kind::Audio, MediaKind::Audio),
                    (rules::Kind::Video, MediaKind::Video),
                ] {
                    blocks.send[media.index()] = counter(effect.send(kind));
                    blocks.receive[media.index()] = counter(effect.receive(kind));
                }
                MemberSpec {
                    name: Arc::from(name.as_str()),
                    addr: p.addr,
                    tracks: p.tracks.clone(),
                    subscription: match &p.only {
                        None => Subscription::All,
                        Some(list) => Subscription::Only(
                            list.iter().filter_map(|m| index.get(m).copied()).collect(),
                        ),
                    },
                    blocks,
                    counters: Arc::new(ParticipantCounters::new(1)),
                    ice: None,
                }
            })
            .collect();
        let compiled = Room::compile(&specs).expect("SSRCs are unique within a room");
        self.table
            .apply(Update::Room(RoomId(u32::from(room)), Arc::new(compiled)));
    }

    /// Checks every track of every member with an address against the model, and that every
    /// address nobody holds is an unknown source.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.table.rooms(), self.rooms.len());
        for (&room, people) in &self.rooms {
            for (&me, person) in people {
                for &(ssrc, kind) in &person.tracks {
                    let Some(src) = person.addr else {
                        continue;
                    };
                    let (verdict, got) = route(&self.table, src, ssrc);
                    prop_assert!(!got.contains(&src), "{me} got its own packet");
                    let (expected_verdict, want) = self.expected(room, me, kind);
                    prop_assert_eq!(verdict, expected_verdict, "room {} member {}", room, me);
                    prop_assert_eq!(&got, &want, "room {} member {} ssrc {}", room, me, ssrc);
                }
            }
        }
        for a in 0..ADDRESSES + 2 {
            let src = address(a);
            if self.owner(src).is_none() {
                let (verdict, got) = route(&self.table, src, Ssrc(0));
                prop_assert_eq!(verdict, Verdict::Drop(DropReason::UnknownSource));
                prop_assert!(got.is_empty());
            }
        }
        Ok(())
    }

    /// What the model says a packet of `kind` from `me` does.
    fn expected(&self, room: u8, me: u8, kind: MediaKind) -> (Verdict, BTreeSet<SocketAddr>) {
        if self.blocked(room, me, kind, true) {
            return (Verdict::Drop(DropReason::Rule), BTreeSet::new());
        }
        let people = &self.rooms[&room];
        let want: BTreeSet<SocketAddr> = people
            .iter()
            .filter(|(them, p)| {
                **them != me
                    && p.only.as_ref().is_none_or(|list| list.contains(&me))
                    && !self.blocked(room, **them, kind, false)
            })
            .filter_map(|(_, p)| p.addr)
            .collect();
        (Verdict::Forward(want.len()), want)
    }

    fn blocked(&self, room: u8, member: u8, kind: MediaKind, send: bool) -> bool {
        let region = self.rooms[&room][&member].region;
        self.rules
            .values()
            .any(|r| r.matches(room, member, region) && r.blocks(kind, send))
    }

    fn owner(&self, addr: SocketAddr) -> Option<(u8, u8)> {
        self.rooms.iter().find_map(|(room, people)| {
            people
                .iter()
                .find(|(_, p)| p.addr == Some(addr))
                .map(|(m, _)| (*room, *m))
        })
    }
}

fn route(table: &Table, src: SocketAddr, ssrc: Ssrc) -> (Verdict, BTreeSet<SocketAddr>) {
    let mut buf = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
    buf.extend_from_slice(&ssrc.0.to_be_bytes());
    buf.extend_from_slice(b"media");
    let mut out = Vec::new();
    let verdict = table.route(0, &src, &buf, |d| out.push(d.as_socket().unwrap()));
    let set: BTreeSet<SocketAddr> = out.iter().copied().collect();
    assert_eq!(set.len(), out.len(), "a destination twice");
    if let Verdict::Forward(n) = verdict {
        assert_eq!(n, out.len(), "the verdict counts the destinations");
    }
    (verdict, set)
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
    fn table_matches_model(commands in vec(command(), 1..40)) {
        let mut model = Model::default();
        for command in commands {
            model.run(command);
            model.check()?;
        }
    }
}
