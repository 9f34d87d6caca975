//! Drop rules in the core: the rules ever added, those in force, their live counters, whom they
//! match, and the rate limit on changes.
//!
//! The book holds every rule's stored record in memory (rules are few), so reads never touch
//! the database; the database is written from the journal, in the same transaction discipline
//! as rooms and participants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Core, Now, Outcome, outcome, parse_rule_id, rfc3339_millis};
use crate::control::body::LiftBody;
use crate::control::error::{ApiError, Code};
use crate::control::event::Event;
use crate::control::view;
use crate::route;
use crate::rules::{self, Rule, RuleCounters, RuleId, RuleSet};
use crate::store::{self, RuleState, StoreOp, StoredRule};

/// A rule's record and its compiled form (kept for lifted and expired rules too, to find the
/// rooms they touched).
#[derive(Debug, Clone)]
struct Entry {
    stored: StoredRule,
    rule: Option<Rule>,
}

/// Rules, their counters and whom they match.
pub(super) struct RuleBook {
    set: RuleSet,
    entries: BTreeMap<RuleId, Entry>,
    workers: usize,
    /// Per-worker packet counters the compiled rooms add to, for rules in force.
    live: HashMap<RuleId, Arc<route::RuleCounters>>,
    /// Counters saved by earlier runs.
    base: HashMap<RuleId, RuleCounters>,
    /// Per participant (room, id): the rules that match it now, when any do.
    matched: HashMap<(String, String), Vec<RuleId>>,
    matched_now: HashMap<RuleId, u64>,
    matched_total: HashMap<RuleId, u64>,
    bucket: TokenBucket,
    next_id: u64,
}

impl RuleBook {
    pub(super) fn new(
        workers: usize,
        changes_per_sec: u32,
        stored: Vec<StoredRule>,
        saved: Vec<(RuleId, RuleCounters)>,
        next_id: u64,
        now: Now,
    ) -> Result<Self, String> {
        let mut book = Self {
            set: RuleSet::new(),
            entries: BTreeMap::new(),
            workers,
            live: HashMap::new(),
            base: HashMap::new(),
            matched: HashMap::new(),
            matched_now: HashMap::new(),
            matched_total: HashMap::new(),
            bucket: TokenBucket::new(changes_per_sec, now.mono),
            next_id: next_id.max(1),
        };
        for (id, c) in saved {
            book.base.insert(id, c);
            book.matched_total.insert(id, c.participants_matched_total);
        }
        for s in stored {
            let id = s.id;
            book.next_id = book.next_id.max(id.0 + 1);
            if s.state == RuleState::Active {
                // A rule in force must be enforced: refuse to start without it.
                rules::compile(&s.spec)
                    .map_err(|e| format!("stored rule {id} cannot be enforced: {e}"))?;
            }
            book.put(id, Some(s));
        }
        Ok(book)
    }

    pub(super) fn set(&self) -> &RuleSet {
        &self.set
    }

    pub(super) fn record(&self, id: RuleId) -> Option<&StoredRule> {
        self.entries.get(&id).map(|e| &e.stored)
    }

    pub(super) fn live(&self, id: RuleId) -> Option<Arc<route::RuleCounters>> {
        self.live.get(&id).cloned()
    }

    /// Installs (or removes) a rule's record; an active one is enforced, others are not.
    pub(super) fn put(&mut self, id: RuleId, stored: Option<StoredRule>) {
        self.set.remove(id);
        let Some(stored) = stored else {
            self.entries.remove(&id);
            self.live.remove(&id);
            return;
        };
        let rule = rules::compile(&stored.spec).ok();
        if stored.state == RuleState::Active
            && let Some(rule) = &rule
        {
            self.set.insert(id, rule.clone());
            self.live
                .entry(id)
                .or_insert_with(|| Arc::new(route::RuleCounters::new(self.workers)));
        }
        self.entries.insert(id, Entry { stored, rule });
    }

    /// Puts back a rule's record as it was before a change (rollback).
    pub(super) fn restore(&mut self, id: RuleId, old: Option<StoredRule>) {
        self.put(id, old);
    }

