//! The fleet's requests to etcd: node numbers, the audit append, acknowledgements, the ack
//! wait and fencing another node. Each runs as a task on the fleet thread.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, GetResponse, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use serde_json::json;

use super::client::Shared;
use super::{Acks, Append, Commit, FleetError, Rules};
use crate::store::{self, AuditEntry};

/// This node's number: read from `numbers/node/{node}`, or allocated from `counters/node` in
/// one transaction the first time a name joins.
pub(super) async fn node_number(shared: &Shared) -> Result<u16, FleetError> {
    retry(shared, any_failure, || node_number_once(shared)).await
}

async fn node_number_once(shared: &Shared) -> Result<u16, FleetError> {
    let mut client = shared.client();
    let number_key = shared.keys.node_number(&shared.config.node);
    let counter_key = shared.keys.node_counter();
    for _ in 0..ATTEMPTS {
        let read = Txn::new().and_then([
            TxnOp::get(number_key.as_str(), None),
            TxnOp::get(counter_key.as_str(), None),
        ]);
        let resp = shared.timed(client.txn(read)).await?;
        let gets = gets(resp.op_responses());
        if let Some(kv) = gets.first().and_then(|g| g.kvs().first()) {
            return parse_number(kv.value());
        }
        let (last, mod_revision) = match gets.get(1).and_then(|g| g.kvs().first()) {
            Some(kv) => (parse_number(kv.value())?, kv.mod_revision()),
            None => (0, 0),
        };
        let next = last
            .checked_add(1)
            .ok_or_else(|| FleetError::Config("all 65535 node numbers are taken".into()))?;
        let text = next.to_string();
        let claim = Txn::new()
            .when([
                Compare::create_revision(number_key.as_str(), CompareOp::Equal, 0),
                Compare::mod_revision(counter_key.as_str(), CompareOp::Equal, mod_revision),
            ])
            .and_then([
                TxnOp::put(counter_key.as_str(), text.clone(), None),
                TxnOp::put(number_key.as_str(), text, None),
            ]);
        if shared.timed(client.txn(claim)).await?.succeeded() {
            return Ok(next);
        }
    }
    Err(FleetError::Conflict)
}

/// Appends one entry to the fleet's audit chain with the keys `build` gives, in one `Txn`
/// that compares the head's `mod_revision` with the one read; on conflict, reads the new head
/// and tries again.
pub(super) async fn append(
    shared: &Shared,
    action: &str,
    build: &(dyn Fn(u64) -> Append + Send + Sync),
) -> Result<Commit, FleetError> {
    // Only a call that never left is tried again: a commit that timed out may have landed,
    // and trying again would append a second entry.
    retry(shared, nothing_sent, || append_once(shared, action, build)).await
}

