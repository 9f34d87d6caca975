//! Rooms, participants and tracks compiled into per-worker routing tables.
//!
//! This module is pure: it never touches a socket, a thread or the clock.
//!
//! - The control thread describes each room as a list of [`MemberSpec`]s and compiles it with
//!   [`Room::compile`]: fan-out lists per track, with subscriptions and drop rules already applied.
//! - Each worker keeps a [`Table`] and receives [`Update`]s between batches.
//! - Per datagram, a worker calls [`Table::route`], which looks up the source address once, finds
//!   the track, adds to counters and emits each destination. A rule costs nothing per packet beyond
//!   one counter add: it has already removed receivers from the fan-out list.
#![deny(unsafe_code)]

mod compile;
mod counter;
mod ice;
mod room;
mod table;

pub use compile::{Compiled, Participant, compile};
pub use counter::{Counter, ParticipantCounters, RuleCounters};
pub use ice::{Credentials, Latch, StunAction, StunGuard};
pub use room::{Blocks, CompileError, MediaKind, MemberSpec, Room, Subscription};
pub use table::{DropReason, RoomId, Table, Update, Verdict};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
