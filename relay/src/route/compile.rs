//! From the control core's description of a room to the snapshot the workers forward with.
//!
//! [`compile`] is the one way a room is built, for every caller (the control core, the model
//! test, the fuzz target, the benchmarks): it takes the last snapshot and the participants that
//! changed, and gives the next snapshot and the slots that differ. Compiling from scratch is the
//! same call with [`Room::empty`] as the base and everybody as changed.
//!
//! What a change costs: the changed participants themselves (rules matched, subscriptions
//! resolved), the few others whose lists name them (a selective subscriber that lists a
//! newcomer, a publisher whose listeners change), one chunk copy per chunk they sit in, and the
//! chunk pointer list. Never a pass over the room.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::addr::Addr;
use super::counter::{ParticipantCounters, RuleCounters};
use super::ice::Credentials;
use super::room::{
    Blocks, CHUNK, Chunk, CompileError, MediaKind, Member, ReceiveGroup, Room, SlotList, Track,
    TrunkGroup,
};
use crate::packet::rtp::Ssrc;
use crate::rules::{RuleId, RuleSet, Subject};

/// One participant of a room, as the control core describes it.
#[derive(Clone, Debug)]
pub struct Participant<'a> {
    /// Its id in the room.
    pub id: &'a str,
    /// Where it sits in the room: given by the caller ([`Slots`]), kept while it stays.
    pub slot: u16,
    /// Its region, for region rules.
    pub region: Option<[u8; 2]>,
    /// Its media address, fixed or latched; `None` until it has one.
    pub addr: Option<SocketAddr>,
    /// Declared tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// The ids whose media it receives; `None` for everybody.
    pub subscribe: Option<&'a [String]>,
    /// Its counters, kept across compilations.
    pub counters: Arc<ParticipantCounters>,
    /// Relay-side ICE credentials (a WebRTC participant's publish leg).
    pub ice: Option<Arc<Credentials>>,
    /// Set for a WebRTC participant: its other legs ([`super::Legs`]).
    pub webrtc: Option<Arc<super::Legs>>,
    /// Its participant number, unique among the participants of the relay it lives on: the
    /// sender field of trunk headers. 0 outside fleet mode.
    pub number: u32,
    /// For a participant that lives on another relay of the fleet: that relay's node number.
    /// It has no address here (`addr` is ignored); its media comes and goes over the trunk.
    pub peer: Option<u16>,
}

/// The room as it is now, as the compiler asks about it: by id, never as a whole.
pub trait Roster {
    /// The participant `id`, if it is in the room.
    fn participant(&self, id: &str) -> Option<Participant<'_>>;
    /// The slot of participant `id`, if it is in the room.
    fn slot(&self, id: &str) -> Option<u16>;
    /// The ids of the participants whose subscription lists `id`, whether `id` is in the room
    /// or not.
    fn listeners(&self, id: &str) -> impl Iterator<Item = &str>;
    /// For a participant of another relay (`peer` set): receive blocks, per
    /// [`MediaKind::index`], of rules its relay enforces and this one does not (fleet rules
    /// limited to other regions). They only keep its relay out of the trunk copies when no
    /// member there may receive; its relay enforces and counts them. None by default.
    fn peer_receive_blocks(&self, _id: &str) -> [Option<Arc<RuleCounters>>; 2] {
        [None, None]
    }
    /// The room's `plain_legs` (fixed when the room is created): whether media from WebRTC
    /// legs, local or from another relay, may reach plain members. False by default.
    fn plain_legs(&self) -> bool {
        false
    }
}

/// A participant that changed (joined, left, or changed anything the workers see, rules
/// included), with the slot it had in the base snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its slot in the base snapshot; `None` if it was not in the room.
    pub was: Option<u16>,
}

/// The next snapshot of a room.
#[derive(Debug)]
pub struct Compiled {
    /// The room for the workers.
    pub room: Arc<Room>,
    /// The slots whose member differs from the base, sorted: what each worker indexes again.
    pub slots: Arc<[u16]>,
    /// For each change, in order: the rules that match that participant now (empty if it left).
    pub matched: Vec<Vec<RuleId>>,
}

