//! Inputs for the micro-benchmarks: datagrams, compiled rooms, routing tables and rule sets.
//!
//! Everything here is built once, before timing starts, and is deterministic (no randomness, no
//! clock), so two runs measure the same work. Each builder checks that its output takes the path
//! it is named for; a fixture that silently took another path would time the wrong thing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use relay::packet::rtp::Ssrc;
use relay::packet::{rtcp, stun};
use relay::route::{
    self, Credentials, MediaKind, Participant, ParticipantCounters, Room, RoomId, RuleCounters,
    Table, Update,
};
use relay::rules::{
    self, Basis, Direction, Match, Media, ParticipantRef, RuleId, RuleSet, RuleSpec, Subject,
};

/// The room every routing and rule benchmark forwards in.
pub const ROOM: &str = "bench-room";
/// Its handle in the table.
pub const ROOM_ID: RoomId = RoomId(1);
/// The region of every member of [`ROOM`].
pub const REGION: [u8; 2] = *b"DE";
/// Workers the counters are sized for; benchmarks add as worker 0.
pub const WORKERS: usize = 1;
/// RTP payload length: a video packet of a typical 1,200-byte MTU budget.
pub const PAYLOAD_LEN: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------------

/// An RTP packet (V=2, PT 96) from `ssrc` with `csrcs`, an optional RFC 8285 one-byte extension
/// block of `ext_words` 32-bit words, `payload_len` payload bytes and `padding` bytes of padding.
pub fn rtp(ssrc: u32, csrcs: &[u32], ext_words: u16, payload_len: usize, padding: u8) -> Vec<u8> {
    let mut b0 = 0x80 | csrcs.len() as u8;
    if ext_words > 0 {
        b0 |= 0x10;
    }
    if padding > 0 {
        b0 |= 0x20;
    }
    let mut p = vec![b0, 96, 0x12, 0x34, 0x00, 0x01, 0xe2, 0x40];
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    if ext_words > 0 {
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&ext_words.to_be_bytes());
        // abs-send-time (id 3, 3 bytes) and transport-wide seq (id 5, 2 bytes), then zero padding.
        let mut ext = vec![0u8; usize::from(ext_words) * 4];
        let elements = [0x32, 0x12, 0x34, 0x56, 0x51, 0x00, 0x2a];
        let n = elements.len().min(ext.len());
        ext[..n].copy_from_slice(&elements[..n]);
        p.extend_from_slice(&ext);
    }
    p.extend((0..payload_len).map(|i| i as u8));
    if padding > 0 {
        p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
        p.push(padding);
    }
    p
}

/// The named RTP packets of the parse benchmark, each with its SSRC checked.
pub fn rtp_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plain", rtp(0x1111, &[], 0, PAYLOAD_LEN, 0)),
        ("csrcs", rtp(0x1111, &[0xa, 0xb, 0xc], 0, PAYLOAD_LEN, 0)),
        ("extension", rtp(0x1111, &[], 2, PAYLOAD_LEN, 0)),
        ("padding", rtp(0x1111, &[], 0, PAYLOAD_LEN, 16)),
    ]
}

/// An RTCP SR from `sender` with one report block about `about`, as libwebrtc sends it.
pub fn rtcp_sr(sender: u32, about: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0x00, 0x0c];
    p.extend_from_slice(&sender.to_be_bytes());
    // NTP timestamp, RTP timestamp, packet count, octet count.
    p.extend_from_slice(&[0xe9, 0x5f, 0x1c, 0x00, 0x80, 0x00, 0x00, 0x00]);
    p.extend_from_slice(&[
        0x00, 0x01, 0xe2, 0x40, 0, 0, 0x03, 0xe8, 0, 0x0f, 0x42, 0x40,
    ]);
    p.extend_from_slice(&report_block(about));
    p
}

/// An RTCP RR from `sender` with one report block about `about`.
pub fn rtcp_rr(sender: u32, about: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0x00, 0x07];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&report_block(about));
    p
}

/// An SDES packet with one chunk: `ssrc` and a 16-byte CNAME.
pub fn rtcp_sdes(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 202, 0x00, 0x06];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x01, 16]);
    p.extend_from_slice(b"bench@relay.test");
    p.extend_from_slice(&[0, 0]); // end of items, padded to a word
    p
}

