//! A room compiled for forwarding: fan-out lists with subscriptions and rules already applied.
//!
//! The control thread compiles a room whenever its membership, a subscription, an address or a rule
//! that touches one of its participants changes, and hands the same immutable `Arc<Room>` to every
//! worker. Compiling costs O(participants × tracks × participants) of that room alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::SockAddr;

use super::counter::{ParticipantCounters, RuleCounters};
use super::ice::Credentials;
use crate::packet::rtp::Ssrc;

/// The media kind of a track, as rules see it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio track.
    Audio,
    /// Video track (screen share included).
    Video,
}

impl MediaKind {
    /// Index into per-kind arrays such as [`Blocks::send`].
    pub fn index(self) -> usize {
        match self {
            Self::Audio => 0,
            Self::Video => 1,
        }
    }
}

/// Which rule, if any, blocks a participant's sending or receiving, per media kind.
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    /// Indexed by [`MediaKind::index`]: the rule that stops this participant's media of that kind.
    pub send: [Option<Arc<RuleCounters>>; 2],
    /// Indexed by [`MediaKind::index`]: the rule that stops media of that kind reaching them.
    pub receive: [Option<Arc<RuleCounters>>; 2],
}

impl Blocks {
    /// The blocks a participant's rule [`Effect`](crate::rules::Effect) gives, with `counter`
    /// finding each rule's live counters: the one mapping from rules to fan-out input.
    pub fn from_effect(
        effect: &crate::rules::Effect,
        counter: impl Fn(crate::rules::RuleId) -> Option<Arc<RuleCounters>>,
    ) -> Self {
        use crate::rules::Kind;
        let mut blocks = Self::default();
        for (kind, media) in [
            (Kind::Audio, MediaKind::Audio),
            (Kind::Video, MediaKind::Video),
        ] {
            blocks.send[media.index()] = effect.send(kind).and_then(&counter);
            blocks.receive[media.index()] = effect.receive(kind).and_then(&counter);
        }
        blocks
    }
}

/// What one participant receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Everybody else's media.
    All,
    /// Only the media of these members (indices into the room's member list).
    Only(Vec<usize>),
}

/// One participant, as the control thread describes it to the compiler.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// The participant id, for diagnostics.
    pub name: Arc<str>,
    /// Where its media comes from and goes to; `None` until it is set or latched.
    pub addr: Option<SocketAddr>,
    /// Declared tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// What it receives.
    pub subscription: Subscription,
    /// Rules in force on it.
    pub blocks: Blocks,
    /// Its counters, kept across recompilations.
    pub counters: Arc<ParticipantCounters>,
    /// Relay-side ICE credentials, for STUN latching.
    pub ice: Option<Credentials>,
}

/// A track compiled for forwarding.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) ssrc: Ssrc,
    pub(crate) kind: MediaKind,
    /// Receivers (member indices) that get this track's packets.
    pub(crate) fanout: Box<[u16]>,
    /// Set when a rule stops this track at its sender.
    pub(crate) send_block: Option<Arc<RuleCounters>>,
    /// Receivers a rule keeps from this track, grouped by rule: (rule, number of receivers).
    pub(crate) receive_blocks: Box<[(Arc<RuleCounters>, u64)]>,
}

/// A participant compiled for forwarding.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) name: Arc<str>,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) sockaddr: Option<SockAddr>,
    pub(crate) tracks: Box<[Track]>,
    pub(crate) counters: Arc<ParticipantCounters>,
    pub(crate) blocks: Blocks,
    /// Bitset over member indices: who receives this member's media (subscription only).
    pub(crate) subscribers: Box<[u64]>,
    /// Where this member's encrypted SRTCP goes: every member it has an allowed media flow with,
    /// in either direction.
    pub(crate) srtcp_fanout: Box<[u16]>,
    pub(crate) ice: Option<Credentials>,
}

/// A compiled room.
#[derive(Debug)]
pub struct Room {
    pub(crate) members: Box<[Member]>,
    /// Media SSRC to (member, track) index, for routing receiver feedback.
    pub(crate) ssrcs: HashMap<Ssrc, (u16, u16)>,
}

