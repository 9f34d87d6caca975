//! Tables, versioned with SQLite's `user_version`.

use rusqlite::Connection;

use super::StoreError;

/// The schema this build writes.
pub(super) const VERSION: i64 = 3;

/// Brings the database up to [`VERSION`], in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::Schema(version));
    }
    if version == VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    if version < 2 {
        tx.execute_batch(V2)?;
    }
    if version < 3 {
        tx.execute_batch(V3)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Version 1.
///
/// `rules.spec` is the request body as JSON; the other columns are what the relay needs
/// without parsing it. `AUTOINCREMENT` keeps rule ids from being reused. The triggers make the
/// audit log append-only for anyone using the relay's own connection; they do not stop
/// someone editing the file, which is what the hash chain is for.
const V1: &str = "
CREATE TABLE rules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    spec        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'lifted', 'expired')),
    lifted_at   TEXT,
    lift_reason TEXT,
    expired_at  TEXT
);
CREATE INDEX rules_state ON rules (state);

CREATE TABLE rule_counters (
    rule_id                    INTEGER PRIMARY KEY,
    participants_matched_total INTEGER NOT NULL,
    packets_dropped_send       INTEGER NOT NULL,
    packets_dropped_receive    INTEGER NOT NULL
);

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// Version 2: rooms and participants, so that a restart keeps meetings, and a small key-value
/// table (`runs`: how many times the relay started, the high half of event ids).
///
/// `participants.state` is the control core's JSON of a participant. It never holds an address.
const V2: &str = "
CREATE TABLE rooms (
    room       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE participants (
    room        TEXT NOT NULL REFERENCES rooms (room),
    participant TEXT NOT NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (room, participant)
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 3: a room's own settings (its WebRTC codec table and `plain_legs`), as the control
/// core's JSON; `{}` for rooms from before.
const V3: &str = "
ALTER TABLE rooms ADD COLUMN state TEXT NOT NULL DEFAULT '{}';
";