async fn append_once(
    shared: &Shared,
    action: &str,
    build: &(dyn Fn(u64) -> Append + Send + Sync),
) -> Result<Commit, FleetError> {
    let mut client = shared.client();
    let head_key = shared.keys.audit_head();
    for _ in 0..ATTEMPTS {
        let resp = shared.timed(client.get(head_key.as_str(), None)).await?;
        let (seq, hash, mod_revision) = match resp.kvs().first() {
            Some(kv) => {
                let head: Head = serde_json::from_slice(kv.value())
                    .map_err(|e| FleetError::Corrupt(format!("audit head: {e}")))?;
                (head.seq, head.hash, kv.mod_revision())
            }
            None => (0, store::ZERO_HASH.to_owned(), 0),
        };
        let Append {
            detail,
            puts,
            deletes,
            expect,
        } = build(seq + 1);
        let entry = store::next_entry(seq, &hash, &store::now_rfc3339(), action, &detail)?;
        let head = json!({"seq": entry.seq, "hash": entry.hash}).to_string();
        let entry_json =
            serde_json::to_vec(&entry).map_err(|e| FleetError::Corrupt(e.to_string()))?;
        let mut ops = vec![
            TxnOp::put(head_key.as_str(), head, None),
            TxnOp::put(shared.keys.audit_entry(entry.seq), entry_json, None),
        ];
        ops.extend(puts.into_iter().map(|(k, v)| TxnOp::put(k, v, None)));
        ops.extend(deletes.into_iter().map(|k| TxnOp::delete(k, None)));
        // A missing key's mod_revision compares as 0, so the first entry needs no other case.
        let mut when = vec![Compare::mod_revision(
            head_key.as_str(),
            CompareOp::Equal,
            mod_revision,
        )];
        if let Some((key, value)) = &expect {
            when.push(Compare::value(
                key.as_str(),
                CompareOp::Equal,
                value.clone(),
            ));
        }
        let txn = Txn::new().when(when).and_then(ops);
        let sent = std::time::Instant::now();
        let resp = shared.timed(client.txn(txn)).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            tracing::debug!(
                revision,
                seq = entry.seq,
                txn_us = sent.elapsed().as_micros() as u64,
                "fleet: audit txn committed"
            );
            return Ok(Commit { revision, entry });
        }
        // Either the head moved (try again) or the expected key changed (give up).
        if let Some((key, value)) = &expect {
            let now = shared.timed(client.get(key.as_str(), None)).await?;
            if now.kvs().first().map(|kv| kv.value()) != Some(value.as_slice()) {
                return Err(FleetError::Stale(key.clone()));
            }
        }
    }
    Err(FleetError::Conflict)
}

/// Every rule key and value at `revision` (`None`: now), and the revision read at.
pub(super) async fn rules(shared: &Shared, revision: Option<i64>) -> Result<Rules, FleetError> {
    let mut client = shared.client();
    let mut options = GetOptions::new().with_prefix();
    if let Some(r) = revision {
        options = options.with_revision(r);
    }
    let resp = shared
        .timed(client.get(shared.keys.rules(), Some(options)))
        .await?;
    let read_at = resp.header().map_or(0, |h| h.revision());
    let rules = resp
        .kvs()
        .iter()
        .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.value().to_vec())))
        .collect();
    Ok(Rules {
        revision: revision.unwrap_or(read_at),
        rules,
    })
}

/// The whole fleet chain, oldest first (for mirroring and verification).
pub(super) async fn audit_entries(shared: &Shared) -> Result<Vec<AuditEntry>, FleetError> {
    retry(shared, any_failure, || audit_entries_once(shared)).await
}

async fn audit_entries_once(shared: &Shared) -> Result<Vec<AuditEntry>, FleetError> {
    let mut client = shared.client();
    let resp = shared
        .timed(client.get(
            shared.keys.audit_entries(),
            Some(GetOptions::new().with_prefix()),
        ))
        .await?;
    resp.kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice(kv.value())
                .map_err(|e| FleetError::Corrupt(format!("audit entry: {e}")))
        })
        .collect()
}

/// Lifts the join gate up to `revision` and puts `acks/{node} = revision` under the lease.
/// Acks are serialized and never go back.
pub(super) async fn ack(shared: &Shared, revision: i64) -> Result<(), FleetError> {
    shared.applied(revision);
    let mut last = shared.last_ack.lock().await;
    if revision <= *last {
        return Ok(());
    }
    retry(shared, any_failure, || async {
        let options = PutOptions::new().with_lease(shared.lease());
        let key = shared.keys.ack(&shared.config.node);
        let mut client = shared.client();
        shared
            .timed(client.put(key, revision.to_string(), Some(options)))
            .await
    })
    .await?;
    tracing::debug!(revision, "fleet: ack written");
    *last = revision;
    Ok(())
}

/// Waits until each node registered at `revision` has acked it, or its registration of then
/// is gone, or `timeout` passes.
pub(super) async fn wait_acks(
    shared: &Shared,
    revision: i64,
    timeout: Duration,
) -> Result<Acks, FleetError> {
    let deadline = tokio::time::Instant::now() + timeout;
    retry(shared, any_failure, || {
        wait_acks_once(shared, revision, deadline)
    })
    .await
}