/// Why a room cannot be compiled. The control thread checks these before it compiles, so seeing
/// one means the caller skipped a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// More members than a fan-out index can address.
    TooManyMembers,
    /// Two members declare the same SSRC.
    DuplicateSsrc(Ssrc),
}

impl Room {
    /// Compiles a room from its members.
    pub fn compile(specs: &[MemberSpec]) -> Result<Self, CompileError> {
        if specs.len() > usize::from(u16::MAX) {
            return Err(CompileError::TooManyMembers);
        }
        let words = specs.len().div_ceil(64);
        let subscribes = |receiver: usize, sender: usize| -> bool {
            receiver != sender
                && match &specs[receiver].subscription {
                    Subscription::All => true,
                    Subscription::Only(list) => list.contains(&sender),
                }
        };

        let mut ssrcs = HashMap::new();
        let mut members = Vec::with_capacity(specs.len());
        // flows[a][b]: some media of a may reach b (after rules), for SRTCP routing.
        let mut flows = vec![vec![0u64; words]; specs.len()];
        for (s, spec) in specs.iter().enumerate() {
            let mut subscribers = vec![0u64; words].into_boxed_slice();
            for r in 0..specs.len() {
                if subscribes(r, s) {
                    subscribers[r / 64] |= 1 << (r % 64);
                }
            }
            let mut tracks = Vec::with_capacity(spec.tracks.len());
            for (t, &(ssrc, kind)) in spec.tracks.iter().enumerate() {
                if ssrcs.insert(ssrc, (s as u16, t as u16)).is_some() {
                    return Err(CompileError::DuplicateSsrc(ssrc));
                }
                let send_block = spec.blocks.send[kind.index()].clone();
                let mut fanout = Vec::new();
                let mut receive_blocks: Vec<(Arc<RuleCounters>, u64)> = Vec::new();
                for (r, receiver) in specs.iter().enumerate() {
                    if receiver.addr.is_none() || !subscribes(r, s) {
                        continue;
                    }
                    if send_block.is_some() {
                        continue;
                    }
                    match &receiver.blocks.receive[kind.index()] {
                        Some(rule) => match receive_blocks
                            .iter_mut()
                            .find(|(x, _)| Arc::ptr_eq(x, rule))
                        {
                            Some((_, n)) => *n += 1,
                            None => receive_blocks.push((rule.clone(), 1)),
                        },
                        None => {
                            fanout.push(r as u16);
                            flows[s][r / 64] |= 1 << (r % 64);
                            flows[r][s / 64] |= 1 << (s % 64);
                        }
                    }
                }
                tracks.push(Track {
                    ssrc,
                    kind,
                    fanout: fanout.into(),
                    send_block,
                    receive_blocks: receive_blocks.into(),
                });
            }
            members.push(Member {
                name: spec.name.clone(),
                addr: spec.addr,
                sockaddr: spec.addr.map(SockAddr::from),
                tracks: tracks.into(),
                counters: spec.counters.clone(),
                blocks: spec.blocks.clone(),
                subscribers,
                srtcp_fanout: Box::new([]),
                ice: spec.ice.clone(),
            });
        }
        for (m, member) in members.iter_mut().enumerate() {
            member.srtcp_fanout = (0..specs.len())
                .filter(|&r| flows[m][r / 64] & (1 << (r % 64)) != 0 && specs[r].addr.is_some())
                .map(|r| r as u16)
                .collect();
        }
        Ok(Self {
            members: members.into(),
            ssrcs,
        })
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The ids of the members that receive the track `ssrc`, for tests and diagnostics.
    pub fn receivers(&self, ssrc: Ssrc) -> Vec<Arc<str>> {
        let Some(&(m, t)) = self.ssrcs.get(&ssrc) else {
            return Vec::new();
        };
        self.members[usize::from(m)].tracks[usize::from(t)]
            .fanout
            .iter()
            .map(|&r| self.members[usize::from(r)].name.clone())
            .collect()
    }
}

impl Member {
    pub(crate) fn track(&self, ssrc: Ssrc) -> Option<&Track> {
        self.tracks.iter().find(|t| t.ssrc == ssrc)
    }

    pub(crate) fn is_subscriber(&self, member: usize) -> bool {
        self.subscribers
            .get(member / 64)
            .is_some_and(|w| w & (1 << (member % 64)) != 0)
    }
}
