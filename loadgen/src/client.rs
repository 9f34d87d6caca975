//! Client threads: each drives many participants' sockets, sending their paced media in
//! `sendmmsg` batches and reading whatever arrives with epoll and `recvmmsg`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use socket2::SockAddr;

use crate::io::{Poller, RecvBatch, SendBatch};
use crate::profile::{Kind, Pacer, Profile, Rng};
use crate::rtp;
use crate::stats::{Receipt, StreamMap};
use crate::webrtc::Srtp;
use crate::wheel::{SLOT_NS, Wheel};

/// One participant's socket.
pub(crate) struct ClientSpec {
    pub(crate) participant: u32,
    pub(crate) socket: UdpSocket,
    /// A WebRTC leg's SRTP state: seals what it sends or opens what it receives.
    pub(crate) srtp: Option<Srtp>,
}

/// One stream a client sends.
pub(crate) struct StreamSpec {
    pub(crate) id: u32,
    /// Index into the thread's clients.
    pub(crate) client: usize,
    pub(crate) profile: Profile,
    pub(crate) ssrc: u32,
    /// Where each packet goes: the relay's media address, or every receiver on the direct path.
    pub(crate) dests: Vec<SocketAddr>,
}

/// What one thread drives.
#[derive(Default)]
pub(crate) struct Work {
    pub(crate) clients: Vec<ClientSpec>,
    pub(crate) streams: Vec<StreamSpec>,
}

/// State the threads share with the run's control loop.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    /// Whether each participant (global index) may send now.
    pub(crate) active: Vec<AtomicBool>,
    /// Whether each participant's client got a STUN Binding success.
    pub(crate) latched: Vec<AtomicBool>,
    /// Kind of each stream id.
    pub(crate) kinds: Vec<Kind>,
    pub(crate) send_from_ns: u64,
    pub(crate) send_until_ns: AtomicU64,
    pub(crate) drain_ns: u64,
    /// Poll with a zero timeout instead of sleeping.
    pub(crate) spin: bool,
    pub(crate) max_packets: u64,
    pub(crate) seed: u64,
    pub(crate) progress: Vec<Progress>,
}

impl Shared {
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Live counters of one thread, for the progress bar.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// An interval histogram of latency (µs) for the histogram log.
pub(crate) struct Interval {
    pub(crate) index: u64,
    pub(crate) histogram: Histogram<u64>,
}

/// What a thread hands back at the end.
pub(crate) struct Outcome {
    /// What each participant received, per stream id.
    pub(crate) received: Vec<(u32, StreamMap)>,
    /// Send time (µs since start) of each packet, per stream id.
    pub(crate) send_us: Vec<(u32, Vec<u32>)>,
    /// Latency in µs, per kind.
    pub(crate) latency: [Histogram<u64>; 3],
    /// Send to the kernel's receive timestamp, µs.
    pub(crate) delivery: Histogram<u64>,
    /// Kernel receive timestamp to the read, µs.
    pub(crate) socket_wait: Histogram<u64>,
    /// Datagrams written to sockets (a packet on the direct path is one per receiver).
    pub(crate) datagrams_out: u64,
    /// Datagrams the kernel refused.
    pub(crate) send_errors: u64,
    /// Frames sent more than 1 ms after they were due (the generator itself falling behind).
    pub(crate) late_frames: u64,
    /// Copies of our packets carrying an unknown stream id or sequence number.
    pub(crate) foreign: u64,
    /// Datagrams that are not our RTP (STUN replies, garbage).
    pub(crate) other: u64,
    /// WebRTC legs: packets that did not seal, or received packets that did not open.
    pub(crate) srtp_errors: u64,
    /// First socket error seen, if any.
    pub(crate) error: Option<String>,
}

/// Runs one thread's clients until the send phase and the drain after it are over.
pub(crate) fn drive(
    work: Work,
    shared: &Shared,
    thread: usize,
    intervals: Option<mpsc::Sender<Interval>>,
) -> Outcome {
    let mut t = Thread::new(work, shared, thread, intervals);
    t.run();
    t.finish()
}

struct Stream {
    spec_id: u32,
    client: usize,
    kind: Kind,
    ssrc: u32,
    ts_base: u32,
    pacer: Pacer,
    seq: u32,
    dests: Vec<usize>,
    log: Vec<u32>,
}

struct Thread<'a> {
    shared: &'a Shared,
    thread: usize,
    clients: Vec<ClientSpec>,
    received: Vec<StreamMap>,
    streams: Vec<Stream>,
    dests: Vec<SockAddr>,
    due: Wheel,
    ready: Vec<u64>,
    poller: Option<Poller>,
    send: SendBatch,
    recv: RecvBatch,
    latency: [Histogram<u64>; 3],
    delivery: Histogram<u64>,
    socket_wait: Histogram<u64>,
    interval: Histogram<u64>,
    interval_index: u64,
    intervals: Option<mpsc::Sender<Interval>>,
    sent: u64,
    got: u64,
    datagrams_out: u64,
    send_errors: u64,
    late_frames: u64,
    foreign: u64,
    other: u64,
    srtp_errors: u64,
    error: Option<String>,
}

