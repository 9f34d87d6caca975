//! Request bodies, validation and errors of the control API.

use std::fmt;

use serde::Deserialize;

use crate::route::MediaKind;

/// An API error: an HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (4xx for the caller's mistakes, 5xx for ours).
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400: the input is malformed or invalid.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 404: no such room, participant or rule.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 409: conflicts with existing state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    /// Any status.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// Body of `PUT /v1/rooms/{room}/participants/{participant}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    /// ISO 3166-1 alpha-2 region given by signaling.
    pub region: Option<String>,
    /// Fixed media address.
    pub address: Option<String>,
    /// Relay-side ICE credentials.
    pub ice: Option<IceBody>,
    /// Declared tracks.
    #[serde(default)]
    pub tracks: Vec<TrackBody>,
    /// What the participant receives; `"all"` when absent.
    pub subscribe: Option<SubscribeBody>,
}

/// Body of `PATCH /v1/rooms/{room}/participants/{participant}`: present fields replace.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    /// New region; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    pub region: Option<Option<String>>,
    /// New fixed address; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
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

/// ICE short-term credentials.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceBody {
    /// Username fragment.
    pub ufrag: String,
    /// Password.
    pub pwd: String,
}

/// A declared track.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrackBody {
    /// Its RTP SSRC.
    pub ssrc: u32,
    /// Audio or video.
    pub kind: MediaKind,
}

/// `"all"` or a list of participant ids.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SubscribeBody {
    /// The string `"all"`.
    All(AllTag),
    /// Participant ids.
    Only(Vec<String>),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AllTag {
    /// Everybody.
    All,
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
        Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} id must be 1 to {MAX_ID} bytes of [A-Za-z0-9._-]"),
        ))
    }
}

/// Checks an ISO 3166-1 alpha-2 code: two ASCII uppercase letters.
pub fn check_region(region: &str) -> Result<[u8; 2], ApiError> {
    match region.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok([a, b]),
        _ => Err(ApiError::bad_request(
            "invalid_region",
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
        return Err(ApiError::bad_request(
            "invalid_ice",
            "ice.ufrag must be 4 to 256 characters of [A-Za-z0-9+/]",
        ));
    }
    if !(22..=256).contains(&ice.pwd.len()) || !ice_chars(&ice.pwd) {
        return Err(ApiError::bad_request(
            "invalid_ice",
            "ice.pwd must be 22 to 256 characters of [A-Za-z0-9+/]",
        ));
    }
    Ok(())
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
        assert_eq!(b.subscribe, Some(SubscribeBody::All(AllTag::All)));
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
}
