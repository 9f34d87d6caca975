//! No allocation per packet: a counting global allocator records every allocation made on a
//! worker thread, and forwarding 100,000+ packets after warm-up must add none, on both backends.
//!
//! The rooms cover what a packet can walk through: a room of 2, a room of 50, and a room of 130
//! over three chunks where some members subscribe selectively (a publisher's listener list that
//! crosses chunks), a room of 10 with a receive rule and a send rule in force, with RTP, sender
//! reports, receiver feedback and encrypted SRTCP; and a `plain_legs` room with WebRTC legs keyed
//! as DTLS would key them: SRTP unprotected on ingress, sealed per WebRTC receiver on egress,
//! SRTCP both ways, plain to WebRTC and WebRTC to plain. The room of 130 is large enough that its
//! fan-out is shared between the two workers (`io::handoff`), so hand-offs and the sends of a
//! handed-off share (routed with the peer's own table) are covered too.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;

/// Counts allocations made on threads named `worker-*` (the data-plane workers).
struct Counting;

static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// 0: not known yet, 1: a worker, 2: another thread, 3: finding out (nested allocation).
    static KIND: Cell<u8> = const { Cell::new(0) };
}

fn on_worker() -> bool {
    KIND.with(|k| match k.get() {
        0 => {
            k.set(3);
            let worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("worker-"));
            k.set(if worker { 1 } else { 2 });
            worker
        }
        1 => true,
        _ => false,
    })
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_worker() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if on_worker() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_worker() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Packets forwarded in the measured window, at least.
const TARGET: u64 = 100_000;

#[test]
fn forwarding_allocates_nothing_on_worker_threads() {
    for backend in BACKENDS {
        for gso in [true, false] {
            run(backend, gso);
        }
    }
}

