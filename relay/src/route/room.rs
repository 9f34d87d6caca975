//! A room as the workers forward with it: an immutable, chunked snapshot of its members.
//!
//! Members sit in *slots*: slot `s` is entry `s % 64` of chunk `s / 64`. A room is a list of
//! reference-counted chunks, so the next snapshot after a change shares every chunk the change
//! did not touch: a join copies one chunk of at most 64 members and the list of chunk pointers,
//! whatever the size of the room. Nobody keeps a per-track list of receivers. Each chunk keeps
//! bitmasks instead, and a packet's receivers are read off them at send time:
//!
//! - `all[kind]`: members with an address (for a WebRTC member: its subscribe leg's) who subscribe to everybody and whom no rule keeps from
//!   media of that kind. A track's subscribe-all receivers are these bits, less the sender's own.
//! - `present`: members with an address; `sends[kind]`: members with a track of that kind that no
//!   rule stops at its sender (for SRTCP, which goes both ways).
//! - The exceptions are small sorted lists kept per member: `only`, the slots a selective
//!   subscriber listed, and `listeners`, the slots of the selective subscribers who listed this
//!   member (a publisher's receivers beyond the `all` bits).
//! - `dests`: each slot's media address, densely (32 bytes a slot), and `webrtc`: the members
//!   whose copies are sealed for a WebRTC leg. The walk over a plain receiver reads its bit and
//!   its address only, never the member.
//!
//! Receive rules are counted per packet from room-wide groups (rule, subscribe-all members it
//! blocks), adjusted for the sender, and per listener; a send rule stops the track outright.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use super::addr::Addr;
use super::counter::{ParticipantCounters, RuleCounters};
use super::ice::Credentials;
use super::leg::Legs;
use crate::packet::rtp::Ssrc;

/// Members per chunk: one `u64` bitmask each.
pub const CHUNK: usize = 64;

/// The media kind of a track, as rules see it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio track.
    Audio,
    /// Video track (screen share included).
    Video,
}

impl MediaKind {
    /// Both kinds, in [`MediaKind::index`] order.
    pub const ALL: [Self; 2] = [Self::Audio, Self::Video];

    /// Index into per-kind arrays such as [`Blocks::send`].
    pub fn index(self) -> usize {
        match self {
            Self::Audio => 0,
            Self::Video => 1,
        }
    }
}

/// Which rule, if any, blocks a participant's sending or receiving, per media kind.
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    /// Indexed by [`MediaKind::index`]: the rule that stops this participant's media of that kind.
    pub send: [Option<Arc<RuleCounters>>; 2],
    /// Indexed by [`MediaKind::index`]: the rule that stops media of that kind reaching them.
    pub receive: [Option<Arc<RuleCounters>>; 2],
}

impl Blocks {
    /// The blocks a participant's rule [`Effect`](crate::rules::Effect) gives, with `counter`
    /// finding each rule's live counters: the one mapping from rules to fan-out input.
    pub fn from_effect(
        effect: &crate::rules::Effect,
        counter: impl Fn(crate::rules::RuleId) -> Option<Arc<RuleCounters>>,
    ) -> Self {
        use crate::rules::Kind;
        let mut blocks = Self::default();
        for (kind, media) in [
            (Kind::Audio, MediaKind::Audio),
            (Kind::Video, MediaKind::Video),
        ] {
            blocks.send[media.index()] = effect.send(kind).and_then(&counter);
            blocks.receive[media.index()] = effect.receive(kind).and_then(&counter);
        }
        blocks
    }
}

/// A sorted list of slots, shared between snapshots until it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotList(Option<Arc<[u16]>>);

impl SlotList {
    /// A list from slots in any order, duplicates removed.
    pub(crate) fn from_unsorted(mut slots: Vec<u16>) -> Self {
        slots.sort_unstable();
        slots.dedup();
        Self((!slots.is_empty()).then(|| slots.into()))
    }

    pub(crate) fn as_slice(&self) -> &[u16] {
        self.0.as_deref().unwrap_or(&[])
    }

    pub(crate) fn contains(&self, slot: u16) -> bool {
        self.as_slice().binary_search(&slot).is_ok()
    }

    /// Adds a slot; a copy of the list, O(its length).
    pub(crate) fn insert(&mut self, slot: u16) {
        let list = self.as_slice();
        if let Err(at) = list.binary_search(&slot) {
            let mut v = Vec::with_capacity(list.len() + 1);
            v.extend_from_slice(&list[..at]);
            v.push(slot);
            v.extend_from_slice(&list[at..]);
            self.0 = Some(v.into());
        }
    }

