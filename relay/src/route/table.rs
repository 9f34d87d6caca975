//! The per-worker routing table and the per-packet decision.
//!
//! Calling order for a worker: `apply` every pending [`Update`] between batches, then `route` each
//! datagram of the batch. `route` never allocates, locks or copies: it looks up the source address
//! once, finds the track, and hands each destination to the caller's `emit`.
//!
//! The table holds each room's snapshot (`Arc<Room>`, shared with the other workers) and three
//! indexes of its own: source address and ICE ufrag to (room, slot), and per room SSRC to (slot,
//! track) for receiver feedback. An update names the slots that changed, so applying it costs
//! O(those slots), whatever the size of the room.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::SockAddr;

use super::ice::{self, Latch, StunAction, StunGuard};
use super::leg::{DtlsLeg, Leg};
use super::room::{Member, Room};
use super::trunk::{Local, Peers};
use crate::packet::rtp::Ssrc;
use crate::packet::{demux, rtcp, rtp, trunk};

/// A room handle assigned by the control thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

/// A change to a worker's table.
#[derive(Clone, Debug)]
pub enum Update {
    /// Install a room's next snapshot.
    Room {
        /// The room.
        id: RoomId,
        /// Its snapshot, shared by every worker.
        room: Arc<Room>,
        /// The slots whose member differs from the snapshot installed before (sorted). A room
        /// new to the worker is indexed whole.
        slots: Arc<[u16]>,
    },
    /// Remove a room and all its members' addresses.
    RemoveRoom(RoomId),
    /// Replace the fleet's peer relays (fleet mode; published when the node list changes).
    Peers(Arc<Peers>),
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
    /// A DTLS record from anything but a latched WebRTC leg.
    Dtls,
    /// STUN that the relay does not answer.
    Stun,
    /// DTLS from a WebRTC leg that the DTLS thread's queue had no room for.
    DtlsQueueFull,
    /// SRTP or SRTCP from a WebRTC leg that did not unprotect for another reason than the two
    /// below (malformed, too short) or came before the leg's keys: never forwarded.
    Srtp,
    /// SRTP or SRTCP from a WebRTC leg whose authentication tag did not verify (forged, or
    /// keyed for another session): never forwarded.
    SrtpAuth,
    /// SRTP or SRTCP from a WebRTC leg already received, or older than the replay window:
    /// never forwarded.
    SrtpReplay,
    /// A copy for a WebRTC receiver that could not be sealed (an index already sealed for that
    /// leg, a full SSRC table): counted per copy.
    SrtpEgress,
    /// A copy of a WebRTC participant's media withheld from a plain receiver (the room has no
    /// `plain_legs`): counted per copy.
    PlainLegs,
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
    /// The relay is fenced from its fleet (lease lost or not caught up with the rules): it
    /// forwards and answers nothing.
    Fenced,
    /// A datagram on the trunk port from an address that is no live peer's registered trunk
    /// address, or whose header names another origin or an old epoch of that peer.
    TrunkUnknownPeer,
    /// A trunk datagram whose header does not parse (`packet::trunk`).
    TrunkMalformed,
    /// A trunk datagram from a peer whose sender is not a member of a room here (not yet
    /// known, or gone), or is in a room of another number.
    TrunkUnknownSender,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [Self; 24] = [
        Self::UnknownSource,
        Self::UndeclaredSsrc,
        Self::MalformedRtp,
        Self::MalformedRtcp,
        Self::Dtls,
        Self::Stun,
        Self::DtlsQueueFull,
        Self::Srtp,
        Self::SrtpAuth,
        Self::SrtpReplay,
        Self::SrtpEgress,
        Self::PlainLegs,
        Self::NotMedia,
        Self::Oversize,
        Self::Rule,
        Self::NoRoute,
        Self::StunMalformed,
        Self::StunUnauthorized,
        Self::StunUnknownUser,
        Self::StunRateLimited,
        Self::Fenced,
        Self::TrunkUnknownPeer,
        Self::TrunkMalformed,
        Self::TrunkUnknownSender,
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
            Self::DtlsQueueFull => "dtls_queue_full",
            Self::Srtp => "srtp",
            Self::SrtpAuth => "srtp_auth",
            Self::SrtpReplay => "srtp_replay",
            Self::SrtpEgress => "srtp_egress",
            Self::PlainLegs => "plain_legs",
            Self::Stun => "stun",
            Self::NotMedia => "not_media",
            Self::Oversize => "oversize",
            Self::Rule => "rule",
            Self::NoRoute => "no_route",
            Self::StunMalformed => "stun_malformed",
            Self::StunUnauthorized => "stun_unauthorized",
            Self::StunUnknownUser => "stun_unknown_user",
            Self::StunRateLimited => "stun_rate_limited",
            Self::Fenced => "fenced",
            Self::TrunkUnknownPeer => "trunk_unknown_peer",
            Self::TrunkMalformed => "trunk_malformed",
            Self::TrunkUnknownSender => "trunk_unknown_sender",
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
    /// A DTLS datagram from a latched WebRTC leg, for the DTLS thread ([`Table::dtls_leg`]).
    Dtls,
    /// Not forwarded.
    Drop(DropReason),
}

/// Upper bound on distinct publishers one feedback datagram is sent to.
const MAX_FEEDBACK_TARGETS: usize = 16;

/// One worker's routing table.
#[derive(Debug, Default)]
pub struct Table {
    /// Installed rooms; an index here is a room's handle in the other indexes.
    rooms: Vec<Option<Installed>>,
    free: Vec<u32>,
    ids: HashMap<RoomId, u32>,
    // Keys come from the network: std's keyed SipHash resists collision floods.
    by_addr: HashMap<SocketAddr, (u32, u16, Leg)>,
    by_ufrag: HashMap<Box<[u8]>, (u32, u16, Leg)>,
    /// WebRTC members indexed: while there are none, a media packet costs no second lookup.
    webrtc_members: usize,
    /// Members that live on other relays, by (their relay's node number, participant number).
    by_remote: HashMap<(u16, u32), (u32, u16)>,
    /// The fleet's other relays (empty outside fleet mode).
    peers: Arc<Peers>,
}

/// A room in a worker's table.
#[derive(Debug)]
struct Installed {
    id: RoomId,
    room: Arc<Room>,
    /// Media SSRC to (slot, track index), for routing receiver feedback.
    ssrcs: Ssrcs,
}

type Ssrcs = HashMap<Ssrc, (u16, u16)>;

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one update. Costs O(slots it names), or O(members) to install or remove a room.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Room { id, room, slots } => {
                let (index, mut installed, fresh) = match self.ids.get(&id) {
                    Some(&i) => match self.rooms[i as usize].take() {
                        Some(r) => (i, r, false),
                        None => (i, Installed::new(id), true),
                    },
                    None => {
                        let i = self.free.pop().unwrap_or_else(|| {
                            self.rooms.push(None);
                            (self.rooms.len() - 1) as u32
                        });
                        self.ids.insert(id, i);
                        (i, Installed::new(id), true)
                    }
                };
                let old = std::mem::replace(&mut installed.room, room);
                let all: Vec<u16>;
                let slots: &[u16] = if fresh {
                    all = installed.room.slots().collect();
                    &all
                } else {
                    &slots
                };
                for &s in slots {
                    if let Some(m) = old.member(s) {
                        self.unindex(index, &mut installed.ssrcs, s, m);
                    }
                }
                for &s in slots {
                    if let Some(m) = installed.room.member(s) {
                        self.index(index, &mut installed.ssrcs, s, m);
                    }
                }
                self.rooms[index as usize] = Some(installed);
            }
            Update::Peers(peers) => self.peers = peers,
            Update::RemoveRoom(id) => {
                let Some(index) = self.ids.remove(&id) else {
                    return;
                };
                if let Some(mut installed) = self.rooms[index as usize].take() {
                    let room = installed.room.clone();
                    for s in room.slots() {
                        if let Some(m) = room.member(s) {
                            self.unindex(index, &mut installed.ssrcs, s, m);
                        }
                    }
                }
                self.free.push(index);
            }
        }
    }

    fn index(&mut self, index: u32, ssrcs: &mut Ssrcs, slot: u16, m: &Member) {
        self.webrtc_members += usize::from(m.webrtc.is_some());
        for (leg, addr, ice) in legs(m) {
            if let Some(addr) = addr {
                self.by_addr.insert(addr, (index, slot, leg));
            }
            if let Some(ice) = ice {
                self.by_ufrag
                    .insert(ice.ufrag.as_bytes().into(), (index, slot, leg));
            }
        }
        for (t, track) in m.tracks.iter().enumerate() {
            ssrcs.insert(track.ssrc, (slot, t as u16));
        }
        if let Some(peer) = m.peer {
            self.by_remote.insert((peer, m.number), (index, slot));
        }
    }

    /// Removes what `m` in `slot` put in the indexes; entries that moved to another member or
    /// room since (an address taken over in the same round) stay.
    fn unindex(&mut self, index: u32, ssrcs: &mut Ssrcs, slot: u16, m: &Member) {
        self.webrtc_members = self
            .webrtc_members
            .saturating_sub(usize::from(m.webrtc.is_some()));
        for (leg, addr, ice) in legs(m) {
            if let Some(addr) = addr
                && self.by_addr.get(&addr) == Some(&(index, slot, leg))
            {
                self.by_addr.remove(&addr);
            }
            if let Some(ice) = ice
                && self.by_ufrag.get(ice.ufrag.as_bytes()) == Some(&(index, slot, leg))
            {
                self.by_ufrag.remove(ice.ufrag.as_bytes());
            }
        }
        for track in m.tracks.iter() {
            if ssrcs.get(&track.ssrc).is_some_and(|(s, _)| *s == slot) {
                ssrcs.remove(&track.ssrc);
            }
        }
        if let Some(peer) = m.peer
            && self.by_remote.get(&(peer, m.number)) == Some(&(index, slot))
        {
            self.by_remote.remove(&(peer, m.number));
        }
    }

    /// The fleet's peer relays this worker forwards with.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// The number of rooms installed.
    pub fn rooms(&self) -> usize {
        self.ids.len()
    }

    /// The snapshot of room `id` this worker forwards with.
    pub fn room(&self, id: RoomId) -> Option<&Arc<Room>> {
        let i = *self.ids.get(&id)?;
        self.installed(i).map(|r| &r.room)
    }

    #[inline]
    fn installed(&self, index: u32) -> Option<&Installed> {
        self.rooms.get(index as usize)?.as_ref()
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
        let Some(&(index, slot, leg)) = self.by_ufrag.get(ice::local_ufrag(username)) else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        if !ice::allow(guard, now_ms, src) {
            return StunAction::Drop(DropReason::StunRateLimited);
        }
        let Some(installed) = self.installed(index) else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        let Some(member) = installed.room.member(slot) else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        let Some((_, current, Some(creds))) = legs(member).find(|(l, _, _)| *l == leg) else {
            return StunAction::Drop(DropReason::StunUnknownUser);
        };
        match ice::answer(&msg, *src, creds.pwd.as_bytes(), out) {
            Ok(len) => {
                member.counters.stun_ok().add(worker, 1);
                // A WebRTC leg binds only the pair the browser nominates (RFC 8445 §7.3.1.5);
                // its other checks are answered (consent freshness) and change nothing.
                let nominated = member.webrtc.is_none() || msg.use_candidate();
                let latch = (current != Some(*src) && msg.ice_controlled().is_none() && nominated)
                    .then(|| Latch {
                        room: installed.id,
                        participant: member.name.clone(),
                        addr: *src,
                        leg,
                    });
                StunAction::Reply { len, latch }
            }
            Err(reason) => StunAction::Drop(reason),
        }
    }

    /// The WebRTC leg whose latched address is `src`, with its DTLS session: where a DTLS
    /// datagram from `src` belongs. `None` for any other source.
    pub fn dtls_leg(&self, src: &SocketAddr) -> Option<DtlsLeg> {
        let &(index, slot, leg) = self.by_addr.get(src)?;
        let installed = self.installed(index)?;
        let member = installed.room.member(slot)?;
        let legs = member.webrtc.as_ref()?;
        let session = match leg {
            Leg::Main => legs.publish.clone(),
            Leg::Subscribe => legs.subscribe.clone(),
        }?;
        Some(DtlsLeg {
            room: installed.id,
            participant: member.name.clone(),
            leg,
            session,
        })
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
        self.route_legs(worker, src, buf, |d, _| emit(d))
    }

    /// The WebRTC legs of the member whose address is `src` (publish or subscribe leg), with
    /// the leg's session: where media from `src` must be unprotected first.
    #[inline]
    pub fn webrtc_source(&self, src: &SocketAddr) -> Option<(&Arc<super::Legs>, &super::Session)> {
        if self.webrtc_members == 0 {
            return None;
        }
        let &(index, slot, leg) = self.by_addr.get(src)?;
        let member = self.installed(index)?.room.member(slot)?;
        let legs = member.webrtc.as_ref()?;
        let session = match leg {
            Leg::Main => legs.publish.as_ref(),
            Leg::Subscribe => legs.subscribe.as_ref(),
        }?;
        Some((legs, session))
    }

    /// As [`Table::route`], and `emit` also gets the receiver's WebRTC legs (`None` for a plain
    /// receiver): a WebRTC receiver gets an SRTP copy sealed for the leg at that address.
    #[inline]
    pub fn route_legs(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        emit: impl FnMut(&SockAddr, Option<&Arc<super::Legs>>),
    ) -> Verdict {
        self.route_sink(worker, src, buf, &mut LocalOnly(emit))
    }

    /// As [`Table::route_legs`], in fleet mode: `emit` also gets each copy for a peer relay
    /// ([`Dest::Trunk`]), with the 16-byte trunk header to put in front of the datagram (counted
    /// as sent to that peer). A local track goes once to each peer with a member allowed to receive it;
    /// feedback about a remote publisher's SSRC goes once to that publisher's relay.
    #[inline]
    pub fn route_fleet(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        mut emit: impl FnMut(Dest<'_>),
    ) -> Verdict {
        match self.peers.local() {
            Some(local) => self.route_sink(
                worker,
                src,
                buf,
                &mut Trunked {
                    emit,
                    peers: &self.peers,
                    local,
                    worker,
                },
            ),
            None => self.route_sink(
                worker,
                src,
                buf,
                &mut LocalOnly(|d: &SockAddr, l: Option<&Arc<super::Legs>>| {
                    emit(Dest::Local(d, l))
                }),
            ),
        }
    }

    #[inline]
    fn route_sink(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        sink: &mut impl Sink,
    ) -> Verdict {
        let kind = demux::classify(buf);
        match kind {
            demux::Kind::Rtp | demux::Kind::Rtcp => {}
            demux::Kind::Stun => return Verdict::Stun,
            demux::Kind::Dtls => {
                return match self.dtls_leg(src) {
                    Some(_) => Verdict::Dtls,
                    None => Verdict::Drop(DropReason::Dtls),
                };
            }
            demux::Kind::Other => return Verdict::Drop(DropReason::NotMedia),
        }
        let Some(&(index, slot, _leg)) = self.by_addr.get(src) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        let Some(installed) = self.installed(index) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        let Some(member) = installed.room.member(slot) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        self.route_member(worker, installed, slot, member, kind, buf, sink)
    }

    /// Routes a datagram that came in on the trunk port from `src`: accepted only from a live
    /// peer's registered trunk address, with that peer's node number and epoch in a header that
    /// parses; its sender is found by (origin, participant number) among this relay's rooms.
    /// `emit` gets local receivers only: a trunk packet never goes to another trunk (split
    /// horizon). `emit` is given the inner datagram's destinations; the caller sends the bytes
    /// after the header.
    #[inline]
    pub fn route_trunk(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        emit: impl FnMut(&SockAddr, Option<&Arc<super::Legs>>),
    ) -> Verdict {
        let Some(peer) = self.peers.by_addr(src) else {
            return Verdict::Drop(DropReason::TrunkUnknownPeer);
        };
        let Ok(packet) = trunk::Packet::new_checked(buf) else {
            return Verdict::Drop(DropReason::TrunkMalformed);
        };
        if packet.origin() != peer.node || packet.epoch() != peer.epoch {
            return Verdict::Drop(DropReason::TrunkUnknownPeer);
        }
        peer.counters.received.add(worker, 1);
        let Some(&(index, slot)) = self.by_remote.get(&(peer.node.0, packet.sender().0)) else {
            return Verdict::Drop(DropReason::TrunkUnknownSender);
        };
        let Some(installed) = self.installed(index) else {
            return Verdict::Drop(DropReason::TrunkUnknownSender);
        };
        let Some(member) = installed.room.member(slot) else {
            return Verdict::Drop(DropReason::TrunkUnknownSender);
        };
        if installed.room.number != packet.room().0 {
            return Verdict::Drop(DropReason::TrunkUnknownSender);
        }
        let kind = match packet.content() {
            trunk::Content::Rtp => demux::Kind::Rtp,
            trunk::Content::Rtcp => demux::Kind::Rtcp,
        };
        let inner = packet.payload();
        self.route_member(
            worker,
            installed,
            slot,
            member,
            kind,
            inner,
            &mut LocalOnly(emit),
        )
    }

    /// Routes RTP or RTCP from `member` (in `slot` of `installed`), counting it on the member.
    #[allow(
        clippy::too_many_arguments,
        reason = "the routing state of one datagram"
    )]
    #[inline]
    fn route_member(
        &self,
        worker: usize,
        installed: &Installed,
        slot: u16,
        member: &Member,
        kind: demux::Kind,
        buf: &[u8],
        sink: &mut impl Sink,
    ) -> Verdict {
        member.counters.packets_in().add(worker, 1);
        member.counters.bytes_in().add(worker, buf.len() as u64);
        let from = Sender {
            room: &installed.room,
            slot,
            member,
        };
        let verdict = if kind == demux::Kind::Rtp {
            route_rtp(worker, &from, buf, sink)
        } else {
            route_rtcp(worker, installed, &from, buf, sink)
        };
        if matches!(verdict, Verdict::Drop(_)) {
            member.counters.packets_dropped().add(worker, 1);
        }
        verdict
    }
}