async fn wait_acks_once(
    shared: &Shared,
    revision: i64,
    deadline: tokio::time::Instant,
) -> Result<Acks, FleetError> {
    let mut client = shared.client();
    let mut watcher = shared.client();
    // Who must ack (the registrations that existed at `revision`, by create revision), read
    // while the watch opens.
    let (then, mut stream) = tokio::try_join!(
        shared.timed(client.get(
            shared.keys.nodes(),
            Some(GetOptions::new().with_prefix().with_revision(revision)),
        )),
        open_watch(shared, &mut watcher),
    )?;
    let members = registrations(shared, &then);
    let mut out = Acks {
        revision,
        ..Acks::default()
    };
    let mut pending: BTreeSet<String> = members.keys().cloned().collect();
    // Where they are now, read after the watch exists: what the read misses, the watch brings
    // (a change in both counts once).
    let read_at = settle(shared, &mut client, &members, &mut pending, &mut out).await?;
    tracing::debug!(
        revision,
        read_at,
        pending = pending.len(),
        "fleet: acks read"
    );
    // Read again a few times while the acks are missing, in case etcd put the watch in its
    // 100 ms catch-up set after all (see `open_watch`).
    let read_done = tokio::time::Instant::now();
    let mut rereads = REREADS.iter().map(|after| read_done + *after);
    let mut reread = rereads.next();
    let acks_prefix = shared.keys.acks();
    while !pending.is_empty() {
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(reread.unwrap_or(deadline)), if reread.is_some() => {
                let before = pending.len();
                let read_at = settle(shared, &mut client, &members, &mut pending, &mut out).await?;
                if pending.len() < before {
                    tracing::debug!(revision, read_at, pending = pending.len(), "fleet: acks read again");
                }
                reread = rereads.next();
                continue;
            }
            msg = stream.message() => msg,
        };
        let resp = match msg {
            Ok(Some(resp)) if !resp.canceled() => resp,
            Ok(_) | Err(_) => {
                return Err(FleetError::Unavailable("the ack watch ended".into()));
            }
        };
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let Some(node) = shared.keys.node_of(key) else {
                continue;
            };
            if !pending.contains(node) {
                continue;
            }
            let is_ack = key.starts_with(acks_prefix.as_str());
            match event.event_type() {
                EventType::Put if is_ack && parse_revision(kv.value()) >= revision => {
                    tracing::debug!(
                        revision,
                        node,
                        ack_at = kv.mod_revision(),
                        "fleet: ack seen"
                    );
                    out.acked.push(node.to_owned());
                }
                // A new registration of the name: the one of then is gone.
                EventType::Put if !is_ack && Some(&kv.create_revision()) != members.get(node) => {
                    out.gone.push(node.to_owned());
                }
                EventType::Delete if !is_ack => out.gone.push(node.to_owned()),
                _ => continue,
            }
            pending.remove(node);
        }
    }
    out.missing = pending.into_iter().collect();
    out.acked.sort();
    out.gone.sort();
    Ok(out)
}

/// Reads the acks and registrations now (at one revision) and moves each node of `pending`
/// that has acked `out.revision` to `out.acked`, and each whose registration of then (in
/// `members`) is gone to `out.gone`. Returns the revision read at.
async fn settle(
    shared: &Shared,
    client: &mut Client,
    members: &BTreeMap<String, i64>,
    pending: &mut BTreeSet<String>,
    out: &mut Acks,
) -> Result<i64, FleetError> {
    let prefix = Some(GetOptions::new().with_prefix());
    let now = Txn::new().and_then([
        TxnOp::get(shared.keys.acks(), prefix.clone()),
        TxnOp::get(shared.keys.nodes(), prefix),
    ]);
    let resp = shared.timed(client.txn(now)).await?;
    let read_at = resp.header().map_or(0, |h| h.revision());
    let gets = gets(resp.op_responses());
    let (Some(acks_now), Some(nodes_now)) = (gets.first(), gets.get(1)) else {
        return Err(FleetError::Unavailable("short transaction answer".into()));
    };
    let live = registrations(shared, nodes_now);
    pending.retain(|node| {
        let acked = acks_now.kvs().iter().any(|kv| {
            kv.key_str().ok().and_then(|k| shared.keys.node_of(k)) == Some(node.as_str())
                && parse_revision(kv.value()) >= out.revision
        });
        if acked {
            out.acked.push(node.clone());
        } else if live.get(node) != members.get(node) {
            out.gone.push(node.clone());
        } else {
            return true;
        }
        false
    });
    Ok(read_at)
}

