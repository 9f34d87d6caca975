//! The sans-IO core fed random control commands and datagrams: rooms compiled with
//! `Room::compile` and blocks from a `RuleSet` (as the control thread does), installed in a
//! `Table` one room at a time, then `Table::route` and `Table::stun` checked against a plain
//! model of who may receive what.
//!
//! Invariants, for every datagram:
//! - no panic;
//! - the verdict counts exactly the destinations emitted, each once, never the source;
//! - every destination is a member of the source's room with an allowed media flow to or from
//!   the source: subscribed, with an address, and stopped by no rule (checked with a naive rule
//!   match, not the `RuleSet` index);
//! - RTP and RTCP go exactly where the model says: the fan-out of a track is every member that
//!   subscribes to the sender and that no send or receive rule of that media kind excludes;
//!   feedback goes to the publishers it names along allowed flows; SRTCP to every member with an
//!   allowed flow either way;
//! - unknown sources are dropped; STUN is answered only with the right password, and the answer
//!   verifies.
//!
//! The datagram itself is never handed back: `route` only borrows it and emits destinations, so
//! what goes out is the received bytes unchanged.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arbitrary::Arbitrary;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use relay::packet::rtp::Ssrc;
use relay::packet::{demux, rtcp, rtp, stun};
use relay::route::{
    Blocks, Credentials, DropReason, MediaKind, MemberSpec, ParticipantCounters, Room, RoomId,
    RuleCounters, StunAction, StunGuard, Subscription, Table, Update, Verdict,
};
use relay::rules::{
    self, Basis, Direction, Match, Media, ParticipantRef, RuleId, RuleSet, RuleSpec, Subject,
};
use sha1::Sha1;

/// Small id spaces, so that commands collide with each other often.
const ROOMS: u8 = 3;
const MEMBERS: u8 = 6;
const ADDRESSES: u8 = 10;
const SSRCS: u8 = 12;
const REGIONS: [[u8; 2]; 3] = [*b"CN", *b"RU", *b"US"];
const MAX_COMMANDS: usize = 48;

