//! A large room's fan-out shared between two workers (`--workers 2`): every receiver gets every
//! packet of every publisher at most once and in the order it was sent, whichever worker sent
//! its copy; every copy that did not arrive is accounted for (a refused hand-off, a send the
//! kernel refused, a receiver's full socket). Once at 2,400 packets/s in (480,000 copies/s out),
//! where nothing may be lost unless the relay or the kernel counted it, and once as fast as the
//! test can send (bursts past what two cores fan out), where refused hand-offs are expected and
//! order must still hold. Run once per backend (`RELAY_TEST_BACKEND=mmsg|io_uring`,
//! tests/run.sh).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use e2e::{Client, Options, Relay, rtcp_sr, rtp};

const PUBLISHERS: usize = 4;
const RECEIVERS: usize = 200;
const ROUNDS: u16 = 100;

/// The tests here load both cores: one at a time, so that none measures another's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Per round and publisher: one audio packet, a video frame of this many packets sent back to
/// back (a GSO run on the relay), and a sender report.
const FRAME: u16 = 4;

#[test]
fn a_shared_fan_out_keeps_every_receivers_order_at_2400_packets_per_second() {
    // Between two rounds: 24 packets in per 10 ms.
    shared_fan_out(Duration::from_millis(10));
}

#[test]
fn a_shared_fan_out_keeps_every_receivers_order_when_overloaded() {
    shared_fan_out(Duration::ZERO);
}

/// Sends `ROUNDS` rounds, one every `pace`, and checks what the receivers got.
fn shared_fan_out(pace: Duration) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
            big_buffer(&s);
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
    let start = Instant::now();
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
        let next = start + pace * u32::from(round + 1);
        seen.check(&receivers);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = start.elapsed();
    // The rest arrives, or stops arriving (for a second) when some copies were lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = u64::from(ROUNDS) * u64::from(1 + FRAME) * PUBLISHERS as u64;
    let mut last_news = Instant::now();
    while Instant::now() < deadline
        && seen.got.iter().any(|&g| g < want)
        && last_news.elapsed() < Duration::from_secs(1)
    {
        std::thread::sleep(Duration::from_millis(5));
        let before: u64 = seen.got.iter().sum();
        seen.check(&receivers);
        if seen.got.iter().sum::<u64>() > before {
            last_news = Instant::now();
        }
    }
    // Order holds whatever the load: a refused hand-off drops that share, it is never sent by
    // the receiving worker ahead of copies still queued on the peer.
    let disorder = &seen.disorder;
    assert!(
        disorder.is_empty(),
        "out of order (receiver, ssrc, previous, got): {disorder:?}"
    );
    assert!(
        seen.got.iter().all(|&g| g <= want),
        "a receiver got a copy twice"
    );
    let handed = relay.metric("relay_handoff_out_total");
    assert!(handed > 0, "no fan-out was shared");
    assert_eq!(relay.metric("relay_handoff_in_total"), handed);
    // Every copy that did not arrive is accounted for. A refused share is at most every
    // receiver; sender reports count in the relay's figures but not in `got`.
    let refused = relay.metric("relay_handoff_full_total");
    let send_errors = relay.metric("relay_send_errors_total");
    let socket_drops = receive_drops(&receivers);
    let missing: u64 = seen.got.iter().map(|&g| want - g).sum();
    eprintln!(
        "{} packets sent in {elapsed:?}: {missing} copies missing; {refused} hand-offs refused, \
         {send_errors} sends refused, {socket_drops} dropped at the receivers' sockets",
        u64::from(ROUNDS) * (2 + u64::from(FRAME)) * PUBLISHERS as u64
    );
    assert!(
        missing <= refused * RECEIVERS as u64 + send_errors + socket_drops,
        "{missing} copies missing, more than the refusals and drops account for"
    );
    if refused + send_errors + socket_drops == 0 {
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
    }
}

