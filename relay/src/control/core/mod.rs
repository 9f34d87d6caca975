//! The control core: rooms, participants and rules, and every decision about them, with no I/O.
//!
//! The core is sans-IO. It never reads the clock (`now` comes with every call), never touches
//! the database, a socket or a worker, and never generates randomness (fresh ICE credentials come
//! with the command). It takes [`Command`]s and says what to carry out.
//!
//! # Calling order (the control thread, the only caller)
//!
//! 1. [`Core::handle`] a command. A refused command returns an error and changes nothing.
//!    An accepted one has changed the core and returns an [`Outcome`]: the reply, the events to
//!    publish once it is carried out, and the [`Update`]s for the workers (each touched room's
//!    next snapshot and the slots that changed in it).
//! 2. [`Core::store_ops`] gives the writes for the database.
//! 3. Carry them out: write the store (one transaction), publish the updates and wait for every
//!    worker, commit the store.
//! 4. Then [`Core::commit`]: the core forgets how to undo the change. If any step of 3 failed,
//!    [`Core::rollback`] instead: the core is as before the command, and it returns the updates
//!    that put every worker back on what it holds: the previous snapshots over the same slots
//!    (a worker that applied the failed update, or applies it late, gets these after it: its
//!    channel is FIFO).
//!
//! Every change to a room, a participant or a rule goes through three primitives
//! (`set_room`, `set_participant`, `set_rule`) that keep the indexes and record the old value
//! in a journal. The journal is what makes rollback exact, and it is also how the core knows
//! which participants to compile again (`rooms.rs`) and which rows to write: nothing else has to
//! remember. A change costs what it touches: a join in a room of 10,000 compiles one participant
//! and copies one chunk of the room's snapshot.
#![deny(unsafe_code)]

mod fleet;
mod participants;
mod rooms;
mod rulebook;
mod webrtc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;

use super::body::{IceBody, ParticipantBody, ParticipantPatch};
use super::error::{ApiError, Code};
use super::event::Event;
use super::view;
use crate::config::Limits;
use crate::route::{Latch, ParticipantCounters, RoomId, Update};
use crate::rules::RuleId;
use crate::store::{ParticipantRecord, RoomRecord, StoreOp, StoredRule};

pub use fleet::RemoteParticipant;
pub(crate) use participants::Participant;
pub use participants::RegionSource;
use rooms::RoomMeta;
pub(crate) use rooms::RoomState;
use rulebook::RuleBook;
pub use webrtc::{DtlsReport, DtlsState, Fresh, LocalIdentity};

/// The time of a call: the wall clock for what people read and rules expire by, the monotonic
/// clock for durations.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Wall-clock time.
    pub wall: SystemTime,
    /// Monotonic time.
    pub mono: Instant,
}

