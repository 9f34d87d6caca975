//! A validated rule, its checks, and what it matches.

use std::fmt;
use std::time::UNIX_EPOCH;

use super::spec::{Basis, Direction, Media, ParticipantRef, RuleSpec};
use super::{Kind, MAX_BASIS_LEN, MAX_ID_LEN, MAX_LIST_LEN};

/// A rule that passed validation: the form the relay matches with.
///
/// Lists are sorted and deduplicated, so matching is a binary search and two specs that differ
/// only in order give equal rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    participants: Vec<ParticipantRef>,
    regions: Vec<[u8; 2]>,
    rooms: Vec<String>,
    direction: Direction,
    media: Media,
    basis: Basis,
    expires_at_unix: u64,
}

/// A participant as rules see it: ids and a region, never an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    /// Room id.
    pub room: &'a str,
    /// Participant id within the room.
    pub participant: &'a str,
    /// ISO 3166-1 alpha-2 region (uppercase ASCII), when known.
    pub region: Option<[u8; 2]>,
}

/// Why a rule was refused. Each variant is the caller's fault (bad input): fix the body and
/// send it again. Nothing changes state when a rule is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// The body is not JSON of the rule's shape: bad syntax, a wrong type or an unknown field.
    /// Holds serde's message, which names the field and its position.
    Malformed(String),
    /// The basis, or one of its fields, is absent or blank. A rule needs a basis.
    MissingBasis {
        /// `basis`, `basis.authority`, `basis.reference` or `basis.jurisdiction`.
        field: &'static str,
    },
    /// A basis field is longer than [`MAX_BASIS_LEN`] bytes or holds control characters.
    InvalidBasis {
        /// The basis field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The jurisdiction is not two uppercase ASCII letters (ISO 3166-1 alpha-2).
    InvalidJurisdiction {
        /// The value given (shortened).
        value: String,
    },
    /// The rule names no participants and no regions; it would silence whole rooms or the
    /// whole relay.
    EmptyMatch,
    /// A region is not two uppercase ASCII letters (ISO 3166-1 alpha-2).
    InvalidRegion {
        /// The value given (shortened).
        value: String,
    },
    /// A room or participant id is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    InvalidId {
        /// Which list the id is in: `match.rooms`, `match.participants[].room` or
        /// `match.participants[].participant`.
        field: &'static str,
        /// The value given (shortened).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A list has more than [`MAX_LIST_LEN`] entries.
    TooMany {
        /// The list at fault.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// `expires_at` is absent. Every rule must end.
    MissingExpiry,
    /// `expires_at` is not an RFC 3339 UTC time such as `2026-12-31T00:00:00Z`.
    InvalidExpiry {
        /// The value given (shortened).
        value: String,
    },
    /// `expires_at` is not in the future.
    Expired {
        /// The value given.
        value: String,
    },
}

/// Checks a spec and returns the rule to enforce. `now_unix` is the current time in unix
/// seconds: the rule must expire after it.
pub fn validate(spec: &RuleSpec, now_unix: u64) -> Result<Rule, RuleError> {
    let rule = compile(spec)?;
    if rule.expires_at_unix <= now_unix {
        return Err(RuleError::Expired {
            value: shown(spec.expires_at.as_deref().unwrap_or_default()),
        });
    }
    Ok(rule)
}

/// Checks a spec as [`validate`] does, except that the expiry may be in the past.
///
/// For rules restored from the store at start-up: those already past their expiry are expired
/// (and audited) by the caller rather than refused.
pub fn compile(spec: &RuleSpec) -> Result<Rule, RuleError> {
    let basis = check_basis(spec.basis.as_ref())?;
    let m = &spec.r#match;
    check_len("match.regions", m.regions.len())?;
    check_len("match.participants", m.participants.len())?;
    check_len("match.rooms", m.rooms.len())?;
    if m.regions.is_empty() && m.participants.is_empty() {
        return Err(RuleError::EmptyMatch);
    }

    let mut regions = Vec::with_capacity(m.regions.len());
    for r in &m.regions {
        regions.push(region(r).ok_or_else(|| RuleError::InvalidRegion { value: shown(r) })?);
    }
    regions.sort_unstable();
    regions.dedup();

    let mut participants = Vec::with_capacity(m.participants.len());
    for p in &m.participants {
        check_id("match.participants[].room", &p.room)?;
        check_id("match.participants[].participant", &p.participant)?;
        participants.push(p.clone());
    }
    participants.sort_unstable();
    participants.dedup();

    let mut rooms = Vec::with_capacity(m.rooms.len());
    for r in &m.rooms {
        check_id("match.rooms", r)?;
        rooms.push(r.clone());
    }
    rooms.sort_unstable();
    rooms.dedup();

    let expires_at_unix = expiry(spec.expires_at.as_deref())?;
    Ok(Rule {
        participants,
        regions,
        rooms,
        direction: spec.direction,
        media: spec.media,
        basis,
        expires_at_unix,
    })
}

impl Rule {
    /// Whether the rule applies to `s`: it is in one of the rule's rooms (none listed: any
    /// room) and its `(room, participant)` is listed or its region is listed.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.in_rooms(s.room) && (self.names(s) || self.covers_region(s.region))
    }

    /// Whether a matched participant's outgoing media of `kind` is blocked.
    pub fn blocks_send(&self, kind: Kind) -> bool {
        matches!(self.direction, Direction::Send | Direction::Both) && self.covers_kind(kind)
    }

    /// Whether a matched participant's incoming media of `kind` is blocked.
    pub fn blocks_receive(&self, kind: Kind) -> bool {
        matches!(self.direction, Direction::Receive | Direction::Both) && self.covers_kind(kind)
    }

    /// Participants named, sorted by (room, participant).
    pub fn participants(&self) -> &[ParticipantRef] {
        &self.participants
    }

    /// Regions named, sorted.
    pub fn regions(&self) -> &[[u8; 2]] {
        &self.regions
    }

    /// Rooms the rule is limited to, sorted; empty means every room.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// Which way media is blocked.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Which media is blocked.
    pub fn media(&self) -> Media {
        self.media
    }

    /// The legal basis.
    pub fn basis(&self) -> &Basis {
        &self.basis
    }

    /// The expiry in unix seconds, rounded down: the rule applies while `now < expires_at_unix`.
    pub fn expires_at_unix(&self) -> u64 {
        self.expires_at_unix
    }

    fn in_rooms(&self, room: &str) -> bool {
        self.rooms.is_empty()
            || self
                .rooms
                .binary_search_by(|r| r.as_str().cmp(room))
                .is_ok()
    }

    fn names(&self, s: &Subject<'_>) -> bool {
        self.participants
            .binary_search_by(|p| {
                (p.room.as_str(), p.participant.as_str()).cmp(&(s.room, s.participant))
            })
            .is_ok()
    }

    fn covers_region(&self, region: Option<[u8; 2]>) -> bool {
        region.is_some_and(|r| self.regions.binary_search(&r).is_ok())
    }

    fn covers_kind(&self, kind: Kind) -> bool {
        matches!(
            (self.media, kind),
            (Media::All, _) | (Media::Audio, Kind::Audio) | (Media::Video, Kind::Video)
        )
    }
}