    /// Removes a slot; a copy of the list, O(its length).
    pub(crate) fn remove(&mut self, slot: u16) {
        let list = self.as_slice();
        if let Ok(at) = list.binary_search(&slot) {
            let v: Vec<u16> = list[..at].iter().chain(&list[at + 1..]).copied().collect();
            self.0 = (!v.is_empty()).then(|| v.into());
        }
    }
}

/// A track compiled for forwarding.
#[derive(Clone, Debug)]
pub(crate) struct Track {
    pub(crate) ssrc: Ssrc,
    pub(crate) kind: MediaKind,
    /// Set when a rule stops this track at its sender.
    pub(crate) send_block: Option<Arc<RuleCounters>>,
}

/// A participant compiled for forwarding.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) name: Arc<str>,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) sockaddr: Option<Addr>,
    pub(crate) tracks: Arc<[Track]>,
    pub(crate) counters: Arc<ParticipantCounters>,
    pub(crate) blocks: Blocks,
    /// `None`: subscribes to everybody; `Some`: only to the members in these slots.
    pub(crate) only: Option<SlotList>,
    /// Slots of the selective subscribers that list this member.
    pub(crate) listeners: SlotList,
    pub(crate) ice: Option<Arc<Credentials>>,
    /// Set for a WebRTC participant: `addr` and `ice` are its publish leg, these its others.
    pub(crate) webrtc: Option<Arc<Legs>>,
    /// Its participant number: the sender field of the trunk headers of its packets (assigned
    /// by the relay it lives on).
    pub(crate) number: u32,
    /// Set for a participant that lives on another relay: that relay's node number. Such a
    /// member has no address here; media reaches it through the trunk to that relay.
    pub(crate) peer: Option<u16>,
}

/// Up to [`CHUNK`] consecutive slots of a room and their bitmasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chunk {
    /// Per kind: members with an address who subscribe to everybody and may receive that kind.
    pub(crate) all: [u64; 2],
    /// Members with an address.
    pub(crate) present: u64,
    /// Per kind: members with a track of that kind that no rule stops.
    pub(crate) sends: [u64; 2],
    /// Members whose media goes to a WebRTC subscribe leg: the fan-out reads their legs.
    pub(crate) webrtc: u64,
    /// The members: as many slots as the last occupied one needs, rounded up to a power of two.
    pub(crate) slots: Box<[Option<Member>]>,
    /// Per slot, where its media goes ([`Member::media_dest`]; unset where `present` is clear):
    /// the fan-out walks this dense array, 32 bytes a receiver, not the members themselves.
    pub(crate) dests: Box<[Addr]>,
}

/// A receive rule and the number of subscribe-all members with an address it blocks.
pub(crate) type ReceiveGroup = (Arc<RuleCounters>, u64);

/// A peer relay (node number) and how many of its members subscribe to everybody and may
/// receive a kind.
pub(crate) type TrunkGroup = (u16, u32);

/// Most peer relays one packet is sent to: the fan-out keeps the peers it has sent to in an
/// array of this size (no allocation per packet).
pub const MAX_TRUNKS: usize = 64;

/// A compiled room: what every worker forwards with, shared by all of them.
#[derive(Clone, Debug, Default)]
pub struct Room {
    pub(crate) chunks: Box<[Arc<Chunk>]>,
    /// Per kind: each receive rule in force on a subscribe-all member with an address, and how
    /// many such members it blocks.
    pub(crate) receive_blocked: [Box<[ReceiveGroup]>; 2],
    pub(crate) members: usize,
    /// The room's fleet-wide number (trunk headers).
    pub(crate) number: u32,
    /// The room's `plain_legs`: whether media from WebRTC legs may reach plain members. Read
    /// for media that came over a trunk from a WebRTC leg of another relay (a local WebRTC
    /// sender carries it in its own [`super::Legs`]).
    pub(crate) plain_legs: bool,
    /// Per kind: each peer relay with a subscribe-all member that may receive that kind, and
    /// how many. A local track goes once to each of these peers (and to the peers of its
    /// remote selective subscribers).
    pub(crate) trunks: [Box<[TrunkGroup]>; 2],
}

/// Why a room cannot be compiled. The control core checks what leads to these before it
/// compiles, so seeing one means the caller broke its side of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// Two participants were given the same slot.
    SlotTaken(u16),
    /// A slot beyond what a room can address.
    TooManyMembers,
}