/// Builds the next snapshot of room `room` from `base` and the participants that changed.
///
/// `roster` describes the room after the changes; `counters` gives each rule's live drop
/// counters, which the fan-out adds to. Every participant whose state differs from `base` must be
/// among `changes` (the others may be listed too).
pub fn compile<R: Roster + ?Sized>(
    room_name: &str,
    base: &Room,
    roster: &R,
    changes: &[Change<'_>],
    rules: &RuleSet,
    counters: impl Fn(RuleId) -> Option<Arc<RuleCounters>>,
) -> Result<Compiled, CompileError> {
    let mut work = Work {
        base,
        entries: BTreeMap::new(),
    };
    // What each change was and is: its slot now, its resolved subscription before and after.
    let plans: Vec<Plan<'_>> = changes
        .iter()
        .map(|c| {
            let now = roster.participant(c.id);
            let was = c
                .was
                .filter(|&s| base.member(s).is_some_and(|m| *m.name == *c.id));
            let old_only = was
                .and_then(|s| base.member(s))
                .and_then(|m| m.only.clone());
            let new_only = now.as_ref().and_then(|p| {
                p.subscribe.map(|list| {
                    SlotList::from_unsorted(
                        list.iter()
                            .filter_map(|id| roster.slot(id))
                            .filter(|&s| s != p.slot)
                            .collect(),
                    )
                })
            });
            let slot = now.as_ref().map(|p| p.slot);
            Plan {
                was,
                moved: slot != was,
                slot,
                now,
                old_only,
                new_only,
            }
        })
        .collect();

    // 1. Take back what the changed participants were: their place in the lists of others, and
    //    their slots if they moved or left.
    for plan in &plans {
        let Some((was, old)) = plan.was.and_then(|s| Some((s, base.member(s)?))) else {
            continue;
        };
        let old_only = plan.old_only.as_ref().map_or(&[][..], SlotList::as_slice);
        let new_only = plan.new_only.as_ref().map_or(&[][..], SlotList::as_slice);
        for &p in old_only {
            if plan.moved || !new_only.contains(&p) {
                work.edit(p, |m| m.listeners.remove(was));
            }
        }
        if plan.moved {
            for &l in old.listeners.as_slice() {
                work.edit(l, |m| {
                    if let Some(only) = &mut m.only {
                        only.remove(was);
                    }
                });
            }
            work.entries.insert(was, None);
        }
    }

    // 2. Build each changed participant afresh.
    let mut matched = Vec::with_capacity(changes.len());
    for (c, plan) in changes.iter().zip(&plans) {
        let Some(p) = &plan.now else {
            matched.push(Vec::new());
            continue;
        };
        if usize::from(p.slot) >= usize::from(u16::MAX) {
            return Err(CompileError::TooManyMembers);
        }
        let subject = Subject {
            room: room_name,
            participant: p.id,
            region: p.region,
        };
        matched.push(rules.matching(&subject).map(|(id, _)| id).collect());
        let listeners = if plan.moved {
            SlotList::from_unsorted(
                roster
                    .listeners(c.id)
                    .filter_map(|l| roster.slot(l))
                    .filter(|&l| l != p.slot)
                    .collect(),
            )
        } else {
            work.get(p.slot)
                .map(|m| m.listeners.clone())
                .unwrap_or_default()
        };
        if let Some(Some(other)) = work.entries.get(&p.slot)
            && *other.name != *p.id
        {
            return Err(CompileError::SlotTaken(p.slot));
        }
        if !work.entries.contains_key(&p.slot)
            && base.member(p.slot).is_some_and(|m| *m.name != *p.id)
        {
            return Err(CompileError::SlotTaken(p.slot));
        }
        let mut blocks = Blocks::from_effect(&rules.effect(&subject), &counters);
        if p.peer.is_some() {
            for (block, extra) in blocks
                .receive
                .iter_mut()
                .zip(roster.peer_receive_blocks(p.id))
            {
                if block.is_none() {
                    *block = extra;
                }
            }
        }
        // A remote participant is reached through its relay, never at an address of its own.
        let addr = p.addr.filter(|_| p.peer.is_none());
        let member = Member {
            name: Arc::from(p.id),
            addr,
            sockaddr: addr.map(Addr::from),
            tracks: p
                .tracks
                .iter()
                .map(|&(ssrc, kind)| Track {
                    ssrc,
                    kind,
                    send_block: blocks.send[kind.index()].clone(),
                })
                .collect(),
            counters: p.counters.clone(),
            blocks,
            only: plan.new_only.clone(),
            listeners,
            ice: p.ice.clone().filter(|_| p.peer.is_none()),
            webrtc: p.webrtc.clone().filter(|_| p.peer.is_none()),
            number: p.number,
            peer: p.peer,
        };
        work.entries.insert(p.slot, Some(member));
    }

    // 3. Put them into the lists of others.
    for plan in &plans {
        let Some(slot) = plan.slot else {
            continue;
        };
        let old_only = plan.old_only.as_ref().map_or(&[][..], SlotList::as_slice);
        if let Some(new_only) = &plan.new_only {
            for &p in new_only.as_slice() {
                if plan.moved || !old_only.contains(&p) {
                    work.edit(p, |m| m.listeners.insert(slot));
                }
            }
        }
        if plan.moved {
            let listeners = work.get(slot).map(|m| m.listeners.clone());
            for &l in listeners.iter().flat_map(SlotList::as_slice) {
                work.edit(l, |m| {
                    if let Some(only) = &mut m.only {
                        only.insert(slot);
                    }
                });
            }
        }
    }

    let (mut room, slots) = work.finish();
    room.number = super::trunk::room_number(room_name);
    room.plain_legs = roster.plain_legs();
    Ok(Compiled {
        room: Arc::new(room),
        slots,
        matched,
    })
}

/// Compiles a whole room from a list of participants (each with its slot): [`compile`] from
/// [`Room::empty`] with everybody changed. For start-up, tests and benchmarks.
pub fn compile_all(
    room: &str,
    participants: &[Participant<'_>],
    rules: &RuleSet,
    counters: impl Fn(RuleId) -> Option<Arc<RuleCounters>>,
) -> Result<Compiled, CompileError> {
    let roster = ListRoster::new(participants);
    let changes: Vec<Change<'_>> = participants
        .iter()
        .map(|p| Change {
            id: p.id,
            was: None,
        })
        .collect();
    compile(room, &Room::empty(), &roster, &changes, rules, counters)
}

/// Where members sit in a room: a newcomer gets the lowest free slot, so rooms stay dense, and
/// the free list depends only on which slots are taken (undoing a change restores it exactly).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// Free slots below `next`.
    free: BTreeSet<u16>,
    /// Every slot from here on is free.
    next: u16,
}

impl Slots {
    /// No slot taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lowest free slot; `None` when the room has no slot left.
    pub fn take(&mut self) -> Option<u16> {
        if let Some(s) = self.free.pop_first() {
            return Some(s);
        }
        if self.next == u16::MAX {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    /// Takes a given slot (putting back a participant where it was). Returns false, taking
    /// nothing, if it is taken.
    pub fn take_at(&mut self, slot: u16) -> bool {
        if slot < self.next {
            return self.free.remove(&slot);
        }
        if slot == u16::MAX {
            return false;
        }
        self.free.extend(self.next..slot);
        self.next = slot + 1;
        true
    }

    /// Frees a slot.
    pub fn put(&mut self, slot: u16) {
        if slot >= self.next || self.free.contains(&slot) {
            return;
        }
        self.free.insert(slot);
        while self.next > 0 && self.free.remove(&(self.next - 1)) {
            self.next -= 1;
        }
    }
}

/// What one change was and is.
struct Plan<'a> {
    now: Option<Participant<'a>>,
    /// Its slot in the base, if the base has it there.
    was: Option<u16>,
    slot: Option<u16>,
    /// It left, joined, or sits elsewhere than in the base.
    moved: bool,
    old_only: Option<SlotList>,
    new_only: Option<SlotList>,
}

/// The members being changed, by slot (`None`: emptied), over the base snapshot.
struct Work<'b> {
    base: &'b Room,
    entries: BTreeMap<u16, Option<Member>>,
}

impl Work<'_> {
    fn get(&self, slot: u16) -> Option<&Member> {
        match self.entries.get(&slot) {
            Some(m) => m.as_ref(),
            None => self.base.member(slot),
        }
    }

    /// Changes the member in `slot`, if there is one.
    fn edit(&mut self, slot: u16, f: impl FnOnce(&mut Member)) {
        let base = self.base;
        let entry = self
            .entries
            .entry(slot)
            .or_insert_with(|| base.member(slot).cloned());
        if let Some(m) = entry {
            f(m);
        }
    }

    /// The next snapshot: untouched chunks shared, touched ones copied with the changes.
    fn finish(self) -> (Room, Arc<[u16]>) {
        let base = self.base;
        let mut chunks: Vec<Arc<Chunk>> = base.chunks.to_vec();
        let mut receive_blocked = [
            base.receive_blocked[0].to_vec(),
            base.receive_blocked[1].to_vec(),
        ];
        let mut trunks = [base.trunks[0].to_vec(), base.trunks[1].to_vec()];
        let mut members = base.members;
        let mut slots = Vec::with_capacity(self.entries.len());
        let mut entries = self.entries.into_iter().peekable();
        while let Some(&(first, _)) = entries.peek() {
            let c = usize::from(first) / CHUNK;
            let mut group = Vec::new();
            while let Some(e) = entries.next_if(|(s, _)| usize::from(*s) / CHUNK == c) {
                group.push(e);
            }
            let old: &[Option<Member>] = chunks.get(c).map_or(&[], |chunk| &chunk.slots);
            // Slots kept: up to the last one occupied after the change, rounded up to a power
            // of two, so that copies of a chunk come in few sizes the allocator can reuse.
            let occupied = |i: usize| match group.iter().find(|(s, _)| usize::from(*s) % CHUNK == i)
            {
                Some((_, m)) => m.is_some(),
                None => old.get(i).is_some_and(Option::is_some),
            };
            let used = (0..CHUNK).rev().find(|&i| occupied(i)).map_or(0, |i| i + 1);
            let len = if used == 0 {
                0
            } else {
                used.next_power_of_two()
            };
            let mut list: Vec<Option<Member>> = Vec::with_capacity(len);
            list.extend(old.iter().take(len).cloned());
            list.resize(len, None);
            for (slot, member) in group {
                let before = old.get(usize::from(slot) % CHUNK).and_then(Option::as_ref);
                tally(&mut receive_blocked, before, -1);
                tally(&mut receive_blocked, member.as_ref(), 1);
                tally_trunks(&mut trunks, before, -1);
                tally_trunks(&mut trunks, member.as_ref(), 1);
                members = members + usize::from(member.is_some()) - usize::from(before.is_some());
                if let Some(entry) = list.get_mut(usize::from(slot) % CHUNK) {
                    *entry = member;
                }
                slots.push(slot);
            }
            if chunks.len() <= c {
                chunks.resize_with(c + 1, Default::default);
            }
            chunks[c] = Arc::new(Chunk::new(list));
        }
        while chunks.last().is_some_and(|c| c.slots.is_empty()) {
            chunks.pop();
        }
        let room = Room {
            chunks: chunks.into(),
            receive_blocked: receive_blocked.map(Vec::into_boxed_slice),
            members,
            number: base.number,
            plain_legs: base.plain_legs,
            trunks: trunks.map(|mut t| {
                t.sort_unstable();
                t.into_boxed_slice()
            }),
        };
        (room, slots.into())
    }
}

