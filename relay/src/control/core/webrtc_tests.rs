//! WebRTC participants in the core, with SDP captured from real browsers (`sdp/testdata`).

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::Limits;
use crate::control::body::WebrtcSubscribeBody;
use crate::control::core::{Command, Core, Now, Restore};
use crate::store::StoreOp;

const CHROMIUM_OFFER: &str = include_str!("../../sdp/testdata/chromium_publish_offer.sdp");
const CHROMIUM_ANSWER: &str = include_str!("../../sdp/testdata/chromium_recvonly_answer.sdp");
const AIORTC_OFFER: &str = include_str!("../../sdp/testdata/aiortc_publish_offer.sdp");
const FIREFOX_OFFER: &str = include_str!("../../sdp/testdata/firefox_publish_offer.sdp");

fn now() -> Now {
    Now {
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        mono: Instant::now(),
    }
}

fn no_geo(_: IpAddr) -> Option<[u8; 2]> {
    None
}

fn limits() -> Limits {
    Limits {
        max_rooms: 10,
        max_participants: 10,
        max_tracks: 8,
        rule_changes_per_sec: 100,
        latch_timeout: Duration::from_secs(2),
        event_history: 100,
    }
}

fn identity() -> LocalIdentity {
    LocalIdentity {
        fingerprint: Fingerprint::parse(
            "sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
        )
        .unwrap(),
        addresses: vec!["127.0.0.1:40000".parse().unwrap()],
    }
}

fn core_with(restore: Restore) -> Core {
    let mut c = Core::new(
        limits(),
        2,
        "127.0.0.1:40000".parse().unwrap(),
        restore,
        now(),
    )
    .unwrap();
    c.set_identity(identity());
    c
}

fn fresh(n: u8) -> Fresh {
    Fresh {
        ice: IceBody {
            ufrag: format!("fresh{n}"),
            pwd: format!("{:0>24}", n),
        },
        session_id: u64::from(n) * 1000,
    }
}

type Run = Result<(u16, serde_json::Value, Vec<Event>, Vec<StoreOp>), ApiError>;

fn run(c: &mut Core, cmd: Command) -> Run {
    let out = c.handle(now(), &no_geo, cmd)?;
    let ops = c.store_ops();
    c.commit();
    let (s, v) = out.reply.unwrap_or((204, serde_json::Value::Null));
    Ok((s, v, out.events, ops))
}

fn publish(c: &mut Core, id: &str, sdp: &str, n: u8) -> Run {
    run(
        c,
        Command::WebrtcPublish {
            room: "r".into(),
            id: id.into(),
            body: WebrtcPublishBody {
                sdp: sdp.into(),
                region: None,
                subscribe: None,
            },
            fresh: fresh(n),
        },
    )
}

fn offer(c: &mut Core, id: &str, n: u8) -> Run {
    run(
        c,
        Command::WebrtcOffer {
            room: "r".into(),
            id: id.into(),
            body: WebrtcSubscribeBody::default(),
            fresh: fresh(n),
        },
    )
}

fn answer(c: &mut Core, id: &str, sdp: &str) -> Run {
    run(
        c,
        Command::WebrtcAnswer {
            room: "r".into(),
            id: id.into(),
            sdp: sdp.into(),
        },
    )
}

fn get(c: &mut Core, id: &str) -> serde_json::Value {
    run(
        c,
        Command::GetParticipant {
            room: "r".into(),
            id: id.into(),
        },
    )
    .unwrap()
    .1
}

fn room(c: &mut Core, plain_legs: Option<bool>) -> Run {
    run(
        c,
        Command::PutRoom {
            room: "r".into(),
            plain_legs,
        },
    )
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind).collect()
}

