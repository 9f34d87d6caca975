use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATER: &str = "2026-12-31T00:00:00Z";
const LATER_UNIX: u64 = 1_798_675_200;

fn spec(body: &str) -> RuleSpec {
    parse(body.as_bytes()).unwrap()
}

fn basis() -> Option<Basis> {
    Some(Basis {
        authority: "Court".into(),
        reference: "A-1".into(),
        jurisdiction: "DE".into(),
    })
}

fn pref(room: &str, participant: &str) -> ParticipantRef {
    ParticipantRef {
        room: room.into(),
        participant: participant.into(),
    }
}

fn rule(regions: &[&str], participants: &[(&str, &str)], rooms: &[&str]) -> Rule {
    rule_with(regions, participants, rooms, Direction::Both, Media::All)
}

fn rule_with(
    regions: &[&str],
    participants: &[(&str, &str)],
    rooms: &[&str],
    direction: Direction,
    media: Media,
) -> Rule {
    let s = RuleSpec {
        r#match: Match {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            participants: participants.iter().map(|(r, p)| pref(r, p)).collect(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        },
        direction,
        media,
        basis: basis(),
        expires_at: Some(LATER.into()),
    };
    validate(&s, NOW).unwrap()
}

fn subj<'a>(room: &'a str, participant: &'a str, region: Option<&str>) -> Subject<'a> {
    let region = region.map(|r| {
        let b = r.as_bytes();
        [b[0], b[1]]
    });
    Subject {
        room,
        participant,
        region,
    }
}

fn err_code(body: &str) -> &'static str {
    match parse(body.as_bytes()) {
        Err(e) => e.code(),
        Ok(s) => validate(&s, NOW).unwrap_err().code(),
    }
}

// ---- parsing and validation ----

#[test]
fn parses_the_design_example() {
    let s = spec(
        r#"{"match": {"regions": ["CN"], "participants": [{"room": "r1", "participant": "p7"}],
            "rooms": ["r1"]}, "direction": "both", "media": "all",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"},
            "expires_at": "2026-12-31T00:00:00Z"}"#,
    );
    let r = validate(&s, NOW).unwrap();
    assert_eq!(r.regions(), &[*b"CN"]);
    assert_eq!(r.participants(), &[pref("r1", "p7")]);
    assert_eq!(r.rooms(), &["r1".to_string()]);
    assert_eq!(r.direction(), Direction::Both);
    assert_eq!(r.media(), Media::All);
    assert_eq!(r.basis().jurisdiction, "CN");
    assert_eq!(r.expires_at_unix(), LATER_UNIX);
}

#[test]
fn direction_and_media_default_to_both_and_all() {
    let s = spec(
        r#"{"match": {"regions": ["CN"]}, "expires_at": "2026-12-31T00:00:00Z",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}}"#,
    );
    assert_eq!(s.direction, Direction::Both);
    assert_eq!(s.media, Media::All);
}

#[test]
fn spec_round_trips_through_json() {
    let body = r#"{"match":{"regions":["CN"],"participants":[],"rooms":[]},"direction":"send",
        "media":"video","basis":{"authority":"A","reference":"R","jurisdiction":"CN"},
        "expires_at":"2026-12-31T00:00:00Z"}"#;
    let s = spec(body);
    let again: RuleSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(s, again);
}

