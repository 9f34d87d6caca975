//! A large room's fan-out shared between two workers (`--workers 2`): every receiver gets every
//! packet of every publisher once, in the order it was sent, whichever worker sent its copy.
//! Run once per backend (`RELAY_TEST_BACKEND=mmsg|io_uring`, tests/run.sh).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use e2e::{Client, Options, Relay, rtcp_sr, rtp};

const PUBLISHERS: usize = 4;
const RECEIVERS: usize = 200;
const ROUNDS: u16 = 60;
/// Per round and publisher: one audio packet, a video frame of this many packets sent back to
/// back (a GSO run on the relay), and a sender report.
const FRAME: u16 = 4;

#[test]
fn a_shared_fan_out_keeps_every_receivers_order_and_loses_nothing() {
    let relay = Relay::start_with(Options {
        args: ["--workers", "2", "--handoff-min-members", "64"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    relay.room("big");
    let publishers: Vec<Client> = (0..PUBLISHERS).map(|_| Client::new()).collect();
    // Receivers read without blocking, so that draining 200 of them per round costs nothing.
    let receivers: Vec<UdpSocket> = (0..RECEIVERS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    for (i, p) in publishers.iter().enumerate() {
        let (audio, video) = ssrcs(i);
        relay.join(
            "big",
            &format!("p{i}"),
            p,
            &[(audio, "audio"), (video, "video")],
        );
    }
    for (i, r) in receivers.iter().enumerate() {
        let body =
            serde_json::json!({"address": r.local_addr().unwrap().to_string(), "tracks": []});
        relay.ok(
            "PUT",
            &format!("/v1/rooms/big/participants/r{i}"),
            Some(&body),
        );
    }
    let mut seen = Seen {
        last: vec![HashMap::new(); RECEIVERS],
        got: vec![0; RECEIVERS],
        disorder: Vec::new(),
    };
    let mut video_seq = [0u16; PUBLISHERS];
    for round in 0..ROUNDS {
        for (i, p) in publishers.iter().enumerate() {
            let (audio, video) = ssrcs(i);
            p.send(relay.media, &rtp(audio, round, &[0xa; 160]));
            for _ in 0..FRAME {
                p.send(relay.media, &rtp(video, video_seq[i], &[0xb; 1000]));
                video_seq[i] += 1;
            }
            p.send(relay.media, &rtcp_sr(video));
        }
        // Paced, so that the receivers' buffers hold what arrives between two reads.
        std::thread::sleep(Duration::from_millis(50));
        seen.check(&receivers);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = u64::from(ROUNDS) * u64::from(1 + FRAME) * PUBLISHERS as u64;
    while Instant::now() < deadline && seen.got.iter().any(|&g| g < want) {
        std::thread::sleep(Duration::from_millis(5));
        seen.check(&receivers);
    }
    // A refused hand-off (the peer far behind) is sent by the receiving worker and may overtake
    // the copies still queued: the load here must never get there.
    assert_eq!(
        relay.metric("relay_handoff_full_total"),
        0,
        "a hand-off was refused"
    );
    let disorder = &seen.disorder;
    assert!(
        disorder.is_empty(),
        "out of order (receiver, ssrc, previous, got): {disorder:?}"
    );
    let short: Vec<(usize, u64)> = seen
        .got
        .iter()
        .enumerate()
        .filter(|(_, g)| **g != want)
        .map(|(i, g)| (i, *g))
        .take(10)
        .collect();
    assert!(
        short.is_empty(),
        "receivers that did not get {want}: {short:?}"
    );
    let handed = relay.metric("relay_handoff_out_total");
    assert!(handed > 0, "no fan-out was shared");
    assert_eq!(relay.metric("relay_handoff_in_total"), handed);
}

/// The audio and video SSRCs of publisher `i`.
fn ssrcs(i: usize) -> (u32, u32) {
    (0x1000 + i as u32, 0x2000 + i as u32)
}

/// What the receivers got: per receiver and SSRC the last sequence number, counts, and the
/// first packets that arrived out of order.
struct Seen {
    last: Vec<HashMap<u32, u16>>,
    got: Vec<u64>,
    disorder: Vec<(usize, u32, Option<u16>, u16)>,
}

impl Seen {
    /// Reads what each receiver has now.
    fn check(&mut self, receivers: &[UdpSocket]) {
        let mut buf = [0u8; 2048];
        for (i, r) in receivers.iter().enumerate() {
            while let Ok(n) = r.recv(&mut buf) {
                let p = &buf[..n];
                // Sender reports (type 200) carry no sequence number.
                if p.len() < 12 || p[1] == 200 {
                    continue;
                }
                let seq = u16::from_be_bytes([p[2], p[3]]);
                let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                self.got[i] += 1;
                let prev = self.last[i].insert(ssrc, seq);
                let expected = prev.map_or(0, |s| s.wrapping_add(1));
                if seq != expected && self.disorder.len() < 10 {
                    self.disorder.push((i, ssrc, prev, seq));
                }
            }
        }
    }
}
