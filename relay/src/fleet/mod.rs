//! The fleet's link to etcd: membership, leases, self-fencing, the fleet audit chain and rule
//! acknowledgements.
//!
//! # Threads
//!
//! [`Fleet::start`] spawns one thread, `fleet`, with a current-thread tokio runtime of its own
//! (the `etcd-client` crate is async). Workers never see it; the control side talks to it
//! through [`Fleet`]'s methods and hears from it on a crossbeam [`Event`] channel and through
//! [`Status`], a few atomics (workers read [`Status::fenced`] once per batch).
//!
//! On the fleet thread run, as tasks: the lease keepalive (every TTL/10), the watches of the
//! node list (`nodes/`), of the rules (`rules/`), the participants and the rooms, each resumed by revision after a break and
//! resynced with a full read if the revision was compacted, a 10 ms fence tick that turns [`fence::Fence`] into [`Status`], and one task per
//! request the control side made.
//!
//! # Calling order (the control thread)
//!
//! 1. `Fleet::start(config)`: connects, gets (or, the first time, allocates) the node's number,
//!    waits until no live node holds the name, grants a lease, registers `nodes/{node}` under
//!    it and reads the node list; returns the handle and the event receiver. The relay is
//!    fenced (`Status::fenced`) until step 2.
//! 2. Apply every rule up to [`Fleet::joined_at`] ([`Fleet::rules`] at that revision), publish
//!    to the workers, then [`Fleet::ack`] with that revision: the fence lifts.
//! 3. A rule change: [`Fleet::append`] (one etcd `Txn`: audit entry, head, rule keys; CAS on
//!    the head, retried on conflict) gives revision R; apply it locally, [`Fleet::ack`] R; then
//!    [`Fleet::wait_acks`] R; for each node in [`Acks::missing`], [`Fleet::fence_node`] (revoke
//!    its lease, wait one TTL). Then answer `201` with `in_force_on` = acked and `fenced` =
//!    missing and gone.
//! 4. Every node: on [`Event::Rule`] at revision R (changes after the join revision, in
//!    order), apply it, then [`Fleet::ack`] R.
//! 5. [`Event::NodeJoined`] / [`Event::NodeLost`]: update trunks and rooms;
//!    [`Event::LeaseLost`]: the relay is fenced; [`Event::Rejoined`]: apply rules up to the new
//!    join revision and ack it (step 2 again).
//! 6. [`Fleet::stop`] at shutdown revokes the lease (peers see `NodeLost` at once);
//!    [`Fleet::halt`] leaves it to expire, as a crash would.
//!
//! Every method that talks to etcd has a blocking form and a `*_then` form that calls a
//! closure on the fleet thread with the result, so a single control thread never waits on the
//! store: the closure sends the result back into the control thread's own channel.
//!
//! See [`keys`] for the layout in etcd and [`fence`] for the fencing rule and why it makes a
//! rule in force fleet-wide when the call returns.

mod client;
pub mod fence;
pub mod keys;
mod ops;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use client::Fleet;

use crate::packet::trunk;
use crate::store::{AuditEntry, StoreError};

/// How to reach etcd and who this node is.
#[derive(Clone, Debug)]
pub struct Config {
    /// etcd client URLs, `http://host:port` (`--etcd URL[,URL...]`).
    pub endpoints: Vec<String>,
    /// This node's unique name (`--node`): 1 to 64 bytes of `[A-Za-z0-9._-]`.
    pub node: String,
    /// Where it runs (`--region`), ISO 3166-1 alpha-2 or any short code.
    pub region: String,
    /// Its UDP address for relay-to-relay traffic (`--trunk`).
    pub trunk: SocketAddr,
    /// Its control API address.
    pub control: SocketAddr,
    /// The lease TTL (3 s by default; etcd's minimum is about 1.5 election timeouts, 2 s with
    /// its defaults).
    pub ttl: Duration,
    /// Taken off the lease deadline: forwarding stops this long before the lease could
    /// expire in the store (250 ms by default: it covers the fence tick, the workers' next
    /// batch and the clock-rate difference between this machine and etcd's over one TTL).
    pub margin: Duration,
    /// The key prefix ([`keys::DEFAULT_PREFIX`] by default).
    pub prefix: String,
    /// Longest wait for one etcd call (2 s by default).
    pub op_timeout: Duration,
}

/// A node as registered under `nodes/{node}`. No address but the relay's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its unique name.
    pub node: String,
    /// Where it runs.
    pub region: String,
    /// Its trunk address.
    pub trunk: SocketAddr,
    /// Its control API address.
    pub control: SocketAddr,
    /// Its load (participants it serves), for placement.
    pub load: u32,
    /// Its fleet node number (trunk headers' origin).
    pub number: u16,
    /// The revision of this registration (its key's create revision); 0 until registered.
    #[serde(skip)]
    pub registered_at: i64,
}

