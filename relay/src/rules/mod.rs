//! Drop rules: the request model, validation, matching and the rule index.
//!
//! A rule says "drop this media of these participants", with a legal basis and an expiry.
//! This module is pure: it does no I/O, starts no thread and never reads the clock. Whoever
//! calls it passes the current time in as unix seconds.
//!
//! # Model
//!
//! - [`RuleSpec`] is the `POST /v1/rules` body as the API receives it (serde, unknown fields
//!   refused). [`parse`] reads it from bytes.
//! - [`validate`] checks a spec against the contract and gives a [`Rule`]: ids checked, regions as
//!   two bytes, lists sorted and deduplicated, expiry as unix seconds. Each refusal is a
//!   [`RuleError`] with a stable [`RuleError::code`] and a message that says what to fix.
//!   [`compile`] does the same checks except "expires in the future"; it is for rules restored
//!   from the store, whose expiry the caller handles itself.
//! - A participant is a [`Subject`]: room, participant id and region. [`Rule::matches`] is the
//!   contract: the subject is in one of the rule's rooms (no rooms: any room) AND (its
//!   `(room, participant)` is listed OR its region is listed).
//! - [`RuleSet`] holds the rules in force by [`RuleId`], indexed by `(room, participant)` and by
//!   region, so [`RuleSet::matching`] looks at the rules that name the subject only, never at
//!   all rules. [`RuleSet::effect`] folds the matches into an [`Effect`]: which rule, if any,
//!   blocks each of (send, receive) x (audio, video). The lowest rule id wins, so the result does
//!   not depend on insertion order.
//!
//! # Calling order (the state owner)
//!
//! 1. On `POST /v1/rules`: [`parse`], then [`validate`] with the current time, then store the
//!    rule durably, then [`RuleSet::insert`] with the id the store gave.
//! 2. Recompile every room that holds a participant the new rule matches: for each participant
//!    of those rooms, [`RuleSet::effect`] gives what to leave out of the fan-out lists. The rule
//!    set cannot name the rooms itself, as it holds no room state; the owner, which does, tests
//!    its participants with [`Rule::matches`] (or recompiles the rooms in [`Rule::rooms`] when
//!    that list is short).
//! 3. On `DELETE /v1/rules/{id}` and on expiry: [`RuleSet::remove`], then recompile as in 2.
//! 4. Once a second (or at [`RuleSet::next_expiry`]): [`RuleSet::expired`] with the current
//!    time lists the rules to expire.
//! 5. When a participant joins or changes region: [`RuleSet::effect`] for it. Rules apply to
//!    participants who join later because matching runs on every join, not only on insert.
//!
//! # Direction and media
//!
//! `send` blocks a matched participant's outgoing media: nobody receives it. `receive` blocks
//! its incoming media: it receives nothing. RTCP follows the media it is about: a sender report
//! goes where the sender's media may go, and feedback about a track only goes back where that
//! track's media may come from, so the same [`Effect`] applies to RTCP as to RTP.
//!
//! # What it never does
//!
//! It never sees addresses: a subject is ids and a region only. It never reads the clock.

#![deny(unsafe_code)]

mod rule;
mod set;
mod spec;

pub use rule::{Rule, RuleError, Subject, compile, validate};
pub use set::{Effect, RuleSet};
pub use spec::{Basis, Direction, Match, Media, ParticipantRef, RuleSpec, parse};

use serde::{Deserialize, Serialize};

/// A rule's id, assigned by the store (SQLite rowid), never reused.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct RuleId(pub u64);

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The kind of media a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Audio track.
    Audio,
    /// Video track.
    Video,
}

/// Live counters of one rule, kept by the state owner and its workers.
///
/// The store persists all but `participants_matched` (which is about the present only) and
/// the transparency report prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounters {
    /// Participants the rule matches now.
    pub participants_matched: u64,
    /// Participants the rule has matched since it was added (each join counts once).
    pub participants_matched_total: u64,
    /// Packets not forwarded because a matched participant may not send them.
    pub packets_dropped_send: u64,
    /// Packets not forwarded because a matched participant may not receive them.
    pub packets_dropped_receive: u64,
}

/// Longest room or participant id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest basis field (authority, reference, jurisdiction), in bytes.
pub const MAX_BASIS_LEN: usize = 256;
/// Most entries in each of `regions`, `participants` and `rooms`.
pub const MAX_LIST_LEN: usize = 10_000;

#[cfg(test)]
mod tests;
