//! The per-worker routing table and the per-packet decision.
//!
//! Calling order for a worker: `apply` every pending [`Update`] between batches, then `route` each
//! datagram of the batch. `route` never allocates, locks or copies: it looks up the source address
//! once, finds the track, and hands each destination to the caller's `emit`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::SockAddr;

use super::ice::{self, Latch, StunAction, StunGuard};
use super::room::{Member, Room};
use crate::packet::{demux, rtcp, rtp};

/// A room handle assigned by the control thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

/// A change to a worker's table.
#[derive(Clone, Debug)]
pub enum Update {
    /// Install or replace a compiled room.
    Room(RoomId, Arc<Room>),
    /// Remove a room and all its members' addresses.
    RemoveRoom(RoomId),
}

/// Why a datagram was not forwarded. Every dropped datagram counts under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The source address belongs to no participant.
    UnknownSource,
    /// RTP, or sender RTCP, with an SSRC the participant did not declare.
    UndeclaredSsrc,
    /// RTP that does not parse.
    MalformedRtp,
    /// RTCP that does not parse.
    MalformedRtcp,
    /// A DTLS record: the relay does not terminate DTLS.
    Dtls,
    /// STUN that the relay does not answer.
    Stun,
    /// Neither RTP, RTCP, STUN nor DTLS (RFC 7983).
    NotMedia,
    /// Larger than a receive buffer.
    Oversize,
    /// A drop rule stops it (also counted on the rule).
    Rule,
    /// Receiver feedback that names no SSRC of an allowed publisher.
    NoRoute,
    /// STUN that does not parse, or whose FINGERPRINT is wrong.
    StunMalformed,
    /// A Binding request without USERNAME or with a MESSAGE-INTEGRITY that does not verify.
    StunUnauthorized,
    /// A Binding request whose ufrag belongs to no participant.
    StunUnknownUser,
    /// A Binding request over its source's or the worker's rate of HMAC checks.
    StunRateLimited,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [Self; 14] = [
        Self::UnknownSource,
        Self::UndeclaredSsrc,
        Self::MalformedRtp,
        Self::MalformedRtcp,
        Self::Dtls,
        Self::Stun,
        Self::NotMedia,
        Self::Oversize,
        Self::Rule,
        Self::NoRoute,
        Self::StunMalformed,
        Self::StunUnauthorized,
        Self::StunUnknownUser,
        Self::StunRateLimited,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::UndeclaredSsrc => "undeclared_ssrc",
            Self::MalformedRtp => "malformed_rtp",
            Self::MalformedRtcp => "malformed_rtcp",
            Self::Dtls => "dtls",
            Self::Stun => "stun",
            Self::NotMedia => "not_media",
            Self::Oversize => "oversize",
            Self::Rule => "rule",
            Self::NoRoute => "no_route",
            Self::StunMalformed => "stun_malformed",
            Self::StunUnauthorized => "stun_unauthorized",
            Self::StunUnknownUser => "stun_unknown_user",
            Self::StunRateLimited => "stun_rate_limited",
        }
    }
}

/// The outcome of routing one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sent to this many destinations (possibly zero: nobody subscribed).
    Forward(usize),
    /// A STUN message for the caller to handle.
    Stun,
    /// Not forwarded.
    Drop(DropReason),
}

/// Upper bound on distinct publishers one feedback datagram is sent to.
const MAX_FEEDBACK_TARGETS: usize = 16;