#[derive(Arbitrary, Debug)]
enum Command {
    /// Add or replace a participant (`PUT .../participants/{id}`).
    Join {
        room: u8,
        member: u8,
        addr: Option<u8>,
        tracks: Vec<(u8, bool)>,
        /// `None`: subscribe to all; `Some`: only these members.
        only: Option<Vec<u8>>,
        region: Option<u8>,
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
        regions: Vec<u8>,
        rooms: Vec<u8>,
        direction: u8,
        media: u8,
    },
    RemoveRule {
        index: u8,
    },
    Send {
        from: Source,
        datagram: Datagram,
    },
    Stun {
        from: Source,
        to: u8,
        good_key: bool,
        controlled: bool,
        fingerprint: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Source {
    /// The n-th member that has an address.
    Member(u8),
    /// One of the addresses members are given (held by somebody or not).
    Address(u8),
    /// An address no member is ever given.
    Stranger(u16),
}

#[derive(Arbitrary, Debug)]
enum Datagram {
    Rtp { ssrc: u8, second: u8, tail: Vec<u8> },
    Rtcp { parts: Vec<Part>, trailer: Trailer },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Part {
    Sr { ssrc: u8, blocks: Vec<u8> },
    Rr { ssrc: u8, blocks: Vec<u8> },
    Pli { ssrc: u8, media: u8 },
    Nack { ssrc: u8, media: u8 },
    Fir { ssrc: u8, entries: Vec<u8> },
    Remb { ssrc: u8, list: Vec<u8> },
    Sdes { ssrc: u8 },
    Bye { ssrc: u8 },
}

#[derive(Arbitrary, Debug)]
enum Trailer {
    None,
    /// An SRTCP trailer: E flag, then a tag of 0, 4 or 10 bytes; with E the body after the
    /// first 8 bytes is scrambled as encryption would.
    Srtcp {
        encrypted: bool,
        tag: u8,
        key: u8,
    },
}

fuzz_target!(|commands: Vec<Command>| {
    let mut world = World::default();
    for command in commands.into_iter().take(MAX_COMMANDS) {
        world.run(command);
    }
});

/// One participant in the model.
#[derive(Debug)]
struct Person {
    addr: Option<SocketAddr>,
    tracks: Vec<(Ssrc, MediaKind)>,
    /// `None`: everybody; `Some`: these member ids (absent ones are ignored).
    only: Option<BTreeSet<u8>>,
    region: Option<[u8; 2]>,
    counters: Arc<ParticipantCounters>,
}

/// A rule in the model, as plain lists.
#[derive(Debug)]
struct PlainRule {
    participants: BTreeSet<(u8, u8)>,
    regions: BTreeSet<[u8; 2]>,
    rooms: BTreeSet<u8>,
    send: bool,
    receive: bool,
    audio: bool,
    video: bool,
}

#[derive(Default)]
struct World {
    rooms: BTreeMap<u8, BTreeMap<u8, Person>>,
    rules: BTreeMap<u64, PlainRule>,
    set: RuleSet,
    rule_counters: BTreeMap<u64, Arc<RuleCounters>>,
    next_rule: u64,
    table: Table,
    guard: StunGuard,
    now_ms: u64,
    next_tid: u32,
}

impl World {
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
                self.join(room % ROOMS, member % MEMBERS, addr, tracks, only, region);
                self.sweep();
            }
            Command::Leave { room, member } => {
                let room = room % ROOMS;
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                if r.remove(&(member % MEMBERS)).is_some() {
                    self.recompile(room);
                }
                self.sweep();
            }
            Command::CloseRoom { room } => {
                let room = room % ROOMS;
                if self.rooms.remove(&room).is_some() {
                    self.table
                        .apply(Update::RemoveRoom(RoomId(u32::from(room))));
                }
                self.sweep();
            }
            Command::AddRule {
                participants,
                regions,
                rooms,
                direction,
                media,
            } => {
                self.add_rule(participants, regions, rooms, direction, media);
                self.sweep();
            }
            Command::RemoveRule { index } => {
                let Some(&id) = self
                    .rules
                    .keys()
                    .nth(usize::from(index) % self.rules.len().max(1))
                else {
                    return;
                };
                let touched = self.rooms_matching(id);
                self.rules.remove(&id);
                assert!(self.set.remove(RuleId(id)).is_some());
                for room in touched {
                    self.recompile(room);
                }
                self.sweep();
            }
            Command::Send { from, datagram } => {
                let src = self.source(from);
                let buf = datagram.build();
                self.check_route(src, &buf);
            }
            Command::Stun {
                from,
                to,
                good_key,
                controlled,
                fingerprint,
            } => {
                let src = self.source(from);
                self.check_stun(src, to, good_key, controlled, fingerprint);
            }
        }
    }

    // ---- control commands -------------------------------------------------------------------