impl Room {
    /// An empty room: the base to compile a room from scratch.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// The number of chunks: the unit of a hand-off of fan-out work and of copying on a change.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The occupied slots, in order.
    pub fn slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .slots
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_some())
                .map(move |(i, _)| (c * CHUNK + i) as u16)
        })
    }

    #[inline]
    pub(crate) fn member(&self, slot: u16) -> Option<&Member> {
        let s = usize::from(slot);
        self.chunks.get(s / CHUNK)?.slots.get(s % CHUNK)?.as_ref()
    }

    /// Calls `emit` for each member that receives media of `kind` from the member in `slot`
    /// (`sender`), within chunks `range`, in slot order; counts the copies that listeners'
    /// receive rules stop. Returns the number emitted. The room-wide receive groups are counted
    /// by [`Room::count_receive_blocked`], once per packet.
    ///
    /// A fan-out split over chunk ranges visits each receiver exactly once: that is how a hot
    /// publisher's fan-out can be handed to other workers (docs/ARCHITECTURE.md).
    #[inline]
    pub(crate) fn each_receiver(
        &self,
        worker: usize,
        slot: u16,
        sender: &Member,
        kind: MediaKind,
        range: Range<usize>,
        mut emit: impl FnMut(&Addr, Option<&Arc<Legs>>),
    ) -> usize {
        let k = kind.index();
        let own = usize::from(slot);
        let listeners = sender.listeners.as_slice();
        let mut li = if range.start == 0 {
            0
        } else {
            listeners.partition_point(|&l| usize::from(l) < range.start * CHUNK)
        };
        let mut sent = 0;
        let end = range.end.min(self.chunks.len());
        for c in range.start..end {
            let chunk = &self.chunks[c];
            let mut mask = chunk.all[k];
            if own / CHUNK == c {
                mask &= !(1u64 << (own % CHUNK));
            }
            while let Some(&l) = listeners.get(li) {
                let l = usize::from(l);
                if l / CHUNK != c {
                    break;
                }
                li += 1;
                let bit = 1u64 << (l % CHUNK);
                if chunk.present & bit == 0 {
                    continue;
                }
                if let Some(Some(r)) = chunk.slots.get(l % CHUNK) {
                    match &r.blocks.receive[k] {
                        Some(rule) => rule.dropped_receive.add(worker, 1),
                        None => mask |= bit,
                    }
                }
            }
            // Every bit of `all` and of `present` has its address in `dests`.
            let dests = &chunk.dests[..];
            sent += mask.count_ones() as usize;
            if chunk.webrtc & mask == 0 {
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    if let Some(dest) = dests.get(i) {
                        emit(dest, None);
                    }
                }
                continue;
            }
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let legs = if chunk.webrtc & (1u64 << i) != 0 {
                    chunk.slots.get(i).and_then(|m| m.as_ref()?.webrtc.as_ref())
                } else {
                    None
                };
                if let Some(dest) = dests.get(i) {
                    emit(dest, legs);
                }
            }
        }
        sent
    }

    /// Calls `emit` once for each peer relay with at least one member that may receive media of
    /// `kind` from `sender` (a local member): subscribe-all members not kept from that kind by
    /// a rule, and selective subscribers that listed it and are not. Returns the number emitted.
    #[inline]
    pub(crate) fn each_trunk(
        &self,
        sender: &Member,
        kind: MediaKind,
        mut emit: impl FnMut(u16),
    ) -> usize {
        let k = kind.index();
        let mut seen = [0u16; MAX_TRUNKS];
        let mut n = 0;
        for &(peer, _) in self.trunks[k].iter() {
            if n < MAX_TRUNKS {
                seen[n] = peer;
                n += 1;
            }
            emit(peer);
        }
        for &l in sender.listeners.as_slice() {
            let Some(m) = self.member(l) else { continue };
            let Some(peer) = m.peer else { continue };
            if m.blocks.receive[k].is_some() || seen[..n].contains(&peer) || n == MAX_TRUNKS {
                continue;
            }
            seen[n] = peer;
            n += 1;
            emit(peer);
        }
        n
    }

    /// Whether [`Room::each_trunk`] for `sender` and `kind` includes peer relay `peer`.
    pub(crate) fn trunk_reaches(&self, sender: &Member, kind: MediaKind, peer: u16) -> bool {
        let mut found = false;
        self.each_trunk(sender, kind, |p| found |= p == peer);
        found
    }

    /// Adds to each receive rule's counter the subscribe-all members it keeps from this packet
    /// of `kind` (the sender itself excepted).
    #[inline]
    pub(crate) fn count_receive_blocked(&self, worker: usize, sender: &Member, kind: MediaKind) {
        let k = kind.index();
        for (rule, n) in self.receive_blocked[k].iter() {
            let own = sender.only.is_none()
                && sender.media_dest().is_some()
                && sender.blocks.receive[k]
                    .as_ref()
                    .is_some_and(|r| Arc::ptr_eq(r, rule));
            let n = n - u64::from(own);
            if n > 0 {
                rule.dropped_receive.add(worker, n);
            }
        }
    }

    /// Whether the member in `receiver` gets media of `kind` from the member in `slot`: the
    /// fan-out's test for one receiver.
    pub(crate) fn receives(
        &self,
        slot: u16,
        sender: &Member,
        kind: MediaKind,
        receiver: u16,
    ) -> bool {
        if receiver == slot {
            return false;
        }
        let r = usize::from(receiver);
        let Some(chunk) = self.chunks.get(r / CHUNK) else {
            return false;
        };
        let bit = 1u64 << (r % CHUNK);
        if chunk.all[kind.index()] & bit != 0 {
            return true;
        }
        chunk.present & bit != 0
            && sender.listeners.contains(receiver)
            && self
                .member(receiver)
                .is_some_and(|m| m.blocks.receive[kind.index()].is_none())
    }

    /// Calls `emit` for every member with an address that has an allowed media flow with the
    /// member in `slot`, either way: where its SRTCP goes. Returns the number emitted.
    pub(crate) fn each_flow_peer(
        &self,
        slot: u16,
        me: &Member,
        mut emit: impl FnMut(&Addr),
    ) -> usize {
        let own = usize::from(slot);
        // Kinds `me` sends unblocked, and kinds it may receive.
        let mut out = [false; 2];
        for t in me.tracks.iter() {
            out[t.kind.index()] |= t.send_block.is_none();
        }
        let inn = [0, 1].map(|k| me.blocks.receive[k].is_none());
        let listeners = me.listeners.as_slice();
        let only = me.only.as_ref().map(SlotList::as_slice);
        let (mut li, mut oi) = (0, 0);
        let mut sent = 0;
        for (c, chunk) in self.chunks.iter().enumerate() {
            let mut mask = 0u64;
            for k in 0..2 {
                if out[k] {
                    mask |= chunk.all[k];
                }
                if inn[k] && only.is_none() {
                    mask |= chunk.sends[k];
                }
            }
            while let Some(&l) = listeners.get(li) {
                let l = usize::from(l);
                if l / CHUNK != c {
                    break;
                }
                li += 1;
                if let Some(Some(r)) = chunk.slots.get(l % CHUNK)
                    && (0..2).any(|k| out[k] && r.blocks.receive[k].is_none())
                {
                    mask |= 1u64 << (l % CHUNK);
                }
            }
            if let Some(only) = only {
                while let Some(&p) = only.get(oi) {
                    let p = usize::from(p);
                    if p / CHUNK != c {
                        break;
                    }
                    oi += 1;
                    let bit = 1u64 << (p % CHUNK);
                    if (0..2).any(|k| inn[k] && chunk.sends[k] & bit != 0) {
                        mask |= bit;
                    }
                }
            }
            mask &= chunk.present;
            if own / CHUNK == c {
                mask &= !(1u64 << (own % CHUNK));
            }
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if let Some(Some(r)) = chunk.slots.get(i)
                    && let Some(dest) = &r.sockaddr
                {
                    emit(dest);
                    sent += 1;
                }
            }
        }
        sent
    }
}

