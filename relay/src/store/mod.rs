//! Durable state: drop rules and the audit log, in one SQLite database.
//!
//! The database is `relay.db` in the data directory, in WAL mode with `synchronous=FULL`, so a
//! transaction is on disk when its commit returns. Each change to a rule is one transaction
//! that also appends its audit entry: the rule and its record are written together or not at
//! all, and the API answers only after the commit.
//!
//! # Calling order (the state owner, the only writer)
//!
//! 1. Start-up: [`Store::open`], then [`Store::restore`] with the current time. It expires
//!    (and audits) rules whose time passed while the relay was down and returns the rest, to
//!    put in a [`crate::rules::RuleSet`] before the first packet is forwarded. Seed the live
//!    counters from [`Store::counters`]. Optionally [`Store::verify`] and
//!    [`Store::append`] a `startup` entry.
//! 2. `POST /v1/rules`: validate, then [`Store::add_rule`], then enforce under the returned id.
//! 3. `DELETE /v1/rules/{id}`: [`Store::lift_rule`], then stop enforcing.
//! 4. Expiry (once a second): [`Store::expire_rule`] for each rule the rule set lists.
//! 5. Every few seconds and at shutdown: [`Store::save_counters`].
//! 6. Reads: [`Store::all_rules`], [`Store::rule`], [`Store::entries`],
//!    [`Store::transparency`].
//!
//! # What it never stores
//!
//! Addresses. Rules hold room and participant ids, regions and their legal basis; the audit
//! log holds the same, rule ids and reasons. Callers of [`Store::append`] must keep addresses
//! out of `detail` too.
//!
//! See the `audit` module docs for the hash chain's exact encoding.

mod audit;
mod batch;
mod schema;
mod transparency;

pub use audit::{
    AuditEntry, VerifyError, VerifyReport, ZERO_HASH, next_entry, run_verify_cli, verify,
};
pub use batch::{Batch, ParticipantRecord, RoomRecord, StoreOp};
pub use transparency::{AuditHead, Dropped, RuleReport, StateCounts, Transparency};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use serde_json::Value;

use crate::rules::{self, Rule, RuleCounters, RuleError, RuleId, RuleSpec};

/// The rule and audit database. One per data directory; the state owner holds it.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Where a rule is in its life.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleState {
    /// In force.
    Active,
    /// Lifted through the API, with a reason.
    Lifted,
    /// Ended at its `expires_at`.
    Expired,
}

/// A rule as stored, for `GET /v1/rules`: the request body's fields plus its id and history.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredRule {
    /// The rule's id.
    pub id: RuleId,
    /// The body it was added with.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Active, lifted or expired.
    pub state: RuleState,
    /// When it was added (RFC 3339 UTC).
    pub created_at: String,
    /// When it was lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<String>,
    /// Why it was lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift_reason: Option<String>,
    /// When its expiry was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
}

