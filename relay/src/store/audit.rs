//! The hash-chained audit log: appending, hashing and verification.
//!
//! # Hash encoding
//!
//! Each entry's `hash` is the lowercase hex SHA-256 of these five fields joined by a single
//! newline (0x0A), with no newline at the end, all UTF-8:
//!
//! ```text
//! seq \n time \n action \n detail \n prev_hash
//! ```
//!
//! - `seq`: decimal, no leading zeros, the first entry is 1;
//! - `time`: RFC 3339 UTC with milliseconds, `2026-01-01T00:00:00.000Z`;
//! - `action`: 1 to 64 bytes of `[a-z0-9_.]`;
//! - `detail`: the JSON text exactly as stored in the `detail` column, which the relay writes in
//!   compact form (no whitespace) with object keys sorted by their UTF-8 bytes and non-ASCII
//!   characters unescaped;
//! - `prev_hash`: the previous entry's `hash`, 64 zeros for the first entry.
//!
//! None of the fields can hold a raw newline (compact JSON escapes it), so the joined text
//! splits back into the same five fields. An auditor can recompute one entry with standard
//! tools:
//!
//! ```text
//! sqlite3 relay.db "SELECT seq||char(10)||time||char(10)||action||char(10)||detail||
//!     char(10)||prev_hash FROM audit WHERE seq = 1" | head -c -1 | sha256sum
//! ```
//!
//! # What the chain proves
//!
//! A changed, removed or reordered entry breaks the chain at that entry. Removing entries at the
//! end leaves a valid shorter chain, so the head (last seq and hash) is also kept in table
//! `audit_head`, written in the same transaction as each entry. Someone who can write the file
//! can still rewrite the whole chain and the head consistently, since no secret goes into the
//! hash: publish the head (the transparency report carries it) to pin the log at that point.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, types::ValueRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{DB_FILE, StoreError, from_sql, to_sql};

/// One audit log entry, as stored and as `GET /v1/audit` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was written, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What happened: `rule_added`, `rule_lifted`, `rule_expired`, `startup`, ...
    pub action: String,
    /// Facts of the action: rule ids, basis, match, reason. Never an address.
    pub detail: Value,
    /// The previous entry's hash; 64 zeros for the first.
    pub prev_hash: String,
    /// This entry's hash, see the module docs for the encoding.
    pub hash: String,
}

/// A chain that verified: how long it is and where it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Number of entries.
    pub entries: u64,
    /// Seq of the last entry (0 when empty).
    pub head_seq: u64,
    /// Hash of the last entry (64 zeros when empty).
    pub head_hash: String,
}

/// Why the audit log did not verify. Variants other than `Open` name the first bad entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The database could not be opened or read; nothing was verified.
    Open(String),
    /// Entry `seq` is absent: removed from the middle or the start, or (when the recorded
    /// head is further on) removed from the end.
    Missing {
        /// The first absent seq.
        seq: u64,
    },
    /// Entry `seq`'s fields do not hash to its stored hash: it was changed.
    Changed {
        /// The changed entry.
        seq: u64,
        /// Which check failed.
        what: &'static str,
    },
    /// Entry `seq` holds the entry that belongs after entry `follows`: entries were reordered.
    Reordered {
        /// Where the misplaced entry was found.
        seq: u64,
        /// The entry its `prev_hash` names.
        follows: u64,
    },
    /// Entry `seq` hashes right but its `prev_hash` is not entry `seq - 1`'s hash: one of the
    /// two was rewritten with a recomputed hash, or entries between were removed and the rest
    /// renumbered.
    BrokenLink {
        /// The entry whose link is broken.
        seq: u64,
    },
    /// The log goes on past the recorded head at `seq`: entries were added outside the relay.
    Unrecorded {
        /// The first entry after the recorded head.
        seq: u64,
    },
}