/// Opens a watch of the whole fleet prefix from the store's revision now, and waits until
/// etcd has created it.
///
/// No start revision on purpose: etcd serves a watch that starts at or below its current
/// revision from its "unsynced" set, which one loop catches up only every 100 ms (its
/// `syncWatchersLoop`). A watch opened at a read's revision + 1 after another write had landed
/// (another relay's ack or report) waited there for acks long written: that was the fleet rule
/// round trip's p99 of about 100 ms (docs/BENCHMARKS.md). Without a start revision the watch
/// starts at etcd's revision when the request arrives, and the read made after the `created`
/// answer covers everything before. It is synced unless a write commits in the few
/// microseconds between etcd reading its revision and registering the watch (its gRPC layer
/// does the two apart; seen once in about 300 acks waited for): [`wait_acks_once`] reads again
/// a few times in the first 100 ms while acks are missing ([`REREADS`]).
async fn open_watch(shared: &Shared, client: &mut Client) -> Result<WatchStream, FleetError> {
    let options = WatchOptions::new().with_prefix();
    let mut stream = shared
        .timed(client.watch(shared.keys.all(), Some(options)))
        .await?;
    match shared.timed(stream.message()).await? {
        Some(resp) if resp.created() && !resp.canceled() => {
            tracing::debug!(
                store_at = resp.header().map_or(0, |h| h.revision()),
                "fleet: ack watch created"
            );
            Ok(stream)
        }
        _ => Err(FleetError::Unavailable(
            "etcd did not create the ack watch".into(),
        )),
    }
}

/// Revokes `node`'s lease if it still has one, then waits one TTL: by then its own deadline
/// has passed and it forwards nothing.
pub(super) async fn fence_node(shared: &Shared, node: &str) -> Result<(), FleetError> {
    retry(shared, any_failure, || async {
        let mut client = shared.client();
        let resp = shared
            .timed(client.get(shared.keys.node(node), None))
            .await?;
        if let Some(kv) = resp.kvs().first() {
            // "lease not found": it expired meanwhile, which is as good.
            let _ = shared.timed(client.lease_revoke(kv.lease())).await;
        }
        Ok(())
    })
    .await?;
    tokio::time::sleep(shared.config.ttl).await;
    Ok(())
}

/// Puts `key` under this node's lease (it goes when the node goes).
pub(super) async fn put_leased(shared: &Shared, key: &str, value: &[u8]) -> Result<(), FleetError> {
    retry(shared, any_failure, || async {
        let options = PutOptions::new().with_lease(shared.lease());
        let mut client = shared.client();
        shared
            .timed(client.put(key, value, Some(options)))
            .await
            .map(|_| ())
    })
    .await
}

/// Puts `key` (not leased) if it does not exist: `None` when this call created it, else the
/// value it has. One transaction, so two relays creating the same key agree on one value.
pub(super) async fn put_new(
    shared: &Shared,
    key: &str,
    value: &[u8],
) -> Result<Option<Vec<u8>>, FleetError> {
    // A put that timed out may have landed: trying again then finds our own value, which is
    // as good as having created it.
    retry(shared, any_failure, || async {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let mut client = shared.client();
        let resp = shared.timed(client.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(None);
        }
        let held = gets(resp.op_responses())
            .first()
            .and_then(|g| g.kvs().first().map(|kv| kv.value().to_vec()));
        Ok(Some(held.unwrap_or_default()))
    })
    .await
}