impl RuleError {
    /// A stable, machine-readable code for the API's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_json",
            Self::MissingBasis { .. } => "missing_basis",
            Self::InvalidBasis { .. } => "invalid_basis",
            Self::InvalidJurisdiction { .. } => "invalid_jurisdiction",
            Self::EmptyMatch => "empty_match",
            Self::InvalidRegion { .. } => "invalid_region",
            Self::InvalidId { .. } => "invalid_id",
            Self::TooMany { .. } => "too_many",
            Self::MissingExpiry => "missing_expiry",
            Self::InvalidExpiry { .. } => "invalid_expiry",
            Self::Expired { .. } => "expired",
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "the rule body is not valid: {m}"),
            Self::MissingBasis { field } => write!(
                f,
                "a rule needs a basis: `{field}` is missing or blank (give basis.authority, \
                 basis.reference and basis.jurisdiction)"
            ),
            Self::InvalidBasis { field, reason } => write!(f, "`{field}` {reason}"),
            Self::InvalidJurisdiction { value } => write!(
                f,
                "basis.jurisdiction {value:?} is not an ISO 3166-1 alpha-2 code{}",
                upper_hint(value)
            ),
            Self::EmptyMatch => f.write_str(
                "the rule names no participants and no regions: it would silence whole rooms or \
                 the whole relay, so it is refused (list match.participants or match.regions)",
            ),
            Self::InvalidRegion { value } => write!(
                f,
                "region {value:?} in match.regions is not an ISO 3166-1 alpha-2 code{}",
                upper_hint(value)
            ),
            Self::InvalidId {
                field,
                value,
                reason,
            } => write!(f, "{field} {value:?} {reason}"),
            Self::TooMany { field, len } => {
                write!(
                    f,
                    "{field} has {len} entries, more than the limit of {MAX_LIST_LEN}"
                )
            }
            Self::MissingExpiry => f.write_str(
                "a rule needs expires_at, an RFC 3339 UTC time such as 2026-12-31T00:00:00Z",
            ),
            Self::InvalidExpiry { value } => write!(
                f,
                "expires_at {value:?} is not an RFC 3339 UTC time such as 2026-12-31T00:00:00Z"
            ),
            Self::Expired { value } => write!(f, "expires_at {value:?} is not in the future"),
        }
    }
}

