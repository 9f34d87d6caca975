//! Rooms, participants and tracks compiled into per-worker routing tables.
//!
//! This module is pure: it never touches a socket, a thread or the clock.
//!
//! # Calling order
//!
//! - The control core keeps each room's last snapshot ([`Room`]) and gives every participant a
//!   slot ([`Slots`]). After a change it calls [`compile`] with that snapshot, the room as it is
//!   now (a [`Roster`]) and the participants that changed; it gets the next snapshot and the
//!   slots that differ, and publishes them as an [`Update`]. Compiling from scratch is the same
//!   call from [`Room::empty`] ([`compile_all`]).
//! - Each worker keeps a [`Table`] and applies [`Update`]s between batches: it swaps the room's
//!   snapshot and indexes the changed slots again, O(change).
//! - Per datagram, a worker calls [`Table::route`], which looks up the source address once, finds
//!   the track, adds to counters and emits each destination, read off the room's per-chunk
//!   bitmasks (see `room.rs`). A rule costs nothing per packet beyond one counter add: it has
//!   already cleared the receivers' bits or stopped the track.
//! - Workers that share large rooms' fan-outs call [`Table::route_shared`] with their [`Share`]
//!   instead: it sends this worker's chunks to a [`Sink`] and hands each other worker a [`Hot`]
//!   packet (room, sender's slot and SSRC), whose share that worker routes with its own table,
//!   [`Table::route_hot`] (`share.rs`). In fleet mode the same call also gives the [`Sink`] the
//!   copies for peer relays ([`Sink::trunk`]): the receiving worker sends those itself.
//! - The clear copy of a WebRTC leg's datagram (unprotected by the worker) goes to
//!   [`Table::route_clear`]: local receivers from this worker, and in fleet mode the copies for
//!   peer relays with the trunk header's W bit set.
//! - A datagram from the trunk port goes to [`Table::route_trunk`]: local receivers only, all of
//!   them from the worker that received it, never handed off; one with W reaches plain
//!   receivers only in a `plain_legs` room.
#![deny(unsafe_code)]

mod addr;
mod compile;
mod counter;
mod ice;
mod leg;
mod room;
mod share;
mod table;
mod trunk;

pub use addr::Addr;
pub use compile::{Change, Compiled, Participant, Roster, Slots, compile, compile_all};
pub use counter::{Counter, ParticipantCounter, ParticipantCounters, RuleCounters};
pub use ice::{Credentials, Latch, StunAction, StunGuard};
pub use leg::{DtlsLeg, Leg, Legs, Session, SrtpLeg};
pub use room::{Blocks, CHUNK, CompileError, MAX_TRUNKS, MediaKind, Room};
pub use share::{Hot, Share, Sink, sender_of};
pub use table::{Dest, DropReason, RoomId, Table, Update, Verdict};
pub use trunk::{Local, Peer, Peers, TrunkCounters, room_number};

#[cfg(any(test, fuzzing))]
pub mod testing;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trunk_tests;
