//! The source of truth for rooms and participants, and its publication to the workers.
//!
//! Every change is validated completely before anything is modified, so a refused call changes
//! nothing. A change that affects routing recompiles only the rooms it touches and returns after
//! every worker has applied them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rand::Rng;
use serde_json::{Value, json};

use super::api::{
    self, ApiError, IceBody, ParticipantBody, ParticipantPatch, SubscribeBody, TrackBody,
};
use super::geoip::Geoip;
use super::rulebook::{self, RuleBook};
use crate::config::Limits;
use crate::io::DataPlane;
use crate::packet::rtp::Ssrc;
use crate::route::{
    Credentials, Latch, MemberSpec, ParticipantCounters, Room, RoomId, Subscription, Update,
};
use crate::rules::{Rule, RuleId, Subject};

/// Where a participant's region came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionSource {
    /// Given by the signaling server.
    Signaling,
    /// Looked up from its media address.
    Geoip,
    /// Not known.
    Unknown,
}

impl RegionSource {
    fn name(self) -> &'static str {
        match self {
            Self::Signaling => "signaling",
            Self::Geoip => "geoip",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
struct Participant {
    region: Option<[u8; 2]>,
    region_source: RegionSource,
    address: Option<SocketAddr>,
    ice: IceBody,
    tracks: Vec<TrackBody>,
    subscribe: SubscribeBody,
    counters: Arc<ParticipantCounters>,
    joined: SystemTime,
    /// Since when the address was latched by STUN; `None` for a fixed or absent address.
    latched_since: Option<SystemTime>,
    /// Times the latched address was dropped for silence, and the last time.
    unlatches: u64,
    last_unlatched: Option<SystemTime>,
    /// Packets and STUN requests seen at `heard_at`, to notice silence without a per-packet clock.
    heard: u64,
    heard_at: Instant,
}

#[derive(Debug)]
struct RoomState {
    id: RoomId,
    participants: BTreeMap<String, Participant>,
    created: SystemTime,
}

/// Rooms and participants, owned by the control thread.
pub struct State {
    rooms: BTreeMap<String, RoomState>,
    /// Every fixed or latched address, to keep source lookup unambiguous relay-wide.
    addresses: HashMap<SocketAddr, (String, String)>,
    /// Every relay-side ufrag, so a STUN request names one participant.
    ufrags: HashMap<String, (String, String)>,
    room_names: HashMap<RoomId, String>,
    latches: u64,
    /// Participants by region, so a region rule finds its rooms without scanning them all.
    by_region: HashMap<[u8; 2], BTreeSet<(String, String)>>,
    next_room: u32,
    limits: Limits,
    plane: Arc<DataPlane>,
    rules: RuleBook,
    geoip: Option<Geoip>,
    last_save: SystemTime,
    media_address: SocketAddr,
}

impl State {
    /// State with no rooms and the rules restored from `store`, publishing to `plane`.
    pub fn new(
        plane: Arc<DataPlane>,
        limits: Limits,
        store: crate::store::Store,
        geoip: Option<Geoip>,
        advertise: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Self> {
        let bound = plane.local_addr();
        let media_address = advertise.map_or(bound, |ip| SocketAddr::new(ip, bound.port()));
        let rules = RuleBook::open(
            store,
            plane.workers(),
            limits.rule_changes_per_sec,
            unix_now(),
        )
        .map_err(|e| anyhow::anyhow!("restoring rules: {e}"))?;
        Ok(Self {
            rooms: BTreeMap::new(),
            addresses: HashMap::new(),
            ufrags: HashMap::new(),
            room_names: HashMap::new(),
            latches: 0,
            by_region: HashMap::new(),
            next_room: 1,
            limits,
            plane,
            rules,
            geoip,
            last_save: SystemTime::now(),
            media_address,
        })
    }

    /// The media address clients are told to use.
    pub fn media_address(&self) -> SocketAddr {
        self.media_address
    }

    /// The data plane.
    pub fn plane(&self) -> &DataPlane {
        &self.plane
    }

    /// `PUT /v1/rooms/{room}`: returns whether it was created.
    pub fn put_room(&mut self, room: &str) -> Result<(bool, Value), ApiError> {
        api::check_id("room", room)?;
        if let Some(r) = self.rooms.get(room) {
            return Ok((false, self.room_json(room, r)));
        }
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(ApiError::conflict(
                "too_many_rooms",
                format!(
                    "the relay already has {} rooms, its limit",
                    self.limits.max_rooms
                ),
            ));
        }
        let id = RoomId(self.next_room);
        self.next_room = self.next_room.wrapping_add(1).max(1);
        let state = RoomState {
            id,
            participants: BTreeMap::new(),
            created: SystemTime::now(),
        };
        let body = self.room_json(room, &state);
        self.rooms.insert(room.to_owned(), state);
        self.room_names.insert(id, room.to_owned());
        tracing::info!(room, "room created");
        Ok((true, body))
    }

    /// `GET /v1/rooms`.
    pub fn list_rooms(&self) -> Value {
        let rooms: Vec<Value> = self
            .rooms
            .iter()
            .map(|(name, r)| json!({"room": name, "participants": r.participants.len()}))
            .collect();
        json!({ "rooms": rooms })
    }

    /// `GET /v1/rooms/{room}`.
    pub fn get_room(&self, room: &str) -> Result<Value, ApiError> {
        let r = self.room(room)?;
        Ok(self.room_json(room, r))
    }

    /// `DELETE /v1/rooms/{room}`: closes the room for everyone at once.
    pub fn delete_room(&mut self, room: &str) -> Result<Value, ApiError> {
        let id = self.room(room)?.id;
        self.publish(vec![Update::RemoveRoom(id)])?;
        let r = self.rooms.remove(room).expect("checked above");
        self.room_names.remove(&r.id);
        for (id, p) in &r.participants {
            if let Some(a) = p.address {
                self.addresses.remove(&a);
            }
            self.ufrags.remove(&p.ice.ufrag);
            self.index_region(room, id, p.region, None);
        }
        self.rules.forget_room(room);
        tracing::info!(room, "room closed");
        Ok(json!({"room": room, "closed": true, "participants": r.participants.len()}))
    }

    /// `PUT /v1/rooms/{room}/participants/{participant}`: add or replace.
    pub fn put_participant(
        &mut self,
        room: &str,
        id: &str,
        body: ParticipantBody,
    ) -> Result<(bool, Value), ApiError> {
        api::check_id("participant", id)?;
        let r = self.room(room)?;
        let existing = r.participants.get(id);
        if existing.is_none() && r.participants.len() >= self.limits.max_participants {
            return Err(ApiError::conflict(
                "room_full",
                format!(
                    "room {room} already has {} participants, its limit",
                    self.limits.max_participants
                ),
            ));
        }
        let region = body.region.as_deref().map(api::check_region).transpose()?;
        let mut address = body.address.as_deref().map(parse_address).transpose()?;
        // A re-PUT without an address keeps a STUN-latched one: the client is still there.
        let mut latched_since = None;
        if address.is_none()
            && let Some(p) = existing.filter(|p| p.latched_since.is_some())
        {
            address = p.address;
            latched_since = p.latched_since;
        }
        let ice = match body.ice {
            Some(ice) => {
                api::check_ice(&ice)?;
                ice
            }
            None => existing.map_or_else(generate_ice, |p| p.ice.clone()),
        };
        let subscribe = body
            .subscribe
            .unwrap_or(SubscribeBody::All(api::AllTag::All));
        self.check_participant(room, id, address, &ice, &body.tracks, &subscribe)?;
        let participant = Participant {
            region,
            region_source: if region.is_some() {
                RegionSource::Signaling
            } else {
                RegionSource::Unknown
            },
            address,
            ice,
            tracks: body.tracks,
            subscribe,
            counters: existing.map_or_else(
                || Arc::new(ParticipantCounters::new(self.plane.workers())),
                |p| p.counters.clone(),
            ),
            joined: existing.map_or_else(SystemTime::now, |p| p.joined),
            latched_since,
            unlatches: existing.map_or(0, |p| p.unlatches),
            last_unlatched: existing.and_then(|p| p.last_unlatched),
            heard: 0,
            heard_at: Instant::now(),
        };
        let created = existing.is_none();
        let mut participant = participant;
        self.attribute_region(&mut participant);
        self.replace_participant(room, id, participant)?;
        tracing::info!(room, participant = id, created, "participant set");
        Ok((created, self.get_participant(room, id)?))
    }

    /// `PATCH /v1/rooms/{room}/participants/{participant}`.
    pub fn patch_participant(
        &mut self,
        room: &str,
        id: &str,
        patch: ParticipantPatch,
    ) -> Result<Value, ApiError> {
        let mut p = self.participant(room, id)?.clone();
        if let Some(region) = patch.region {
            p.region = region.as_deref().map(api::check_region).transpose()?;
            p.region_source = if p.region.is_some() {
                RegionSource::Signaling
            } else {
                RegionSource::Unknown
            };
        }
        if let Some(address) = patch.address {
            p.address = address.as_deref().map(parse_address).transpose()?;
            p.latched_since = None;
        }
        if let Some(tracks) = patch.tracks {
            p.tracks = tracks;
        }
        if let Some(subscribe) = patch.subscribe {
            p.subscribe = subscribe;
        }
        self.check_participant(room, id, p.address, &p.ice, &p.tracks, &p.subscribe)?;
        self.attribute_region(&mut p);
        self.replace_participant(room, id, p)?;
        tracing::info!(room, participant = id, "participant changed");
        self.get_participant(room, id)
    }

    /// `GET /v1/rooms/{room}/participants/{participant}`.
    pub fn get_participant(&self, room: &str, id: &str) -> Result<Value, ApiError> {
        let p = self.participant(room, id)?;
        Ok(self.participant_json(room, id, p))
    }

    /// `DELETE /v1/rooms/{room}/participants/{participant}`.
    pub fn delete_participant(&mut self, room: &str, id: &str) -> Result<Value, ApiError> {
        self.participant(room, id)?;
        let old = {
            let r = self.rooms.get_mut(room).expect("checked above");
            r.participants.remove(id).expect("checked above")
        };
        if let Err(e) = self.publish_room(room) {
            // Put it back: a refused call changes nothing.
            self.rooms
                .get_mut(room)
                .expect("still there")
                .participants
                .insert(id.to_owned(), old);
            return Err(e);
        }
        if let Some(a) = old.address {
            self.addresses.remove(&a);
        }
        self.index_region(room, id, old.region, None);
        self.ufrags.remove(&old.ice.ufrag);
        tracing::info!(room, participant = id, "participant removed");
        Ok(json!({"room": room, "participant": id, "removed": true}))
    }

    /// Totals for metrics: (rooms, participants).
    pub fn sizes(&self) -> (usize, usize) {
        let participants = self.rooms.values().map(|r| r.participants.len()).sum();
        (self.rooms.len(), participants)
    }

    fn check_participant(
        &self,
        room: &str,
        id: &str,
        address: Option<SocketAddr>,
        ice: &IceBody,
        tracks: &[TrackBody],
        subscribe: &SubscribeBody,
    ) -> Result<(), ApiError> {
        if let Some((r2, p2)) = self.ufrags.get(&ice.ufrag)
            && (r2 != room || p2 != id)
        {
            return Err(ApiError::conflict(
                "ufrag_in_use",
                "that ICE ufrag already belongs to another participant",
            ));
        }
        if tracks.len() > self.limits.max_tracks {
            return Err(ApiError::bad_request(
                "too_many_tracks",
                format!(
                    "{} tracks given, at most {} per participant",
                    tracks.len(),
                    self.limits.max_tracks
                ),
            ));
        }
        for (i, t) in tracks.iter().enumerate() {
            if tracks[..i].iter().any(|o| o.ssrc == t.ssrc) {
                return Err(ApiError::bad_request(
                    "duplicate_ssrc",
                    format!("ssrc {} is declared twice", t.ssrc),
                ));
            }
        }
        let r = self.room(room)?;
        for (other, p) in &r.participants {
            if other == id {
                continue;
            }
            if let Some(t) = p
                .tracks
                .iter()
                .find(|t| tracks.iter().any(|n| n.ssrc == t.ssrc))
            {
                return Err(ApiError::conflict(
                    "ssrc_in_use",
                    format!(
                        "ssrc {} already belongs to participant {other} of room {room}",
                        t.ssrc
                    ),
                ));
            }
        }
        if let Some(a) = address
            && let Some((r2, p2)) = self.addresses.get(&a)
            && (r2 != room || p2 != id)
        {
            return Err(ApiError::conflict(
                "address_in_use",
                "that media address already belongs to another participant",
            ));
        }
        if let SubscribeBody::Only(list) = subscribe {
            if list.len() > self.limits.max_participants {
                return Err(ApiError::bad_request(
                    "too_many_subscriptions",
                    "the subscription list is longer than a room can be",
                ));
            }
            for s in list {
                api::check_id("subscribed participant", s)?;
            }
        }
        Ok(())
    }

    /// Installs `p`, publishes the room, and rolls back if publishing fails.
    fn replace_participant(
        &mut self,
        room: &str,
        id: &str,
        p: Participant,
    ) -> Result<(), ApiError> {
        let (new_addr, new_region, new_ufrag) = (p.address, p.region, p.ice.ufrag.clone());
        let r = self.rooms.get_mut(room).expect("caller checked the room");
        let old = r.participants.insert(id.to_owned(), p);
        if let Err(e) = self.publish_room(room) {
            let r = self.rooms.get_mut(room).expect("still there");
            match old {
                Some(o) => r.participants.insert(id.to_owned(), o),
                None => r.participants.remove(id),
            };
            return Err(e);
        }
        let (old_addr, old_region) = old.as_ref().map_or((None, None), |o| (o.address, o.region));
        if let Some(o) = &old
            && o.ice.ufrag != new_ufrag
        {
            self.ufrags.remove(&o.ice.ufrag);
        }
        self.ufrags
            .insert(new_ufrag, (room.to_owned(), id.to_owned()));
        if let Some(a) = old_addr
            && Some(a) != new_addr
        {
            self.addresses.remove(&a);
        }
        if let Some(a) = new_addr {
            self.addresses.insert(a, (room.to_owned(), id.to_owned()));
        }
        self.index_region(room, id, old_region, new_region);
        Ok(())
    }

    /// Looks the region up from the address unless signaling gave one.
    fn attribute_region(&self, p: &mut Participant) {
        if p.region_source == RegionSource::Signaling {
            return;
        }
        let found = match (&self.geoip, p.address) {
            (Some(db), Some(addr)) => db.region(addr.ip()),
            _ => None,
        };
        p.region = found;
        p.region_source = if found.is_some() {
            RegionSource::Geoip
        } else {
            RegionSource::Unknown
        };
    }

    fn index_region(&mut self, room: &str, id: &str, old: Option<[u8; 2]>, new: Option<[u8; 2]>) {
        if old == new {
            return;
        }
        let key = (room.to_owned(), id.to_owned());
        if let Some(old) = old
            && let Some(set) = self.by_region.get_mut(&old)
        {
            set.remove(&key);
            if set.is_empty() {
                self.by_region.remove(&old);
            }
        }
        if let Some(new) = new {
            self.by_region.entry(new).or_default().insert(key);
        }
    }

    fn publish_room(&mut self, room: &str) -> Result<(), ApiError> {
        self.publish_rooms(std::iter::once(room.to_owned()).collect())
    }

    /// Recompiles the rooms, publishes them in one round, then records whom each rule matches.
    fn publish_rooms(&mut self, rooms: BTreeSet<String>) -> Result<(), ApiError> {
        let mut updates = Vec::with_capacity(rooms.len());
        let mut matches = Vec::with_capacity(rooms.len());
        for name in &rooms {
            let Some(r) = self.rooms.get(name) else {
                continue;
            };
            let (compiled, matched) = compile(name, r, &self.rules)?;
            updates.push(Update::Room(r.id, Arc::new(compiled)));
            matches.push((name, matched));
        }
        self.publish(updates)?;
        for (name, matched) in matches {
            self.rules.set_matches(name, matched);
        }
        Ok(())
    }

    /// `POST /v1/rules`: in force on every worker when it returns.
    pub fn post_rule(&mut self, body: &[u8]) -> Result<Value, ApiError> {
        let (id, rule) = self.rules.add(body, unix_now())?;
        let rooms = rulebook::rooms_of(rule, &self.by_region);
        self.publish_rooms(rooms)?;
        self.rules.get(id)
    }

    /// `GET /v1/rules`.
    pub fn list_rules(&self) -> Result<Value, ApiError> {
        self.rules.list()
    }

    /// `GET /v1/rules/{id}`.
    pub fn get_rule(&self, id: &str) -> Result<Value, ApiError> {
        self.rules.get(parse_rule_id(id)?)
    }

    /// `DELETE /v1/rules/{id}` with `{"reason": "..."}`: lifted on every worker when it returns.
    pub fn delete_rule(&mut self, id: &str, body: &[u8]) -> Result<Value, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Lift {
            reason: String,
        }
        let id = parse_rule_id(id)?;
        let lift: Lift = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "invalid_reason",
                format!("a JSON body {{\"reason\": \"...\"}} is required: {e}"),
            )
        })?;
        let rule = self.rules.lift(id, &lift.reason)?;
        self.republish_for(&rule)?;
        self.rules.get(id)
    }

    /// `GET /v1/audit`.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Value, ApiError> {
        self.rules.audit(after, limit)
    }

    /// `GET /v1/transparency`.
    pub fn transparency(&self) -> Result<Value, ApiError> {
        self.rules.transparency()
    }

    /// Housekeeping, called a few times a second: expires due rules, saves counters now and then.
    pub fn tick(&mut self) {
        self.expire_latches();
        for rule in self.rules.expire(unix_now()) {
            if let Err(e) = self.republish_for(&rule) {
                tracing::error!(error = %e, "republishing after an expiry failed");
            }
        }
        let now = SystemTime::now();
        if now
            .duration_since(self.last_save)
            .is_ok_and(|d| d.as_secs() >= 10)
        {
            self.last_save = now;
            self.rules.save_counters();
        }
    }

    /// Binds a participant to the address of its authenticated STUN request (NAT rebinding
    /// included): media from the old address stops being accepted once this returns.
    pub fn latch(&mut self, latch: Latch) {
        let Some(room) = self.room_names.get(&latch.room).cloned() else {
            return;
        };
        let id: &str = &latch.participant;
        let Some(mut p) = self
            .rooms
            .get(&room)
            .and_then(|r| r.participants.get(id))
            .cloned()
        else {
            return;
        };
        if p.address == Some(latch.addr) {
            return;
        }
        // An authenticated binding wins: whoever held the address loses it.
        if let Some((r2, p2)) = self.addresses.get(&latch.addr).cloned()
            && (r2 != room || p2 != id)
        {
            self.unlatch(&r2, &p2, false);
        }
        p.address = Some(latch.addr);
        p.latched_since = Some(SystemTime::now());
        p.heard_at = Instant::now();
        self.attribute_region(&mut p);
        match self.replace_participant(&room, id, p) {
            Ok(()) => {
                self.latches += 1;
                tracing::info!(room, participant = id, "address latched");
            }
            Err(e) => tracing::warn!(room, participant = id, error = %e, "latching failed"),
        }
    }

    /// Drops a participant's address: the relay stops sending to it until it binds again.
    fn unlatch(&mut self, room: &str, id: &str, silent: bool) {
        let Some(mut p) = self
            .rooms
            .get(room)
            .and_then(|r| r.participants.get(id))
            .cloned()
        else {
            return;
        };
        let Some(addr) = p.address.take() else {
            return;
        };
        p.latched_since = None;
        if silent {
            p.unlatches += 1;
            p.last_unlatched = Some(SystemTime::now());
        }
        self.attribute_region(&mut p);
        if let Err(e) = self.replace_participant(room, id, p) {
            tracing::warn!(room, participant = id, error = %e, "unlatching failed");
            return;
        }
        self.addresses.remove(&addr);
        tracing::info!(room, participant = id, silent, "address unlatched");
    }

    /// Unlatches participants not heard from (no packet, no STUN) for the latch timeout.
    fn expire_latches(&mut self) {
        let now = Instant::now();
        let timeout = self.limits.latch_timeout;
        let mut silent = Vec::new();
        for (room, r) in self.rooms.iter_mut() {
            for (id, p) in r.participants.iter_mut() {
                if p.latched_since.is_none() {
                    continue;
                }
                let heard = p.counters.packets_in.sum() + p.counters.stun_ok.sum();
                if heard != p.heard {
                    p.heard = heard;
                    p.heard_at = now;
                } else if now.duration_since(p.heard_at) >= timeout {
                    silent.push((room.clone(), id.clone()));
                }
            }
        }
        for (room, id) in silent {
            self.unlatch(&room, &id, true);
        }
    }

    /// Latches so far, for metrics.
    pub fn latch_count(&self) -> u64 {
        self.latches
    }

    /// Saves counters and records the shutdown in the audit log.
    pub fn close(&mut self) {
        self.rules.close();
    }

    fn republish_for(&mut self, rule: &Rule) -> Result<(), ApiError> {
        let rooms = rulebook::rooms_of(rule, &self.by_region);
        self.publish_rooms(rooms)
    }

    fn publish(&self, updates: Vec<Update>) -> Result<(), ApiError> {
        self.plane.publish(updates).map_err(|e| {
            tracing::error!(error = %e, "publishing to workers failed");
            ApiError::new(503, "workers_unavailable", e.to_string())
        })
    }

    fn room(&self, room: &str) -> Result<&RoomState, ApiError> {
        api::check_id("room", room)?;
        self.rooms
            .get(room)
            .ok_or_else(|| ApiError::not_found(format!("no room {room}")))
    }

    fn participant(&self, room: &str, id: &str) -> Result<&Participant, ApiError> {
        api::check_id("participant", id)?;
        self.room(room)?
            .participants
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("no participant {id} in room {room}")))
    }

    fn room_json(&self, name: &str, r: &RoomState) -> Value {
        let participants: Vec<Value> = r
            .participants
            .iter()
            .map(|(id, p)| self.participant_json(name, id, p))
            .collect();
        let (mut packets, mut bytes) = (0, 0);
        for p in r.participants.values() {
            packets += p.counters.packets_in.sum();
            bytes += p.counters.bytes_in.sum();
        }
        json!({
            "room": name,
            "created_at": rfc3339(r.created),
            "participants": participants,
            "counters": {"packets_in": packets, "bytes_in": bytes},
        })
    }

    fn participant_json(&self, room: &str, id: &str, p: &Participant) -> Value {
        json!({
            "room": room,
            "participant": id,
            "media_address": self.media_address.to_string(),
            "ice": p.ice,
            "region": p.region.map(|r| String::from_utf8_lossy(&r).into_owned()),
            "region_source": p.region_source.name(),
            "address_set": p.address.is_some(),
            "latched": p.latched_since.is_some(),
            "latched_since": p.latched_since.map(rfc3339),
            "unlatched_count": p.unlatches,
            "last_unlatched_at": p.last_unlatched.map(rfc3339),
            "joined_at": rfc3339(p.joined),
            "tracks": p.tracks,
            "subscribe": p.subscribe,
            "counters": {
                "packets_in": p.counters.packets_in.sum(),
                "bytes_in": p.counters.bytes_in.sum(),
                "packets_dropped": p.counters.packets_dropped.sum(),
            },
        })
    }
}