    /// The participants a rule can match: those it names that `slot` finds (giving their slot)
    /// and those of its regions, limited to its rooms. O(participants it names and matches).
    pub(super) fn participants_of(
        &self,
        id: RuleId,
        by_region: &HashMap<[u8; 2], BTreeSet<(String, String)>>,
        slot: impl Fn(&str, &str) -> Option<u16>,
    ) -> Vec<(String, String, u16)> {
        let Some(rule) = self.entries.get(&id).and_then(|e| e.rule.as_ref()) else {
            return Vec::new();
        };
        let in_rooms =
            |room: &str| rule.rooms().is_empty() || rule.rooms().iter().any(|r| r == room);
        let mut out = Vec::new();
        for p in rule.participants() {
            if in_rooms(&p.room)
                && let Some(s) = slot(&p.room, &p.participant)
            {
                out.push((p.room.clone(), p.participant.clone(), s));
            }
        }
        for region in rule.regions() {
            for (room, p) in by_region.get(region).into_iter().flatten() {
                if in_rooms(room)
                    && let Some(s) = slot(room, p)
                {
                    out.push((room.clone(), p.clone(), s));
                }
            }
        }
        out
    }

    /// The write a rule's change needs, from its record before the change.
    pub(super) fn store_op(&self, id: RuleId, old: Option<&StoredRule>) -> Option<StoreOp> {
        let new = &self.entries.get(&id)?.stored;
        let was = old.map(|o| o.state);
        match (was, new.state) {
            (None, RuleState::Active) => Some(StoreOp::AddRule {
                id,
                spec: new.spec.clone(),
                expires_at: self
                    .entries
                    .get(&id)
                    .and_then(|e| e.rule.as_ref())
                    .map_or(0, Rule::expires_at_unix),
                time: new.created_at.clone(),
            }),
            (Some(RuleState::Active), RuleState::Lifted) => Some(StoreOp::LiftRule {
                id,
                reason: new.lift_reason.clone().unwrap_or_default(),
                time: new.lifted_at.clone().unwrap_or_default(),
            }),
            (Some(RuleState::Active), RuleState::Expired) => Some(StoreOp::ExpireRule {
                id,
                time: new.expired_at.clone().unwrap_or_default(),
            }),
            _ => None,
        }
    }

    /// Records the rules that match participant `id` of `room` now; returns what it matched
    /// before if that differs. Each rule that starts matching it counts once more in
    /// `participants_matched_total`; `undo` (putting back an earlier record) takes that back.
    pub(super) fn set_matched(
        &mut self,
        room: &str,
        id: &str,
        mut now: Vec<RuleId>,
        undo: bool,
    ) -> Option<Vec<RuleId>> {
        now.sort_unstable();
        let key = (room.to_owned(), id.to_owned());
        let old = self.matched.get(&key).cloned().unwrap_or_default();
        if old == now {
            return None;
        }
        for rule in old.iter().filter(|r| !now.contains(r)) {
            if let Some(n) = self.matched_now.get_mut(rule) {
                *n = n.saturating_sub(1);
            }
            if undo && let Some(n) = self.matched_total.get_mut(rule) {
                *n = n.saturating_sub(1);
            }
        }
        for rule in now.iter().filter(|r| !old.contains(r)) {
            *self.matched_now.entry(*rule).or_default() += 1;
            if !undo {
                *self.matched_total.entry(*rule).or_default() += 1;
            }
        }
        if now.is_empty() {
            self.matched.remove(&key);
        } else {
            self.matched.insert(key, now);
        }
        Some(old)
    }

    /// One rule's counters: saved before this run plus this run's.
    fn counters(&self, id: RuleId) -> RuleCounters {
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

    pub(super) fn all_counters(&self) -> Vec<(RuleId, RuleCounters)> {
        self.entries
            .keys()
            .map(|id| (*id, self.counters(*id)))
            .collect()
    }

    pub(super) fn view(&self, id: RuleId) -> Result<view::Rule, ApiError> {
        let e = self
            .entries
            .get(&id)
            .ok_or_else(|| ApiError::new(Code::RuleNotFound, format!("no rule {id}")))?;
        let c = self.counters(id);
        Ok(view::Rule {
            stored: e.stored.clone(),
            participants_matched: c.participants_matched,
            participants_matched_total: c.participants_matched_total,
            packets_dropped: c.packets_dropped_send + c.packets_dropped_receive,
            packets_dropped_by_direction: view::Dropped {
                send: c.packets_dropped_send,
                receive: c.packets_dropped_receive,
            },
        })
    }

    pub(super) fn list(&self) -> view::RuleList {
        view::RuleList {
            rules: self
                .entries
                .keys()
                .filter_map(|id| self.view(*id).ok())
                .collect(),
        }
    }

    pub(super) fn metrics(&self) -> Vec<view::RuleMetric> {
        self.set
            .iter()
            .map(|(id, rule)| {
                let base = self.base.get(&id).copied().unwrap_or_default();
                view::RuleMetric {
                    id,
                    expires_at: rule.expires_at_unix(),
                    base: (base.packets_dropped_send, base.packets_dropped_receive),
                    live: self.live.get(&id).cloned(),
                }
            })
            .collect()
    }

    /// Takes a token from the rule-change rate limit (fleet mode checks before it commits).
    pub(super) fn take_token_now(&mut self, now: Now) -> Result<(), ApiError> {
        self.take_token(now)
    }

    fn take_token(&mut self, now: Now) -> Result<(), ApiError> {
        if self.bucket.take(now.mono) {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::TooManyRuleChanges,
                "rule changes are rate-limited; retry in a second",
            ))
        }
    }
}

