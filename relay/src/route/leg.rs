//! The legs of a WebRTC participant, as the workers see them.
//!
//! A browser publishes on one peer connection and subscribes on another, under one participant.
//! Each connection is a *leg*: its own ICE session (relay-side ufrag and pwd), its own latched
//! address, its own DTLS session and SRTP keys. A plain RTP participant has one leg that does
//! everything (the member's `addr` and `ice`).
//!
//! For a WebRTC member, the member's `addr` and `ice` are its **publish** leg: media and RTCP
//! from the client come in there, and receiver feedback about its tracks goes out there. Its
//! [`Legs`] add the **subscribe** leg: other members' media goes out there, and the client's
//! receiver reports come in there. Both legs latch only on a Binding request with
//! USE-CANDIDATE (RFC 8445 §7.3.1.5: a lite agent takes the pair the controlling agent
//! nominates).

use std::net::SocketAddr;
use std::sync::Arc;

use super::addr::Addr;
use super::ice::Credentials;
use super::table::RoomId;
use crate::sdp::Fingerprint;
use crate::srtp;

/// Which leg of a member a source address or a ufrag belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The member's own address and credentials: a plain participant's only leg, or a WebRTC
    /// participant's publish leg.
    Main,
    /// A WebRTC participant's subscribe leg.
    Subscribe,
}

impl Leg {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

/// A connected leg's SRTP keys, as DTLS gave them, and the leg's send state that each worker
/// forwarding to it takes a sibling of (one SRTCP index for the leg, whichever worker sends).
pub struct SrtpLeg {
    /// What the relay unprotects with (the client's write key).
    pub remote: srtp::MasterKey,
    /// The first send state: workers take [`srtp::Egress::sibling`]s of it.
    pub egress: srtp::Egress,
}

impl std::fmt::Debug for SrtpLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpLeg({})", self.remote.profile().name())
    }
}

/// One leg's DTLS session as the workers see it: which session a datagram belongs to, and the
/// client's certificate fingerprints (from its SDP) the DTLS thread checks.
#[derive(Clone, Debug)]
pub struct Session {
    /// The leg's session handle, unique relay-wide (its random SDP session id).
    pub id: u64,
    /// The fingerprints from the client's offer or answer; `None` before the answer.
    pub fingerprints: Option<Arc<[Fingerprint]>>,
    /// Its SRTP keys, once DTLS connected.
    pub srtp: Option<Arc<SrtpLeg>>,
}

/// A DTLS datagram's leg: what the worker hands the DTLS thread with it.
#[derive(Clone, Debug)]
pub struct DtlsLeg {
    /// The room.
    pub room: RoomId,
    /// The participant.
    pub participant: Arc<str>,
    /// The leg.
    pub leg: Leg,
    /// Its session.
    pub session: Session,
}

/// What makes a member a WebRTC member: its sessions and its subscribe leg, if it has one yet.
#[derive(Clone, Debug, Default)]
pub struct Legs {
    /// The publish leg's DTLS session (the leg uses the member's own ICE and address).
    pub publish: Option<Session>,
    /// The subscribe leg's DTLS session.
    pub subscribe: Option<Session>,
    /// The subscribe leg's relay-side ICE credentials (`None` before the subscribe exchange).
    pub subscribe_ice: Option<Arc<Credentials>>,
    /// The subscribe leg's latched address.
    pub subscribe_addr: Option<SocketAddr>,
    /// Whether this member's media may reach plain members (its room's `plain_legs`).
    pub plain_legs: bool,
    pub(crate) subscribe_sockaddr: Option<Addr>,
}

impl Legs {
    /// Legs with these sessions and a subscribe leg of these credentials and address (each may
    /// be absent).
    pub fn new(
        publish: Option<Session>,
        subscribe: Option<Session>,
        subscribe_ice: Option<Arc<Credentials>>,
        subscribe_addr: Option<SocketAddr>,
    ) -> Self {
        Self {
            publish,
            subscribe,
            subscribe_ice,
            subscribe_addr,
            subscribe_sockaddr: subscribe_addr.map(Addr::from),
            plain_legs: false,
        }
    }

