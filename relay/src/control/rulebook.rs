//! The rules in force, their durable store, their live counters, and who they match.
//!
//! The state owner asks the book which rooms a rule change touches and what blocks each
//! participant; the book never sees an address.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::api::ApiError;
use crate::route::{self, Blocks};
use crate::rules::{self, Rule, RuleCounters, RuleId, RuleSet, Subject};
use crate::store::{Store, StoreError};

/// Rules, store and counters, owned by the control state.
pub(super) struct RuleBook {
    pub(super) set: RuleSet,
    store: Store,
    workers: usize,
    /// Per-worker packet counters the compiled rooms add to.
    live: HashMap<RuleId, Arc<route::RuleCounters>>,
    /// Counters saved before this run started.
    base: HashMap<RuleId, RuleCounters>,
    /// Per room: which participants each rule matches now.
    matched: HashMap<String, HashMap<RuleId, BTreeSet<String>>>,
    matched_now: HashMap<RuleId, u64>,
    matched_total: HashMap<RuleId, u64>,
    bucket: TokenBucket,
}

impl RuleBook {
    /// Opens the store and restores every rule still in force.
    pub(super) fn open(
        store: Store,
        workers: usize,
        changes_per_sec: u32,
        now_unix: u64,
    ) -> Result<Self, StoreError> {
        let mut book = Self {
            set: RuleSet::new(),
            store,
            workers,
            live: HashMap::new(),
            base: HashMap::new(),
            matched: HashMap::new(),
            matched_now: HashMap::new(),
            matched_total: HashMap::new(),
            bucket: TokenBucket::new(changes_per_sec),
        };
        for (id, saved) in book.store.counters()? {
            book.base.insert(id, saved);
            book.matched_total
                .insert(id, saved.participants_matched_total);
        }
        let restored = book.store.restore(now_unix)?;
        let count = restored.len();
        for (id, rule) in restored {
            book.insert(id, rule);
        }
        book.store
            .append("relay_started", &json!({"rules_in_force": count}))?;
        Ok(book)
    }

    /// Validates and durably records a new rule; the caller then recompiles the rooms it touches.
    pub(super) fn add(&mut self, body: &[u8], now_unix: u64) -> Result<(RuleId, &Rule), ApiError> {
        let spec = rules::parse(body).map_err(rule_error)?;
        let rule = rules::validate(&spec, now_unix).map_err(rule_error)?;
        self.take_token()?;
        let id = self.store.add_rule(&spec, &rule).map_err(store_error)?;
        tracing::info!(rule = %id, "rule added");
        self.insert(id, rule);
        Ok((id, self.set.get(id).expect("just inserted")))
    }

    /// Lifts a rule with a reason; returns it so the caller can recompile what it matched.
    pub(super) fn lift(&mut self, id: RuleId, reason: &str) -> Result<Rule, ApiError> {
        self.take_token()?;
        self.store.lift_rule(id, reason).map_err(store_error)?;
        tracing::info!(rule = %id, "rule lifted");
        Ok(self.set.remove(id).expect("the store had it active"))
    }

    /// Records the expiry of every rule due at `now_unix`; returns them for recompilation.
    pub(super) fn expire(&mut self, now_unix: u64) -> Vec<Rule> {
        let mut out = Vec::new();
        for id in self.set.expired(now_unix) {
            match self.store.expire_rule(id) {
                Ok(()) => {}
                // Already expired in the store (it expires overdue rules itself): still remove.
                Err(StoreError::NotActive { .. }) => {}
                Err(e) => {
                    tracing::error!(rule = %id, error = %e, "recording an expiry failed; retrying");
                    continue;
                }
            }
            tracing::info!(rule = %id, "rule expired");
            if let Some(rule) = self.set.remove(id) {
                out.push(rule);
            }
        }
        out
    }

    fn insert(&mut self, id: RuleId, rule: Rule) {
        self.live
            .insert(id, Arc::new(route::RuleCounters::new(self.workers)));
        self.set.insert(id, rule);
    }

    fn take_token(&mut self) -> Result<(), ApiError> {
        if self.bucket.take() {
            Ok(())
        } else {
            Err(ApiError::new(
                429,
                "too_many_rule_changes",
                "rule changes are rate-limited; retry in a second",
            ))
        }
    }

    /// What the rules block for one participant, with the counters the fan-out adds to.
    pub(super) fn blocks(&self, subject: &Subject<'_>) -> Blocks {
        Blocks::from_effect(&self.set.effect(subject), |id| self.live.get(&id).cloned())
    }

    /// Records which participants of `room` each rule matches now, after a recompilation.
    pub(super) fn set_matches(&mut self, room: &str, now: HashMap<RuleId, BTreeSet<String>>) {
        let old = self.matched.remove(room).unwrap_or_default();
        for (id, set) in &old {
            if let Some(n) = self.matched_now.get_mut(id) {
                *n = n.saturating_sub(set.len() as u64);
            }
        }
        for (id, set) in &now {
            *self.matched_now.entry(*id).or_default() += set.len() as u64;
            let before = old.get(id);
            let new = set
                .iter()
                .filter(|p| before.is_none_or(|b| !b.contains(*p)));
            *self.matched_total.entry(*id).or_default() += new.count() as u64;
        }
        if !now.is_empty() {
            self.matched.insert(room.to_owned(), now);
        }
    }