impl<'a> Thread<'a> {
    fn new(
        work: Work,
        shared: &'a Shared,
        thread: usize,
        intervals: Option<mpsc::Sender<Interval>>,
    ) -> Self {
        let mut dest_index: HashMap<SocketAddr, usize> = HashMap::new();
        let mut dests = Vec::new();
        let mut streams = Vec::with_capacity(work.streams.len());
        let mut due = Wheel::new(shared.send_from_ns);
        for spec in work.streams {
            let mut rng = Rng::new(shared.seed ^ (u64::from(spec.id) << 20));
            // Spread the streams' phases over one frame so they do not all send at once.
            let phase = rng.range(0, spec.profile.frame_ns.max(1) - 1);
            let pacer = Pacer::new(&spec.profile, rng.next_u64(), shared.send_from_ns + phase);
            let ids = spec
                .dests
                .iter()
                .map(|a| {
                    *dest_index.entry(*a).or_insert_with(|| {
                        dests.push(SockAddr::from(*a));
                        dests.len() - 1
                    })
                })
                .collect();
            due.push(pacer.due(), streams.len() as u32);
            streams.push(Stream {
                spec_id: spec.id,
                client: spec.client,
                kind: spec.profile.kind,
                ssrc: spec.ssrc,
                ts_base: rng.next_u64() as u32,
                pacer,
                seq: 0,
                dests: ids,
                log: Vec::new(),
            });
        }
        let mut error = None;
        let poller = match Poller::new() {
            Ok(p) => Some(p),
            Err(e) => {
                error = Some(format!("epoll: {e}"));
                None
            }
        };
        if let Some(p) = &poller {
            for (i, c) in work.clients.iter().enumerate() {
                if let Err(e) = p.add(c.socket.as_raw_fd(), i as u64) {
                    error.get_or_insert(format!("epoll add: {e}"));
                }
            }
        }
        let hist = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        Self {
            shared,
            thread,
            received: vec![StreamMap::default(); work.clients.len()],
            clients: work.clients,
            streams,
            dests,
            due,
            ready: Vec::with_capacity(256),
            poller,
            send: SendBatch::new(64),
            recv: RecvBatch::new(64),
            latency: [hist(), hist(), hist()],
            delivery: hist(),
            socket_wait: hist(),
            interval: hist(),
            interval_index: 0,
            intervals,
            sent: 0,
            got: 0,
            datagrams_out: 0,
            send_errors: 0,
            late_frames: 0,
            foreign: 0,
            other: 0,
            srtp_errors: 0,
            error,
        }
    }