impl Now {
    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> u64 {
        self.wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Looks a region up from an IP address (a GeoIP database), or knows none.
pub type RegionLookup<'a> = &'a dyn Fn(IpAddr) -> Option<[u8; 2]>;

/// What the control thread asks of the core.
#[derive(Debug)]
pub enum Command {
    /// `PUT /v1/rooms/{room}`.
    PutRoom {
        /// Room id.
        room: String,
        /// `plain_legs` from the body, if given.
        plain_legs: Option<bool>,
    },
    /// `DELETE /v1/rooms/{room}`.
    DeleteRoom {
        /// Room id.
        room: String,
    },
    /// `PUT /v1/rooms/{room}/participants/{participant}`.
    PutParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The body.
        body: ParticipantBody,
        /// Credentials to use when the body has none and the participant is new.
        fresh_ice: IceBody,
    },
    /// `PATCH /v1/rooms/{room}/participants/{participant}`.
    PatchParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The body.
        patch: ParticipantPatch,
    },
    /// `DELETE /v1/rooms/{room}/participants/{participant}`.
    DeleteParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
    },
    /// `POST /v1/rules` with the raw body.
    AddRule {
        /// The request body.
        body: Vec<u8>,
    },
    /// `DELETE /v1/rules/{id}` with the raw body.
    LiftRule {
        /// The id as given in the path.
        id: String,
        /// The request body.
        body: Vec<u8>,
    },
    /// `POST /v1/drain` (`true`) and `DELETE /v1/drain` (`false`).
    Drain {
        /// Whether to drain.
        on: bool,
    },
    /// `POST .../participants/{participant}/webrtc/publish`.
    WebrtcPublish {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The body.
        body: super::body::WebrtcPublishBody,
        /// Credentials and session id for a new leg.
        fresh: Fresh,
    },
    /// `POST .../participants/{participant}/webrtc/subscribe`.
    WebrtcOffer {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The body.
        body: super::body::WebrtcSubscribeBody,
        /// Credentials and session id for a new leg.
        fresh: Fresh,
    },
    /// `PUT .../participants/{participant}/webrtc/subscribe`.
    WebrtcAnswer {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The client's SDP answer.
        sdp: String,
    },
    /// The DTLS thread reports a WebRTC leg's state.
    Dtls(DtlsReport),
    /// An authenticated STUN request from a worker asks to bind a participant to its source.
    Latch(Latch),
    /// Housekeeping, a few times a second: rule expiry, silent latches, counter saves.
    Tick,
    /// The GeoIP database was reloaded: attribute regions again.
    Reattribute,
    /// `GET /v1/rooms`.
    ListRooms,
    /// `GET /v1/rooms/{room}`.
    GetRoom {
        /// Room id.
        room: String,
    },
    /// `GET /v1/rooms/{room}/participants/{participant}`.
    GetParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
    },
    /// `GET /v1/rules`.
    ListRules,
    /// `GET /v1/rules/{id}`.
    GetRule {
        /// The id as given in the path.
        id: String,
    },
    /// Fleet mode: a rule record as the fleet holds it (from the rule watch).
    FleetRule(Box<StoredRule>),
    /// Fleet mode: a rule record limited with `relays_in` to other regions than this relay's.
    FleetForeignRule {
        /// The rule as the fleet holds it.
        record: Box<StoredRule>,
        /// The regions of the relays that enforce it (this relay's is not among them).
        relays_in: Vec<String>,
    },
    /// Fleet mode: a participant that lives on another relay joined or changed (`Some`), or
    /// left (`None`). It becomes a member of the room here, reached through that relay's trunk.
    FleetParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// What its relay registered.
        remote: Option<Box<RemoteParticipant>>,
    },
    /// Fleet mode: this relay's participant is registered by another relay too, which wrote
    /// the fleet's key last (both accepted a PUT before either saw the other's key). This relay
    /// lets go of its own: `participant_left` with reason `replaced`, naming that relay.
    FleetReplaced {
        /// Room id.
        room: String,
        /// Participant id.
        id: String,
        /// The relay the fleet's key names.
        node: String,
    },
}

/// What an accepted command asks the caller to carry out.
#[derive(Debug, Default)]
pub struct Outcome {
    /// HTTP status and body of the reply.
    pub reply: Option<(u16, Value)>,
    /// Events to publish once the change is carried out.
    pub events: Vec<Event>,
    /// Writes besides those of the journal (counters saved now and then).
    pub store: Vec<StoreOp>,
    /// What the workers must apply: each touched room's next snapshot and changed slots.
    pub updates: Vec<Update>,
    /// For the DTLS thread: a leg session's client fingerprints, learnt after its handshake
    /// may have started (a subscribe answer).
    pub fingerprints: Vec<(u64, Vec<crate::sdp::Fingerprint>)>,
    /// A rule whose view is the reply, taken once the change is compiled (so it counts the
    /// participants the rule matches).
    reply_rule: Option<(u16, RuleId)>,
}

/// The journal: how to put back what the current command changed.
#[derive(Debug)]
enum Undo {
    Room(String, Option<RoomMeta>),
    Participant(String, String, Option<Participant>),
    Rule(RuleId, Option<StoredRule>),
    Draining(bool),
    /// The rules a participant matched before.
    Matched(String, String, Vec<RuleId>),
    /// A room's snapshot before.
    Snapshot(String, Arc<crate::route::Room>),
    /// An update given to the workers, to undo in them.
    Published(Update),
    /// A participant of another relay before, and its slot here.
    Remote(String, String, Option<RemoteParticipant>, Option<u16>),
    /// A fleet rule enforced only elsewhere, before.
    Foreign(RuleId, Option<fleet::Foreign>),
}