    fn join(
        &mut self,
        room: u8,
        member: u8,
        addr: Option<u8>,
        tracks: Vec<(u8, bool)>,
        only: Option<Vec<u8>>,
        region: Option<u8>,
    ) {
        let addr = addr.map(address);
        // The control plane refuses an address another participant holds (409) ...
        if let Some(a) = addr
            && self.owner(a).is_some_and(|owner| owner != (room, member))
        {
            return;
        }
        let mut declared: Vec<(Ssrc, MediaKind)> = Vec::new();
        for (s, video) in tracks.into_iter().take(4) {
            let ssrc = ssrc(s);
            if declared.iter().all(|(d, _)| *d != ssrc) {
                let kind = if video {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                declared.push((ssrc, kind));
            }
        }
        // ... and an SSRC another participant of the room declared (409).
        let taken = self.rooms.get(&room).is_some_and(|people| {
            people
                .iter()
                .filter(|(id, _)| **id != member)
                .any(|(_, p)| {
                    p.tracks
                        .iter()
                        .any(|(s, _)| declared.iter().any(|(d, _)| d == s))
                })
        });
        if taken {
            return;
        }
        let people = self.rooms.entry(room).or_default();
        let counters = people.get(&member).map_or_else(
            || Arc::new(ParticipantCounters::new(1)),
            |p| p.counters.clone(),
        );
        people.insert(
            member,
            Person {
                addr,
                tracks: declared,
                only: only.map(|l| l.into_iter().take(8).map(|m| m % MEMBERS).collect()),
                region: region.map(|r| REGIONS[usize::from(r) % REGIONS.len()]),
                counters,
            },
        );
        self.recompile(room);
    }

    fn add_rule(
        &mut self,
        participants: Vec<(u8, u8)>,
        regions: Vec<u8>,
        rooms: Vec<u8>,
        direction: u8,
        media: u8,
    ) {
        let participants: BTreeSet<(u8, u8)> = participants
            .into_iter()
            .take(4)
            .map(|(r, m)| (r % ROOMS, m % MEMBERS))
            .collect();
        let regions: BTreeSet<[u8; 2]> = regions
            .into_iter()
            .take(2)
            .map(|r| REGIONS[usize::from(r) % REGIONS.len()])
            .collect();
        let rooms: BTreeSet<u8> = rooms.into_iter().take(2).map(|r| r % ROOMS).collect();
        let direction =
            [Direction::Send, Direction::Receive, Direction::Both][usize::from(direction % 3)];
        let media = [Media::Audio, Media::Video, Media::All][usize::from(media % 3)];
        let spec = RuleSpec {
            r#match: Match {
                regions: regions
                    .iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect(),
                participants: participants
                    .iter()
                    .map(|&(r, m)| ParticipantRef {
                        room: room_name(r),
                        participant: member_name(m),
                    })
                    .collect(),
                rooms: rooms.iter().map(|&r| room_name(r)).collect(),
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
        let rule = match rules::validate(&spec, 1_700_000_000) {
            Ok(rule) => rule,
            Err(e) => {
                // The only refusal these specs can meet: nobody named.
                assert!(participants.is_empty() && regions.is_empty(), "{e:?}");
                return;
            }
        };
        let id = self.next_rule;
        self.next_rule += 1;
        self.set.insert(RuleId(id), rule);
        self.rule_counters
            .insert(id, Arc::new(RuleCounters::new(1)));
        self.rules.insert(
            id,
            PlainRule {
                participants,
                regions,
                rooms,
                send: direction != Direction::Receive,
                receive: direction != Direction::Send,
                audio: media != Media::Video,
                video: media != Media::Audio,
            },
        );
        for room in self.rooms_matching(id) {
            self.recompile(room);
        }
    }

    /// Rooms holding a participant rule `id` matches (the rooms the control thread recompiles).
    fn rooms_matching(&self, id: u64) -> Vec<u8> {
        let rule = &self.rules[&id];
        self.rooms
            .iter()
            .filter(|(room, people)| {
                people
                    .iter()
                    .any(|(m, p)| rule.matches(**room, *m, p.region))
            })
            .map(|(room, _)| *room)
            .collect()
    }

    /// Compiles one room as the control thread does and installs it.
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
                    let i = usize::from(media == MediaKind::Video);
                    blocks.send[i] = counter(effect.send(kind));
                    blocks.receive[i] = counter(effect.receive(kind));
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
                    counters: p.counters.clone(),
                    ice: Some(credentials(room, m)),
                }
            })
            .collect();
        let compiled = Room::compile(&specs).expect("SSRCs are unique within a room");
        assert_eq!(compiled.len(), specs.len());
        self.table
            .apply(Update::Room(RoomId(u32::from(room)), Arc::new(compiled)));
    }

    /// Routes one RTP packet from every member with an address on every track it declared, so
    /// each control command is followed by a check of the whole table.
    fn sweep(&mut self) {
        let mut sends = Vec::new();
        for people in self.rooms.values() {
            for p in people.values() {
                if let Some(addr) = p.addr {
                    for (ssrc, _) in &p.tracks {
                        sends.push((addr, rtp_packet(*ssrc, 96, b"sweep")));
                    }
                }
            }
        }
        for (addr, buf) in sends {
            self.check_route(addr, &buf);
        }
        assert_eq!(self.table.rooms(), self.rooms.len());
    }

    // ---- datagrams --------------------------------------------------------------------------

    fn source(&self, from: Source) -> SocketAddr {
        match from {
            Source::Member(n) => {
                let held: Vec<SocketAddr> = self
                    .rooms
                    .values()
                    .flat_map(|people| people.values().filter_map(|p| p.addr))
                    .collect();
                if held.is_empty() {
                    stranger(u16::from(n))
                } else {
                    held[usize::from(n) % held.len()]
                }
            }
            Source::Address(a) => address(a),
            Source::Stranger(port) => stranger(port),
        }
    }

    fn check_route(&self, src: SocketAddr, buf: &[u8]) {
        let before = self.owner(src).map(|(r, m)| {
            let c = &self.rooms[&r][&m].counters;
            (c.packets_in.sum(), c.packets_dropped.sum())
        });
        let mut out: Vec<SocketAddr> = Vec::new();
        let verdict = self.table.route(0, &src, buf, |d| {
            out.push(d.as_socket().expect("destinations are IP addresses"));
        });

        // Whatever the datagram: the count is the emitted destinations, each once, never the
        // source.
        match verdict {
            Verdict::Forward(n) => assert_eq!(n, out.len(), "verdict counts what was emitted"),
            _ => assert!(out.is_empty(), "{verdict:?} but emitted {out:?}"),
        }
        let set: BTreeSet<SocketAddr> = out.iter().copied().collect();
        assert_eq!(set.len(), out.len(), "a destination twice: {out:?}");
        assert!(!set.contains(&src), "sent back to its source");

        match demux::classify(buf) {
            demux::Kind::Stun => return assert_eq!(verdict, Verdict::Stun),
            demux::Kind::Dtls => return assert_eq!(verdict, Verdict::Drop(DropReason::Dtls)),
            demux::Kind::Other => return assert_eq!(verdict, Verdict::Drop(DropReason::NotMedia)),
            demux::Kind::Rtp | demux::Kind::Rtcp => {}
        }
        let Some((room, me)) = self.owner(src) else {
            return assert_eq!(verdict, Verdict::Drop(DropReason::UnknownSource));
        };

        // Every destination is in the room and has an allowed flow with the source.
        let people = &self.rooms[&room];
        for d in &out {
            let (r, them) = self.owner(*d).expect("destinations are members");
            assert_eq!(r, room, "a destination in another room");
            assert!(
                self.any_flow(room, me, them) || self.any_flow(room, them, me),
                "{them} has no allowed flow with {me} in room {room}"
            );
        }

        let expected = self.expected(room, me, buf);
        assert_eq!(verdict, expected.0, "verdict for {buf:02x?}");
        let want: BTreeSet<SocketAddr> = expected.1.iter().filter_map(|m| people[m].addr).collect();
        assert_eq!(set, want, "destinations for {buf:02x?}");

        let (packets_in, dropped) = before.expect("the source is a member");
        let c = &people[&me].counters;
        assert_eq!(c.packets_in.sum(), packets_in + 1);
        let was_dropped = u64::from(matches!(verdict, Verdict::Drop(_)));
        assert_eq!(c.packets_dropped.sum(), dropped + was_dropped);
    }

    /// The model's verdict and receivers for a datagram from member `me` of `room`.
    fn expected(&self, room: u8, me: u8, buf: &[u8]) -> (Verdict, BTreeSet<u8>) {
        let people = &self.rooms[&room];
        let person = &people[&me];
        let kind_of = |s: Ssrc| person.tracks.iter().find(|(t, _)| *t == s).map(|(_, k)| *k);
        if demux::classify(buf) == demux::Kind::Rtp {
            let Ok(packet) = rtp::Packet::new_checked(buf) else {
                return (Verdict::Drop(DropReason::MalformedRtp), BTreeSet::new());
            };
            let Some(kind) = kind_of(packet.ssrc()) else {
                return (Verdict::Drop(DropReason::UndeclaredSsrc), BTreeSet::new());
            };
            return self.media(room, me, kind);
        }
        let Ok(route) = rtcp::classify(buf) else {
            return (Verdict::Drop(DropReason::MalformedRtcp), BTreeSet::new());
        };
        match route {
            rtcp::Route::Sender {
                sender,
                also_feedback,
            } => {
                let Some(kind) = kind_of(sender) else {
                    return (Verdict::Drop(DropReason::UndeclaredSsrc), BTreeSet::new());
                };
                let (verdict, mut to) = self.media(room, me, kind);
                let Some(feedback) = also_feedback else {
                    return (verdict, to);
                };
                let (back, _) = self.feedback(room, me, feedback, &to);
                let sent = back.len();
                to.extend(back);
                let verdict = match verdict {
                    Verdict::Forward(n) => Verdict::Forward(n + sent),
                    _ if sent > 0 => Verdict::Forward(sent),
                    v => v,
                };
                (verdict, to)
            }
            rtcp::Route::Feedback { feedback, .. } => {
                let (to, blocked) = self.feedback(room, me, feedback, &BTreeSet::new());
                let verdict = match (to.len(), blocked) {
                    (0, true) => Verdict::Drop(DropReason::Rule),
                    (0, false) => Verdict::Drop(DropReason::NoRoute),
                    (n, _) => Verdict::Forward(n),
                };
                (verdict, to)
            }
            rtcp::Route::Encrypted { .. } => {
                let to: BTreeSet<u8> = people
                    .iter()
                    .filter(|(m, p)| {
                        p.addr.is_some()
                            && (self.any_flow(room, me, **m) || self.any_flow(room, **m, me))
                    })
                    .map(|(m, _)| *m)
                    .collect();
                (Verdict::Forward(to.len()), to)
            }
        }
    }

    /// Media of `kind` from `me`: dropped by a send rule, else to everyone with an allowed flow.
    fn media(&self, room: u8, me: u8, kind: MediaKind) -> (Verdict, BTreeSet<u8>) {
        if self.blocked(room, me, kind, true) {
            return (Verdict::Drop(DropReason::Rule), BTreeSet::new());
        }
        let to: BTreeSet<u8> = self.rooms[&room]
            .keys()
            .filter(|&&them| self.flow(room, me, them, kind))
            .copied()
            .collect();
        (Verdict::Forward(to.len()), to)
    }

    /// Receiver feedback from `me`: to the publisher of each named SSRC that `me` subscribes to,
    /// unless a rule on either end stops that kind of media (or it is in `skip`). Returns the
    /// receivers with an address, and whether a rule stopped some.
    fn feedback(
        &self,
        room: u8,
        me: u8,
        feedback: rtcp::Feedback<'_>,
        skip: &BTreeSet<u8>,
    ) -> (BTreeSet<u8>, bool) {
        let people = &self.rooms[&room];
        let mut to = BTreeSet::new();
        // Publishers already chosen, with or without an address: each is considered once.
        let mut chosen = BTreeSet::new();
        let mut blocked = false;
        for ssrc in feedback.media_ssrcs() {
            let Some((&publisher, p, kind)) = people.iter().find_map(|(m, p)| {
                p.tracks
                    .iter()
                    .find(|(t, _)| *t == ssrc)
                    .map(|(_, k)| (m, p, *k))
            }) else {
                continue;
            };
            if publisher == me
                || !self.subscribes(room, me, publisher)
                || chosen.contains(&publisher)
                || skip.contains(&publisher)
            {
                continue;
            }
            if self.blocked(room, me, kind, true)
                || self.blocked(room, me, kind, false)
                || self.blocked(room, publisher, kind, true)
            {
                blocked = true;
                continue;
            }
            chosen.insert(publisher);
            if p.addr.is_some() {
                to.insert(publisher);
            }
        }
        (to, blocked)
    }

    /// Media of `kind` may flow from `from` to `to`.
    fn flow(&self, room: u8, from: u8, to: u8, kind: MediaKind) -> bool {
        from != to
            && self.rooms[&room][&to].addr.is_some()
            && self.subscribes(room, to, from)
            && !self.blocked(room, from, kind, true)
            && !self.blocked(room, to, kind, false)
    }

    /// Some media of `from` (one of its tracks) may flow to `to`.
    fn any_flow(&self, room: u8, from: u8, to: u8) -> bool {
        self.rooms[&room][&from]
            .tracks
            .iter()
            .any(|(_, kind)| self.flow(room, from, to, *kind))
    }

    fn subscribes(&self, room: u8, receiver: u8, sender: u8) -> bool {
        receiver != sender
            && self.rooms[&room][&receiver]
                .only
                .as_ref()
                .is_none_or(|list| list.contains(&sender))
    }

    /// A rule stops `member`'s outgoing (`send`) or incoming media of `kind`: naive matching
    /// over every rule, independent of the `RuleSet` index.
    fn blocked(&self, room: u8, member: u8, kind: MediaKind, send: bool) -> bool {
        let region = self.rooms[&room][&member].region;
        self.rules.values().any(|r| {
            r.matches(room, member, region)
                && if send { r.send } else { r.receive }
                && match kind {
                    MediaKind::Audio => r.audio,
                    MediaKind::Video => r.video,
                }
        })
    }

    /// Who holds an address.
    fn owner(&self, addr: SocketAddr) -> Option<(u8, u8)> {
        self.rooms.iter().find_map(|(room, people)| {
            people
                .iter()
                .find(|(_, p)| p.addr == Some(addr))
                .map(|(m, _)| (*room, *m))
        })
    }

    // ---- STUN -------------------------------------------------------------------------------

    fn check_stun(&mut self, src: SocketAddr, to: u8, good_key: bool, controlled: bool, fp: bool) {
        let everyone: Vec<(u8, u8)> = self
            .rooms
            .iter()
            .flat_map(|(r, people)| people.keys().map(move |m| (*r, *m)))
            .collect();
        let target = (!everyone.is_empty()).then(|| everyone[usize::from(to) % everyone.len()]);
        let creds = target.map_or(
            Credentials {
                ufrag: "nobody".into(),
                pwd: "nobody-password-0123456789".into(),
            },
            |(r, m)| credentials(r, m),
        );
        let username = format!("{}:peer", creds.ufrag);
        let key: &[u8] = if good_key {
            creds.pwd.as_bytes()
        } else {
            b"a-wrong-password"
        };
        self.next_tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.next_tid.to_be_bytes());
        let mut buf = [0u8; 256];
        let len = stun::BindingRequest {
            transaction_id: tid,
            username: username.as_bytes(),
            priority: 1,
            ice_controlling: Some(7),
            use_candidate: !controlled,
            integrity_key: key,
            fingerprint: fp,
        }
        .emit(&mut buf)
        .expect("the request fits");
        let buf = &mut buf[..len];
        if controlled {
            make_controlled(buf, key);
        }

        assert_eq!(
            self.table
                .route(0, &src, buf, |_| panic!("STUN is not forwarded")),
            Verdict::Stun
        );
        // One second per request: the rate limit never bites here.
        self.now_ms += 1000;
        let mut reply = [0u8; 256];
        let action = self
            .table
            .stun(0, self.now_ms, &mut self.guard, &src, buf, &mut reply);
        let Some((room, member)) = target else {
            return assert_eq!(action, StunAction::Drop(DropReason::StunUnknownUser));
        };
        if !good_key {
            return assert_eq!(action, StunAction::Drop(DropReason::StunUnauthorized));
        }
        let StunAction::Reply { len, latch } = action else {
            panic!("a valid request was not answered: {action:?}");
        };
        let r = stun::Message::new_checked(&reply[..len]).expect("our reply parses");
        assert_eq!(r.transaction_id(), tid);
        assert_eq!(r.check_fingerprint(), Ok(()));
        if controlled {
            // A lite agent answers a role conflict with 487 and latches nothing.
            assert_eq!(r.class(), stun::Class::Error);
            assert_eq!(r.error_code().map(|(c, _)| c), Some(487));
            return assert_eq!(latch, None);
        }
        assert_eq!(r.class(), stun::Class::Success);
        assert_eq!(r.xor_mapped_address(), Some(src));
        assert_eq!(r.verify_integrity(creds.pwd.as_bytes()), Ok(()));
        let current = self.rooms[&room][&member].addr;
        if current == Some(src) {
            return assert_eq!(latch, None);
        }
        let latch = latch.expect("a new address is latched");
        assert_eq!(latch.room, RoomId(u32::from(room)));
        assert_eq!(&*latch.participant, member_name(member));
        assert_eq!(latch.addr, src);
        // Latch as the control thread does: whoever held the address loses it.
        if let Some((r2, m2)) = self.owner(src) {
            self.rooms.get_mut(&r2).unwrap().get_mut(&m2).unwrap().addr = None;
            self.recompile(r2);
        }
        self.rooms
            .get_mut(&room)
            .unwrap()
            .get_mut(&member)
            .unwrap()
            .addr = Some(src);
        self.recompile(room);
        self.sweep();
    }
}