/// Deletes `key`.
pub(super) async fn delete(shared: &Shared, key: &str) -> Result<(), FleetError> {
    retry(shared, any_failure, || async {
        let mut client = shared.client();
        shared.timed(client.delete(key, None)).await.map(|_| ())
    })
    .await
}

/// The value of `key` (`None`: absent).
pub(super) async fn get(shared: &Shared, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
    retry(shared, any_failure, || async {
        let mut client = shared.client();
        let resp = shared.timed(client.get(key, None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    })
    .await
}

/// Every key under `prefix`, with its value, in key order.
pub(super) async fn get_prefix(
    shared: &Shared,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
    retry(shared, any_failure, || async {
        let mut client = shared.client();
        let resp = shared
            .timed(client.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.value().to_vec())))
            .collect())
    })
    .await
}

/// Rewrites this node's registration with a new load, only while it is still under the
/// current lease (never resurrecting a registration that expired).
pub(super) async fn set_load(shared: &Shared, load: u32) -> Result<(), FleetError> {
    retry(shared, any_failure, || set_load_once(shared, load)).await
}

async fn set_load_once(shared: &Shared, load: u32) -> Result<(), FleetError> {
    let mut me = shared.me();
    me.load = load;
    let value = serde_json::to_vec(&me).map_err(|e| FleetError::Corrupt(e.to_string()))?;
    let key = shared.keys.node(&me.node);
    let lease = shared.lease();
    let txn = Txn::new()
        .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
        .and_then([TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut client = shared.client();
    if !shared.timed(client.txn(txn)).await?.succeeded() {
        return Err(FleetError::Unavailable(
            "this node's registration is gone (lease lost)".into(),
        ));
    }
    shared.set_me(me);
    Ok(())
}

/// Runs `op`, and again on the next endpoint (`Shared::timed` moves on after a failure)
/// while it fails as `again` says, at most once per endpoint.
async fn retry<T, Fut>(
    shared: &Shared,
    again: fn(&FleetError) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, FleetError>
where
    Fut: Future<Output = Result<T, FleetError>>,
{
    let mut tries = shared.endpoints();
    loop {
        match op().await {
            Err(e) if tries > 1 && again(&e) => tries -= 1,
            result => return result,
        }
    }
}

/// Idempotent calls are tried again after any failure to reach etcd.
fn any_failure(e: &FleetError) -> bool {
    matches!(e, FleetError::Unavailable(_) | FleetError::Unreachable(_))
}

/// Others only when nothing was sent.
fn nothing_sent(e: &FleetError) -> bool {
    matches!(e, FleetError::Unreachable(_))
}

/// Node name -> create revision of its registration, from a read of `nodes/`.
fn registrations(shared: &Shared, resp: &GetResponse) -> BTreeMap<String, i64> {
    resp.kvs()
        .iter()
        .filter_map(|kv| {
            let node = kv.key_str().ok().and_then(|k| shared.keys.node_of(k))?;
            Some((node.to_owned(), kv.create_revision()))
        })
        .collect()
}

fn gets(responses: Vec<TxnOpResponse>) -> Vec<GetResponse> {
    responses
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn parse_number(value: &[u8]) -> Result<u16, FleetError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FleetError::Corrupt("a node number is not a decimal u16".into()))
}

/// An ack value; anything unreadable counts as nothing acked.
fn parse_revision(value: &[u8]) -> i64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The audit head as stored.
#[derive(serde::Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// Transactions tried before giving up with [`FleetError::Conflict`].
const ATTEMPTS: usize = 64;

/// When [`wait_acks_once`] reads the acks again while some are missing, after its first read:
/// until etcd's catch-up loop (every 100 ms) has surely run for a watch it left unsynced.
const REREADS: [Duration; 5] = [
    Duration::from_millis(10),
    Duration::from_millis(30),
    Duration::from_millis(50),
    Duration::from_millis(75),
    Duration::from_millis(100),
];