fn run(backend: relay::config::BackendChoice, gso: bool) {
    let plane = start(backend, |c| {
        c.workers = 2;
        c.gso = gso;
        // With GSO off, every room of 3 or more shares its fan-out, the WebRTC room too: a
        // plain member's packet that arrives at worker 1 is handed to worker 0 (the only chunk's
        // worker), which seals the browsers' copies. With GSO on, only the large room shares.
        // The fleet room (two local members, one remote) shares too with GSO off: a hot room's
        // hand-off and its trunk copies, sent by the receiving worker, in one fan-out.
        c.handoff_min_members = if gso { 100 } else { 3 };
        c.trunk = Some("127.0.0.1:0".parse().unwrap());
    });
    let small = clients(2);
    let big = clients(50);
    let large = clients(130);
    let addr = |s: &std::net::UdpSocket| s.local_addr().unwrap();
    install(&plane, 1, 1000, &small.iter().map(addr).collect::<Vec<_>>());
    install(&plane, 2, 2000, &big.iter().map(addr).collect::<Vec<_>>());
    // Every seventh member of the large room listens only to members 0, 70 and 129.
    install_with(
        &plane,
        3,
        3000,
        &large.iter().map(addr).collect::<Vec<_>>(),
        |i| (i % 7 == 3).then(|| vec![0, 70, 129]),
    );
    // A room with rules in force: member 2 may not receive video, member 5 may not send it.
    let ruled = clients(10);
    let mut rules = relay::rules::RuleSet::new();
    for (id, who, direction) in [(1, "m2", "receive"), (2, "m5", "send")] {
        let spec = format!(
            r#"{{"match": {{"participants": [{{"room": "room-5", "participant": "{who}"}}]}},
                "direction": "{direction}", "media": "video",
                "basis": {{"authority": "A", "reference": "1", "jurisdiction": "US"}},
                "expires_at": "2099-01-01T00:00:00Z"}}"#
        );
        let rule = relay::rules::compile(&relay::rules::parse(spec.as_bytes()).unwrap()).unwrap();
        rules.insert(relay::rules::RuleId(id), rule);
    }
    install_ruled(
        &plane,
        5,
        5000,
        &ruled.iter().map(addr).collect::<Vec<_>>(),
        |_| None,
        &rules,
    );
    // The counter sees worker threads: setting up and applying rooms allocates there.
    assert!(
        WORKER_ALLOCS.load(Ordering::Relaxed) > 0,
        "the counter saw no worker"
    );
    assert!(matches!(
        relay::packet::rtcp::classify(&srtcp(3000)),
        Ok(relay::packet::rtcp::Route::Encrypted { .. })
    ));
    let web = clients(3);
    let (mut browser, mut receiving) = install_webrtc(&plane, 4, &web);
    let to = plane.local_addr();
    // A fleet room: two local members and one on a peer relay played by `peer` (its trunk
    // socket): trunk egress of local media, trunk ingress of the remote member's.
    let fleet = clients(2);
    let peer = clients(1).remove(0);
    install_trunked(&plane, 6, &fleet, &peer);
    let trunk_to = plane.trunk_addr().unwrap();
    let remote_rtp = |seq: u16| {
        let header = relay::packet::trunk::Header {
            content: relay::packet::trunk::Content::Rtp,
            media: relay::packet::trunk::Media::Video,
            webrtc: false,
            origin: relay::packet::trunk::NodeNo(2),
            room: relay::packet::trunk::RoomNo(relay::route::room_number("room-6")),
            sender: relay::packet::trunk::ParticipantNo(62),
            epoch: relay::packet::trunk::Epoch(20),
        };
        let mut d = header.to_bytes().to_vec();
        d.extend_from_slice(&rtp(6002, seq, 700));
        d
    };
    // Before counting: a local packet reaches the peer behind a header; the peer's reaches
    // both local members without it.
    fleet[0].send_to(&rtp(6000, 1, 500), to).unwrap();
    let got = recv_n(&peer, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "no trunk copy");
    assert_eq!(got[0][16..], rtp(6000, 1, 500)[..]);
    assert_eq!(got[0][..2], [4, 0x40], "version 4, RTP, video");
    peer.send_to(&remote_rtp(1), trunk_to).unwrap();
    assert_eq!(recv_n(&fleet[1], 2, Duration::from_secs(5)).len(), 2);
    let trunk_in = std::cell::Cell::new(0usize);
    // Media of a WebRTC leg on the peer relay: the clear RTP behind a header with W.
    let remote_webrtc = |seq: u16| {
        let header = relay::packet::trunk::Header {
            content: relay::packet::trunk::Content::Rtp,
            media: relay::packet::trunk::Media::Video,
            webrtc: true,
            origin: relay::packet::trunk::NodeNo(2),
            room: relay::packet::trunk::RoomNo(relay::route::room_number("webrtc")),
            sender: relay::packet::trunk::ParticipantNo(43),
            epoch: relay::packet::trunk::Epoch(20),
        };
        let mut d = header.to_bytes().to_vec();
        d.extend_from_slice(&rtp(4003, seq, 900));
        d
    };
    // Before counting: one packet end to end, to see the WebRTC paths do what they should. The
    // other browser decrypts exactly what the first sent; the plain member gets it clear; the
    // peer relay gets the clear copy behind a version 5 header (RTP, video, W).
    let clear = rtp(4000, 1, 800);
    let mut sealed = [0u8; 1500];
    let n = browser.protect_rtp(&clear, &mut sealed).unwrap();
    web[0].send_to(&sealed[..n], to).unwrap();
    let got = recv_n(&web[1], 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "the WebRTC receiver got no sealed copy");
    let mut copy = got[0].clone();
    let len = receiving.unprotect_rtp(&mut copy).unwrap();
    assert_eq!(
        copy[..len],
        clear[..],
        "header and payload unchanged through the relay"
    );
    assert_eq!(
        recv_n(&web[2], 1, Duration::from_secs(5)),
        vec![clear.clone()]
    );
    let got = recv_n(&peer, 1, Duration::from_secs(5));
    assert_eq!(
        got.len(),
        1,
        "no trunk copy of the WebRTC publisher's media"
    );
    assert_eq!(got[0][..2], [5, 0x50], "version 5, RTP, video, W");
    assert_eq!(got[0][16..], clear[..], "the clear copy crosses");
    // The peer's WebRTC media: sealed for the browser, withheld from the plain member.
    peer.send_to(&remote_webrtc(1), trunk_to).unwrap();
    let got = recv_n(&web[1], 1, Duration::from_secs(5));
    assert_eq!(
        got.len(),
        1,
        "the WebRTC receiver got no copy from the trunk"
    );
    let mut copy = got[0].clone();
    let len = receiving.unprotect_rtp(&mut copy).unwrap();
    assert_eq!(copy[..len], rtp(4003, 1, 900)[..]);
    assert!(recv_n(&web[2], 1, Duration::from_millis(200)).is_empty());
    let web_out = std::cell::Cell::new(0usize);
    // One round: audio-like singles in the small room, video-like bursts in both rooms.
    let mut seq = 2u16;
    let mut round = || {
        for _ in 0..20 {
            seq = seq.wrapping_add(1);
            small[0].send_to(&rtp(1000, seq, 160), to).unwrap();
            small[1].send_to(&rtp(1001, seq, 120), to).unwrap();
        }
        let burst: Vec<Vec<u8>> = (0..8)
            .map(|i| rtp(1000, seq.wrapping_add(i), 1100))
            .collect();
        send_burst(&small[0], to, &burst);
        let burst: Vec<Vec<u8>> = (0..4)
            .map(|i| rtp(2007, seq.wrapping_add(i), 1000))
            .collect();
        send_burst(&big[7], to, &burst);
        big[3].send_to(&rtp(2003, seq, 90), to).unwrap();
        // The large room: media from a listened-to member and from another, a sender report,
        // feedback to a publisher, encrypted SRTCP.
        large[70].send_to(&rtp(3070, seq, 200), to).unwrap();
        large[5].send_to(&rtp(3005, seq, 200), to).unwrap();
        large[129].send_to(&sender_report(3129, 3000), to).unwrap();
        large[10].send_to(&pli(3010, 3070), to).unwrap();
        large[0].send_to(&srtcp(3000), to).unwrap();
        // WebRTC: the browser's SRTP and SRTCP in, sealed copies out to the other browser, a
        // clear copy to the plain member; the plain member's RTP sealed for both browsers.
        let mut sealed = [0u8; 1500];
        let n = browser
            .protect_rtp(&rtp(4000, seq, 1000), &mut sealed)
            .unwrap();
        web[0].send_to(&sealed[..n], to).unwrap();
        let n = browser
            .protect_rtcp(&sender_report(4000, 4002), &mut sealed)
            .unwrap();
        web[0].send_to(&sealed[..n], to).unwrap();
        web[2]
            .send_to(&rtp(4002, seq.wrapping_add(2), 600), to)
            .unwrap();
        // The peer relay's WebRTC media in (sealed for the browser, withheld from the plain
        // member); w0's clear copies go out to the peer behind a header with W.
        peer.send_to(&remote_webrtc(seq), trunk_to).unwrap();
        web_out.set(web_out.get() + discard(&web[1]) + discard(&web[2]));
        // The fleet room: local media out over the trunk, the peer's media in from it.
        fleet[0].send_to(&rtp(6000, seq, 500), to).unwrap();
        peer.send_to(&remote_rtp(seq), trunk_to).unwrap();
        trunk_in.set(trunk_in.get() + discard(&peer));
        // The ruled room: one copy blocked at a receiver, one packet blocked at its sender.
        ruled[0].send_to(&rtp(5000, seq, 300), to).unwrap();
        ruled[5].send_to(&rtp(5005, seq, 300), to).unwrap();
        for s in small
            .iter()
            .chain(&big)
            .chain(&large)
            .chain(&web)
            .chain(&ruled)
            .chain(&fleet)
        {
            discard(s);
        }
    };
    let out = || sum(&plane, |s| &s.packets_out);
    // Warm-up: every code path once, so lazily sized things are sized.
    for _ in 0..200 {
        round();
    }
    assert!(wait_until(Duration::from_secs(5), || out() > 0));
    std::thread::sleep(Duration::from_millis(50));
    let before = WORKER_ALLOCS.load(Ordering::Relaxed);
    let start_out = out();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out() - start_out < TARGET && std::time::Instant::now() < deadline {
        round();
    }
    std::thread::sleep(Duration::from_millis(50));
    let forwarded = out() - start_out;
    let allocs = WORKER_ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!(
        "{backend:?} gso={gso}: {forwarded} packets forwarded ({} WebRTC copies, {} trunk \
         copies received), {allocs} worker allocations",
        web_out.get(),
        trunk_in.get()
    );
    assert!(
        forwarded >= TARGET,
        "{backend:?}: only {forwarded} forwarded"
    );
    assert!(sum(&plane, |s| &s.packets_in) > 0);
    let rule_drops = sum(&plane, |s| &s.drops[relay::route::DropReason::Rule.index()]);
    assert!(rule_drops > 0, "the send rule dropped nothing");
    assert!(web_out.get() > 100, "WebRTC copies: {}", web_out.get());
    let handed = sum(&plane, |s| &s.handoff_out);
    assert!(
        handed > 0,
        "{backend:?}: the large room's fan-out was not shared"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        sum(&plane, |s| &s.handoff_in) >= handed
    }));
    // The trunk path ran (counted as the copies are read back: a loaded machine delivers fewer
    // within a round; 146-432 in quiet runs, 75 once while the suite's build ran).
    assert!(trunk_in.get() > 20, "trunk copies: {}", trunk_in.get());
    // WebRTC media from the trunk was withheld from the plain member (the W bit read).
    let withheld = sum(&plane, |s| {
        &s.drops[relay::route::DropReason::PlainLegs.index()]
    });
    assert!(withheld > 20, "withheld copies: {withheld}");
    assert_eq!(
        allocs, 0,
        "{backend:?} gso={gso}: workers allocated while forwarding"
    );
}

