use std::path::Path;

use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::audit::ZERO_HASH;
use super::*;
use crate::rules::{self, Subject};

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const Y2031: u64 = 1_924_992_000; // 2031-01-01T00:00:00Z

fn spec(jurisdiction: &str, authority: &str, expires_at: &str) -> RuleSpec {
    let body = json!({
        "match": {"regions": ["CN"], "participants": [{"room": "r1", "participant": "p7"}],
                  "rooms": ["r1"]},
        "direction": "send",
        "media": "video",
        "basis": {"authority": authority, "reference": "Case 12/2026", "jurisdiction": jurisdiction},
        "expires_at": expires_at,
    });
    rules::parse(body.to_string().as_bytes()).unwrap()
}

fn add(store: &mut Store, s: &RuleSpec) -> RuleId {
    let rule = rules::validate(s, NOW).unwrap();
    store.add_rule(s, &rule).unwrap()
}

/// A store with rules 1 (lifted) and 2 (active), and a startup and shutdown entry: five
/// audit entries in all.
fn five_entries(dir: &Path) {
    let mut store = Store::open(dir).unwrap();
    store
        .append("startup", &json!({"version": "test"}))
        .unwrap();
    let a = add(&mut store, &spec("DE", "Court A", "2099-01-01T00:00:00Z"));
    add(&mut store, &spec("FR", "Court B", "2099-01-01T00:00:00Z"));
    store.lift_rule(a, "order withdrawn").unwrap();
    store.append("shutdown", &json!({})).unwrap();
    assert_eq!(store.audit_head().unwrap().0, 5);
}

/// A raw connection with the append-only triggers dropped, as someone editing the file would.
fn tamper(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    conn
}

fn documented_hash(seq: u64, time: &str, action: &str, detail: &str, prev: &str) -> String {
    let digest = Sha256::digest(format!("{seq}\n{time}\n{action}\n{detail}\n{prev}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn open_sets_wal_full_sync_and_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/data");
    let store = Store::open(&dir).unwrap();
    assert!(dir.join("relay.db").is_file());
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let v: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::VERSION);
    drop(store);
    // Reopening an existing database is fine; a newer schema is refused.
    drop(Store::open(&dir).unwrap());
    Connection::open(dir.join(DB_FILE))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(Store::open(&dir), Err(StoreError::Schema(99))));
}

#[test]
fn rules_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let s1 = spec("DE", "Court A", "2099-01-01T00:00:00Z");
    let s2 = spec("FR", "Court B", "2099-06-01T00:00:00Z");
    let (a, b) = {
        let mut store = Store::open(tmp.path()).unwrap();
        let a = add(&mut store, &s1);
        let b = add(&mut store, &s2);
        store.lift_rule(a, "order withdrawn").unwrap();
        (a, b)
    };
    let mut store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.active_rules(NOW).unwrap(), [(b, s2.clone())]);
    let restored = store.restore(NOW).unwrap();
    assert_eq!(restored, [(b, rules::compile(&s2).unwrap())]);

    let all = store.all_rules().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].id, all[0].state), (a, RuleState::Lifted));
    assert_eq!(all[0].lift_reason.as_deref(), Some("order withdrawn"));
    assert!(all[0].lifted_at.is_some());
    assert_eq!(
        (all[1].id, all[1].state, &all[1].spec),
        (b, RuleState::Active, &s2)
    );
    assert_eq!(store.rule(b).unwrap().unwrap(), all[1]);
    assert!(store.rule(RuleId(99)).unwrap().is_none());

    // Ids are never reused.
    let c = add(&mut store, &s1);
    assert!(c > b);
}

#[test]
fn restored_rules_match_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("DE", "Court A", "2099-01-01T00:00:00Z");
    let id = add(&mut Store::open(tmp.path()).unwrap(), &s);
    let mut set = rules::RuleSet::new();
    for (id, rule) in Store::open(tmp.path()).unwrap().restore(NOW).unwrap() {
        set.insert(id, rule);
    }
    let e = set.effect(&Subject {
        room: "r1",
        participant: "x",
        region: Some(*b"CN"),
    });
    assert_eq!(e.send_video, Some(id));
}