impl Member {
    /// Where media to this member goes: a WebRTC member's subscribe leg, or a plain member's
    /// address.
    #[inline]
    pub(crate) fn media_dest(&self) -> Option<&Addr> {
        match &self.webrtc {
            Some(legs) => legs.subscribe_sockaddr.as_ref(),
            None => self.sockaddr.as_ref(),
        }
    }

    #[inline]
    pub(crate) fn track(&self, ssrc: Ssrc) -> Option<&Track> {
        self.tracks.iter().find(|t| t.ssrc == ssrc)
    }

    /// Whether this member, in slot `me`, subscribes to the member in slot `publisher`.
    pub(crate) fn subscribes(&self, me: u16, publisher: u16) -> bool {
        me != publisher && self.only.as_ref().is_none_or(|l| l.contains(publisher))
    }
}

impl Chunk {
    /// A chunk of these members (at most [`CHUNK`]), with its bitmasks.
    pub(crate) fn new(slots: Vec<Option<Member>>) -> Self {
        let mut chunk = Self::default();
        let mut dests = vec![Addr::default(); slots.len()];
        for (i, m) in slots.iter().enumerate() {
            let Some(m) = m else {
                continue;
            };
            let bit = 1u64 << i;
            if let Some(dest) = m.media_dest() {
                dests[i] = *dest;
                chunk.present |= bit;
                if m.webrtc.is_some() {
                    chunk.webrtc |= bit;
                }
                if m.only.is_none() {
                    for k in 0..2 {
                        if m.blocks.receive[k].is_none() {
                            chunk.all[k] |= bit;
                        }
                    }
                }
            }
            for t in m.tracks.iter() {
                if t.send_block.is_none() {
                    chunk.sends[t.kind.index()] |= bit;
                }
            }
        }
        chunk.slots = slots.into();
        chunk.dests = dests.into();
        chunk
    }
}
