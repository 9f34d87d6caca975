//! Rules in fleet mode: the core checks a rule change, etcd orders it, and every relay
//! (this one included) applies it from its watch with [`Command::FleetRule`].
//!
//! The split is what makes a rule's id and order fleet-wide: the core that receives
//! `POST /v1/rules` only validates ([`Core::prepare_rule`]); the id is the fleet audit entry's
//! seq, given by the etcd transaction; the record comes back through every relay's watch in
//! revision order and is installed here like any other rule change (journal, store ops,
//! compiled rooms), so a relay's rooms and database see one path for rules, local or not.
//!
//! [`Command::FleetRule`]: super::Command::FleetRule

use std::sync::Arc;

use serde_json::json;

use super::{Core, Now, Outcome, Undo};
use crate::control::body::{SubscribeBody, TrackBody};
use crate::control::error::ApiError;
use crate::control::event::Event;
use crate::rules::{self, RuleId, RuleSpec};
use crate::store::{RuleState, StoredRule};

/// A participant that lives on another relay of the fleet, as that relay registered it. Here
/// it is a member of its room with no address: media for it goes once to its relay's trunk.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteParticipant {
    /// The relay it lives on.
    pub node: String,
    /// That relay's node number.
    pub peer: u16,
    /// Its participant number on that relay (the sender field of that relay's trunk headers).
    pub number: u32,
    /// Its region, for region rules.
    pub region: Option<[u8; 2]>,
    /// Its tracks.
    pub tracks: Vec<TrackBody>,
    /// What it receives.
    pub subscribe: SubscribeBody,
    /// The region of the relay it lives on (`--region`), when known: which fleet rules limited
    /// with `relays_in` that relay enforces.
    pub relay_region: Option<String>,
}

/// A fleet rule limited with `relays_in` to regions other than this relay's: not installed
/// here (not listed, audited or counted), only known, so that media is not sent over a trunk
/// to a relay whose every receiver it blocks there.
#[derive(Clone, Debug)]
pub(super) struct Foreign {
    pub(super) rule: rules::Rule,
    /// The regions of the relays that enforce it.
    pub(super) relays_in: Vec<String>,
    /// Counters for the blocks it gives remote members here (never reported: the relays that
    /// enforce it count its drops).
    pub(super) counters: Arc<crate::route::RuleCounters>,
}

impl Core {
    /// A participant of another relay joined, changed or left: it is journaled like any change
    /// (rolled back exactly), compiled into its room if the room is open here, and matched by
    /// rules like a local participant (a region rule finds it by its region). It adds no event,
    /// no database row, and counts toward no limit: its own relay does all that.
    pub(super) fn fleet_participant(
        &mut self,
        room: String,
        id: String,
        remote: Option<RemoteParticipant>,
    ) -> Outcome {
        let key = (room, id);
        let old = self.remote.get(&key).cloned();
        if old == remote {
            return Outcome::default();
        }
        let slot = self.rooms.get(&key.0).and_then(|r| r.remote_slot(&key.1));
        let (room, id) = key;
        self.put_remote(&room, &id, remote, None);
        self.journal.push(Undo::Remote(room, id, old, slot));
        Outcome::default()
    }

    /// See [`Command::FleetReplaced`]: the participant leaves here as on `DELETE`, with
    /// reason `replaced` and the relay that holds it now; no reply.
    pub(super) fn fleet_replaced(
        &mut self,
        room: &str,
        id: &str,
        node: &str,
    ) -> Result<Outcome, ApiError> {
        let mut out = self.delete_participant(room, id)?;
        out.reply = None;
        for e in &mut out.events {
            if e.kind == "participant_left" {
                e.data["reason"] = "replaced".into();
                e.data["node"] = node.into();
            }
        }
        Ok(out)
    }

