//! SDP parser and builders: any text is refused with an error naming a line or parsed; what
//! parses and is answered gives an answer that parses again, carries only the relay's codecs
//! with the room's numbers, and whose tracks each name an SSRC the offer declared.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::sdp::{self, CodecTable, Fingerprint, IceCredentials, Local};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let offer = match sdp::parse(text) {
        Ok(offer) => offer,
        Err(e) => {
            assert!(e.line <= text.split('\n').count(), "{e}");
            return;
        }
    };
    let local = Local {
        ice: IceCredentials {
            ufrag: "evtj".into(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
        },
        fingerprint: Fingerprint {
            hash: sdp::HashFunction::Sha256,
            value: vec![7; 32],
        },
        addresses: vec!["127.0.0.1:40000".parse().unwrap()],
        session_id: 1,
        session_version: 1,
    };
    let Ok(p) = sdp::answer_publish(&offer, &CodecTable::new(), &local) else {
        return;
    };
    let again = sdp::parse(&sdp::write(&p.answer)).expect("the relay's answer parses");
    assert_eq!(again.media.len(), offer.media.len());
    for m in again.media.iter().filter(|m| m.port != 0) {
        for payload in &m.payloads {
            let room = p
                .table
                .entries()
                .iter()
                .any(|e| e.pt == payload.pt || e.rtx == Some(payload.pt));
            assert!(room, "payload type {} is not the room's", payload.pt);
        }
    }
    for t in &p.tracks {
        let m = offer
            .media_by_mid(&t.mid)
            .expect("a track's mid is the offer's");
        assert!(m.ssrc(t.ssrc).is_some());
    }
});