#[test]
fn unknown_fields_are_refused_by_name() {
    for (body, field) in [
        (r#"{"match": {"regoins": ["CN"]}}"#, "regoins"),
        (r#"{"colour": 1}"#, "colour"),
        (r#"{"basis": {"authority": "a", "court": "b"}}"#, "court"),
        (
            r#"{"match": {"participants": [{"room": "r", "participant": "p", "ip": "x"}]}}"#,
            "ip",
        ),
    ] {
        let e = parse(body.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "invalid_json");
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn bad_enum_values_are_refused() {
    let e = parse(br#"{"direction": "sideways"}"#).unwrap_err();
    assert!(e.to_string().contains("sideways"), "{e}");
    assert_eq!(err_code(r#"{"media": "smell"}"#), "invalid_json");
    assert_eq!(err_code("not json"), "invalid_json");
}

#[test]
fn validation_errors_have_stable_codes() {
    let ok_basis = r#""basis": {"authority": "A", "reference": "R", "jurisdiction": "DE"}"#;
    let exp = r#""expires_at": "2026-12-31T00:00:00Z""#;
    let m = r#""match": {"regions": ["CN"]}"#;
    let cases = [
        (format!("{{{m}, {exp}}}"), "missing_basis"),
        (format!(r#"{{{m}, {exp}, "basis": null}}"#), "missing_basis"),
        (
            format!(
                r#"{{{m}, {exp}, "basis": {{"authority": " ", "reference": "R", "jurisdiction": "DE"}}}}"#
            ),
            "missing_basis",
        ),
        (
            format!(r#"{{{m}, {exp}, "basis": {{"authority": "A", "jurisdiction": "DE"}}}}"#),
            "missing_basis",
        ),
        (
            format!(
                r#"{{{m}, {exp}, "basis": {{"authority": "A", "reference": "R", "jurisdiction": "de"}}}}"#
            ),
            "invalid_jurisdiction",
        ),
        (
            format!(
                r#"{{{m}, {exp}, "basis": {{"authority": "A", "reference": "R", "jurisdiction": "DEU"}}}}"#
            ),
            "invalid_jurisdiction",
        ),
        (
            format!(
                r#"{{{m}, {exp}, "basis": {{"authority": "A\u0007", "reference": "R", "jurisdiction": "DE"}}}}"#
            ),
            "invalid_basis",
        ),
        (format!("{{{ok_basis}, {exp}}}"), "empty_match"),
        (
            format!(r#"{{"match": {{"rooms": ["r1"]}}, {ok_basis}, {exp}}}"#),
            "empty_match",
        ),
        (
            format!(r#"{{"match": {{"regions": ["cn"]}}, {ok_basis}, {exp}}}"#),
            "invalid_region",
        ),
        (
            format!(r#"{{"match": {{"regions": ["C1"]}}, {ok_basis}, {exp}}}"#),
            "invalid_region",
        ),
        (
            format!(r#"{{"match": {{"regions": ["É"]}}, {ok_basis}, {exp}}}"#),
            "invalid_region",
        ),
        (
            format!(
                r#"{{"match": {{"participants": [{{"room": "", "participant": "p"}}]}}, {ok_basis}, {exp}}}"#
            ),
            "invalid_id",
        ),
        (
            format!(
                r#"{{"match": {{"participants": [{{"room": "r", "participant": "p q"}}]}}, {ok_basis}, {exp}}}"#
            ),
            "invalid_id",
        ),
        (
            format!(r#"{{"match": {{"regions": ["CN"], "rooms": ["a/b"]}}, {ok_basis}, {exp}}}"#),
            "invalid_id",
        ),
        (format!("{{{m}, {ok_basis}}}"), "missing_expiry"),
        (
            format!(r#"{{{m}, {ok_basis}, "expires_at": "tomorrow"}}"#),
            "invalid_expiry",
        ),
        (
            format!(r#"{{{m}, {ok_basis}, "expires_at": "2026-12-31T00:00:00+02:00"}}"#),
            "invalid_expiry",
        ),
        (
            format!(r#"{{{m}, {ok_basis}, "expires_at": "2025-12-31T23:59:59Z"}}"#),
            "expired",
        ),
        (
            format!(r#"{{{m}, {ok_basis}, "expires_at": "2026-01-01T00:00:00Z"}}"#),
            "expired",
        ),
    ];
    for (body, code) in cases {
        assert_eq!(err_code(&body), code, "{body}");
    }
}

#[test]
fn messages_say_what_to_fix() {
    let e = RuleError::InvalidRegion { value: "cn".into() };
    assert!(e.to_string().contains("write \"CN\""), "{e}");
    assert!(
        RuleError::EmptyMatch.to_string().contains("whole"),
        "{}",
        RuleError::EmptyMatch
    );
    let e = RuleError::MissingBasis { field: "basis" };
    assert!(e.to_string().contains("needs a basis"), "{e}");
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "x".repeat(10_000);
    let body = format!(
        r#"{{"match": {{"regions": ["{long}"]}}, "expires_at": "{LATER}",
           "basis": {{"authority": "A", "reference": "R", "jurisdiction": "DE"}}}}"#
    );
    let e = validate(&spec(&body), NOW).unwrap_err();
    assert!(e.to_string().len() < 300, "{e}");
}

#[test]
fn limits_are_enforced() {
    let mut s = spec(
        r#"{"match": {"regions": ["CN"]}, "expires_at": "2026-12-31T00:00:00Z",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}}"#,
    );
    s.r#match.rooms = vec!["r".into(); MAX_LIST_LEN + 1];
    assert_eq!(validate(&s, NOW).unwrap_err().code(), "too_many");
    s.r#match.rooms = vec!["r".repeat(MAX_ID_LEN + 1)];
    assert_eq!(validate(&s, NOW).unwrap_err().code(), "invalid_id");
    s.r#match.rooms = vec!["r".repeat(MAX_ID_LEN)];
    assert!(validate(&s, NOW).is_ok());
    s.basis.as_mut().unwrap().reference = "é".repeat(MAX_BASIS_LEN / 2 + 1);
    assert_eq!(validate(&s, NOW).unwrap_err().code(), "invalid_basis");
    s.basis.as_mut().unwrap().reference = "é".repeat(MAX_BASIS_LEN / 2);
    assert!(validate(&s, NOW).is_ok());
}

#[test]
fn compile_accepts_past_expiry() {
    let s = spec(
        r#"{"match": {"regions": ["CN"]}, "expires_at": "2020-01-01T00:00:00Z",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}}"#,
    );
    assert_eq!(validate(&s, NOW).unwrap_err().code(), "expired");
    assert_eq!(compile(&s).unwrap().expires_at_unix(), 1_577_836_800);
}

#[test]
fn fractional_expiry_rounds_down() {
    let s = spec(
        r#"{"match": {"regions": ["CN"]}, "expires_at": "2026-12-31T00:00:00.900Z",
            "basis": {"authority": "A", "reference": "R", "jurisdiction": "CN"}}"#,
    );
    assert_eq!(validate(&s, NOW).unwrap().expires_at_unix(), LATER_UNIX);
}

#[test]
fn lists_are_sorted_and_deduplicated() {
    let a = rule(
        &["US", "CN", "US"],
        &[("r2", "b"), ("r1", "a"), ("r2", "b")],
        &["y", "x", "y"],
    );
    let b = rule(&["CN", "US"], &[("r1", "a"), ("r2", "b")], &["x", "y"]);
    assert_eq!(a, b);
    assert_eq!(a.regions(), &[*b"CN", *b"US"]);
}

// ---- matching ----

#[test]
fn participant_match_needs_room_and_id() {
    let r = rule(&[], &[("r1", "p7")], &[]);
    assert!(r.matches(&subj("r1", "p7", None)));
    assert!(r.matches(&subj("r1", "p7", Some("US"))));
    assert!(!r.matches(&subj("r2", "p7", None)));
    assert!(!r.matches(&subj("r1", "p8", None)));
}

#[test]
fn region_match_in_any_room() {
    let r = rule(&["CN"], &[], &[]);
    assert!(r.matches(&subj("r1", "a", Some("CN"))));
    assert!(r.matches(&subj("r9", "b", Some("CN"))));
    assert!(!r.matches(&subj("r1", "a", Some("US"))));
    assert!(!r.matches(&subj("r1", "a", None)));
}

#[test]
fn rooms_restrict_both_kinds_of_match() {
    let r = rule(&["CN"], &[("r2", "p")], &["r1"]);
    assert!(r.matches(&subj("r1", "a", Some("CN"))));
    assert!(!r.matches(&subj("r3", "a", Some("CN"))));
    // Named, but outside the rule's rooms: the rooms list limits every match.
    assert!(!r.matches(&subj("r2", "p", None)));
}

#[test]
fn participants_or_regions() {
    let r = rule(&["CN"], &[("r1", "p")], &[]);
    assert!(r.matches(&subj("r1", "p", Some("US"))));
    assert!(r.matches(&subj("r1", "q", Some("CN"))));
    assert!(!r.matches(&subj("r1", "q", Some("US"))));
}

#[test]
fn blocks_by_direction_and_media() {
    use Direction::*;
    let cases = [
        (Send, Media::All, [true, true, false, false]),
        (Receive, Media::All, [false, false, true, true]),
        (Both, Media::Audio, [true, false, true, false]),
        (Both, Media::Video, [false, true, false, true]),
        (Send, Media::Video, [false, true, false, false]),
    ];
    for (d, m, want) in cases {
        let r = rule_with(&["CN"], &[], &[], d, m);
        let got = [
            r.blocks_send(Kind::Audio),
            r.blocks_send(Kind::Video),
            r.blocks_receive(Kind::Audio),
            r.blocks_receive(Kind::Video),
        ];
        assert_eq!(got, want, "{d:?} {m:?}");
    }
}

// ---- rule set ----

#[test]
fn effect_names_lowest_rule_per_slot() {
    let mut set = RuleSet::new();
    set.insert(
        RuleId(5),
        rule_with(&["CN"], &[], &[], Direction::Both, Media::All),
    );
    set.insert(
        RuleId(3),
        rule_with(&[], &[("r1", "p")], &[], Direction::Send, Media::Audio),
    );
    set.insert(
        RuleId(9),
        rule_with(&["US"], &[], &[], Direction::Receive, Media::Video),
    );

    let e = set.effect(&subj("r1", "p", Some("CN")));
    assert_eq!(
        e,
        Effect {
            send_audio: Some(RuleId(3)),
            send_video: Some(RuleId(5)),
            recv_audio: Some(RuleId(5)),
            recv_video: Some(RuleId(5)),
        }
    );
    assert_eq!(e.rules().collect::<Vec<_>>(), [RuleId(3), RuleId(5)]);
    assert_eq!(e.send(Kind::Audio), Some(RuleId(3)));
    assert_eq!(e.receive(Kind::Video), Some(RuleId(5)));

    let e = set.effect(&subj("r1", "q", Some("US")));
    assert_eq!(
        e,
        Effect {
            recv_video: Some(RuleId(9)),
            ..Effect::default()
        }
    );
    assert!(set.effect(&subj("r1", "q", Some("FR"))).is_none());
}

#[test]
fn candidates_are_unique_and_sorted() {
    let mut set = RuleSet::new();
    set.insert(RuleId(2), rule(&["CN"], &[("r", "p")], &[]));
    set.insert(RuleId(1), rule(&["CN"], &[], &["other"]));
    let s = subj("r", "p", Some("CN"));
    let c: Vec<_> = set.candidates(&s).map(|(id, _)| id).collect();
    assert_eq!(c, [RuleId(1), RuleId(2)]);
    let m: Vec<_> = set.matching(&s).map(|(id, _)| id).collect();
    assert_eq!(m, [RuleId(2)]);
}

#[test]
fn insert_replaces_and_remove_cleans_indexes() {
    let mut set = RuleSet::new();
    assert!(
        set.insert(RuleId(1), rule(&["CN"], &[("r", "p")], &[]))
            .is_none()
    );
    assert!(set.insert(RuleId(1), rule(&["US"], &[], &[])).is_some());
    assert_eq!(set.len(), 1);
    assert!(set.effect(&subj("r", "p", Some("CN"))).is_none());
    assert!(!set.effect(&subj("r", "p", Some("US"))).is_none());
    assert!(set.remove(RuleId(1)).is_some());
    assert!(set.remove(RuleId(1)).is_none());
    assert!(set.is_empty());
    assert!(set.indexes_are_empty());
}

#[test]
fn expiry_order_and_next_deadline() {
    let mut set = RuleSet::new();
    let mut at = |t: &str, id: u64| {
        let s = RuleSpec {
            r#match: Match {
                regions: vec!["CN".into()],
                ..Match::default()
            },
            basis: basis(),
            expires_at: Some(t.into()),
            ..RuleSpec::default()
        };
        set.insert(RuleId(id), validate(&s, NOW).unwrap());
    };
    at("2026-03-01T00:00:00Z", 1);
    at("2026-02-01T00:00:00Z", 2);
    at("2026-02-01T00:00:00Z", 3);
    let feb = 1_769_904_000;
    assert_eq!(set.next_expiry(), Some(feb));
    assert!(set.expired(feb - 1).is_empty());
    assert_eq!(set.expired(feb), [RuleId(2), RuleId(3)]);
    assert_eq!(set.expired(u64::MAX), [RuleId(2), RuleId(3), RuleId(1)]);
}

// ---- properties ----

const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const PEOPLE: [&str; 3] = ["a", "b", "c"];
const REGIONS: [&str; 3] = ["CN", "US", "DE"];

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        proptest::collection::vec(0..3usize, 0..3),
        proptest::collection::vec((0..3usize, 0..3usize), 0..4),
        proptest::collection::vec(0..3usize, 0..3),
        0..3u8,
        0..3u8,
    )
        .prop_filter("a rule names someone", |(g, p, _, _, _)| {
            !g.is_empty() || !p.is_empty()
        })
        .prop_map(|(g, p, rooms, d, m)| {
            let g: Vec<_> = g.iter().map(|i| REGIONS[*i]).collect();
            let p: Vec<_> = p.iter().map(|(r, p)| (ROOMS[*r], PEOPLE[*p])).collect();
            let rooms: Vec<_> = rooms.iter().map(|i| ROOMS[*i]).collect();
            let d = [Direction::Send, Direction::Receive, Direction::Both][d as usize];
            let m = [Media::Audio, Media::Video, Media::All][m as usize];
            rule_with(&g, &p, &rooms, d, m)
        })
}

fn brute_effect(rules: &[(RuleId, Rule)], s: &Subject<'_>) -> Effect {
    let pick = |f: &dyn Fn(&Rule) -> bool| {
        rules
            .iter()
            .filter(|(_, r)| r.matches(s) && f(r))
            .map(|(id, _)| *id)
            .min()
    };
    Effect {
        send_audio: pick(&|r| r.blocks_send(Kind::Audio)),
        send_video: pick(&|r| r.blocks_send(Kind::Video)),
        recv_audio: pick(&|r| r.blocks_receive(Kind::Audio)),
        recv_video: pick(&|r| r.blocks_receive(Kind::Video)),
    }
}

proptest! {
    /// After random inserts and removes, the index gives exactly what a scan of all rules
    /// gives, for every subject.
    #[test]
    fn index_agrees_with_scan(
        ops in proptest::collection::vec((0..8u64, proptest::option::of(arb_rule())), 0..24),
    ) {
        let mut set = RuleSet::new();
        let mut model = std::collections::BTreeMap::new();
        for (id, r) in ops {
            match r {
                Some(r) => {
                    set.insert(RuleId(id), r.clone());
                    model.insert(RuleId(id), r);
                }
                None => {
                    prop_assert_eq!(set.remove(RuleId(id)).is_some(), model.remove(&RuleId(id)).is_some());
                }
            }
        }
        let all: Vec<_> = model.into_iter().collect();
        prop_assert_eq!(set.len(), all.len());
        for room in ROOMS {
            for who in PEOPLE {
                for region in [None, Some("CN"), Some("US"), Some("DE"), Some("FR")] {
                    let s = subj(room, who, region);
                    let want: Vec<_> =
                        all.iter().filter(|(_, r)| r.matches(&s)).map(|(id, _)| *id).collect();
                    let got: Vec<_> = set.matching(&s).map(|(id, _)| id).collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(set.effect(&s), brute_effect(&all, &s));
                }
            }
        }
    }

    /// Any bytes: parsing and validation return, never panic.
    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(s) = parse(&body) {
            let _ = validate(&s, NOW);
        }
    }

    /// Any expiry string: an answer, never a panic.
    #[test]
    fn expiry_never_panics(t in "\\PC{0,40}") {
        let s = RuleSpec {
            r#match: Match { regions: vec!["CN".into()], ..Match::default() },
            basis: basis(),
            expires_at: Some(t),
            ..RuleSpec::default()
        };
        let _ = validate(&s, NOW);
    }
}
