//! WebRTC participants in the core: the publish and subscribe exchanges, their legs, the room's
//! codec table, and `subscription_changed`.
//!
//! A browser publishes on one peer connection and subscribes on another, under one participant
//! (`route::Legs` says how the workers see that). The **publish leg** uses the participant's own
//! ICE credentials and address (`Participant::ice`, `Participant::address`), so everything that
//! knows plain participants knows it; the **subscribe leg** has credentials and an address of its
//! own, kept here and indexed by the core beside the others.
//!
//! Calling order (the HTTP handlers through the control thread):
//! 1. `Command::WebrtcPublish`: the offer is parsed and answered with `sdp::answer_publish`
//!    against the room's codec table; the participant is created or replaced as `PUT` does
//!    (its tracks from the offer's SSRCs, RTX included), the room keeps the table the answer
//!    used, and the leg waits for DTLS with the offer's fingerprints.
//! 2. `Command::WebrtcOffer`: the relay offers what the participant may receive: one section
//!    per track of every publisher it subscribes to (rules never show: blocked media simply
//!    does not arrive). Sections keep their place across re-offers (JSEP); a track that went
//!    away is stopped (port 0).
//! 3. `Command::WebrtcAnswer`: the client's answer to the last offer gives the subscribe leg's
//!    remote ICE and fingerprints.
//!
//! DTLS state and the SRTP profile come from the DTLS thread (`Command::DtlsState`). Nothing
//! here is per packet.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::fleet::RemoteParticipant;
use super::{Core, Now, Outcome, RegionLookup, Undo};
use crate::control::body::{
    IceBody, ParticipantBody, SubscribeBody, TrackBody, WebrtcPublishBody, WebrtcSubscribeBody,
};
use crate::control::error::{ApiError, Code};
use crate::control::event::Event;
use crate::control::view;
use crate::route::{self, Credentials, Leg, MediaKind};
use crate::sdp::{self, Codec, CodecTable, Entry, ExchangeError, Fingerprint, IceCredentials};

/// What the relay says about itself in every description: set once at start-up.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    /// The DTLS certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// The media addresses, one host candidate each.
    pub addresses: Vec<SocketAddr>,
}

/// Randomness a WebRTC command needs (the core draws none).
#[derive(Clone, Debug)]
pub struct Fresh {
    /// Relay-side ICE credentials for a leg that has none yet.
    pub ice: IceBody,
    /// A session id (`o=`) for a leg that has none yet.
    pub session_id: u64,
}

/// A leg's DTLS state, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DtlsState {
    /// Waiting for the client's first DTLS datagram.
    New,
    /// Handshaking.
    Connecting,
    /// Keys out.
    Connected,
    /// Failed (see the leg's `dtls_failure`); the client must run the exchange again.
    Failed,
}

impl DtlsState {
    /// The name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Failed => "failed",
        }
    }
}

/// What the DTLS thread says about one leg.
#[derive(Clone, Debug)]
pub struct DtlsReport {
    /// The room.
    pub room: route::RoomId,
    /// The participant.
    pub participant: Arc<str>,
    /// The leg.
    pub leg: Leg,
    /// The leg's session id (`o=`): a report about an earlier session is ignored.
    pub session: u64,
    /// Its state now.
    pub state: DtlsState,
    /// The SRTP profile, once connected.
    pub profile: Option<&'static str>,
    /// Why it failed.
    pub failure: Option<String>,
    /// The leg's SRTP keys, when connected: they go to the workers with the leg, never to the
    /// database or a log.
    pub keys: Option<Arc<route::SrtpLeg>>,
}

/// One leg's session: what the client said about itself and how far DTLS got.
#[derive(Clone, Debug)]
pub(crate) struct LegState {
    /// The client's ICE ufrag and certificate fingerprints, from its offer or answer.
    pub(crate) remote: Option<sdp::Remote>,
    pub(crate) dtls: DtlsState,
    pub(crate) profile: Option<&'static str>,
    pub(crate) failure: Option<String>,
    /// SRTP keys once connected (never saved).
    keys: Option<Arc<route::SrtpLeg>>,
    /// `o=` of the relay's descriptions on this leg: session id and the last version.
    session: (u64, u64),
}