#[test]
fn publish_answers_and_declares_the_offer_tracks() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    let (status, body, events, ops) = publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    assert_eq!(status, 200);
    let text = body["sdp"].as_str().unwrap();
    for needle in [
        "a=ice-lite",
        "a=setup:passive",
        "a=rtcp-mux",
        "a=ice-ufrag:fresh1",
        "a=fingerprint:sha-256 AB:CD",
        "127.0.0.1 40000 typ host",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("transport-cc") && !text.contains("goog-remb"));
    assert_eq!(kinds(&events), ["participant_joined"]);
    // The room's table came from the offer and is written with the room.
    let state = ops.iter().find_map(|op| match op {
        StoreOp::PutRoom(r) => Some(r.state.clone()),
        _ => None,
    });
    assert!(state.unwrap().contains("\"VP8\""));
    let p = get(&mut c, "a");
    assert_eq!(p["transport"], "webrtc");
    assert_eq!(p["dtls"], "new");
    assert_eq!(p["srtp_profile"], serde_json::Value::Null);
    assert_eq!(p["legs"][0]["leg"], "publish");
    // Audio, video and the video's RTX, from a=ssrc and a=ssrc-group:FID.
    assert_eq!(p["tracks"].as_array().unwrap().len(), 3);
    let r = run(&mut c, Command::GetRoom { room: "r".into() })
        .unwrap()
        .1;
    assert_eq!(r["codecs"][0]["codec"], "opus");
    assert_eq!(r["plain_legs"], false);

    // A plain participant stays "rtp".
    let plain = ParticipantBody::default();
    run(
        &mut c,
        Command::PutParticipant {
            room: "r".into(),
            id: "plain".into(),
            body: plain,
            fresh_ice: fresh(9).ice,
        },
    )
    .unwrap();
    let p = get(&mut c, "plain");
    assert_eq!(p["transport"], "rtp");
    assert_eq!(p["dtls"], serde_json::Value::Null);
}

#[test]
fn bad_sdp_is_invalid_sdp_naming_the_line_and_changes_nothing() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    let broken = CHROMIUM_OFFER.replacen("m=audio 9", "m=audio x", 1);
    let e = publish(&mut c, "a", &broken, 1).unwrap_err();
    assert_eq!(e.code, Code::InvalidSdp);
    assert!(e.message.contains("line 8"), "{}", e.message);
    let e = publish(&mut c, "a", "", 1).unwrap_err();
    assert_eq!(e.code, Code::InvalidSdp);
    assert_eq!(
        run(&mut c, Command::GetRoom { room: "r".into() })
            .unwrap()
            .1["participants"],
        serde_json::json!([])
    );
}

#[test]
fn subscribe_offers_the_others_tracks_and_takes_the_answer() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    // Nobody else yet: nothing to offer.
    assert_eq!(
        offer(&mut c, "a", 2).unwrap_err().code,
        Code::NothingToReceive
    );
    // An answer without an offer.
    assert_eq!(
        answer(&mut c, "a", CHROMIUM_ANSWER).unwrap_err().code,
        Code::NoOffer
    );
    let (_, _, events, _) = publish(&mut c, "b", FIREFOX_OFFER, 3).unwrap();
    // a has no subscribe leg yet: nobody to tell.
    assert_eq!(kinds(&events), ["participant_joined"]);
    let (status, body, _, _) = offer(&mut c, "a", 2).unwrap();
    assert_eq!(status, 200);
    let text = body["sdp"].as_str().unwrap();
    assert!(text.contains("a=sendonly") && text.contains("a=setup:actpass"));
    assert!(text.contains("a=ice-ufrag:fresh2"), "{text}");
    assert!(!text.contains("a=extmap"));
    let b = get(&mut c, "b");
    for t in b["tracks"].as_array().unwrap() {
        let ssrc = t["ssrc"].as_u64().unwrap();
        assert!(
            text.contains(&format!("a=ssrc:{ssrc} ")),
            "{ssrc} not offered"
        );
    }
    // The captured Chromium answer has mids 0 and 1, as the relay's offer.
    let (status, _, _, _) = answer(&mut c, "a", CHROMIUM_ANSWER).unwrap();
    assert_eq!(status, 204);
    let p = get(&mut c, "a");
    assert_eq!(p["legs"][1]["leg"], "subscribe");
    assert_eq!(p["legs"][1]["dtls"], "new");
    // The answer was taken: a second one has no offer.
    assert_eq!(
        answer(&mut c, "a", CHROMIUM_ANSWER).unwrap_err().code,
        Code::NoOffer
    );

    // A third publisher: a, who subscribes to all and has a subscribe leg, is told.
    let (_, _, events, _) = publish(&mut c, "c", AIORTC_OFFER, 4).unwrap();
    assert_eq!(
        kinds(&events),
        ["participant_joined", "subscription_changed"]
    );
    assert_eq!(events[1].data["participant"], "a");
    // The re-offer keeps a's sections in place and adds c's after them.
    let (_, body, _, _) = offer(&mut c, "a", 5).unwrap();
    let text = body["sdp"].as_str().unwrap();
    assert!(
        text.contains("a=ice-ufrag:fresh2"),
        "the leg keeps its credentials"
    );
    let mids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .collect();
    assert_eq!(mids, ["0", "1", "2", "3"]);
    // b leaves: a is told, and b's sections are stopped (port 0) in place.
    let (_, _, events, _) = run(
        &mut c,
        Command::DeleteParticipant {
            room: "r".into(),
            id: "b".into(),
        },
    )
    .unwrap();
    assert_eq!(kinds(&events), ["participant_left", "subscription_changed"]);
    let (_, body, _, _) = offer(&mut c, "a", 6).unwrap();
    let text = body["sdp"].as_str().unwrap();
    assert_eq!(text.matches(" 0 UDP/TLS/RTP/SAVPF").count(), 2, "{text}");
}