/// Checks the audit chain of the database in `dir`, opened read-only.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let path = dir.join(DB_FILE);
    if !path.is_file() {
        return Err(VerifyError::Open(format!(
            "no database at {}",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| VerifyError::Open(e.to_string()))?;
    verify_conn(&conn)
}

/// `relay audit verify`: prints one line (stdout when the log verifies, stderr otherwise) and
/// returns the process exit code: 0 verified, 1 tampered, 2 could not be read.
pub fn run_verify_cli(dir: &Path) -> i32 {
    match verify(dir) {
        Ok(r) => {
            println!(
                "audit log ok: {} entries, head seq {} hash {}",
                r.entries, r.head_seq, r.head_hash
            );
            0
        }
        Err(e @ VerifyError::Open(_)) => {
            eprintln!("audit log not verified: {e}");
            2
        }
        Err(e) => {
            eprintln!("audit log FAILED verification: {e}");
            1
        }
    }
}

impl VerifyError {
    /// The first bad entry, when the log was read.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Open(_) => None,
            Self::Missing { seq }
            | Self::Changed { seq, .. }
            | Self::Reordered { seq, .. }
            | Self::BrokenLink { seq }
            | Self::Unrecorded { seq } => Some(*seq),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(e) => write!(f, "cannot read the audit log: {e}"),
            Self::Missing { seq } => write!(f, "entry {seq} is missing (removed)"),
            Self::Changed { seq, what } => write!(f, "entry {seq} was changed: {what}"),
            Self::Reordered { seq, follows } => write!(
                f,
                "entry {seq} was reordered: it holds the entry that follows entry {follows}"
            ),
            Self::BrokenLink { seq } => write!(
                f,
                "entry {seq} does not follow entry {}: one of them was rewritten or entries \
                 between them were removed",
                seq - 1
            ),
            Self::Unrecorded { seq } => {
                write!(
                    f,
                    "entry {seq} and those after it were added outside the relay"
                )
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// Appends one entry and moves the recorded head to it. Call it inside a transaction: the
/// entry, the head and the change it records are written together or not at all.
pub(super) fn append(
    tx: &Connection,
    time: &str,
    action: &str,
    detail: &Value,
) -> Result<AuditEntry, StoreError> {
    let (last, prev_hash) = head(tx)?;
    let entry = next_entry(last, &prev_hash, time, action, detail)?;
    insert(tx, &entry)?;
    Ok(entry)
}

/// The entry that follows `(prev_seq, prev_hash)` in a chain: checks the action, puts the
/// detail in canonical form and computes the hash as the module docs say. Pure; the fleet
/// builds the entries of its chain in etcd with it.
pub fn next_entry(
    prev_seq: u64,
    prev_hash: &str,
    time: &str,
    action: &str,
    detail: &Value,
) -> Result<AuditEntry, StoreError> {
    if !valid_action(action) {
        return Err(StoreError::InvalidAction(action.chars().take(64).collect()));
    }
    let seq = prev_seq + 1;
    let detail_text = canonical(detail);
    let hash = entry_hash(seq, time, action, &detail_text, prev_hash);
    Ok(AuditEntry {
        seq,
        time: time.to_owned(),
        action: action.to_owned(),
        // Parsed back from the canonical text, so it holds what the hash covers.
        detail: serde_json::from_str(&detail_text)?,
        prev_hash: prev_hash.to_owned(),
        hash,
    })
}

/// Appends an entry made elsewhere (the fleet's chain) inside the caller's transaction, after
/// checking that it follows the recorded head and hashes right.
pub(super) fn mirror(tx: &Connection, entry: &AuditEntry) -> Result<(), StoreError> {
    let (last, prev_hash) = head(tx)?;
    let detail_text = canonical(&entry.detail);
    let hashes_right = entry_hash(
        entry.seq,
        &entry.time,
        &entry.action,
        &detail_text,
        &entry.prev_hash,
    ) == entry.hash;
    if entry.seq != last + 1 || entry.prev_hash != prev_hash || !hashes_right {
        return Err(StoreError::Unchained { seq: entry.seq });
    }
    insert(tx, entry)
}

fn insert(tx: &Connection, entry: &AuditEntry) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (seq, time, action, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        (
            to_sql(entry.seq),
            &entry.time,
            &entry.action,
            canonical(&entry.detail),
            &entry.prev_hash,
            &entry.hash,
        ),
    )?;
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (to_sql(entry.seq), &entry.hash),
    )?;
    Ok(())
}

/// The recorded head: last seq (0 when empty) and its hash (zeros when empty).
pub(super) fn head(conn: &Connection) -> Result<(u64, String), StoreError> {
    let row = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    Ok(row.map_or_else(|| (0, ZERO_HASH.to_owned()), |(s, h)| (from_sql(s), h)))
}

/// Entries with seq greater than `after_seq`, oldest first, at most `limit`.
pub(super) fn entries(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, time, action, detail, prev_hash, hash FROM audit
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map((to_sql(after_seq), limit), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, time, action, detail, prev_hash, hash) = row?;
        let detail = serde_json::from_str(&detail)?;
        out.push(AuditEntry {
            seq: from_sql(seq),
            time,
            action,
            detail,
            prev_hash,
            hash,
        });
    }
    Ok(out)
}

/// The chain check on an open connection.
pub(super) fn verify_conn(conn: &Connection) -> Result<VerifyReport, VerifyError> {
    let open = |e: rusqlite::Error| VerifyError::Open(e.to_string());
    let mut stmt = conn
        .prepare("SELECT seq, time, action, detail, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(open)?;
    let mut rows = stmt.query([]).map_err(open)?;
    let mut expected = 1u64;
    let mut prev = ZERO_HASH.to_owned();
    let mut finding = None;
    while let Some(row) = rows.next().map_err(open)? {
        let seq = from_sql(row.get::<_, i64>(0).map_err(open)?);
        if seq != expected {
            finding = Some(Finding::Bad(VerifyError::Missing { seq: expected }));
            break;
        }
        let fields: Option<[&str; 5]> = (|| {
            Some([
                text(row, 1)?,
                text(row, 2)?,
                text(row, 3)?,
                text(row, 4)?,
                text(row, 5)?,
            ])
        })();
        let Some([time, action, detail, prev_hash, hash]) = fields else {
            let what = "a field is not text";
            finding = Some(Finding::Bad(VerifyError::Changed { seq, what }));
            break;
        };
        let hashes_right = entry_hash(seq, time, action, detail, prev_hash) == hash;
        if prev_hash != prev {
            finding = Some(Finding::Link {
                seq,
                prev_hash: prev_hash.to_owned(),
                hashes_right,
            });
            break;
        }
        if !hashes_right {
            let what = "its fields do not match its hash";
            finding = Some(Finding::Bad(VerifyError::Changed { seq, what }));
            break;
        }
        prev = hash.to_owned();
        expected += 1;
    }
    drop(rows);
    drop(stmt);

    match finding {
        None => {}
        Some(Finding::Bad(e)) => return Err(e),
        Some(Finding::Link {
            seq,
            prev_hash,
            hashes_right,
        }) => {
            return Err(link_error(conn, seq, &prev_hash, hashes_right));
        }
    }
    let last = expected - 1;
    let recorded = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .optional()
        .map_err(open)?;
    let (head_seq, head_hash) =
        recorded.map_or_else(|| (0, ZERO_HASH.to_owned()), |(s, h)| (from_sql(s), h));
    if head_seq > last {
        return Err(VerifyError::Missing { seq: last + 1 });
    }
    if head_seq < last {
        return Err(VerifyError::Unrecorded { seq: head_seq + 1 });
    }
    if head_hash != prev {
        return Err(VerifyError::Changed {
            seq: last,
            what: "its hash differs from the head",
        });
    }
    Ok(VerifyReport {
        entries: last,
        head_seq: last,
        head_hash: prev,
    })
}

/// The entry's hash as the module docs define it.
pub(super) fn entry_hash(seq: u64, time: &str, action: &str, detail: &str, prev: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{seq}\n{time}\n{action}\n{detail}\n{prev}").as_bytes());
    hex(&h.finalize())
}

/// Compact JSON with object keys sorted, whatever order the map type keeps them in.
pub(super) fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// What the chain walk found first.
enum Finding {
    Bad(VerifyError),
    /// Entry `seq`'s `prev_hash` is not the previous entry's hash.
    Link {
        seq: u64,
        prev_hash: String,
        hashes_right: bool,
    },
}

/// Names a broken link: when `prev_hash` is the hash of another entry, the entry was moved;
/// when the entry itself hashes right, the link alone is broken; otherwise it was changed.
fn link_error(conn: &Connection, seq: u64, prev_hash: &str, hashes_right: bool) -> VerifyError {
    let follows = conn
        .query_row(
            "SELECT seq FROM audit WHERE hash = ?1 AND seq != ?2",
            (prev_hash, to_sql(seq - 1)),
            |r| r.get::<_, i64>(0),
        )
        .optional();
    match follows {
        Ok(Some(m)) => VerifyError::Reordered {
            seq,
            follows: from_sql(m),
        },
        _ if hashes_right => VerifyError::BrokenLink { seq },
        _ => VerifyError::Changed {
            seq,
            what: "its prev_hash and its hash are both wrong",
        },
    }
}

fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Option<&'r str> {
    match row.get_ref(i).ok()? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

fn valid_action(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// `prev_hash` of the first entry: 64 zeros.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