/// The subscribe leg: its own ICE credentials and address, and the sections offered so far.
#[derive(Clone, Debug)]
pub(crate) struct SubscribeLeg {
    pub(crate) ice: IceBody,
    pub(crate) address: Option<SocketAddr>,
    pub(crate) state: LegState,
    /// The sections in the order offered (JSEP keeps them in place).
    slots: Vec<sdp::Slot>,
    next_mid: u32,
    /// The last offer, until the client answers it.
    offer: Option<sdp::Session>,
}

/// A WebRTC participant's legs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Webrtc {
    /// The publish leg (its ICE and address are the participant's own).
    pub(crate) publish: Option<LegState>,
    pub(crate) subscribe: Option<SubscribeLeg>,
    /// The tracks of the last publish offer, with what subscribe offers repeat (cname, msid).
    published: Vec<sdp::Track>,
}

/// What the database keeps of a WebRTC participant: that it is one. Legs, DTLS sessions and
/// keys are never kept: after a restart the client runs the exchanges again.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Saved {}

/// What the database keeps of a room's own settings.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedRoom {
    #[serde(default)]
    codecs: Vec<SavedCodec>,
    #[serde(default)]
    plain_legs: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedCodec {
    codec: String,
    pt: u8,
    rtx: Option<u8>,
}

/// The JSON the database keeps of a room.
pub(super) fn room_state(codecs: &CodecTable, plain_legs: bool) -> String {
    let saved = SavedRoom {
        codecs: codecs
            .entries()
            .iter()
            .map(|e| SavedCodec {
                codec: e.codec.name().to_owned(),
                pt: e.pt,
                rtx: e.rtx,
            })
            .collect(),
        plain_legs,
    };
    serde_json::to_string(&saved).unwrap_or_default()
}