#[test]
fn a_publisher_on_another_relay_is_offered_and_its_comings_and_goings_told() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    assert_eq!(
        offer(&mut c, "a", 2).unwrap_err().code,
        Code::NothingToReceive
    );
    let remote = |ssrcs: &[u32]| Command::FleetParticipant {
        room: "r".into(),
        id: "x".into(),
        remote: Some(Box::new(RemoteParticipant {
            node: "n2".into(),
            peer: 2,
            number: 5,
            region: None,
            tracks: ssrcs
                .iter()
                .zip([MediaKind::Audio, MediaKind::Video])
                .map(|(&ssrc, kind)| TrackBody { ssrc, kind })
                .collect(),
            subscribe: SubscribeBody::ALL,
            relay_region: None,
        })),
    };
    // x lives on relay n2 (its media crosses the trunk, WebRTC or not): a is offered its
    // tracks with this relay's codecs, as a plain publisher's.
    run(&mut c, remote(&[7001, 7002])).unwrap();
    let (_, body, _, _) = offer(&mut c, "a", 3).unwrap();
    let text = body["sdp"].as_str().unwrap();
    for ssrc in [7001, 7002] {
        assert!(text.contains(&format!("a=ssrc:{ssrc} cname:x")), "{text}");
    }
    answer(&mut c, "a", CHROMIUM_ANSWER).unwrap();
    // x changes its tracks, then leaves: a (subscribe leg, subscribes to all) is told each time.
    let (_, _, events, _) = run(&mut c, remote(&[7001])).unwrap();
    assert_eq!(kinds(&events), ["subscription_changed"]);
    assert_eq!(events[0].data["participant"], "a");
    let (_, _, events, _) = run(
        &mut c,
        Command::FleetParticipant {
            room: "r".into(),
            id: "x".into(),
            remote: None,
        },
    )
    .unwrap();
    assert_eq!(kinds(&events), ["subscription_changed"]);
}