/// Where the routing decision sends copies: local receivers, and in fleet mode peer relays.
trait Sink {
    /// A local receiver (its WebRTC legs, if it has them).
    fn local(&mut self, dest: &SockAddr, legs: Option<&Arc<super::Legs>>);
    /// Whether copies for peer relays are wanted at all (not for trunk ingress, nor outside
    /// fleet mode).
    fn trunks(&self) -> bool;
    /// A copy for the peer relay with node number `peer`, with the header's fields.
    fn trunk(&mut self, peer: u16, room: u32, sender: u32, rtcp: bool, media: trunk::Media);
}

/// Local receivers only.
struct LocalOnly<F>(F);

impl<F: FnMut(&SockAddr, Option<&Arc<super::Legs>>)> Sink for LocalOnly<F> {
    #[inline]
    fn local(&mut self, dest: &SockAddr, legs: Option<&Arc<super::Legs>>) {
        (self.0)(dest, legs);
    }

    #[inline]
    fn trunks(&self) -> bool {
        false
    }

    #[inline]
    fn trunk(&mut self, _: u16, _: u32, _: u32, _: bool, _: trunk::Media) {}
}

/// Where [`Table::route_fleet`] sends one copy.
#[derive(Clone, Copy, Debug)]
pub enum Dest<'a> {
    /// A local receiver, with its WebRTC legs if it has them.
    Local(&'a SockAddr, Option<&'a Arc<super::Legs>>),
    /// A peer relay's trunk address, and the header to put in front of the datagram.
    Trunk(&'a SockAddr, &'a [u8; trunk::HEADER_LEN]),
}