/// Compiles one room for the workers, with the rules in force; also says whom each rule matches.
fn compile(
    name: &str,
    r: &RoomState,
    rules: &RuleBook,
) -> Result<(Room, HashMap<RuleId, BTreeSet<String>>), ApiError> {
    let mut matched: HashMap<RuleId, BTreeSet<String>> = HashMap::new();
    let index: HashMap<&str, usize> = r
        .participants
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let specs: Vec<MemberSpec> = r
        .participants
        .iter()
        .map(|(id, p)| MemberSpec {
            name: Arc::from(id.as_str()),
            addr: p.address,
            tracks: p.tracks.iter().map(|t| (Ssrc(t.ssrc), t.kind)).collect(),
            subscription: match &p.subscribe {
                SubscribeBody::All(_) => Subscription::All,
                SubscribeBody::Only(list) => Subscription::Only(
                    list.iter()
                        .filter_map(|s| index.get(s.as_str()).copied())
                        .collect(),
                ),
            },
            blocks: {
                let subject = Subject {
                    room: name,
                    participant: id,
                    region: p.region,
                };
                for (rule, _) in rules.set.matching(&subject) {
                    matched.entry(rule).or_default().insert(id.clone());
                }
                rules.blocks(&subject)
            },
            counters: p.counters.clone(),
            ice: Some(Credentials {
                ufrag: p.ice.ufrag.as_str().into(),
                pwd: p.ice.pwd.as_str().into(),
            }),
        })
        .collect();
    let room = Room::compile(&specs).map_err(|e| {
        ApiError::new(
            500,
            "compile_failed",
            format!("room could not be compiled: {e:?}"),
        )
    })?;
    Ok((room, matched))
}

