//! The one plain model of who should get what, and a harness that keeps rooms as the control
//! core does, shared by the model test (`model_tests.rs`) and the fuzz target (`fuzz/core`).
//!
//! [`World`] holds rooms, members and rules as plain maps. Each change goes the way of the
//! control core: the control plane's refusals (an address or an SSRC somebody else holds), a
//! slot from [`Slots`], then [`compile`] from the room's last snapshot with the members that
//! changed, and the [`Update`] applied to a worker's [`Table`]. Every compilation is checked
//! against compiling the room from scratch ([`compile_all`]): the two snapshots must be equal,
//! member by member and mask by mask.
//!
//! [`World::expected`] is the model: it decides from the plain maps alone, with rules matched
//! naively (never through the `RuleSet` index), where a datagram goes and with which verdict;
//! [`World::check_route`] compares the table's answer with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::compile::{Change, Participant, Roster, Slots, compile, compile_all};
use super::counter::{ParticipantCounters, RuleCounters};
use super::ice::Credentials;
use super::room::{CHUNK, MediaKind, Member, Room};
use super::table::{DropReason, RoomId, Table, Update, Verdict};
use crate::packet::rtp::{self, Ssrc};
use crate::packet::{demux, rtcp};
use crate::rules::{
    self, Basis, Direction, Match, Media, ParticipantRef, RuleId, RuleSet, RuleSpec,
};

/// One member as the model keeps it.
#[derive(Clone, Debug)]
pub struct Person {
    /// Its address, fixed or latched.
    pub addr: Option<SocketAddr>,
    /// Its tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// `None`: everybody; `Some`: these ids, as given (absent ones ignored).
    pub only: Option<Vec<String>>,
    /// Its region.
    pub region: Option<[u8; 2]>,
    /// Its relay-side ICE credentials.
    pub ice: Option<Arc<Credentials>>,
    /// Its counters, kept when it joins again.
    pub counters: Arc<ParticipantCounters>,
    slot: u16,
}

/// What a join declares.
#[derive(Clone, Debug, Default)]
pub struct Join {
    /// A fixed address.
    pub addr: Option<SocketAddr>,
    /// Tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// `None`: subscribe to everybody; `Some`: to these ids.
    pub only: Option<Vec<String>>,
    /// Region.
    pub region: Option<[u8; 2]>,
    /// Relay-side ICE credentials.
    pub ice: Option<Credentials>,
}

/// A rule as plain sets.
#[derive(Clone, Debug)]
pub struct PlainRule {
    /// (room, participant) pairs it names.
    pub participants: BTreeSet<(String, String)>,
    /// Regions it names.
    pub regions: BTreeSet<[u8; 2]>,
    /// Rooms it is limited to (empty: any).
    pub rooms: BTreeSet<String>,
    /// What it stops.
    pub direction: Direction,
    /// Which media.
    pub media: Media,
}

#[derive(Debug)]
struct ModelRoom {
    id: RoomId,
    people: BTreeMap<String, Person>,
    slots: Slots,
    /// Id to the ids whose subscription lists it.
    listeners: BTreeMap<String, BTreeSet<String>>,
    snapshot: Arc<Room>,
}

/// Rooms, members and rules, the table they compile into, and the model's answers.
#[derive(Debug, Default)]
pub struct World {
    rooms: BTreeMap<String, ModelRoom>,
    rules: BTreeMap<u64, PlainRule>,
    set: RuleSet,
    rule_counters: BTreeMap<u64, Arc<RuleCounters>>,
    next_rule: u64,
    next_room: u32,
    /// One worker's table, fed every update.
    pub table: Table,
}