/// Local receivers and peer relays: builds each trunk copy's header (on the stack) and counts it.
struct Trunked<'p, F> {
    emit: F,
    peers: &'p Peers,
    local: Local,
    worker: usize,
}

impl<F> Sink for Trunked<'_, F>
where
    F: FnMut(Dest<'_>),
{
    #[inline]
    fn local(&mut self, dest: &SockAddr, legs: Option<&Arc<super::Legs>>) {
        (self.emit)(Dest::Local(dest, legs));
    }

    #[inline]
    fn trunks(&self) -> bool {
        true
    }

    #[inline]
    fn trunk(&mut self, peer: u16, room: u32, sender: u32, rtcp: bool, media: trunk::Media) {
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        let header = trunk::Header {
            content: if rtcp {
                trunk::Content::Rtcp
            } else {
                trunk::Content::Rtp
            },
            media,
            origin: self.local.node,
            room: trunk::RoomNo(room),
            sender: trunk::ParticipantNo(sender),
            epoch: self.local.epoch,
        };
        p.counters.sent.add(self.worker, 1);
        (self.emit)(Dest::Trunk(&p.sockaddr, &header.to_bytes()));
    }
}

/// A member's legs: (which, address, relay-side credentials).
fn legs(m: &Member) -> impl Iterator<Item = (Leg, Option<SocketAddr>, Option<&ice::Credentials>)> {
    let main = (Leg::Main, m.addr, m.ice.as_deref());
    let subscribe = m
        .webrtc
        .as_ref()
        .map(|l| (Leg::Subscribe, l.subscribe_addr, l.subscribe_ice.as_deref()));
    std::iter::once(main).chain(subscribe)
}

impl Installed {
    fn new(id: RoomId) -> Self {
        Self {
            id,
            room: Arc::new(Room::empty()),
            ssrcs: HashMap::new(),
        }
    }
}

/// The member a datagram came from.
struct Sender<'r> {
    room: &'r Room,
    slot: u16,
    member: &'r Member,
}