#[test]
fn restore_expires_overdue_rules_and_audits_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    let old = add(&mut store, &spec("DE", "Court A", "2030-01-01T00:00:00Z"));
    let new = add(&mut store, &spec("DE", "Court A", "2099-01-01T00:00:00Z"));
    let kept = store.restore(Y2031).unwrap();
    assert_eq!(kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [new]);
    assert_eq!(store.rule(old).unwrap().unwrap().state, RuleState::Expired);
    let last = store.entries(0, 100).unwrap().pop().unwrap();
    assert_eq!(last.action, "rule_expired");
    assert_eq!(
        last.detail,
        json!({"rule": old.0, "expires_at": "2030-01-01T00:00:00Z"})
    );
    // Nothing more to expire.
    assert!(store.expire_overdue(Y2031).unwrap().is_empty());
}

#[test]
fn lift_and_expire_refuse_bad_calls_without_change() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    let id = add(&mut store, &spec("DE", "Court A", "2099-01-01T00:00:00Z"));
    let head = store.audit_head().unwrap();

    let e = store.lift_rule(RuleId(42), "why").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(RuleId(42))), "{e}");
    assert_eq!(e.code(), "rule_not_found");
    for reason in ["", "   ", "a\nb", &"x".repeat(1025)] {
        let e = store.lift_rule(id, reason).unwrap_err();
        assert_eq!(e.code(), "invalid_reason", "{reason:?}");
    }
    assert_eq!(store.audit_head().unwrap(), head);

    store.expire_rule(id).unwrap();
    let e = store.lift_rule(id, "too late").unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NotActive {
                state: RuleState::Expired,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.code(), "rule_not_active");
    assert!(store.expire_rule(id).is_err());
}

#[test]
fn audit_entries_follow_the_documented_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    let store = Store::open(tmp.path()).unwrap();
    let entries = store.entries(0, 100).unwrap();
    let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "startup",
            "rule_added",
            "rule_added",
            "rule_lifted",
            "shutdown"
        ]
    );
    let mut prev = ZERO_HASH.to_owned();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.hash.len(), 64);
        let detail = serde_json::to_string(&e.detail).unwrap();
        assert_eq!(
            e.hash,
            documented_hash(e.seq, &e.time, &e.action, &detail, &e.prev_hash)
        );
        prev = e.hash.clone();
    }
    // The same check an auditor would run with sqlite3 and sha256sum.
    let joined: String = store
        .conn
        .query_row(
            "SELECT seq||char(10)||time||char(10)||action||char(10)||detail||char(10)||prev_hash
             FROM audit WHERE seq = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let digest: String = Sha256::digest(joined.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, entries[1].hash);

    assert_eq!(entries[1].detail["rule"], 1);
    assert_eq!(entries[1].detail["spec"]["basis"]["authority"], "Court A");
    assert_eq!(
        entries[3].detail,
        json!({"rule": 1, "reason": "order withdrawn"})
    );
    // Pages.
    assert_eq!(store.entries(0, 2).unwrap(), entries[..2]);
    assert_eq!(store.entries(2, 10).unwrap(), entries[2..]);
    assert!(store.entries(5, 10).unwrap().is_empty());
}

#[test]
fn detail_is_stored_with_sorted_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    let mut m = serde_json::Map::new();
    m.insert("zeta".into(), json!(1));
    m.insert(
        "alpha".into(),
        json!({"y": [1, {"b": 2, "a": 1}], "x": "é\n"}),
    );
    store.append("note", &Value::Object(m)).unwrap();
    let text: String = store
        .conn
        .query_row("SELECT detail FROM audit WHERE seq = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        text,
        r#"{"alpha":{"x":"é\n","y":[1,{"a":1,"b":2}]},"zeta":1}"#
    );
}

#[test]
fn invalid_action_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    for a in ["", "Startup", "a b", "new\nline", &"a".repeat(65)] {
        assert!(
            matches!(
                store.append(a, &json!({})),
                Err(StoreError::InvalidAction(_))
            ),
            "{a:?}"
        );
    }
    assert_eq!(store.audit_head().unwrap().0, 0);
}