/// A generic NACK (RFC 4585 §6.2.1) from `sender` about `media`, one entry.
pub fn rtcp_nack(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 205, 0x00, 0x03];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x00, 0x05]);
    p
}

/// A PLI (RFC 4585 §6.3.1) from `sender` about `media`.
pub fn rtcp_pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0x00, 0x02];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// A REMB (draft-alvestrand-rmcat-remb) from `sender` about `media`, 2 Mbit/s.
pub fn rtcp_remb(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x8f, 206, 0x00, 0x05];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(b"REMB");
    p.extend_from_slice(&[0x01, 0x0f, 0xd0, 0x90]);
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// A transport-wide congestion control feedback (FMT 15) from `sender` about `media`, with a
/// run-length chunk for 20 packets and their deltas.
pub fn rtcp_twcc(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x8f, 205, 0x00, 0x00];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    // Base sequence 100, status count 20, reference time, feedback count 7.
    p.extend_from_slice(&[0x00, 0x64, 0x00, 0x14, 0x00, 0x12, 0x34, 0x07]);
    // Run-length chunk: 20 packets received with small deltas, then 20 one-byte deltas.
    p.extend_from_slice(&[0x20, 0x14]);
    p.extend(std::iter::repeat_n(0x04, 20));
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

/// An SRTCP packet (RFC 3711 §3.4) of an SR + SDES compound from `sender`: the first 8 bytes
/// in clear, the rest "encrypted" (deterministic noise), then E|index and a 10-byte tag
/// (AES_CM_128_HMAC_SHA1_80).
pub fn srtcp_encrypted(sender: u32, about: u32) -> Vec<u8> {
    let mut p = rtcp_sr(sender, about);
    p.extend_from_slice(&rtcp_sdes(sender));
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut p[8..] {
        // xorshift32: noise that looks like ciphertext, the same on every run.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    p.extend_from_slice(&[0x80, 0x00, 0x00, 0x2a]);
    p.extend_from_slice(&[0x5a; 10]);
    p
}

/// The named RTCP datagrams of the classify benchmark, each checked to take its route.
pub fn rtcp_cases() -> Vec<(&'static str, Vec<u8>)> {
    let (a, b) = (0x1111, 0x2222);
    let mut sr_sdes = rtcp_sr(a, b);
    sr_sdes.extend_from_slice(&rtcp_sdes(a));
    let mut rr_sdes = rtcp_rr(b, a);
    rr_sdes.extend_from_slice(&rtcp_sdes(b));
    let cases = vec![
        ("sr", rtcp_sr(a, b)),
        ("rr", rtcp_rr(b, a)),
        ("sr_sdes", sr_sdes),
        ("rr_sdes", rr_sdes),
        ("nack", rtcp_nack(b, a)),
        ("pli", rtcp_pli(b, a)),
        ("remb", rtcp_remb(b, a)),
        ("twcc", rtcp_twcc(b, a)),
        ("srtcp_encrypted", srtcp_encrypted(a, b)),
    ];
    for (name, buf) in &cases {
        let route = rtcp::classify(buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ok = match (*name, route) {
            ("srtcp_encrypted", rtcp::Route::Encrypted { .. }) => true,
            ("sr" | "sr_sdes", rtcp::Route::Sender { .. }) => true,
            (_, rtcp::Route::Feedback { feedback, .. }) => feedback.media_ssrcs().eq([Ssrc(a)]),
            _ => false,
        };
        assert!(ok, "{name} routed as {route:?}");
    }
    cases
}

/// The RFC 5769 §2.1 sample request, 108 bytes: USERNAME "evtj:h6vY", password
/// [`RFC5769_PASSWORD`], SOFTWARE, PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY, FINGERPRINT.
pub const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// The short-term password of [`RFC5769_REQUEST`].
pub const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// A Binding request as a controlling full ICE agent sends it to `relay_ufrag`, signed with
/// `pwd`: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT.
pub fn binding_request(relay_ufrag: &str, pwd: &[u8]) -> Vec<u8> {
    let username = format!("{relay_ufrag}:clnt");
    let request = stun::BindingRequest {
        transaction_id: *b"bench-txn-id",
        username: username.as_bytes(),
        priority: 0x6e00_01ff,
        ice_controlling: Some(0x932f_f9b1_5126_3b36),
        use_candidate: true,
        integrity_key: pwd,
        fingerprint: true,
    };
    let mut out = vec![0u8; request.buffer_len()];
    let n = request.emit(&mut out).expect("request fits its own length");
    out.truncate(n);
    out
}

fn report_block(about: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&about.to_be_bytes());
    // Fraction lost 1/256, cumulative 2, highest seq 0x1234, jitter 32, LSR, DLSR.
    b[4..24].copy_from_slice(&[
        0x01, 0, 0, 2, 0, 0, 0x12, 0x34, 0, 0, 0, 32, 0x1c, 0x00, 0x80, 0x00, 0, 0, 0x10, 0,
    ]);
    b
}

// ---------------------------------------------------------------------------------------------
// Rooms and tables
// ---------------------------------------------------------------------------------------------

/// The source address of member `member` of room number `room`: unique across rooms, so a
/// table of many rooms indexes every member.
pub fn addr(room: u32, member: usize) -> SocketAddr {
    let [_, a, b, c] = room.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 10_000 + member as u16))
}

