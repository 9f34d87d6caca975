//! The sans-IO core fed random control commands and datagrams. Rooms are kept by the shared
//! harness `relay::route::testing::World`: each change compiled incrementally with
//! `route::compile` (the function the control core uses) from the room's last snapshot, checked
//! against a compilation from scratch, and applied to a `Table`; then `Table::route` and
//! `Table::stun` are checked against the harness's plain model of who may receive what.
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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use relay::packet::rtp::Ssrc;
use relay::packet::stun;
use relay::route::testing::{Join, PlainRule, World, rtp_packet};
use relay::route::{Credentials, DropReason, MediaKind, StunAction, StunGuard, Verdict};
use relay::rules::{Direction, Media};
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
    let mut harness = Harness {
        world: World::new(),
        guard: StunGuard::new(),
        now_ms: 0,
        next_tid: 0,
    };
    for command in commands.into_iter().take(MAX_COMMANDS) {
        harness.run(command);
    }
});

/// The shared world plus what STUN needs.
struct Harness {
    world: World,
    guard: StunGuard,
    now_ms: u64,
    next_tid: u32,
}

impl Harness {
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
                let (room, member) = (room % ROOMS, member % MEMBERS);
                let join = Join {
                    addr: addr.map(address),
                    tracks: tracks
                        .into_iter()
                        .take(4)
                        .map(|(s, video)| {
                            let kind = if video {
                                MediaKind::Video
                            } else {
                                MediaKind::Audio
                            };
                            (ssrc(s), kind)
                        })
                        .collect(),
                    only: only.map(|l| {
                        l.into_iter()
                            .take(8)
                            .map(|m| member_name(m % MEMBERS))
                            .collect()
                    }),
                    region: region.map(|r| REGIONS[usize::from(r) % REGIONS.len()]),
                    ice: Some(credentials(room, member)),
                };
                self.world
                    .join(&room_name(room), &member_name(member), join);
                self.sweep();
            }
            Command::Leave { room, member } => {
                self.world
                    .leave(&room_name(room % ROOMS), &member_name(member % MEMBERS));
                self.sweep();
            }
            Command::CloseRoom { room } => {
                self.world.close(&room_name(room % ROOMS));
                self.sweep();
            }
            Command::AddRule {
                participants,
                regions,
                rooms,
                direction,
                media,
            } => {
                let rule = PlainRule {
                    participants: participants
                        .into_iter()
                        .take(4)
                        .map(|(r, m)| (room_name(r % ROOMS), member_name(m % MEMBERS)))
                        .collect(),
                    regions: regions
                        .into_iter()
                        .take(2)
                        .map(|r| REGIONS[usize::from(r) % REGIONS.len()])
                        .collect(),
                    rooms: rooms
                        .into_iter()
                        .take(2)
                        .map(|r| room_name(r % ROOMS))
                        .collect(),
                    direction: [Direction::Send, Direction::Receive, Direction::Both]
                        [usize::from(direction % 3)],
                    media: [Media::Audio, Media::Video, Media::All][usize::from(media % 3)],
                };
                self.world.add_rule(rule);
                self.sweep();
            }
            Command::RemoveRule { index } => {
                self.world.remove_rule(usize::from(index));
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

    /// Every track of every member with an address, routed and checked: after each control
    /// command the table equals the model.
    fn sweep(&self) {
        if let Err(e) = self.world.sweep() {
            panic!("{e}");
        }
    }

    fn source(&self, from: Source) -> SocketAddr {
        match from {
            Source::Member(n) => {
                let held = self.world.addressed();
                if held.is_empty() {
                    stranger(u16::from(n))
                } else {
                    held[usize::from(n) % held.len()].2
                }
            }
            Source::Address(a) => address(a),
            Source::Stranger(port) => stranger(port),
        }
    }

    /// Routes a datagram and checks it against the model; then that every destination has an
    /// allowed flow with the source (a looser statement of the same model, kept as a guard).
    fn check_route(&self, src: SocketAddr, buf: &[u8]) {
        if let Err(e) = self.world.check_route(src, buf) {
            panic!("{e}");
        }
        let (_, to) = self.world.expected(src, buf);
        if let Some((room, me)) = self.world.owner(src) {
            for d in &to {
                let (r, them) = self.world.owner(*d).expect("destinations are members");
                assert_eq!(r, room, "a destination in another room");
                assert!(
                    self.world.any_flow_either_way(room, me, them),
                    "{them} has no allowed flow with {me} in room {room}"
                );
            }
        }
    }

    fn check_stun(&mut self, src: SocketAddr, to: u8, good_key: bool, controlled: bool, fp: bool) {
        let everyone = self.world.everyone();
        let target =
            (!everyone.is_empty()).then(|| everyone[usize::from(to) % everyone.len()].clone());
        let creds = target.as_ref().map_or(
            Credentials {
                ufrag: "nobody".into(),
                pwd: "nobody-password-0123456789".into(),
            },
            |(r, m)| credentials(room_number(r), member_number(m)),
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

        let table = &self.world.table;
        assert_eq!(
            table.route(0, &src, buf, |_| panic!("STUN is not forwarded")),
            Verdict::Stun
        );
        // One second per request: the rate limit never bites here.
        self.now_ms += 1000;
        let mut reply = [0u8; 256];
        let action = table.stun(0, self.now_ms, &mut self.guard, &src, buf, &mut reply);
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
        let current = self.world.person(&room, &member).and_then(|p| p.addr);
        if current == Some(src) {
            return assert_eq!(latch, None);
        }
        let latch = latch.expect("a new address is latched");
        assert_eq!(Some(latch.room), self.world.room_id(&room));
        assert_eq!(&*latch.participant, member.as_str());
        assert_eq!(latch.addr, src);
        // Latch as the control thread does: whoever held the address loses it.
        self.world.latch(&room, &member, src);
        self.sweep();
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

fn room_number(name: &str) -> u8 {
    name[1..].parse().expect("named by room_name")
}

fn member_number(name: &str) -> u8 {
    name[1..].parse().expect("named by member_name")
}

fn credentials(room: u8, member: u8) -> Credentials {
    Credentials {
        ufrag: format!("u{room}x{member}").into(),
        pwd: format!("pwd-{room}-{member}-0123456789abcdef").into(),
    }
}
