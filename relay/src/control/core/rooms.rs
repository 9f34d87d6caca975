//! Rooms in the core: their participants with the indexes that keep every change O(change),
//! and the step that turns a change into the workers' updates.
//!
//! Per room the core keeps where each participant sits (`route::Slots`), which participant
//! declared each SSRC (conflict checks in O(tracks)), who lists whom in a selective subscription
//! (so a join touches only those who listed the newcomer), and the snapshot the workers have.
//! After a command, [`Core::build`] reads the journal for the participants that changed (and
//! those a changed rule matches), compiles each touched room from its snapshot with
//! `route::compile`, and journals the old snapshots: a rollback puts them back and republishes
//! them over the same slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Core, Participant, RemoteParticipant, Undo};
use crate::control::body::SubscribeBody;
use crate::control::error::{ApiError, Code};
use crate::packet::rtp::Ssrc;
use crate::route::ParticipantCounters;
use crate::route::{self, Change, RoomId, Update};
use crate::rules::RuleId;
use crate::sdp::CodecTable;

/// A room's own state and its participants.
#[derive(Debug)]
pub(crate) struct RoomState {
    pub(crate) id: RoomId,
    pub(crate) created: SystemTime,
    pub(crate) participants: BTreeMap<String, Participant>,
    slots: route::Slots,
    /// SSRC to the participant that declared it.
    ssrcs: HashMap<u32, String>,
    /// Participant id to the ids whose subscription lists it.
    listeners: HashMap<String, BTreeSet<String>>,
    /// The snapshot last given to the workers.
    pub(super) snapshot: Arc<route::Room>,
    /// The room's payload type numbers, fixed by the first WebRTC offer of each codec.
    pub(crate) codecs: CodecTable,
    /// Whether media from WebRTC legs may reach plain legs (decrypted).
    pub(crate) plain_legs: bool,
    /// The WebRTC participants, for `subscription_changed`.
    pub(super) webrtc: BTreeSet<String>,
    /// Participants that live on other relays (fleet mode), with their slots here.
    pub(super) remote: BTreeMap<String, RemoteMember>,
}

/// A participant of another relay, as a member of a room here.
#[derive(Debug)]
pub(super) struct RemoteMember {
    p: RemoteParticipant,
    slot: u16,
    counters: Arc<ParticipantCounters>,
}

/// What the journal keeps of a room besides its participants.
#[derive(Debug, Clone)]
pub(crate) struct RoomMeta {
    pub(crate) id: RoomId,
    pub(crate) created: SystemTime,
    pub(crate) snapshot: Arc<route::Room>,
    pub(crate) codecs: CodecTable,
    pub(crate) plain_legs: bool,
}

/// What the pending change touched, read from the journal.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Per room: the participants that changed, with their slot before the change.
    pub(super) rooms: BTreeMap<String, BTreeMap<String, Option<u16>>>,
    /// Rooms closed: (name, id).
    pub(super) removed: Vec<(String, RoomId)>,
    /// Participants of closed rooms: their rule matches are forgotten.
    pub(super) gone: Vec<(String, String)>,
}

impl RoomState {
    pub(super) fn new(meta: RoomMeta) -> Self {
        Self {
            id: meta.id,
            created: meta.created,
            participants: BTreeMap::new(),
            slots: route::Slots::new(),
            ssrcs: HashMap::new(),
            listeners: HashMap::new(),
            snapshot: meta.snapshot,
            codecs: meta.codecs,
            plain_legs: meta.plain_legs,
            webrtc: BTreeSet::new(),
            remote: BTreeMap::new(),
        }
    }

    /// The slot of a participant of another relay.
    pub(super) fn remote_slot(&self, id: &str) -> Option<u16> {
        self.remote.get(id).map(|m| m.slot)
    }

    /// The tracks of participant `id` of another relay, if it is a remote member here.
    pub(super) fn remote_tracks(&self, id: &str) -> Option<&[crate::control::body::TrackBody]> {
        self.remote.get(id).map(|m| &m.p.tracks[..])
    }

