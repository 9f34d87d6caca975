//! Rooms as fleet objects: `rooms/{room}` in etcd holds a room's settings, not leased, so a
//! room outlives the relay it was created on.
//!
//! - `PUT /v1/rooms/{room}` on any relay opens the room here (the core checks it as on a single
//!   relay), then creates the key if it is absent; a room that exists in the fleet answers 200
//!   with the fleet's settings (409 `plain_legs_fixed` if the call asks for the other value).
//! - A relay opens its local part of a fleet room when a participant first comes to it there
//!   (reading the key when its watch has not brought it yet).
//! - `DELETE /v1/rooms/{room}` on any relay closes the local part and deletes the key; every
//!   other relay hears the delete from its watch and closes its local part, with the events a
//!   single relay sends (`room_closed`; its participants' keys go with them).
//! - `GET /v1/rooms`, `GET /v1/rooms/{room}` and `GET .../participants/{p}` answer for the
//!   whole fleet, each participant with its `node`.
//!
//! Without `--etcd` none of this runs: rooms are the core's alone, as before.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{FleetError, Step, remote_view, to_bytes};
use crate::control::core::Command;
use crate::control::error::{ApiError, Code};
use crate::control::owner::{Answer, Owner};

/// What `rooms/{room}` holds: the settings `PUT /v1/rooms/{room}` takes, and where it began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRoom {
    /// Whether media from WebRTC legs may reach plain legs (fixed at creation).
    #[serde(default)]
    pub plain_legs: bool,
    /// When it was created.
    pub created_at: String,
    /// The relay that created it.
    pub by: String,
}

/// A room call waiting for etcd.
pub(super) enum RoomCall {
    /// A `PUT /v1/rooms/{room}` that opened the room here and is creating its key; `local`
    /// is the core's answer.
    Put {
        room: String,
        local: (u16, Value),
        reply: oneshot::Sender<Answer>,
    },
    /// A `DELETE /v1/rooms/{room}` that closed the room here and is deleting its key.
    Delete {
        answer: (u16, Value),
        reply: oneshot::Sender<Answer>,
    },
    /// A participant call into a room neither open here nor known from the watch yet: its
    /// key is being read.
    Read {
        room: String,
        cmd: Box<Command>,
        reply: oneshot::Sender<Answer>,
    },
}

/// What came back for a room call.
pub enum RoomStep {
    /// `rooms/{room}` created (`None`) or found with this value.
    Put(Result<Option<Vec<u8>>, FleetError>),
    /// `rooms/{room}` deleted.
    Deleted(Result<(), FleetError>),
    /// `rooms/{room}` read (every key with that prefix).
    Read(Result<Vec<(String, Vec<u8>)>, FleetError>),
}

/// The room a command puts a participant into (the commands that open a fleet room here).
fn joins(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::PutParticipant { room, .. }
        | Command::WebrtcPublish { room, .. }
        | Command::WebrtcOffer { room, .. } => Some(room),
        _ => None,
    }
}

impl Owner {
    /// A core command in fleet mode (after the `wrong_node` check).
    pub(in crate::control::owner) fn fleet_command(
        &mut self,
        cmd: Command,
        reply: oneshot::Sender<Answer>,
    ) {
        match cmd {
            Command::PutRoom { room, plain_legs } => self.fleet_put_room(room, plain_legs, reply),
            Command::DeleteRoom { room } => self.fleet_delete_room(room, reply),
            Command::GetRoom { room } => {
                let local = self.run_command(Command::GetRoom { room: room.clone() });
                let _ = reply.send(self.fleet_room(&room, local));
            }
            Command::ListRooms => {
                let local = self.run_command(Command::ListRooms);
                let _ = reply.send(self.fleet_list_rooms(local));
            }
            Command::GetParticipant { room, id } => {
                let local = self.run_command(Command::GetParticipant {
                    room: room.clone(),
                    id: id.clone(),
                });
                let _ = reply.send(self.fleet_get_participant(&room, &id, local));
            }
            cmd => match joins(&cmd).map(str::to_owned) {
                Some(room) if !self.core.has_room(&room) => self.fleet_join(room, cmd, reply),
                _ => {
                    let _ = reply.send(self.run_command(cmd));
                }
            },
        }
    }