#[test]
fn subscribe_leg_latches_on_its_own_and_is_indexed() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    publish(&mut c, "b", FIREFOX_OFFER, 3).unwrap();
    offer(&mut c, "a", 2).unwrap();
    let room_id = c.rooms["r"].id;
    let latch = |leg, port: u16| {
        Command::Latch(crate::route::Latch {
            room: room_id,
            participant: "a".into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            leg,
        })
    };
    run(&mut c, latch(Leg::Subscribe, 6000)).unwrap();
    let p = get(&mut c, "a");
    assert_eq!(p["legs"][0]["latched"], false);
    assert_eq!(p["legs"][1]["latched"], true);
    assert_eq!(p["address_set"], true);
    run(&mut c, latch(Leg::Main, 6001)).unwrap();
    let p = get(&mut c, "a");
    assert_eq!(p["legs"][0]["latched"], true);
    // Both addresses and both ufrags name a.
    assert_eq!(c.addresses.len(), 2);
    assert!(c.ufrags.contains_key("fresh2") && c.ufrags.contains_key("fresh1"));
    // The workers' snapshot carries the subscribe leg.
    let snap = &c.rooms["r"].snapshot;
    let slot = c.rooms["r"].participants["a"].slot;
    let legs = snap.member(slot).unwrap().webrtc.clone().unwrap();
    assert_eq!(legs.subscribe_addr, Some("127.0.0.1:6000".parse().unwrap()));
    // Leaving frees them.
    run(
        &mut c,
        Command::DeleteParticipant {
            room: "r".into(),
            id: "a".into(),
        },
    )
    .unwrap();
    assert!(c.addresses.is_empty());
    assert!(!c.ufrags.contains_key("fresh2"));
}

#[test]
fn room_settings_survive_a_restart_and_plain_legs_is_fixed() {
    let mut c = core_with(Restore::default());
    let (status, body, _, ops) = room(&mut c, Some(true)).unwrap();
    assert_eq!(status, 201);
    assert_eq!(body["plain_legs"], true);
    assert_eq!(
        room(&mut c, Some(false)).unwrap_err().code,
        Code::PlainLegsFixed
    );
    assert_eq!(room(&mut c, None).unwrap().0, 200);
    let mut record = match &ops[0] {
        StoreOp::PutRoom(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    let (_, _, _, ops) = publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    for op in ops {
        match op {
            StoreOp::PutRoom(r) => record = r,
            StoreOp::PutParticipant(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let participant = c.rooms["r"].participants["a"].record("r", "a");
    let mut c2 = core_with(Restore {
        rooms: vec![record],
        participants: vec![participant],
        ..Restore::default()
    });
    let r = run(&mut c2, Command::GetRoom { room: "r".into() })
        .unwrap()
        .1;
    assert_eq!(r["plain_legs"], true);
    assert_eq!(r["codecs"], {
        run(&mut c, Command::GetRoom { room: "r".into() })
            .unwrap()
            .1["codecs"]
            .clone()
    });
    // Back as a WebRTC participant, DTLS to be run again.
    let p = get(&mut c2, "a");
    assert_eq!(p["transport"], "webrtc");
    // A room from before version 3 of the schema: `{}`.
    assert_eq!(restore_room("{}"), Some((CodecTable::new(), false)));
    assert_eq!(restore_room("not json"), None);
}

#[test]
fn dtls_reports_show_in_the_view_and_stale_sessions_are_ignored() {
    let mut c = core_with(Restore::default());
    room(&mut c, None).unwrap();
    publish(&mut c, "a", CHROMIUM_OFFER, 1).unwrap();
    let room_id = c.rooms["r"].id;
    let report = |session, state, profile| {
        Command::Dtls(DtlsReport {
            room: room_id,
            participant: "a".into(),
            leg: Leg::Main,
            session,
            state,
            profile,
            failure: None,
            keys: None,
        })
    };
    // A report about another session of the leg changes nothing.
    run(&mut c, report(999, DtlsState::Connected, None)).unwrap();
    assert_eq!(get(&mut c, "a")["dtls"], "new");
    run(&mut c, report(1000, DtlsState::Connecting, None)).unwrap();
    assert_eq!(get(&mut c, "a")["dtls"], "connecting");
    let (_, _, _, ops) = run(
        &mut c,
        report(1000, DtlsState::Connected, Some("SRTP_AEAD_AES_128_GCM")),
    )
    .unwrap();
    // Nothing of DTLS reaches the database.
    assert!(ops.is_empty(), "{ops:?}");
    let p = get(&mut c, "a");
    assert_eq!(p["dtls"], "connected");
    assert_eq!(p["srtp_profile"], "SRTP_AEAD_AES_128_GCM");
    assert_eq!(p["legs"][0]["srtp_profile"], "SRTP_AEAD_AES_128_GCM");
}
