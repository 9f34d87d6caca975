//! Errors of the control API: one code per thing that can go wrong, its HTTP status and whose
//! fault it is, mapped here and nowhere else.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`. The code is stable (signaling
//! servers switch on it); the message says what went wrong and what to do. A refused call never
//! changes state.

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

/// Whose fault an error is, and so who can fix it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request is wrong: fix it and send it again. Nothing changed.
    Caller,
    /// A limit or mode the operator set refused it (room limits, rule rate, draining): retry
    /// later, or ask the operator.
    Operator,
    /// The relay failed: the request may be fine; the relay logged why.
    Relay,
}

macro_rules! codes {
    ($($variant:ident = $name:literal, $status:literal, $fault:ident;)*) => {
        /// A stable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($status), ")")]
                $variant,
            )*
        }

        impl Code {
            /// Every code, for the documentation test.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The code as it appears in error bodies.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            /// The HTTP status the code is answered with.
            pub fn status(self) -> u16 {
                match self { $(Self::$variant => $status),* }
            }

            /// Whose fault it is.
            pub fn fault(self) -> Fault {
                match self { $(Self::$variant => Fault::$fault),* }
            }
        }
    };
}

// One line per code: the single place where codes meet statuses. docs/API.md lists them all
// (checked by a test).
codes! {
    InvalidJson = "invalid_json", 400, Caller;
    MissingBody = "missing_body", 400, Caller;
    InvalidId = "invalid_id", 400, Caller;
    InvalidAddress = "invalid_address", 400, Caller;
    InvalidRegion = "invalid_region", 400, Caller;
    InvalidIce = "invalid_ice", 400, Caller;
    DuplicateSsrc = "duplicate_ssrc", 400, Caller;
    TooManyTracks = "too_many_tracks", 400, Caller;
    TooManySubscriptions = "too_many_subscriptions", 400, Caller;
    InvalidQuery = "invalid_query", 400, Caller;
    MissingBasis = "missing_basis", 400, Caller;
    InvalidBasis = "invalid_basis", 400, Caller;
    InvalidJurisdiction = "invalid_jurisdiction", 400, Caller;
    EmptyMatch = "empty_match", 400, Caller;
    TooMany = "too_many", 400, Caller;
    MissingExpiry = "missing_expiry", 400, Caller;
    InvalidExpiry = "invalid_expiry", 400, Caller;
    Expired = "expired", 400, Caller;
    InvalidReason = "invalid_reason", 400, Caller;
    InvalidSdp = "invalid_sdp", 400, Caller;
    Unauthorized = "unauthorized", 401, Caller;
    NotFound = "not_found", 404, Caller;
    NoSuchEndpoint = "no_such_endpoint", 404, Caller;
    RuleNotFound = "rule_not_found", 404, Caller;
    RequestTimeout = "request_timeout", 408, Caller;
    SsrcInUse = "ssrc_in_use", 409, Caller;
    AddressInUse = "address_in_use", 409, Caller;
    UfragInUse = "ufrag_in_use", 409, Caller;
    RuleNotActive = "rule_not_active", 409, Caller;
    WrongNode = "wrong_node", 409, Caller;
    InvalidRelaysIn = "invalid_relays_in", 400, Caller;
    CodecMismatch = "codec_mismatch", 409, Caller;
    NothingToReceive = "nothing_to_receive", 409, Caller;
    NoOffer = "no_offer", 409, Caller;
    PlainLegsFixed = "plain_legs_fixed", 409, Caller;
    TooManyRooms = "too_many_rooms", 409, Operator;
    RoomFull = "room_full", 409, Operator;
    EventsGone = "events_gone", 410, Caller;
    BodyTooLarge = "body_too_large", 413, Caller;
    TooManyRuleChanges = "too_many_rule_changes", 429, Operator;
    Internal = "internal", 500, Relay;
    StoreFailed = "store_failed", 500, Relay;
    Draining = "draining", 503, Operator;
    Overloaded = "overloaded", 503, Relay;
    WorkersUnavailable = "workers_unavailable", 503, Relay;
    Unhealthy = "unhealthy", 503, Relay;
    NotReady = "not_ready", 503, Relay;
    Fenced = "fenced", 503, Relay;
    FleetUnavailable = "fleet_unavailable", 503, Relay;
}

/// An API error: a code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong, as a stable code.
    pub code: Code,
    /// What went wrong and what to do.
    pub message: String,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `error` of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (see the error table in docs/API.md).
    #[schema(example = "ssrc_in_use")]
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with this code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        }
    }

    /// A rule body the rules module refused.
    pub fn from_rule(e: &crate::rules::RuleError) -> Self {
        use crate::rules::RuleError as E;
        let code = match e {
            E::Malformed(_) => Code::InvalidJson,
            E::MissingBasis { .. } => Code::MissingBasis,
            E::InvalidBasis { .. } => Code::InvalidBasis,
            E::InvalidJurisdiction { .. } => Code::InvalidJurisdiction,
            E::EmptyMatch => Code::EmptyMatch,
            E::InvalidRegion { .. } => Code::InvalidRegion,
            E::InvalidId { .. } => Code::InvalidId,
            E::TooMany { .. } => Code::TooMany,
            E::MissingExpiry => Code::MissingExpiry,
            E::InvalidExpiry { .. } => Code::InvalidExpiry,
            E::Expired { .. } => Code::Expired,
        };
        Self::new(code, e.to_string())
    }

    /// A store failure: the caller's input for the few it names, else the relay's own trouble.
    pub fn from_store(e: &crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        let code = match e {
            E::NotFound(_) => Code::RuleNotFound,
            E::NotActive { .. } => Code::RuleNotActive,
            E::InvalidReason(_) => Code::InvalidReason,
            _ => Code::StoreFailed,
        };
        Self::new(code, e.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_match_faults() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            match c.fault() {
                Fault::Caller => assert!((400..500).contains(&c.status()), "{c:?}"),
                Fault::Operator => assert!([409, 429, 503].contains(&c.status()), "{c:?}"),
                Fault::Relay => assert!(c.status() >= 500, "{c:?}"),
            }
        }
    }

    /// docs/API.md lists every code the relay can answer with.
    #[test]
    fn api_docs_list_every_code() {
        let docs = include_str!("../../../docs/API.md");
        let missing: Vec<&str> = Code::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| !docs.contains(&format!("`{c}`")))
            .collect();
        assert!(missing.is_empty(), "docs/API.md does not list: {missing:?}");
    }
}
