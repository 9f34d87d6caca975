//! What a run does: the scenario (from a TOML file or flags) and the plan made from it, with
//! every room, participant, stream and scheduled change.

use std::collections::HashMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::model::{Direction, Media, Subscribe};
use crate::profile::{Kind, Profile, Rng};

/// Where the clients' media goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The relay, driven through its control API.
    Relay,
    /// rtpengine, driven through its ng control protocol: rooms of two are calls, larger
    /// rooms are one publisher and subscribers.
    Rtpengine,
    /// No relay: each sender sends to every receiver itself (the floor to compare with).
    Direct,
}

/// How the relay learns a client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// Latched from a STUN Binding request.
    Stun,
    /// Registered through the API (`"address"` in the participant body).
    Fixed,
}

/// Which media a participant sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Send {
    /// Audio only.
    Audio,
    /// Video only.
    Video,
    /// Audio and video.
    Mixed,
    /// Nothing (a listener).
    None,
}

/// A kind of room; rooms are drawn from the classes by weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomClass {
    /// Relative share of rooms of this class.
    pub weight: f64,
    /// Participants per room, smallest and largest.
    pub size: [u32; 2],
    /// What each sender sends.
    pub profile: Send,
    /// Share of the participants that send (the rest only listen); at least one sends.
    pub senders: f64,
    /// Each participant subscribes to at most this many senders, drawn at random (absent: all).
    pub subscribe_max: Option<u32>,
    /// The first participant also shares its screen.
    pub screen_share: bool,
    /// Video frames per second (15 or 30 are typical).
    pub video_fps: u32,
    /// Video target bitrate, bit/s.
    pub video_bitrate: u64,
    /// Audio silence suppression (DTX).
    pub dtx: bool,
    /// Audio packet length in bytes of RTP, smallest and largest (absent: 60 to 160).
    pub audio_len: Option<[u16; 2]>,
}

impl Default for RoomClass {
    fn default() -> Self {
        Self {
            weight: 1.0,
            size: [2, 2],
            profile: Send::Audio,
            senders: 1.0,
            subscribe_max: None,
            screen_share: false,
            video_fps: 30,
            video_bitrate: 1_000_000,
            dtx: false,
            audio_len: None,
        }
    }
}

/// Changes made during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Churn {
    /// Participants leaving (and coming back `rejoin_after` s later) per minute.
    pub leaves_per_min: f64,
    /// Seconds a leaver stays away.
    pub rejoin_after: f64,
    /// Drop rules added per minute (each on one random participant).
    pub rules_per_min: f64,
    /// Seconds a rule stays before it is lifted.
    pub rule_hold: f64,
}

/// A webinar: one room, one publisher sending audio and video, and listeners who join while
/// it sends, in bursts, through the control API (relay only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webinar {
    /// Listeners: they send nothing and receive the publisher's audio and video.
    pub listeners: u32,
    /// Joins per second over the bursts.
    pub join_rate: f64,
    /// Listeners per burst: a burst of `burst` joins starts every `burst / join_rate` seconds.
    pub burst: u32,
    /// API connections that make a burst's joins at once, as a signaling server's workers do.
    pub connections: usize,
    /// Listeners whose copies loadgen reads (spread over the join order); the others are
    /// registered by address and never read, so their copies cost the relay its full send path
    /// and loadgen nothing (the kernel drops them at the full socket). 0: read every listener.
    pub read: u32,
    /// Seconds after the start of sending at which the first burst starts.
    pub first_burst: f64,
}

impl Default for Webinar {
    fn default() -> Self {
        Self {
            listeners: 100,
            join_rate: 1_000.0,
            burst: 100,
            connections: 8,
            read: 0,
            first_burst: 0.2,
        }
    }
}

impl Webinar {
    /// Nanoseconds between the starts of two bursts.
    pub fn burst_interval_ns(&self) -> u64 {
        (f64::from(self.burst.max(1)) / self.join_rate * 1e9) as u64
    }