    /// Forgets a closed room's matches.
    pub(super) fn forget_room(&mut self, room: &str) {
        self.set_matches(room, HashMap::new());
    }

    /// The counters of one rule: saved before this run plus this run's.
    pub(super) fn counters(&self, id: RuleId) -> RuleCounters {
        let base = self.base.get(&id).copied().unwrap_or_default();
        let (send, receive) = self
            .live
            .get(&id)
            .map_or((0, 0), |c| (c.dropped_send.sum(), c.dropped_receive.sum()));
        RuleCounters {
            participants_matched: if self.set.get(id).is_some() {
                self.matched_now.get(&id).copied().unwrap_or(0)
            } else {
                0
            },
            participants_matched_total: self.matched_total.get(&id).copied().unwrap_or(0),
            packets_dropped_send: base.packets_dropped_send + send,
            packets_dropped_receive: base.packets_dropped_receive + receive,
        }
    }

    fn all_counters(&self) -> Vec<(RuleId, RuleCounters)> {
        let mut ids: BTreeSet<RuleId> = self.live.keys().copied().collect();
        ids.extend(self.base.keys().copied());
        ids.into_iter().map(|id| (id, self.counters(id))).collect()
    }

    /// Persists the counters (periodically and at shutdown).
    pub(super) fn save_counters(&mut self) {
        let all = self.all_counters();
        if let Err(e) = self.store.save_counters(&all) {
            tracing::error!(error = %e, "saving rule counters failed");
        }
    }

    /// Records a shutdown in the audit log, after saving counters.
    pub(super) fn close(&mut self) {
        self.save_counters();
        if let Err(e) = self
            .store
            .append("relay_stopped", &json!({"rules_in_force": self.set.len()}))
        {
            tracing::error!(error = %e, "recording the shutdown failed");
        }
    }

    /// `GET /v1/rules`.
    pub(super) fn list(&self) -> Result<Value, ApiError> {
        let rules = self.store.all_rules().map_err(store_error)?;
        let rules: Vec<Value> = rules
            .iter()
            .map(|r| self.rule_json(serde_json::to_value(r).unwrap_or(Value::Null), r.id))
            .collect();
        Ok(json!({ "rules": rules }))
    }

    /// `GET /v1/rules/{id}`.
    pub(super) fn get(&self, id: RuleId) -> Result<Value, ApiError> {
        let r = self
            .store
            .rule(id)
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(format!("no rule {id}")))?;
        Ok(self.rule_json(serde_json::to_value(&r).unwrap_or(Value::Null), id))
    }

    fn rule_json(&self, mut v: Value, id: RuleId) -> Value {
        let c = self.counters(id);
        if let Value::Object(m) = &mut v {
            m.insert("participants_matched".into(), c.participants_matched.into());
            m.insert(
                "participants_matched_total".into(),
                c.participants_matched_total.into(),
            );
            m.insert(
                "packets_dropped".into(),
                (c.packets_dropped_send + c.packets_dropped_receive).into(),
            );
            m.insert(
                "packets_dropped_by_direction".into(),
                json!({"send": c.packets_dropped_send, "receive": c.packets_dropped_receive}),
            );
        }
        v
    }

    /// `GET /v1/audit`.
    pub(super) fn audit(&self, after: u64, limit: usize) -> Result<Value, ApiError> {
        let entries = self.store.entries(after, limit).map_err(store_error)?;
        Ok(json!({ "entries": entries }))
    }

    /// `GET /v1/transparency`.
    pub(super) fn transparency(&self) -> Result<Value, ApiError> {
        let report = self
            .store
            .transparency(&self.all_counters())
            .map_err(store_error)?;
        serde_json::to_value(report)
            .map_err(|e| ApiError::new(500, "internal", format!("report: {e}")))
    }
}

/// Which rooms a rule can touch: those of its listed participants, those holding a participant
/// of one of its regions, limited to its rooms. Costs O(participants it names and matches).
pub(super) fn rooms_of(
    rule: &Rule,
    by_region: &HashMap<[u8; 2], BTreeSet<(String, String)>>,
) -> BTreeSet<String> {
    let mut rooms: BTreeSet<String> = rule.participants().iter().map(|p| p.room.clone()).collect();
    for region in rule.regions() {
        if let Some(members) = by_region.get(region) {
            rooms.extend(members.iter().map(|(room, _)| room.clone()));
        }
    }
    if !rule.rooms().is_empty() {
        rooms.retain(|r| rule.rooms().iter().any(|x| x == r));
    }
    rooms
}

fn rule_error(e: rules::RuleError) -> ApiError {
    ApiError::bad_request(e.code(), e.to_string())
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    let status = match e.code() {
        "rule_not_found" => 404,
        "rule_not_active" => 409,
        "invalid_reason" => 400,
        _ => {
            tracing::error!(error = %e, "store failed");
            500
        }
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// A token bucket: `rate` changes a second, bursts up to twice that.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).min(Duration::from_secs(10));
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