/// Adds (`sign` 1) or takes away (-1) a member's part in the room-wide receive-rule groups.
fn tally(groups: &mut [Vec<ReceiveGroup>; 2], m: Option<&Member>, sign: i8) {
    let Some(m) = m.filter(|m| m.media_dest().is_some() && m.only.is_none()) else {
        return;
    };
    for (k, group) in groups.iter_mut().enumerate() {
        let Some(rule) = &m.blocks.receive[k] else {
            continue;
        };
        match group.iter().position(|(r, _)| Arc::ptr_eq(r, rule)) {
            Some(i) if sign < 0 => {
                group[i].1 -= 1;
                if group[i].1 == 0 {
                    group.swap_remove(i);
                }
            }
            Some(i) => group[i].1 += 1,
            None if sign > 0 => group.push((rule.clone(), 1)),
            None => {}
        }
    }
}

/// Adds (`sign` 1) or takes away (-1) a remote member's part in the per-peer groups of
/// subscribe-all members that may receive each kind.
fn tally_trunks(groups: &mut [Vec<TrunkGroup>; 2], m: Option<&Member>, sign: i8) {
    let Some((m, peer)) = m.and_then(|m| Some((m, m.peer?))) else {
        return;
    };
    if m.only.is_some() {
        return;
    }
    for (k, group) in groups.iter_mut().enumerate() {
        if m.blocks.receive[k].is_some() {
            continue;
        }
        match group.iter().position(|(p, _)| *p == peer) {
            Some(i) if sign < 0 => {
                group[i].1 -= 1;
                if group[i].1 == 0 {
                    group.swap_remove(i);
                }
            }
            Some(i) => group[i].1 += 1,
            None if sign > 0 => group.push((peer, 1)),
            None => {}
        }
    }
}

/// A roster over a list of participants, for [`compile_all`].
struct ListRoster<'p, 'a> {
    by_id: BTreeMap<&'a str, &'p Participant<'a>>,
    listeners: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'p, 'a> ListRoster<'p, 'a> {
    fn new(participants: &'p [Participant<'a>]) -> Self {
        let mut listeners: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
        for p in participants {
            for id in p.subscribe.into_iter().flatten() {
                listeners.entry(id.as_str()).or_default().push(p.id);
            }
        }
        Self {
            by_id: participants.iter().map(|p| (p.id, p)).collect(),
            listeners,
        }
    }
}

impl Roster for ListRoster<'_, '_> {
    fn participant(&self, id: &str) -> Option<Participant<'_>> {
        self.by_id.get(id).map(|p| (*p).clone())
    }

    fn slot(&self, id: &str) -> Option<u16> {
        self.by_id.get(id).map(|p| p.slot)
    }

    fn listeners(&self, id: &str) -> impl Iterator<Item = &str> {
        self.listeners.get(id).into_iter().flatten().copied()
    }
}