/// What the fleet thread tells the control side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Another node registered (also sent once for each node already there at start).
    NodeJoined(NodeInfo),
    /// Another node's registration is gone: its lease expired or was revoked, or it stopped.
    NodeLost {
        /// Its name.
        node: String,
    },
    /// This node's lease is gone: it is fenced and rejoining.
    LeaseLost,
    /// This node registered again under a new lease at `joined_at`: apply the rules up to
    /// that revision and [`Fleet::ack`] it to lift the fence.
    Rejoined {
        /// The new registration's revision.
        joined_at: i64,
    },
    /// A key under `rules/` changed at `revision` (in revision order, from the revision the
    /// fleet joined at on).
    Rule {
        /// The full key.
        key: String,
        /// The new value; `None` when the key was deleted.
        value: Option<Vec<u8>>,
        /// The change's revision: apply it, then [`Fleet::ack`] it.
        revision: i64,
    },
    /// The rule watch fell behind a compaction: read every rule afresh with
    /// [`Fleet::rules`] and apply that.
    RulesResync,
    /// A key under `participants/` changed (from the revision the node list was read at on).
    Participant {
        /// The full key.
        key: String,
        /// The new value; `None` when deleted (removed, or its node's lease ended).
        value: Option<Vec<u8>>,
    },
    /// The participant watch fell behind a compaction: read `participants/` afresh.
    ParticipantsResync,
    /// A key under `rooms/` changed (from the revision the node list was read at on).
    Room {
        /// The full key.
        key: String,
        /// The new value; `None` when deleted (the room was closed fleet-wide).
        value: Option<Vec<u8>>,
    },
    /// The room watch fell behind a compaction: read `rooms/` afresh.
    RoomsResync,
}

/// What [`Fleet::append`] writes besides the audit entry, built for the entry's seq (the
/// builder runs again on each retry, with the seq then current).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Append {
    /// The audit entry's detail (no addresses).
    pub detail: Value,
    /// Keys to put in the same transaction (full keys, from [`keys::Keys`]).
    pub puts: Vec<(String, Vec<u8>)>,
    /// Keys to delete in the same transaction.
    pub deletes: Vec<String>,
    /// A key that must still hold this value for the append to happen (a rule record that
    /// may change under us: lifted or expired by another relay). If it no longer does, the
    /// append fails with [`FleetError::Stale`] and nothing is written.
    pub expect: Option<(String, Vec<u8>)>,
}

/// A committed audit append.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// The etcd revision of the transaction.
    pub revision: i64,
    /// The entry, as stored under `audit/entries/{seq}`.
    pub entry: AuditEntry,
}

/// Every rule key at one revision ([`Fleet::rules`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// The revision they were read at.
    pub revision: i64,
    /// Full key and value of each, in key order.
    pub rules: Vec<(String, Vec<u8>)>,
}

/// What [`Fleet::wait_acks`] found; each list in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// The revision waited for.
    pub revision: i64,
    /// Nodes registered at `revision` that acknowledged it.
    pub acked: Vec<String>,
    /// Nodes registered at `revision` whose registration went away before they acked (lease
    /// expired or revoked): they have stopped forwarding, and apply everything before they
    /// forward again.
    pub gone: Vec<String>,
    /// Nodes registered at `revision` that neither acked nor went away in time: fence them.
    pub missing: Vec<String>,
}

/// The fleet state that other threads read without asking the fleet thread.
#[derive(Debug)]
pub struct Status {
    fenced: AtomicBool,
    /// The lease deadline in nanoseconds after `base` (0: none). Checked on every read, so a
    /// relay that was stopped (SIGSTOP, a paused VM) is fenced the moment it runs again, not
    /// at the fleet thread's next tick.
    deadline_ns: AtomicU64,
    base: Instant,
    joined_at: AtomicI64,
    applied: AtomicI64,
    slack_ms: AtomicI64,
}

/// Why a fleet call failed.
#[derive(Debug)]
pub enum FleetError {
    /// The configuration cannot work (bad node name, no endpoint, TTL under the margin).
    Config(String),
    /// etcd did not answer in time or refused the call; nothing may have changed, or (for a
    /// commit that timed out) the change may still land: read it back.
    Unavailable(String),
    /// No etcd member could be reached: nothing was sent.
    Unreachable(String),
    /// Another live node holds this node's name.
    NameTaken(String),
    /// The audit head kept moving under us; nothing was written.
    Conflict,
    /// The key an append expected to be unchanged has changed (named); nothing was written.
    Stale(String),
    /// The audit entry could not be built (a bad action) or mirrored.
    Store(StoreError),
    /// A value in etcd did not parse (written by someone else).
    Corrupt(String),
    /// The fleet thread has stopped.
    Stopped,
}