    /// A fleet rule this relay does not enforce (its `relays_in` names other regions) came,
    /// changed or ended: active, it keeps the trunk copies of its media from relays where it
    /// blocks every receiver; otherwise it is forgotten. Journaled; no event, row or counter.
    pub(super) fn fleet_foreign_rule(
        &mut self,
        record: StoredRule,
        relays_in: Vec<String>,
    ) -> Result<Outcome, ApiError> {
        let id = record.id;
        let now = match record.state {
            RuleState::Active => Some(Foreign {
                rule: rules::compile(&record.spec).map_err(|e| ApiError::from_rule(&e))?,
                relays_in,
                counters: Arc::new(crate::route::RuleCounters::new(self.workers)),
            }),
            RuleState::Lifted | RuleState::Expired => None,
        };
        let unchanged = match (self.foreign.get(&id), &now) {
            (Some(a), Some(b)) => a.rule == b.rule && a.relays_in == b.relays_in,
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            self.put_foreign(id, now);
        }
        Ok(Outcome::default())
    }

    /// Puts (or removes) a foreign rule, journaled.
    fn put_foreign(&mut self, id: RuleId, rule: Option<Foreign>) {
        let old = match rule {
            Some(r) => self.foreign.insert(id, r),
            None => self.foreign.remove(&id),
        };
        self.journal.push(Undo::Foreign(id, old));
    }

