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

use super::addr::Addr;
use super::ice::{self, Latch, StunAction, StunGuard};
use super::leg::{DtlsLeg, Leg};
use super::room::{Member, Room};
use super::share::{Emit, Hot, Share, Sink};
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
    // Looked up once per datagram with the source the network gives; only the control thread
    // inserts (addresses signaling set or a STUN check with the right password latched). A
    // seeded foldhash (random per table) costs a fraction of SipHash per lookup; nobody on the
    // network can fill the table with keys of their choosing to make chains long.
    by_addr: FastMap<SocketAddr, (u32, u16, Leg)>,
    by_ufrag: FastMap<Box<[u8]>, (u32, u16, Leg)>,
    /// WebRTC members indexed: while there are none, a media packet costs no second lookup.
    webrtc_members: usize,
    /// Members that live on other relays, by (their relay's node number, participant number).
    by_remote: FastMap<(u16, u32), (u32, u16)>,
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

type Ssrcs = FastMap<Ssrc, (u16, u16)>;

/// A hash map keyed with a seeded foldhash, for the lookups made per datagram.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
        emit: impl FnMut(&Addr),
    ) -> Verdict {
        self.route_source(
            src,
            buf,
            &mut Copies::local(Share::alone(worker), &mut Plain(emit)),
        )
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
    /// receiver): a WebRTC receiver gets an SRTP copy sealed for the leg at that address. Local
    /// receivers only, even in fleet mode.
    #[inline]
    pub fn route_legs(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        emit: impl FnMut(&Addr, Option<&Arc<super::Legs>>),
    ) -> Verdict {
        let mut sink = Emit(emit);
        self.route_source(
            src,
            buf,
            &mut Copies::local(Share::alone(worker), &mut sink),
        )
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
        emit: impl FnMut(Dest<'_>),
    ) -> Verdict {
        self.route_shared(Share::alone(worker), src, buf, &mut Fleet(emit))
    }

    /// Routes the clear copy of a datagram that the WebRTC leg at `src` sent (its SRTP or
    /// SRTCP removed by the caller): `sink` gets each local receiver (`legs` says whether it is
    /// WebRTC; the caller seals a copy for those and applies the room's `plain_legs` to the
    /// others) and, in fleet mode, each copy for a peer relay, exactly as [`Table::route_shared`]
    /// chooses them for a plain sender, with the W bit in the trunk header so that the peer
    /// treats it as WebRTC media. Nothing is handed off: `clear` lives in the caller's scratch
    /// buffer, so this worker sends every copy. [`Sink::trunk`] here means "send `clear` behind
    /// this header", which the caller copies (the received buffer holds the SRTP bytes).
    #[inline]
    pub fn route_clear(
        &self,
        worker: usize,
        src: &SocketAddr,
        clear: &[u8],
        sink: &mut impl Sink,
    ) -> Verdict {
        let mut copies = Copies {
            sink,
            share: Share::alone(worker),
            fleet: self.peers.local().map(|l| (&*self.peers, l)),
            webrtc: true,
        };
        self.route_source(src, clear, &mut copies)
    }

    /// Decides where one datagram goes: queues each destination on `sink`, or, in a room where
    /// `share` applies, the destinations of this worker's chunks and a hand-off to each other
    /// worker (`route::share`). In fleet mode it also queues the copies for peer relays
    /// ([`Sink::trunk`]), all of them on this worker: they are few, one per peer relay. Returns
    /// the verdict; `Forward` counts the sends queued here.
    #[inline]
    pub fn route_shared(
        &self,
        share: Share,
        src: &SocketAddr,
        buf: &[u8],
        sink: &mut impl Sink,
    ) -> Verdict {
        let mut copies = Copies {
            sink,
            share,
            fleet: self.peers.local().map(|l| (&*self.peers, l)),
            webrtc: false,
        };
        self.route_source(src, buf, &mut copies)
    }

    /// Routes a datagram from a participant's address.
    #[inline]
    fn route_source<S: Sink>(
        &self,
        src: &SocketAddr,
        buf: &[u8],
        copies: &mut Copies<'_, S>,
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
        route_member(installed, slot, member, kind, buf, copies)
    }

    /// Routes a datagram that came in on the trunk port from `src`: accepted only from a live
    /// peer's registered trunk address, with that peer's node number and epoch in a header that
    /// parses; its sender is found by (origin, participant number) among this relay's rooms.
    /// `emit` gets local receivers only: a trunk packet never goes to another trunk (split
    /// horizon), and it is never handed off: this worker sends every local copy, in a hot room
    /// too (`route::share`). `emit` is given the inner datagram's destinations; the caller sends
    /// the bytes after the header (sealed for a WebRTC receiver, `legs` set).
    ///
    /// A datagram with the W bit (the clear copy of a WebRTC leg's media on its relay) reaches
    /// plain receivers only in a room with `plain_legs`, as a local WebRTC sender's does; the
    /// copies withheld are not emitted, and returned beside the verdict for the caller to count
    /// (`plain_legs`).
    #[inline]
    pub fn route_trunk(
        &self,
        worker: usize,
        src: &SocketAddr,
        buf: &[u8],
        mut emit: impl FnMut(&Addr, Option<&Arc<super::Legs>>),
    ) -> (Verdict, usize) {
        let drop = |reason| (Verdict::Drop(reason), 0);
        let Some(peer) = self.peers.by_addr(src) else {
            return drop(DropReason::TrunkUnknownPeer);
        };
        let Ok(packet) = trunk::Packet::new_checked(buf) else {
            return drop(DropReason::TrunkMalformed);
        };
        if packet.origin() != peer.node || packet.epoch() != peer.epoch {
            return drop(DropReason::TrunkUnknownPeer);
        }
        peer.counters.received.add(worker, 1);
        let Some(&(index, slot)) = self.by_remote.get(&(peer.node.0, packet.sender().0)) else {
            return drop(DropReason::TrunkUnknownSender);
        };
        let Some(installed) = self.installed(index) else {
            return drop(DropReason::TrunkUnknownSender);
        };
        let Some(member) = installed.room.member(slot) else {
            return drop(DropReason::TrunkUnknownSender);
        };
        if installed.room.number != packet.room().0 {
            return drop(DropReason::TrunkUnknownSender);
        }
        let kind = match packet.content() {
            trunk::Content::Rtp => demux::Kind::Rtp,
            trunk::Content::Rtcp => demux::Kind::Rtcp,
        };
        let inner = packet.payload();
        let withhold = packet.webrtc() && !installed.room.plain_legs;
        let mut withheld = 0;
        let mut sink = Emit(|dest: &Addr, legs: Option<&Arc<super::Legs>>| {
            if legs.is_none() && withhold {
                withheld += 1;
            } else {
                emit(dest, legs);
            }
        });
        let verdict = route_member(
            installed,
            slot,
            member,
            kind,
            inner,
            &mut Copies::local(Share::alone(worker), &mut sink),
        );
        match verdict {
            Verdict::Forward(n) => (Verdict::Forward(n.saturating_sub(withheld)), withheld),
            v => (v, withheld),
        }
    }

    /// Routes worker `share.worker`'s share of a packet that another worker handed it
    /// (`route::share`), with this worker's own snapshot of the room: a rule or a leave that
    /// this worker applied since the hand-off applies to these copies too. Calls `emit` for each
    /// receiver of this worker's chunks.
    #[inline]
    pub fn route_hot(
        &self,
        share: Share,
        hot: &Hot,
        mut emit: impl FnMut(&Addr, Option<&Arc<super::Legs>>),
    ) -> Verdict {
        let Some(room) = self.room(hot.room) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        let Some(member) = room.member(hot.slot) else {
            return Verdict::Drop(DropReason::UnknownSource);
        };
        let Some(track) = member.track(hot.ssrc) else {
            return Verdict::Drop(DropReason::UndeclaredSsrc);
        };
        if let Some(rule) = &track.send_block {
            rule.dropped_send.add(share.worker, 1);
            return Verdict::Drop(DropReason::Rule);
        }
        Verdict::Forward(room.each_in_share(
            share.worker,
            share.worker,
            share.workers,
            hot.slot,
            track.kind,
            &mut emit,
        ))
    }
}

/// Routes RTP or RTCP from `member` (in `slot` of `installed`), counting it on the member.
#[inline]
fn route_member<S: Sink>(
    installed: &Installed,
    slot: u16,
    member: &Member,
    kind: demux::Kind,
    buf: &[u8],
    copies: &mut Copies<'_, S>,
) -> Verdict {
    let worker = copies.share.worker;
    member.counters.packets_in().add(worker, 1);
    member.counters.bytes_in().add(worker, buf.len() as u64);
    let from = Sender {
        id: installed.id,
        room: &installed.room,
        slot,
        member,
    };
    let verdict = if kind == demux::Kind::Rtp {
        route_rtp(&from, buf, copies)
    } else {
        route_rtcp(installed, &from, buf, copies)
    };
    if matches!(verdict, Verdict::Drop(_)) {
        member.counters.packets_dropped().add(worker, 1);
    }
    verdict
}

/// The copies one routing decision makes, over the caller's [`Sink`]: local sends and
/// hand-offs (as `share` allows), and in fleet mode (`fleet`: the peers and this relay's node)
/// copies for peer relays, each with its trunk header built here on the stack and counted.
struct Copies<'a, S> {
    sink: &'a mut S,
    share: Share,
    fleet: Option<(&'a Peers, Local)>,
    /// The datagram is the clear copy of a WebRTC leg's: trunk headers carry the W bit.
    webrtc: bool,
}

impl<'a, S: Sink> Copies<'a, S> {
    /// Local receivers only: no copy for a peer relay.
    fn local(share: Share, sink: &'a mut S) -> Self {
        Self {
            sink,
            share,
            fleet: None,
            webrtc: false,
        }
    }

    /// Queues the datagram for the local receiver at `dest`.
    #[inline]
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<super::Legs>>) {
        self.sink.forward(dest, legs);
    }

    /// Asks worker `to` for its share of `hot` ([`Sink::hand_off`]).
    #[inline]
    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        self.sink.hand_off(to, hot)
    }

    /// Whether copies for peer relays are wanted at all (not for trunk ingress, nor outside
    /// fleet mode).
    #[inline]
    fn trunks(&self) -> bool {
        self.fleet.is_some()
    }

    /// A copy for the peer relay with node number `peer`, with the header's fields.
    #[inline]
    fn trunk(&mut self, peer: u16, room: u32, sender: u32, rtcp: bool, media: trunk::Media) {
        let Some((peers, local)) = self.fleet else {
            return;
        };
        let Some(p) = peers.get(peer) else {
            return;
        };
        let header = trunk::Header {
            content: if rtcp {
                trunk::Content::Rtcp
            } else {
                trunk::Content::Rtp
            },
            media,
            webrtc: self.webrtc,
            origin: local.node,
            room: trunk::RoomNo(room),
            sender: trunk::ParticipantNo(sender),
            epoch: local.epoch,
        };
        p.counters.sent.add(self.share.worker, 1);
        self.sink.trunk(&p.sockaddr, &header.to_bytes());
    }
}