/// An address that belongs to no participant of any table built here.
pub fn stranger() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 99], 4_444))
}

/// The audio SSRC of member `member`; its video SSRC is this plus one.
pub fn audio_ssrc(member: usize) -> u32 {
    0x1000 + 2 * member as u32
}

/// The relay-side ICE ufrag of member `member` of room `room`.
pub fn ufrag(room: u32, member: usize) -> String {
    format!("r{room}m{member}")
}

/// The relay-side ICE password of every member.
pub const PWD: &str = "relay-side-ice-password-24";

/// The participant id of member `member`.
pub fn participant(member: usize) -> String {
    format!("p{member}")
}

/// A member of a benchmark room, owned: [`MemberSpec::participant`] borrows a
/// [`route::Participant`] from it for [`route::compile`].
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Participant id.
    pub name: String,
    /// Fixed address.
    pub addr: SocketAddr,
    /// Tracks.
    pub tracks: Vec<(Ssrc, MediaKind)>,
    /// Counters, kept across compilations.
    pub counters: Arc<ParticipantCounters>,
    /// Relay-side ICE credentials.
    pub ice: Arc<Credentials>,
}

impl MemberSpec {
    /// The participant as the compiler wants it, sitting in `slot`, in [`REGION`].
    pub fn participant(&self, slot: u16) -> Participant<'_> {
        Participant {
            id: &self.name,
            slot,
            region: Some(REGION),
            addr: Some(self.addr),
            tracks: self.tracks.clone(),
            subscribe: None,
            counters: self.counters.clone(),
            ice: Some(self.ice.clone()),
            webrtc: None,
            number: 0,
            peer: None,
        }
    }
}

/// Member specs for room number `room` of `members` participants: each has a fixed address, an
/// audio and a video track, subscribes to everybody, and ICE credentials.
pub fn member_specs(room: u32, members: usize) -> Vec<MemberSpec> {
    (0..members)
        .map(|m| MemberSpec {
            name: participant(m),
            addr: addr(room, m),
            tracks: vec![
                (Ssrc(audio_ssrc(m)), MediaKind::Audio),
                (Ssrc(audio_ssrc(m) + 1), MediaKind::Video),
            ],
            counters: Arc::new(ParticipantCounters::new(WORKERS)),
            ice: Arc::new(Credentials {
                ufrag: ufrag(room, m).into(),
                pwd: PWD.into(),
            }),
        })
        .collect()
}

/// Compiles room `name` from scratch with the rules of `set` in force (member i in slot i).
pub fn compile_room(
    name: &str,
    specs: &[MemberSpec],
    set: &RuleSet,
    counters: &HashMap<RuleId, Arc<RuleCounters>>,
) -> Arc<Room> {
    let participants: Vec<Participant<'_>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| s.participant(i as u16))
        .collect();
    route::compile_all(name, &participants, set, |id| counters.get(&id).cloned())
        .expect("benchmark room compiles")
        .room
}

