//! Who should get what, and when: the loadgen's own model of the rooms, subscriptions, joins,
//! leaves and drop rules, with the times at which each change was made through the API.
//!
//! A change made by an API call is uncertain while the call is in flight: it is surely not in
//! force before the call started and surely in force once it returned (the relay returns only
//! after every worker applied it). A packet sent in between, or up to `grace` before the call
//! started (it may still sit in a queue when the change lands), may go either way. So every
//! question "should receiver r get stream s's packet sent at t?" has three answers.

use crate::profile::Kind;

/// Three-valued answer (Kleene logic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    /// Surely not.
    No,
    /// In flight across a change: either way is fine.
    Unknown,
    /// Surely.
    Yes,
}

impl Tri {
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::No, _) | (_, Self::No) => Self::No,
            (Self::Yes, Self::Yes) => Self::Yes,
            _ => Self::Unknown,
        }
    }

    fn not(self) -> Self {
        match self {
            Self::No => Self::Yes,
            Self::Unknown => Self::Unknown,
            Self::Yes => Self::No,
        }
    }

    fn of(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }
}

/// The span of one API call, ns since the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the request was sent.
    pub start_ns: u64,
    /// When the reply came back.
    pub end_ns: u64,
}

/// A boolean that API calls switch over time; false at the start.
#[derive(Debug, Clone, Default)]
pub struct Switch {
    changes: Vec<(Window, bool)>,
}

impl Switch {
    /// Records a change; calls are made one after another, so windows come in order.
    pub fn set(&mut self, window: Window, value: bool) {
        self.changes.push((window, value));
    }

    /// The value at send time `t`.
    pub fn at(&self, t: u64, grace: u64) -> Tri {
        let mut value = false;
        for &(w, v) in &self.changes {
            if t < w.start_ns.saturating_sub(grace) {
                break;
            }
            if t < w.end_ns {
                return if v == value { Tri::of(v) } else { Tri::Unknown };
            }
            value = v;
        }
        Tri::of(value)
    }

    /// When the first change started.
    pub fn first_start(&self) -> Option<u64> {
        self.changes.first().map(|(w, _)| w.start_ns)
    }

    fn breakpoints(&self, grace: u64, out: &mut Vec<u64>) {
        for (w, _) in &self.changes {
            out.push(w.start_ns.saturating_sub(grace));
            out.push(w.end_ns);
        }
    }
}

/// Which of a participant's media a rule drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Nobody gets their media.
    Send,
    /// They get nothing.
    Receive,
    /// Both.
    Both,
}

impl Direction {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Both => "both",
        }
    }
}

/// Which media a rule drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// Audio only.
    Audio,
    /// Video only (screen share included).
    Video,
    /// Everything.
    All,
}

impl Media {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
            Self::All => "all",
        }
    }

    fn covers(self, kind: Kind) -> bool {
        match self {
            Self::All => true,
            Self::Audio => kind.media() == "audio",
            Self::Video => kind.media() == "video",
        }
    }
}

/// A drop rule as loadgen made it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Participants it matches (global participant indices).
    pub targets: Vec<u32>,
    /// Send, receive or both.
    pub direction: Direction,
    /// Which media.
    pub media: Media,
    /// When it was in force.
    pub active: Switch,
}

/// Whose media a participant receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribe {
    /// Everyone else in the room.
    All,
    /// Only these participants (global indices, sorted).
    List(Vec<u32>),
}

/// The whole model.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Slack before each change during which packets may go either way, ns.
    pub grace_ns: u64,
    /// Room of each participant.
    pub room: Vec<u32>,
    /// Subscription of each participant.
    pub subscribe: Vec<Subscribe>,
    /// Whether each participant is in its room.
    pub presence: Vec<Switch>,
    /// Participant and kind of each stream.
    pub streams: Vec<(u32, Kind)>,
    /// Every rule made during the run.
    pub rules: Vec<Rule>,
    /// Participants loadgen does not read (sinks): nothing is expected of them. Missing
    /// entries are read.
    pub unread: Vec<bool>,
    /// The relay each participant is on, in multi-relay runs (missing entries: relay 0). It
    /// changes no answer: a fleet forwards between relays exactly as one relay does.
    pub relay: Vec<u32>,
}

impl World {
    /// Should `receiver` get stream `stream`'s packet sent at `t`?
    pub fn deliver(&self, stream: u32, receiver: u32, t: u64) -> Tri {
        let Some(&(sender, kind)) = self.streams.get(stream as usize) else {
            return Tri::No;
        };
        if !self.may_ever(sender, receiver) {
            return Tri::No;
        }
        let g = self.grace_ns;
        let mut d = self.presence[sender as usize]
            .at(t, g)
            .and(self.presence[receiver as usize].at(t, g));
        for rule in self.rules_between(sender, receiver, kind) {
            d = d.and(rule.active.at(t, g).not());
        }
        d
    }

    /// Whether stream `stream`'s packets reach `receiver` across relays (its sender is on
    /// another relay).
    pub fn across(&self, stream: u32, receiver: u32) -> bool {
        let relay = |p: u32| self.relay.get(p as usize).copied().unwrap_or(0);
        self.streams
            .get(stream as usize)
            .is_some_and(|&(sender, _)| relay(sender) != relay(receiver))
    }

