//! What the control API answers: the JSON shapes of rooms, participants, rules and the relay.
//!
//! Views never hold an address of a participant: the relay keeps them out of every output.

use serde::Serialize;
use utoipa::ToSchema;

use super::body::{IceBody, SubscribeBody, TrackBody};
use crate::rules::RuleId;
use crate::store::StoredRule;

/// One participant, as `PUT`, `PATCH` and `GET` return it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Participant {
    /// Room id.
    pub room: String,
    /// Participant id.
    pub participant: String,
    /// Where the client sends media, RTCP and STUN: the relay's media address.
    #[schema(example = "127.0.0.1:40000")]
    pub media_address: String,
    /// Relay-side ICE credentials for this participant.
    pub ice: IceBody,
    /// ISO 3166-1 alpha-2 region, if known.
    pub region: Option<String>,
    /// Where the region came from: `signaling`, `geoip` or `unknown`.
    #[schema(example = "signaling")]
    pub region_source: String,
    /// Whether the relay knows the participant's media address (fixed or latched).
    pub address_set: bool,
    /// Whether the address was learnt from an authenticated STUN Binding request.
    pub latched: bool,
    /// Since when it is latched (RFC 3339).
    pub latched_since: Option<String>,
    /// Times a latched address was dropped after `--latch-timeout` of silence.
    pub unlatched_count: u64,
    /// The last time that happened.
    pub last_unlatched_at: Option<String>,
    /// When the participant joined (RFC 3339).
    pub joined_at: String,
    /// Declared tracks.
    pub tracks: Vec<TrackBody>,
    /// What it receives.
    pub subscribe: SubscribeBody,
    /// `"webrtc"` (joined with the `webrtc/publish` or `webrtc/subscribe` exchanges) or `"rtp"`.
    #[schema(example = "webrtc")]
    pub transport: String,
    /// WebRTC only: the DTLS state over its legs, `new`, `connecting`, `connected` (every leg
    /// it has) or `failed` (any leg).
    #[schema(example = "connected")]
    pub dtls: Option<String>,
    /// WebRTC only: the SRTP protection profile negotiated (RFC 5764 name), once connected.
    #[schema(example = "SRTP_AEAD_AES_128_GCM")]
    pub srtp_profile: Option<String>,
    /// WebRTC only: each leg (`publish`, `subscribe`) on its own.
    pub legs: Option<Vec<Leg>>,
    /// Its counters.
    pub counters: ParticipantCounters,
}

/// One leg of a WebRTC participant: one of its peer connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct Leg {
    /// `publish` or `subscribe`.
    #[schema(example = "publish")]
    pub leg: String,
    /// Whether the relay has latched its address (ICE nominated a pair).
    pub latched: bool,
    /// `new`, `connecting`, `connected` or `failed`.
    #[schema(example = "connected")]
    pub dtls: String,
    /// The SRTP protection profile, once connected.
    pub srtp_profile: Option<String>,
    /// Why DTLS failed, when it did.
    pub dtls_failure: Option<String>,
}

/// One codec of a room's table: the payload type numbers every participant uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct Codec {
    /// `opus`, `VP8` or `H264`.
    #[schema(example = "VP8")]
    pub codec: String,
    /// Its payload type number.
    #[schema(example = 96)]
    pub pt: u8,
    /// Its RTX payload type number (video).
    pub rtx: Option<u8>,
}

/// Counters of one participant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantCounters {
    /// RTP and RTCP packets received from it.
    pub packets_in: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Packets from it that were not forwarded (undeclared SSRC, malformed, rule).
    pub packets_dropped: u64,
}

/// One room with its participants.
#[derive(Debug, Serialize, ToSchema)]
pub struct Room {
    /// Room id.
    pub room: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Whether media from WebRTC participants reaches plain RTP participants (decrypted).
    pub plain_legs: bool,
    /// The room's payload type numbers, fixed by the first WebRTC offer of each codec.
    pub codecs: Vec<Codec>,
    /// Its participants, by id.
    pub participants: Vec<Participant>,
    /// Summed counters of its participants.
    pub counters: RoomCounters,
}

/// Summed counters of a room.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomCounters {
    /// RTP and RTCP packets received from its participants.
    pub packets_in: u64,
    /// Bytes received from its participants.
    pub bytes_in: u64,
}

/// `GET /v1/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    /// Every room, by id.
    pub rooms: Vec<RoomSummary>,
}

/// One room in [`RoomList`].
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomSummary {
    /// Room id.
    pub room: String,
    /// Its number of participants.
    pub participants: usize,
}

/// `DELETE /v1/rooms/{room}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomClosed {
    /// Room id.
    pub room: String,
    /// Always true.
    pub closed: bool,
    /// How many participants it had.
    pub participants: usize,
}

/// `DELETE /v1/rooms/{room}/participants/{participant}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantRemoved {
    /// Room id.
    pub room: String,
    /// Participant id.
    pub participant: String,
    /// Always true.
    pub removed: bool,
}

/// A rule with its counters, as `POST`, `GET` and `DELETE` of rules return it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rule {
    /// The rule as stored: its body, id, state and history.
    #[serde(flatten)]
    pub stored: StoredRule,
    /// Participants it matches now.
    pub participants_matched: u64,
    /// Participants it has matched since it was added (each join counts once).
    pub participants_matched_total: u64,
    /// Packets it dropped, both directions.
    pub packets_dropped: u64,
    /// Packets it dropped, by direction.
    pub packets_dropped_by_direction: Dropped,
}

/// Dropped packets by direction.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dropped {
    /// Packets of matched participants nobody received.
    pub send: u64,
    /// Copies matched participants did not receive.
    pub receive: u64,
}

/// `GET /v1/rules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    /// Every rule ever added (active, lifted, expired), by id.
    pub rules: Vec<Rule>,
}

/// `POST /v1/drain` and `DELETE /v1/drain`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drain {
    /// Whether new rooms are refused.
    pub draining: bool,
    /// Rooms open.
    pub rooms: usize,
    /// Participants in them.
    pub participants: usize,
}

/// `GET /v1/info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    /// The relay's version.
    pub version: String,
    /// The media addresses clients are told to use.
    pub media_addresses: Vec<String>,
    /// The address the media sockets are bound to.
    pub media_bound: String,
    /// The data-plane backend: `mmsg` or `io_uring`.
    pub backend: String,
    /// Data-plane workers.
    pub workers: usize,
    /// A random id of this run of the process: it changes at every start, so a signaling
    /// server can tell that the relay restarted.
    pub boot_id: String,
    /// When this run started (RFC 3339).
    pub started_at: String,
    /// Whether new rooms are refused.
    pub draining: bool,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// A rule in force, for metrics: read at scrape time, without asking the control thread.
#[derive(Debug, Clone)]
pub struct RuleMetric {
    /// The rule.
    pub id: RuleId,
    /// Unix seconds at which it expires.
    pub expires_at: u64,
    /// Packets dropped before this run, (send, receive).
    pub base: (u64, u64),
    /// This run's per-worker drop counters.
    pub live: Option<std::sync::Arc<crate::route::RuleCounters>>,
}

impl RuleMetric {
    /// Packets dropped so far, (send, receive).
    pub fn dropped(&self) -> (u64, u64) {
        let (s, r) = self
            .live
            .as_ref()
            .map_or((0, 0), |c| (c.dropped_send.sum(), c.dropped_receive.sum()));
        (self.base.0 + s, self.base.1 + r)
    }
}