/// Rooms, participants and rules, and the indexes that keep lookups O(1).
pub struct Core {
    rooms: BTreeMap<String, RoomState>,
    room_names: HashMap<RoomId, String>,
    /// Every fixed or latched address, to keep source lookup unambiguous relay-wide.
    addresses: HashMap<SocketAddr, (String, String)>,
    /// Every relay-side ufrag, so a STUN request names one participant.
    ufrags: HashMap<String, (String, String)>,
    /// Participants by region, so a region rule finds its rooms without scanning them all.
    by_region: HashMap<[u8; 2], BTreeSet<(String, String)>>,
    next_room: u32,
    limits: Limits,
    workers: usize,
    media_address: SocketAddr,
    rules: RuleBook,
    draining: bool,
    journal: Vec<Undo>,
    last_save: Option<Instant>,
    /// The relay's DTLS fingerprint and media addresses, for WebRTC descriptions.
    identity: Option<LocalIdentity>,
    /// Participants that live on other relays, by (room, id), also for rooms not open here.
    remote: BTreeMap<(String, String), RemoteParticipant>,
    /// The number the next participant to join gets (trunk headers).
    next_number: u32,
    /// Fleet rules enforced only by relays of other regions (`relays_in`), by id.
    foreign: BTreeMap<RuleId, fleet::Foreign>,
}

/// What the core restores from the store at start-up.
#[derive(Debug, Default)]
pub struct Restore {
    /// Every rule ever added, by id; the active ones with their compiled rule.
    pub rules: Vec<StoredRule>,
    /// Counters saved by earlier runs.
    pub counters: Vec<(RuleId, crate::rules::RuleCounters)>,
    /// The id the next rule gets.
    pub next_rule: u64,
    /// Rooms.
    pub rooms: Vec<RoomRecord>,
    /// Participants, by room.
    pub participants: Vec<ParticipantRecord>,
}

impl Core {
    /// A core with what the store kept. Participants come back without an address.
    pub fn new(
        limits: Limits,
        workers: usize,
        media_address: SocketAddr,
        restore: Restore,
        now: Now,
    ) -> Result<Self, String> {
        let mut core = Self {
            rooms: BTreeMap::new(),
            room_names: HashMap::new(),
            addresses: HashMap::new(),
            ufrags: HashMap::new(),
            by_region: HashMap::new(),
            next_room: 1,
            limits,
            workers,
            media_address,
            rules: RuleBook::new(
                workers,
                limits.rule_changes_per_sec,
                restore.rules,
                restore.counters,
                restore.next_rule,
                now,
            )?,
            draining: false,
            journal: Vec::new(),
            last_save: None,
            identity: None,
            remote: BTreeMap::new(),
            next_number: 1,
            foreign: BTreeMap::new(),
        };
        for r in restore.rooms {
            let id = core.new_room_id();
            let (codecs, plain_legs) = webrtc::restore_room(&r.state)
                .ok_or_else(|| format!("room {} cannot be restored from the database", r.room))?;
            let meta = RoomMeta {
                id,
                created: parse_time(&r.created_at).unwrap_or(now.wall),
                snapshot: Arc::default(),
                codecs,
                plain_legs,
            };
            core.set_room(&r.room, Some(meta));
        }
        for p in restore.participants {
            if !core.rooms.contains_key(&p.room) {
                continue;
            }
            let Some(participant) = Participant::restore(&p, workers, now) else {
                return Err(format!(
                    "participant {} of room {} cannot be restored from the database",
                    p.participant, p.room
                ));
            };
            core.set_participant(&p.room, &p.participant, Some(participant));
        }
        // Every room compiled from scratch: the same `route::compile`, from empty snapshots.
        core.build().map_err(|e| e.to_string())?;
        core.journal.clear();
        Ok(core)
    }

    /// Handles one command. On error nothing changed; on success the journal holds the change
    /// until [`Self::commit`] or [`Self::rollback`].
    pub fn handle(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        cmd: Command,
    ) -> Result<Outcome, ApiError> {
        debug_assert!(self.journal.is_empty(), "the last change was not settled");
        let result = self.dispatch(now, geo, cmd).and_then(|mut out| {
            out.updates = self.build()?;
            out.events.extend(self.subscription_events());
            if let Some((status, id)) = out.reply_rule.take() {
                out.reply = Some((status, to_value(&self.rules.view(id)?)));
            }
            Ok(out)
        });
        if result.is_err() {
            // Validation comes before any change, so this undoes nothing; it keeps the
            // promise that a refused command changes nothing even if a check comes late.
            self.rollback();
        }
        result
    }