/// One worker's routing table.
#[derive(Debug, Default)]
pub struct Table {
    rooms: HashMap<RoomId, Arc<Room>>,
    // Keys come from the network: std's keyed SipHash resists collision floods.
    by_addr: HashMap<SocketAddr, (Arc<Room>, u16)>,
    by_ufrag: HashMap<Box<[u8]>, (RoomId, Arc<Room>, u16)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one update. Costs O(members of the room it touches).
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Room(id, room) => {
                self.unindex(id);
                for (i, m) in room.members.iter().enumerate() {
                    if let Some(addr) = m.addr {
                        self.by_addr.insert(addr, (room.clone(), i as u16));
                    }
                    if let Some(ice) = &m.ice {
                        let key: Box<[u8]> = ice.ufrag.as_bytes().into();
                        self.by_ufrag.insert(key, (id, room.clone(), i as u16));
                    }
                }
                self.rooms.insert(id, room);
            }
            Update::RemoveRoom(id) => {
                self.unindex(id);
                self.rooms.remove(&id);
            }
        }
    }

    fn unindex(&mut self, id: RoomId) {
        let Some(old) = self.rooms.get(&id) else {
            return;
        };
        for m in old.members.iter() {
            if let Some(addr) = m.addr
                && self
                    .by_addr
                    .get(&addr)
                    .is_some_and(|(r, _)| Arc::ptr_eq(r, old))
            {
                self.by_addr.remove(&addr);
            }
            if let Some(ice) = &m.ice
                && self
                    .by_ufrag
                    .get(ice.ufrag.as_bytes())
                    .is_some_and(|(_, r, _)| Arc::ptr_eq(r, old))
            {
                self.by_ufrag.remove(ice.ufrag.as_bytes());
            }
        }
    }

    /// The number of rooms installed.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Answers a STUN datagram (after [`Table::route`] said [`Verdict::Stun`]): writes the
    /// response into `out` and says whether the participant's address must be latched.
    ///
    /// `now_ms` is a monotonic millisecond clock read once per batch, for the rate limit.
    pub fn stun(
        &self,
        worker: usize,
        now_ms: u64,
        guard: &mut StunGuard,
        src: &SocketAddr,
        buf: &[u8],
        out: &mut [u8],
    ) -> StunAction {
        let msg = match ice::request(buf) {
            Ok(m) => m,
            Err(reason) => return StunAction::Drop(reason),
        };
        let Some(username) = msg.username() else {
            return StunAction::Drop(DropReason::StunUnauthorized);
        };
        let Some((room_id, room, index)) = self.by_ufrag.get(ice::local_ufrag(username)) else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        if !ice::allow(guard, now_ms, src) {
            return StunAction::Drop(DropReason::StunRateLimited);
        }
        let member = &room.members[usize::from(*index)];
        let Some(creds) = &member.ice else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        match ice::answer(&msg, *src, creds.pwd.as_bytes(), out) {
            Ok(len) => {
                member.counters.stun_ok.add(worker, 1);
                let latch =
                    (member.addr != Some(*src) && msg.ice_controlled().is_none()).then(|| Latch {
                        room: *room_id,
                        participant: member.name.clone(),
                        addr: *src,
                    });
                StunAction::Reply { len, latch }
            }
            Err(reason) => StunAction::Drop(reason),
        }
    }

    /// Decides where one datagram goes and calls `emit` once per destination.
    ///
    /// `worker` selects the counter cells to add to.
    #[inline]
    pub fn route(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        mut emit: impl FnMut(&SockAddr),
    ) -> Verdict {
        let kind = demux::classify(buf);
        match kind {
            demux::Kind::Rtp | demux::Kind::Rtcp => {}
            demux::Kind::Stun => return Verdict::Stun,
            demux::Kind::Dtls => return Verdict::Drop(DropReason::Dtls),
            demux::Kind::Other => return Verdict::Drop(DropReason::NotMedia),
        }
        let Some((room, index)) = self.by_addr.get(src) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        let index = usize::from(*index);
        let member = &room.members[index];
        member.counters.packets_in.add(worker, 1);
        member.counters.bytes_in.add(worker, buf.len() as u64);
        let verdict = if kind == demux::Kind::Rtp {
            route_rtp(worker, room, member, buf, &mut emit)
        } else {
            route_rtcp(worker, room, index, buf, &mut emit)
        };
        if matches!(verdict, Verdict::Drop(_)) {
            member.counters.packets_dropped.add(worker, 1);
        }
        verdict
    }
}

fn route_rtp(
    worker: usize,
    room: &Room,
    member: &Member,
    buf: &[u8],
    emit: &mut impl FnMut(&SockAddr),
) -> Verdict {
    let Ok(packet) = rtp::Packet::new_checked(buf) else {
        return Verdict::Drop(DropReason::MalformedRtp);
    };
    let Some(track) = member.track(packet.ssrc()) else {
        return Verdict::Drop(DropReason::UndeclaredSsrc);
    };
    fan_out(worker, room, track, emit)
}

