//! Self-fencing: when a relay of the fleet may forward media. Pure: every input carries its
//! time, and [`Fence::state`] takes `now`; nothing here reads a clock or does I/O.
//!
//! A relay may forward only while both hold:
//!
//! 1. **Its lease is surely alive.** etcd expires a lease TTL after the last keepalive it
//!    *received*, which is after we *sent* it. So if a keepalive sent at `t` was answered with
//!    TTL `ttl`, the lease lives at least until `t + ttl` by the store's reckoning, and we stop
//!    at `t + ttl - margin` (the margin covers the two clocks' rates and our own reaction
//!    time). A lost lease (an answer with TTL 0, a revoke) stops forwarding at once.
//! 2. **It has applied every rule up to the revision at which it (re)joined.** A relay that
//!    joined at revision J was not counted among the nodes that had to acknowledge rules
//!    committed before J, so it must have applied all of them before it forwards anything.
//!
//! Why that makes a rule "in force fleet-wide when the call returns": the caller waits until
//! every node registered at the rule's revision R has acknowledged R, or has had its lease
//! revoked and one TTL has passed. A node that acknowledged applies the rule. A revoked node
//! got its last keepalive answer before the revoke, so its deadline (1.) is at most one TTL
//! after the revoke: it has stopped. A node that joins after R has a join revision above R and
//! applies everything up to it (2.) before it forwards.

#![deny(unsafe_code)]

use std::time::{Duration, Instant};

/// Whether a relay may forward, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Lease alive and every rule up to the join revision applied.
    Forwarding,
    /// Forward nothing.
    Fenced(Reason),
}

/// Why a relay is fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No lease yet (starting, or rejoining after a loss).
    NoLease,
    /// The store said the lease is gone (expired or revoked).
    LeaseLost,
    /// No keepalive answer recent enough: the lease may expire any moment.
    LeaseExpiring,
    /// Joined at `joined_at` but has applied rules only up to `applied`.
    Syncing {
        /// The highest revision applied.
        applied: i64,
        /// The revision of the registration.
        joined_at: i64,
    },
}

/// The fencing state of one relay.
#[derive(Clone, Debug)]
pub struct Fence {
    margin: Duration,
    lease: Lease,
    joined_at: i64,
    applied: i64,
}

#[derive(Clone, Copy, Debug)]
enum Lease {
    None,
    Lost,
    Until(Instant),
}

impl Fence {
    /// A fence that has no lease yet. `margin` is taken off every lease deadline.
    pub fn new(margin: Duration) -> Self {
        Self {
            margin,
            lease: Lease::None,
            joined_at: 0,
            applied: 0,
        }
    }

    /// A lease was granted by a request sent at `sent_at`, with `ttl`, and the relay's
    /// registration under it was committed at revision `joined_at`.
    pub fn joined(&mut self, sent_at: Instant, ttl: Duration, joined_at: i64) {
        self.lease = Lease::Until(self.deadline_for(sent_at, ttl));
        self.joined_at = joined_at;
    }

    /// A keepalive sent at `sent_at` was answered: the lease lives for `ttl` from then.
    /// Answers to older keepalives never move the deadline back.
    pub fn keepalive_answered(&mut self, sent_at: Instant, ttl: Duration) {
        let until = self.deadline_for(sent_at, ttl);
        match self.lease {
            Lease::Until(old) if old >= until => {}
            Lease::Until(_) => self.lease = Lease::Until(until),
            // An answer after a loss does not bring the lease back: only `joined` does.
            Lease::None | Lease::Lost => {}
        }
    }

    /// The store said the lease is gone.
    pub fn lease_lost(&mut self) {
        self.lease = Lease::Lost;
    }

    /// Every rule up to `revision` is applied on all workers.
    pub fn applied(&mut self, revision: i64) {
        self.applied = self.applied.max(revision);
    }

    /// Whether the relay may forward at `now`.
    pub fn state(&self, now: Instant) -> State {
        match self.lease {
            Lease::None => State::Fenced(Reason::NoLease),
            Lease::Lost => State::Fenced(Reason::LeaseLost),
            Lease::Until(until) if now >= until => State::Fenced(Reason::LeaseExpiring),
            Lease::Until(_) if self.applied < self.joined_at => State::Fenced(Reason::Syncing {
                applied: self.applied,
                joined_at: self.joined_at,
            }),
            Lease::Until(_) => State::Forwarding,
        }
    }

    /// When forwarding stops unless a keepalive answer comes first (`None` without a lease).
    pub fn deadline(&self) -> Option<Instant> {
        match self.lease {
            Lease::Until(until) => Some(until),
            Lease::None | Lease::Lost => None,
        }
    }

    /// The revision of the current registration (0 before the first).
    pub fn joined_at(&self) -> i64 {
        self.joined_at
    }

    /// The highest revision applied.
    pub fn applied_revision(&self) -> i64 {
        self.applied
    }