impl Config {
    /// A configuration with the defaults for TTL (3 s), margin (250 ms), prefix and timeout.
    pub fn new(
        endpoints: Vec<String>,
        node: &str,
        region: &str,
        trunk: SocketAddr,
        control: SocketAddr,
    ) -> Self {
        Self {
            endpoints,
            node: node.to_owned(),
            region: region.to_owned(),
            trunk,
            control,
            ttl: Duration::from_secs(3),
            margin: Duration::from_millis(250),
            prefix: keys::DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_secs(2),
        }
    }

    fn check(&self) -> Result<(), FleetError> {
        if !keys::valid_node_name(&self.node) {
            return Err(FleetError::Config(format!(
                "node name {:?} is not 1 to 64 of [A-Za-z0-9._-]",
                self.node
            )));
        }
        if self.endpoints.is_empty() {
            return Err(FleetError::Config("no etcd endpoint".into()));
        }
        if self.ttl.as_secs() < 2 || self.ttl.subsec_nanos() != 0 {
            return Err(FleetError::Config(
                "the lease TTL is whole seconds, 2 at least".into(),
            ));
        }
        if self.margin >= self.ttl {
            return Err(FleetError::Config(
                "the fencing margin must be shorter than the TTL".into(),
            ));
        }
        Ok(())
    }
}

impl NodeInfo {
    /// The node number for trunk headers.
    pub fn number(&self) -> trunk::NodeNo {
        trunk::NodeNo(self.number)
    }

    /// The membership epoch for trunk headers: the low 32 bits of the registration revision
    /// (the truncation is deliberate: receivers compare epochs for equality only).
    pub fn epoch(&self) -> trunk::Epoch {
        trunk::Epoch(self.registered_at as u32)
    }
}

impl Default for Status {
    fn default() -> Self {
        Self::new()
    }
}

impl Status {
    /// A status that says fenced until a fleet started with it ([`Fleet::start_with`]) has
    /// joined and caught up. Made before the fleet so the workers can hold it from their start.
    pub fn new() -> Self {
        Self {
            fenced: AtomicBool::new(true),
            deadline_ns: AtomicU64::new(0),
            base: Instant::now(),
            joined_at: AtomicI64::new(0),
            applied: AtomicI64::new(0),
            slack_ms: AtomicI64::new(0),
        }
    }

    /// Whether the relay must forward nothing now: the fleet thread's verdict (updated every
    /// 10 ms and at each keepalive answer), or the lease deadline passed, read against the
    /// clock now.
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
            || self.base.elapsed().as_nanos() as u64 >= self.deadline_ns.load(Ordering::Relaxed)
    }

    /// Sets the fleet thread's verdict and the lease deadline (`None`: no lease).
    pub(crate) fn set(&self, fenced: bool, deadline: Option<Instant>) {
        let ns = deadline.map_or(0, |d| {
            (d.saturating_duration_since(self.base).as_nanos() as u64).max(1)
        });
        self.deadline_ns.store(ns, Ordering::Relaxed);
        self.fenced.store(fenced, Ordering::Relaxed);
    }

    /// The revision of the current registration.
    pub fn joined_at(&self) -> i64 {
        self.joined_at.load(Ordering::Relaxed)
    }

    /// The highest revision acknowledged as applied.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Milliseconds left before the lease deadline at the last fence tick (negative when
    /// past it; 0 without a lease).
    pub fn slack_ms(&self) -> i64 {
        self.slack_ms.load(Ordering::Relaxed)
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "fleet configuration: {why}"),
            Self::Unavailable(why) => write!(f, "etcd unavailable: {why}"),
            Self::Unreachable(why) => write!(f, "no etcd member reachable: {why}"),
            Self::NameTaken(node) => write!(f, "a live node is already named {node:?}"),
            Self::Conflict => f.write_str("the audit chain kept moving; nothing was written"),
            Self::Stale(key) => write!(f, "{key} changed meanwhile; nothing was written"),
            Self::Store(e) => write!(f, "audit entry: {e}"),
            Self::Corrupt(why) => write!(f, "unreadable fleet value: {why}"),
            Self::Stopped => f.write_str("the fleet thread has stopped"),
        }
    }
}

impl std::error::Error for FleetError {}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