fn fan_out(
    worker: usize,
    room: &Room,
    track: &super::room::Track,
    emit: &mut impl FnMut(&SockAddr),
) -> Verdict {
    if let Some(rule) = &track.send_block {
        rule.dropped_send.add(worker, 1);
        return Verdict::Drop(DropReason::Rule);
    }
    for (rule, n) in track.receive_blocks.iter() {
        rule.dropped_receive.add(worker, *n);
    }
    let mut sent = 0;
    for &r in track.fanout.iter() {
        if let Some(dest) = &room.members[usize::from(r)].sockaddr {
            emit(dest);
            sent += 1;
        }
    }
    Verdict::Forward(sent)
}

fn route_rtcp(
    worker: usize,
    room: &Room,
    index: usize,
    buf: &[u8],
    emit: &mut impl FnMut(&SockAddr),
) -> Verdict {
    let member = &room.members[index];
    let Ok(route) = rtcp::classify(buf) else {
        return Verdict::Drop(DropReason::MalformedRtcp);
    };
    match route {
        // Sender reports follow the sender's media, rules included; report blocks in the same
        // compound also go back to the publishers they name, once each.
        rtcp::Route::Sender {
            sender,
            also_feedback,
        } => {
            let Some(track) = member.track(sender) else {
                return Verdict::Drop(DropReason::UndeclaredSsrc);
            };
            let verdict = fan_out(worker, room, track, emit);
            let Some(feedback) = also_feedback else {
                return verdict;
            };
            let skip = if verdict == Verdict::Drop(DropReason::Rule) {
                &[][..]
            } else {
                &track.fanout[..]
            };
            let (sent, _) = route_feedback(worker, room, index, feedback, skip, emit);
            match verdict {
                Verdict::Forward(n) => Verdict::Forward(n + sent),
                _ if sent > 0 => Verdict::Forward(sent),
                v => v,
            }
        }
        rtcp::Route::Feedback { feedback, .. } => {
            match route_feedback(worker, room, index, feedback, &[], emit) {
                (0, true) => Verdict::Drop(DropReason::Rule),
                (0, false) => Verdict::Drop(DropReason::NoRoute),
                (sent, _) => Verdict::Forward(sent),
            }
        }
        rtcp::Route::Encrypted { .. } => {
            let mut sent = 0;
            for &r in member.srtcp_fanout.iter() {
                if let Some(dest) = &room.members[usize::from(r)].sockaddr {
                    emit(dest);
                    sent += 1;
                }
            }
            Verdict::Forward(sent)
        }
    }
}

/// Sends receiver feedback from member `index` to the publishers of the media SSRCs it names,
/// once per publisher, skipping those in `skip`. Returns (sent, whether a rule stopped some).
fn route_feedback(
    worker: usize,
    room: &Room,
    index: usize,
    feedback: rtcp::Feedback<'_>,
    skip: &[u16],
    emit: &mut impl FnMut(&SockAddr),
) -> (usize, bool) {
    let member = &room.members[index];
    let mut targets = [0u16; MAX_FEEDBACK_TARGETS];
    let mut n = 0;
    let mut blocked = false;
    for ssrc in feedback.media_ssrcs() {
        let Some(&(publisher, t)) = room.ssrcs.get(&ssrc) else {
            continue;
        };
        let p = usize::from(publisher);
        let owner = &room.members[p];
        let kind = owner.tracks[usize::from(t)].kind.index();
        // Feedback travels against the media flow: it passes only where that flow is allowed,
        // and a rule on either end stops it.
        if p == index
            || !owner.is_subscriber(index)
            || targets[..n].contains(&publisher)
            || skip.contains(&publisher)
        {
            continue;
        }
        let rule = member.blocks.send[kind]
            .as_ref()
            .map(|r| &r.dropped_send)
            .or(member.blocks.receive[kind]
                .as_ref()
                .map(|r| &r.dropped_receive))
            .or(owner.blocks.send[kind].as_ref().map(|r| &r.dropped_send));
        if let Some(counter) = rule {
            counter.add(worker, 1);
            blocked = true;
            continue;
        }
        if n == MAX_FEEDBACK_TARGETS {
            break;
        }
        targets[n] = publisher;
        n += 1;
    }
    let mut sent = 0;
    for &p in &targets[..n] {
        if let Some(dest) = &room.members[usize::from(p)].sockaddr {
            emit(dest);
            sent += 1;
        }
    }
    (sent, blocked)
}