    fn dispatch(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        cmd: Command,
    ) -> Result<Outcome, ApiError> {
        match cmd {
            Command::PutRoom { room, plain_legs } => self.put_room(now, &room, plain_legs),
            Command::DeleteRoom { room } => self.delete_room(&room),
            Command::PutParticipant {
                room,
                id,
                body,
                fresh_ice,
            } => self.put_participant(now, geo, &room, &id, body, fresh_ice),
            Command::PatchParticipant { room, id, patch } => {
                self.patch_participant(geo, &room, &id, patch)
            }
            Command::DeleteParticipant { room, id } => self.delete_participant(&room, &id),
            Command::AddRule { body } => self.add_rule(now, &body),
            Command::LiftRule { id, body } => self.lift_rule(now, &id, &body),
            Command::Drain { on } => Ok(self.drain(on)),
            Command::WebrtcPublish {
                room,
                id,
                body,
                fresh,
            } => self.webrtc_publish(now, geo, &room, &id, body, fresh),
            Command::WebrtcOffer {
                room,
                id,
                body,
                fresh,
            } => self.webrtc_offer(now, geo, &room, &id, body, fresh),
            Command::WebrtcAnswer { room, id, sdp } => self.webrtc_answer(&room, &id, &sdp),
            Command::Dtls(report) => Ok(self.dtls_report(report)),
            Command::Latch(latch) => Ok(self.latch(now, geo, latch)),
            Command::Tick => Ok(self.tick(now, geo)),
            Command::Reattribute => Ok(self.reattribute(geo)),
            Command::ListRooms => reply(200, &self.list_rooms()),
            Command::GetRoom { room } => reply(200, &self.room_view(&room)?),
            Command::GetParticipant { room, id } => {
                let p = self.participant(&room, &id)?;
                reply(200, &self.participant_view(&room, &id, p))
            }
            Command::ListRules => reply(200, &self.rules.list()),
            Command::GetRule { id } => reply(200, &self.rules.view(parse_rule_id(&id)?)?),
            Command::FleetRule(record) => self.fleet_rule(*record),
            Command::FleetForeignRule { record, relays_in } => {
                self.fleet_foreign_rule(*record, relays_in)
            }
            Command::FleetParticipant { room, id, remote } => {
                Ok(self.fleet_participant(room, id, remote.map(|r| *r)))
            }
            Command::FleetReplaced { room, id, node } => self.fleet_replaced(&room, &id, &node),
        }
    }