/// Where [`Table::route_fleet`] sends one copy.
#[derive(Clone, Copy, Debug)]
pub enum Dest<'a> {
    /// A local receiver, with its WebRTC legs if it has them.
    Local(&'a Addr, Option<&'a Arc<super::Legs>>),
    /// A peer relay's trunk address, and the header to put in front of the datagram.
    Trunk(&'a Addr, &'a [u8; trunk::HEADER_LEN]),
}

/// A [`Sink`] over a closure that takes each [`Dest`] and never hands off.
struct Fleet<F>(F);

impl<F: FnMut(Dest<'_>)> Sink for Fleet<F> {
    #[inline]
    fn forward(&mut self, dest: &Addr, legs: Option<&Arc<super::Legs>>) {
        (self.0)(Dest::Local(dest, legs));
    }

    fn hand_off(&mut self, _: usize, _: &Hot) -> bool {
        false
    }

    #[inline]
    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]) {
        (self.0)(Dest::Trunk(dest, header));
    }
}

/// A [`Sink`] over a closure that takes each local destination alone (no legs) and never hands
/// off: [`Table::route`]'s, one closure deep so that the fan-out keeps its pointers in registers.
struct Plain<F>(F);

impl<F: FnMut(&Addr)> Sink for Plain<F> {
    #[inline]
    fn forward(&mut self, dest: &Addr, _: Option<&Arc<super::Legs>>) {
        (self.0)(dest);
    }