fn route_rtp(worker: usize, from: &Sender<'_>, buf: &[u8], sink: &mut impl Sink) -> Verdict {
    let Ok(packet) = rtp::Packet::new_checked(buf) else {
        return Verdict::Drop(DropReason::MalformedRtp);
    };
    let Some(track) = from.member.track(packet.ssrc()) else {
        return Verdict::Drop(DropReason::UndeclaredSsrc);
    };
    fan_out(worker, from, track, false, sink)
}

/// Sends a track's packet to its local receivers and, for a local sender in fleet mode, once
/// to each peer relay with a receiver allowed for it. A send rule stops it before either.
#[inline]
fn fan_out(
    worker: usize,
    from: &Sender<'_>,
    track: &super::room::Track,
    rtcp: bool,
    sink: &mut impl Sink,
) -> Verdict {
    if let Some(rule) = &track.send_block {
        rule.dropped_send.add(worker, 1);
        return Verdict::Drop(DropReason::Rule);
    }
    let room = from.room;
    room.count_receive_blocked(worker, from.member, track.kind);
    let mut sent = room.each_receiver(
        worker,
        from.slot,
        from.member,
        track.kind,
        0..room.chunks.len(),
        |r, dest| sink.local(dest, r.webrtc.as_ref()),
    );
    if sink.trunks() && from.member.peer.is_none() {
        let media = match track.kind {
            super::room::MediaKind::Audio => trunk::Media::Audio,
            super::room::MediaKind::Video => trunk::Media::Video,
        };
        sent += room.each_trunk(from.member, track.kind, |peer| {
            sink.trunk(peer, room.number, from.member.number, rtcp, media)
        });
    }
    Verdict::Forward(sent)
}