/// Installs fleet room `id` (named `room-{id}`): members 0 and 1 local at `socks` (member 0
/// sends SSRC 6000), member 2 on peer relay 2 (epoch 20, participant number 62, SSRC 6002)
/// whose trunk address is `peer`'s; this relay is node 1.
fn install_trunked(
    plane: &relay::io::DataPlane,
    id: u32,
    socks: &[std::net::UdpSocket],
    peer: &std::net::UdpSocket,
) {
    use std::sync::Arc;

    use relay::packet::rtp::Ssrc;
    use relay::packet::trunk::{Epoch, NodeNo};
    use relay::route::{
        Local, MediaKind, Participant, ParticipantCounters, Peer, Peers, RoomId, RuleCounters,
        TrunkCounters, Update,
    };

    let w = plane.workers();
    let member = |id: &'static str, addr, ssrc: u32, number, peer| Participant {
        id,
        slot: number as u16 % 60,
        region: None,
        addr,
        tracks: vec![(Ssrc(ssrc), MediaKind::Video)],
        subscribe: None,
        counters: Arc::new(ParticipantCounters::new(w)),
        ice: None,
        webrtc: None,
        number,
        peer,
    };
    let people = [
        member("f0", Some(socks[0].local_addr().unwrap()), 6000, 60, None),
        member("f1", Some(socks[1].local_addr().unwrap()), 6001, 61, None),
        member("f2", None, 6002, 62, Some(2)),
    ];
    let compiled = relay::route::compile_all(
        &format!("room-{id}"),
        &people,
        &relay::rules::RuleSet::new(),
        |_| Some(Arc::new(RuleCounters::new(w))),
    )
    .unwrap();
    let peers = Peers::new(
        Local {
            node: NodeNo(1),
            epoch: Epoch(10),
        },
        [Peer::new(
            "p",
            NodeNo(2),
            Epoch(20),
            peer.local_addr().unwrap(),
            Arc::new(TrunkCounters::new(w)),
        )],
    );
    plane
        .publish(vec![
            Update::Peers(Arc::new(peers)),
            Update::Room {
                id: RoomId(id),
                room: compiled.room,
                slots: compiled.slots,
            },
        ])
        .unwrap();
}