    /// Send-time segments `[from, to)` covering all time, each with one answer.
    pub fn segments(&self, stream: u32, receiver: u32) -> Vec<(u64, u64, Tri)> {
        let Some(&(sender, kind)) = self.streams.get(stream as usize) else {
            return vec![(0, u64::MAX, Tri::No)];
        };
        if !self.may_ever(sender, receiver) {
            return vec![(0, u64::MAX, Tri::No)];
        }
        let g = self.grace_ns;
        let mut points = vec![0];
        self.presence[sender as usize].breakpoints(g, &mut points);
        self.presence[receiver as usize].breakpoints(g, &mut points);
        for rule in self.rules_between(sender, receiver, kind) {
            rule.active.breakpoints(g, &mut points);
        }
        points.sort_unstable();
        points.dedup();
        points.push(u64::MAX);
        let mut out: Vec<(u64, u64, Tri)> = Vec::with_capacity(points.len());
        for pair in points.windows(2) {
            let answer = self.deliver(stream, receiver, pair[0]);
            match out.last_mut() {
                Some(last) if last.2 == answer => last.1 = pair[1],
                _ => out.push((pair[0], pair[1], answer)),
            }
        }
        out
    }

    /// Same room, not the sender itself, and subscribed.
    fn may_ever(&self, sender: u32, receiver: u32) -> bool {
        let (s, r) = (sender as usize, receiver as usize);
        if s == r || s >= self.room.len() || r >= self.room.len() {
            return false;
        }
        if self.room[s] != self.room[r] {
            return false;
        }
        match &self.subscribe[r] {
            Subscribe::All => true,
            Subscribe::List(list) => list.binary_search(&sender).is_ok(),
        }
    }

    fn rules_between(&self, sender: u32, receiver: u32, kind: Kind) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |rule| {
            let sends = matches!(rule.direction, Direction::Send | Direction::Both)
                && rule.targets.contains(&sender);
            let receives = matches!(rule.direction, Direction::Receive | Direction::Both)
                && rule.targets.contains(&receiver);
            rule.media.covers(kind) && (sends || receives)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start_ns: u64, end_ns: u64) -> Window {
        Window { start_ns, end_ns }
    }

    /// Room 0: participants 0, 1, 2 (2 subscribes to 0 only); room 1: participant 3.
    /// Streams: 0 = p0 audio, 1 = p0 video, 2 = p1 audio, 3 = p3 audio.
    fn world() -> World {
        let mut presence = vec![Switch::default(); 4];
        for p in &mut presence {
            p.set(w(0, 10), true);
        }
        World {
            grace_ns: 5,
            room: vec![0, 0, 0, 1],
            subscribe: vec![
                Subscribe::All,
                Subscribe::All,
                Subscribe::List(vec![0]),
                Subscribe::All,
            ],
            presence,
            streams: vec![
                (0, Kind::Audio),
                (0, Kind::Video),
                (1, Kind::Audio),
                (3, Kind::Audio),
            ],
            rules: Vec::new(),
            unread: Vec::new(),
            relay: Vec::new(),
        }
    }

    #[test]
    fn static_routing() {
        let m = world();
        assert_eq!(m.deliver(0, 1, 100), Tri::Yes);
        assert_eq!(m.deliver(0, 2, 100), Tri::Yes);
        assert_eq!(m.deliver(2, 2, 100), Tri::No, "not subscribed");
        assert_eq!(m.deliver(0, 0, 100), Tri::No, "to itself");
        assert_eq!(m.deliver(3, 0, 100), Tri::No, "other room");
        assert_eq!(m.deliver(9, 0, 100), Tri::No, "unknown stream");
        assert_eq!(m.deliver(0, 1, 7), Tri::Unknown, "join in flight");
    }

    #[test]
    fn rule_timing() {
        let mut m = world();
        let mut active = Switch::default();
        active.set(w(100, 110), true);
        active.set(w(200, 220), false);
        m.rules.push(Rule {
            targets: vec![0],
            direction: Direction::Send,
            media: Media::Audio,
            active,
        });
        assert_eq!(m.deliver(0, 1, 94), Tri::Yes);
        assert_eq!(
            m.deliver(0, 1, 95),
            Tri::Unknown,
            "within grace before the call"
        );
        assert_eq!(m.deliver(0, 1, 109), Tri::Unknown);
        assert_eq!(
            m.deliver(0, 1, 110),
            Tri::No,
            "sent after the POST returned"
        );
        assert_eq!(m.deliver(1, 1, 150), Tri::Yes, "video is not covered");
        assert_eq!(m.deliver(2, 0, 150), Tri::Yes, "p0 still receives");
        assert_eq!(m.deliver(0, 1, 219), Tri::Unknown);
        assert_eq!(
            m.deliver(0, 1, 220),
            Tri::Yes,
            "sent after the DELETE returned"
        );
        assert_eq!(
            m.segments(0, 1),
            vec![
                (0, 10, Tri::Unknown),
                (10, 95, Tri::Yes),
                (95, 110, Tri::Unknown),
                (110, 195, Tri::No),
                (195, 220, Tri::Unknown),
                (220, u64::MAX, Tri::Yes)
            ]
        );
    }

    #[test]
    fn receive_rule_and_leave() {
        let mut m = world();
        let mut active = Switch::default();
        active.set(w(100, 110), true);
        m.rules.push(Rule {
            targets: vec![1],
            direction: Direction::Receive,
            media: Media::All,
            active,
        });
        assert_eq!(m.deliver(0, 1, 120), Tri::No);
        assert_eq!(m.deliver(2, 0, 120), Tri::Yes, "p1 still sends");
        m.presence[2].set(w(300, 310), false);
        assert_eq!(m.deliver(0, 2, 299), Tri::Unknown);
        assert_eq!(m.deliver(0, 2, 310), Tri::No);
        assert_eq!(m.segments(3, 0), vec![(0, u64::MAX, Tri::No)]);
    }
}