    /// Whether listener `i` (0-based, in join order) is read by loadgen.
    pub fn reads(&self, i: u32) -> bool {
        let read = if self.read == 0 {
            self.listeners
        } else {
            self.read.min(self.listeners)
        };
        // Spread evenly over the join order: early, middle and late joiners alike.
        u64::from(i) * u64::from(read) / u64::from(self.listeners.max(1))
            != (u64::from(i) + 1) * u64::from(read) / u64::from(self.listeners.max(1))
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Where the media goes.
    pub target: Target,
    /// Control address, `HOST:PORT` (relay API or rtpengine ng). Against a fleet of relays, one
    /// relay API address each, separated by commas: participants are spread over them
    /// ([`Scenario::controls`]).
    pub control: String,
    /// Network namespaces (`/var/run/netns/NAME`), one per control address: each participant's
    /// socket is made in its relay's namespace, and that relay's API is called from there.
    /// Empty: every socket in loadgen's own namespace.
    pub netns: Vec<String>,
    /// Bearer token for the relay API.
    pub token: Option<String>,
    /// How the relay learns client addresses.
    pub addressing: Addressing,
    /// Seconds of sending.
    pub duration: f64,
    /// Seconds over which the participants join at the start.
    pub ramp_up: f64,
    /// Milliseconds to wait for packets in flight after the last send.
    pub drain_ms: u64,
    /// Milliseconds before each control change during which packets may go either way.
    pub grace_ms: u64,
    /// Seed for every random choice.
    pub seed: u64,
    /// Client threads.
    pub threads: usize,
    /// Client threads poll without ever sleeping: no receiver needs waking, so latency and the
    /// relay's send cost leave out the wake-up of an idle receiver (one core per thread).
    pub spin: bool,
    /// At most this many packets are sent in all.
    pub max_packets: u64,
    /// Total packets per second to offer, all streams together (scales every profile).
    pub rate: Option<f64>,
    /// Packets per second per stream (overrides the profiles' own rates).
    pub stream_rate: Option<f64>,
    /// Number of rooms.
    pub rooms: u32,
    /// Room classes.
    pub room: Vec<RoomClass>,
    /// Changes during the run.
    pub churn: Churn,
    /// A webinar instead of `rooms` × `room` classes: one room whose publisher sends audio and
    /// video (with the first room class's video and audio settings) while listeners join in
    /// bursts.
    pub webinar: Option<Webinar>,
    /// Every participant is a WebRTC leg (relay only, `loadgen::webrtc`): a sender runs the
    /// publish exchange and seals its packets with SRTP, a receiver runs the subscribe exchange
    /// and opens what it gets; ICE with USE-CANDIDATE and a DTLS handshake each. A participant
    /// sends or receives, not both (one leg each).
    pub webrtc: bool,
    /// The last `unread` participants of each room (who must not send) are registered, and for
    /// WebRTC connected, but never read: sinks, as many receivers as the relay serves cost
    /// loadgen nothing.
    pub unread: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            target: Target::Relay,
            control: "127.0.0.1:7780".into(),
            netns: Vec::new(),
            token: None,
            addressing: Addressing::Stun,
            duration: 10.0,
            ramp_up: 0.0,
            drain_ms: 500,
            grace_ms: 50,
            seed: 1,
            threads: 1,
            spin: false,
            max_packets: 200_000_000,
            rate: None,
            stream_rate: None,
            rooms: 1,
            room: vec![RoomClass::default()],
            churn: Churn::default(),
            webinar: None,
            webrtc: false,
            unread: 0,
        }
    }
}

impl Scenario {
    /// Reads a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Rooms × participants × profile, as the flags give them.
    pub fn uniform(rooms: u32, participants: u32, profile: Send) -> Self {
        Self {
            rooms,
            room: vec![RoomClass {
                size: [participants, participants],
                profile,
                ..RoomClass::default()
            }],
            ..Self::default()
        }
    }

    /// The control addresses: one, or one per relay of a fleet (`control` split at commas).
    pub fn controls(&self) -> Vec<&str> {
        self.control.split(',').map(str::trim).collect()
    }

    /// Relays the participants are spread over: one per control address against the relay,
    /// else 1.
    pub fn relays(&self) -> u32 {
        match self.target {
            Target::Relay => self.controls().len() as u32,
            _ => 1,
        }
    }