/// A room's settings back from the database; `None` if they do not parse.
pub(super) fn restore_room(state: &str) -> Option<(CodecTable, bool)> {
    let saved: SavedRoom = serde_json::from_str(state).ok()?;
    let entries = saved
        .codecs
        .into_iter()
        .map(|c| {
            Some(Entry {
                codec: Codec::from_name(&c.codec)?,
                pt: c.pt,
                rtx: c.rtx,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((CodecTable::from_entries(entries)?, saved.plain_legs))
}

/// A room's codec table as the API shows it.
pub(super) fn codec_views(codecs: &CodecTable) -> Vec<view::Codec> {
    codecs
        .entries()
        .iter()
        .map(|e| view::Codec {
            codec: e.codec.name().to_owned(),
            pt: e.pt,
            rtx: e.rtx,
        })
        .collect()
}

impl LegState {
    fn new(session_id: u64) -> Self {
        Self {
            remote: None,
            dtls: DtlsState::New,
            profile: None,
            failure: None,
            keys: None,
            session: (session_id, 0),
        }
    }

    /// The session as the workers see it.
    fn session(&self) -> route::Session {
        route::Session {
            id: self.session.0,
            fingerprints: self
                .remote
                .as_ref()
                .map(|r| Arc::from(r.fingerprints.as_slice())),
            srtp: self.keys.clone(),
        }
    }

    /// The next `o=` version of this leg's session.
    fn next_session(&mut self) -> (u64, u64) {
        self.session.1 += 1;
        self.session
    }

    fn view(&self, leg: Leg, latched: bool) -> view::Leg {
        view::Leg {
            leg: leg.name().to_owned(),
            latched,
            dtls: self.dtls.name().to_owned(),
            srtp_profile: self.profile.map(str::to_owned),
            dtls_failure: self.failure.clone(),
        }
    }
}

impl Webrtc {
    /// The legs as the workers see them.
    pub(super) fn legs(&self, plain_legs: bool) -> route::Legs {
        let sub = self.subscribe.as_ref();
        let mut legs = route::Legs::new(
            self.publish.as_ref().map(LegState::session),
            sub.map(|s| s.state.session()),
            sub.map(|s| {
                Arc::new(Credentials {
                    ufrag: s.ice.ufrag.as_str().into(),
                    pwd: s.ice.pwd.as_str().into(),
                })
            }),
            sub.and_then(|s| s.address),
        );
        legs.plain_legs = plain_legs;
        legs
    }

    pub(super) fn saved(&self) -> Saved {
        Saved {}
    }

    /// A WebRTC participant back from the database: no leg survives a restart (DTLS sessions
    /// are never kept); the client runs the exchanges again.
    pub(super) fn restore(_: Saved) -> Self {
        Self::default()
    }

    fn states(&self) -> impl Iterator<Item = &LegState> {
        self.publish
            .iter()
            .chain(self.subscribe.as_ref().map(|s| &s.state))
    }

    /// The state over all legs: failed if any failed, connected if all are.
    pub(super) fn dtls(&self) -> DtlsState {
        let mut states = self.states().map(|s| s.dtls).peekable();
        if states.peek().is_none() {
            return DtlsState::New;
        }
        let all: BTreeSet<DtlsState> = states.collect();
        if all.contains(&DtlsState::Failed) {
            DtlsState::Failed
        } else if all.len() == 1 {
            *all.first().unwrap_or(&DtlsState::New)
        } else {
            DtlsState::Connecting
        }
    }

    /// The SRTP profile of the first connected leg.
    pub(super) fn profile(&self) -> Option<&'static str> {
        self.states().find_map(|s| s.profile)
    }

    pub(super) fn view(&self, publish_latched: bool) -> Vec<view::Leg> {
        let mut legs = Vec::new();
        if let Some(p) = &self.publish {
            legs.push(p.view(Leg::Main, publish_latched));
        }
        if let Some(s) = &self.subscribe {
            legs.push(s.state.view(Leg::Subscribe, s.address.is_some()));
        }
        legs
    }

    /// The leg's state, if it has that leg.
    pub(super) fn leg_mut(&mut self, leg: Leg) -> Option<&mut LegState> {
        match leg {
            Leg::Main => self.publish.as_mut(),
            Leg::Subscribe => self.subscribe.as_mut().map(|s| &mut s.state),
        }
    }
}

/// The API error for a refused exchange.
fn exchange_error(e: ExchangeError) -> ApiError {
    match e {
        ExchangeError::Invalid(p) => ApiError::new(Code::InvalidSdp, format!("invalid SDP: {p}")),
        ExchangeError::CodecMismatch(m) => {
            ApiError::new(Code::CodecMismatch, format!("codec mismatch: {m}"))
        }
    }
}

/// A new session handle derived from the old one (the answer carries no randomness): a
/// SplitMix64 step, kept below 2^63 as SDP session ids are.
fn fresh_session(old: u64) -> u64 {
    let mut z = old.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) >> 1
}

fn parse(text: &str) -> Result<sdp::Session, ApiError> {
    sdp::parse(text).map_err(|e| exchange_error(ExchangeError::Invalid(e)))
}

fn ice_of(ice: &IceBody) -> IceCredentials {
    IceCredentials {
        ufrag: ice.ufrag.clone(),
        pwd: ice.pwd.clone(),
    }
}

fn route_kind(kind: &sdp::MediaKind) -> Option<MediaKind> {
    match kind {
        sdp::MediaKind::Audio => Some(MediaKind::Audio),
        sdp::MediaKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

fn sdp_kind(kind: MediaKind) -> sdp::MediaKind {
    match kind {
        MediaKind::Audio => sdp::MediaKind::Audio,
        MediaKind::Video => sdp::MediaKind::Video,
    }
}

impl Core {
    /// Sets the relay's certificate fingerprint; WebRTC calls are refused until it is set.
    pub fn set_identity(&mut self, identity: LocalIdentity) {
        self.identity = Some(identity);
    }

    fn local(&self, ice: &IceBody, session: (u64, u64)) -> Result<sdp::Local, ApiError> {
        let id = self
            .identity
            .as_ref()
            .ok_or_else(|| ApiError::new(Code::Internal, "the relay has no DTLS certificate"))?;
        Ok(sdp::Local {
            ice: ice_of(ice),
            fingerprint: id.fingerprint.clone(),
            addresses: id.addresses.clone(),
            session_id: session.0,
            session_version: session.1,
        })
    }

    /// `POST .../webrtc/publish`.
    pub(super) fn webrtc_publish(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        room: &str,
        id: &str,
        body: WebrtcPublishBody,
        fresh: Fresh,
    ) -> Result<Outcome, ApiError> {
        crate::control::body::check_id("participant", id)?;
        let offer = parse(&body.sdp)?;
        let r = self.room(room)?;
        let existing = r.participants.get(id);
        let ice = existing.map_or_else(|| fresh.ice.clone(), |p| p.ice.clone());
        let mut leg = existing
            .and_then(|p| p.webrtc.as_deref())
            .and_then(|w| w.publish.clone())
            .unwrap_or_else(|| LegState::new(fresh.session_id));
        let mut local = self.local(&ice, leg.next_session())?;
        let mut publish = sdp::answer_publish(&offer, &r.codecs, &local).map_err(exchange_error)?;
        if leg.remote.as_ref().is_some_and(|r| *r != publish.remote) {
            // Another peer connection (or an ICE restart): a new session, DTLS from the start.
            leg = LegState::new(fresh.session_id);
            local = self.local(&ice, leg.next_session())?;
            publish = sdp::answer_publish(&offer, &r.codecs, &local).map_err(exchange_error)?;
        }
        let mut tracks = Vec::new();
        for t in &publish.tracks {
            let Some(kind) = route_kind(&t.kind) else {
                continue;
            };
            for ssrc in std::iter::once(t.ssrc).chain(t.rtx_ssrc) {
                tracks.push(TrackBody { ssrc, kind });
            }
        }
        // Signaling's region and subscription stay unless the body gives new ones.
        let region = body.region.or_else(|| {
            existing
                .filter(|p| p.region_source == super::RegionSource::Signaling)
                .and_then(|p| p.region)
                .map(|r| String::from_utf8_lossy(&r).into_owned())
        });
        let subscribe = body
            .subscribe
            .or_else(|| existing.map(|p| p.subscribe.clone()));
        let codecs_changed = r.codecs != publish.table;
        let put = ParticipantBody {
            region,
            address: None,
            ice: Some(ice),
            tracks,
            subscribe,
        };
        let mut out = self.put_participant(now, geo, room, id, put, fresh.ice)?;
        let mut p = self.participant(room, id)?.clone();
        leg.remote = Some(publish.remote);
        let w = p.webrtc.get_or_insert_default();
        w.publish = Some(leg);
        w.published = publish.tracks;
        self.set_participant(room, id, Some(p));
        if codecs_changed {
            let mut meta = self.room(room)?.meta();
            meta.codecs = publish.table;
            self.set_room(room, Some(meta));
        }
        out.reply = Some((200, json!({"sdp": sdp::write(&publish.answer)})));
        Ok(out)
    }

    /// `POST .../webrtc/subscribe`: the relay's offer of what the participant may receive.
    pub(super) fn webrtc_offer(
        &mut self,
        now: Now,
        geo: RegionLookup<'_>,
        room: &str,
        id: &str,
        body: WebrtcSubscribeBody,
        fresh: Fresh,
    ) -> Result<Outcome, ApiError> {
        let mut out = Outcome::default();
        if !self.room(room)?.participants.contains_key(id) {
            let put = ParticipantBody {
                region: body.region,
                subscribe: body.subscribe,
                ..ParticipantBody::default()
            };
            out = self.put_participant(now, geo, room, id, put, fresh.ice.clone())?;
        } else if body.region.is_some() || body.subscribe.is_some() {
            return Err(ApiError::new(
                Code::InvalidJson,
                "region and subscribe are taken only when this call creates the participant; \
                 change them with PATCH",
            ));
        }
        let mut p = self.participant(room, id)?.clone();
        let w = p.webrtc.get_or_insert_default();
        let sub = w.subscribe.get_or_insert_with(|| SubscribeLeg {
            ice: fresh.ice.clone(),
            address: None,
            state: LegState::new(fresh.session_id),
            slots: Vec::new(),
            next_mid: 0,
            offer: None,
        });
        if let Some((r2, p2)) = self.ufrags.get(&sub.ice.ufrag)
            && (r2 != room || p2 != id)
        {
            return Err(ApiError::new(
                Code::UfragInUse,
                "the subscribe leg's ICE ufrag already belongs to another participant; retry",
            ));
        }
        let r = self.room(room)?;
        let tracks = self.receivable(room, id, &p.subscribe)?;
        // Sections keep their place; a track gone is stopped; new tracks come last.
        let mut slots: Vec<sdp::Slot> = sub
            .slots
            .iter()
            .map(|s| match s {
                sdp::Slot::Track { mid, track } if tracks.iter().any(|t| t.ssrc == track.ssrc) => {
                    s.clone()
                }
                sdp::Slot::Track { mid, track } => sdp::Slot::Stopped {
                    mid: mid.clone(),
                    kind: track.kind.clone(),
                },
                stopped => stopped.clone(),
            })
            .collect();
        for t in tracks {
            let offered = slots
                .iter()
                .any(|s| matches!(s, sdp::Slot::Track { track, .. } if track.ssrc == t.ssrc));
            if !offered {
                slots.push(sdp::Slot::Track {
                    mid: sub.next_mid.to_string(),
                    track: t,
                });
                sub.next_mid += 1;
            }
        }
        if !slots.iter().any(|s| matches!(s, sdp::Slot::Track { .. })) {
            return Err(ApiError::new(
                Code::NothingToReceive,
                format!(
                    "participant {id} may receive no track in room {room} yet; wait for \
                     subscription_changed"
                ),
            ));
        }
        let session = sub.state.next_session();
        let local = self.local(&sub.ice, session)?;
        let offer = sdp::offer_subscribe(&slots, &r.codecs, &local).map_err(exchange_error)?;
        sub.slots = slots;
        sub.offer = Some(offer.clone());
        self.set_participant(room, id, Some(p));
        out.reply = Some((200, json!({"sdp": sdp::write(&offer)})));
        Ok(out)
    }

    /// `PUT .../webrtc/subscribe`: the client's answer to the last subscribe offer.
    pub(super) fn webrtc_answer(
        &mut self,
        room: &str,
        id: &str,
        text: &str,
    ) -> Result<Outcome, ApiError> {
        let answer = parse(text)?;
        let mut p = self.participant(room, id)?.clone();
        let no_offer = || {
            ApiError::new(
                Code::NoOffer,
                format!("participant {id} has no subscribe offer to answer: POST one first"),
            )
        };
        let sub = p
            .webrtc
            .as_deref_mut()
            .and_then(|w| w.subscribe.as_mut())
            .ok_or_else(no_offer)?;
        let offer = sub.offer.as_ref().ok_or_else(no_offer)?;
        let read = sdp::read_subscribe_answer(&answer, offer).map_err(exchange_error)?;
        if sub.state.remote.as_ref().is_some_and(|r| *r != read.remote) {
            // Another peer connection answers: a new session, DTLS from the start.
            let version = sub.state.session.1;
            sub.state = LegState::new(fresh_session(sub.state.session.0));
            sub.state.session.1 = version;
        }
        let fingerprints = (sub.state.session.0, read.remote.fingerprints.clone());
        sub.state.remote = Some(read.remote);
        sub.offer = None;
        self.set_participant(room, id, Some(p));
        Ok(Outcome {
            reply: Some((204, serde_json::Value::Null)),
            fingerprints: vec![fingerprints],
            ..Outcome::default()
        })
    }

    /// The tracks participant `id` may receive, by publisher id then SSRC. Rules play no part:
    /// blocked media simply does not arrive. Tracks of a kind the room has no codec for yet are
    /// left out (a browser could not decode them). In fleet mode the publishers on other relays
    /// count too (their media crosses the trunk, WebRTC or not); their tracks are offered as a
    /// plain publisher's are (this relay does not have their offer's stream ids).
    fn receivable(
        &self,
        room: &str,
        id: &str,
        subscribe: &SubscribeBody,
    ) -> Result<Vec<sdp::Track>, ApiError> {
        let r = self.room(room)?;
        let mut out = Vec::new();
        let publishers: Vec<&str> = match subscribe {
            SubscribeBody::All(_) => r
                .participants
                .keys()
                .chain(r.remote.keys())
                .map(String::as_str)
                .collect(),
            SubscribeBody::Only(list) => list.iter().map(String::as_str).collect(),
        };
        for pid in publishers {
            if pid == id {
                continue;
            }
            let local = r.participants.get(pid);
            let Some(tracks) = local
                .map(|q| &q.tracks[..])
                .or_else(|| r.remote_tracks(pid))
            else {
                continue;
            };
            let published = local
                .and_then(|q| q.webrtc.as_deref())
                .map_or(&[][..], |w| &w.published[..]);
            for t in tracks {
                if r.codecs.of_kind(&sdp_kind(t.kind)).is_empty() {
                    continue;
                }
                if let Some(track) = published.iter().find(|x| x.ssrc == t.ssrc) {
                    out.push(track.clone());
                } else if !published.iter().any(|x| x.rtx_ssrc == Some(t.ssrc)) {
                    // A plain publisher: its participant id names the stream.
                    out.push(sdp::Track {
                        mid: String::new(),
                        kind: sdp_kind(t.kind),
                        ssrc: t.ssrc,
                        rtx_ssrc: None,
                        cname: pid.to_owned(),
                        msid: sdp::Msid {
                            stream: pid.to_owned(),
                            track: Some(format!("{pid}-{}", t.ssrc)),
                        },
                    });
                }
            }
        }
        Ok(out)
    }

    /// The DTLS thread reports a leg's state: recorded for the API (and, with keys, published
    /// to the workers with the leg). A leg that is gone or replaced since is ignored.
    pub(super) fn dtls_report(&mut self, report: DtlsReport) -> Outcome {
        let out = Outcome::default();
        let Some(room) = self.room_names.get(&report.room).cloned() else {
            return out;
        };
        let Some(mut p) = self
            .rooms
            .get(&room)
            .and_then(|r| r.participants.get(&*report.participant))
            .cloned()
        else {
            return out;
        };
        let Some(leg) = p.webrtc.as_deref_mut().and_then(|w| w.leg_mut(report.leg)) else {
            return out;
        };
        if leg.session.0 != report.session {
            return out;
        }
        leg.dtls = report.state;
        leg.profile = report.profile;
        leg.failure = report.failure;
        if report.keys.is_some() || report.state == DtlsState::Failed {
            leg.keys = report.keys;
        }
        self.set_participant(&room, &report.participant, Some(p));
        out
    }

    /// `subscription_changed` for each WebRTC participant whose receivable tracks the pending
    /// change altered: a publisher it subscribes to (here, or on another relay of the fleet)
    /// joined, left or changed tracks, or its own subscription changed. Costs the change times
    /// the room's WebRTC participants.
    pub(super) fn subscription_events(&self) -> Vec<Event> {
        let mut told: BTreeSet<(String, String)> = BTreeSet::new();
        let mut seen = BTreeSet::new();
        // The WebRTC participants of `r` with a subscribe leg that listen to publisher `id`.
        let listeners = |r: &super::rooms::RoomState,
                         room: &str,
                         id: &str,
                         told: &mut BTreeSet<_>| {
            for w in &r.webrtc {
                let Some(q) = r.participants.get(w) else {
                    continue;
                };
                let listens = match &q.subscribe {
                    SubscribeBody::All(_) => true,
                    SubscribeBody::Only(list) => list.iter().any(|x| x == id),
                };
                if w != id && listens && q.webrtc.as_ref().is_some_and(|x| x.subscribe.is_some()) {
                    told.insert((room.to_owned(), w.clone()));
                }
            }
        };
        for undo in &self.journal {
            if let Undo::Remote(room, id, old, _) = undo {
                if !seen.insert((room.clone(), id.clone())) {
                    continue;
                }
                let now = self.remote.get(&(room.clone(), id.clone()));
                let tracks = |p: Option<&RemoteParticipant>| p.map(|p| p.tracks.clone());
                if let Some(r) = self.rooms.get(room)
                    && tracks(old.as_ref()) != tracks(now)
                {
                    listeners(r, room, id, &mut told);
                }
                continue;
            }
            let Undo::Participant(room, id, old) = undo else {
                continue;
            };
            if !seen.insert((room.clone(), id.clone())) {
                continue;
            }
            let Some(r) = self.rooms.get(room) else {
                continue;
            };
            let now = r.participants.get(id);
            let tracks = |p: Option<&super::Participant>| p.map(|p| p.tracks.clone());
            if tracks(old.as_ref()) != tracks(now) {
                listeners(r, room, id, &mut told);
            }
            if let (Some(o), Some(n)) = (old, now)
                && o.subscribe != n.subscribe
                && n.webrtc.as_ref().is_some_and(|x| x.subscribe.is_some())
            {
                told.insert((room.clone(), id.clone()));
            }
        }
        told.into_iter()
            .map(|(room, participant)| {
                Event::new(
                    "subscription_changed",
                    json!({"room": room, "participant": participant}),
                )
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "webrtc_tests.rs"]
mod tests;