    /// A participant comes to a room not open here: open the fleet's room, reading its key
    /// first when the watch has not brought it yet.
    fn fleet_join(&mut self, room: String, cmd: Command, reply: oneshot::Sender<Answer>) {
        let Some(link) = &mut self.fleet else { return };
        if link.rooms.contains_key(&room) || crate::control::body::check_id("room", &room).is_err()
        {
            // Known (open it), or not a room id at all (the core says why).
            let answer = self.fleet_open(&room).and_then(|()| self.run_command(cmd));
            let _ = reply.send(answer);
            return;
        }
        let id = link.next;
        link.next += 1;
        let key = link.keys.room(&room);
        link.room_calls.insert(
            id,
            RoomCall::Read {
                room,
                cmd: Box::new(cmd),
                reply,
            },
        );
        link.fleet
            .get_prefix_then(key, link.post(id, |r| Step::Room(RoomStep::Read(r))));
    }

    /// Opens the local part of fleet room `room` with its settings (nothing if it is open or
    /// not a fleet room: the command that follows then answers as on a single relay).
    fn fleet_open(&mut self, room: &str) -> Result<(), ApiError> {
        let Some(settings) = self.fleet.as_ref().and_then(|l| l.rooms.get(room)) else {
            return Ok(());
        };
        if self.core.has_room(room) {
            return Ok(());
        }
        let plain_legs = Some(settings.plain_legs);
        self.run_command(Command::PutRoom {
            room: room.to_owned(),
            plain_legs,
        })
        .map(|_| ())
    }

    fn fleet_put_room(
        &mut self,
        room: String,
        plain_legs: Option<bool>,
        reply: oneshot::Sender<Answer>,
    ) {
        let Some(link) = &self.fleet else { return };
        if let Some(settings) = link.rooms.get(&room) {
            let fixed = settings.plain_legs;
            if plain_legs.is_some_and(|p| p != fixed) {
                let _ = reply.send(Err(plain_legs_fixed(&room, fixed)));
                return;
            }
            // It exists in the fleet: 200, with its part here opened.
            let answer = self
                .run_command(Command::PutRoom {
                    room,
                    plain_legs: Some(fixed),
                })
                .map(|(_, body)| (200, body));
            let _ = reply.send(answer);
            return;
        }
        let local = match self.run_command(Command::PutRoom {
            room: room.clone(),
            plain_legs,
        }) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(link) = &mut self.fleet else { return };
        let settings = settings_of(&local.1, &link.node);
        let id = link.next;
        link.next += 1;
        let key = link.keys.room(&room);
        link.room_calls
            .insert(id, RoomCall::Put { room, local, reply });
        link.fleet.put_new_then(
            key,
            to_bytes(&settings),
            link.post(id, |r| Step::Room(RoomStep::Put(r))),
        );
    }