    fn deadline_for(&self, sent_at: Instant, ttl: Duration) -> Instant {
        // A TTL shorter than the margin gives a deadline at `sent_at`: fenced at once.
        sent_at + ttl.saturating_sub(self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);
    const MARGIN: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fenced_until_joined_and_synced() {
        let t0 = Instant::now();
        let mut f = Fence::new(MARGIN);
        assert_eq!(f.state(t0), State::Fenced(Reason::NoLease));
        assert_eq!(f.deadline(), None);
        f.joined(t0, TTL, 42);
        assert_eq!(
            f.state(t0 + ms(10)),
            State::Fenced(Reason::Syncing {
                applied: 0,
                joined_at: 42
            })
        );
        f.applied(41);
        assert!(matches!(f.state(t0), State::Fenced(Reason::Syncing { .. })));
        f.applied(42);
        assert_eq!(f.state(t0 + ms(10)), State::Forwarding);
        // Applied never goes back.
        f.applied(7);
        assert_eq!(f.applied_revision(), 42);
        assert_eq!(f.joined_at(), 42);
    }

    #[test]
    fn deadline_is_send_time_plus_ttl_minus_margin() {
        let t0 = Instant::now();
        let mut f = Fence::new(MARGIN);
        f.joined(t0, TTL, 1);
        f.applied(1);
        assert_eq!(f.deadline(), Some(t0 + ms(2500)));
        assert_eq!(f.state(t0 + ms(2499)), State::Forwarding);
        assert_eq!(f.state(t0 + ms(2500)), State::Fenced(Reason::LeaseExpiring));
        // A keepalive sent at 1 s and answered (whenever) moves the deadline to 3.5 s.
        f.keepalive_answered(t0 + ms(1000), TTL);
        assert_eq!(f.deadline(), Some(t0 + ms(3500)));
        assert_eq!(f.state(t0 + ms(3000)), State::Forwarding);
        // A late answer to an older keepalive does not move it back.
        f.keepalive_answered(t0 + ms(500), TTL);
        assert_eq!(f.deadline(), Some(t0 + ms(3500)));
        // Once the deadline passed, a fresh answer resumes forwarding (same lease).
        assert_eq!(f.state(t0 + ms(4000)), State::Fenced(Reason::LeaseExpiring));
        f.keepalive_answered(t0 + ms(3900), TTL);
        assert_eq!(f.state(t0 + ms(4000)), State::Forwarding);
    }

    #[test]
    fn a_lost_lease_fences_at_once_until_rejoined() {
        let t0 = Instant::now();
        let mut f = Fence::new(MARGIN);
        f.joined(t0, TTL, 5);
        f.applied(5);
        f.lease_lost();
        assert_eq!(f.state(t0), State::Fenced(Reason::LeaseLost));
        assert_eq!(f.deadline(), None);
        // A stray answer on the old lease changes nothing.
        f.keepalive_answered(t0 + ms(100), TTL);
        assert_eq!(f.state(t0 + ms(200)), State::Fenced(Reason::LeaseLost));
        // Rejoining at a later revision needs the rules up to it.
        f.joined(t0 + ms(300), TTL, 9);
        assert_eq!(
            f.state(t0 + ms(400)),
            State::Fenced(Reason::Syncing {
                applied: 5,
                joined_at: 9
            })
        );
        f.applied(9);
        assert_eq!(f.state(t0 + ms(400)), State::Forwarding);
    }

    #[test]
    fn a_ttl_below_the_margin_never_forwards() {
        let t0 = Instant::now();
        let mut f = Fence::new(MARGIN);
        f.joined(t0, ms(400), 1);
        f.applied(1);
        assert_eq!(f.state(t0), State::Fenced(Reason::LeaseExpiring));
    }

    proptest::proptest! {
        /// After any sequence of events, forwarding implies what the module docs promise: a
        /// registration since the last loss, rules applied up to it, and `now` before the
        /// latest answered send time (since that registration) plus TTL minus the margin.
        #[test]
        fn forwarding_implies_a_live_lease_and_synced_rules(
            events in proptest::collection::vec((0u8..4, 0u64..2000, 0i64..20), 0..40),
        ) {
            let t0 = Instant::now();
            let mut f = Fence::new(MARGIN);
            let mut now = t0;
            // The model: latest lease end since the last join, whether lost, join and applied.
            let mut until: Option<Instant> = None;
            let mut joined_at = 0;
            let mut applied = 0;
            for (kind, step, revision) in events {
                now += ms(step);
                // A keepalive is sent some time before its answer arrives.
                let sent = now - ms(step / 2);
                match kind {
                    0 => {
                        f.joined(sent, TTL, revision);
                        until = Some(sent + TTL - MARGIN);
                        joined_at = revision;
                    }
                    1 => {
                        f.keepalive_answered(sent, TTL);
                        if let Some(u) = until {
                            until = Some(u.max(sent + TTL - MARGIN));
                        }
                    }
                    2 => {
                        f.lease_lost();
                        until = None;
                    }
                    _ => {
                        f.applied(revision);
                        applied = applied.max(revision);
                    }
                }
                let forwarding = f.state(now) == State::Forwarding;
                let model = until.is_some_and(|u| now < u) && applied >= joined_at;
                proptest::prop_assert_eq!(forwarding, model);
            }
        }
    }
}