impl PlainRule {
    /// The contract (API.md): in one of the rooms (none listed: any) and named or in a region.
    fn matches(&self, room: u8, member: u8, region: Option<[u8; 2]>) -> bool {
        (self.rooms.is_empty() || self.rooms.contains(&room))
            && (self.participants.contains(&(room, member))
                || region.is_some_and(|r| self.regions.contains(&r)))
    }
}

impl Datagram {
    fn build(&self) -> Vec<u8> {
        match self {
            Self::Rtp {
                ssrc: s,
                second,
                tail,
            } => {
                let mut b = rtp_packet(ssrc(*s), *second, &[]);
                b.extend(tail.iter().take(64));
                b
            }
            Self::Rtcp { parts, trailer } => {
                let mut b = Vec::new();
                for part in parts.iter().take(4) {
                    part.emit(&mut b);
                }
                if let Trailer::Srtcp {
                    encrypted,
                    tag,
                    key,
                } = trailer
                {
                    if *encrypted && b.len() > 8 {
                        // Stand-in for encryption: flip every byte after the first 8.
                        for x in &mut b[8..] {
                            *x ^= key | 1;
                        }
                    }
                    let e = if *encrypted { 0x80 } else { 0 };
                    b.extend_from_slice(&[e, 0, 0, 1]);
                    let tag_len = [0, 4, 10][usize::from(tag % 3)];
                    b.extend(std::iter::repeat_n(0xaa, tag_len));
                }
                b
            }
            Self::Raw(bytes) => bytes.iter().take(128).copied().collect(),
        }
    }
}

