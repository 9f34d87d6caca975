//! Request bodies of the control API and the checks on their fields.
//!
//! Bodies refuse unknown fields, so a misspelt field is an error that names it. The checks here
//! look at one field at a time; checks against the state (an SSRC already used, a full room)
//! are the control core's.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Code};
use crate::route::MediaKind;

/// Body of `PUT /v1/rooms/{room}/participants/{participant}`.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    /// ISO 3166-1 alpha-2 region given by signaling (two uppercase letters).
    #[schema(example = "HK")]
    pub region: Option<String>,
    /// Fixed media address `IP:PORT` (`[v6]:PORT`), for clients that cannot do STUN.
    #[schema(example = "127.0.0.1:5004")]
    pub address: Option<String>,
    /// Relay-side ICE credentials; generated when absent.
    pub ice: Option<IceBody>,
    /// Declared tracks.
    #[serde(default)]
    pub tracks: Vec<TrackBody>,
    /// What the participant receives; `"all"` when absent.
    pub subscribe: Option<SubscribeBody>,
}

/// Body of `PATCH /v1/rooms/{room}/participants/{participant}`: present fields replace, `null`
/// clears `region` and `address`.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    /// New region; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub region: Option<Option<String>>,
    /// New fixed address; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub address: Option<Option<String>>,
    /// New tracks.
    pub tracks: Option<Vec<TrackBody>>,
    /// New subscription.
    pub subscribe: Option<SubscribeBody>,
}

fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// ICE short-term credentials (RFC 8445 §5.3).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IceBody {
    /// Username fragment: 4 to 256 characters of `[A-Za-z0-9+/]`.
    #[schema(example = "evtj")]
    pub ufrag: String,
    /// Password: 22 to 256 characters of `[A-Za-z0-9+/]`.
    #[schema(example = "VOkJxbRl1RmTxUk/WvJxBt")]
    pub pwd: String,
}

/// A declared track.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBody {
    /// Its RTP SSRC.
    pub ssrc: u32,
    /// Audio or video.
    pub kind: MediaKind,
}

/// `"all"` or a list of participant ids.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(untagged)]
pub enum SubscribeBody {
    /// The string `"all"`.
    All(AllTag),
    /// Participant ids whose media this one receives; ids that have not joined yet take effect
    /// when they join.
    Only(Vec<String>),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AllTag {
    /// Everybody.
    All,
}

impl SubscribeBody {
    /// Everybody.
    pub const ALL: Self = Self::All(AllTag::All);
}

/// Body of `PUT /v1/rooms/{room}` (optional).
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomBody {
    /// Whether media from WebRTC participants may reach plain RTP participants, decrypted.
    /// Set when the room is created; `false` when absent. See docs/API.md for why it is off by
    /// default.
    pub plain_legs: Option<bool>,
}

/// Body of `POST /v1/rooms/{room}/participants/{participant}/webrtc/publish`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebrtcPublishBody {
    /// The client's SDP offer (its publishing peer connection).
    pub sdp: String,
    /// ISO 3166-1 alpha-2 region given by signaling.
    #[schema(example = "HK")]
    pub region: Option<String>,
    /// What the participant receives; kept as it was when absent (`"all"` for a newcomer).
    pub subscribe: Option<SubscribeBody>,
}

/// Body of `POST /v1/rooms/{room}/participants/{participant}/webrtc/subscribe`: `{}`, or the
/// participant's region and subscription when the call creates it.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebrtcSubscribeBody {
    /// ISO 3166-1 alpha-2 region given by signaling.
    pub region: Option<String>,
    /// What the participant receives; kept as it was when absent (`"all"` for a newcomer).
    pub subscribe: Option<SubscribeBody>,
}

/// Body of `PUT /v1/rooms/{room}/participants/{participant}/webrtc/subscribe`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebrtcAnswerBody {
    /// The client's SDP answer to the relay's subscribe offer.
    pub sdp: String,
}