    /// Multi-relay mode: several relays of a fleet, or clients in a network namespace.
    pub fn fleet(&self) -> bool {
        self.relays() > 1 || !self.netns.is_empty()
    }

    /// Checks the scenario before anything is set up.
    pub fn validate(&self) -> Result<()> {
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_S) {
            bail!("duration must be between 0 and {MAX_DURATION_S} seconds");
        }
        if self.ramp_up < 0.0 || self.ramp_up >= self.duration {
            bail!("ramp_up must be shorter than the duration");
        }
        if self.room.is_empty() || self.rooms == 0 {
            bail!("a scenario needs at least one room");
        }
        for c in &self.room {
            if c.size[0] == 0 || c.size[0] > c.size[1] || c.weight < 0.0 {
                bail!("room class sizes must be 1 <= min <= max, weights >= 0");
            }
        }
        if self.room.iter().map(|c| c.weight).sum::<f64>() <= 0.0 {
            bail!("room class weights must not all be zero");
        }
        if self.threads == 0 || self.threads > 64 {
            bail!("threads must be between 1 and 64");
        }
        let churn = self.churn.leaves_per_min > 0.0 || self.churn.rules_per_min > 0.0;
        for c in &self.room {
            if let Some([lo, hi]) = c.audio_len
                && (usize::from(lo) < crate::rtp::MIN_LEN
                    || lo > hi
                    || usize::from(hi) > crate::rtp::MAX_LEN)
            {
                bail!(
                    "audio_len must be {} <= min <= max <= {} bytes",
                    crate::rtp::MIN_LEN,
                    crate::rtp::MAX_LEN
                );
            }
        }
        if let Some(w) = &self.webinar {
            if self.target != Target::Relay {
                bail!("a webinar joins listeners through the relay's control API: target relay");
            }
            if w.listeners == 0 || w.burst == 0 || w.join_rate.is_nan() || w.join_rate <= 0.0 {
                bail!("a webinar needs listeners >= 1, burst >= 1 and join_rate > 0");
            }
            if w.connections == 0 || w.connections > 256 {
                bail!("webinar connections must be between 1 and 256");
            }
            if w.first_burst.is_nan() || w.first_burst < 0.0 || w.first_burst >= self.duration {
                bail!("the first burst must start within the duration");
            }
            if churn || self.ramp_up > 0.0 {
                bail!("a webinar's listeners join in bursts: no churn or ramp-up with it");
            }
        }
        if self.webrtc
            && (self.target != Target::Relay
                || self.webinar.is_some()
                || churn
                || self.ramp_up > 0.0)
        {
            bail!("WebRTC legs need target relay, without churn, ramp-up or webinar");
        }
        if self.unread > 0 && (self.webinar.is_some() || self.target == Target::Rtpengine) {
            bail!("unread participants are for rooms against the relay or the direct path");
        }
        let controls = self.controls();
        if controls.len() > 1 || !self.netns.is_empty() {
            if self.target != Target::Relay {
                bail!("several control addresses or --netns need target relay");
            }
            if controls.len() > MAX_RELAYS || controls.iter().any(|c| c.is_empty()) {
                bail!("give 1 to {MAX_RELAYS} control addresses, separated by commas");
            }
            if !self.netns.is_empty() && self.netns.len() != controls.len() {
                bail!(
                    "{} network namespaces for {} control addresses: give one per relay",
                    self.netns.len(),
                    controls.len()
                );
            }
            if self.netns.iter().any(|n| n.is_empty() || n.contains('/')) {
                bail!("a network namespace is a name under /var/run/netns");
            }
            if self.webinar.is_some() || self.webrtc || self.ramp_up > 0.0 {
                bail!(
                    "multi-relay mode runs rooms of plain participants present from the start: \
                     no webinar, WebRTC legs or ramp-up"
                );
            }
        }
        match self.target {
            Target::Relay => {}
            Target::Direct if churn || self.ramp_up > 0.0 => {
                bail!("the direct path has no control: churn and ramp-up need a relay")
            }
            Target::Direct => {}
            Target::Rtpengine => {
                if churn || self.ramp_up > 0.0 {
                    bail!("churn and ramp-up are only supported against the relay");
                }
                if self
                    .room
                    .iter()
                    .any(|c| c.profile == Send::Mixed || c.screen_share)
                {
                    bail!("rtpengine runs carry one stream per participant: use audio or video");
                }
            }
        }
        Ok(())
    }

    /// Every room, participant, stream and scheduled change of the run.
    pub(crate) fn plan(&self) -> Plan {
        let mut rng = Rng::new(self.seed);
        if let Some(w) = &self.webinar {
            let mut plan = self.plan_webinar(w);
            self.scale(&mut plan);
            self.schedule(&mut plan, &mut rng);
            return plan;
        }
        let mut plan = Plan::default();
        let total_weight: f64 = self.room.iter().map(|c| c.weight).sum();
        let mut profiles: HashMap<(usize, Kind), Profile> = HashMap::new();
        for r in 0..self.rooms {
            let mut pick = rng.unit() * total_weight;
            let class_index = self
                .room
                .iter()
                .position(|c| {
                    pick -= c.weight;
                    pick < 0.0
                })
                .unwrap_or(self.room.len() - 1);
            let class = &self.room[class_index];
            let size = rng.range(u64::from(class.size[0]), u64::from(class.size[1])) as u32;
            // rtpengine rooms larger than a call are one publisher and subscribers.
            let pubsub = self.target == Target::Rtpengine && size > 2;
            let senders = if pubsub {
                1
            } else {
                ((f64::from(size) * class.senders).ceil() as u32).clamp(1, size)
            };
            let first = plan.participants.len() as u32;
            let relays = self.relays();
            let room = RoomPlan {
                name: format!("lg-r{r}"),
                members: (first..first + size).collect(),
            };
            for i in 0..size {
                let p = first + i;
                let mut kinds = Vec::new();
                if i < senders {
                    match class.profile {
                        Send::Audio => kinds.push(Kind::Audio),
                        Send::Video => kinds.push(Kind::Video),
                        Send::Mixed => kinds.extend([Kind::Audio, Kind::Video]),
                        Send::None => {}
                    }
                }
                if i == 0 && class.screen_share {
                    kinds.push(Kind::Screen);
                }
                let mut streams = Vec::new();
                for kind in kinds {
                    let profile = *profiles.entry((class_index, kind)).or_insert_with(|| {
                        let mut p = Profile::of(kind);
                        match kind {
                            Kind::Audio => {
                                p.dtx = class.dtx;
                                if let Some([lo, hi]) = class.audio_len {
                                    p.len = (lo, hi);
                                }
                            }
                            Kind::Video => p = Profile::video(class.video_fps, class.video_bitrate),
                            Kind::Screen => {}
                        }
                        match self.stream_rate {
                            Some(pps) => p.with_pps(pps),
                            None => p,
                        }
                    });
                    let id = plan.streams.len() as u32;
                    plan.streams.push(StreamPlan {
                        participant: p,
                        profile,
                        ssrc: SSRC_BASE + id,
                    });
                    streams.push(id);
                }
                let subscribe = match class.subscribe_max {
                    _ if pubsub && i == 0 => Subscribe::List(Vec::new()),
                    _ if pubsub => Subscribe::List(vec![first]),
                    Some(max) if max < senders => {
                        let mut list: Vec<u32> =
                            (first..first + senders).filter(|&s| s != p).collect();
                        // Partial Fisher-Yates: the first `max` are a random subset.
                        for k in 0..(max as usize).min(list.len()) {
                            let j = k + rng.range(0, (list.len() - k - 1) as u64) as usize;
                            list.swap(k, j);
                        }
                        list.truncate(max as usize);
                        list.sort_unstable();
                        Subscribe::List(list)
                    }
                    _ => Subscribe::All,
                };
                plan.participants.push(ParticipantPlan {
                    name: format!("p{i}"),
                    room: r,
                    streams,
                    subscribe,
                    join_ns: 0,
                    read: i + self.unread < size || i < senders,
                    relay: place(p, relays),
                });
            }
            plan.rooms.push(room);
        }
        self.scale(&mut plan);
        self.schedule(&mut plan, &mut rng);
        plan
    }

    /// The webinar's room: participant 0 publishes audio and video, the listeners join in
    /// bursts during the run.
    fn plan_webinar(&self, w: &Webinar) -> Plan {
        let class = self.room.first().cloned().unwrap_or_default();
        let mut plan = Plan::default();
        let mut audio = Profile::of(Kind::Audio);
        audio.dtx = class.dtx;
        if let Some([lo, hi]) = class.audio_len {
            audio.len = (lo, hi);
        }
        let video = Profile::video(class.video_fps, class.video_bitrate);
        let mut streams = Vec::new();
        for profile in [audio, video] {
            let profile = match self.stream_rate {
                Some(pps) => profile.with_pps(pps),
                None => profile,
            };
            let id = plan.streams.len() as u32;
            plan.streams.push(StreamPlan {
                participant: 0,
                profile,
                ssrc: SSRC_BASE + id,
            });
            streams.push(id);
        }
        plan.participants.push(ParticipantPlan {
            name: "p0".into(),
            room: 0,
            streams,
            subscribe: Subscribe::List(Vec::new()),
            join_ns: 0,
            read: true,
            relay: 0,
        });
        let first_ns = (w.first_burst * 1e9) as u64;
        let interval = w.burst_interval_ns();
        for i in 0..w.listeners {
            let burst = i / w.burst;
            plan.participants.push(ParticipantPlan {
                name: format!("p{}", i + 1),
                room: 0,
                streams: Vec::new(),
                subscribe: Subscribe::All,
                // Never 0: listeners join during the run, never in the set-up.
                join_ns: (first_ns + u64::from(burst) * interval).max(1),
                read: w.reads(i),
                relay: 0,
            });
        }
        for burst in 0..w.listeners.div_ceil(w.burst) {
            let first = 1 + burst * w.burst;
            let count = w.burst.min(w.listeners + 1 - first);
            plan.events.push((
                (first_ns + u64::from(burst) * interval).max(1),
                Event::JoinBurst { first, count },
            ));
        }
        plan.rooms.push(RoomPlan {
            name: "lg-r0".into(),
            members: (0..=w.listeners).collect(),
        });
        plan
    }

    /// Scales every stream to the total `rate`, if one is set.
    fn scale(&self, plan: &mut Plan) {
        if let Some(total) = self.rate {
            let nominal: f64 = plan.streams.iter().map(|s| s.profile.nominal_pps()).sum();
            if nominal > 0.0 {
                let m = total / nominal;
                // Few distinct profiles: scale each once.
                let mut cache: Vec<(Profile, Profile)> = Vec::new();
                for s in &mut plan.streams {
                    let found = cache
                        .iter()
                        .find(|(from, _)| *from == s.profile)
                        .map(|(_, to)| *to);
                    let to = found.unwrap_or_else(|| {
                        let to = s.profile.with_pps(s.profile.nominal_pps() * m);
                        cache.push((s.profile, to));
                        to
                    });
                    s.profile = to;
                }
            }
        }
    }

    fn schedule(&self, plan: &mut Plan, rng: &mut Rng) {
        let n = plan.participants.len();
        let duration_ns = (self.duration * 1e9) as u64;
        let ramp_ns = (self.ramp_up * 1e9) as u64;
        if self.webinar.is_none() {
            for (i, p) in plan.participants.iter_mut().enumerate() {
                p.join_ns = ramp_ns * i as u64 / n as u64;
                if p.join_ns > 0 {
                    plan.events.push((p.join_ns, Event::Join(i as u32)));
                }
            }
        }
        let c = &self.churn;
        let mut busy = vec![ramp_ns; n];
        let away_ns = (c.rejoin_after.max(0.1) * 1e9) as u64;
        for t in arrivals(rng, c.leaves_per_min, ramp_ns, duration_ns) {
            let p = rng.range(0, n as u64 - 1) as usize;
            if busy[p] > t || t + away_ns >= duration_ns {
                continue;
            }
            busy[p] = t + away_ns + 1;
            plan.events.push((t, Event::Leave(p as u32)));
            plan.events.push((t + away_ns, Event::Join(p as u32)));
        }
        let hold_ns = (c.rule_hold.max(0.1) * 1e9) as u64;
        for t in arrivals(rng, c.rules_per_min, ramp_ns, duration_ns) {
            let p = rng.range(0, n as u64 - 1) as u32;
            let direction =
                [Direction::Send, Direction::Receive, Direction::Both][rng.range(0, 2) as usize];
            let media = [Media::Audio, Media::Video, Media::All][rng.range(0, 2) as usize];
            let rule = plan.rules.len();
            plan.rules.push(RulePlan {
                targets: vec![p],
                direction,
                media,
            });
            plan.events.push((t, Event::AddRule(rule)));
            if t + hold_ns < duration_ns {
                plan.events.push((t + hold_ns, Event::LiftRule(rule)));
            }
        }
        plan.events.sort_by_key(|(t, _)| *t);
    }
}

