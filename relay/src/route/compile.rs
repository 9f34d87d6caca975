//! From the control core's description of a room to the compiled [`Room`] the workers use:
//! member order, rule effects and subscriptions resolved once, here, for every caller (the
//! control core, the model test and the fuzz target).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use super::counter::{ParticipantCounters, RuleCounters};
use super::ice::Credentials;
use super::room::{Blocks, CompileError, MediaKind, MemberSpec, Room, Subscription};
use crate::packet::rtp::Ssrc;
use crate::rules::{RuleId, RuleSet, Subject};

/// One participant of a room, as the control core describes it.
#[derive(Clone, Debug)]
pub struct Participant<'a> {
    /// Its id in the room.
    pub id: &'a str,
    /// Its region, for region rules.
    pub region: Option<[u8; 2]>,
    /// Its media address, fixed or latched; `None` until it has one.
    pub addr: Option<SocketAddr>,
    /// Declared tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// The ids whose media it receives; `None` for everybody.
    pub subscribe: Option<&'a [String]>,
    /// Its counters, kept across compilations.
    pub counters: Arc<ParticipantCounters>,
    /// Relay-side ICE credentials.
    pub ice: Option<Credentials>,
}

/// A compiled room and, for each rule in force on it, the participants it matches.
#[derive(Debug)]
pub struct Compiled {
    /// The room for the workers.
    pub room: Room,
    /// Rule id to the ids of the participants of this room it matches.
    pub matched: HashMap<RuleId, BTreeSet<String>>,
}

/// Compiles one room with the rules in force. Members keep the order of `participants`.
///
/// `counters` gives each rule's live drop counters, which the fan-out adds to.
pub fn compile(
    room: &str,
    participants: &[Participant<'_>],
    rules: &RuleSet,
    counters: impl Fn(RuleId) -> Option<Arc<RuleCounters>>,
) -> Result<Compiled, CompileError> {
    let mut matched: HashMap<RuleId, BTreeSet<String>> = HashMap::new();
    let index: HashMap<&str, usize> = participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, i))
        .collect();
    let specs: Vec<MemberSpec> = participants
        .iter()
        .map(|p| {
            let subject = Subject {
                room,
                participant: p.id,
                region: p.region,
            };
            for (rule, _) in rules.matching(&subject) {
                matched.entry(rule).or_default().insert(p.id.to_owned());
            }
            MemberSpec {
                name: Arc::from(p.id),
                addr: p.addr,
                tracks: p.tracks.clone(),
                subscription: match p.subscribe {
                    None => Subscription::All,
                    Some(list) => Subscription::Only(
                        list.iter()
                            .filter_map(|s| index.get(s.as_str()).copied())
                            .collect(),
                    ),
                },
                blocks: Blocks::from_effect(&rules.effect(&subject), &counters),
                counters: p.counters.clone(),
                ice: p.ice.clone(),
            }
        })
        .collect();
    Ok(Compiled {
        room: Room::compile(&specs)?,
        matched,
    })
}