/// Installs a `plain_legs` room `id`: member 0 a WebRTC publisher at `socks[0]` (SSRC 4000),
/// member 1 a WebRTC receiver whose subscribe leg is `socks[1]`, member 2 a plain member at
/// `socks[2]` (SSRC 4002), member 3 on peer relay 2 (participant number 43, SSRC 4003). Every
/// leg is keyed from one keying material, as DTLS would key it. The local publisher's legs say
/// `plain_legs`; the compiled room does not (`compile_all`), so WebRTC media from the trunk is
/// withheld from the plain member, counted: both ways of the W bit run.
/// Returns the publishing browser's own send state.
fn install_webrtc(
    plane: &relay::io::DataPlane,
    id: u32,
    socks: &[std::net::UdpSocket],
) -> (relay::srtp::Egress, relay::srtp::Ingress) {
    use std::sync::Arc;

    use relay::packet::rtp::Ssrc;
    use relay::route::{
        Legs, MediaKind, Participant, ParticipantCounters, RoomId, Session, SrtpLeg, Update,
    };
    use relay::srtp::{Egress, Keys, Profile, split_keying_material};

    let profile = Profile::from_id(0x0007).unwrap();
    let keys = split_keying_material(profile, &[7u8; 56]).unwrap();
    let session = |id: u64| Session {
        id,
        fingerprints: None,
        srtp: Some(Arc::new(SrtpLeg {
            remote: keys.remote.clone(),
            egress: Egress::new(Keys::new(&keys.local).unwrap()),
        })),
    };
    let addr = |i: usize| socks[i].local_addr().unwrap();
    let mut publisher = Legs::new(Some(session(41)), None, None, None);
    publisher.plain_legs = true;
    let mut receiver = Legs::new(None, Some(session(42)), None, Some(addr(1)));
    receiver.plain_legs = true;
    let counters = || Arc::new(ParticipantCounters::new(plane.workers()));
    let participants = vec![
        Participant {
            id: "w0",
            slot: 0,
            region: None,
            addr: Some(addr(0)),
            tracks: vec![(Ssrc(4000), MediaKind::Video)],
            subscribe: None,
            counters: counters(),
            ice: None,
            webrtc: Some(Arc::new(publisher)),
            number: 0,
            peer: None,
        },
        Participant {
            id: "w1",
            slot: 1,
            region: None,
            addr: None,
            tracks: vec![],
            subscribe: None,
            counters: counters(),
            ice: None,
            webrtc: Some(Arc::new(receiver)),
            number: 0,
            peer: None,
        },
        Participant {
            id: "p2",
            slot: 2,
            region: None,
            addr: Some(addr(2)),
            tracks: vec![(Ssrc(4002), MediaKind::Video)],
            subscribe: None,
            counters: counters(),
            ice: None,
            webrtc: None,
            number: 0,
            peer: None,
        },
        // On peer relay 2 (installed with the fleet room): w0's clear media crosses to it, and
        // its WebRTC media (SSRC 4003, the W bit) comes in from it.
        Participant {
            id: "r3",
            slot: 3,
            region: None,
            addr: None,
            tracks: vec![(Ssrc(4003), MediaKind::Video)],
            subscribe: None,
            counters: counters(),
            ice: None,
            webrtc: None,
            number: 43,
            peer: Some(2),
        },
    ];
    let compiled = relay::route::compile_all(
        "webrtc",
        &participants,
        &relay::rules::RuleSet::new(),
        |_| None,
    )
    .unwrap();
    plane
        .publish(vec![Update::Room {
            id: RoomId(id),
            room: compiled.room,
            slots: compiled.slots,
        }])
        .unwrap();
    // The browsers: one seals with what the relay unprotects with, the other opens what the
    // relay seals.
    (
        Egress::new(Keys::new(&keys.remote).unwrap()),
        relay::srtp::Ingress::new(Keys::new(&keys.local).unwrap()),
    )
}

/// An RTCP SR from `sender` with one report block about `about`.
fn sender_report(sender: u32, about: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0x00, 0x0c];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

/// A PLI (RFC 4585 §6.3.1) from `sender` about `media`.
fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0x00, 0x02];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// An SRTCP packet (RFC 3711 §3.4) from `sender` whose body is encrypted: the E flag set in the
/// trailer, the body after the first 8 bytes scrambled, a 10-byte tag.
fn srtcp(sender: u32) -> Vec<u8> {
    let mut p = sender_report(sender, 0);
    for b in &mut p[8..] {
        *b ^= 0x5a;
    }
    p.extend_from_slice(&[0x80, 0, 0, 1]);
    p.extend_from_slice(&[0xaa; 10]);
    p
}