/// Why a store call failed. `NotFound`, `NotActive` and `InvalidReason` are the caller's
/// input (4xx, see [`StoreError::code`]); the rest are the relay's own trouble (5xx). Nothing
/// is changed when a call fails.
#[derive(Debug)]
pub enum StoreError {
    /// No rule has this id: 404.
    NotFound(RuleId),
    /// The rule was already lifted or expired: 409.
    NotActive {
        /// The rule.
        id: RuleId,
        /// Its state.
        state: RuleState,
    },
    /// The lift reason is blank, longer than 1024 bytes or holds control characters: 400.
    InvalidReason(&'static str),
    /// An audit action that is not 1 to 64 bytes of `[a-z0-9_.]` (a bug in the caller).
    InvalidAction(String),
    /// A stored rule no longer passes the rule checks, so it cannot be enforced. The relay
    /// should not start: it would run without a rule that is in force.
    BadRule {
        /// The rule.
        id: RuleId,
        /// What the check said.
        error: RuleError,
    },
    /// The database was written by a newer relay (its schema version).
    Schema(i64),
    /// WAL could not be turned on (the journal mode SQLite kept).
    JournalMode(String),
    /// Creating the data directory failed.
    Io(std::io::Error),
    /// An entry given to [`Store::mirror`] does not follow the recorded head (wrong seq or
    /// `prev_hash`) or does not hash to its `hash`: the mirrored chain forked or was changed.
    Unchained {
        /// The entry's seq.
        seq: u64,
    },
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// A stored JSON text did not parse.
    Json(serde_json::Error),
}

impl Store {
    /// Opens (creating when absent) `relay.db` in `dir`, creating `dir` too.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode(mode));
        }
        // FULL: the WAL is synced at every commit, so a committed rule survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn, path })
    }

    /// Stores a validated rule and audits `rule_added`, in one transaction. `rule` must be
    /// what [`rules::validate`] returned for `spec`. The store picks the id.
    pub fn add_rule(&mut self, spec: &RuleSpec, rule: &Rule) -> Result<RuleId, StoreError> {
        let id = self.next_rule_id()?;
        let batch = self.begin()?;
        batch.apply(&[StoreOp::AddRule {
            id,
            spec: spec.clone(),
            expires_at: rule.expires_at_unix(),
            time: now_rfc3339(),
        }])?;
        batch.commit()?;
        Ok(id)
    }

    /// Lifts an active rule and audits `rule_lifted` with the reason, in one transaction.
    pub fn lift_rule(&mut self, id: RuleId, reason: &str) -> Result<(), StoreError> {
        let batch = self.begin()?;
        batch.apply(&[StoreOp::LiftRule {
            id,
            reason: reason.to_owned(),
            time: now_rfc3339(),
        }])?;
        batch.commit()
    }

    /// Marks an active rule expired and audits `rule_expired`, in one transaction.
    pub fn expire_rule(&mut self, id: RuleId) -> Result<(), StoreError> {
        let batch = self.begin()?;
        batch.apply(&[StoreOp::ExpireRule {
            id,
            time: now_rfc3339(),
        }])?;
        batch.commit()
    }

    /// Expires every active rule whose expiry is at or before `now_unix`; returns their ids.
    pub fn expire_overdue(&mut self, now_unix: u64) -> Result<Vec<RuleId>, StoreError> {
        let ids = {
            let mut stmt = self.conn.prepare(
                "SELECT id FROM rules WHERE state = 'active' AND expires_at <= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([to_sql(now_unix)], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|id| RuleId(from_sql(id))))
                .collect::<Result<Vec<_>, _>>()?
        };
        for id in &ids {
            self.expire_rule(*id)?;
        }
        Ok(ids)
    }

    /// Start-up: expires overdue rules, then returns every rule still in force, compiled.
    ///
    /// Fails with [`StoreError::BadRule`] when a stored rule no longer compiles, rather than
    /// start without it.
    pub fn restore(&mut self, now_unix: u64) -> Result<Vec<(RuleId, Rule)>, StoreError> {
        self.expire_overdue(now_unix)?;
        let mut out = Vec::new();
        for (id, spec) in self.active_rules(now_unix)? {
            let rule = rules::compile(&spec).map_err(|error| StoreError::BadRule { id, error })?;
            out.push((id, rule));
        }
        Ok(out)
    }

    /// Appends an audit entry (`startup`, `shutdown`, ...) in its own transaction.
    ///
    /// `action` is 1 to 64 bytes of `[a-z0-9_.]`. `detail` must not hold addresses.
    pub fn append(&mut self, action: &str, detail: &Value) -> Result<AuditEntry, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let entry = audit::append(&tx, &now_rfc3339(), action, detail)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Appends an audit entry made elsewhere, as it is: the fleet's chain in etcd, mirrored
    /// here so that `relay audit verify` checks it offline. Fails with
    /// [`StoreError::Unchained`] (and changes nothing) unless `entry` follows the recorded head
    /// and hashes right.
    pub fn mirror(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        audit::mirror(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Saves rule counters (all fields but `participants_matched`), replacing earlier values.
    ///
    /// Values are absolute: seed the live counters from [`Self::counters`] at start-up so
    /// they carry on across restarts.
    pub fn save_counters(&mut self, counters: &[(RuleId, RuleCounters)]) -> Result<(), StoreError> {
        let batch = self.begin()?;
        batch.apply(&[StoreOp::SaveCounters(counters.to_vec())])?;
        batch.commit()
    }

    /// Rules still in force at `now_unix` (active and not yet past expiry), by id.
    pub fn active_rules(&self, now_unix: u64) -> Result<Vec<(RuleId, RuleSpec)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, spec FROM rules WHERE state = 'active' AND expires_at > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([to_sql(now_unix)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, spec) = row?;
            out.push((RuleId(from_sql(id)), serde_json::from_str(&spec)?));
        }
        Ok(out)
    }

    /// Every rule ever added, by id.
    pub fn all_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        self.query_rules("SELECT id, spec, state, created_at, lifted_at, lift_reason, expired_at FROM rules ORDER BY id", [])
    }

    /// One rule, whatever its state.
    pub fn rule(&self, id: RuleId) -> Result<Option<StoredRule>, StoreError> {
        let mut rules = self.query_rules(
            "SELECT id, spec, state, created_at, lifted_at, lift_reason, expired_at FROM rules WHERE id = ?1",
            [to_sql(id.0)],
        )?;
        Ok(rules.pop())
    }

    /// Saved counters, for every rule that has them (`participants_matched` is 0).
    pub fn counters(&self) -> Result<Vec<(RuleId, RuleCounters)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT rule_id, participants_matched_total, packets_dropped_send,
                 packets_dropped_receive FROM rule_counters ORDER BY rule_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                RuleId(from_sql(r.get(0)?)),
                RuleCounters {
                    participants_matched: 0,
                    participants_matched_total: from_sql(r.get(1)?),
                    packets_dropped_send: from_sql(r.get(2)?),
                    packets_dropped_receive: from_sql(r.get(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Audit entries after `after_seq` (0: from the start), oldest first, at most `limit`.
    pub fn entries(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        audit::entries(&self.conn, after_seq, limit)
    }

    /// The last audit entry's seq and hash (0 and 64 zeros when the log is empty).
    pub fn audit_head(&self) -> Result<(u64, String), StoreError> {
        audit::head(&self.conn)
    }

    /// Checks the audit chain through this connection (see [`verify`]).
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        audit::verify_conn(&self.conn)
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_rules<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Vec<StoredRule>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, spec, state, created_at, lifted_at, lift_reason, expired_at) = row?;
            out.push(StoredRule {
                id: RuleId(from_sql(id)),
                spec: serde_json::from_str(&spec)?,
                state: RuleState::parse(&state)?,
                created_at,
                lifted_at,
                lift_reason,
                expired_at,
            });
        }
        Ok(out)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RuleState {
    /// The lowercase name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Lifted => "lifted",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "lifted" => Ok(Self::Lifted),
            "expired" => Ok(Self::Expired),
            _ => Err(StoreError::Sqlite(rusqlite::Error::InvalidColumnType(
                0,
                format!("state {s:?}"),
                rusqlite::types::Type::Text,
            ))),
        }
    }
}