    /// Puts a participant of another relay in place of `id` (or removes it), keeping the slots
    /// and the listener index; `restore` puts it back in that slot (rollback).
    pub(super) fn put_remote(
        &mut self,
        id: &str,
        p: Option<RemoteParticipant>,
        restore: Option<u16>,
        workers: usize,
    ) {
        let old = self.remote.remove(id);
        if let Some(o) = &old
            && let SubscribeBody::Only(list) = &o.p.subscribe
        {
            for other in list {
                if let Some(set) = self.listeners.get_mut(other) {
                    set.remove(id);
                    if set.is_empty() {
                        self.listeners.remove(other);
                    }
                }
            }
        }
        match p {
            Some(p) => {
                let slot = match (&old, restore) {
                    (Some(o), _) => o.slot,
                    (None, Some(s)) if self.slots.take_at(s) => s,
                    _ => self.slots.take().unwrap_or(u16::MAX),
                };
                if let SubscribeBody::Only(list) = &p.subscribe {
                    for other in list {
                        self.listeners
                            .entry(other.clone())
                            .or_default()
                            .insert(id.to_owned());
                    }
                }
                let counters = old
                    .map(|o| o.counters)
                    .unwrap_or_else(|| Arc::new(ParticipantCounters::new(workers)));
                self.remote
                    .insert(id.to_owned(), RemoteMember { p, slot, counters });
            }
            None => {
                if let Some(o) = old {
                    self.slots.put(o.slot);
                }
            }
        }
    }

    pub(super) fn meta(&self) -> RoomMeta {
        RoomMeta {
            id: self.id,
            created: self.created,
            snapshot: self.snapshot.clone(),
            codecs: self.codecs.clone(),
            plain_legs: self.plain_legs,
        }
    }

    /// The participant who declared `ssrc`.
    pub(super) fn ssrc_owner(&self, ssrc: u32) -> Option<&str> {
        self.ssrcs.get(&ssrc).map(String::as_str)
    }

    /// Puts `p` in place of participant `id` (or removes it) and keeps the room's indexes. A
    /// participant keeps its slot while it stays; a newcomer takes the lowest free one, or, when
    /// `restore` (a rollback puts a participant back), the one it had.
    pub(super) fn put(
        &mut self,
        id: &str,
        p: Option<Participant>,
        restore: bool,
    ) -> Option<Participant> {
        let old = self.participants.remove(id);
        self.webrtc.remove(id);
        if let Some(o) = &old {
            for t in &o.tracks {
                if self.ssrcs.get(&t.ssrc).is_some_and(|owner| owner == id) {
                    self.ssrcs.remove(&t.ssrc);
                }
            }
            if let SubscribeBody::Only(list) = &o.subscribe {
                for other in list {
                    if let Some(set) = self.listeners.get_mut(other) {
                        set.remove(id);
                        if set.is_empty() {
                            self.listeners.remove(other);
                        }
                    }
                }
            }
        }
        match p {
            Some(mut p) => {
                p.slot = match &old {
                    Some(o) => o.slot,
                    None if restore && self.slots.take_at(p.slot) => p.slot,
                    // A room never has 65,535 participants (the limit is lower); if it did,
                    // compiling refuses the slot and the change is rolled back.
                    None => self.slots.take().unwrap_or(u16::MAX),
                };
                for t in &p.tracks {
                    self.ssrcs.insert(t.ssrc, id.to_owned());
                }
                if p.webrtc.is_some() {
                    self.webrtc.insert(id.to_owned());
                }
                if let SubscribeBody::Only(list) = &p.subscribe {
                    for other in list {
                        self.listeners
                            .entry(other.clone())
                            .or_default()
                            .insert(id.to_owned());
                    }
                }
                self.participants.insert(id.to_owned(), p);
            }
            None => {
                if let Some(o) = &old {
                    self.slots.put(o.slot);
                }
            }
        }
        old
    }
}

