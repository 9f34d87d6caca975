//! One change, written in one transaction: rules with their audit entries, rooms, participants
//! and rule counters.
//!
//! The control thread opens a [`Batch`], applies the writes of one change, publishes the change
//! to the workers, and commits only once every worker applied it; if anything fails the batch
//! is dropped, which rolls it back. So what is on disk is always a state the workers served.
//!
//! Rooms and participants are kept so that a restart keeps meetings, but never a participant's
//! address: a participant comes back without one, and gets it again from signaling or at its
//! next STUN check.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::json;

use super::{Store, StoreError, audit, from_sql, require_active, to_sql, unix_rfc3339};
use crate::rules::{RuleCounters, RuleId, RuleSpec};

/// A room as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    /// Room id.
    pub room: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The control core's JSON of the room's own settings (codec table, `plain_legs`).
    pub state: String,
}

/// A participant as the database keeps it: the control core's own JSON text, which holds no
/// address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantRecord {
    /// Room id.
    pub room: String,
    /// Participant id.
    pub participant: String,
    /// The participant's saved state (JSON).
    pub state: String,
}

/// One write of a change.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    /// A new rule, audited as `rule_added`.
    AddRule {
        /// Its id (the control core assigns ids; they are never reused).
        id: RuleId,
        /// Its body.
        spec: RuleSpec,
        /// When it expires, unix seconds.
        expires_at: u64,
        /// When it was added (RFC 3339 with milliseconds).
        time: String,
    },
    /// A rule lifted, audited as `rule_lifted` with the reason.
    LiftRule {
        /// The rule.
        id: RuleId,
        /// Why.
        reason: String,
        /// When (RFC 3339 with milliseconds).
        time: String,
    },
    /// A rule expired, audited as `rule_expired`.
    ExpireRule {
        /// The rule.
        id: RuleId,
        /// When its expiry was recorded.
        time: String,
    },
    /// Rule counters, replacing earlier values.
    SaveCounters(Vec<(RuleId, RuleCounters)>),
    /// A room created.
    PutRoom(RoomRecord),
    /// A room closed, with its participants.
    DeleteRoom(String),
    /// A participant added or changed.
    PutParticipant(ParticipantRecord),
    /// A participant removed.
    DeleteParticipant {
        /// Room id.
        room: String,
        /// Participant id.
        participant: String,
    },
}

/// An open write transaction. Dropping it rolls back.
pub struct Batch<'a> {
    tx: Transaction<'a>,
}

impl Store {
    /// Opens a write transaction (`BEGIN IMMEDIATE`: the write lock is taken now).
    pub fn begin(&mut self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
        })
    }

    /// The id the next rule gets: never one used before, even by a rule that was deleted from
    /// the file.
    pub fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'rules'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM rules", [], |r| r.get(0))?;
        Ok(RuleId(from_sql(seq.unwrap_or(0).max(max.unwrap_or(0))) + 1))
    }

    /// Counts this start as a new run and returns its number (1 for the first).
    pub fn next_run(&mut self) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let run: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'runs'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let run = run.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('runs', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [run.to_string()],
        )?;
        tx.commit()?;
        Ok(run)
    }

    /// Every room kept, by id.
    pub fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT room, created_at, state FROM rooms ORDER BY room")?;
        let rows = stmt.query_map([], |r| {
            Ok(RoomRecord {
                room: r.get(0)?,
                created_at: r.get(1)?,
                state: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every participant kept, by room and id.
    pub fn participants(&self) -> Result<Vec<ParticipantRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT room, participant, state FROM participants ORDER BY room, participant",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ParticipantRecord {
                room: r.get(0)?,
                participant: r.get(1)?,
                state: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Batch<'_> {
    /// Applies the writes in order. On error the batch must be dropped (rolled back).
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            apply(&self.tx, op)?;
        }
        Ok(())
    }

    /// Commits: the change is on disk when this returns (WAL, `synchronous=FULL`).
    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

fn apply(conn: &Connection, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::AddRule {
            id,
            spec,
            expires_at,
            time,
        } => {
            let spec_value = serde_json::to_value(spec)?;
            conn.execute(
                "INSERT INTO rules (id, spec, created_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, 'active')",
                (
                    to_sql(id.0),
                    audit::canonical(&spec_value),
                    time,
                    to_sql(*expires_at),
                ),
            )?;
            audit::append(
                conn,
                time,
                "rule_added",
                &json!({"rule": id, "spec": spec_value}),
            )?;
        }
        StoreOp::LiftRule { id, reason, time } => {
            super::check_reason(reason)?;
            require_active(conn, *id)?;
            conn.execute(
                "UPDATE rules SET state = 'lifted', lifted_at = ?2, lift_reason = ?3 WHERE id = ?1",
                (to_sql(id.0), time, reason),
            )?;
            audit::append(
                conn,
                time,
                "rule_lifted",
                &json!({"rule": id, "reason": reason}),
            )?;
        }
        StoreOp::ExpireRule { id, time } => {
            let expires_at = require_active(conn, *id)?;
            conn.execute(
                "UPDATE rules SET state = 'expired', expired_at = ?2 WHERE id = ?1",
                (to_sql(id.0), time),
            )?;
            let detail = json!({"rule": id, "expires_at": unix_rfc3339(expires_at)});
            audit::append(conn, time, "rule_expired", &detail)?;
        }
        StoreOp::SaveCounters(counters) => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO rule_counters (rule_id, participants_matched_total,
                     packets_dropped_send, packets_dropped_receive)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (rule_id) DO UPDATE SET
                     participants_matched_total = excluded.participants_matched_total,
                     packets_dropped_send = excluded.packets_dropped_send,
                     packets_dropped_receive = excluded.packets_dropped_receive",
            )?;
            for (id, c) in counters {
                stmt.execute((
                    to_sql(id.0),
                    to_sql(c.participants_matched_total),
                    to_sql(c.packets_dropped_send),
                    to_sql(c.packets_dropped_receive),
                ))?;
            }
        }
        StoreOp::PutRoom(r) => {
            conn.prepare_cached(
                "INSERT INTO rooms (room, created_at, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room) DO UPDATE SET created_at = excluded.created_at,
                 state = excluded.state",
            )?
            .execute((&r.room, &r.created_at, &r.state))?;
        }
        StoreOp::DeleteRoom(room) => {
            conn.prepare_cached("DELETE FROM participants WHERE room = ?1")?
                .execute([room])?;
            conn.prepare_cached("DELETE FROM rooms WHERE room = ?1")?
                .execute([room])?;
        }
        StoreOp::PutParticipant(p) => {
            conn.prepare_cached(
                "INSERT INTO participants (room, participant, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room, participant) DO UPDATE SET state = excluded.state",
            )?
            .execute((&p.room, &p.participant, &p.state))?;
        }
        StoreOp::DeleteParticipant { room, participant } => {
            conn.prepare_cached("DELETE FROM participants WHERE room = ?1 AND participant = ?2")?
                .execute((room, participant))?;
        }
    }
    Ok(())
}