    /// The session of the leg at `dest`: the subscribe leg's for media sent to it, the publish
    /// leg's for feedback sent to the member's own address.
    pub fn session_at(&self, dest: &SocketAddr) -> Option<&Session> {
        if self.subscribe_addr.as_ref() == Some(dest) {
            self.subscribe.as_ref()
        } else {
            self.publish.as_ref()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::packet::rtp::Ssrc;
    use crate::packet::stun::BindingRequest;
    use crate::route::{
        MediaKind, Participant, ParticipantCounters, RoomId, StunAction, StunGuard, Table, Update,
        Verdict, compile_all,
    };
    use crate::rules::RuleSet;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn creds(ufrag: &str) -> Arc<Credentials> {
        Arc::new(Credentials {
            ufrag: ufrag.into(),
            pwd: format!("{ufrag:0>24}").into(),
        })
    }

    /// `a`: WebRTC, publish leg at port 1, subscribe leg at port 2 (if latched); `b`: plain at
    /// port 3, sending SSRC 33.
    fn table(subscribe_addr: Option<SocketAddr>) -> Table {
        let a = Participant {
            id: "a",
            slot: 0,
            region: None,
            addr: Some(addr(1)),
            tracks: vec![(Ssrc(11), MediaKind::Audio)],
            subscribe: None,
            counters: Arc::new(ParticipantCounters::new(1)),
            ice: Some(creds("pubA")),
            webrtc: Some(Arc::new(Legs::new(
                Some(Session {
                    id: 7,
                    fingerprints: None,
                    srtp: None,
                }),
                None,
                Some(creds("subA")),
                subscribe_addr,
            ))),
            number: 0,
            peer: None,
        };
        let b = Participant {
            id: "b",
            slot: 1,
            region: None,
            addr: Some(addr(3)),
            tracks: vec![(Ssrc(33), MediaKind::Audio)],
            subscribe: None,
            counters: Arc::new(ParticipantCounters::new(1)),
            ice: Some(creds("plainB")),
            webrtc: None,
            number: 0,
            peer: None,
        };
        let c = compile_all("r", &[a, b], &RuleSet::new(), |_| None).unwrap();
        let mut t = Table::new();
        t.apply(Update::Room {
            id: RoomId(1),
            room: c.room,
            slots: c.slots,
        });
        t
    }

    fn binding(ufrag: &str, nominate: bool) -> Vec<u8> {
        let username = format!("{ufrag}:client");
        let key = format!("{ufrag:0>24}");
        let req = BindingRequest {
            transaction_id: [7; 12],
            username: username.as_bytes(),
            priority: 1,
            ice_controlling: Some(1),
            use_candidate: nominate,
            integrity_key: key.as_bytes(),
            fingerprint: true,
        };
        let mut out = vec![0; req.buffer_len()];
        let n = req.emit(&mut out).unwrap();
        out.truncate(n);
        out
    }

    fn stun(t: &Table, from: SocketAddr, buf: &[u8]) -> StunAction {
        let mut out = [0u8; 512];
        t.stun(0, 1, &mut StunGuard::new(), &from, buf, &mut out)
    }

    #[test]
    fn webrtc_legs_latch_only_on_use_candidate() {
        let t = table(None);
        // Checks without USE-CANDIDATE are answered, latch nothing.
        let StunAction::Reply { latch, .. } = stun(&t, addr(9), &binding("pubA", false)) else {
            panic!("no reply");
        };
        assert_eq!(latch, None);
        let StunAction::Reply { latch, .. } = stun(&t, addr(9), &binding("subA", false)) else {
            panic!("no reply");
        };
        assert_eq!(latch, None);
        // Nominated: each leg latches itself.
        let StunAction::Reply { latch, .. } = stun(&t, addr(9), &binding("pubA", true)) else {
            panic!("no reply");
        };
        assert_eq!(latch.map(|l| (l.leg, l.addr)), Some((Leg::Main, addr(9))));
        let StunAction::Reply { latch, .. } = stun(&t, addr(8), &binding("subA", true)) else {
            panic!("no reply");
        };
        assert_eq!(
            latch.map(|l| (l.leg, l.addr)),
            Some((Leg::Subscribe, addr(8)))
        );
        // A plain participant latches on any authenticated check, as before.
        let StunAction::Reply { latch, .. } = stun(&t, addr(7), &binding("plainB", false)) else {
            panic!("no reply");
        };
        assert_eq!(latch.map(|l| l.leg), Some(Leg::Main));
    }

    #[test]
    fn media_to_a_webrtc_member_goes_to_its_subscribe_leg() {
        let rtp = |ssrc: u32| {
            let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(b"payload");
            p
        };
        let route = |t: &Table, from: SocketAddr, buf: &[u8]| {
            let mut out = Vec::new();
            let v = t.route(0, &from, buf, |d| out.push(d.as_socket().unwrap()));
            (v, out)
        };
        // No subscribe leg latched yet: a receives nothing.
        let t = table(None);
        assert_eq!(route(&t, addr(3), &rtp(33)), (Verdict::Forward(0), vec![]));
        let t = table(Some(addr(2)));
        assert_eq!(
            route(&t, addr(3), &rtp(33)),
            (Verdict::Forward(1), vec![addr(2)])
        );
        // a's media comes in on its publish leg and reaches b.
        assert_eq!(
            route(&t, addr(1), &rtp(11)),
            (Verdict::Forward(1), vec![addr(3)])
        );
        // Its subscribe leg is a known source too (its receiver reports come in there).
        assert_ne!(
            route(&t, addr(2), &rtp(11)).0,
            Verdict::Drop(crate::route::DropReason::UnknownSource)
        );
    }
}
