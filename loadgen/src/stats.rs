//! Receiver-side measurements and the final accounting of who got what.
//!
//! Each receiver keeps, per stream it got packets from, a bitmap of the sequence numbers seen
//! (duplicates), the highest one (reordering) and the RFC 3550 interarrival jitter. At the end,
//! each (stream, receiver) pair is judged against the model's answer for the packet's send time:
//! a packet that surely should have arrived and did not is lost; one that surely should not
//! have arrived and did is misdelivered; one in flight across a change counts for neither.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use crate::model::{Tri, World};

/// What one receiver saw, per stream id.
pub type StreamMap = HashMap<u32, RecvStream, BuildHasherDefault<IdHasher>>;

/// A multiplicative hash for our own small integer ids (stream ids we assigned; a load tool
/// need not resist chosen collisions).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What one receiver saw of one stream.
#[derive(Debug, Clone, Default)]
pub struct RecvStream {
    bits: Vec<u64>,
    max_seq: Option<u32>,
    /// Copies received, duplicates included.
    pub received: u64,
    /// Copies of a sequence number already seen.
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// Interarrival jitter.
    pub jitter: Jitter,
}

/// What a receipt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// First copy.
    New,
    /// A copy of a packet seen before.
    Duplicate,
    /// A sequence number no sender of ours reaches (a corrupted packet).
    OutOfRange,
}

impl RecvStream {
    /// Records one packet; `arrival` is the arrival time in the stream's RTP clock units.
    pub fn on_packet(&mut self, seq: u32, rtp_ts: u32, arrival: u32) -> Receipt {
        if seq >= MAX_SEQ {
            return Receipt::OutOfRange;
        }
        self.received += 1;
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return Receipt::Duplicate;
        }
        self.bits[word] |= 1 << bit;
        match self.max_seq {
            Some(max) if seq < max => self.reordered += 1,
            _ => self.max_seq = Some(seq),
        }
        self.jitter.update(arrival, rtp_ts);
        Receipt::New
    }

    /// Distinct sequence numbers received in `from..to`.
    pub fn count(&self, from: u32, to: u32) -> u64 {
        let mut n = 0;
        let mut s = from;
        while s < to {
            let word = (s / 64) as usize;
            let Some(&bits) = self.bits.get(word) else {
                break;
            };
            let lo = s % 64;
            let hi = (to - (s - lo)).min(64);
            let mask = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 } & (u64::MAX << lo);
            n += u64::from((bits & mask).count_ones());
            s = s - lo + 64;
        }
        n
    }
}

/// RFC 3550 §6.4.1 interarrival jitter, computed as in Appendix A.8 with the estimate kept
/// scaled by 16 in an integer:
///
/// ```text
/// int transit = arrival - r->ts;
/// int d = transit - s->transit;
/// s->transit = transit;
/// if (d < 0) d = -d;
/// s->jitter += d - ((s->jitter + 8) >> 4);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Jitter {
    transit: Option<u32>,
    scaled: u32,
}