impl route::Roster for RoomState {
    fn participant(&self, id: &str) -> Option<route::Participant<'_>> {
        if let Some((id, p)) = self.participants.get_key_value(id) {
            return Some(p.describe(id, self.plain_legs));
        }
        let (id, m) = self.remote.get_key_value(id)?;
        Some(route::Participant {
            id,
            slot: m.slot,
            region: m.p.region,
            addr: None,
            tracks: m.p.tracks.iter().map(|t| (Ssrc(t.ssrc), t.kind)).collect(),
            subscribe: match &m.p.subscribe {
                SubscribeBody::All(_) => None,
                SubscribeBody::Only(list) => Some(list),
            },
            counters: m.counters.clone(),
            ice: None,
            webrtc: None,
            number: m.p.number,
            peer: Some(m.p.peer),
        })
    }

    fn plain_legs(&self) -> bool {
        self.plain_legs
    }

    fn slot(&self, id: &str) -> Option<u16> {
        self.participants
            .get(id)
            .map(|p| p.slot)
            .or_else(|| self.remote_slot(id))
    }

    fn listeners(&self, id: &str) -> impl Iterator<Item = &str> {
        self.listeners
            .get(id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// A room as the compiler sees it in fleet mode: its members, and for each remote member the
/// receive blocks of the fleet rules its relay enforces and this one does not.
struct Scoped<'a> {
    name: &'a str,
    room: &'a RoomState,
    foreign: &'a BTreeMap<RuleId, super::fleet::Foreign>,
}

impl route::Roster for Scoped<'_> {
    fn participant(&self, id: &str) -> Option<route::Participant<'_>> {
        self.room.participant(id)
    }

    fn slot(&self, id: &str) -> Option<u16> {
        route::Roster::slot(self.room, id)
    }

    fn plain_legs(&self) -> bool {
        self.room.plain_legs
    }

    fn listeners(&self, id: &str) -> impl Iterator<Item = &str> {
        route::Roster::listeners(self.room, id)
    }

    fn peer_receive_blocks(&self, id: &str) -> [Option<Arc<route::RuleCounters>>; 2] {
        let mut out = [None, None];
        let Some(m) = self.room.remote.get(id) else {
            return out;
        };
        let Some(region) = m.p.relay_region.as_deref() else {
            return out;
        };
        // O(foreign rules), on the control thread only: rules limited to other regions are few.
        for f in self.foreign.values() {
            if !f.relays_in.iter().any(|r| r == region) {
                continue;
            }
            let subject = crate::rules::Subject {
                room: self.name,
                participant: id,
                region: m.p.region,
            };
            if !f.rule.matches(&subject) {
                continue;
            }
            for (kind, media) in [
                (crate::rules::Kind::Audio, route::MediaKind::Audio),
                (crate::rules::Kind::Video, route::MediaKind::Video),
            ] {
                let slot = &mut out[media.index()];
                if slot.is_none() && f.rule.blocks_receive(kind) {
                    *slot = Some(f.counters.clone());
                }
            }
        }
        out
    }
}

impl Core {
    /// What the pending change touched. Participants first, so each keeps its slot from before
    /// the whole change; then those matched by a changed rule.
    pub(super) fn pending(&self) -> Pending {
        let mut pending = Pending::default();
        for undo in &self.journal {
            match undo {
                Undo::Room(name, old) => match (old, self.rooms.get(name)) {
                    (None, Some(r)) => {
                        // A room that opens here starts with the fleet's members of it.
                        let changed = pending.rooms.entry(name.clone()).or_default();
                        for id in r.remote.keys() {
                            changed.entry(id.clone()).or_insert(None);
                        }
                    }
                    (Some(old), None) => pending.removed.push((name.clone(), old.id)),
                    _ => {}
                },
                Undo::Participant(room, id, old) => {
                    if self.rooms.contains_key(room) {
                        pending
                            .rooms
                            .entry(room.clone())
                            .or_default()
                            .entry(id.clone())
                            .or_insert(old.as_ref().map(|p| p.slot));
                    } else {
                        pending.gone.push((room.clone(), id.clone()));
                    }
                }
                Undo::Remote(room, id, _, slot) if self.rooms.contains_key(room) => {
                    pending
                        .rooms
                        .entry(room.clone())
                        .or_default()
                        .entry(id.clone())
                        .or_insert(*slot);
                }
                _ => {}
            }
        }
        for undo in &self.journal {
            let Undo::Foreign(id, old) = undo else {
                continue;
            };
            // The remote members of relays in the regions it names, before or now.
            let regions: BTreeSet<&str> = old
                .iter()
                .chain(self.foreign.get(id))
                .flat_map(|f| f.relays_in.iter().map(String::as_str))
                .collect();
            for (name, r) in &self.rooms {
                for (pid, m) in &r.remote {
                    if m.p
                        .relay_region
                        .as_deref()
                        .is_some_and(|g| regions.contains(g))
                    {
                        pending
                            .rooms
                            .entry(name.clone())
                            .or_default()
                            .entry(pid.clone())
                            .or_insert(Some(m.slot));
                    }
                }
            }
        }
        for undo in &self.journal {
            let Undo::Rule(id, _) = undo else {
                continue;
            };
            let exists = |room: &str, p: &str| self.slot_of(room, p);
            for (room, p, slot) in self.rules.participants_of(*id, &self.by_region, exists) {
                pending
                    .rooms
                    .entry(room)
                    .or_default()
                    .entry(p)
                    .or_insert(Some(slot));
            }
        }
        pending
    }