/// A table holding the benchmarked room ([`ROOM_ID`], compiled from `specs`) and `others` other
/// rooms of 4 members each, so that the address and ufrag indexes are not trivially small.
pub fn table(specs: &[MemberSpec], others: u32) -> Table {
    ruled_table(specs, &RuleSet::new(), &HashMap::new(), others)
}

/// As [`table`], with the rules of `set` in force on [`ROOM`].
pub fn ruled_table(
    specs: &[MemberSpec],
    set: &RuleSet,
    counters: &HashMap<RuleId, Arc<RuleCounters>>,
    others: u32,
) -> Table {
    let mut table = Table::new();
    install(
        &mut table,
        ROOM_ID,
        compile_room(ROOM, specs, set, counters),
    );
    for r in 0..others {
        let id = ROOM_ID.0 + 1 + r;
        let other = compile_room("filler", &member_specs(id, 4), set, counters);
        install(&mut table, RoomId(id), other);
    }
    assert_eq!(table.rooms(), 1 + others as usize);
    table
}

fn install(table: &mut Table, id: RoomId, room: Arc<Room>) {
    let slots = room.slots().collect();
    table.apply(Update::Room { id, room, slots });
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// How the rules of a benchmark rule set relate to [`ROOM`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// No rule matches anybody in [`ROOM`].
    Elsewhere,
    /// As `Elsewhere`, plus one rule that blocks member 1 of [`ROOM`] from receiving.
    OneReceiver,
}

/// A rule set of `n` rules (plus one with [`Targets::OneReceiver`]).
///
/// About one rule in a hundred (at least one) is a region rule, alternating between a region
/// nobody in [`ROOM`] has and [`REGION`] restricted to another room, so the region index holds
/// candidates for [`ROOM`]'s members that the room check then refuses. The rest each name one
/// participant of another room, ten per room.
pub fn rule_set(n: usize, targets: Targets) -> RuleSet {
    let mut set = RuleSet::new();
    let regional = if n == 0 { 0 } else { (n / 100).max(1) };
    for i in 0..n {
        let m = if i < regional {
            let (region, rooms) = if i % 2 == 0 {
                ("CN", vec![])
            } else {
                ("DE", vec![format!("elsewhere-{i}")])
            };
            Match {
                regions: vec![region.to_owned()],
                participants: vec![],
                rooms,
            }
        } else {
            Match {
                regions: vec![],
                participants: vec![ParticipantRef {
                    room: format!("other-{}", i / 10),
                    participant: participant(i % 10),
                }],
                rooms: vec![],
            }
        };
        set.insert(RuleId(i as u64 + 1), rule(m, Direction::Both));
    }
    if targets == Targets::OneReceiver {
        let m = Match {
            regions: vec![],
            participants: vec![ParticipantRef {
                room: ROOM.to_owned(),
                participant: participant(1),
            }],
            rooms: vec![],
        };
        set.insert(RuleId(n as u64 + 1), rule(m, Direction::Receive));
    }
    set
}

/// The rule subject for the participant `participant` of [`ROOM`].
pub fn subject(participant: &str) -> Subject<'_> {
    Subject {
        room: ROOM,
        participant,
        region: Some(REGION),
    }
}

/// Live counters per rule, as the control plane keeps them for the compiled rooms to add to.
pub fn rule_counters(set: &RuleSet) -> HashMap<RuleId, Arc<RuleCounters>> {
    set.iter()
        .map(|(id, _)| (id, Arc::new(RuleCounters::new(WORKERS))))
        .collect()
}

fn rule(m: Match, direction: Direction) -> rules::Rule {
    let spec = RuleSpec {
        r#match: m,
        direction,
        media: Media::All,
        basis: Some(Basis {
            authority: "Benchmark Authority".to_owned(),
            reference: "BENCH-1".to_owned(),
            jurisdiction: "DE".to_owned(),
        }),
        expires_at: Some("2099-12-31T00:00:00Z".to_owned()),
    };
    rules::compile(&spec).expect("benchmark rule is valid")
}