#[test]
fn intact_chain_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = verify(&{
        drop(Store::open(tmp.path()).unwrap());
        tmp.path().to_owned()
    })
    .unwrap();
    assert_eq!(empty.entries, 0);
    assert_eq!(empty.head_hash, ZERO_HASH);

    five_entries(tmp.path());
    let r = verify(tmp.path()).unwrap();
    assert_eq!((r.entries, r.head_seq), (5, 5));
    assert_eq!(run_verify_cli(tmp.path()), 0);

    // While the relay has the database open, too.
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(verify(tmp.path()).unwrap(), r);
    assert_eq!(store.verify().unwrap(), r);
}

#[test]
fn verify_without_database_is_an_open_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = verify(&tmp.path().join("none")).unwrap_err();
    assert!(matches!(e, VerifyError::Open(_)), "{e}");
    assert_eq!(e.seq(), None);
    assert_eq!(run_verify_cli(&tmp.path().join("none")), 2);
    assert!(
        !tmp.path().join("none").exists(),
        "verify must not create anything"
    );
}

#[test]
fn triggers_keep_the_log_append_only() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    let store = Store::open(tmp.path()).unwrap();
    assert!(
        store
            .conn
            .execute("UPDATE audit SET detail = '{}' WHERE seq = 2", [])
            .is_err()
    );
    assert!(
        store
            .conn
            .execute("DELETE FROM audit WHERE seq = 5", [])
            .is_err()
    );
    assert!(store.verify().is_ok());
}

/// Each tamper, and the first bad entry verify must name.
#[test]
fn tampering_is_detected_at_the_first_bad_entry() {
    let cases: [(&str, &str, VerifyError); 7] = [
        (
            "changed detail",
            "UPDATE audit SET detail = replace(detail, 'Court B', 'Court C') WHERE seq = 3",
            VerifyError::Changed {
                seq: 3,
                what: "its fields do not match its hash",
            },
        ),
        (
            "changed time",
            "UPDATE audit SET time = '2020-01-01T00:00:00.000Z' WHERE seq = 1",
            VerifyError::Changed {
                seq: 1,
                what: "its fields do not match its hash",
            },
        ),
        (
            "removed middle",
            "DELETE FROM audit WHERE seq = 3",
            VerifyError::Missing { seq: 3 },
        ),
        (
            "removed first",
            "DELETE FROM audit WHERE seq = 1",
            VerifyError::Missing { seq: 1 },
        ),
        (
            "removed tail",
            "DELETE FROM audit WHERE seq >= 4",
            VerifyError::Missing { seq: 4 },
        ),
        (
            "swapped 2 and 3",
            "UPDATE audit SET seq = 100 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 3;
             UPDATE audit SET seq = 3 WHERE seq = 100;",
            VerifyError::Reordered { seq: 2, follows: 3 },
        ),
        (
            "wrong type",
            "UPDATE audit SET action = X'00ff' WHERE seq = 4",
            VerifyError::Changed {
                seq: 4,
                what: "a field is not text",
            },
        ),
    ];
    for (name, sql, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        five_entries(tmp.path());
        tamper(tmp.path()).execute_batch(sql).unwrap();
        let got = verify(tmp.path()).unwrap_err();
        assert_eq!(got, want, "{name}: {got}");
        assert!(
            got.to_string()
                .contains(&format!("entry {}", want.seq().unwrap())),
            "{got}"
        );
        assert_eq!(run_verify_cli(tmp.path()), 1, "{name}");
    }
}

#[test]
fn rewritten_entry_with_recomputed_hash_breaks_the_next_link() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    let conn = tamper(tmp.path());
    let (time, action, detail, prev): (String, String, String, String) = conn
        .query_row(
            "SELECT time, action, detail, prev_hash FROM audit WHERE seq = 4",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let detail = detail.replace("order withdrawn", "never mind");
    let hash = documented_hash(4, &time, &action, &detail, &prev);
    conn.execute(
        "UPDATE audit SET detail = ?1, hash = ?2 WHERE seq = 4",
        (&detail, &hash),
    )
    .unwrap();
    assert_eq!(
        verify(tmp.path()).unwrap_err(),
        VerifyError::BrokenLink { seq: 5 }
    );
}