    fn run(&mut self) {
        let Some(mut poller) = self.poller.take() else {
            return;
        };
        let progress = &self.shared.progress[self.thread];
        loop {
            let now = self.shared.now_ns();
            let until = self.shared.send_until_ns.load(Ordering::Relaxed);
            if now >= until.saturating_add(self.shared.drain_ns) {
                break;
            }
            self.roll_interval(now);
            let mut timeout = Duration::from_nanos(MAX_WAIT_NS);
            if now < until {
                // Bounded work per turn so receiving is never starved by a send backlog.
                let mut frames = 0;
                while frames < 64 {
                    let Some(s) = self.due.pop(now) else { break };
                    let s = s as usize;
                    let due = self.streams[s].pacer.due();
                    if due > now + SLOT_NS {
                        // Filed in the wheel's last slot: not due yet.
                        self.due.push(due, s as u32);
                        continue;
                    }
                    self.send_frame(s, now);
                    frames += 1;
                    let next = self.streams[s].pacer.due();
                    if next < until {
                        self.due.push(next, s as u32);
                    }
                }
                let next = if frames == 64 {
                    Some(now)
                } else {
                    self.due.next_ns(MAX_WAIT_NS)
                };
                if let Some(next) = next {
                    timeout = timeout.min(Duration::from_nanos(next.saturating_sub(now)));
                }
            }
            if self.shared.spin {
                timeout = Duration::ZERO;
            }
            self.ready.clear();
            match poller.wait(timeout) {
                Ok(r) => self.ready.extend(r),
                Err(e) => {
                    self.error.get_or_insert(format!("epoll wait: {e}"));
                    break;
                }
            }
            for i in 0..self.ready.len() {
                self.receive(self.ready[i] as usize);
            }
            progress.sent.store(self.sent, Ordering::Relaxed);
            progress.received.store(self.got, Ordering::Relaxed);
        }
        self.poller = Some(poller);
    }

    fn send_frame(&mut self, s: usize, now: u64) {
        let participant = self.clients[self.streams[s].client].participant;
        let st = &mut self.streams[s];
        let frame = st.pacer.next_frame();
        if !self.shared.active[participant as usize].load(Ordering::Relaxed) {
            return;
        }
        if self.sent + u64::from(frame.count) > self.shared.max_packets {
            return;
        }
        if now.saturating_sub(frame.due_ns) > 1_000_000 {
            self.late_frames += 1;
        }
        let ts = st.ts_base.wrapping_add(frame.rtp_ticks as u32);
        let first_seq = st.seq;
        let mut packets = 0;
        for i in 0..frame.count {
            if !self.send.has_room() {
                break;
            }
            let last = i + 1 == frame.count;
            let header = rtp::Header {
                payload_type: st.kind.payload_type(),
                marker: last && frame.marker,
                timestamp: ts,
                ssrc: st.ssrc,
                stream: st.spec_id,
                seq: first_seq + u32::from(i),
            };
            let len = if last { frame.last_len } else { frame.len };
            let p = self
                .send
                .push(|b| rtp::encode(&header, 0, usize::from(len), b));
            for &d in &st.dests {
                self.send.send_to(p, d);
            }
            packets += 1;
            // Frames larger than a batch go out in several batches.
            if !self.send.has_room() || last {
                let fd = self.clients[st.client].socket.as_raw_fd();
                let stamp = self.shared.now_ns();
                for k in 0..self.send.packets() {
                    rtp::restamp(self.send.packet_mut(k), stamp);
                }
                if let Some(Srtp::Send(egress)) = &mut self.clients[st.client].srtp {
                    for k in 0..self.send.packets() {
                        let sealed = self
                            .send
                            .rewrite(k, |buf, len| egress.protect_rtp_in_place(buf, len).ok());
                        if !sealed {
                            self.srtp_errors += 1;
                        }
                    }
                }
                let batch = self.send.packets();
                let f = self.send.flush(fd, &self.dests);
                self.datagrams_out += f.datagrams as u64;
                let us = (stamp / 1_000) as u32;
                st.log.extend(std::iter::repeat_n(us, f.packets));
                st.seq += f.packets as u32;
                self.sent += f.packets as u64;
                if let Some(e) = f.error {
                    self.send_errors += 1;
                    self.error.get_or_insert(format!("sendmmsg: {e}"));
                    return;
                }
                debug_assert_eq!(f.packets, batch);
            }
        }
        let _ = packets;
    }

