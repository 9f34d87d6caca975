//! Rooms and participants: joining, changing, leaving, latching, silence, and their views.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::webrtc::{self, Webrtc};
use super::{
    Core, Now, Outcome, RegionLookup, RoomMeta, RoomState, counters, outcome, parse_time, rfc3339,
    rfc3339_millis,
};
use crate::control::body::{
    self, IceBody, ParticipantBody, ParticipantPatch, SubscribeBody, TrackBody,
};
use crate::control::error::{ApiError, Code};
use crate::control::event::Event;
use crate::control::view;
use crate::packet::rtp::Ssrc;
use crate::route::{self, Credentials, Latch, Leg, ParticipantCounters};
use crate::store::ParticipantRecord;

/// Where a participant's region came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// One participant.
#[derive(Debug, Clone)]
pub(crate) struct Participant {
    /// Where it sits in its room's snapshot; given by the room when it joins.
    pub(crate) slot: u16,
    pub(crate) region: Option<[u8; 2]>,
    pub(super) region_source: RegionSource,
    pub(crate) address: Option<SocketAddr>,
    pub(crate) ice: IceBody,
    pub(crate) tracks: Vec<TrackBody>,
    pub(crate) subscribe: SubscribeBody,
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
    /// Set for a WebRTC participant: its legs' state. `address` and `ice` are its publish leg.
    pub(crate) webrtc: Option<Box<Webrtc>>,
    /// Its participant number on this relay (trunk headers); given when it joins, kept while it
    /// stays. Not saved: a restarted relay numbers its participants afresh under a new epoch.
    pub(crate) number: u32,
}

/// What the database keeps of a participant: everything but its address and counters.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Saved {
    region: Option<String>,
    region_source: RegionSource,
    ice: IceBody,
    tracks: Vec<TrackBody>,
    subscribe: SubscribeBody,
    joined_at: String,
    unlatched_count: u64,
    last_unlatched_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webrtc: Option<webrtc::Saved>,
}

impl Participant {
    /// The participant as the compiler wants it.
    pub(super) fn describe<'a>(&'a self, id: &'a str, plain_legs: bool) -> route::Participant<'a> {
        route::Participant {
            id,
            slot: self.slot,
            region: self.region,
            addr: self.address,
            tracks: self.tracks.iter().map(|t| (Ssrc(t.ssrc), t.kind)).collect(),
            subscribe: match &self.subscribe {
                SubscribeBody::All(_) => None,
                SubscribeBody::Only(list) => Some(list),
            },
            counters: self.counters.clone(),
            ice: Some(Arc::new(Credentials {
                ufrag: self.ice.ufrag.as_str().into(),
                pwd: self.ice.pwd.as_str().into(),
            })),
            webrtc: self.webrtc.as_ref().map(|w| Arc::new(w.legs(plain_legs))),
            number: self.number,
            peer: None,
        }
    }

    /// The row the database keeps.
    pub(super) fn record(&self, room: &str, id: &str) -> ParticipantRecord {
        let saved = Saved {
            region: self.region.map(region_string),
            region_source: self.region_source,
            ice: self.ice.clone(),
            tracks: self.tracks.clone(),
            subscribe: self.subscribe.clone(),
            joined_at: rfc3339_millis(self.joined),
            unlatched_count: self.unlatches,
            last_unlatched_at: self.last_unlatched.map(rfc3339_millis),
            webrtc: self.webrtc.as_deref().map(Webrtc::saved),
        };
        ParticipantRecord {
            room: room.to_owned(),
            participant: id.to_owned(),
            state: serde_json::to_string(&saved).unwrap_or_default(),
        }
    }

    /// A participant back from the database: everything but an address, which it gets again
    /// from signaling or at its next STUN check.
    pub(super) fn restore(r: &ParticipantRecord, workers: usize, now: Now) -> Option<Self> {
        let s: Saved = serde_json::from_str(&r.state).ok()?;
        Some(Self {
            slot: 0,
            region: s.region.as_deref().and_then(|r| body::check_region(r).ok()),
            region_source: s.region_source,
            address: None,
            ice: s.ice,
            tracks: s.tracks,
            subscribe: s.subscribe,
            counters: counters(workers),
            joined: parse_time(&s.joined_at).unwrap_or(now.wall),
            latched_since: None,
            unlatches: s.unlatched_count,
            last_unlatched: s.last_unlatched_at.as_deref().and_then(parse_time),
            heard: 0,
            heard_at: now.mono,
            webrtc: s.webrtc.map(|w| Box::new(Webrtc::restore(w))),
            number: 0,
        })
    }