#[test]
fn removed_and_renumbered_entries_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    tamper(tmp.path())
        .execute_batch(
            "DELETE FROM audit WHERE seq = 2;
             UPDATE audit SET seq = seq - 1 WHERE seq > 2;
             UPDATE audit_head SET seq = 4;",
        )
        .unwrap();
    assert_eq!(
        verify(tmp.path()).unwrap_err(),
        VerifyError::Changed {
            seq: 2,
            what: "its prev_hash and its hash are both wrong"
        }
    );
}

#[test]
fn entries_added_outside_the_relay_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    let conn = tamper(tmp.path());
    let prev: String = conn
        .query_row("SELECT hash FROM audit WHERE seq = 5", [], |r| r.get(0))
        .unwrap();
    let (time, action, detail) = ("2026-01-01T00:00:00.000Z", "rule_lifted", "{}");
    let hash = documented_hash(6, time, action, detail, &prev);
    conn.execute(
        "INSERT INTO audit VALUES (6, ?1, ?2, ?3, ?4, ?5)",
        (time, action, detail, &prev, &hash),
    )
    .unwrap();
    assert_eq!(
        verify(tmp.path()).unwrap_err(),
        VerifyError::Unrecorded { seq: 6 }
    );
}

#[test]
fn counters_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let c = RuleCounters {
        participants_matched: 3,
        participants_matched_total: 7,
        packets_dropped_send: 1000,
        packets_dropped_receive: 20,
    };
    {
        let mut store = Store::open(tmp.path()).unwrap();
        store.save_counters(&[(RuleId(1), c)]).unwrap();
        store
            .save_counters(&[(
                RuleId(1),
                RuleCounters {
                    packets_dropped_send: 1001,
                    ..c
                },
            )])
            .unwrap();
    }
    let saved = Store::open(tmp.path()).unwrap().counters().unwrap();
    let want = RuleCounters {
        participants_matched: 0,
        packets_dropped_send: 1001,
        ..c
    };
    assert_eq!(saved, [(RuleId(1), want)]);
}

#[test]
fn transparency_counts_without_personal_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    let a = add(&mut store, &spec("DE", "Court A", "2099-01-01T00:00:00Z"));
    let b = add(&mut store, &spec("DE", "Court B", "2099-01-01T00:00:00Z"));
    let c = add(&mut store, &spec("FR", "Court A", "2099-01-01T00:00:00Z"));
    store.lift_rule(b, "done with p7 in r1").unwrap();
    let saved = RuleCounters {
        participants_matched_total: 4,
        packets_dropped_send: 40,
        ..Default::default()
    };
    store.save_counters(&[(b, saved)]).unwrap();
    let live = RuleCounters {
        participants_matched: 1,
        participants_matched_total: 2,
        packets_dropped_send: 5,
        packets_dropped_receive: 6,
    };
    let t = store.transparency(&[(a, live)]).unwrap();

    assert_eq!(
        t.rules,
        StateCounts {
            total: 3,
            active: 2,
            lifted: 1,
            expired: 0
        }
    );
    assert_eq!(
        t.by_jurisdiction["DE"],
        StateCounts {
            total: 2,
            active: 1,
            lifted: 1,
            expired: 0
        }
    );
    assert_eq!(t.by_jurisdiction["FR"].total, 1);
    assert_eq!(
        t.by_authority["Court A"],
        StateCounts {
            total: 2,
            active: 2,
            lifted: 0,
            expired: 0
        }
    );
    assert_eq!(
        t.per_rule.iter().map(|r| r.id).collect::<Vec<_>>(),
        [a, b, c]
    );
    assert_eq!(
        t.per_rule[0].packets_dropped,
        Dropped {
            send: 5,
            receive: 6
        }
    );
    assert_eq!(t.per_rule[0].participants_matched, 1);
    assert_eq!(t.per_rule[1].participants_matched_total, 4);
    assert_eq!(t.per_rule[1].state, RuleState::Lifted);
    assert!(t.per_rule[1].ended_at.is_some());
    assert_eq!(t.per_rule[2].packets_dropped, Dropped::default());
    assert_eq!(t.participants_matched_total, 6);
    assert_eq!(
        t.packets_dropped,
        Dropped {
            send: 45,
            receive: 6
        }
    );
    assert_eq!(t.audit_head.seq, 4);

    let text = serde_json::to_string(&t).unwrap();
    for personal in ["p7", "r1", "CN", "done with"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert!(text.contains("\"direction\":\"send\"") && text.contains("\"media\":\"video\""));
}