fn route_rtcp(
    worker: usize,
    installed: &Installed,
    from: &Sender<'_>,
    buf: &[u8],
    sink: &mut impl Sink,
) -> Verdict {
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
            let Some(track) = from.member.track(sender) else {
                return Verdict::Drop(DropReason::UndeclaredSsrc);
            };
            let verdict = fan_out(worker, from, track, true, sink);
            let Some(feedback) = also_feedback else {
                return verdict;
            };
            // Publishers that got the report already are not sent it again.
            let skip = (verdict != Verdict::Drop(DropReason::Rule)).then_some(track.kind);
            let (sent, _) = route_feedback(worker, installed, from, feedback, skip, sink);
            match verdict {
                Verdict::Forward(n) => Verdict::Forward(n + sent),
                _ if sent > 0 => Verdict::Forward(sent),
                v => v,
            }
        }
        rtcp::Route::Feedback { feedback, .. } => {
            match route_feedback(worker, installed, from, feedback, None, sink) {
                (0, true) => Verdict::Drop(DropReason::Rule),
                (0, false) => Verdict::Drop(DropReason::NoRoute),
                (sent, _) => Verdict::Forward(sent),
            }
        }
        rtcp::Route::Encrypted { .. } => Verdict::Forward(from.room.each_flow_peer(
            from.slot,
            from.member,
            |d| sink.local(d, None),
        )),
    }
}