impl Part {
    /// Appends the sub-packet, well formed (RFC 3550 §6.4, RFC 4585 §6, RFC 5104 §4.3.1).
    fn emit(&self, b: &mut Vec<u8>) {
        let word = |b: &mut Vec<u8>, w: u32| b.extend_from_slice(&w.to_be_bytes());
        let start = b.len();
        match self {
            Self::Sr { ssrc: s, blocks } | Self::Rr { ssrc: s, blocks } => {
                let sr = matches!(self, Self::Sr { .. });
                let blocks: Vec<u8> = blocks.iter().take(4).copied().collect();
                b.extend_from_slice(&[0x80 | blocks.len() as u8, if sr { 200 } else { 201 }, 0, 0]);
                word(b, ssrc(*s).0);
                if sr {
                    b.extend_from_slice(&[0; 20]);
                }
                for block in blocks {
                    word(b, ssrc(block).0);
                    b.extend_from_slice(&[0; 20]);
                }
            }
            Self::Pli { ssrc: s, media } | Self::Nack { ssrc: s, media } => {
                let nack = matches!(self, Self::Nack { .. });
                b.extend_from_slice(&[0x81, if nack { 205 } else { 206 }, 0, 0]);
                word(b, ssrc(*s).0);
                word(b, ssrc(*media).0);
                if nack {
                    word(b, 0x0001_0003);
                }
            }
            Self::Fir { ssrc: s, entries } => {
                b.extend_from_slice(&[0x84, 206, 0, 0]);
                word(b, ssrc(*s).0);
                word(b, 0);
                for e in entries
                    .iter()
                    .take(4)
                    .chain(entries.is_empty().then_some(&0))
                {
                    word(b, ssrc(*e).0);
                    word(b, 0x0100_0000);
                }
            }
            Self::Remb { ssrc: s, list } => {
                let list: Vec<u8> = list.iter().take(4).copied().collect();
                b.extend_from_slice(&[0x8f, 206, 0, 0]);
                word(b, ssrc(*s).0);
                word(b, 0);
                b.extend_from_slice(b"REMB");
                b.extend_from_slice(&[list.len() as u8, 0x04, 0x00, 0x00]);
                for l in list {
                    word(b, ssrc(l).0);
                }
            }
            Self::Sdes { ssrc: s } => {
                b.extend_from_slice(&[0x81, 202, 0, 0]);
                word(b, ssrc(*s).0);
                b.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
            }
            Self::Bye { ssrc: s } => {
                b.extend_from_slice(&[0x81, 203, 0, 0]);
                word(b, ssrc(*s).0);
            }
        }
        let words = ((b.len() - start) / 4 - 1) as u16;
        b[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    }
}

/// Turns a request's ICE-CONTROLLING into ICE-CONTROLLED (a role conflict for a lite agent)
/// and signs it again with `key`.
fn make_controlled(buf: &mut [u8], key: &[u8]) {
    let m = stun::Message::new_checked(&*buf).expect("our request parses");
    let at = m
        .attributes()
        .find(|a| a.attr_type == stun::AttributeType::ICE_CONTROLLING)
        .map(|a| a.offset)
        .expect("the request is controlling");
    let integrity = m.integrity_offset();
    let fingerprint = m.fingerprint_offset();
    buf[at..at + 2].copy_from_slice(&0x8029u16.to_be_bytes());
    if let Some(mi) = integrity {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap();
        let length = (mi + 24 - 20) as u16;
        mac.update(&buf[..2]);
        mac.update(&length.to_be_bytes());
        mac.update(&buf[4..mi]);
        buf[mi + 4..mi + 24].copy_from_slice(&mac.finalize().into_bytes());
    }
    if let Some(f) = fingerprint {
        let crc = crc32fast::hash(&buf[..f]) ^ 0x5354_554e;
        buf[f + 4..f + 8].copy_from_slice(&crc.to_be_bytes());
    }
}

fn rtp_packet(ssrc: Ssrc, second: u8, payload: &[u8]) -> Vec<u8> {
    // Keep the second byte out of the RTCP range, so this is RTP (RFC 5761 §4).
    let second = if (192..=223).contains(&second) {
        second & 0x7f
    } else {
        second
    };
    let mut b = vec![0x80, second, 0, 1, 0, 0, 0, 2];
    b.extend_from_slice(&ssrc.0.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn ssrc(n: u8) -> Ssrc {
    Ssrc(0x1000 + u32::from(n % SSRCS))
}

fn address(n: u8) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        5000 + u16::from(n % ADDRESSES),
    )
}

fn stranger(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), port)
}

fn room_name(room: u8) -> String {
    format!("r{room}")
}

fn member_name(member: u8) -> String {
    format!("p{member}")
}

fn credentials(room: u8, member: u8) -> Credentials {
    Credentials {
        ufrag: format!("u{room}x{member}").into(),
        pwd: format!("pwd-{room}-{member}-0123456789abcdef").into(),
    }
}