/// The relay (index into the control addresses) participant `p` is placed on: round robin over
/// all participants, so a room of consecutive participants spans `min(size, relays)` relays.
pub(crate) fn place(p: u32, relays: u32) -> u32 {
    p % relays.max(1)
}

/// Evenly spaced times at `per_min` per minute in `from..to`, each jittered within its slot.
fn arrivals(rng: &mut Rng, per_min: f64, from: u64, to: u64) -> Vec<u64> {
    if per_min <= 0.0 || to <= from {
        return Vec::new();
    }
    let step = (60e9 / per_min) as u64;
    let mut out = Vec::new();
    let mut t = from;
    while t + step <= to && out.len() < MAX_EVENTS {
        out.push(t + rng.range(0, step.max(1) - 1));
        t += step;
    }
    out
}

/// The run's rooms, participants, streams and changes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) rooms: Vec<RoomPlan>,
    pub(crate) participants: Vec<ParticipantPlan>,
    pub(crate) streams: Vec<StreamPlan>,
    pub(crate) rules: Vec<RulePlan>,
    /// Changes in time order, ns after the send phase starts.
    pub(crate) events: Vec<(u64, Event)>,
}

#[derive(Debug)]
pub(crate) struct RoomPlan {
    pub(crate) name: String,
    pub(crate) members: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct ParticipantPlan {
    pub(crate) name: String,
    pub(crate) room: u32,
    pub(crate) streams: Vec<u32>,
    pub(crate) subscribe: Subscribe,
    /// When it first joins, ns after the send phase starts (0: during setup).
    pub(crate) join_ns: u64,
    /// loadgen reads its socket (otherwise it is a sink: registered, never read, not counted).
    pub(crate) read: bool,
    /// The relay it joins (index into the control addresses; 0 with one relay).
    pub(crate) relay: u32,
}

#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub(crate) participant: u32,
    pub(crate) profile: Profile,
    pub(crate) ssrc: u32,
}