impl Core {
    /// `POST /v1/rules`: validated, then in force once the outcome is carried out.
    pub(super) fn add_rule(&mut self, now: Now, body: &[u8]) -> Result<Outcome, ApiError> {
        let spec = rules::parse(body).map_err(|e| ApiError::from_rule(&e))?;
        rules::validate(&spec, now.unix()).map_err(|e| ApiError::from_rule(&e))?;
        self.rules.take_token(now)?;
        let id = RuleId(self.rules.next_id);
        self.rules.next_id += 1;
        let stored = StoredRule {
            id,
            spec,
            state: RuleState::Active,
            created_at: rfc3339_millis(now.wall),
            lifted_at: None,
            lift_reason: None,
            expired_at: None,
        };
        self.set_rule(id, stored);
        let mut out = outcome(201, &self.rules.view(id)?);
        out.events.push(Event::new("rule_added", rule_event(&out)));
        out.reply_rule = Some((201, id));
        Ok(out)
    }

    /// `DELETE /v1/rules/{id}`: lifted once the outcome is carried out.
    pub(super) fn lift_rule(
        &mut self,
        now: Now,
        id: &str,
        body: &[u8],
    ) -> Result<Outcome, ApiError> {
        let id = parse_rule_id(id)?;
        let lift: LiftBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                Code::InvalidReason,
                format!("a JSON body {{\"reason\": \"...\"}} is required: {e}"),
            )
        })?;
        let Some(old) = self.rules.record(id).cloned() else {
            return Err(ApiError::new(
                Code::RuleNotFound,
                format!("no rule has id {id}"),
            ));
        };
        if old.state != RuleState::Active {
            return Err(ApiError::new(
                Code::RuleNotActive,
                format!("rule {id} is already {}", old.state.as_str()),
            ));
        }
        store::check_reason(&lift.reason).map_err(|e| ApiError::from_store(&e))?;
        self.rules.take_token(now)?;
        let lifted = StoredRule {
            state: RuleState::Lifted,
            lifted_at: Some(rfc3339_millis(now.wall)),
            lift_reason: Some(lift.reason.clone()),
            ..old
        };
        self.set_rule(id, lifted);
        let mut out = outcome(200, &self.rules.view(id)?);
        out.reply_rule = Some((200, id));
        out.events.push(Event::new(
            "rule_lifted",
            json!({"rule": id, "reason": lift.reason}),
        ));
        Ok(out)
    }

    /// Housekeeping: expires due rules, unlatches silent participants, saves counters every
    /// ten seconds.
    pub(super) fn tick(&mut self, now: Now, geo: super::RegionLookup<'_>) -> Outcome {
        let mut out = Outcome::default();
        for id in self.rules.set().expired(now.unix()) {
            let Some(old) = self.rules.record(id).cloned() else {
                continue;
            };
            let expired = StoredRule {
                state: RuleState::Expired,
                expired_at: Some(rfc3339_millis(now.wall)),
                ..old
            };
            self.set_rule(id, expired);
            out.events
                .push(Event::new("rule_expired", json!({"rule": id})));
        }
        self.expire_foreign(now.unix());
        self.expire_latches(now, geo, &mut out);
        if self
            .last_save
            .is_none_or(|t| now.mono.duration_since(t) >= SAVE_EVERY)
        {
            self.last_save = Some(now.mono);
            out.store
                .push(StoreOp::SaveCounters(self.rules.all_counters()));
        }
        out
    }
}

/// The body of `rule_added`: the rule's id, what it blocks and until when; its match names
/// participants by id and regions, never addresses.
fn rule_event(out: &Outcome) -> serde_json::Value {
    let Some((_, v)) = &out.reply else {
        return json!({});
    };
    json!({
        "rule": v["id"],
        "match": v["match"],
        "direction": v["direction"],
        "media": v["media"],
        "expires_at": v["expires_at"],
        "jurisdiction": v["basis"]["jurisdiction"],
    })
}

/// How often rule counters are saved.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// A token bucket: `rate` changes a second, bursts up to twice that.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate * 2.0,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last)
            .min(Duration::from_secs(10));
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
