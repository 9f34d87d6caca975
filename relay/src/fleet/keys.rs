//! The fleet's key layout in etcd. Pure: names in, key bytes out.
//!
//! Every key lies under one prefix (default `/relay/v1/`, so two fleets, or a later layout,
//! can share a cluster). No participant address, and no address of anyone but the relays
//! themselves, ever goes into etcd: etcd writes every value to disk on every member.
//!
//! | key | value | lease | written by |
//! |---|---|---|---|
//! | `nodes/{node}` | [`super::NodeInfo`] as JSON: node, region, trunk and control address, load, node number | the node's | the node, at (re)join and on load changes |
//! | `numbers/node/{node}` | the node's number (decimal), for trunk headers; kept across restarts | none | the node, once |
//! | `counters/node` | the last node number handed out (decimal) | none | whoever allocates a number |
//! | `acks/{node}` | the highest revision the node has applied (decimal) | the node's | the node, after applying |
//! | `audit/head` | `{"seq": N, "hash": "..."}`: the fleet chain's last entry | none | every audit append |
//! | `audit/entries/{seq}` | an [`crate::store::AuditEntry`] as JSON; seq zero-padded to 20 digits so keys sort by seq | none | every audit append |
//! | `rules/{id}` | the caller's rule record | none | the rule calls, in the audit append's transaction |
//! | `rooms/{room}` | the room's settings (`plain_legs`), when and by which relay it was created | none: a room outlives the relay it was created on | `PUT /v1/rooms/{room}` (created if absent), `DELETE` removes it |
//! | `participants/{room}/{participant}` | where a participant lives: node, region, tracks (kinds and SSRCs); never an address | the node's | the node it was added on |
//! | `reports/{node}` | the node's rule counters for the fleet transparency report (JSON) | the node's | the node, every 10 s and after installing a rule |
//!
//! A node's death deletes its leased keys (`nodes/`, `acks/`, `participants/`, `reports/`) when its lease expires; rules,
//! the audit chain and node numbers stay.

#![deny(unsafe_code)]

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "/relay/v1/";

/// Key builder for one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (which should end with `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself: a watch on it sees every fleet key.
    pub fn all(&self) -> String {
        self.prefix.clone()
    }

    /// Prefix of the node registrations.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// One node's registration.
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    /// One node's number.
    pub fn node_number(&self, node: &str) -> String {
        format!("{}numbers/node/{node}", self.prefix)
    }

    /// The node number counter.
    pub fn node_counter(&self) -> String {
        format!("{}counters/node", self.prefix)
    }

    /// Prefix of the acknowledgements.
    pub fn acks(&self) -> String {
        format!("{}acks/", self.prefix)
    }

    /// One node's acknowledgement.
    pub fn ack(&self, node: &str) -> String {
        format!("{}acks/{node}", self.prefix)
    }

    /// The audit chain's head.
    pub fn audit_head(&self) -> String {
        format!("{}audit/head", self.prefix)
    }

    /// Prefix of the audit entries.
    pub fn audit_entries(&self) -> String {
        format!("{}audit/entries/", self.prefix)
    }

    /// One audit entry.
    pub fn audit_entry(&self, seq: u64) -> String {
        format!("{}audit/entries/{seq:020}", self.prefix)
    }

    /// Prefix of the rules.
    pub fn rules(&self) -> String {
        format!("{}rules/", self.prefix)
    }

    /// One rule.
    pub fn rule(&self, id: u64) -> String {
        format!("{}rules/{id:020}", self.prefix)
    }

    /// Prefix of the rooms.
    pub fn rooms(&self) -> String {
        format!("{}rooms/", self.prefix)
    }

    /// One room.
    pub fn room(&self, room: &str) -> String {
        format!("{}rooms/{room}", self.prefix)
    }

    /// The room a key under `rooms/` names.
    pub fn room_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let room = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("rooms/")?;
        (!room.is_empty() && !room.contains('/')).then_some(room)
    }

    /// Prefix of the participants.
    pub fn participants(&self) -> String {
        format!("{}participants/", self.prefix)
    }

    /// One participant.
    pub fn participant(&self, room: &str, participant: &str) -> String {
        format!("{}participants/{room}/{participant}", self.prefix)
    }

    /// The room and participant a key under `participants/` names.
    pub fn participant_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("participants/")?;
        let (room, participant) = rest.split_once('/')?;
        (!room.is_empty() && !participant.is_empty() && !participant.contains('/'))
            .then_some((room, participant))
    }

    /// Prefix of the nodes' transparency reports.
    pub fn reports(&self) -> String {
        format!("{}reports/", self.prefix)
    }

    /// One node's transparency report.
    pub fn report(&self, node: &str) -> String {
        format!("{}reports/{node}", self.prefix)
    }

    /// The node name a key under `nodes/` or `acks/` names, if it is one.
    pub fn node_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        rest.strip_prefix("nodes/")
            .or_else(|| rest.strip_prefix("acks/"))
            .filter(|n| valid_node_name(n))
    }
}

/// A node name: 1 to 64 bytes of `[A-Za-z0-9._-]` (it becomes part of keys and metrics).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new(DEFAULT_PREFIX);
        assert_eq!(k.node("a"), "/relay/v1/nodes/a");
        assert_eq!(k.ack("a"), "/relay/v1/acks/a");
        assert_eq!(k.node_number("a"), "/relay/v1/numbers/node/a");
        assert_eq!(k.node_counter(), "/relay/v1/counters/node");
        assert_eq!(k.audit_head(), "/relay/v1/audit/head");
        assert_eq!(
            k.audit_entry(7),
            "/relay/v1/audit/entries/00000000000000000007"
        );
        assert_eq!(k.rule(12), "/relay/v1/rules/00000000000000000012");
        assert_eq!(k.report("a"), "/relay/v1/reports/a");
        assert_eq!(k.participant("r", "p"), "/relay/v1/participants/r/p");
        assert_eq!(k.participant_of(&k.participant("r", "p")), Some(("r", "p")));
        assert_eq!(k.participant_of("/relay/v1/participants/r"), None);
        assert_eq!(k.participant_of("/relay/v1/participants/r/p/x"), None);
        assert!(k.report("a").starts_with(&k.reports()));
        assert_eq!(k.room("r"), "/relay/v1/rooms/r");
        assert_eq!(k.room_of(&k.room("r")), Some("r"));
        assert_eq!(k.room_of("/relay/v1/rooms/"), None);
        assert_eq!(k.room_of("/relay/v1/rooms/r/x"), None);
        assert_eq!(k.room_of(&k.participant("r", "p")), None);
        assert!(k.room("r").starts_with(&k.rooms()));
        assert!(k.audit_entry(9) < k.audit_entry(10), "entries sort by seq");
        assert!(k.node("a").starts_with(&k.nodes()));
        assert!(k.audit_entry(1).starts_with(&k.audit_entries()));
    }

    #[test]
    fn node_of() {
        let k = Keys::new("/t/");
        assert_eq!(k.node_of("/t/nodes/b-1"), Some("b-1"));
        assert_eq!(k.node_of("/t/acks/b-1"), Some("b-1"));
        assert_eq!(k.node_of("/t/rules/1"), None);
        assert_eq!(k.node_of("/u/nodes/b"), None);
        assert_eq!(k.node_of("/t/nodes/"), None);
        assert_eq!(k.node_of("/t/nodes/a/b"), None);
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("relay-1.eu_west"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a/b"));
        assert!(!valid_node_name("ä"));
        assert!(!valid_node_name(&"x".repeat(65)));
    }
}
