//! The rules in force, indexed so that a participant's rules are found without a scan.

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_set};
use std::iter::Peekable;

use super::rule::{Rule, Subject};
use super::{Kind, RuleId};

/// The rules in force, by id, with two indexes: by `(room, participant)` and by region.
///
/// A rule is indexed under every participant and every region it names; its `rooms` list is
/// checked after the lookup. Since a rule must name participants or regions, every rule that
/// can match a subject is in one of the subject's two index buckets.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: BTreeMap<RuleId, Rule>,
    /// room -> participant -> rules naming them. Nested so lookups borrow `&str`.
    by_participant: HashMap<String, HashMap<String, BTreeSet<RuleId>>>,
    by_region: HashMap<[u8; 2], BTreeSet<RuleId>>,
    by_expiry: BTreeSet<(u64, RuleId)>,
}

/// Which rule, if any, blocks each direction and kind of media for one participant.
///
/// When several rules block the same thing, the lowest id is named, so the result does not
/// depend on the order rules were added. Drops are counted against that rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// Blocks the participant's outgoing audio.
    pub send_audio: Option<RuleId>,
    /// Blocks the participant's outgoing video.
    pub send_video: Option<RuleId>,
    /// Blocks the participant's incoming audio.
    pub recv_audio: Option<RuleId>,
    /// Blocks the participant's incoming video.
    pub recv_video: Option<RuleId>,
}

impl RuleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule under `id`, replacing (and returning) any rule that had that id.
    pub fn insert(&mut self, id: RuleId, rule: Rule) -> Option<Rule> {
        let old = self.remove(id);
        for p in rule.participants() {
            self.by_participant
                .entry(p.room.clone())
                .or_default()
                .entry(p.participant.clone())
                .or_default()
                .insert(id);
        }
        for r in rule.regions() {
            self.by_region.entry(*r).or_default().insert(id);
        }
        self.by_expiry.insert((rule.expires_at_unix(), id));
        self.rules.insert(id, rule);
        old
    }

    /// Removes a rule; returns it, or `None` when no rule had that id.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let rule = self.rules.remove(&id)?;
        for p in rule.participants() {
            let Some(room) = self.by_participant.get_mut(p.room.as_str()) else {
                continue;
            };
            if let Some(ids) = room.get_mut(p.participant.as_str()) {
                ids.remove(&id);
                if ids.is_empty() {
                    room.remove(p.participant.as_str());
                }
            }
            if room.is_empty() {
                self.by_participant.remove(p.room.as_str());
            }
        }
        for r in rule.regions() {
            if let Some(ids) = self.by_region.get_mut(r) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_region.remove(r);
                }
            }
        }
        self.by_expiry.remove(&(rule.expires_at_unix(), id));
        Some(rule)
    }

    /// The rule with this id.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(&id)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// All rules in id order.
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &Rule)> {
        self.rules.iter().map(|(id, r)| (*id, r))
    }

    /// Rules that name the subject's `(room, participant)` or its region, each once, in id
    /// order. Their `rooms` restriction is not checked yet: see [`Self::matching`].
    pub fn candidates<'s>(
        &'s self,
        s: &Subject<'_>,
    ) -> impl Iterator<Item = (RuleId, &'s Rule)> + use<'s> {
        let named = self
            .by_participant
            .get(s.room)
            .and_then(|room| room.get(s.participant))
            .unwrap_or(&EMPTY);
        let by_region = s
            .region
            .and_then(|r| self.by_region.get(&r))
            .unwrap_or(&EMPTY);
        let union = Union {
            a: named.iter().peekable(),
            b: by_region.iter().peekable(),
        };
        // Every id in the indexes is in `rules`: insert and remove keep them in step.
        union.filter_map(|id| self.rules.get(&id).map(|r| (id, r)))
    }

    /// Rules that match the subject, in id order.
    pub fn matching<'s, 'a>(
        &'s self,
        s: &Subject<'a>,
    ) -> impl Iterator<Item = (RuleId, &'s Rule)> + use<'s, 'a> {
        let s = *s;
        self.candidates(&s).filter(move |(_, r)| r.matches(&s))
    }

    /// What the matching rules block for the subject.
    pub fn effect(&self, s: &Subject<'_>) -> Effect {
        let mut e = Effect::default();
        for (id, rule) in self.candidates(s) {
            if !rule.matches(s) {
                continue;
            }
            for (slot, blocked) in [
                (&mut e.send_audio, rule.blocks_send(Kind::Audio)),
                (&mut e.send_video, rule.blocks_send(Kind::Video)),
                (&mut e.recv_audio, rule.blocks_receive(Kind::Audio)),
                (&mut e.recv_video, rule.blocks_receive(Kind::Video)),
            ] {
                if blocked && slot.is_none() {
                    *slot = Some(id);
                }
            }
            if e.is_full() {
                break;
            }
        }
        e
    }

    /// Rules whose expiry is at or before `now_unix`, in expiry order. They stay in the set
    /// until the caller removes them (after recording the expiry).
    pub fn expired(&self, now_unix: u64) -> Vec<RuleId> {
        self.by_expiry
            .range(..=(now_unix, RuleId(u64::MAX)))
            .map(|(_, id)| *id)
            .collect()
    }

    /// The earliest expiry in unix seconds, for the caller's next timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    #[cfg(test)]
    pub(super) fn indexes_are_empty(&self) -> bool {
        self.by_participant.is_empty() && self.by_region.is_empty() && self.by_expiry.is_empty()
    }
}

impl Effect {
    /// The rule blocking the participant's outgoing media of `kind`.
    pub fn send(&self, kind: Kind) -> Option<RuleId> {
        match kind {
            Kind::Audio => self.send_audio,
            Kind::Video => self.send_video,
        }
    }

    /// The rule blocking the participant's incoming media of `kind`.
    pub fn receive(&self, kind: Kind) -> Option<RuleId> {
        match kind {
            Kind::Audio => self.recv_audio,
            Kind::Video => self.recv_video,
        }
    }

    /// Whether nothing is blocked.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// The rules named, lowest first, each once.
    pub fn rules(&self) -> impl Iterator<Item = RuleId> {
        let mut ids = [
            self.send_audio,
            self.send_video,
            self.recv_audio,
            self.recv_video,
        ];
        ids.sort_unstable();
        let mut last = None;
        ids.into_iter().flatten().filter(move |id| {
            let new = last != Some(*id);
            last = Some(*id);
            new
        })
    }

    fn is_full(&self) -> bool {
        self.send_audio.is_some()
            && self.send_video.is_some()
            && self.recv_audio.is_some()
            && self.recv_video.is_some()
    }
}

static EMPTY: BTreeSet<RuleId> = BTreeSet::new();

/// Merges two sorted id sets into one sorted sequence without duplicates.
struct Union<'s> {
    a: Peekable<btree_set::Iter<'s, RuleId>>,
    b: Peekable<btree_set::Iter<'s, RuleId>>,
}

impl Iterator for Union<'_> {
    type Item = RuleId;

    fn next(&mut self) -> Option<RuleId> {
        let next = match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x < y => self.a.next(),
            (Some(x), Some(y)) if y < x => self.b.next(),
            (Some(_), Some(_)) => {
                self.b.next();
                self.a.next()
            }
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        };
        next.copied()
    }
}