#[derive(Debug)]
pub(crate) struct RulePlan {
    pub(crate) targets: Vec<u32>,
    pub(crate) direction: Direction,
    pub(crate) media: Media,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Join(u32),
    Leave(u32),
    AddRule(usize),
    LiftRule(usize),
    /// Participants `first..first + count` join at once (a webinar's burst).
    JoinBurst {
        first: u32,
        count: u32,
    },
}

/// SSRCs are the stream id plus this, so they are unique in every room.
const SSRC_BASE: u32 = 0x1000_0000;
/// At most this many relays in multi-relay mode.
const MAX_RELAYS: usize = 64;
/// Runs are bounded to an hour (send times are kept in 32-bit µs).
const MAX_DURATION_S: f64 = 3_600.0;
/// At most this many scheduled changes of each kind.
const MAX_EVENTS: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = r#"
rooms = 200
duration = 60
ramp_up = 5
seed = 7
[[room]]
weight = 0.70
size = [2, 4]
profile = "mixed"
[[room]]
weight = 0.25
size = [5, 20]
profile = "mixed"
subscribe_max = 4
senders = 0.5
[[room]]
weight = 0.05
size = [50, 200]
profile = "audio"
screen_share = true
dtx = true
[churn]
leaves_per_min = 6
rejoin_after = 3
rules_per_min = 12
rule_hold = 4
"#;

    #[test]
    fn toml_scenario_plans_mixed_rooms() {
        let s = Scenario::from_toml(MIXED).unwrap();
        s.validate().unwrap();
        let plan = s.plan();
        assert_eq!(plan.rooms.len(), 200);
        let sizes: Vec<usize> = plan.rooms.iter().map(|r| r.members.len()).collect();
        let small = sizes.iter().filter(|&&n| n <= 4).count();
        let large = sizes.iter().filter(|&&n| n >= 50).count();
        assert!((120..=160).contains(&small), "{small}");
        assert!((2..=25).contains(&large), "{large}");
        // Listeners in mid-size rooms, screen share in large ones, limited subscriptions.
        assert!(plan.participants.iter().any(|p| p.streams.is_empty()));
        assert!(plan.streams.iter().any(|s| s.profile.kind == Kind::Screen));
        assert!(
            plan.participants
                .iter()
                .any(|p| matches!(&p.subscribe, Subscribe::List(l) if l.len() == 4))
        );
        // SSRCs unique.
        let mut ssrcs: Vec<u32> = plan.streams.iter().map(|s| s.ssrc).collect();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        assert_eq!(ssrcs.len(), plan.streams.len());
        // Churn: rules added and lifted, leaves followed by joins, all in order.
        let count = |f: fn(&Event) -> bool| plan.events.iter().filter(|(_, e)| f(e)).count();
        assert_eq!(count(|e| matches!(e, Event::AddRule(_))), 11);
        assert!(count(|e| matches!(e, Event::Leave(_))) >= 3);
        assert!(plan.events.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(plan.events.iter().all(|(t, _)| *t < 60_000_000_000));
    }

    #[test]
    fn flags_make_uniform_rooms() {
        let s = Scenario::uniform(3, 4, Send::Mixed);
        let plan = s.plan();
        assert_eq!(plan.participants.len(), 12);
        assert_eq!(plan.streams.len(), 24);
        assert!(plan.events.is_empty());
    }

    #[test]
    fn participants_are_spread_over_the_relays() {
        let s = Scenario {
            control: "10.0.0.1:7780, 10.0.0.2:7780,10.0.0.3:7780".into(),
            ..Scenario::uniform(3, 4, Send::Audio)
        };
        s.validate().unwrap();
        let plan = s.plan();
        let on = |r: u32| plan.participants.iter().filter(|p| p.relay == r).count();
        assert_eq!((on(0), on(1), on(2)), (4, 4, 4));
        for room in &plan.rooms {
            let mut relays: Vec<u32> = room
                .members
                .iter()
                .map(|&p| plan.participants[p as usize].relay)
                .collect();
            relays.sort_unstable();
            relays.dedup();
            assert_eq!(relays, [0, 1, 2], "room {} spans every relay", room.name);
        }
        // One relay, or no relay at all: everyone on relay 0.
        let one = Scenario::uniform(2, 3, Send::Audio).plan();
        assert!(one.participants.iter().all(|p| p.relay == 0));
        let direct = Scenario {
            target: Target::Direct,
            control: "a:1,b:1".into(),
            ..Scenario::uniform(1, 2, Send::Audio)
        };
        assert!(
            direct.validate().is_err(),
            "several controls need the relay"
        );
        assert_eq!(place(7, 0), 0);
    }

    #[test]
    fn total_rate_scales_profiles() {
        let s = Scenario {
            rate: Some(10_000.0),
            ..Scenario::uniform(10, 4, Send::Mixed)
        };
        let plan = s.plan();
        let pps: f64 = plan.streams.iter().map(|s| s.profile.nominal_pps()).sum();
        assert!((9_000.0..=11_000.0).contains(&pps), "{pps}");
    }

    #[test]
    fn rejects_bad_scenarios() {
        assert!(Scenario::from_toml("rooms = 1\nbogus = 2").is_err());
        let mut s = Scenario::uniform(1, 2, Send::Mixed);
        s.duration = 0.0;
        assert!(s.validate().is_err());
        s.duration = 5.0;
        s.target = Target::Rtpengine;
        assert!(s.validate().is_err());
        s.target = Target::Direct;
        s.churn.rules_per_min = 1.0;
        assert!(s.validate().is_err());
    }
}
