//! Fleet mode on the control thread: joining, applying the fleet's rules, and rule changes that
//! are in force on every relay when the call returns.
//!
//! The control thread never waits on etcd. Each step that talks to etcd is a `*_then` call of
//! [`Fleet`] whose closure posts the result back into the control thread's own request channel
//! as [`Request::FleetStep`], keyed by the id of the pending call; the control thread picks it up
//! like any other request and takes the next step.
//!
//! A rule change (`POST /v1/rules`, `DELETE /v1/rules/{id}`):
//!
//! 1. The core checks it ([`crate::control::core::Core::prepare_rule`]; a lift is checked against the fleet's record).
//! 2. [`Fleet::append_then`]: the audit entry and `rules/{id}` in one etcd transaction (CAS on
//!    the audit head); the rule's id is the entry's seq. Revision R.
//! 3. Every relay, this one too, gets `rules/{id}` from its watch in revision order, installs it
//!    through the core ([`Command::FleetRule`]: journal, database, workers) and acks R.
//! 4. [`Fleet::wait_acks_then`] R; each relay that neither acked nor went away in one TTL is
//!    fenced ([`Fleet::fence_node_then`]: lease revoked, one TTL waited).
//! 5. The reply: the rule, `in_force_on` (acked) and `fenced` (gone or fenced).
//!
//! A rule with `relays_in` is recorded by every relay but installed only by relays of those
//! regions; the others ack it as applied (there is nothing for them to enforce).
//!
//! Applying stops at the first rule that fails to install: acks only ever mean "everything up
//! to here", so the relay stops acking, the next rule call fences it, and it applies everything
//! afresh when it rejoins.

mod rooms;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Answer, Owner, Request, now};
use crate::config::{FleetSettings, valid_region};
use crate::control::body::{LiftBody, SubscribeBody, TrackBody};
use crate::control::core::{Command, RemoteParticipant};
use crate::control::error::{ApiError, Code};
use crate::control::event::Event;
use crate::fleet::keys::Keys;
use crate::fleet::{self, Acks, Append, Commit, Fleet, FleetError, Rules, Status};
use crate::route::{Local, Peer, Peers, TrunkCounters, Update};
use crate::rules::{RuleCounters, RuleId, RuleSpec};
use crate::store::{self, AuditEntry, RuleState, Store, StoredRule};
pub use rooms::{FleetRoom, RoomStep};

/// The control thread's side of the fleet: the link to etcd and the rule calls in progress.
pub struct FleetLink {
    fleet: Fleet,
    events: Receiver<fleet::Event>,
    requests: Sender<Request>,
    keys: Keys,
    node: String,
    region: String,
    /// Every fleet rule record seen, by id (also those for other regions).
    records: BTreeMap<u64, FleetRecord>,
    /// Each record's bytes as etcd holds them: a lift or an expiry replaces exactly those.
    record_bytes: BTreeMap<u64, Vec<u8>>,
    /// Rules whose `rule_expired` entry this relay is appending.
    expiring: BTreeSet<u64>,
    /// The fleet's audit chain, mirrored (`relay audit verify --data-dir DIR/fleet`).
    mirror: Store,
    pending: HashMap<u64, Pending>,
    next: u64,
    /// The rules at the join revision, applied when the control thread takes the link.
    initial: Option<Rules>,
    /// A rule failed to install: no ack until the relay rejoins.
    broken: bool,
    /// Reading the rules at the join revision failed: read them again at the next tick.
    reread: bool,
    /// When this relay last put its report (`reports/{node}`).
    last_report: Option<Instant>,
    /// `GET /v1/transparency` calls waiting for the fleet's reports, with this relay's report.
    transparency: HashMap<u64, (oneshot::Sender<Answer>, Value)>,
    /// The load last put in the registration (participants on this relay).
    load: Option<u32>,
    /// Participants that live on other relays, by (room, participant), from the watch.
    remote: BTreeMap<(String, String), FleetParticipant>,
    /// Participants whose key went with their relay's lease before this relay heard that the
    /// relay was lost, by relay: `node_lost` names them too.
    gone_with: BTreeMap<String, Vec<(String, String)>>,
    /// Trunk counters by peer node name, kept for the life of the process (the metrics are
    /// counters: a peer that leaves and comes back adds to its old ones).
    trunk_counters: BTreeMap<String, Arc<TrunkCounters>>,
    /// The fleet's rooms and their settings, from the watch of `rooms/`.
    rooms: BTreeMap<String, FleetRoom>,
    /// Room calls waiting for etcd.
    room_calls: HashMap<u64, rooms::RoomCall>,
}

/// What a relay puts under `participants/{room}/{participant}` (on its lease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetParticipant {
    /// The relay it lives on.
    pub node: String,
    /// That relay's node number (trunk headers' origin).
    #[serde(default)]
    pub node_no: u16,
    /// Its region, its tracks and its subscription, as its view shows them.
    #[serde(flatten)]
    pub summary: Value,
}

/// The part of a participant key's summary that the trunks need.
#[derive(Deserialize)]
struct RemoteSummary {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    tracks: Vec<TrackBody>,
    #[serde(default)]
    subscribe: Option<SubscribeBody>,
    #[serde(default)]
    number: u32,
}

/// The body of `POST /v1/placements`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    /// The room the participant joins.
    pub room: String,
    /// Where the participant is (its jurisdiction), e.g. `CN`; absent: anywhere.
    #[serde(default)]
    pub region: Option<String>,
}

/// Where to place a participant.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Placement {
    /// The relay's node name (`null` when this relay runs alone).
    pub node: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its control API address: add the participant there.
    pub control: String,
    /// Participants it serves (as it last registered).
    pub load: u32,
    /// Whether it is in the region asked for (false: no live relay is, so any was chosen).
    pub in_region: bool,
}

/// A rule call under way: its id, the status it answers with, the rule (0 until committed, for
/// an add) and its `relays_in`.
type Started = (u64, u16, u64, Vec<String>);