/// A receive buffer that holds a whole test's worth of copies, so that a test thread that falls
/// behind the relay (other work on the machine) delays reads but loses nothing.
fn big_buffer(s: &UdpSocket) {
    set_rcvbuf(s, 8 << 20);
}

/// Datagrams the kernel dropped at these sockets (the `drops` column of /proc/net/udp).
fn receive_drops(sockets: &[UdpSocket]) -> u64 {
    let ports: Vec<String> = sockets
        .iter()
        .map(|s| format!("0100007F:{:04X}", s.local_addr().unwrap().port()))
        .collect();
    let table = std::fs::read_to_string("/proc/net/udp").expect("read /proc/net/udp");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = *f.get(1)?;
            ports
                .iter()
                .any(|p| p == local)
                .then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// One worker saturated by a fan-out of 2,000 (a publisher far above what one core sends):
/// a control change still takes effect within a fraction of a second, because a turn of the
/// worker plans a bounded number of copies before it looks at its control messages again (an
/// io_uring turn used to handle every receive completion it reaped, up to `--ring-buffers`
/// datagrams, each with 2,000 copies: seconds).
#[test]
fn a_worker_saturated_by_a_large_fan_out_still_applies_changes_promptly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const LISTENERS: usize = 2000;
    let relay = Relay::start_with(Options {
        args: ["--workers", "1"].map(String::from).to_vec(),
        ..Options::default()
    });
    relay.room("webinar");
    relay.room("other");
    let publisher = Client::new();
    relay.join("webinar", "speaker", &publisher, &[(0x77, "audio")]);
    // Listeners that never read, with the smallest receive buffer: the kernel drops the copies.
    let listeners: Vec<UdpSocket> = (0..LISTENERS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind listener");
            set_rcvbuf(&s, 0);
            s
        })
        .collect();
    for (i, l) in listeners.iter().enumerate() {
        let body =
            serde_json::json!({"address": l.local_addr().unwrap().to_string(), "tracks": []});
        relay.ok(
            "PUT",
            &format!("/v1/rooms/webinar/participants/l{i}"),
            Some(&body),
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let media = relay.media;
        std::thread::spawn(move || {
            // At most 20,000 packets/s for at most 8 s: 10x more than one core fans out to 2,000.
            let start = Instant::now();
            let mut seq = 0u16;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(8)
            {
                for _ in 0..20 {
                    publisher.send(media, &rtp(0x77, seq, &[0xc; 160]));
                    seq = seq.wrapping_add(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let guest = UdpSocket::bind("127.0.0.1:0").expect("bind guest");
        let body =
            serde_json::json!({"address": guest.local_addr().unwrap().to_string(), "tracks": []});
        let t = Instant::now();
        relay.ok(
            "PUT",
            &format!("/v1/rooms/other/participants/g{i}"),
            Some(&body),
        );
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let copies = relay.metric("relay_packets_out_total") + relay.metric("relay_send_errors_total");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    eprintln!("slowest join while saturated: {slowest:?} ({copies} copies sent by then)");
    assert!(copies > 100_000, "the worker was not busy: {copies} copies");
    assert!(
        slowest < Duration::from_millis(1000),
        "a join took {slowest:?} while the worker was saturated"
    );
}

/// Sets a socket's receive buffer, bytes (0: the kernel's smallest).
fn set_rcvbuf(s: &UdpSocket, size: libc::c_int) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket with a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// The audio and video SSRCs of publisher `i`.
fn ssrcs(i: usize) -> (u32, u32) {
    (0x1000 + i as u32, 0x2000 + i as u32)
}

/// What the receivers got: per receiver and SSRC the last sequence number, counts, and the
/// first packets that arrived out of order (at or before the last one received).
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
                // Forward jumps are copies lost (accounted for below); a sequence number at or
                // before the last one is a copy out of order or twice.
                let expected = prev.map_or(0, |s| s.wrapping_add(1));
                if (seq.wrapping_sub(expected) as i16) < 0 && self.disorder.len() < 10 {
                    self.disorder.push((i, ssrc, prev, seq));
                }
            }
        }
    }
}