/// Sends receiver feedback from `from` to the publishers of the media SSRCs it names, once per
/// publisher, skipping those that receive `from`'s media of kind `skip` (they got the compound
/// already). Returns (sent, whether a rule stopped some).
fn route_feedback(
    worker: usize,
    installed: &Installed,
    from: &Sender<'_>,
    feedback: rtcp::Feedback<'_>,
    skip: Option<super::room::MediaKind>,
    sink: &mut impl Sink,
) -> (usize, bool) {
    let room = from.room;
    let member = from.member;
    let mut targets = [0u16; MAX_FEEDBACK_TARGETS];
    let mut n = 0;
    let mut blocked = false;
    for ssrc in feedback.media_ssrcs() {
        let Some(&(publisher, t)) = installed.ssrcs.get(&ssrc) else {
            continue;
        };
        let Some(owner) = room.member(publisher) else {
            continue;
        };
        let Some(track) = owner.tracks.get(usize::from(t)) else {
            continue;
        };
        let kind = track.kind.index();
        // Feedback travels against the media flow: it passes only where that flow is allowed,
        // and a rule on either end stops it.
        if publisher == from.slot
            || !member.subscribes(from.slot, publisher)
            || targets[..n].contains(&publisher)
            || skip.is_some_and(|k| room.receives(from.slot, member, k, publisher))
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
    // Publishers on another relay get the feedback through their relay's trunk, once per relay
    // (it routes the datagram to each of its publishers the feedback names).
    let mut peers = [0u16; MAX_FEEDBACK_TARGETS];
    let mut np = 0;
    for &p in &targets[..n] {
        let Some(m) = room.member(p) else { continue };
        if let Some(peer) = m.peer {
            // A sender report's compound already went to that relay with the media fan-out,
            // which routes its report blocks there.
            let reached = skip.is_some_and(|k| room.trunk_reaches(member, k, peer));
            if sink.trunks() && member.peer.is_none() && !reached && !peers[..np].contains(&peer) {
                peers[np] = peer;
                np += 1;
                sink.trunk(
                    peer,
                    room.number,
                    member.number,
                    true,
                    trunk::Media::Unspecified,
                );
                sent += 1;
            }
        } else if let Some(dest) = m.sockaddr.as_ref() {
            sink.local(dest, m.webrtc.as_ref());
            sent += 1;
        }
    }
    (sent, blocked)
}
