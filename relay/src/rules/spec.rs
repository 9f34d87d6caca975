//! The rule body of `POST /v1/rules`, as the API receives and the store keeps it.
//!
//! Every struct refuses unknown fields, so a misspelt field (`"regoins"`) is an error that
//! names it rather than a rule that silently matches less than intended. `basis` and
//! `expires_at` are optional here only so that [`super::validate`] can refuse their absence
//! with its own error code; a valid rule always has both.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::RuleError;

/// The request body of `POST /v1/rules`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Who the rule applies to.
    #[serde(rename = "match", default)]
    pub r#match: Match,
    /// Which way media is blocked; `both` when absent.
    #[serde(default)]
    pub direction: Direction,
    /// Which media is blocked; `all` when absent.
    #[serde(default)]
    pub media: Media,
    /// The legal basis; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
    /// RFC 3339 UTC time (`2026-12-31T00:00:00Z`) after which the rule no longer applies;
    /// required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Who a rule applies to: participants in `rooms` (empty: any room) whose id is in
/// `participants` or whose region is in `regions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// ISO 3166-1 alpha-2 codes, uppercase (`"CN"`).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Participants by room and id.
    #[serde(default)]
    pub participants: Vec<ParticipantRef>,
    /// Rooms the rule is limited to; empty means every room.
    #[serde(default)]
    pub rooms: Vec<String>,
}

/// One participant, named by its room and its id in that room.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRef {
    /// Room id.
    pub room: String,
    /// Participant id within the room.
    pub participant: String,
}

/// Which way a rule blocks media of the participants it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Nobody receives their media.
    Send,
    /// They receive no media.
    Receive,
    /// Both of the above.
    #[default]
    Both,
}

/// Which media a rule blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// Audio tracks only.
    Audio,
    /// Video tracks only.
    Video,
    /// Audio and video.
    #[default]
    All,
}

/// The legal basis of a rule: who ordered it, their reference, and under which jurisdiction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Basis {
    /// The authority that ordered the rule.
    #[serde(default)]
    pub authority: String,
    /// The authority's reference for the order (case or docket number).
    #[serde(default)]
    pub reference: String,
    /// ISO 3166-1 alpha-2 code of the jurisdiction, uppercase.
    #[serde(default)]
    pub jurisdiction: String,
}

/// Reads a rule body from JSON bytes.
///
/// Malformed JSON, wrong types and unknown fields give [`RuleError::Malformed`] with serde's
/// message, which names the field and position.
pub fn parse(body: &[u8]) -> Result<RuleSpec, RuleError> {
    serde_json::from_slice(body).map_err(|e| RuleError::Malformed(e.to_string()))
}

impl Direction {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Both => "both",
        }
    }
}

impl Media {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
            Self::All => "all",
        }
    }
}