/// A step of a fleet call, posted back to the control thread.
pub enum Step {
    /// The audit append committed (or not).
    Committed(Result<Commit, FleetError>),
    /// The ack wait ended.
    Acks(Result<Acks, FleetError>),
    /// A relay that did not ack was fenced (or fencing failed).
    Fenced(String, Result<(), FleetError>),
    /// Every rule at a revision was read: apply them all, then ack that revision.
    Rules(Result<Rules, FleetError>),
    /// The fleet's audit chain was read: mirror what is new.
    Audit(Result<Vec<AuditEntry>, FleetError>),
    /// Every relay's report was read (`GET /v1/transparency`).
    Reports(Result<Vec<(String, Vec<u8>)>, FleetError>),
    /// Every participant key was read (at attach, or after a compacted watch).
    Participants(Result<Vec<(String, Vec<u8>)>, FleetError>),
    /// A rule's `rule_expired` append committed (or not).
    Expired(u64, Result<Commit, FleetError>),
    /// A room call's etcd step.
    Room(RoomStep),
    /// Every room key was read (at attach, or after a compacted watch).
    Rooms(Result<Vec<(String, Vec<u8>)>, FleetError>),
    /// A participant key that this relay and another both wrote, read after this relay's own
    /// writes: (key, value).
    Owner(Result<(String, Option<Vec<u8>>), FleetError>),
}

/// What a relay puts under `reports/{node}`: the counters of the rules it enforces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The relay.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Rules it installed (enforced, or enforced until lifted or expired).
    pub rules: Vec<(u64, RuleCounters)>,
}

/// A rule record as stored under `rules/{id}` in etcd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// The rule's id: the seq of the audit entry that added it.
    pub id: u64,
    /// The request body.
    pub spec: RuleSpec,
    /// `active`, `lifted` or `expired`.
    pub state: RuleState,
    /// When it was added.
    pub created_at: String,
    /// When it was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<String>,
    /// Why it was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_reason: Option<String>,
    /// When it expired (written by the first relay that saw it due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
    /// Regions of the relays that enforce it; empty: every relay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays_in: Vec<String>,
    /// The relay that took the call.
    pub by: String,
}

/// A rule call waiting for the fleet.
struct Pending {
    reply: oneshot::Sender<Answer>,
    /// 201 for an add, 200 for a lift.
    status: u16,
    rule: u64,
    relays_in: Vec<String>,
    acked: Vec<String>,
    fenced: Vec<String>,
    /// Relays being fenced.
    fencing: usize,
}

impl FleetRecord {
    fn stored(&self) -> StoredRule {
        StoredRule {
            id: RuleId(self.id),
            spec: self.spec.clone(),
            state: self.state,
            created_at: self.created_at.clone(),
            lifted_at: self.lifted_at.clone(),
            lift_reason: self.lift_reason.clone(),
            expired_at: self.expired_at.clone(),
        }
    }

    /// Whether a relay of `region` enforces it.
    fn applies_in(&self, region: &str) -> bool {
        self.relays_in.is_empty() || self.relays_in.iter().any(|r| r == region)
    }
}

/// Joins the fleet (blocking: at start-up, before the control thread takes the link) and reads
/// every rule at the join revision. The relay stays fenced until the control thread has applied
/// them and acked.
pub fn join(
    settings: &FleetSettings,
    status: std::sync::Arc<Status>,
    control: std::net::SocketAddr,
    data_dir: &Path,
    requests: Sender<Request>,
) -> anyhow::Result<FleetLink> {
    let config = fleet::Config::new(
        settings.endpoints.clone(),
        &settings.node,
        &settings.region,
        settings.trunk,
        control,
    );
    let (fleet, events) =
        Fleet::start_with(config, status).map_err(|e| anyhow::anyhow!("joining the fleet: {e}"))?;
    let initial = fleet
        .rules(Some(fleet.joined_at()))
        .map_err(|e| anyhow::anyhow!("reading the fleet's rules: {e}"))?;
    let mirror = Store::open(&data_dir.join("fleet")).map_err(|e| {
        anyhow::anyhow!(
            "opening the fleet audit mirror in {}: {e}",
            data_dir.display()
        )
    })?;
    Ok(FleetLink {
        keys: fleet.keys(),
        fleet,
        events,
        requests,
        node: settings.node.clone(),
        region: settings.region.clone(),
        records: BTreeMap::new(),
        record_bytes: BTreeMap::new(),
        expiring: BTreeSet::new(),
        mirror,
        pending: HashMap::new(),
        next: 1,
        initial: Some(initial),
        broken: false,
        reread: false,
        last_report: None,
        transparency: HashMap::new(),
        load: None,
        remote: BTreeMap::new(),
        gone_with: BTreeMap::new(),
        trunk_counters: BTreeMap::new(),
        rooms: BTreeMap::new(),
        room_calls: HashMap::new(),
    })
}

/// Whether a command is a rule change that fleet mode takes over.
pub(super) fn is_rule_change(cmd: &Command) -> bool {
    matches!(cmd, Command::AddRule { .. } | Command::LiftRule { .. })
}

impl FleetLink {
    /// The fleet's events, for the control thread's select.
    pub(super) fn events(&self) -> Receiver<fleet::Event> {
        self.events.clone()
    }

    /// Leaves the fleet (revokes the lease).
    pub(super) fn stop(self) {
        self.fleet.stop();
    }

    /// A closure that posts a step of call `id` back to the control thread.
    fn post<T>(&self, id: u64, wrap: fn(T) -> Step) -> impl FnOnce(T) + Send + 'static
    where
        T: Send + 'static,
    {
        let requests = self.requests.clone();
        move |r| {
            // The control thread may be gone at shutdown; nothing waits then.
            let _ = requests.send(Request::FleetStep(id, Box::new(wrap(r))));
        }
    }
}

impl Owner {
    /// Takes the link: applies the rules up to the join revision and acks it (the fence lifts).
    pub(super) fn fleet_attach(&mut self, mut link: Box<FleetLink>) {
        let initial = link.initial.take();
        self.shared
            .gauges
            .fleet_nodes
            .store(link.fleet.nodes().len() as u64, Ordering::Relaxed);
        self.fleet = Some(link);
        if let Some(rules) = initial {
            self.fleet_catch_up(rules);
        }
        self.fleet_publish_all();
        self.fleet_read_rooms();
        self.fleet_read_participants();
        self.fleet_publish_peers();
    }