    /// Forgets the foreign rules that expired by this relay's clock (the relays that enforce
    /// them expire them on theirs).
    pub(super) fn expire_foreign(&mut self, now_unix: u64) {
        let due: Vec<RuleId> = self
            .foreign
            .iter()
            .filter(|(_, f)| f.rule.expires_at_unix() <= now_unix)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.put_foreign(id, None);
        }
    }

    /// Installs or removes a remote participant, in the fleet-wide map, the region index and
    /// its room here (if open; `slot` puts it back where it was, for a rollback).
    pub(super) fn put_remote(
        &mut self,
        room: &str,
        id: &str,
        remote: Option<RemoteParticipant>,
        slot: Option<u16>,
    ) {
        let key = (room.to_owned(), id.to_owned());
        let old = match &remote {
            Some(r) => self.remote.insert(key.clone(), r.clone()),
            None => self.remote.remove(&key),
        };
        let (was, now) = (
            old.as_ref().and_then(|o| o.region),
            remote.as_ref().and_then(|r| r.region),
        );
        if was != now {
            if let Some(r) = was
                && let Some(set) = self.by_region.get_mut(&r)
            {
                set.remove(&key);
                if set.is_empty() {
                    self.by_region.remove(&r);
                }
            }
            if let Some(r) = now {
                self.by_region.entry(r).or_default().insert(key.clone());
            }
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.put_remote(id, remote, slot, self.workers);
        }
    }

    /// The participants of other relays in room `room`, for a room that opens here.
    pub(super) fn remote_of(&self, room: &str) -> Vec<(String, RemoteParticipant)> {
        self.remote
            .range((room.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == room)
            .map(|((_, id), p)| (id.clone(), p.clone()))
            .collect()
    }

    /// `POST /v1/rules` in fleet mode: parses and validates the body and takes a token from the
    /// rule-change rate limit. Changes nothing else: the rule is installed when it comes back
    /// from the fleet (`Core::fleet_rule`).
    pub fn prepare_rule(&mut self, now: Now, body: &[u8]) -> Result<RuleSpec, ApiError> {
        let spec = rules::parse(body).map_err(|e| ApiError::from_rule(&e))?;
        rules::validate(&spec, now.unix()).map_err(|e| ApiError::from_rule(&e))?;
        self.rules.take_token_now(now)?;
        Ok(spec)
    }

    /// Installs a rule record as the fleet holds it. States only move forward: a record that
    /// would take an active rule back, or one equal to what the core holds, changes nothing.
    /// A rule that becomes active is enforced once the outcome is carried out.
    pub(super) fn fleet_rule(&mut self, record: StoredRule) -> Result<Outcome, ApiError> {
        let id = record.id;
        let old = self.rules.record(id).map(|r| r.state);
        match (old, record.state) {
            (Some(a), b) if a == b => return Ok(Outcome::default()),
            (Some(RuleState::Lifted | RuleState::Expired), _) => return Ok(Outcome::default()),
            _ => {}
        }
        if record.state == RuleState::Active {
            // A rule in force must be enforced: a record that does not compile is refused
            // (and the relay does not acknowledge it).
            rules::compile(&record.spec).map_err(|e| ApiError::from_rule(&e))?;
        }
        let event = match (old, record.state) {
            (None, RuleState::Active) => Some(Event::new(
                "rule_added",
                json!({
                    "rule": id,
                    "match": record.spec.r#match,
                    "direction": record.spec.direction,
                    "media": record.spec.media,
                    "expires_at": record.spec.expires_at,
                    "jurisdiction": record.spec.basis.as_ref().map(|b| b.jurisdiction.clone()),
                }),
            )),
            (Some(RuleState::Active), RuleState::Lifted) => Some(Event::new(
                "rule_lifted",
                json!({"rule": id, "reason": record.lift_reason}),
            )),
            (Some(RuleState::Active), RuleState::Expired) => {
                Some(Event::new("rule_expired", json!({"rule": id})))
            }
            // A rule that ended before this relay first heard of it: kept for the record only.
            _ => None,
        };
        self.set_rule(id, record);
        let mut out = Outcome::default();
        out.events.extend(event);
        Ok(out)
    }

    /// Every participant of this relay as the fleet registers it: room, id, and its region,
    /// tracks and subscription (from its view: never an address).
    pub fn participant_summaries(&self) -> Vec<(String, String, serde_json::Value)> {
        let mut out = Vec::new();
        for (room, r) in &self.rooms {
            for (id, p) in &r.participants {
                let v = self.participant_view(room, id, p);
                out.push((
                    room.clone(),
                    id.clone(),
                    json!({"region": v.region, "tracks": v.tracks, "subscribe": v.subscribe,
                           "number": p.number}),
                ));
            }
        }
        out
    }

    /// One participant of this relay as the fleet registers it (see
    /// [`Core::participant_summaries`]).
    pub fn participant_summary(&self, room: &str, id: &str) -> Option<serde_json::Value> {
        let p = self.rooms.get(room)?.participants.get(id)?;
        let v = self.participant_view(room, id, p);
        Some(
            json!({"region": v.region, "tracks": v.tracks, "subscribe": v.subscribe,
                    "number": p.number}),
        )
    }

    /// Whether room `room` is open on this relay.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The rooms open on this relay.
    pub fn room_ids(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// A rule's record as the core holds it.
    pub fn rule_record(&self, id: rules::RuleId) -> Option<&StoredRule> {
        self.rules.record(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::super::{Command, Restore};
    use super::*;
    use crate::config::Limits;
    use crate::rules::RuleId;
    use crate::store::StoreOp;

    fn now() -> Now {
        Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            mono: Instant::now(),
        }
    }

    fn core() -> Core {
        let limits = Limits {
            max_rooms: 10,
            max_participants: 5,
            max_tracks: 4,
            rule_changes_per_sec: 1,
            latch_timeout: Duration::from_secs(2),
            event_history: 100,
        };
        let addr = "127.0.0.1:40000".parse().unwrap();
        Core::new(limits, 1, addr, Restore::default(), now()).unwrap()
    }

    const BODY: &[u8] = br#"{"match": {"regions": ["CN"]}, "direction": "send",
        "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"},
        "expires_at": "2030-01-01T00:00:00Z"}"#;

    fn record(state: RuleState) -> StoredRule {
        StoredRule {
            id: RuleId(42),
            spec: rules::parse(BODY).unwrap(),
            state,
            created_at: "2027-01-15T08:00:00.000Z".into(),
            lifted_at: None,
            lift_reason: (state == RuleState::Lifted).then(|| "withdrawn".into()),
            expired_at: None,
        }
    }

    fn apply(core: &mut Core, r: StoredRule) -> (Vec<&'static str>, Vec<StoreOp>) {
        let geo = |_: std::net::IpAddr| None;
        let out = core
            .handle(now(), &geo, Command::FleetRule(Box::new(r)))
            .unwrap();
        let ops = core.store_ops();
        core.commit();
        (out.events.into_iter().map(|e| e.kind).collect(), ops)
    }

    #[test]
    fn prepare_checks_and_rate_limits_but_installs_nothing() {
        let mut core = core();
        assert!(core.prepare_rule(now(), b"{}").is_err(), "no basis");
        assert!(core.prepare_rule(now(), BODY).is_ok());
        assert!(core.rule_record(RuleId(1)).is_none());
        assert!(core.store_ops().is_empty());
        // The bucket holds two changes at one a second.
        assert!(core.prepare_rule(now(), BODY).is_ok());
        assert!(core.prepare_rule(now(), BODY).is_err(), "rate-limited");
    }

    #[test]
    fn fleet_records_install_once_and_only_move_forward() {
        let mut core = core();
        let (events, ops) = apply(&mut core, record(RuleState::Active));
        assert_eq!(events, ["rule_added"]);
        assert!(matches!(
            ops.as_slice(),
            [StoreOp::AddRule { id: RuleId(42), .. }]
        ));
        assert_eq!(
            core.rule_record(RuleId(42)).unwrap().state,
            RuleState::Active
        );
        // The same record again (a resync): nothing.
        let (events, ops) = apply(&mut core, record(RuleState::Active));
        assert!(events.is_empty() && ops.is_empty());
        let (events, ops) = apply(&mut core, record(RuleState::Lifted));
        assert_eq!(events, ["rule_lifted"]);
        assert!(matches!(ops.as_slice(), [StoreOp::LiftRule { .. }]));
        // Never back to active.
        let (events, ops) = apply(&mut core, record(RuleState::Active));
        assert!(events.is_empty() && ops.is_empty());
        assert_eq!(
            core.rule_record(RuleId(42)).unwrap().state,
            RuleState::Lifted
        );
        // A rule that ended before this relay heard of it is kept for the record, silently.
        let mut old = record(RuleState::Lifted);
        old.id = RuleId(43);
        let (events, _) = apply(&mut core, old);
        assert!(events.is_empty());
        assert!(core.rule_record(RuleId(43)).is_some());
    }

    fn remote(node: &str, peer: u16, number: u32, region: &[u8; 2]) -> Box<RemoteParticipant> {
        Box::new(RemoteParticipant {
            node: node.into(),
            peer,
            number,
            region: Some(*region),
            tracks: vec![TrackBody {
                ssrc: 1000 + number,
                kind: crate::route::MediaKind::Audio,
            }],
            subscribe: SubscribeBody::ALL,
            relay_region: None,
        })
    }

    fn run(core: &mut Core, cmd: Command) -> Outcome {
        let geo = |_: std::net::IpAddr| None;
        core.handle(now(), &geo, cmd).unwrap()
    }

    fn members(out: &Outcome) -> Vec<usize> {
        out.updates
            .iter()
            .filter_map(|u| match u {
                crate::route::Update::Room { room, .. } => Some(room.len()),
                _ => None,
            })
            .collect()
    }

    /// The peers the room's snapshot in `out` sends audio to over trunks (subscribe-all
    /// members).
    fn audio_trunks(out: &Outcome) -> Vec<u16> {
        out.updates
            .iter()
            .filter_map(|u| match u {
                crate::route::Update::Room { room, .. } => {
                    Some(room.trunks[0].iter().map(|(p, _)| *p).collect::<Vec<_>>())
                }
                _ => None,
            })
            .next_back()
            .unwrap_or_default()
    }

    #[test]
    fn a_rule_of_other_regions_keeps_copies_from_relays_where_it_blocks_everyone() {
        let mut core = core();
        run(
            &mut core,
            Command::PutRoom {
                room: "m".into(),
                plain_legs: None,
            },
        );
        core.commit();
        // x on relay b (region CN), y on relay c (region US); both CN participants.
        let on = |node: &str, peer: u16, number: u32, relay: &str| {
            let mut r = remote(node, peer, number, b"CN");
            r.relay_region = Some(relay.into());
            Command::FleetParticipant {
                room: "m".into(),
                id: format!("p{number}"),
                remote: Some(r),
            }
        };
        run(&mut core, on("b", 2, 7, "CN"));
        core.commit();
        let out = run(&mut core, on("c", 3, 8, "US"));
        assert_eq!(audio_trunks(&out), [2, 3]);
        core.commit();
        // A receive rule on CN participants, enforced only by relays in CN: b's only member is
        // blocked there, so b gets no copy; c's CN member is not blocked on c (US), so c does.
        let mut cn = record(RuleState::Active);
        cn.spec = rules::parse(
            br#"{"match": {"regions": ["CN"]}, "direction": "receive",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"},
            "expires_at": "2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let foreign = |r: &StoredRule| Command::FleetForeignRule {
            record: Box::new(r.clone()),
            relays_in: vec!["CN".into()],
        };
        let out = run(&mut core, foreign(&cn));
        assert_eq!(audio_trunks(&out), [3]);
        // Not installed here: no rule, no event, no row, no match counted.
        assert!(out.events.is_empty());
        assert!(core.store_ops().is_empty());
        assert!(core.rule_record(RuleId(42)).is_none());
        // Rolled back, b is back in the group.
        let back = core.rollback();
        assert!(matches!(&back[..],
            [crate::route::Update::Room { room, .. }] if room.trunks[0].len() == 2));
        run(&mut core, foreign(&cn));
        core.commit();
        // The same record again changes nothing; lifted, b gets copies again.
        assert!(run(&mut core, foreign(&cn)).updates.is_empty());
        core.commit();
        let out = run(&mut core, foreign(&record(RuleState::Lifted)));
        assert_eq!(audio_trunks(&out), [2, 3]);
        core.commit();
        // Active again (a new rule), it ends at its expiry by this relay's clock.
        let mut soon = cn.clone();
        soon.id = RuleId(43);
        soon.spec.expires_at = Some("2028-01-01T00:00:00Z".into());
        run(&mut core, foreign(&soon));
        core.commit();
        let later = Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
            mono: Instant::now(),
        };
        let geo = |_: std::net::IpAddr| None;
        let out = core.handle(later, &geo, Command::Tick).unwrap();
        assert_eq!(audio_trunks(&out), [2, 3]);
        core.commit();
    }

    #[test]
    fn participants_of_other_relays_are_members_that_roll_back_exactly() {
        let mut core = core();
        let put = |id: &str, r: Option<Box<RemoteParticipant>>| Command::FleetParticipant {
            room: "m".into(),
            id: id.into(),
            remote: r,
        };
        // Known before the room opens here: nothing to publish, nothing stored.
        let out = run(&mut core, put("x", Some(remote("b", 2, 7, b"CN"))));
        assert!(out.updates.is_empty() && out.events.is_empty());
        assert!(core.store_ops().is_empty());
        core.commit();
        // The room opens with it.
        let out = run(
            &mut core,
            Command::PutRoom {
                room: "m".into(),
                plain_legs: None,
            },
        );
        assert_eq!(members(&out), [1]);
        core.commit();
        // Another joins; the same record again changes nothing.
        let out = run(&mut core, put("y", Some(remote("c", 3, 8, b"US"))));
        assert_eq!(members(&out), [2]);
        assert!(out.events.is_empty() && core.store_ops().is_empty());
        core.commit();
        let out = run(&mut core, put("y", Some(remote("c", 3, 8, b"US"))));
        assert!(out.updates.is_empty());
        core.commit();
        // Rolled back, y's leaving puts it back in its slot.
        let out = run(&mut core, put("y", None));
        assert_eq!(members(&out), [1]);
        let back = core.rollback();
        assert!(matches!(&back[..],
            [crate::route::Update::Room { room, slots, .. }] if room.len() == 2 && **slots == [1]));
        // They count toward no limit and are not this relay's: the room view lists none, the
        // fleet registration names none.
        let (_, view) = run(&mut core, Command::GetRoom { room: "m".into() })
            .reply
            .unwrap();
        assert_eq!(view["participants"], serde_json::json!([]));
        core.commit();
        assert!(core.participant_summaries().is_empty());
        assert_eq!(core.sizes().1, 0);
        // A region rule matches them like local participants (their region from the record).
        let mut us = record(RuleState::Active);
        us.id = RuleId(50);
        us.spec = rules::parse(
            br#"{"match": {"regions": ["US"]}, "direction": "receive",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "US"},
            "expires_at": "2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let out = run(&mut core, Command::FleetRule(Box::new(us)));
        assert!(matches!(&out.updates[..],
            [crate::route::Update::Room { slots, .. }] if **slots == [1]));
        core.commit();
    }
}