    /// Every address the participant holds: its own (or publish leg's), its subscribe leg's.
    pub(super) fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.address.into_iter().chain(
            self.webrtc
                .as_deref()
                .and_then(|w| w.subscribe.as_ref())
                .and_then(|s| s.address),
        )
    }

    /// Every relay-side ufrag the participant holds.
    pub(super) fn ufrags(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::once(self.ice.ufrag.as_str()).chain(
            self.webrtc
                .as_deref()
                .and_then(|w| w.subscribe.as_ref())
                .map(|s| s.ice.ufrag.as_str()),
        )
    }

    /// The address of one leg.
    fn leg_address(&mut self, leg: Leg) -> Option<&mut Option<SocketAddr>> {
        match leg {
            Leg::Main => Some(&mut self.address),
            Leg::Subscribe => self
                .webrtc
                .as_deref_mut()
                .and_then(|w| w.subscribe.as_mut())
                .map(|s| &mut s.address),
        }
    }

    /// Looks the region up from the address unless signaling gave one.
    fn attribute_region(&mut self, geo: RegionLookup<'_>) {
        if self.region_source == RegionSource::Signaling {
            return;
        }
        let found = self.address.and_then(|a| geo(a.ip()));
        self.region = found;
        self.region_source = if found.is_some() {
            RegionSource::Geoip
        } else {
            RegionSource::Unknown
        };
    }
}