    fn fleet_delete_room(&mut self, room: String, reply: oneshot::Sender<Answer>) {
        let Some(link) = &mut self.fleet else { return };
        let remote = link
            .remote
            .range((room.clone(), String::new())..)
            .take_while(|((r, _), _)| *r == room)
            .count();
        let known = link.rooms.remove(&room).is_some() || remote > 0;
        let (status, mut body) = if self.core.has_room(&room) || !known {
            // Open here, or not a fleet room: the core answers as on a single relay.
            match self.run_command(Command::DeleteRoom { room: room.clone() }) {
                Ok(a) => a,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        } else {
            (
                200,
                json!({"room": room, "closed": true, "participants": 0}),
            )
        };
        let here = body["participants"].as_u64().unwrap_or(0);
        body["participants"] = json!(here + remote as u64);
        let Some(link) = &mut self.fleet else { return };
        let id = link.next;
        link.next += 1;
        let key = link.keys.room(&room);
        link.room_calls.insert(
            id,
            RoomCall::Delete {
                answer: (status, body),
                reply,
            },
        );
        link.fleet
            .delete_then(key, link.post(id, |r| Step::Room(RoomStep::Deleted(r))));
    }

    /// `GET /v1/rooms` in fleet mode: every fleet room, with its participants on all relays.
    fn fleet_list_rooms(&self, local: Answer) -> Answer {
        let Some(link) = &self.fleet else {
            return local;
        };
        let (status, body) = local?;
        let mut counts: BTreeMap<String, u64> = link.rooms.keys().map(|r| (r.clone(), 0)).collect();
        for r in body["rooms"].as_array().into_iter().flatten() {
            if let Some(name) = r["room"].as_str() {
                *counts.entry(name.to_owned()).or_default() +=
                    r["participants"].as_u64().unwrap_or(0);
            }
        }
        for (room, _) in link.remote.keys() {
            *counts.entry(room.clone()).or_default() += 1;
        }
        let rooms: Vec<Value> = counts
            .into_iter()
            .map(|(room, participants)| json!({"room": room, "participants": participants}))
            .collect();
        Ok((status, json!({ "rooms": rooms })))
    }

    /// `GET .../participants/{p}` in fleet mode: this relay's participants with its `node`; a
    /// participant of another relay answers with its fleet summary and that relay's `node`.
    fn fleet_get_participant(&self, room: &str, id: &str, local: Answer) -> Answer {
        let Some(link) = &self.fleet else {
            return local;
        };
        match local {
            Ok((status, mut body)) => {
                body["node"] = json!(link.node);
                Ok((status, body))
            }
            Err(e) if e.code == Code::NotFound => {
                match link.remote.get(&(room.to_owned(), id.to_owned())) {
                    Some(p) => Ok((200, remote_view(room, id, p))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A key under `rooms/` changed: keep the settings; a deleted room closes here.
    pub(super) fn fleet_room_key(&mut self, key: &str, value: Option<Vec<u8>>) {
        let Some(link) = &mut self.fleet else { return };
        let Some(room) = link.keys.room_of(key).map(str::to_owned) else {
            return;
        };
        match value {
            Some(v) => match serde_json::from_slice::<FleetRoom>(&v) {
                Ok(settings) => {
                    link.rooms.insert(room, settings);
                }
                Err(e) => tracing::warn!(room, error = %e, "unreadable fleet room; ignored"),
            },
            None => {
                link.rooms.remove(&room);
                self.fleet_close(&room);
            }
        }
    }

    /// Closes the local part of a room deleted fleet-wide (with the events a single relay
    /// sends when a room is closed).
    fn fleet_close(&mut self, room: &str) {
        if !self.core.has_room(room) {
            return;
        }
        if let Err(e) = self.run_command(Command::DeleteRoom {
            room: room.to_owned(),
        }) {
            tracing::error!(room, error = %e, "closing a room deleted fleet-wide failed");
        }
    }

    /// Reads every room key (at attach, or after a compacted watch).
    pub(super) fn fleet_read_rooms(&self) {
        let Some(link) = &self.fleet else { return };
        link.fleet
            .get_prefix_after_writes_then(link.keys.rooms(), link.post(0, Step::Rooms));
    }

    /// Every room key was read: rooms known before and gone now were deleted meanwhile and
    /// close here.
    pub(super) fn fleet_rooms_read(&mut self, kvs: Vec<(String, Vec<u8>)>) {
        let Some(link) = &mut self.fleet else { return };
        let mut fresh = BTreeMap::new();
        for (key, value) in kvs {
            if let (Some(room), Ok(settings)) = (
                link.keys.room_of(&key),
                serde_json::from_slice::<FleetRoom>(&value),
            ) {
                fresh.insert(room.to_owned(), settings);
            }
        }
        // Open here and not in the fleet: deleted while this relay was away (restarted from
        // its database) or since the last read, unless a PUT here is creating its key (the
        // read went on the ordered lane, so one that began before it is still pending here).
        let creating: BTreeSet<&str> = link
            .room_calls
            .values()
            .filter_map(|c| match c {
                RoomCall::Put { room, .. } => Some(room.as_str()),
                _ => None,
            })
            .collect();
        let mut gone: BTreeSet<String> = self
            .core
            .room_ids()
            .filter(|r| !fresh.contains_key(*r) && !creating.contains(*r))
            .map(str::to_owned)
            .collect();
        let old = std::mem::replace(&mut link.rooms, fresh);
        gone.extend(old.into_keys().filter(|r| !link.rooms.contains_key(r)));
        for room in &gone {
            self.fleet_close(room);
        }
    }

    /// A room call's etcd step came back.
    pub(super) fn fleet_room_step(&mut self, id: u64, step: RoomStep) {
        let Some(link) = &mut self.fleet else { return };
        let Some(call) = link.room_calls.remove(&id) else {
            return;
        };
        match (call, step) {
            (RoomCall::Put { room, local, reply }, RoomStep::Put(result)) => {
                let answer = self.fleet_room_created(&room, local, result);
                let _ = reply.send(answer);
            }
            (RoomCall::Delete { answer, reply }, RoomStep::Deleted(result)) => {
                let answer = result.map(|()| answer).map_err(|e| {
                    ApiError::new(
                        Code::FleetUnavailable,
                        format!("the room is closed here, but not removed from the fleet: {e}"),
                    )
                });
                let _ = reply.send(answer);
            }
            (RoomCall::Read { room, cmd, reply }, RoomStep::Read(result)) => {
                if let (Ok(kvs), Some(link)) = (result, &mut self.fleet) {
                    let key = link.keys.room(&room);
                    if let Some((_, v)) = kvs.into_iter().find(|(k, _)| *k == key)
                        && let Ok(settings) = serde_json::from_slice::<FleetRoom>(&v)
                    {
                        link.rooms.insert(room.clone(), settings);
                    }
                }
                // Not in the fleet (or unreadable): the core answers 404 as on one relay.
                let answer = self.fleet_open(&room).and_then(|()| self.run_command(*cmd));
                let _ = reply.send(answer);
            }
            _ => tracing::error!(id, "a room call got another call's step"),
        }
    }

    /// The key of a room this relay opened was put, or found: the fleet's settings win.
    fn fleet_room_created(
        &mut self,
        room: &str,
        local: (u16, Value),
        result: Result<Option<Vec<u8>>, FleetError>,
    ) -> Answer {
        let Some(link) = &mut self.fleet else {
            return Ok(local);
        };
        let opened_here = local.0 == 201;
        let mine = settings_of(&local.1, &link.node);
        let (settings, status) = match result {
            Ok(None) => (mine.clone(), local.0),
            // Created meanwhile through another relay (or by this call, if a put that timed
            // out landed after all).
            Ok(Some(bytes)) => match serde_json::from_slice::<FleetRoom>(&bytes) {
                Ok(theirs) => (theirs, 200),
                Err(e) => {
                    tracing::warn!(room, error = %e, "unreadable fleet room; keeping ours");
                    (mine.clone(), local.0)
                }
            },
            Err(e) => {
                if opened_here {
                    self.fleet_close(room);
                }
                return Err(ApiError::new(
                    Code::FleetUnavailable,
                    format!("the room was not created in the fleet: {e}"),
                ));
            }
        };
        let fixed = settings.plain_legs;
        link.rooms.insert(room.to_owned(), settings);
        if fixed != mine.plain_legs {
            if opened_here {
                self.fleet_close(room);
            }
            return Err(plain_legs_fixed(room, fixed));
        }
        Ok((status, local.1))
    }
}

/// A room's fleet settings from the core's view of it.
fn settings_of(view: &Value, node: &str) -> FleetRoom {
    FleetRoom {
        plain_legs: view["plain_legs"].as_bool().unwrap_or(false),
        created_at: view["created_at"].as_str().unwrap_or_default().to_owned(),
        by: node.to_owned(),
    }
}

fn plain_legs_fixed(room: &str, fixed: bool) -> ApiError {
    ApiError::new(
        Code::PlainLegsFixed,
        format!("room {room} exists with plain_legs {fixed}; it is set when a room is created"),
    )
}