impl World {
    /// No rooms, no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a member, creating the room if needed. Returns false, changing nothing,
    /// where the control plane refuses (409): an address another member holds, an SSRC another
    /// member of the room declared. Duplicate SSRCs in `join.tracks` keep the first.
    pub fn join(&mut self, room: &str, id: &str, join: Join) -> bool {
        if join
            .addr
            .is_some_and(|a| self.owner(a).is_some_and(|o| o != (room, id)))
        {
            return false;
        }
        let mut tracks: Vec<(Ssrc, MediaKind)> = Vec::new();
        for t in join.tracks {
            if tracks.iter().all(|d| d.0 != t.0) {
                tracks.push(t);
            }
        }
        let taken = self.rooms.get(room).is_some_and(|r| {
            r.people.iter().any(|(other, p)| {
                other != id && p.tracks.iter().any(|t| tracks.iter().any(|d| d.0 == t.0))
            })
        });
        if taken {
            return false;
        }
        self.room_entry(room);
        let r = self.rooms.get_mut(room).expect("just made");
        let old = r.people.remove(id);
        let was = old.as_ref().map(|p| p.slot);
        if let Some(old) = &old {
            r.unlist(id, old);
        }
        let slot = match was {
            Some(s) => s,
            None => r.slots.take().expect("test rooms are small"),
        };
        let person = Person {
            addr: join.addr,
            tracks,
            only: join.only,
            region: join.region,
            ice: join.ice.map(Arc::new),
            counters: old.map_or_else(|| Arc::new(ParticipantCounters::new(1)), |p| p.counters),
            slot,
        };
        r.list(id, &person);
        r.people.insert(id.to_owned(), person);
        self.publish(room, &[(id.to_owned(), was)]);
        true
    }

    /// Removes a member.
    pub fn leave(&mut self, room: &str, id: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(old) = r.people.remove(id) else {
            return;
        };
        r.unlist(id, &old);
        r.slots.put(old.slot);
        self.publish(room, &[(id.to_owned(), Some(old.slot))]);
    }

    /// Closes a room.
    pub fn close(&mut self, room: &str) {
        if let Some(r) = self.rooms.remove(room) {
            self.table.apply(Update::RemoveRoom(r.id));
        }
    }

    /// Binds a member to `addr`, as a STUN latch does: whoever held it loses it.
    pub fn latch(&mut self, room: &str, id: &str, addr: SocketAddr) {
        if let Some((r2, p2)) = self.owner(addr).map(|(r, p)| (r.to_owned(), p.to_owned())) {
            if (r2.as_str(), p2.as_str()) == (room, id) {
                return;
            }
            self.set_address(&r2, &p2, None);
        }
        self.set_address(room, id, Some(addr));
    }