impl Core {
    pub(super) fn put_room(
        &mut self,
        now: Now,
        room: &str,
        plain_legs: Option<bool>,
    ) -> Result<Outcome, ApiError> {
        body::check_id("room", room)?;
        if let Some(r) = self.rooms.get(room) {
            if plain_legs.is_some_and(|p| p != r.plain_legs) {
                return Err(ApiError::new(
                    Code::PlainLegsFixed,
                    format!(
                        "room {room} exists with plain_legs {}; it is set when a room is created",
                        r.plain_legs
                    ),
                ));
            }
            return Ok(outcome(200, &self.room_view(room)?));
        }
        if self.draining {
            return Err(ApiError::new(
                Code::Draining,
                "the relay is draining: it takes no new rooms; create the room on another relay",
            ));
        }
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(ApiError::new(
                Code::TooManyRooms,
                format!(
                    "the relay already has {} rooms, its limit",
                    self.limits.max_rooms
                ),
            ));
        }
        let id = self.new_room_id();
        let meta = RoomMeta {
            id,
            created: now.wall,
            snapshot: Arc::default(),
            codecs: crate::sdp::CodecTable::new(),
            plain_legs: plain_legs.unwrap_or(false),
        };
        self.set_room(room, Some(meta));
        let mut out = outcome(201, &self.room_view(room)?);
        out.events
            .push(Event::new("room_created", json!({"room": room})));
        Ok(out)
    }

    pub(super) fn delete_room(&mut self, room: &str) -> Result<Outcome, ApiError> {
        let ids: Vec<String> = self.room(room)?.participants.keys().cloned().collect();
        for id in &ids {
            self.set_participant(room, id, None);
        }
        self.set_room(room, None);
        let mut out = outcome(
            200,
            &view::RoomClosed {
                room: room.to_owned(),
                closed: true,
                participants: ids.len(),
            },
        );
        out.events.push(Event::new(
            "room_closed",
            json!({"room": room, "participants": ids}),
        ));
        Ok(out)
    }

    pub(super) fn put_participant(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        room: &str,
        id: &str,
        body: ParticipantBody,
        fresh_ice: IceBody,
    ) -> Result<Outcome, ApiError> {
        body::check_id("participant", id)?;
        let r = self.room(room)?;
        let existing = r.participants.get(id);
        if existing.is_none() && r.participants.len() >= self.limits.max_participants {
            return Err(ApiError::new(
                Code::RoomFull,
                format!(
                    "room {room} already has {} participants, its limit",
                    self.limits.max_participants
                ),
            ));
        }
        let region = body.region.as_deref().map(body::check_region).transpose()?;
        let mut address = body
            .address
            .as_deref()
            .map(body::parse_address)
            .transpose()?;
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
                body::check_ice(&ice)?;
                ice
            }
            None => existing.map_or(fresh_ice, |p| p.ice.clone()),
        };
        let subscribe = body.subscribe.unwrap_or(SubscribeBody::ALL);
        self.check_participant(room, id, address, &ice, &body.tracks, &subscribe)?;
        let mut p = Participant {
            slot: existing.map_or(0, |p| p.slot),
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
            counters: existing.map_or_else(|| counters(self.workers), |p| p.counters.clone()),
            joined: existing.map_or(now.wall, |p| p.joined),
            latched_since,
            unlatches: existing.map_or(0, |p| p.unlatches),
            last_unlatched: existing.and_then(|p| p.last_unlatched),
            heard: 0,
            heard_at: now.mono,
            webrtc: existing.and_then(|p| p.webrtc.clone()),
            number: existing.map_or(0, |p| p.number),
        };
        p.attribute_region(geo);
        let created = existing.is_none();
        let event = participant_event(room, id, &p);
        self.set_participant(room, id, Some(p));
        let p = self.participant(room, id)?;
        let mut out = outcome(
            if created { 201 } else { 200 },
            &self.participant_view(room, id, p),
        );
        out.events.push(Event::new(
            if created {
                "participant_joined"
            } else {
                "participant_changed"
            },
            event,
        ));
        Ok(out)
    }

    pub(super) fn patch_participant(
        &mut self,
        geo: RegionLookup<'_>,
        room: &str,
        id: &str,
        patch: ParticipantPatch,
    ) -> Result<Outcome, ApiError> {
        let mut p = self.participant(room, id)?.clone();
        if let Some(region) = patch.region {
            p.region = region.as_deref().map(body::check_region).transpose()?;
            p.region_source = if p.region.is_some() {
                RegionSource::Signaling
            } else {
                RegionSource::Unknown
            };
        }
        if let Some(address) = patch.address {
            p.address = address.as_deref().map(body::parse_address).transpose()?;
            p.latched_since = None;
        }
        if let Some(tracks) = patch.tracks {
            p.tracks = tracks;
        }
        if let Some(subscribe) = patch.subscribe {
            p.subscribe = subscribe;
        }
        self.check_participant(room, id, p.address, &p.ice, &p.tracks, &p.subscribe)?;
        p.attribute_region(geo);
        let event = participant_event(room, id, &p);
        self.set_participant(room, id, Some(p));
        let p = self.participant(room, id)?;
        let mut out = outcome(200, &self.participant_view(room, id, p));
        out.events.push(Event::new("participant_changed", event));
        Ok(out)
    }

    pub(super) fn delete_participant(&mut self, room: &str, id: &str) -> Result<Outcome, ApiError> {
        self.participant(room, id)?;
        self.set_participant(room, id, None);
        let mut out = outcome(
            200,
            &view::ParticipantRemoved {
                room: room.to_owned(),
                participant: id.to_owned(),
                removed: true,
            },
        );
        out.events.push(Event::new(
            "participant_left",
            json!({"room": room, "participant": id, "reason": "removed"}),
        ));
        Ok(out)
    }

    /// Binds a participant to the address of its authenticated STUN request (NAT rebinding
    /// included): media from the old address stops being accepted once this is published.
    pub(super) fn latch(&mut self, now: Now, geo: RegionLookup<'_>, latch: Latch) -> Outcome {
        let mut out = Outcome::default();
        let Some(room) = self.room_names.get(&latch.room).cloned() else {
            return out;
        };
        let id: &str = &latch.participant;
        let Some(mut p) = self
            .rooms
            .get(&room)
            .and_then(|r| r.participants.get(id))
            .cloned()
        else {
            return out;
        };
        let Some(current) = p.leg_address(latch.leg) else {
            return out;
        };
        if *current == Some(latch.addr) {
            return out;
        }
        *current = Some(latch.addr);
        // An authenticated binding wins: whoever held the address loses it (the participant's
        // other leg included).
        if let Some((r2, p2)) = self.addresses.get(&latch.addr).cloned() {
            if r2 != room || p2 != id {
                self.unlatch(now, geo, &r2, &p2, "address_taken", &mut out);
            } else {
                for other in [Leg::Main, Leg::Subscribe] {
                    if other != latch.leg
                        && let Some(a) = p.leg_address(other)
                        && *a == Some(latch.addr)
                    {
                        *a = None;
                    }
                }
            }
        }
        p.latched_since = Some(now.wall);
        p.heard_at = now.mono;
        p.attribute_region(geo);
        out.events.push(Event::new(
            "participant_latched",
            json!({
                "room": room,
                "participant": id,
                "region": p.region.map(region_string),
                "region_source": p.region_source.name(),
            }),
        ));
        self.set_participant(&room, id, Some(p));
        out
    }

    /// Drops a participant's address: the relay stops sending to it until it binds again.
    fn unlatch(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        room: &str,
        id: &str,
        reason: &str,
        out: &mut Outcome,
    ) {
        let Some(mut p) = self
            .rooms
            .get(room)
            .and_then(|r| r.participants.get(id))
            .cloned()
        else {
            return;
        };
        let subscribe = p.leg_address(Leg::Subscribe).and_then(Option::take);
        if p.address.take().is_none() && subscribe.is_none() {
            return;
        }
        p.latched_since = None;
        if reason == "timeout" {
            p.unlatches += 1;
            p.last_unlatched = Some(now.wall);
        }
        p.attribute_region(geo);
        self.set_participant(room, id, Some(p));
        out.events.push(Event::new(
            "participant_unlatched",
            json!({"room": room, "participant": id, "reason": reason}),
        ));
    }

    /// Unlatches participants not heard from (no packet, no STUN) for the latch timeout.
    pub(super) fn expire_latches(&mut self, now: Now, geo: RegionLookup<'_>, out: &mut Outcome) {
        let timeout = self.limits.latch_timeout;
        let mut silent = Vec::new();
        for (room, r) in self.rooms.iter_mut() {
            for (id, p) in r.participants.iter_mut() {
                if p.latched_since.is_none() {
                    continue;
                }
                // Reading the workers' counters is the core's only input besides its calls.
                let heard = p.counters.packets_in().sum() + p.counters.stun_ok().sum();
                if heard != p.heard {
                    p.heard = heard;
                    p.heard_at = now.mono;
                } else if now.mono.duration_since(p.heard_at) >= timeout {
                    silent.push((room.clone(), id.clone()));
                }
            }
        }
        for (room, id) in silent {
            self.unlatch(now, geo, &room, &id, "timeout", out);
        }
    }

    /// Attributes regions again (the GeoIP database changed); changes only those that moved.
    pub(super) fn reattribute(&mut self, geo: RegionLookup<'_>) -> Outcome {
        let mut moved = Vec::new();
        for (room, r) in &self.rooms {
            for (id, p) in &r.participants {
                let mut q = p.clone();
                q.attribute_region(geo);
                if q.region != p.region || q.region_source != p.region_source {
                    moved.push((room.clone(), id.clone(), q));
                }
            }
        }
        for (room, id, p) in moved {
            self.set_participant(&room, &id, Some(p));
        }
        Outcome::default()
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
            return Err(ApiError::new(
                Code::UfragInUse,
                "that ICE ufrag already belongs to another participant",
            ));
        }
        if tracks.len() > self.limits.max_tracks {
            return Err(ApiError::new(
                Code::TooManyTracks,
                format!(
                    "{} tracks given, at most {} per participant",
                    tracks.len(),
                    self.limits.max_tracks
                ),
            ));
        }
        for (i, t) in tracks.iter().enumerate() {
            if tracks[..i].iter().any(|o| o.ssrc == t.ssrc) {
                return Err(ApiError::new(
                    Code::DuplicateSsrc,
                    format!("ssrc {} is declared twice", t.ssrc),
                ));
            }
        }
        let r = self.room(room)?;
        for t in tracks {
            if let Some(other) = r.ssrc_owner(t.ssrc)
                && other != id
            {
                return Err(ApiError::new(
                    Code::SsrcInUse,
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
            return Err(ApiError::new(
                Code::AddressInUse,
                "that media address already belongs to another participant",
            ));
        }
        if let SubscribeBody::Only(list) = subscribe {
            if list.len() > self.limits.max_participants {
                return Err(ApiError::new(
                    Code::TooManySubscriptions,
                    "the subscription list is longer than a room can be",
                ));
            }
            for s in list {
                body::check_id("subscribed participant", s)?;
            }
        }
        Ok(())
    }

    pub(super) fn room(&self, room: &str) -> Result<&RoomState, ApiError> {
        body::check_id("room", room)?;
        self.rooms
            .get(room)
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no room {room}")))
    }

    pub(super) fn participant(&self, room: &str, id: &str) -> Result<&Participant, ApiError> {
        body::check_id("participant", id)?;
        self.room(room)?.participants.get(id).ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!("no participant {id} in room {room}"),
            )
        })
    }

    pub(super) fn list_rooms(&self) -> view::RoomList {
        view::RoomList {
            rooms: self
                .rooms
                .iter()
                .map(|(name, r)| view::RoomSummary {
                    room: name.clone(),
                    participants: r.participants.len(),
                })
                .collect(),
        }
    }

    pub(super) fn room_view(&self, name: &str) -> Result<view::Room, ApiError> {
        let r = self.room(name)?;
        let (mut packets, mut bytes) = (0, 0);
        for p in r.participants.values() {
            packets += p.counters.packets_in().sum();
            bytes += p.counters.bytes_in().sum();
        }
        Ok(view::Room {
            room: name.to_owned(),
            created_at: rfc3339(r.created),
            plain_legs: r.plain_legs,
            codecs: webrtc::codec_views(&r.codecs),
            participants: r
                .participants
                .iter()
                .map(|(id, p)| self.participant_view(name, id, p))
                .collect(),
            counters: view::RoomCounters {
                packets_in: packets,
                bytes_in: bytes,
            },
        })
    }

    pub(super) fn participant_view(
        &self,
        room: &str,
        id: &str,
        p: &Participant,
    ) -> view::Participant {
        view::Participant {
            room: room.to_owned(),
            participant: id.to_owned(),
            media_address: self.media_address.to_string(),
            ice: p.ice.clone(),
            region: p.region.map(region_string),
            region_source: p.region_source.name().to_owned(),
            address_set: p.addresses().next().is_some(),
            latched: p.latched_since.is_some(),
            latched_since: p.latched_since.map(rfc3339),
            unlatched_count: p.unlatches,
            last_unlatched_at: p.last_unlatched.map(rfc3339),
            joined_at: rfc3339(p.joined),
            tracks: p.tracks.clone(),
            subscribe: p.subscribe.clone(),
            transport: if p.webrtc.is_some() { "webrtc" } else { "rtp" }.to_owned(),
            dtls: p.webrtc.as_deref().map(|w| w.dtls().name().to_owned()),
            srtp_profile: p
                .webrtc
                .as_deref()
                .and_then(Webrtc::profile)
                .map(str::to_owned),
            legs: p.webrtc.as_deref().map(|w| w.view(p.address.is_some())),
            counters: view::ParticipantCounters {
                packets_in: p.counters.packets_in().sum(),
                bytes_in: p.counters.bytes_in().sum(),
                packets_dropped: p.counters.packets_dropped().sum(),
            },
        }
    }
}

/// The body of participant events: ids and region, never an address.
fn participant_event(room: &str, id: &str, p: &Participant) -> serde_json::Value {
    json!({
        "room": room,
        "participant": id,
        "region": p.region.map(region_string),
        "region_source": p.region_source.name(),
        "tracks": p.tracks,
    })
}

fn region_string(r: [u8; 2]) -> String {
    String::from_utf8_lossy(&r).into_owned()
}
