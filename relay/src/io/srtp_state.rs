//! A worker's SRTP state for the WebRTC legs it serves: one `srtp::Ingress` and one
//! `srtp::Egress` sibling per connected leg session, created when an update brings the leg's keys
//! and dropped when the leg goes, so nothing is allocated per packet. The kernel hashes a leg's
//! 4-tuple to one worker, so its Ingress (ROC, replay window) is used by that worker alone; the
//! Egress siblings share the leg's SRTCP index, and a publisher's SSRC is sealed by the worker
//! that receives the publisher.

use std::collections::HashMap;
use std::sync::Arc;

use crate::route::{RoomId, SrtpLeg, Table, Update};
use crate::srtp::{Egress, Ingress, Keys};

/// A worker's SRTP state, by leg session.
#[derive(Default)]
pub(crate) struct SrtpState {
    pub(crate) ingress: HashMap<u64, Ingress>,
    pub(crate) egress: HashMap<u64, Egress>,
    /// Where a WebRTC leg's datagram is unprotected: the receive buffer is the backend's.
    pub(crate) scratch: Box<[u8]>,
}

impl SrtpState {
    pub(crate) fn new() -> Self {
        Self {
            ingress: HashMap::new(),
            egress: HashMap::new(),
            scratch: vec![0; super::SLOT_SIZE].into_boxed_slice(),
        }
    }

    /// The keyed sessions of the members an update touches, as the table holds them now.
    pub(crate) fn sessions(table: &Table, update: &Update) -> Vec<(u64, Arc<SrtpLeg>)> {
        let (id, slots): (RoomId, Option<&[u16]>) = match update {
            Update::Room { id, slots, .. } => (*id, Some(slots)),
            Update::RemoveRoom(id) => (*id, None),
            Update::Peers(_) => return Vec::new(),
        };
        let Some(room) = table.room(id) else {
            return Vec::new();
        };
        let all: Vec<u16>;
        let slots = match slots {
            Some(s) => s,
            None => {
                all = room.slots().collect();
                &all
            }
        };
        let mut out = Vec::new();
        for &s in slots {
            let Some(legs) = room.member(s).and_then(|m| m.webrtc.as_ref()) else {
                continue;
            };
            for session in legs.publish.iter().chain(legs.subscribe.as_ref()) {
                if let Some(k) = &session.srtp {
                    out.push((session.id, k.clone()));
                }
            }
        }
        out
    }

    /// After `table` applied an update: creates the state of sessions it brought, drops that of
    /// sessions it took away (`before`: the sessions of the same members before).
    pub(crate) fn settle(
        &mut self,
        before: Vec<(u64, Arc<SrtpLeg>)>,
        now: Vec<(u64, Arc<SrtpLeg>)>,
    ) {
        for (id, _) in &before {
            if !now.iter().any(|(n, _)| n == id) {
                self.ingress.remove(id);
                self.egress.remove(id);
            }
        }
        for (id, leg) in now {
            if self.ingress.contains_key(&id) {
                continue;
            }
            // Keys that do not expand were refused by the DTLS thread already; skip the leg.
            if let Ok(keys) = Keys::new(&leg.remote) {
                self.ingress.insert(id, Ingress::new(keys));
                self.egress.insert(id, leg.egress.sibling());
            }
        }
    }
}