    fn receive(&mut self, client: usize) {
        let fd = self.clients[client].socket.as_raw_fd();
        for _ in 0..4 {
            let n = match self.recv.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    self.error.get_or_insert(format!("recvmmsg: {e}"));
                    return;
                }
            };
            let now = self.shared.now_ns();
            let now_real = crate::io::realtime_ns();
            for i in 0..n {
                let datagram: &[u8] = match &mut self.clients[client].srtp {
                    Some(Srtp::Receive(ingress)) if is_rtp(self.recv.get(i)) => {
                        let buf = self.recv.get_mut(i);
                        match ingress.unprotect_rtp(buf) {
                            Ok(len) => &buf[..len],
                            Err(_) => {
                                self.srtp_errors += 1;
                                continue;
                            }
                        }
                    }
                    _ => self.recv.get(i),
                };
                let Ok(p) = rtp::decode(datagram) else {
                    if crate::stun::is_binding_success(datagram) {
                        let participant = self.clients[client].participant as usize;
                        self.shared.latched[participant].store(true, Ordering::Relaxed);
                    } else {
                        self.other += 1;
                    }
                    continue;
                };
                let Some(&kind) = self.shared.kinds.get(p.stream as usize) else {
                    self.got += 1;
                    self.foreign += 1;
                    continue;
                };
                self.got += 1;
                let arrival =
                    (u128::from(now) * u128::from(kind.clock_rate()) / 1_000_000_000) as u32;
                let st = self.received[client].entry(p.stream).or_default();
                // Ticks of the send-side clock line up with ours: both count from the same start,
                // and the stream's random base cancels in the transit difference.
                if st.on_packet(p.seq, p.timestamp, arrival) == Receipt::OutOfRange {
                    self.foreign += 1;
                    continue;
                }
                let ns = now.saturating_sub(p.send_ns);
                let us = ns / 1_000;
                self.latency[kind.index()].saturating_record(us.max(1));
                if let Some(at) = self.recv.arrival_ns(i) {
                    let wait = now_real.saturating_sub(at).min(ns);
                    self.socket_wait.saturating_record((wait / 1_000).max(1));
                    self.delivery
                        .saturating_record(((ns - wait) / 1_000).max(1));
                }
                if self.intervals.is_some() {
                    self.interval.saturating_record(us.max(1));
                }
            }
            if n < self.recv.capacity() {
                return;
            }
        }
    }

    fn roll_interval(&mut self, now: u64) {
        let index = now.saturating_sub(self.shared.send_from_ns) / 1_000_000_000;
        if index > self.interval_index {
            self.flush_interval();
            self.interval_index = index;
        }
    }

    fn flush_interval(&mut self) {
        if let Some(tx) = &self.intervals {
            let h = self.interval.clone();
            let _ = tx.send(Interval {
                index: self.interval_index,
                histogram: h,
            });
        }
        self.interval.reset();
    }

    fn finish(mut self) -> Outcome {
        self.flush_interval();
        let received = self
            .clients
            .iter()
            .map(|c| c.participant)
            .zip(self.received)
            .collect();
        let send_us = self
            .streams
            .into_iter()
            .map(|s| (s.spec_id, s.log))
            .collect();
        Outcome {
            received,
            send_us,
            latency: self.latency,
            delivery: self.delivery,
            socket_wait: self.socket_wait,
            datagrams_out: self.datagrams_out,
            send_errors: self.send_errors,
            late_frames: self.late_frames,
            foreign: self.foreign,
            other: self.other,
            srtp_errors: self.srtp_errors,
            error: self.error,
        }
    }
}

/// Whether a datagram is RTP rather than RTCP, STUN or DTLS (RFC 7983, RFC 5761 §4).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, pt, ..] if !(192..=223).contains(pt))
}

/// Longest sleep between turns, so the end of the run is noticed.
const MAX_WAIT_NS: u64 = 10_000_000;
/// Latencies above a minute are recorded as a minute.
const MAX_LATENCY_US: u64 = 60_000_000;

#[cfg(test)]
mod tests {
    use super::is_rtp;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        assert!(is_rtp(&[0x80, 111, 0, 1]));
        assert!(is_rtp(&[0x80, 0x80 | 96, 0, 1])); // marker bit set
        assert!(!is_rtp(&[0x80, 200, 0, 6])); // a sender report
        assert!(!is_rtp(&[0x81, 206, 0, 2])); // a PLI
        assert!(!is_rtp(&[0x00, 0x01, 0, 0])); // STUN
        assert!(!is_rtp(&[22, 0xfe, 0xfd])); // DTLS
        assert!(!is_rtp(&[0x80]));
    }
}