    fn hand_off(&mut self, _: usize, _: &Hot) -> bool {
        false
    }

    /// Never called: [`Table::route`] sends to local receivers only.
    fn trunk(&mut self, _: &Addr, _: &[u8; trunk::HEADER_LEN]) {}
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
            ssrcs: Ssrcs::default(),
        }
    }
}

/// The member a datagram came from.
struct Sender<'r> {
    id: RoomId,
    room: &'r Room,
    slot: u16,
    member: &'r Member,
}

fn route_rtp<S: Sink>(from: &Sender<'_>, buf: &[u8], sink: &mut Copies<'_, S>) -> Verdict {
    let Ok(packet) = rtp::Packet::new_checked(buf) else {
        return Verdict::Drop(DropReason::MalformedRtp);
    };
    let Some(track) = from.member.track(packet.ssrc()) else {
        return Verdict::Drop(DropReason::UndeclaredSsrc);
    };
    fan_out(from, track, false, sink)
}

/// Sends a track's packet to its local receivers and, for a local sender in fleet mode, once
/// to each peer relay with a receiver allowed for it. A send rule stops it before either.
#[inline]
fn fan_out<S: Sink>(
    from: &Sender<'_>,
    track: &super::room::Track,
    rtcp: bool,
    sink: &mut Copies<'_, S>,
) -> Verdict {
    let share = sink.share;
    let worker = share.worker;
    if let Some(rule) = &track.send_block {
        rule.dropped_send.add(worker, 1);
        return Verdict::Drop(DropReason::Rule);
    }
    let room = from.room;
    room.count_receive_blocked(worker, from.member, track.kind);
    if share.applies(room) {
        let hot = Hot {
            room: from.id,
            slot: from.slot,
            ssrc: track.ssrc,
        };
        // Workers beyond the room's chunk count have no share: nothing to hand them. A share
        // a peer cannot take is dropped (counted by the sink), never sent here: its receivers
        // are only ever sent by that peer, so that their order holds.
        for to in (0..share.workers.min(room.chunks())).filter(|&w| w != worker) {
            sink.hand_off(to, &hot);
        }
        let sent = room.each_in_share(
            worker,
            worker,
            share.workers,
            from.slot,
            track.kind,
            |d, legs| sink.forward(d, legs),
        );
        return Verdict::Forward(sent + trunk_copies(from, track, rtcp, sink));
    }
    let sent = room.each_receiver(
        worker,
        from.slot,
        from.member,
        track.kind,
        0..room.chunks.len(),
        |dest, legs| sink.forward(dest, legs),
    );
    Verdict::Forward(sent + trunk_copies(from, track, rtcp, sink))
}