    /// Adds a rule; `None` where validation refuses it (it names nobody).
    pub fn add_rule(&mut self, rule: PlainRule) -> Option<u64> {
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
                    .map(|(room, participant)| ParticipantRef {
                        room: room.clone(),
                        participant: participant.clone(),
                    })
                    .collect(),
                rooms: rule.rooms.iter().cloned().collect(),
            },
            direction: rule.direction,
            media: rule.media,
            basis: Some(Basis {
                authority: "court".into(),
                reference: "case-1".into(),
                jurisdiction: "CN".into(),
            }),
            expires_at: Some("2099-01-01T00:00:00Z".into()),
        };
        let Ok(compiled) = rules::validate(&spec, 1_700_000_000) else {
            // The only refusal these rules can meet: nobody named.
            assert!(rule.participants.is_empty() && rule.regions.is_empty());
            return None;
        };
        let id = self.next_rule;
        self.next_rule += 1;
        self.set.insert(RuleId(id), compiled);
        self.rule_counters
            .insert(id, Arc::new(RuleCounters::new(1)));
        self.rules.insert(id, rule);
        self.republish_rule(id);
        Some(id)
    }

    /// Lifts the `index`-th rule in force (modulo their number).
    pub fn remove_rule(&mut self, index: usize) {
        if self.rules.is_empty() {
            return;
        }
        let id = *self
            .rules
            .keys()
            .nth(index % self.rules.len())
            .expect("in range");
        let touched = self.matched_by(id);
        self.rules.remove(&id);
        assert!(self.set.remove(RuleId(id)).is_some());
        for (room, ids) in touched {
            let changes: Vec<(String, Option<u16>)> = ids
                .into_iter()
                .map(|p| {
                    let slot = self.rooms[&room].people[&p].slot;
                    (p, Some(slot))
                })
                .collect();
            self.publish(&room, &changes);
        }
    }

    /// Every member with an address: (room, id, address).
    pub fn addressed(&self) -> Vec<(String, String, SocketAddr)> {
        self.rooms
            .iter()
            .flat_map(|(room, r)| {
                r.people
                    .iter()
                    .filter_map(move |(id, p)| Some((room.clone(), id.clone(), p.addr?)))
            })
            .collect()
    }

    /// Every member: (room, id).
    pub fn everyone(&self) -> Vec<(String, String)> {
        self.rooms
            .iter()
            .flat_map(|(room, r)| r.people.keys().map(move |id| (room.clone(), id.clone())))
            .collect()
    }

    /// A member.
    pub fn person(&self, room: &str, id: &str) -> Option<&Person> {
        self.rooms.get(room)?.people.get(id)
    }

    /// The handle a room has in the table.
    pub fn room_id(&self, room: &str) -> Option<RoomId> {
        self.rooms.get(room).map(|r| r.id)
    }

    /// The number of rooms.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Who holds an address.
    pub fn owner(&self, addr: SocketAddr) -> Option<(&str, &str)> {
        self.rooms.iter().find_map(|(room, r)| {
            r.people
                .iter()
                .find(|(_, p)| p.addr == Some(addr))
                .map(|(id, _)| (room.as_str(), id.as_str()))
        })
    }

    /// Routes an RTP packet from every track of every member with an address through the
    /// table and checks each against the model; and that the table holds every room.
    pub fn sweep(&self) -> Result<(), String> {
        if self.table.rooms() != self.rooms.len() {
            return Err(format!(
                "the table has {} rooms, the model {}",
                self.table.rooms(),
                self.rooms.len()
            ));
        }
        for r in self.rooms.values() {
            for p in r.people.values() {
                let Some(addr) = p.addr else {
                    continue;
                };
                for (ssrc, _) in &p.tracks {
                    self.check_route(addr, &rtp_packet(*ssrc, 96, b"sweep"))?;
                }
            }
        }
        Ok(())
    }

    /// Routes one datagram through the table and checks the verdict, the destinations and the
    /// sender's counters against the model.
    pub fn check_route(&self, src: SocketAddr, buf: &[u8]) -> Result<(), String> {
        // Only RTP and RTCP reach the address lookup, and so the sender's counters.
        let media = matches!(demux::classify(buf), demux::Kind::Rtp | demux::Kind::Rtcp);
        let counters = self
            .owner(src)
            .filter(|_| media)
            .and_then(|(r, m)| self.person(r, m))
            .map(|p| p.counters.clone());
        let before = counters
            .as_ref()
            .map(|c| (c.packets_in().sum(), c.packets_dropped().sum()));
        let mut out: Vec<SocketAddr> = Vec::new();
        let verdict = self.table.route(0, &src, buf, |d| {
            out.push(d.as_socket().expect("destinations are IP addresses"));
        });
        match verdict {
            Verdict::Forward(n) if n != out.len() => {
                return Err(format!("{verdict:?} but {} emitted", out.len()));
            }
            Verdict::Forward(_) => {}
            _ if !out.is_empty() => return Err(format!("{verdict:?} but emitted {out:?}")),
            _ => {}
        }
        let set: BTreeSet<SocketAddr> = out.iter().copied().collect();
        if set.len() != out.len() {
            return Err(format!("a destination twice: {out:?}"));
        }
        if set.contains(&src) {
            return Err("sent back to its source".into());
        }
        let (want_verdict, want) = self.expected(src, buf);
        if verdict != want_verdict || set != want {
            return Err(format!(
                "datagram {buf:02x?} from {src}: got {verdict:?} to {set:?}, the model says \
                 {want_verdict:?} to {want:?}"
            ));
        }
        if let (Some(c), Some((packets_in, dropped))) = (counters, before) {
            if c.packets_in().sum() != packets_in + 1 {
                return Err("packets_in did not count the datagram once".into());
            }
            let was_dropped = u64::from(matches!(verdict, Verdict::Drop(_)));
            if c.packets_dropped().sum() != dropped + was_dropped {
                return Err("packets_dropped did not count the drop once".into());
            }
        }
        Ok(())
    }

    /// The model's verdict and destinations for a datagram from `src`.
    pub fn expected(&self, src: SocketAddr, buf: &[u8]) -> (Verdict, BTreeSet<SocketAddr>) {
        let none = BTreeSet::new();
        match demux::classify(buf) {
            demux::Kind::Stun => return (Verdict::Stun, none),
            demux::Kind::Dtls => return (Verdict::Drop(DropReason::Dtls), none),
            demux::Kind::Other => return (Verdict::Drop(DropReason::NotMedia), none),
            demux::Kind::Rtp | demux::Kind::Rtcp => {}
        }
        let Some((room, me)) = self.owner(src) else {
            return (Verdict::Drop(DropReason::UnknownSource), none);
        };
        let (verdict, to) = self.expected_from(room, me, buf);
        let people = &self.rooms[room].people;
        let to = to.iter().filter_map(|m| people[m].addr).collect();
        (verdict, to)
    }

    /// Whether some media of `from` may flow to `to`, or the other way.
    pub fn any_flow_either_way(&self, room: &str, a: &str, b: &str) -> bool {
        self.any_flow(room, a, b) || self.any_flow(room, b, a)
    }

    // ---- the model ------------------------------------------------------------------------

    fn expected_from(&self, room: &str, me: &str, buf: &[u8]) -> (Verdict, BTreeSet<String>) {
        let people = &self.rooms[room].people;
        let person = &people[me];
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
                let to: BTreeSet<String> = people
                    .iter()
                    .filter(|(m, p)| p.addr.is_some() && self.any_flow_either_way(room, me, m))
                    .map(|(m, _)| m.clone())
                    .collect();
                (Verdict::Forward(to.len()), to)
            }
        }
    }

    /// Media of `kind` from `me`: dropped by a send rule, else to everyone with an allowed flow.
    fn media(&self, room: &str, me: &str, kind: MediaKind) -> (Verdict, BTreeSet<String>) {
        if self.blocked(room, me, kind, true) {
            return (Verdict::Drop(DropReason::Rule), BTreeSet::new());
        }
        let to: BTreeSet<String> = self.rooms[room]
            .people
            .keys()
            .filter(|them| self.flow(room, me, them, kind))
            .cloned()
            .collect();
        (Verdict::Forward(to.len()), to)
    }

    /// Receiver feedback from `me`: to the publisher of each named SSRC that `me` subscribes to,
    /// unless a rule on either end stops that kind of media (or it is in `skip`). Returns the
    /// receivers with an address, and whether a rule stopped some.
    fn feedback(
        &self,
        room: &str,
        me: &str,
        feedback: rtcp::Feedback<'_>,
        skip: &BTreeSet<String>,
    ) -> (BTreeSet<String>, bool) {
        let people = &self.rooms[room].people;
        let mut to = BTreeSet::new();
        // Publishers already chosen, with or without an address: each is considered once.
        let mut chosen = BTreeSet::new();
        let mut blocked = false;
        for ssrc in feedback.media_ssrcs() {
            let Some((publisher, p, kind)) = people.iter().find_map(|(m, p)| {
                p.tracks
                    .iter()
                    .find(|(t, _)| *t == ssrc)
                    .map(|(_, k)| (m, p, *k))
            }) else {
                continue;
            };
            if publisher == me
                || !self.subscribes(room, me, publisher)
                || chosen.contains(publisher)
                || skip.contains(publisher)
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
            chosen.insert(publisher.clone());
            if p.addr.is_some() {
                to.insert(publisher.clone());
            }
        }
        (to, blocked)
    }

    /// Media of `kind` may flow from `from` to `to`.
    fn flow(&self, room: &str, from: &str, to: &str, kind: MediaKind) -> bool {
        from != to
            && self.rooms[room].people[to].addr.is_some()
            && self.subscribes(room, to, from)
            && !self.blocked(room, from, kind, true)
            && !self.blocked(room, to, kind, false)
    }

    /// Some media of `from` (one of its tracks) may flow to `to`.
    fn any_flow(&self, room: &str, from: &str, to: &str) -> bool {
        self.rooms[room].people[from]
            .tracks
            .iter()
            .any(|(_, kind)| self.flow(room, from, to, *kind))
    }

    fn subscribes(&self, room: &str, receiver: &str, sender: &str) -> bool {
        receiver != sender
            && self.rooms[room].people[receiver]
                .only
                .as_ref()
                .is_none_or(|list| list.iter().any(|s| s == sender))
    }

    /// A rule stops `member`'s outgoing (`send`) or incoming media of `kind`: naive matching
    /// over every rule, independent of the `RuleSet` index.
    fn blocked(&self, room: &str, member: &str, kind: MediaKind, send: bool) -> bool {
        let region = self.rooms[room].people[member].region;
        self.rules
            .values()
            .any(|r| r.matches(room, member, region) && r.blocks(kind, send))
    }

    // ---- keeping the rooms ----------------------------------------------------------------

    fn room_entry(&mut self, room: &str) {
        if self.rooms.contains_key(room) {
            return;
        }
        self.next_room += 1;
        let id = RoomId(self.next_room);
        self.rooms.insert(
            room.to_owned(),
            ModelRoom {
                id,
                people: BTreeMap::new(),
                slots: Slots::new(),
                listeners: BTreeMap::new(),
                snapshot: Arc::new(Room::empty()),
            },
        );
        self.publish(room, &[]);
    }

    fn set_address(&mut self, room: &str, id: &str, addr: Option<SocketAddr>) {
        let Some(p) = self.rooms.get_mut(room).and_then(|r| r.people.get_mut(id)) else {
            return;
        };
        p.addr = addr;
        let slot = p.slot;
        self.publish(room, &[(id.to_owned(), Some(slot))]);
    }

    /// Members a rule matches, by room (naively).
    fn matched_by(&self, rule: u64) -> BTreeMap<String, Vec<String>> {
        let rule = &self.rules[&rule];
        self.rooms
            .iter()
            .map(|(room, r)| {
                let ids = r
                    .people
                    .iter()
                    .filter(|(id, p)| rule.matches(room, id, p.region))
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>();
                (room.clone(), ids)
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect()
    }

    fn republish_rule(&mut self, id: u64) {
        for (room, ids) in self.matched_by(id) {
            let changes: Vec<(String, Option<u16>)> = ids
                .into_iter()
                .map(|p| {
                    let slot = self.rooms[&room].people[&p].slot;
                    (p, Some(slot))
                })
                .collect();
            self.publish(&room, &changes);
        }
    }

    /// Compiles `room` from its last snapshot with the members that changed (id, slot before),
    /// checks the result against a compilation from scratch, and applies it to the table.
    fn publish(&mut self, room: &str, changed: &[(String, Option<u16>)]) {
        let r = &self.rooms[room];
        let counters = |id: RuleId| self.rule_counters.get(&id.0).cloned();
        let changes: Vec<Change<'_>> = changed
            .iter()
            .map(|(id, was)| Change { id, was: *was })
            .collect();
        let next = compile(room, &r.snapshot, r, &changes, &self.set, counters)
            .expect("the model gives every member its own slot");
        let everyone: Vec<Participant<'_>> =
            r.people.keys().filter_map(|id| r.participant(id)).collect();
        let scratch = compile_all(room, &everyone, &self.set, counters)
            .expect("the model gives every member its own slot");
        if let Err(e) = same_room(&next.room, &scratch.room) {
            panic!("room {room}: compiled after {changed:?} differs from scratch: {e}");
        }
        for (c, matched) in changes.iter().zip(&next.matched) {
            let want: Vec<RuleId> = match r.people.get(c.id) {
                Some(p) => self
                    .rules
                    .iter()
                    .filter(|(_, rule)| rule.matches(room, c.id, p.region))
                    .map(|(id, _)| RuleId(*id))
                    .collect(),
                None => Vec::new(),
            };
            assert_eq!(matched, &want, "rules matching {} in {room}", c.id);
        }
        let id = r.id;
        let update = Update::Room {
            id,
            room: next.room.clone(),
            slots: next.slots,
        };
        self.rooms.get_mut(room).expect("exists").snapshot = next.room;
        self.table.apply(update);
    }
}

impl ModelRoom {
    /// Records whom `p` lists.
    fn list(&mut self, id: &str, p: &Person) {
        for other in p.only.iter().flatten() {
            self.listeners
                .entry(other.clone())
                .or_default()
                .insert(id.to_owned());
        }
    }

    fn unlist(&mut self, id: &str, p: &Person) {
        for other in p.only.iter().flatten() {
            if let Some(set) = self.listeners.get_mut(other) {
                set.remove(id);
                if set.is_empty() {
                    self.listeners.remove(other);
                }
            }
        }
    }
}

impl Roster for ModelRoom {
    fn participant(&self, id: &str) -> Option<Participant<'_>> {
        let (id, p) = self.people.get_key_value(id)?;
        Some(Participant {
            id,
            slot: p.slot,
            region: p.region,
            addr: p.addr,
            tracks: p.tracks.clone(),
            subscribe: p.only.as_deref(),
            counters: p.counters.clone(),
            ice: p.ice.clone(),
            webrtc: None,
            number: 0,
            peer: None,
        })
    }

    fn slot(&self, id: &str) -> Option<u16> {
        self.people.get(id).map(|p| p.slot)
    }

    fn listeners(&self, id: &str) -> impl Iterator<Item = &str> {
        self.listeners
            .get(id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

impl PlainRule {
    /// The contract (API.md): in one of the rooms (none listed: any) and named or in a region.
    pub fn matches(&self, room: &str, member: &str, region: Option<[u8; 2]>) -> bool {
        (self.rooms.is_empty() || self.rooms.contains(room))
            && (self
                .participants
                .contains(&(room.to_owned(), member.to_owned()))
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

/// An RTP packet from `ssrc`; a second byte in the RTCP range is moved out of it (RFC 5761 §4).
pub fn rtp_packet(ssrc: Ssrc, second: u8, payload: &[u8]) -> Vec<u8> {
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

/// Whether two snapshots are the same: members field by field (shared counters and rules by
/// identity), every chunk's masks, the receive-rule groups and the member count.
pub fn same_room(a: &Room, b: &Room) -> Result<(), String> {
    if a.members != b.members {
        return Err(format!("{} members against {}", a.members, b.members));
    }
    if a.chunks.len() != b.chunks.len() {
        return Err(format!(
            "{} chunks against {}",
            a.chunks.len(),
            b.chunks.len()
        ));
    }
    for (c, (x, y)) in a.chunks.iter().zip(b.chunks.iter()).enumerate() {
        if (x.all, x.present, x.sends) != (y.all, y.present, y.sends) {
            return Err(format!("chunk {c}: masks {x:?} against {y:?}"));
        }
        if x.slots.len() != y.slots.len() {
            return Err(format!(
                "chunk {c}: {} slots against {}",
                x.slots.len(),
                y.slots.len()
            ));
        }
        for (i, (m, n)) in x.slots.iter().zip(y.slots.iter()).enumerate() {
            let slot = c * CHUNK + i;
            match (m, n) {
                (None, None) => {}
                (Some(m), Some(n)) => same_member(m, n).map_err(|e| format!("slot {slot}: {e}"))?,
                _ => return Err(format!("slot {slot}: {m:?} against {n:?}")),
            }
        }
    }
    for k in 0..2 {
        let key = |g: &[(Arc<RuleCounters>, u64)]| {
            let mut v: Vec<(usize, u64)> = g
                .iter()
                .map(|(r, n)| (Arc::as_ptr(r) as usize, *n))
                .collect();
            v.sort_unstable();
            v
        };
        if key(&a.receive_blocked[k]) != key(&b.receive_blocked[k]) {
            return Err(format!("receive groups of kind {k} differ"));
        }
    }
    Ok(())
}

fn same_member(m: &Member, n: &Member) -> Result<(), String> {
    let ptr = |r: &Option<Arc<RuleCounters>>| r.as_ref().map(|r| Arc::as_ptr(r) as usize);
    let tracks = |m: &Member| -> Vec<(u32, MediaKind, Option<usize>)> {
        m.tracks
            .iter()
            .map(|t| (t.ssrc.0, t.kind, ptr(&t.send_block)))
            .collect()
    };
    let blocks = |m: &Member| -> [Option<usize>; 4] {
        [
            ptr(&m.blocks.send[0]),
            ptr(&m.blocks.send[1]),
            ptr(&m.blocks.receive[0]),
            ptr(&m.blocks.receive[1]),
        ]
    };
    let same = m.name == n.name
        && m.addr == n.addr
        && m.sockaddr.as_ref().and_then(|a| a.as_socket())
            == n.sockaddr.as_ref().and_then(|a| a.as_socket())
        && tracks(m) == tracks(n)
        && Arc::ptr_eq(&m.counters, &n.counters)
        && blocks(m) == blocks(n)
        && m.only == n.only
        && m.listeners == n.listeners
        && m.ice == n.ice;
    if same {
        Ok(())
    } else {
        Err(format!("{m:?} against {n:?}"))
    }
}