    /// Compiles every room the pending change touched and journals what it replaced; returns
    /// the updates for the workers. Costs O(the change), never O(a room).
    pub(super) fn build(&mut self) -> Result<Vec<Update>, ApiError> {
        let pending = self.pending();
        let mut updates = Vec::new();
        for (_, id) in pending.removed {
            self.journal.push(Undo::Published(Update::RemoveRoom(id)));
            updates.push(Update::RemoveRoom(id));
        }
        for (room, id) in pending.gone {
            self.set_matched(&room, &id, Vec::new());
        }
        for (name, changed) in pending.rooms {
            let Some(r) = self.rooms.get(&name) else {
                continue;
            };
            let changes: Vec<Change<'_>> = changed
                .iter()
                .map(|(id, was)| Change { id, was: *was })
                .collect();
            let roster = Scoped {
                name: &name,
                room: r,
                foreign: &self.foreign,
            };
            let compiled = route::compile(
                &name,
                &r.snapshot,
                &roster,
                &changes,
                self.rules.set(),
                |id| self.rules.live(id),
            )
            .map_err(|e| {
                ApiError::new(
                    Code::Internal,
                    format!("room {name} cannot be compiled: {e:?}"),
                )
            })?;
            let update = Update::Room {
                id: r.id,
                room: compiled.room.clone(),
                slots: compiled.slots,
            };
            let r = self.rooms.get_mut(&name).expect("looked up above");
            let old = std::mem::replace(&mut r.snapshot, compiled.room);
            self.journal.push(Undo::Snapshot(name.clone(), old));
            self.journal.push(Undo::Published(update.clone()));
            let remote: Vec<bool> = changed.keys().map(|id| r.remote.contains_key(id)).collect();
            for (((id, _), matched), remote) in changed.iter().zip(compiled.matched).zip(remote) {
                // Rules count the participants they match on the relay they live on.
                if !remote {
                    self.set_matched(&name, id, matched);
                }
            }
            updates.push(update);
        }
        Ok(updates)
    }

    /// Every room as it is, whole: what a worker needs at start-up.
    pub fn install_all(&self) -> Vec<Update> {
        self.rooms
            .values()
            .map(|r| Update::Room {
                id: r.id,
                room: r.snapshot.clone(),
                slots: r.snapshot.slots().collect(),
            })
            .collect()
    }

    /// After a rollback: the inverse of each update the failed change published, against what
    /// the core holds again. A room's restored snapshot goes out over the same slots; a room
    /// the change created is removed; a room it closed is installed whole.
    pub(super) fn republish(&self, published: Vec<Update>) -> Vec<Update> {
        published
            .into_iter()
            .filter_map(|u| {
                let (id, slots) = match u {
                    Update::Room { id, slots, .. } => (id, Some(slots)),
                    Update::RemoveRoom(id) => (id, None),
                    // The core never publishes peers.
                    Update::Peers(_) => return None,
                };
                let room = self
                    .room_names
                    .get(&id)
                    .and_then(|name| self.rooms.get(name));
                match (room, slots) {
                    (Some(r), slots) => Some(Update::Room {
                        id,
                        room: r.snapshot.clone(),
                        slots: slots.unwrap_or_else(|| r.snapshot.slots().collect()),
                    }),
                    (None, Some(_)) => Some(Update::RemoveRoom(id)),
                    (None, None) => None,
                }
            })
            .collect()
    }

    fn slot_of(&self, room: &str, id: &str) -> Option<u16> {
        let r = self.rooms.get(room)?;
        r.participants
            .get(id)
            .map(|p| p.slot)
            .or_else(|| r.remote_slot(id))
    }

    /// Records the rules that match a participant now, journaled.
    fn set_matched(&mut self, room: &str, id: &str, matched: Vec<RuleId>) {
        let old = self.rules.set_matched(room, id, matched, false);
        if let Some(old) = old {
            self.journal
                .push(Undo::Matched(room.to_owned(), id.to_owned(), old));
        }
    }
}