fn parse_rule_id(id: &str) -> Result<RuleId, ApiError> {
    id.parse()
        .map(RuleId)
        .map_err(|_| ApiError::not_found(format!("no rule {id}")))
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_address(s: &str) -> Result<SocketAddr, ApiError> {
    let a: SocketAddr = s.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_address",
            "address must be IP:PORT (IPv6 in brackets), for example 192.0.2.1:5004",
        )
    })?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(ApiError::bad_request(
            "invalid_address",
            "address must be a unicast IP with a non-zero port",
        ));
    }
    // Normalise IPv4-mapped IPv6 so lookups match what the data plane sees.
    Ok(match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    })
}

/// Fresh relay-side credentials from the OS-seeded CSPRNG (RFC 8445 §5.3: ufrag ≥ 24 bits,
/// pwd ≥ 128 bits of randomness).
fn generate_ice() -> IceBody {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
            .collect()
    };
    IceBody {
        ufrag: pick(8),
        pwd: pick(24),
    }
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ice_is_valid() {
        let a = generate_ice();
        let b = generate_ice();
        assert!(api::check_ice(&a).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("[::ffff:127.0.0.1]:5000")
                .unwrap()
                .to_string(),
            "127.0.0.1:5000"
        );
        assert!(parse_address("127.0.0.1:0").is_err());
        assert!(parse_address("0.0.0.0:5").is_err());
        assert!(parse_address("localhost:5").is_err());
        assert!(parse_address("[::1]:5004").is_ok());
    }
}