/// Body of `DELETE /v1/rules/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftBody {
    /// Why the rule is lifted: 1 to 1024 bytes, audited.
    #[schema(example = "order withdrawn")]
    pub reason: String,
}

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Longest room, participant or rule id.
pub const MAX_ID: usize = 128;

/// Checks a room or participant id: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidId,
            format!("{what} id must be 1 to {MAX_ID} bytes of [A-Za-z0-9._-]"),
        ))
    }
}

/// Checks an ISO 3166-1 alpha-2 code: two ASCII uppercase letters.
pub fn check_region(region: &str) -> Result<[u8; 2], ApiError> {
    match region.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok([a, b]),
        _ => Err(ApiError::new(
            Code::InvalidRegion,
            format!("region {region:?} is not an ISO 3166-1 alpha-2 code (two uppercase letters)"),
        )),
    }
}

/// Checks ICE credentials (RFC 8445 §5.3: ufrag at least 4 and pwd at least 22 ice-chars).
pub fn check_ice(ice: &IceBody) -> Result<(), ApiError> {
    let ice_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    if !(4..=256).contains(&ice.ufrag.len()) || !ice_chars(&ice.ufrag) {
        return Err(ApiError::new(
            Code::InvalidIce,
            "ice.ufrag must be 4 to 256 characters of [A-Za-z0-9+/]",
        ));
    }
    if !(22..=256).contains(&ice.pwd.len()) || !ice_chars(&ice.pwd) {
        return Err(ApiError::new(
            Code::InvalidIce,
            "ice.pwd must be 22 to 256 characters of [A-Za-z0-9+/]",
        ));
    }
    Ok(())
}

/// Parses a fixed media address: a unicast IP with a non-zero port. IPv4-mapped IPv6 becomes
/// IPv4, as the data plane sees it.
pub fn parse_address(s: &str) -> Result<SocketAddr, ApiError> {
    let a: SocketAddr = s.parse().map_err(|_| {
        ApiError::new(
            Code::InvalidAddress,
            "address must be IP:PORT (IPv6 in brackets), for example 192.0.2.1:5004",
        )
    })?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(ApiError::new(
            Code::InvalidAddress,
            "address must be a unicast IP with a non-zero port",
        ));
    }
    Ok(match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    })
}

/// Parses a JSON body; an empty one is `missing_body`, anything else that does not parse is
/// `invalid_json` with serde's message (which names an unknown field).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(Code::MissingBody, "a JSON body is required"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidJson, format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("room", "r-1.a_B").is_ok());
        assert!(check_id("room", "").is_err());
        assert!(check_id("room", "a b").is_err());
        assert!(check_id("room", "é").is_err());
        assert!(check_id("room", &"a".repeat(128)).is_ok());
        assert!(check_id("room", &"a".repeat(129)).is_err());
    }

    #[test]
    fn subscribe_forms() {
        let b: ParticipantBody = serde_json::from_str(r#"{"subscribe":"all"}"#).unwrap();
        assert_eq!(b.subscribe, Some(SubscribeBody::ALL));
        let b: ParticipantBody = serde_json::from_str(r#"{"subscribe":["a","b"]}"#).unwrap();
        assert_eq!(
            b.subscribe,
            Some(SubscribeBody::Only(vec!["a".into(), "b".into()]))
        );
        assert!(serde_json::from_str::<ParticipantBody>(r#"{"subscribe":"some"}"#).is_err());
    }

    #[test]
    fn unknown_field_is_named() {
        let err = serde_json::from_str::<ParticipantBody>(r#"{"adress":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn regions() {
        assert_eq!(check_region("CN").unwrap(), *b"CN");
        assert!(check_region("cn").is_err());
        assert!(check_region("CHN").is_err());
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

    #[test]
    fn empty_and_bad_json() {
        assert_eq!(
            parse_json::<ParticipantBody>(b"  ").unwrap_err().code,
            Code::MissingBody
        );
        assert_eq!(
            parse_json::<ParticipantBody>(b"{x").unwrap_err().code,
            Code::InvalidJson
        );
    }
}