/// For a local sender in fleet mode, queues one copy of the track's packet for each peer relay
/// with a receiver allowed for it, on this worker (in a hot room too: they are few). Returns
/// the number queued.
#[inline]
fn trunk_copies<S: Sink>(
    from: &Sender<'_>,
    track: &super::room::Track,
    rtcp: bool,
    sink: &mut Copies<'_, S>,
) -> usize {
    if !sink.trunks() || from.member.peer.is_some() {
        return 0;
    }
    let room = from.room;
    let media = match track.kind {
        super::room::MediaKind::Audio => trunk::Media::Audio,
        super::room::MediaKind::Video => trunk::Media::Video,
    };
    room.each_trunk(from.member, track.kind, |peer| {
        sink.trunk(peer, room.number, from.member.number, rtcp, media)
    })
}

fn route_rtcp<S: Sink>(
    installed: &Installed,
    from: &Sender<'_>,
    buf: &[u8],
    sink: &mut Copies<'_, S>,
) -> Verdict {
    let worker = sink.share.worker;
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
            let verdict = fan_out(from, track, true, sink);
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
            |d| sink.forward(d, None),
        )),
    }
}

/// Sends receiver feedback from `from` to the publishers of the media SSRCs it names, once per
/// publisher, skipping those that receive `from`'s media of kind `skip` (they got the compound
/// already). Returns (sent, whether a rule stopped some).
fn route_feedback<S: Sink>(
    worker: usize,
    installed: &Installed,
    from: &Sender<'_>,
    feedback: rtcp::Feedback<'_>,
    skip: Option<super::room::MediaKind>,
    sink: &mut Copies<'_, S>,
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
            sink.forward(dest, m.webrtc.as_ref());
            sent += 1;
        }
    }
    (sent, blocked)
}
