//! Events for the signaling server: what changed, pushed as it happens (`GET /v1/events`).
//!
//! The control core says what happened ([`Event`]); the control thread gives each event an id
//! once the change is carried out and appends it to the [`EventLog`], a bounded history that
//! every stream reads from with its own cursor. A stream that falls so far behind that the
//! events it still needs left the history is counted and closed: its client resumes with
//! `Last-Event-ID`, gets `410 Gone`, and reads the state again.
//!
//! Ids increase across restarts: the high 32 bits are the run number kept in the database, the
//! low 32 bits count events within the run. A stream that resumes with an id of an earlier run
//! starts at this run's first event, `relay_started` (so its client learns of the restart and
//! reads the state again), as long as the history still holds it; otherwise, and for any id
//! older than the history, the answer is `410 Gone`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Events kept for streams to resume from, unless configured (`--event-history`).
pub const HISTORY: usize = 10_000;

/// Something that happened, as the control core reports it. Never holds an address.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type: `room_created`, `participant_latched`, ...
    pub kind: &'static str,
    /// Its body: ids, regions, reasons.
    pub data: Value,
}

impl Event {
    /// An event of `kind` with body `data` (an object).
    pub fn new(kind: &'static str, data: Value) -> Self {
        Self { kind, data }
    }
}

/// An event with its id and time, as streams send it.
#[derive(Debug)]
pub struct Published {
    /// Its id: increasing, across restarts too.
    pub id: u64,
    /// The event type.
    pub kind: &'static str,
    /// The JSON body sent as the SSE `data`: the event's fields plus `id`, `type` and `time`.
    pub json: String,
}

/// Every event type the relay sends, for the API documentation.
pub const KINDS: &[&str] = &[
    "relay_started",
    "room_created",
    "room_closed",
    "participant_joined",
    "participant_changed",
    "participant_left",
    "participant_latched",
    "participant_unlatched",
    "subscription_changed",
    "rule_added",
    "rule_lifted",
    "rule_expired",
    "drain_started",
    "drain_stopped",
    "node_joined",
    "node_lost",
];

/// The bounded history of published events.
pub struct EventLog {
    inner: Mutex<Inner>,
    /// Tells waiting streams the id of the newest event.
    newest: tokio::sync::watch::Sender<u64>,
    /// Events that streams missed because they fell behind the history.
    missed: AtomicU64,
    /// Events published, by type (same order as [`KINDS`]).
    published: Box<[AtomicU64]>,
}

struct Inner {
    events: VecDeque<Arc<Published>>,
    capacity: usize,
    /// The id the next event gets.
    next: u64,
    /// The first id of this run.
    first: u64,
}

/// Where a stream resumes.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Send the events after this id.
    After(u64),
    /// The events after the id asked for are gone (restart, or fell out of the history).
    Gone,
}