    /// Gives the workers the fleet's other relays as the node list has them now, with this
    /// relay's node number and current epoch for the headers it writes.
    fn fleet_publish_peers(&mut self) {
        let workers = self.plane.workers();
        let Some(link) = &mut self.fleet else { return };
        let me = link.fleet.node();
        let local = Local {
            node: me.number(),
            epoch: me.epoch(),
        };
        let nodes = link.fleet.nodes();
        let mut peers = Vec::new();
        for n in nodes.iter().filter(|n| n.node != me.node) {
            let counters = link
                .trunk_counters
                .entry(n.node.clone())
                .or_insert_with(|| Arc::new(TrunkCounters::new(workers)))
                .clone();
            peers.push(Peer::new(&n.node, n.number(), n.epoch(), n.trunk, counters));
        }
        self.shared.set_trunks(
            link.trunk_counters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let update = Update::Peers(Arc::new(Peers::new(local, peers)));
        if let Err(e) = self.plane.publish(vec![update]) {
            tracing::error!(error = %e, "giving the workers the fleet's relays failed");
        }
    }

    /// Tells the core about a participant of another relay (`None`: it left).
    fn fleet_remote(&mut self, room: &str, id: &str, p: Option<&FleetParticipant>) {
        let remote = p.and_then(|p| {
            let summary: RemoteSummary = serde_json::from_value(p.summary.clone()).ok()?;
            let node = self
                .fleet
                .as_ref()
                .and_then(|l| l.fleet.nodes().into_iter().find(|n| n.node == p.node));
            let node_no = node.as_ref().map_or(p.node_no, |n| n.number);
            // Unknown until its relay's registration is seen: then no rule limited to other
            // regions keeps copies from it (they are sent), and it is told again at NodeJoined.
            let relay_region = node.map(|n| n.region);
            Some(Box::new(RemoteParticipant {
                node: p.node.clone(),
                peer: node_no,
                number: summary.number,
                region: summary.region.as_deref().and_then(|r| {
                    let b = r.as_bytes();
                    (b.len() == 2).then(|| [b[0], b[1]])
                }),
                tracks: summary.tracks,
                subscribe: summary.subscribe.unwrap_or(SubscribeBody::ALL),
                relay_region,
            }))
        });
        if let Err(e) = self.run_command(Command::FleetParticipant {
            room: room.to_owned(),
            id: id.to_owned(),
            remote,
        }) {
            tracing::warn!(error = %e, "installing a participant of another relay failed");
        }
    }

    /// Puts every participant of this relay under its (new) lease.
    fn fleet_publish_all(&self) {
        for (room, id, summary) in self.core.participant_summaries() {
            self.fleet_put_participant(&room, &id, summary);
        }
    }

    fn fleet_read_participants(&self) {
        let Some(link) = &self.fleet else { return };
        link.fleet.get_prefix_after_writes_then(
            link.keys.participants(),
            link.post(0, Step::Participants),
        );
    }

    fn fleet_put_participant(&self, room: &str, id: &str, summary: Value) {
        let Some(link) = &self.fleet else { return };
        let record = FleetParticipant {
            node: link.node.clone(),
            node_no: link.fleet.node().number,
            summary,
        };
        link.fleet
            .put_leased_then(link.keys.participant(room, id), to_bytes(&record), |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "registering a participant in the fleet failed");
                }
            });
    }

    fn fleet_delete_participant(&self, room: &str, id: &str) {
        let Some(link) = &self.fleet else { return };
        link.fleet
            .delete_then(link.keys.participant(room, id), |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "removing a participant from the fleet failed");
                }
            });
    }

    /// After an event is carried out: keeps this relay's participants in etcd.
    pub(super) fn fleet_publish(&self, event: &Event) {
        if self.fleet.is_none() {
            return;
        }
        let d = &event.data;
        // Events about participants of other relays are theirs to register (one that this relay
        // let go of, `replaced`, is registered by the relay that holds it now).
        if d["reason"] == "node_lost" || d["reason"] == "replaced" {
            return;
        }
        let (Some(room), participant) = (d["room"].as_str(), d["participant"].as_str()) else {
            return;
        };
        match (event.kind, participant) {
            ("participant_joined" | "participant_changed" | "subscription_changed", Some(id)) => {
                let summary = self
                    .core
                    .participant_summary(room, id)
                    .unwrap_or_else(|| json!({"region": d["region"], "tracks": d["tracks"]}));
                self.fleet_put_participant(room, id, summary);
            }
            ("participant_left", Some(id)) => self.fleet_delete_participant(room, id),
            ("room_closed", None) => {
                for id in d["participants"].as_array().into_iter().flatten() {
                    if let Some(id) = id.as_str() {
                        self.fleet_delete_participant(room, id);
                    }
                }
            }
            _ => {}
        }
    }

    /// A participant key changed.
    fn fleet_participant(&mut self, key: &str, value: Option<Vec<u8>>) {
        let Some(link) = &mut self.fleet else { return };
        let Some((room, id)) = link.keys.participant_of(key) else {
            return;
        };
        let k = (room.to_owned(), id.to_owned());
        match value {
            Some(v) => {
                let Ok(p) = serde_json::from_slice::<FleetParticipant>(&v) else {
                    return;
                };
                if p.node == link.node {
                    // Ours. A relay that registered the same id before us has let go of it
                    // (below), or will: it is no longer theirs here.
                    if link.remote.remove(&k).is_some() {
                        self.fleet_remote(&k.0, &k.1, None);
                    }
                    return;
                }
                if self.core.participant_summary(&k.0, &k.1).is_some() {
                    // Both relays accepted a PUT for this id before either saw the other's
                    // key. The key names one relay, the last writer: read it after our own
                    // writes (same ordered lane) and let go of ours if it names the other.
                    link.fleet
                        .get_then(link.keys.participant(&k.0, &k.1), link.post(0, Step::Owner));
                    return;
                }
                link.remote.insert(k.clone(), p.clone());
                self.fleet_remote(&k.0, &k.1, Some(&p));
            }
            None => {
                let Some(p) = link.remote.remove(&k) else {
                    return;
                };
                self.fleet_remote(&k.0, &k.1, None);
                let Some(link) = &mut self.fleet else { return };
                // Gone with its relay's lease (the relay is no longer live): `node_lost` names
                // it, and it has left.
                if !link.fleet.nodes().iter().any(|n| n.node == p.node) {
                    link.gone_with
                        .entry(p.node.clone())
                        .or_default()
                        .push(k.clone());
                    self.emit(Event::new(
                        "participant_left",
                        json!({"room": k.0, "participant": k.1, "reason": "node_lost", "node": p.node}),
                    ));
                }
            }
        }
    }

    /// A participant key read back after a clash (`Step::Owner`): if it names another relay,
    /// which wrote it after this one did, this relay's participant leaves
    /// ([`Command::FleetReplaced`]) and the other relay's takes its place here.
    fn fleet_owner(&mut self, key: &str, value: Option<Vec<u8>>) {
        let Some(link) = &self.fleet else { return };
        let Some((room, id)) = link.keys.participant_of(key) else {
            return;
        };
        let (room, id) = (room.to_owned(), id.to_owned());
        let Some(p) = value.and_then(|v| serde_json::from_slice::<FleetParticipant>(&v).ok())
        else {
            return;
        };
        if p.node == link.node {
            return;
        }
        if self.core.participant_summary(&room, &id).is_some() {
            let cmd = Command::FleetReplaced {
                room: room.clone(),
                id: id.clone(),
                node: p.node.clone(),
            };
            if let Err(e) = self.run_command(cmd) {
                tracing::warn!(error = %e, "letting go of a participant another relay holds failed");
                return;
            }
        }
        let Some(link) = &mut self.fleet else { return };
        link.remote.insert((room.clone(), id.clone()), p.clone());
        self.fleet_remote(&room, &id, Some(&p));
    }

    /// `node_lost`: every participant that was on `node`, each also as `participant_left`
    /// with reason `node_lost`.
    fn fleet_node_lost(&mut self, node: &str) {
        let Some(link) = &mut self.fleet else { return };
        let mut names = link.gone_with.remove(node).unwrap_or_default();
        let on_it: Vec<(String, String)> = link
            .remote
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &on_it {
            link.remote.remove(k);
        }
        for (room, id) in &on_it {
            self.fleet_remote(room, id, None);
        }
        for (room, id) in &on_it {
            self.emit(Event::new(
                "participant_left",
                json!({"room": room, "participant": id, "reason": "node_lost", "node": node}),
            ));
        }
        names.extend(on_it);
        names.sort();
        let participants: Vec<Value> = names
            .iter()
            .map(|(room, id)| json!({"room": room, "participant": id}))
            .collect();
        self.emit(Event::new(
            "node_lost",
            json!({"node": node, "participants": participants}),
        ));
    }

    /// In fleet mode, participant calls for a participant living on another relay are refused
    /// with `409 wrong_node`, naming it.
    pub(super) fn fleet_wrong_node(&self, cmd: &Command) -> Option<ApiError> {
        let link = self.fleet.as_ref()?;
        let (Command::PutParticipant { room, id, .. }
        | Command::PatchParticipant { room, id, .. }
        | Command::DeleteParticipant { room, id }) = cmd
        else {
            return None;
        };
        let p = link.remote.get(&(room.clone(), id.clone()))?;
        Some(ApiError::new(
            Code::WrongNode,
            format!(
                "participant {id} of room {room} lives on relay {}: call that relay",
                p.node
            ),
        ))
    }

    /// `GET /v1/rooms/{room}` in fleet mode: this relay's participants and those on other
    /// relays, each with its `node`.
    pub(super) fn fleet_room(&mut self, room: &str, local: Answer) -> Answer {
        let Some(link) = &self.fleet else {
            return local;
        };
        let remote: Vec<Value> = link
            .remote
            .range((room.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == room)
            .map(|((r, id), p)| remote_view(r, id, p))
            .collect();
        let fleet_room = link.rooms.get(room);
        let mut body = match local {
            Ok((_, v)) => v,
            // A fleet room with no part here: its settings and the other relays' participants.
            Err(e) if e.code == Code::NotFound && (fleet_room.is_some() || !remote.is_empty()) => {
                json!({"room": room, "created_at": fleet_room.map(|r| r.created_at.clone()),
                       "plain_legs": fleet_room.is_some_and(|r| r.plain_legs), "codecs": [],
                       "participants": [], "counters": {"packets_in": 0, "bytes_in": 0}})
            }
            Err(e) => return Err(e),
        };
        if let Some(list) = body["participants"].as_array_mut() {
            for p in list.iter_mut() {
                p["node"] = json!(link.node);
            }
            list.extend(remote);
        }
        Ok((200, body))
    }

    /// Applies every rule of `rules`, then acks its revision.
    fn fleet_catch_up(&mut self, rules: Rules) {
        if let Some(link) = &mut self.fleet {
            link.broken = false;
        }
        for (key, value) in rules.rules {
            if !self.fleet_apply(&key, &value) {
                return;
            }
        }
        self.fleet_ack(rules.revision);
        self.fleet_mirror();
    }

    /// Installs one rule record; false (and the relay stops acking) when it cannot.
    fn fleet_apply(&mut self, key: &str, value: &[u8]) -> bool {
        let Some(link) = &mut self.fleet else {
            return false;
        };
        if link.broken {
            return false;
        }
        let record: FleetRecord = match serde_json::from_slice(value) {
            Ok(r) => r,
            Err(e) => {
                // Written by someone else: we cannot tell what it asks, so we cannot say we
                // applied it.
                tracing::error!(key, error = %e, "unreadable fleet rule; not acknowledging");
                link.broken = true;
                return false;
            }
        };
        link.records.insert(record.id, record.clone());
        link.record_bytes.insert(record.id, value.to_vec());
        if !record.applies_in(&link.region) {
            // Enforced elsewhere: known here only so that no copy goes to a relay where it
            // blocks every receiver. Failing that is safe (copies are sent, and dropped there).
            let cmd = Command::FleetForeignRule {
                record: Box::new(record.stored()),
                relays_in: record.relays_in.clone(),
            };
            if let Err(e) = self.run_command(cmd) {
                tracing::warn!(rule = record.id, error = %e, "noting a rule of other regions failed");
            }
            return true;
        }
        match self.run_command(Command::FleetRule(Box::new(record.stored()))) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(rule = record.id, error = %e, "installing a fleet rule failed; not acknowledging");
                if let Some(link) = &mut self.fleet {
                    link.broken = true;
                }
                false
            }
        }
    }

    fn fleet_ack(&self, revision: i64) {
        let Some(link) = &self.fleet else { return };
        if link.broken {
            return;
        }
        link.fleet.ack_then(revision, move |r| {
            if let Err(e) = r {
                tracing::warn!(revision, error = %e, "acknowledging a fleet revision failed");
            }
        });
    }

    fn fleet_mirror(&self) {
        let Some(link) = &self.fleet else { return };
        link.fleet.audit_entries_then(link.post(0, Step::Audit));
    }

    /// An event of the fleet thread.
    pub(super) fn fleet_event(&mut self, event: fleet::Event) {
        match event {
            fleet::Event::Rule {
                key,
                value,
                revision,
            } => {
                // A deleted rule key is not something the fleet does; nothing to install.
                let applied = value.as_ref().is_none_or(|v| self.fleet_apply(&key, v));
                tracing::debug!(revision, applied, "fleet: rule applied");
                if applied {
                    self.fleet_ack(revision);
                    self.fleet_mirror();
                    // The fleet report names the relays that enforce a rule from the start.
                    self.fleet_report();
                }
            }
            fleet::Event::NodeJoined(info) => {
                self.fleet_nodes_changed();
                self.fleet_publish_peers();
                // Its participants seen before its registration learn its region and number.
                let known: Vec<((String, String), FleetParticipant)> = self
                    .fleet
                    .as_ref()
                    .map(|l| {
                        l.remote
                            .iter()
                            .filter(|(_, p)| p.node == info.node)
                            .map(|(k, p)| (k.clone(), p.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                for ((room, id), p) in known {
                    self.fleet_remote(&room, &id, Some(&p));
                }
                self.emit(Event::new(
                    "node_joined",
                    json!({"node": info.node, "region": info.region}),
                ));
            }
            fleet::Event::NodeLost { node } => {
                self.fleet_nodes_changed();
                self.fleet_publish_peers();
                self.fleet_node_lost(&node);
            }
            fleet::Event::Participant { key, value } => self.fleet_participant(&key, value),
            fleet::Event::ParticipantsResync => self.fleet_read_participants(),
            fleet::Event::Room { key, value } => self.fleet_room_key(&key, value),
            fleet::Event::RoomsResync => self.fleet_read_rooms(),
            fleet::Event::LeaseLost => {
                tracing::warn!("the fleet lease is lost: forwarding nothing until rejoined");
            }
            fleet::Event::Rejoined { joined_at } => {
                tracing::info!(joined_at, "rejoined the fleet; applying its rules");
                self.fleet_read_rules(Some(joined_at));
                // This relay's participant keys went with the old lease.
                self.fleet_publish_all();
                // A new registration is a new epoch for the headers this relay writes.
                self.fleet_publish_peers();
            }
            fleet::Event::RulesResync => self.fleet_read_rules(None),
        }
    }

    /// Housekeeping: reads the rules again after a failed read; puts this relay's report
    /// every [`REPORT_EVERY`].
    pub(super) fn fleet_tick(&mut self) {
        let Some(link) = &mut self.fleet else { return };
        if std::mem::take(&mut link.reread) {
            let revision = Some(link.fleet.joined_at());
            self.fleet_read_rules(revision);
        }
        let participants = u32::try_from(self.core.sizes().1).unwrap_or(u32::MAX);
        if let Some(link) = &mut self.fleet
            && link.load != Some(participants)
        {
            link.load = Some(participants);
            link.fleet.set_load_then(participants, |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "updating this relay's load failed");
                }
            });
        }
        let due = self
            .fleet
            .as_ref()
            .is_some_and(|l| l.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY));
        if due {
            self.fleet_report();
        }
        self.fleet_expire();
    }

    /// Records in the fleet's chain the expiry of every rule that is due: each relay tries, the
    /// first append wins (it expects the record unchanged) and the others get `Stale`. Every
    /// relay also expires the rule locally on its own clock (`Core::housekeeping`); this entry
    /// is what the fleet's chain and the other relays' records learn it from.
    fn fleet_expire(&mut self) {
        let Some(link) = &mut self.fleet else { return };
        let now = now().wall;
        let unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let due: Vec<u64> = link
            .records
            .values()
            .filter(|r| r.state == RuleState::Active && !link.expiring.contains(&r.id))
            .filter(|r| {
                crate::rules::compile(&r.spec).is_ok_and(|rule| rule.expires_at_unix() <= unix)
            })
            .map(|r| r.id)
            .collect();
        for rule in due {
            let (Some(old), Some(bytes)) = (
                link.records.get(&rule).cloned(),
                link.record_bytes.get(&rule).cloned(),
            ) else {
                continue;
            };
            let key = link.keys.rule(rule);
            let expired = FleetRecord {
                state: RuleState::Expired,
                expired_at: Some(crate::control::core::rfc3339_millis(now)),
                ..old
            };
            let value = to_bytes(&expired);
            let node = link.node.clone();
            let expect = Some((key.clone(), bytes));
            let build = move |_seq: u64| Append {
                detail: json!({"rule": rule, "node": node}),
                puts: vec![(key.clone(), value.clone())],
                deletes: Vec::new(),
                expect: expect.clone(),
            };
            link.expiring.insert(rule);
            let requests = link.requests.clone();
            link.fleet.append_then("rule_expired", build, move |r| {
                let _ = requests.send(Request::FleetStep(0, Box::new(Step::Expired(rule, r))));
            });
        }
    }

    fn fleet_expired(&mut self, rule: u64, result: Result<Commit, FleetError>) {
        let Some(link) = &mut self.fleet else { return };
        link.expiring.remove(&rule);
        match result {
            // The watch brings the expired record to every relay, this one too.
            Ok(_) => self.fleet_mirror(),
            // Another relay recorded it first (or it was lifted).
            Err(FleetError::Stale(_)) => {}
            // Tried again at the next tick.
            Err(e) => {
                tracing::warn!(rule, error = %e, "recording a rule's expiry in the fleet failed")
            }
        }
    }

    /// Puts this relay's rule counters under `reports/{node}` (on its lease).
    fn fleet_report(&mut self) {
        let rules: Vec<(u64, RuleCounters)> = self
            .core
            .rule_counters()
            .into_iter()
            .map(|(id, c)| (id.0, c))
            .collect();
        let Some(link) = &mut self.fleet else { return };
        link.last_report = Some(Instant::now());
        let report = Report {
            node: link.node.clone(),
            region: link.region.clone(),
            rules,
        };
        link.fleet
            .put_leased_then(link.keys.report(&link.node), to_bytes(&report), |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "putting this relay's transparency report failed");
                }
            });
    }

    /// `GET /v1/transparency` in fleet mode: this relay's report, and the fleet's aggregated
    /// from every live relay's `reports/{node}`.
    pub(super) fn fleet_transparency(&mut self, reply: oneshot::Sender<Answer>, local: Answer) {
        let local = match local {
            Ok((_, v)) => v,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(link) = &mut self.fleet else { return };
        let id = link.next;
        link.next += 1;
        link.transparency.insert(id, (reply, local));
        link.fleet
            .get_prefix_then(link.keys.reports(), link.post(id, Step::Reports));
    }

    /// `POST /v1/placements`: the least loaded live relay of the region, else the least loaded
    /// live relay (ties: by name). Alone, this relay.
    pub(super) fn placement(&self, region: Option<&str>) -> Answer {
        let Some(link) = &self.fleet else {
            let (_, participants) = self.core.sizes();
            return Ok((
                200,
                serde_json::to_value(Placement {
                    node: None,
                    region: None,
                    control: self.control.to_string(),
                    load: u32::try_from(participants).unwrap_or(u32::MAX),
                    in_region: region.is_none(),
                })
                .unwrap_or(Value::Null),
            ));
        };
        let nodes = link.fleet.nodes();
        let least = |in_region: bool| {
            nodes
                .iter()
                .filter(|n| !in_region || region.is_some_and(|r| n.region == r))
                .min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.node.cmp(&b.node)))
        };
        let (node, in_region) = match least(true) {
            Some(n) => (n, true),
            None => match least(false) {
                Some(n) => (n, region.is_none()),
                None => {
                    return Err(ApiError::new(
                        Code::FleetUnavailable,
                        "no live relay is known",
                    ));
                }
            },
        };
        let placement = Placement {
            node: Some(node.node.clone()),
            region: Some(node.region.clone()),
            control: node.control.to_string(),
            load: node.load,
            in_region,
        };
        Ok((200, serde_json::to_value(placement).unwrap_or(Value::Null)))
    }

    fn fleet_reports(&mut self, id: u64, result: Result<Vec<(String, Vec<u8>)>, FleetError>) {
        let Some(link) = &mut self.fleet else { return };
        let Some((reply, mut local)) = link.transparency.remove(&id) else {
            return;
        };
        let reports = match result {
            Ok(kvs) => kvs
                .iter()
                .filter_map(|(_, v)| serde_json::from_slice::<Report>(v).ok())
                .collect::<Vec<_>>(),
            Err(e) => {
                let _ = reply.send(Err(ApiError::new(
                    Code::FleetUnavailable,
                    format!("reading the fleet's reports failed: {e}"),
                )));
                return;
            }
        };
        if let Value::Object(map) = &mut local {
            map.insert("fleet".into(), aggregate(&reports, &link.records));
        }
        let _ = reply.send(Ok((200, local)));
    }

    fn fleet_read_rules(&self, revision: Option<i64>) {
        let Some(link) = &self.fleet else { return };
        link.fleet.rules_then(revision, link.post(0, Step::Rules));
    }

    fn fleet_nodes_changed(&self) {
        if let Some(link) = &self.fleet {
            self.shared
                .gauges
                .fleet_nodes
                .store(link.fleet.nodes().len() as u64, Ordering::Relaxed);
        }
    }

    /// `POST /v1/rules` or `DELETE /v1/rules/{id}` in fleet mode: step 1 and 2.
    pub(super) fn fleet_rule_change(&mut self, cmd: Command, reply: oneshot::Sender<Answer>) {
        let started = match cmd {
            Command::AddRule { body } => self.fleet_add(&body),
            Command::LiftRule { id, body } => self.fleet_lift(&id, &body),
            _ => Err(ApiError::new(Code::Internal, "not a rule change")),
        };
        let Some(link) = &mut self.fleet else {
            let _ = reply.send(Err(ApiError::new(Code::Internal, "no fleet")));
            return;
        };
        match started {
            Ok((id, status, rule, relays_in)) => {
                link.pending.insert(
                    id,
                    Pending {
                        reply,
                        status,
                        rule,
                        relays_in,
                        acked: Vec::new(),
                        fenced: Vec::new(),
                        fencing: 0,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn fleet_add(&mut self, body: &[u8]) -> Result<Started, ApiError> {
        let (relays_in, body) = split_relays_in(body)?;
        let now = now();
        let spec = self.core.prepare_rule(now, &body)?;
        let Some(link) = &mut self.fleet else {
            return Err(ApiError::new(Code::Internal, "no fleet"));
        };
        let id = link.next;
        link.next += 1;
        let keys = link.keys.clone();
        let by = link.node.clone();
        let created_at = crate::control::core::rfc3339_millis(now.wall);
        let regions = relays_in.clone();
        let build = move |seq: u64| {
            let record = FleetRecord {
                id: seq,
                spec: spec.clone(),
                state: RuleState::Active,
                created_at: created_at.clone(),
                lifted_at: None,
                lift_reason: None,
                expired_at: None,
                relays_in: regions.clone(),
                by: by.clone(),
            };
            Append {
                detail: json!({
                    "rule": seq,
                    "match": spec.r#match,
                    "direction": spec.direction,
                    "media": spec.media,
                    "expires_at": spec.expires_at,
                    "basis": spec.basis,
                    "relays_in": regions,
                    "node": by,
                }),
                puts: vec![(keys.rule(seq), to_bytes(&record))],
                deletes: Vec::new(),
                expect: None,
            }
        };
        link.fleet
            .append_then("rule_added", build, link.post(id, Step::Committed));
        Ok((id, 201, 0, relays_in))
    }

    fn fleet_lift(&mut self, id: &str, body: &[u8]) -> Result<Started, ApiError> {
        let rule: u64 = id
            .parse()
            .map_err(|_| ApiError::new(Code::RuleNotFound, format!("no rule {id}")))?;
        let lift: LiftBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                Code::InvalidReason,
                format!("a JSON body {{\"reason\": \"...\"}} is required: {e}"),
            )
        })?;
        store::check_reason(&lift.reason).map_err(|e| ApiError::from_store(&e))?;
        let Some(link) = &mut self.fleet else {
            return Err(ApiError::new(Code::Internal, "no fleet"));
        };
        let expect = link.record_bytes.get(&rule).cloned();
        let Some(old) = link.records.get(&rule).cloned() else {
            return Err(ApiError::new(
                Code::RuleNotFound,
                format!("no rule has id {rule}"),
            ));
        };
        if old.state != RuleState::Active {
            return Err(ApiError::new(
                Code::RuleNotActive,
                format!("rule {rule} is already {}", old.state.as_str()),
            ));
        }
        let call = link.next;
        link.next += 1;
        let lifted = FleetRecord {
            state: RuleState::Lifted,
            lifted_at: Some(crate::control::core::rfc3339_millis(now().wall)),
            lift_reason: Some(lift.reason.clone()),
            ..old
        };
        let key = link.keys.rule(rule);
        let node = link.node.clone();
        let relays_in = lifted.relays_in.clone();
        let value = to_bytes(&lifted);
        // Lifted or expired meanwhile through another relay: 409, nothing written.
        let expect = expect.map(|bytes| (key.clone(), bytes));
        let build = move |_seq: u64| Append {
            detail: json!({"rule": rule, "reason": lift.reason, "node": node}),
            puts: vec![(key.clone(), value.clone())],
            deletes: Vec::new(),
            expect: expect.clone(),
        };
        link.fleet
            .append_then("rule_lifted", build, link.post(call, Step::Committed));
        Ok((call, 200, rule, relays_in))
    }

    /// A step of a fleet call came back.
    pub(super) fn fleet_step(&mut self, id: u64, step: Step) {
        match step {
            Step::Rules(Ok(rules)) => self.fleet_catch_up(rules),
            Step::Rules(Err(e)) => {
                // The relay stays fenced (not acked) until it has them all: try again at the
                // next tick.
                tracing::error!(error = %e, "reading the fleet's rules failed; retrying");
                if let Some(link) = &mut self.fleet {
                    link.reread = true;
                }
            }
            Step::Audit(Ok(entries)) => self.fleet_mirror_entries(&entries),
            Step::Audit(Err(e)) => {
                tracing::warn!(error = %e, "reading the fleet audit chain failed; mirroring later")
            }
            Step::Reports(result) => self.fleet_reports(id, result),
            Step::Participants(Ok(kvs)) => {
                // Those no longer registered leave the rooms here; the others are put again
                // (the core ignores what did not change).
                let before: Vec<(String, String)> = self
                    .fleet
                    .as_mut()
                    .map(|l| std::mem::take(&mut l.remote).into_keys().collect())
                    .unwrap_or_default();
                let mut seen = std::collections::BTreeSet::new();
                for (key, value) in kvs {
                    if let Some(link) = &self.fleet
                        && let Some((room, id)) = link.keys.participant_of(&key)
                    {
                        seen.insert((room.to_owned(), id.to_owned()));
                    }
                    self.fleet_participant(&key, Some(value));
                }
                for (room, id) in before.iter().filter(|k| !seen.contains(*k)) {
                    self.fleet_remote(room, id, None);
                }
            }
            Step::Participants(Err(e)) => {
                tracing::warn!(error = %e, "reading the fleet's participants failed");
            }
            Step::Owner(Ok((key, value))) => self.fleet_owner(&key, value),
            Step::Owner(Err(e)) => {
                tracing::warn!(error = %e, "reading where a participant lives failed");
            }
            Step::Room(step) => self.fleet_room_step(id, step),
            Step::Rooms(Ok(kvs)) => self.fleet_rooms_read(kvs),
            Step::Rooms(Err(e)) => {
                tracing::warn!(error = %e, "reading the fleet's rooms failed");
            }
            Step::Committed(result) => self.fleet_committed(id, result),
            Step::Expired(rule, result) => self.fleet_expired(rule, result),
            Step::Acks(result) => self.fleet_acks(id, result),
            Step::Fenced(node, result) => self.fleet_fenced(id, node, result),
        }
    }

    fn fleet_committed(&mut self, id: u64, result: Result<Commit, FleetError>) {
        let Some(link) = &mut self.fleet else { return };
        let commit = match result {
            Ok(c) => c,
            Err(e) => {
                if let Some(p) = link.pending.remove(&id) {
                    let _ = p.reply.send(Err(fleet_error(&e)));
                }
                return;
            }
        };
        let Some(p) = link.pending.get_mut(&id) else {
            return;
        };
        if p.status == 201 {
            p.rule = commit.entry.seq;
        }
        tracing::debug!(
            revision = commit.revision,
            "fleet: commit on the control thread"
        );
        let timeout = link.fleet.ttl();
        link.fleet
            .wait_acks_then(commit.revision, timeout, link.post(id, Step::Acks));
    }

    fn fleet_acks(&mut self, id: u64, result: Result<Acks, FleetError>) {
        let Some(link) = &mut self.fleet else { return };
        let acks = match result {
            Ok(a) => a,
            Err(e) => {
                // The rule is committed; whether every relay has it is unknown. Say so: the
                // caller may GET it, and relays that did not apply it get fenced by the next
                // call or apply it when they rejoin.
                if let Some(p) = link.pending.remove(&id) {
                    let _ = p.reply.send(Err(ApiError::new(
                        Code::FleetUnavailable,
                        format!(
                            "rule {} is committed, but waiting for the relays failed: {e}",
                            p.rule
                        ),
                    )));
                }
                return;
            }
        };
        let Some(p) = link.pending.get_mut(&id) else {
            return;
        };
        p.acked = acks.acked;
        p.fenced = acks.gone;
        p.fencing = acks.missing.len();
        for node in acks.missing {
            tracing::warn!(
                node,
                revision = acks.revision,
                "a relay did not acknowledge a rule in time: fencing it"
            );
            let requests = link.requests.clone();
            let name = node.clone();
            link.fleet.fence_node_then(&node, move |r| {
                let _ = requests.send(Request::FleetStep(id, Box::new(Step::Fenced(name, r))));
            });
        }
        self.fleet_maybe_reply(id);
    }

    fn fleet_fenced(&mut self, id: u64, node: String, result: Result<(), FleetError>) {
        let Some(link) = &mut self.fleet else { return };
        let Some(p) = link.pending.get_mut(&id) else {
            return;
        };
        p.fencing = p.fencing.saturating_sub(1);
        match result {
            Ok(()) => p.fenced.push(node),
            Err(e) => {
                if let Some(p) = link.pending.remove(&id) {
                    let _ = p.reply.send(Err(ApiError::new(
                        Code::FleetUnavailable,
                        format!(
                            "rule {} is committed, but relay {node} neither acknowledged it nor \
                             could be fenced: {e}",
                            p.rule
                        ),
                    )));
                }
                return;
            }
        }
        self.fleet_maybe_reply(id);
    }

    /// Answers a rule call once every relay acked or was fenced.
    fn fleet_maybe_reply(&mut self, id: u64) {
        let Some(link) = &mut self.fleet else { return };
        if link.pending.get(&id).is_none_or(|p| p.fencing > 0) {
            return;
        }
        let Some(mut p) = link.pending.remove(&id) else {
            return;
        };
        p.acked.sort();
        p.fenced.sort();
        let record = link.records.get(&p.rule).cloned();
        let mut body = match self.core.rule_record(RuleId(p.rule)) {
            Some(_) => self
                .run_command(Command::GetRule {
                    id: p.rule.to_string(),
                })
                .map(|(_, v)| v)
                .unwrap_or(Value::Null),
            None => record.as_ref().map_or(Value::Null, |r| {
                let mut v = serde_json::to_value(r.stored()).unwrap_or(Value::Null);
                strip_fleet_fields(&mut v);
                v
            }),
        };
        if let Value::Object(map) = &mut body {
            map.insert("in_force_on".into(), json!(p.acked));
            map.insert("fenced".into(), json!(p.fenced));
            map.insert("relays_in".into(), json!(p.relays_in));
        }
        tracing::debug!(rule = p.rule, "fleet: rule call answered");
        let _ = p.reply.send(Ok((p.status, body)));
    }

    fn fleet_mirror_entries(&mut self, entries: &[AuditEntry]) {
        let Some(link) = &mut self.fleet else { return };
        let head = match link.mirror.audit_head() {
            Ok((seq, _)) => seq,
            Err(e) => {
                tracing::error!(error = %e, "reading the fleet audit mirror failed");
                return;
            }
        };
        for entry in entries.iter().filter(|e| e.seq > head) {
            if let Err(e) = link.mirror.mirror(entry) {
                tracing::error!(seq = entry.seq, error = %e, "mirroring the fleet audit chain failed");
                return;
            }
        }
    }
}

/// How often a relay puts its report.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The fleet part of the transparency report: per rule, the relays that enforce(d) it and the
/// sums of their counters; and the totals. Counts only, no participant or room ids.
fn aggregate(reports: &[Report], records: &BTreeMap<u64, FleetRecord>) -> Value {
    let mut per_rule: BTreeMap<u64, (Vec<String>, RuleCounters)> = BTreeMap::new();
    let mut total = RuleCounters::default();
    for r in reports {
        for (id, c) in &r.rules {
            let (by, sum) = per_rule.entry(*id).or_default();
            by.push(r.node.clone());
            sum.participants_matched_total += c.participants_matched_total;
            sum.packets_dropped_send += c.packets_dropped_send;
            sum.packets_dropped_receive += c.packets_dropped_receive;
            total.participants_matched_total += c.participants_matched_total;
            total.packets_dropped_send += c.packets_dropped_send;
            total.packets_dropped_receive += c.packets_dropped_receive;
        }
    }
    let mut relays: Vec<Value> = reports
        .iter()
        .map(|r| json!({"node": r.node, "region": r.region}))
        .collect();
    relays.sort_by_key(|v| v["node"].as_str().unwrap_or("").to_owned());
    let per_rule: Vec<Value> = per_rule
        .into_iter()
        .map(|(id, (mut by, c))| {
            by.sort();
            let record = records.get(&id);
            json!({
                "id": id,
                "jurisdiction": record.and_then(|r| r.spec.basis.as_ref()).map(|b| b.jurisdiction.clone()),
                "authority": record.and_then(|r| r.spec.basis.as_ref()).map(|b| b.authority.clone()),
                "state": record.map(|r| r.state),
                "relays_in": record.map(|r| r.relays_in.clone()),
                "enforced_by": by,
                "participants_matched_total": c.participants_matched_total,
                "packets_dropped": {"send": c.packets_dropped_send, "receive": c.packets_dropped_receive},
            })
        })
        .collect();
    json!({
        "relays": relays,
        "per_rule": per_rule,
        "participants_matched_total": total.participants_matched_total,
        "packets_dropped": {"send": total.packets_dropped_send, "receive": total.packets_dropped_receive},
    })
}

/// A participant of another relay as the API shows it: room, id, `node` and its fleet summary
/// (region, tracks, subscription; never an address).
fn remote_view(room: &str, id: &str, p: &FleetParticipant) -> Value {
    let mut v = json!({"room": room, "participant": id, "node": p.node});
    if let (Value::Object(m), Value::Object(extra)) = (&mut v, &p.summary) {
        for (k, x) in extra {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}

/// Takes `relays_in` out of a rule body (the rest is the rule's spec) and checks it.
fn split_relays_in(body: &[u8]) -> Result<(Vec<String>, Vec<u8>), ApiError> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        // Not an object: the core's parser says what is wrong with it.
        return Ok((Vec::new(), body.to_vec()));
    };
    let Some(value) = map.remove("relays_in") else {
        return Ok((Vec::new(), body.to_vec()));
    };
    let bad = || {
        ApiError::new(
            Code::InvalidRelaysIn,
            "relays_in is a list of 1 to 16 region codes (up to 16 of [A-Z0-9-], e.g. \"CN\")",
        )
    };
    let list: Vec<String> = serde_json::from_value(value).map_err(|_| bad())?;
    if list.is_empty() || list.len() > 16 || list.iter().any(|r| r.is_empty() || !valid_region(r)) {
        return Err(bad());
    }
    let mut list = list;
    list.sort();
    list.dedup();
    Ok((list, serde_json::to_vec(&map).unwrap_or_default()))
}

fn strip_fleet_fields(v: &mut Value) {
    if let Value::Object(map) = v
        && map.get("expired_at").is_some_and(Value::is_null)
    {
        map.remove("expired_at");
    }
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn fleet_error(e: &FleetError) -> ApiError {
    match e {
        FleetError::Store(s) => ApiError::from_store(s),
        FleetError::Stale(_) => ApiError::new(
            Code::RuleNotActive,
            "the rule was lifted or expired meanwhile (through another relay)",
        ),
        other => ApiError::new(
            Code::FleetUnavailable,
            format!("the rule was not committed: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_in_is_taken_out_of_the_rule_and_checked() {
        let (list, rest) =
            split_relays_in(br#"{"match": {"regions": ["CN"]}, "relays_in": ["HK", "CN", "CN"]}"#)
                .unwrap();
        assert_eq!(list, ["CN", "HK"]);
        let rest: Value = serde_json::from_slice(&rest).unwrap();
        assert_eq!(rest, json!({"match": {"regions": ["CN"]}}));
        let (none, same) = split_relays_in(br#"{"match": {}}"#).unwrap();
        assert!(none.is_empty());
        assert_eq!(same, br#"{"match": {}}"#);
        for bad in [
            r#"{"relays_in": []}"#,
            r#"{"relays_in": "CN"}"#,
            r#"{"relays_in": ["cn"]}"#,
            r#"{"relays_in": [""]}"#,
            r#"{"relays_in": [1]}"#,
        ] {
            let e = split_relays_in(bad.as_bytes()).unwrap_err();
            assert_eq!(e.code, Code::InvalidRelaysIn, "{bad}");
        }
        // Not JSON: left to the rule parser, which says why.
        assert!(split_relays_in(b"nope").is_ok());
    }

    #[test]
    fn a_record_round_trips_and_knows_where_it_applies() {
        let spec: RuleSpec = serde_json::from_value(json!({
            "match": {"regions": ["CN"]},
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"},
            "expires_at": "2030-01-01T00:00:00Z"
        }))
        .unwrap();
        let record = FleetRecord {
            id: 7,
            spec,
            state: RuleState::Active,
            created_at: "2026-12-06T07:00:00.000Z".into(),
            lifted_at: None,
            lift_reason: None,
            expired_at: None,
            relays_in: vec!["CN".into()],
            by: "a".into(),
        };
        let back: FleetRecord = serde_json::from_slice(&to_bytes(&record)).unwrap();
        assert_eq!(back, record);
        assert!(record.applies_in("CN"));
        assert!(!record.applies_in("HK"));
        assert!(!record.applies_in(""));
        let everywhere = FleetRecord {
            relays_in: Vec::new(),
            ..record
        };
        assert!(everywhere.applies_in("HK") && everywhere.applies_in(""));
        assert_eq!(everywhere.stored().id, RuleId(7));
    }
}