impl Jitter {
    /// Adds one packet: its arrival time and RTP timestamp, both in RTP clock units.
    pub fn update(&mut self, arrival: u32, rtp_ts: u32) {
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            self.scaled = self
                .scaled
                .wrapping_add(d)
                .wrapping_sub((self.scaled + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// The estimate in RTP clock units.
    pub fn ticks(&self) -> u32 {
        self.scaled >> 4
    }
}

/// Counts for one kind of media (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Packets the clients sent.
    pub sent: u64,
    /// Deliveries that surely should have happened.
    pub expected: u64,
    /// Copies received (duplicates and misdeliveries included).
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Copies of a packet a receiver already had.
    pub duplicates: u64,
    /// Deliveries that must not have happened.
    pub misdelivered: u64,
    /// Packets that arrived after a later one of the same stream.
    pub reordered: u64,
    /// Mean of the receivers' final jitter estimates, µs.
    pub jitter_mean_us: f64,
    /// Largest final jitter estimate, µs.
    pub jitter_max_us: f64,
    /// Multi-relay runs: the expected deliveries from a sender on one relay to a receiver on
    /// another (in `expected` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub cross_relay_expected: u64,
    /// Those of them that never arrived (in `lost` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub cross_relay_lost: u64,
    #[serde(skip)]
    pub(crate) jitter_n: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Tally {
    /// Adds another tally into this one.
    pub fn add(&mut self, o: &Self) {
        let n = self.jitter_n + o.jitter_n;
        if n > 0 {
            self.jitter_mean_us = (self.jitter_mean_us * self.jitter_n as f64
                + o.jitter_mean_us * o.jitter_n as f64)
                / n as f64;
        }
        self.jitter_n = n;
        self.jitter_max_us = self.jitter_max_us.max(o.jitter_max_us);
        self.sent += o.sent;
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.misdelivered += o.misdelivered;
        self.reordered += o.reordered;
        self.cross_relay_expected += o.cross_relay_expected;
        self.cross_relay_lost += o.cross_relay_lost;
    }

    fn add_jitter(&mut self, us: f64) {
        self.jitter_n += 1;
        self.jitter_mean_us += (us - self.jitter_mean_us) / self.jitter_n as f64;
        self.jitter_max_us = self.jitter_max_us.max(us);
    }
}

/// Judges every (stream, receiver) pair. `send_us[s]` holds the send time (µs since the start)
/// of each packet of stream `s`, by sequence number; `received[r]` what receiver `r` saw.
/// Returns one tally per kind, in `Kind::ALL` order.
pub fn account(world: &World, send_us: &[Vec<u32>], received: &[StreamMap]) -> [Tally; 3] {
    let mut tallies = [Tally::default(); 3];
    for (s, log) in send_us.iter().enumerate() {
        if let Some(&(_, kind)) = world.streams.get(s) {
            tallies[kind.index()].sent += log.len() as u64;
        }
    }
    // Streams of each room, to find pairs that expected packets but got none.
    let mut by_room: HashMap<u32, Vec<u32>> = HashMap::new();
    for (s, &(p, _)) in world.streams.iter().enumerate() {
        by_room
            .entry(world.room[p as usize])
            .or_default()
            .push(s as u32);
    }
    let empty = RecvStream::default();
    for (r, seen) in received.iter().enumerate() {
        if world.unread.get(r).copied().unwrap_or(false) {
            continue;
        }
        let room = world.room.get(r).copied();
        let mut streams: Vec<u32> = seen.keys().copied().collect();
        if let Some(list) = room.and_then(|room| by_room.get(&room)) {
            streams.extend(
                list.iter()
                    .filter(|s| world.streams[**s as usize].0 != r as u32),
            );
        }
        streams.sort_unstable();
        streams.dedup();
        for s in streams {
            let got = seen.get(&s).unwrap_or(&empty);
            let Some(&(_, kind)) = world.streams.get(s as usize) else {
                continue;
            };
            let log = &send_us[s as usize];
            let t = &mut tallies[kind.index()];
            t.received += got.received;
            t.duplicates += got.duplicates;
            t.reordered += got.reordered;
            if got.received > got.duplicates {
                let us = f64::from(got.jitter.ticks()) * 1e6 / f64::from(kind.clock_rate());
                t.add_jitter(us);
            }
            let across = world.across(s, r as u32);
            for (from, to, answer) in world.segments(s, r as u32) {
                let a = seq_at(log, from);
                let b = seq_at(log, to);
                match answer {
                    Tri::Yes => {
                        let lost = u64::from(b - a) - got.count(a, b);
                        t.expected += u64::from(b - a);
                        t.lost += lost;
                        if across {
                            t.cross_relay_expected += u64::from(b - a);
                            t.cross_relay_lost += lost;
                        }
                    }
                    Tri::No => t.misdelivered += got.count(a, b),
                    Tri::Unknown => {}
                }
            }
            // Sequence numbers past the send log were never sent: corrupted copies.
            t.misdelivered += got.count(log.len() as u32, MAX_SEQ);
        }
    }
    tallies
}

/// First sequence number sent at or after `t_ns`.
fn seq_at(log: &[u32], t_ns: u64) -> u32 {
    log.partition_point(|&us| u64::from(us) * 1_000 < t_ns) as u32
}

/// Sequence numbers at or above this are never sent (bounds a receiver's bitmap to 16 MiB).
pub const MAX_SEQ: u32 = 1 << 27;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, Media, Rule, Subscribe, Switch, Window};
    use crate::profile::Kind;

    /// RFC 3550 A.8 in floating point, the reference.
    fn reference_jitter(arrivals: &[(u32, u32)]) -> f64 {
        let (mut jitter, mut prev) = (0.0f64, None::<i64>);
        for &(arrival, ts) in arrivals {
            let transit = i64::from(arrival) - i64::from(ts);
            if let Some(p) = prev {
                let d = (transit - p).abs() as f64;
                jitter += (d - jitter) / 16.0;
            }
            prev = Some(transit);
        }
        jitter
    }

    #[test]
    fn jitter_matches_rfc3550_a8() {
        let mut rng = crate::profile::Rng::new(3);
        for round in 0..50 {
            let mut arrivals = Vec::new();
            let mut j = Jitter::default();
            for i in 0..500u32 {
                let ts = 1_000 + i * 960;
                let arrival = ts + 5_000 + rng.range(0, 200 * round) as u32;
                arrivals.push((arrival, ts));
                j.update(arrival, ts);
            }
            let want = reference_jitter(&arrivals);
            assert!(
                (f64::from(j.ticks()) - want).abs() <= 1.0 + want * 0.01,
                "{} vs {want}",
                j.ticks()
            );
        }
        // Constant transit gives zero jitter, across RTP timestamp wrap too.
        let mut j = Jitter::default();
        for i in 0..100u32 {
            let ts = (u32::MAX - 5_000).wrapping_add(i * 960);
            j.update(ts.wrapping_add(77), ts);
        }
        assert_eq!(j.ticks(), 0);
    }

    #[test]
    fn receipts_count_duplicates_and_reordering() {
        let mut r = RecvStream::default();
        assert_eq!(r.on_packet(0, 0, 0), Receipt::New);
        assert_eq!(r.on_packet(2, 0, 0), Receipt::New);
        assert_eq!(r.on_packet(1, 0, 0), Receipt::New);
        assert_eq!(r.on_packet(2, 0, 0), Receipt::Duplicate);
        assert_eq!(r.on_packet(MAX_SEQ, 0, 0), Receipt::OutOfRange);
        assert_eq!((r.received, r.duplicates, r.reordered), (4, 1, 1));
        assert_eq!(r.count(0, 3), 3);
        assert_eq!(r.count(1, 2), 1);
        r.on_packet(200, 0, 0);
        assert_eq!(r.count(0, 1_000), 4);
        assert_eq!(r.count(63, 201), 1);
        assert_eq!(r.count(64, 200), 0);
    }

    fn win(start_ns: u64, end_ns: u64) -> Window {
        Window { start_ns, end_ns }
    }

    /// Two rooms: p0, p1, p2 in room 0 (p2 listens to p1 only), p3 in room 1. Stream s is
    /// p s's audio. Every stream sent 100 packets, one per ms from t = 0.
    fn scene() -> (World, Vec<Vec<u32>>) {
        let mut presence = vec![Switch::default(); 4];
        for p in &mut presence {
            p.set(win(0, 0), true);
        }
        let world = World {
            grace_ns: 0,
            room: vec![0, 0, 0, 1],
            subscribe: vec![
                Subscribe::All,
                Subscribe::All,
                Subscribe::List(vec![1]),
                Subscribe::All,
            ],
            presence,
            streams: (0..4).map(|p| (p, Kind::Audio)).collect(),
            rules: Vec::new(),
            unread: Vec::new(),
            relay: Vec::new(),
        };
        let log = (0..100).map(|i| i * 1_000).collect();
        (world, vec![log; 4])
    }

    fn deliver(seen: &mut [StreamMap], r: usize, s: u32, seqs: impl Iterator<Item = u32>) {
        let st = seen[r].entry(s).or_default();
        for q in seqs {
            st.on_packet(q, q * 48, q * 48);
        }
    }

    #[test]
    fn perfect_delivery() {
        let (world, log) = scene();
        let mut seen = vec![StreamMap::default(); 4];
        // p0 -> p1; p1 -> p0, p2; p2 -> p0, p1.
        for (s, r) in [(0, 1), (1, 0), (1, 2), (2, 0), (2, 1)] {
            deliver(&mut seen, r, s, 0..100);
        }
        let t = account(&world, &log, &seen)[0];
        assert_eq!((t.sent, t.expected, t.received), (400, 500, 500));
        assert_eq!(
            (t.lost, t.duplicates, t.misdelivered, t.reordered),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn loss_duplicates_and_misdelivery() {
        let (world, log) = scene();
        let mut seen = vec![StreamMap::default(); 4];
        deliver(&mut seen, 1, 0, (0..100).filter(|q| q % 10 != 0)); // 10 lost
        deliver(&mut seen, 1, 0, 5..7); // 2 duplicates
        deliver(&mut seen, 0, 1, 0..100);
        deliver(&mut seen, 2, 1, 0..100);
        deliver(&mut seen, 0, 2, 0..50); // 50 lost
        // p1 -> nothing from p2: 100 lost. Misdeliveries: p2 gets p0 (not subscribed),
        // p0 gets its own, p3 gets p0 (other room).
        deliver(&mut seen, 2, 0, 0..3);
        deliver(&mut seen, 0, 0, 0..4);
        deliver(&mut seen, 3, 0, 0..5);
        let t = account(&world, &log, &seen)[0];
        assert_eq!(t.lost, 160);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.misdelivered, 12);
        assert_eq!(t.received, 92 + 100 + 100 + 50 + 12);
    }

    #[test]
    fn fleet_deliveries_count_across_relays() {
        // p0 and p2 on relay 0, p1 on relay 1 (known fleet-wide 30 ms after its join started:
        // until then, packets to and from it may go either way), p3 (room 1) on relay 1.
        let (mut world, log) = scene();
        world.relay = vec![0, 1, 0, 1];
        world.presence[1] = Switch::default();
        world.presence[1].set(win(0, 30_000_000), true);
        let mut seen = vec![StreamMap::default(); 4];
        // Across relays: p0 -> p1 (5 lost), p1 -> p0, p1 -> p2, p2 -> p1, each from 30 on.
        deliver(&mut seen, 1, 0, (30..100).filter(|q| !(50..55).contains(q)));
        deliver(&mut seen, 0, 1, 30..100);
        deliver(&mut seen, 2, 1, 30..100);
        deliver(&mut seen, 1, 2, 30..100);
        // On one relay: p2 -> p0, all of it.
        deliver(&mut seen, 0, 2, 0..100);
        // p3 is on p1's relay but in another room: p0's copies there are misdelivered.
        deliver(&mut seen, 3, 0, 0..3);
        let t = account(&world, &log, &seen)[0];
        assert_eq!(t.expected, 4 * 70 + 100);
        assert_eq!((t.cross_relay_expected, t.cross_relay_lost), (4 * 70, 5));
        assert_eq!((t.lost, t.misdelivered), (5, 3));
        // One relay: the same deliveries, nothing across.
        world.relay.clear();
        let t = account(&world, &log, &seen)[0];
        assert_eq!((t.cross_relay_expected, t.lost), (0, 5));
    }

    #[test]
    fn rule_changes_respect_timing() {
        let (mut world, log) = scene();
        world.grace_ns = 2_000_000;
        // Rule on p0 sending: POST 20.5-30.5 ms, DELETE 60.5-70.5 ms.
        let mut active = Switch::default();
        active.set(win(20_500_000, 30_500_000), true);
        active.set(win(60_500_000, 70_500_000), false);
        world.rules.push(Rule {
            targets: vec![0],
            direction: Direction::Send,
            media: Media::All,
            active,
        });
        let mut seen = vec![StreamMap::default(); 4];
        // Before the rule (0..=18 sure, 19..=30 in flight): delivered. In force (31..=58 sure):
        // two leak (40, 41). Around the lift (59..=70 in flight): nothing arrives, fine.
        // After (71..): all but 99 arrive.
        deliver(&mut seen, 1, 0, (0..25).chain(40..42).chain(71..99));
        deliver(&mut seen, 2, 1, 0..100);
        deliver(&mut seen, 0, 1, 0..100);
        deliver(&mut seen, 0, 2, 0..100);
        deliver(&mut seen, 1, 2, 0..100);
        let t = account(&world, &log, &seen)[0];
        assert_eq!(t.misdelivered, 2);
        assert_eq!(t.lost, 1);
        assert_eq!(t.expected, 19 + 29 + 400);
    }
}