impl EventLog {
    /// An empty history of `capacity` events for run number `run` (from the database; ids
    /// start at `run << 32`).
    pub fn new(run: u64, capacity: usize) -> Self {
        let first = (run << 32) | 1;
        let (newest, _) = tokio::sync::watch::channel(first - 1);
        Self {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
                next: first,
                first,
            }),
            newest,
            missed: AtomicU64::new(0),
            published: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Publishes an event at `time`; returns its id.
    pub fn publish(&self, event: Event, time: SystemTime) -> u64 {
        let id = {
            let mut inner = self.lock();
            let id = inner.next;
            inner.next += 1;
            let mut body = match event.data {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("value".into(), other);
                    m
                }
            };
            body.insert("id".into(), id.into());
            body.insert("type".into(), event.kind.into());
            body.insert(
                "time".into(),
                humantime::format_rfc3339_millis(time).to_string().into(),
            );
            if inner.events.len() >= inner.capacity {
                inner.events.pop_front();
            }
            inner.events.push_back(Arc::new(Published {
                id,
                kind: event.kind,
                json: Value::Object(body).to_string(),
            }));
            id
        };
        if let Some(i) = KINDS.iter().position(|k| *k == event.kind) {
            self.published[i].fetch_add(1, Ordering::Relaxed);
        }
        self.newest.send_replace(id);
        id
    }

    /// Where a stream that last saw `after` (None: a new stream, from now on) resumes.
    pub fn resume(&self, after: Option<u64>) -> Resume {
        let inner = self.lock();
        let last = inner.next - 1;
        let Some(after) = after else {
            return Resume::After(last);
        };
        let oldest = inner.events.front().map_or(inner.next, |e| e.id);
        if after > last {
            // Newer than anything sent: the database was replaced. Nothing can be vouched for.
            return Resume::Gone;
        }
        // An id of an earlier run: from this run's first event, if the history still has it.
        let after = if after < inner.first && oldest == inner.first {
            inner.first - 1
        } else {
            after
        };
        if after + 1 < oldest {
            Resume::Gone
        } else {
            Resume::After(after)
        }
    }

    /// Up to `max` events after `after`, oldest first; `Err(missed)` when some of them already
    /// left the history (the stream must end).
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<Arc<Published>>, u64> {
        let inner = self.lock();
        let Some(oldest) = inner.events.front().map(|e| e.id) else {
            return Ok(Vec::new());
        };
        if after + 1 < oldest {
            let missed = oldest - after - 1;
            self.missed.fetch_add(missed, Ordering::Relaxed);
            return Err(missed);
        }
        let skip = (after + 1 - oldest) as usize;
        Ok(inner.events.iter().skip(skip).take(max).cloned().collect())
    }

    /// A receiver that changes whenever an event is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Events streams missed by falling behind.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// Events published by type, in the order of [`KINDS`].
    pub fn published(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KINDS
            .iter()
            .zip(self.published.iter())
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lock is held for a few pointer copies; a panic while holding it cannot leave the
        // queue half-changed, so a poisoned lock is still sound to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(n: u64) -> Event {
        Event::new("room_created", json!({"room": format!("r{n}")}))
    }

    #[test]
    fn ids_increase_and_resume() {
        let log = EventLog::new(3, HISTORY);
        let t = SystemTime::UNIX_EPOCH;
        let a = log.publish(ev(1), t);
        let b = log.publish(ev(2), t);
        assert_eq!(a, (3 << 32) | 1);
        assert_eq!(b, a + 1);
        assert_eq!(log.resume(None), Resume::After(b));
        assert_eq!(log.resume(Some(a)), Resume::After(a));
        assert_eq!(log.resume(Some(a - 1)), Resume::After(a - 1));
        let got = log.after(a - 1, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
        let body: Value = serde_json::from_str(&got[0].json).unwrap();
        assert_eq!(body["type"], "room_created");
        assert_eq!(body["room"], "r1");
        assert_eq!(body["id"], a);
        // An id of an earlier run resumes at this run's first event; one from the future
        // cannot be resumed from.
        assert_eq!(log.resume(Some((2 << 32) | 7)), Resume::After(a - 1));
        assert_eq!(log.resume(Some(0)), Resume::After(a - 1));
        assert_eq!(log.resume(Some(b + 5)), Resume::Gone);
    }

    #[test]
    fn history_is_bounded_and_laggards_are_counted() {
        let log = EventLog::new(1, HISTORY);
        let t = SystemTime::UNIX_EPOCH;
        let first = log.publish(ev(0), t);
        for i in 1..HISTORY as u64 + 10 {
            log.publish(ev(i), t);
        }
        assert_eq!(log.resume(Some(first)), Resume::Gone);
        assert_eq!(
            log.resume(Some(0)),
            Resume::Gone,
            "this run's start is gone too"
        );
        assert_eq!(log.after(first, 5).err(), Some(9));
        assert_eq!(log.missed(), 9);
        let recent = first + 20;
        assert_eq!(log.resume(Some(recent)), Resume::After(recent));
        assert_eq!(log.after(recent, 3).unwrap().len(), 3);
    }
}