#[test]
fn stored_rule_serializes_like_the_request_plus_history() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path()).unwrap();
    let s = spec("DE", "Court A", "2099-01-01T00:00:00Z");
    let id = add(&mut store, &s);
    let v = serde_json::to_value(store.rule(id).unwrap().unwrap()).unwrap();
    assert_eq!(v["id"], id.0);
    assert_eq!(v["state"], "active");
    assert_eq!(v["match"]["regions"], json!(["CN"]));
    assert_eq!(v["basis"]["jurisdiction"], "DE");
    assert_eq!(v["expires_at"], "2099-01-01T00:00:00Z");
    assert!(v.get("lift_reason").is_none());
}

/// Nothing that looks like an IPv4 address (four dotted numbers) is in the database files.
#[test]
fn no_addresses_in_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    five_entries(tmp.path());
    let mut store = Store::open(tmp.path()).unwrap();
    let id = add(&mut store, &spec("DE", "Court A", "2099-01-01T00:00:00Z"));
    store
        .save_counters(&[(id, RuleCounters::default())])
        .unwrap();
    store.expire_rule(id).unwrap();
    let _ = store.transparency(&[]).unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!has_dotted_quad(&bytes));
        files += 1;
    }
    assert!(files >= 1);
    assert!(
        has_dotted_quad(b"x 127.0.0.1:5004"),
        "the scanner finds addresses"
    );
}

fn has_dotted_quad(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|start| {
        let mut i = start;
        for part in 0..4 {
            let digits = bytes[i..]
                .iter()
                .take(3)
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return false;
            }
            i += digits;
            if part < 3 {
                if bytes.get(i) != Some(&b'.') {
                    return false;
                }
                i += 1;
            }
        }
        true
    })
}

#[test]
fn next_entry_and_mirror_carry_a_chain_to_another_store() {
    let src = tempfile::tempdir().unwrap();
    five_entries(src.path());
    let entries = Store::open(src.path()).unwrap().entries(0, 100).unwrap();

    // `next_entry` builds exactly what `append` stored.
    let mut prev = (0, ZERO_HASH.to_owned());
    for e in &entries {
        let built = next_entry(prev.0, &prev.1, &e.time, &e.action, &e.detail).unwrap();
        assert_eq!(&built, e);
        prev = (e.seq, e.hash.clone());
    }
    assert!(matches!(
        next_entry(0, ZERO_HASH, "t", "Bad Action", &json!({})),
        Err(StoreError::InvalidAction(_))
    ));

    // Mirrored in order, the copy verifies like the original.
    let dst = tempfile::tempdir().unwrap();
    let mut mirror = Store::open(dst.path()).unwrap();
    // Out of order, forked or changed entries are refused and change nothing.
    assert!(matches!(
        mirror.mirror(&entries[1]),
        Err(StoreError::Unchained { seq: 2 })
    ));
    let mut changed = entries[0].clone();
    changed.action = "shutdown".into();
    assert!(matches!(
        mirror.mirror(&changed),
        Err(StoreError::Unchained { seq: 1 })
    ));
    assert_eq!(mirror.audit_head().unwrap(), (0, ZERO_HASH.to_owned()));
    for e in &entries {
        mirror.mirror(e).unwrap();
    }
    let mut forked = entries[4].clone();
    forked.seq = 6;
    assert!(mirror.mirror(&forked).is_err());
    assert_eq!(mirror.verify().unwrap(), verify(src.path()).unwrap());
    assert_eq!(mirror.entries(0, 100).unwrap(), entries);
}