impl StoreError {
    /// A stable code for the API's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "rule_not_found",
            Self::NotActive { .. } => "rule_not_active",
            Self::InvalidReason(_) => "invalid_reason",
            _ => "store_failed",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "no rule has id {id}"),
            Self::NotActive { id, state } => write!(f, "rule {id} is already {}", state.as_str()),
            Self::InvalidReason(why) => write!(f, "the reason {why}"),
            Self::InvalidAction(a) => write!(f, "audit action {a:?} is not 1 to 64 of [a-z0-9_.]"),
            Self::BadRule { id, error } => {
                write!(f, "stored rule {id} cannot be enforced: {error}")
            }
            Self::Schema(v) => write!(f, "the database has schema {v}, newer than this relay's"),
            Self::JournalMode(m) => write!(f, "SQLite kept journal mode {m:?} instead of WAL"),
            Self::Io(e) => write!(f, "cannot create the data directory: {e}"),
            Self::Unchained { seq } => {
                write!(
                    f,
                    "mirrored audit entry {seq} does not follow the recorded head"
                )
            }
            Self::Sqlite(e) => write!(f, "database error: {e}"),
            Self::Json(e) => write!(f, "stored JSON is unreadable: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::BadRule { error, .. } => Some(error),
            Self::Io(e) => Some(e),
            Self::Sqlite(e) => Some(e),
            Self::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// The rule's expiry if it is active; otherwise why not.
pub(super) fn require_active(conn: &Connection, id: RuleId) -> Result<u64, StoreError> {
    let row = conn
        .query_row(
            "SELECT state, expires_at FROM rules WHERE id = ?1",
            [to_sql(id.0)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    let Some((state, expires_at)) = row else {
        return Err(StoreError::NotFound(id));
    };
    match RuleState::parse(&state)? {
        RuleState::Active => Ok(from_sql(expires_at)),
        state => Err(StoreError::NotActive { id, state }),
    }
}

/// Checks a lift reason: 1 to 1024 bytes, not blank, no control characters.
pub fn check_reason(reason: &str) -> Result<(), StoreError> {
    if reason.trim().is_empty() {
        return Err(StoreError::InvalidReason(
            "is required and may not be blank",
        ));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(StoreError::InvalidReason("is longer than 1024 bytes"));
    }
    if reason.chars().any(char::is_control) {
        return Err(StoreError::InvalidReason("holds control characters"));
    }
    Ok(())
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(super) fn unix_rfc3339(secs: u64) -> String {
    // humantime writes years up to 9999 only; later values (never valid rules) are clamped.
    const LAST: u64 = 253_402_300_799;
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs.min(LAST))).to_string()
}

pub(super) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The database file in the data directory.
const DB_FILE: &str = "relay.db";
/// Longest lift reason, in bytes.
const MAX_REASON_LEN: usize = 1024;

#[cfg(test)]
mod tests;