    /// Settles the last change: it was carried out.
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    /// Undoes the last change (newest first) and returns the updates that put every worker
    /// back on what the core holds.
    pub fn rollback(&mut self) -> Vec<Update> {
        let mut published = Vec::new();
        while let Some(undo) = self.journal.pop() {
            match undo {
                Undo::Room(name, old) => self.put_room_state(&name, old),
                Undo::Participant(room, id, old) => {
                    self.put_participant_state(&room, &id, old, true);
                }
                Undo::Rule(id, old) => self.rules.restore(id, old),
                Undo::Draining(d) => self.draining = d,
                Undo::Matched(room, id, old) => {
                    self.rules.set_matched(&room, &id, old, true);
                }
                Undo::Snapshot(room, old) => {
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.snapshot = old;
                    }
                }
                Undo::Published(u) => published.push(u),
                Undo::Remote(room, id, old, slot) => self.put_remote(&room, &id, old, slot),
                Undo::Foreign(id, old) => {
                    match old {
                        Some(f) => self.foreign.insert(id, f),
                        None => self.foreign.remove(&id),
                    };
                }
            }
        }
        published.reverse();
        self.republish(published)
    }

    /// The rooms the pending change touched: compiled again, or removed from the workers.
    pub fn changed(&self) -> Changed {
        let pending = self.pending();
        Changed {
            rooms: pending.rooms.into_keys().collect(),
            removed: pending.removed.iter().map(|(_, id)| *id).collect(),
            closed: pending.removed.into_iter().map(|(name, _)| name).collect(),
        }
    }

    /// The database writes the pending change needs: one row per room, participant and rule it
    /// touched, written only where what is kept on disk changed.
    pub fn store_ops(&self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        let mut seen_rooms = BTreeSet::new();
        let mut seen = BTreeSet::new();
        // Oldest value first: the journal holds each key's value before the whole change.
        for undo in &self.journal {
            match undo {
                Undo::Room(name, old) => {
                    if !seen_rooms.insert(name.clone()) {
                        continue;
                    }
                    match (old, self.rooms.get(name)) {
                        (None, Some(r)) => ops.push(StoreOp::PutRoom(room_record(name, r))),
                        (Some(_), None) => ops.push(StoreOp::DeleteRoom(name.clone())),
                        (Some(o), Some(r))
                            if o.codecs != r.codecs || o.plain_legs != r.plain_legs =>
                        {
                            ops.push(StoreOp::PutRoom(room_record(name, r)));
                        }
                        _ => {}
                    }
                }
                Undo::Participant(room, id, old) => {
                    if !seen.insert((room.clone(), id.clone())) {
                        continue;
                    }
                    let now = self.rooms.get(room).and_then(|r| r.participants.get(id));
                    let before = old.as_ref().map(|p| p.record(room, id));
                    let after = now.map(|p| p.record(room, id));
                    match after {
                        Some(rec) if before.as_ref() != Some(&rec) => {
                            ops.push(StoreOp::PutParticipant(rec));
                        }
                        None if before.is_some() && self.rooms.contains_key(room) => {
                            ops.push(StoreOp::DeleteParticipant {
                                room: room.clone(),
                                participant: id.clone(),
                            });
                        }
                        _ => {}
                    }
                }
                Undo::Rule(id, old) => {
                    if let Some(op) = self.rules.store_op(*id, old.as_ref()) {
                        ops.push(op);
                    }
                }
                Undo::Draining(_)
                | Undo::Matched(..)
                | Undo::Snapshot(..)
                | Undo::Published(_)
                | Undo::Remote(..)
                | Undo::Foreign(..) => {}
            }
        }
        ops
    }

    /// Counters of every rule, for the transparency report and saving.
    pub fn rule_counters(&self) -> Vec<(RuleId, crate::rules::RuleCounters)> {
        self.rules.all_counters()
    }

    /// Totals for metrics: (rooms, participants).
    pub fn sizes(&self) -> (usize, usize) {
        let participants = self.rooms.values().map(|r| r.participants.len()).sum();
        (self.rooms.len(), participants)
    }

    /// Whether new rooms are refused.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The rules in force with their live drop counters and expiry, for metrics.
    pub fn rule_metrics(&self) -> Vec<view::RuleMetric> {
        self.rules.metrics()
    }

    /// The media address clients are told to use.
    pub fn media_address(&self) -> SocketAddr {
        self.media_address
    }

    fn new_room_id(&mut self) -> RoomId {
        let id = RoomId(self.next_room);
        self.next_room = self.next_room.wrapping_add(1).max(1);
        id
    }

    // ---- The three primitives: every change goes through them. ----

    fn set_room(&mut self, name: &str, meta: Option<RoomMeta>) {
        let old = self.rooms.get(name).map(RoomState::meta);
        self.journal.push(Undo::Room(name.to_owned(), old));
        self.put_room_state(name, meta);
    }

    fn put_room_state(&mut self, name: &str, meta: Option<RoomMeta>) {
        match meta {
            Some(m) => {
                match self.rooms.get_mut(name) {
                    Some(r) => {
                        self.room_names.remove(&r.id);
                        r.id = m.id;
                        r.created = m.created;
                        r.snapshot = m.snapshot;
                        r.codecs = m.codecs;
                        r.plain_legs = m.plain_legs;
                    }
                    None => {
                        let mut r = RoomState::new(m.clone());
                        for (id, p) in self.remote_of(name) {
                            r.put_remote(&id, Some(p), None, self.workers);
                        }
                        self.rooms.insert(name.to_owned(), r);
                    }
                }
                self.room_names.insert(m.id, name.to_owned());
            }
            None => {
                if let Some(old) = self.rooms.remove(name) {
                    self.room_names.remove(&old.id);
                    debug_assert!(old.participants.is_empty(), "participants leave first");
                }
            }
        }
    }

    fn set_participant(&mut self, room: &str, id: &str, mut p: Option<Participant>) {
        let old = self
            .rooms
            .get(room)
            .and_then(|r| r.participants.get(id))
            .cloned();
        // A newcomer gets the next participant number; one that stays keeps its own.
        if let Some(p) = &mut p {
            p.number = match &old {
                Some(o) => o.number,
                None => {
                    let n = self.next_number;
                    self.next_number = self.next_number.wrapping_add(1).max(1);
                    n
                }
            };
        }
        self.journal
            .push(Undo::Participant(room.to_owned(), id.to_owned(), old));
        self.put_participant_state(room, id, p, false);
    }

    /// Installs or removes a participant and keeps the indexes: the room's (slots, SSRCs,
    /// listeners) and the relay's (addresses, ufrags, regions). `restore` puts a participant
    /// back in the slot it had (rollback).
    fn put_participant_state(
        &mut self,
        room: &str,
        id: &str,
        p: Option<Participant>,
        restore: bool,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let old = r.put(id, p, restore);
        let new = r.participants.get(id);
        let key = || (room.to_owned(), id.to_owned());
        let (old_addrs, old_ufrags, old_region): (Vec<SocketAddr>, Vec<String>, _) = match &old {
            Some(o) => (
                o.addresses().collect(),
                o.ufrags().map(str::to_owned).collect(),
                o.region,
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        let (new_addrs, new_ufrags, new_region): (Vec<SocketAddr>, Vec<String>, _) = match new {
            Some(n) => (
                n.addresses().collect(),
                n.ufrags().map(str::to_owned).collect(),
                n.region,
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        for a in old_addrs.iter().filter(|a| !new_addrs.contains(a)) {
            if self.addresses.get(a).is_some_and(|k| *k == key()) {
                self.addresses.remove(a);
            }
        }
        for a in new_addrs.iter().filter(|a| !old_addrs.contains(a)) {
            self.addresses.insert(*a, key());
        }
        for u in old_ufrags.iter().filter(|u| !new_ufrags.contains(u)) {
            if self.ufrags.get(u).is_some_and(|k| *k == key()) {
                self.ufrags.remove(u);
            }
        }
        for u in new_ufrags.iter().filter(|u| !old_ufrags.contains(u)) {
            self.ufrags.insert(u.clone(), key());
        }
        if old_region != new_region {
            if let Some(r) = old_region
                && let Some(set) = self.by_region.get_mut(&r)
            {
                set.remove(&key());
                if set.is_empty() {
                    self.by_region.remove(&r);
                }
            }
            if let Some(r) = new_region {
                self.by_region.entry(r).or_default().insert(key());
            }
        }
    }

    fn set_rule(&mut self, id: RuleId, record: StoredRule) {
        let old = self.rules.record(id).cloned();
        // The rooms the rule touches now and after the change both need recompiling; the old
        // record is in the journal, the new one in the book, and `changed` asks the book.
        self.journal.push(Undo::Rule(id, old));
        self.rules.put(id, Some(record));
    }

    fn set_draining(&mut self, on: bool) {
        self.journal.push(Undo::Draining(self.draining));
        self.draining = on;
    }

    fn drain(&mut self, on: bool) -> Outcome {
        let was = self.draining;
        if was != on {
            self.set_draining(on);
        }
        let (rooms, participants) = self.sizes();
        let mut out = outcome(
            200,
            &view::Drain {
                draining: on,
                rooms,
                participants,
            },
        );
        if on && !was {
            out.events.push(Event::new(
                "drain_started",
                serde_json::json!({"rooms": rooms, "participants": participants}),
            ));
        } else if !on && was {
            out.events
                .push(Event::new("drain_stopped", serde_json::json!({})));
        }
        out
    }
}

/// Rooms a change touched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Rooms to compile and install.
    pub rooms: BTreeSet<String>,
    /// Rooms to remove from the workers.
    pub removed: BTreeSet<RoomId>,
    /// Rooms closed: their rule matches are forgotten.
    pub closed: BTreeSet<String>,
}

impl Changed {
    /// Whether nothing needs publishing.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.removed.is_empty()
    }
}

fn outcome<T: serde::Serialize>(status: u16, body: &T) -> Outcome {
    Outcome {
        reply: Some((status, to_value(body))),
        ..Outcome::default()
    }
}

fn to_value<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

fn reply<T: serde::Serialize>(status: u16, body: &T) -> Result<Outcome, ApiError> {
    Ok(outcome(status, body))
}

fn parse_rule_id(id: &str) -> Result<RuleId, ApiError> {
    id.parse()
        .map(RuleId)
        .map_err(|_| ApiError::new(Code::RuleNotFound, format!("no rule {id}")))
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Formats a time as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// The row the database keeps of a room.
fn room_record(name: &str, r: &RoomState) -> RoomRecord {
    RoomRecord {
        room: name.to_owned(),
        created_at: rfc3339_millis(r.created),
        state: webrtc::room_state(&r.codecs, r.plain_legs),
    }
}

/// Fresh counters for a participant.
fn counters(workers: usize) -> Arc<ParticipantCounters> {
    Arc::new(ParticipantCounters::new(workers))
}

#[cfg(test)]
mod tests;