impl std::error::Error for RuleError {}

fn check_basis(basis: Option<&Basis>) -> Result<Basis, RuleError> {
    let Some(b) = basis else {
        return Err(RuleError::MissingBasis { field: "basis" });
    };
    check_basis_field("basis.authority", &b.authority)?;
    check_basis_field("basis.reference", &b.reference)?;
    check_basis_field("basis.jurisdiction", &b.jurisdiction)?;
    if region(&b.jurisdiction).is_none() {
        return Err(RuleError::InvalidJurisdiction {
            value: shown(&b.jurisdiction),
        });
    }
    Ok(b.clone())
}

fn check_basis_field(field: &'static str, value: &str) -> Result<(), RuleError> {
    if value.trim().is_empty() {
        return Err(RuleError::MissingBasis { field });
    }
    if value.len() > MAX_BASIS_LEN {
        return Err(RuleError::InvalidBasis {
            field,
            reason: "is longer than 256 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(RuleError::InvalidBasis {
            field,
            reason: "holds control characters",
        });
    }
    Ok(())
}

fn check_len(field: &'static str, len: usize) -> Result<(), RuleError> {
    if len > MAX_LIST_LEN {
        return Err(RuleError::TooMany { field, len });
    }
    Ok(())
}

fn check_id(field: &'static str, id: &str) -> Result<(), RuleError> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_ID_LEN {
        "is longer than 128 bytes"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only hold letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(RuleError::InvalidId {
        field,
        value: shown(id),
        reason,
    })
}

/// Two uppercase ASCII letters, as ISO 3166-1 alpha-2 codes are written. Lowercase is refused
/// rather than fixed up, so what is stored and audited is what was asked for.
fn region(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

fn expiry(value: Option<&str>) -> Result<u64, RuleError> {
    let Some(value) = value else {
        return Err(RuleError::MissingExpiry);
    };
    let invalid = || RuleError::InvalidExpiry {
        value: shown(value),
    };
    let t = humantime::parse_rfc3339(value).map_err(|_| invalid())?;
    // Rounded down: a rule never applies past the time its basis gives.
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid())?
        .as_secs();
    Ok(secs)
}

/// A value for an error message: at most 64 characters, so a huge input does not come back
/// whole in the reply.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

fn upper_hint(value: &str) -> String {
    let up = value.to_ascii_uppercase();
    if region(&up).is_some() && up != value {
        format!(": codes are uppercase, write {up:?}")
    } else {
        ": write two uppercase letters such as \"DE\"".to_owned()
    }
}
