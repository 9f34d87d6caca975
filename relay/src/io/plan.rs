//! The sends of one batch, planned before they are submitted, with GSO runs.
//!
//! Each [`Entry`] is one send to one destination: a single datagram, a run of consecutive
//! datagrams of the batch sent as one UDP_SEGMENT (GSO) send, or a reply the relay made. A run
//! grows when datagram k goes to the same destination, at the same position of its fan-out, as
//! datagram k-1 did: packets of one frame of one track arrive back to back and share a fan-out
//! list, so each receiver gets the whole burst in one send. Only datagrams already received are
//! ever joined: the plan never waits for more.
//!
//! Order per destination is kept: a run only ever grows with the very next datagram of the
//! batch, so nothing sent to the same destination can sit between two of its segments.

use std::ptr;

use crate::route::{Addr, CHUNK};

/// The fewest sends one plan holds, whatever `--send-batch` submits at once. A run only grows
/// within one plan, so the plan is at least as wide as the largest fan-out a worker sends
/// ([`width`]); with the two position lists a send costs 48 bytes, so 4,096 cost about 200 KB a
/// worker (docs/ARCHITECTURE.md, "GSO and the plan's size").
pub(crate) const PLAN_SENDS: usize = 4096;
const _: () = assert!(size_of::<Entry>() <= 40);

/// Sends a worker's plan holds so that every receiver of a fan-out in a room of up to
/// `largest_room` members gets a burst in one GSO send: the room, or where rooms that large are
/// shared among `workers` (`route::Share`: chunk `c` to worker `c % workers`), the most chunks
/// one worker gets; never fewer than [`PLAN_SENDS`].
pub(crate) fn width(largest_room: usize, workers: usize, handoff_min_members: usize) -> usize {
    let shared = workers > 1 && handoff_min_members > 0 && largest_room >= handoff_min_members;
    let fan_out = if shared {
        largest_room.div_ceil(CHUNK).div_ceil(workers) * CHUNK
    } else {
        largest_room
    };
    fan_out.max(PLAN_SENDS)
}
/// Most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS is at least 64).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the UDP length field, less IPv6 and UDP headers, rounded down.
pub(crate) const MAX_GSO_BYTES: usize = 65_000;
/// Largest segment joined into a run: a 1500-byte MTU less IPv6 and UDP headers, so that the
/// kernel never refuses a run for a segment larger than the path allows.
pub(crate) const MAX_GSO_SEGMENT: usize = 1452;
/// Most replies queued in one plan, and the largest reply. Replies are STUN answers and the
/// SRTP copies sealed for WebRTC receivers, so a slot holds an MTU-size datagram.
pub(crate) const REPLY_SLOTS: usize = 64;
pub(crate) const REPLY_SIZE: usize = 1500;

/// One planned send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// The destination of a run; points into a compiled room that outlives the plan's flush.
    /// Null for a reply, whose destination is kept with its bytes ([`Plan::reply`]).
    pub(crate) dest: *const Addr,
    /// What is sent.
    pub(crate) what: What,
    /// Total bytes.
    pub(crate) bytes: u32,
}

/// The payload of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// Datagrams `first..first + count` of the batch; with more than one, a GSO send whose
    /// segment size is `segment` (the first datagram's size).
    Run {
        first: u32,
        count: u16,
        segment: u16,
        last: u16,
    },
    /// Reply slot `n` of the plan.
    #[allow(
        dead_code,
        reason = "made by `push_reply`, which the STUN handler calls"
    )]
    Reply(u16),
    /// Datagram `first` of the batch to a peer relay from the trunk socket, behind `header`
    /// (never joined into a GSO run).
    Trunk {
        first: u32,
        header: [u8; crate::packet::trunk::HEADER_LEN],
    },
    /// Reply slot `n`, holding a whole trunk datagram (header and the clear copy of a WebRTC
    /// leg's datagram), to a peer relay from the trunk socket.
    TrunkReply(u16),
}

/// The planned sends of a batch.
pub(crate) struct Plan {
    entries: Vec<Entry>,
    /// Entry index of each destination, by fan-out position, of the previous and this datagram.
    prev: Vec<u32>,
    cur: Vec<u32>,
    /// The datagram being planned and its length.
    datagram: u32,
    len: u16,
    gso: bool,
    replies: Box<[[u8; REPLY_SIZE]]>,
    reply_lens: [u16; REPLY_SLOTS],
    reply_dests: Box<[Addr]>,
    used_replies: usize,
}

// SAFETY: the destination pointers refer to compiled rooms that the owning worker keeps alive
// until the plan is flushed; a plan is used by one thread at a time.
unsafe impl Send for Plan {}

impl Plan {
    /// A plan of at most `capacity` sends; `gso` joins runs.
    pub(crate) fn new(capacity: usize, gso: bool) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: Vec::with_capacity(capacity),
            prev: Vec::with_capacity(capacity),
            cur: Vec::with_capacity(capacity),
            datagram: u32::MAX,
            len: 0,
            gso,
            replies: vec![[0u8; REPLY_SIZE]; REPLY_SLOTS].into_boxed_slice(),
            reply_lens: [0; REPLY_SLOTS],
            reply_dests: [Addr::default(); REPLY_SLOTS].into(),
            used_replies: 0,
        }
    }

    /// Starts planning datagram `k` of the batch, `len` bytes long.
    pub(crate) fn begin(&mut self, k: u32, len: usize) {
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
        if k != self.datagram.wrapping_add(1) {
            self.prev.clear();
        }
        self.datagram = k;
        self.len = len.min(usize::from(u16::MAX)) as u16;
    }

    /// Plans sending the current datagram to `dest`: joins the previous datagram's send to the
    /// same destination where GSO allows, or adds a send. Returns false, planning nothing, when
    /// the plan is full: flush it, then push again.
    pub(crate) fn push(&mut self, dest: &Addr) -> bool {
        let pos = self.cur.len();
        if self.gso
            && let Some(&i) = self.prev.get(pos)
        {
            let e = &mut self.entries[i as usize];
            if ptr::eq(e.dest, dest) && e.join(self.datagram, self.len) {
                self.cur.push(i);
                return true;
            }
        }
        if self.is_full() {
            return false;
        }
        self.cur.push(self.entries.len() as u32);
        self.entries.push(Entry {
            dest,
            what: What::Run {
                first: self.datagram,
                count: 1,
                segment: self.len,
                last: self.len,
            },
            bytes: u32::from(self.len),
        });
        true
    }

    /// Plans sending the current datagram to a peer relay's trunk address behind `header`.
    /// Returns false, planning nothing, when the plan is full: flush it, then push again.
    pub(crate) fn push_trunk(
        &mut self,
        dest: &Addr,
        header: &[u8; crate::packet::trunk::HEADER_LEN],
    ) -> bool {
        if self.is_full() {
            return false;
        }
        self.entries.push(Entry {
            dest,
            what: What::Trunk {
                first: self.datagram,
                header: *header,
            },
            bytes: u32::from(self.len) + crate::packet::trunk::HEADER_LEN as u32,
        });
        true
    }

    /// Plans a trunk datagram made of `header` and a copy of `bytes` (the clear copy of a WebRTC
    /// leg's datagram, which lives in a buffer the next datagram overwrites) for the peer relay
    /// at `dest`, in a reply slot. Returns false when the plan has no free slot (flush, then
    /// push again); a datagram too large for a slot is never planned (the caller checks
    /// [`REPLY_SIZE`] first and counts it).
    pub(crate) fn push_trunk_reply(
        &mut self,
        dest: &Addr,
        header: &[u8; crate::packet::trunk::HEADER_LEN],
        bytes: &[u8],
    ) -> bool {
        if self.is_full() || self.used_replies == REPLY_SLOTS {
            return false;
        }
        let len = header.len() + bytes.len();
        if len > REPLY_SIZE {
            return true;
        }
        let n = self.used_replies;
        self.replies[n][..header.len()].copy_from_slice(header);
        self.replies[n][header.len()..len].copy_from_slice(bytes);
        self.reply_lens[n] = len as u16;
        self.reply_dests[n] = *dest;
        self.used_replies += 1;
        self.entries.push(Entry {
            dest: ptr::null(),
            what: What::TrunkReply(n as u16),
            bytes: len as u32,
        });
        true
    }

    /// Plans a reply to `dest`. Returns false when the plan is full (flush, then push again), and
    /// drops a reply too large for a slot (which the caller never makes).
    #[allow(
        dead_code,
        reason = "the STUN handler calls it through `Output::reply`"
    )]
    pub(crate) fn push_reply(&mut self, dest: &Addr, bytes: &[u8]) -> bool {
        if self.is_full() || self.used_replies == REPLY_SLOTS {
            return false;
        }
        if bytes.len() > REPLY_SIZE {
            return true;
        }
        let n = self.used_replies;
        self.replies[n][..bytes.len()].copy_from_slice(bytes);
        self.reply_lens[n] = bytes.len() as u16;
        self.reply_dests[n] = *dest;
        self.used_replies += 1;
        self.entries.push(Entry {
            dest: ptr::null(),
            what: What::Reply(n as u16),
            bytes: bytes.len() as u32,
        });
        true
    }

    /// Plans a reply that `write` makes in place in a free slot (an SRTP copy sealed straight
    /// into it) and returns its length, or `None` to send nothing. Returns false, calling
    /// nothing, when the plan has no free slot: flush it, then push again.
    pub(crate) fn push_reply_with(
        &mut self,
        dest: &Addr,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        if self.is_full() || self.used_replies == REPLY_SLOTS {
            return false;
        }
        let n = self.used_replies;
        let Some(len) = write(&mut self.replies[n][..]).filter(|&l| l <= REPLY_SIZE) else {
            return true;
        };
        self.reply_lens[n] = len as u16;
        self.reply_dests[n] = *dest;
        self.used_replies += 1;
        self.entries.push(Entry {
            dest: ptr::null(),
            what: What::Reply(n as u16),
            bytes: len as u32,
        });
        true
    }

    /// Whether another send would not fit.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() == self.entries.capacity()
    }

    /// The planned sends, in order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The destination and bytes of reply slot `n`.
    pub(crate) fn reply(&self, n: u16) -> (&Addr, &[u8]) {
        let n = usize::from(n);
        (
            &self.reply_dests[n],
            &self.replies[n][..usize::from(self.reply_lens[n])],
        )
    }

    /// Forgets every planned send (after they were submitted). Runs never span a flush.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.prev.clear();
        self.cur.clear();
        self.used_replies = 0;
    }

    /// Stops joining runs (the kernel refused GSO on this socket).
    pub(crate) fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// Whether runs are joined.
    pub(crate) fn gso(&self) -> bool {
        self.gso
    }
}

impl Entry {
    /// The number of datagrams this send puts on the wire.
    pub(crate) fn segments(&self) -> u64 {
        match self.what {
            What::Run { count, .. } => u64::from(count),
            What::Reply(_) | What::Trunk { .. } | What::TrunkReply(_) => 1,
        }
    }

    /// Joins datagram `k` of `len` bytes to this run, if it directly follows it and GSO allows:
    /// every segment but the last has the segment size, and the last is no longer than it.
    fn join(&mut self, k: u32, len: u16) -> bool {
        let What::Run {
            first,
            count,
            segment,
            last,
        } = &mut self.what
        else {
            return false;
        };
        let fits = *first + u32::from(*count) == k
            && usize::from(*count) < MAX_SEGMENTS
            && *last == *segment
            && len <= *segment
            && usize::from(*segment) <= MAX_GSO_SEGMENT
            && self.bytes as usize + usize::from(len) <= MAX_GSO_BYTES;
        if fits {
            *count += 1;
            *last = len;
            self.bytes += u32::from(len);
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Addr {
        Addr::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn runs(plan: &Plan) -> Vec<(u16, u32, u16)> {
        plan.entries()
            .iter()
            .map(|e| match e.what {
                What::Run { first, count, .. } => {
                    // SAFETY: the test keeps the addresses alive.
                    (
                        unsafe { &*e.dest }.as_socket().unwrap().port(),
                        first,
                        count,
                    )
                }
                What::Reply(_) | What::Trunk { .. } | What::TrunkReply(_) => (0, 0, 0),
            })
            .collect()
    }

    #[test]
    fn the_plan_is_as_wide_as_the_largest_share_of_the_largest_room() {
        assert_eq!(width(10_000, 1, 128), 10_000);
        // 157 chunks over two workers: 79 chunks for worker 0.
        assert_eq!(width(10_000, 2, 128), 79 * 64);
        assert_eq!(width(10_000, 2, 0), 10_000, "never shared");
        assert_eq!(width(10_000, 3, 128), PLAN_SENDS);
        assert_eq!(width(100, 1, 128), PLAN_SENDS);
        assert_eq!(width(65_534, 4, 128), 256 * 64);
    }

    #[test]
    fn a_burst_to_the_same_fan_out_becomes_one_run_per_destination() {
        let (b, c) = (addr(2), addr(3));
        let mut plan = Plan::new(16, true);
        for (k, len) in [(0, 1000), (1, 1000), (2, 1000), (3, 400)] {
            plan.begin(k, len);
            assert!(plan.push(&b));
            assert!(plan.push(&c));
        }
        assert_eq!(runs(&plan), vec![(2, 0, 4), (3, 0, 4)]);
        assert_eq!(plan.entries()[0].bytes, 3400);
        // After a shorter segment the run is closed.
        plan.begin(4, 1000);
        assert!(plan.push(&b));
        assert_eq!(runs(&plan)[2], (2, 4, 1));
    }

    #[test]
    fn runs_need_equal_sizes_the_same_destination_and_adjacent_datagrams() {
        let (b, c) = (addr(2), addr(3));
        let mut plan = Plan::new(16, true);
        plan.begin(0, 500);
        plan.push(&b);
        plan.begin(1, 600); // longer than the segment
        plan.push(&b);
        plan.begin(2, 600);
        plan.push(&c); // another destination at that position
        plan.begin(4, 600); // not adjacent to 2
        plan.push(&c);
        plan.begin(5, 1500); // larger than a segment may be
        plan.push(&c);
        plan.begin(6, 1500);
        plan.push(&c);
        assert_eq!(
            runs(&plan),
            vec![
                (2, 0, 1),
                (2, 1, 1),
                (3, 2, 1),
                (3, 4, 1),
                (3, 5, 1),
                (3, 6, 1)
            ]
        );
    }

    #[test]
    fn runs_stop_at_the_segment_and_byte_limits_and_without_gso() {
        let b = addr(2);
        let mut plan = Plan::new(256, true);
        for k in 0..100 {
            plan.begin(k, 100);
            plan.push(&b);
        }
        assert_eq!(runs(&plan), vec![(2, 0, 64), (2, 64, 36)]);
        let mut plan = Plan::new(256, true);
        for k in 0..100 {
            plan.begin(k, 1200);
            plan.push(&b);
        }
        // 54 × 1200 = 64800 fits in 65000; a 55th does not.
        assert_eq!(runs(&plan), vec![(2, 0, 54), (2, 54, 46)]);
        let mut plan = Plan::new(256, false);
        for k in 0..3 {
            plan.begin(k, 100);
            plan.push(&b);
        }
        assert_eq!(runs(&plan).len(), 3);
    }

    #[test]
    fn a_trunk_reply_holds_the_header_and_a_copy_of_the_datagram() {
        let b = addr(2);
        let mut plan = Plan::new(4, true);
        plan.begin(0, 10);
        let header = [5u8; 16];
        assert!(plan.push_trunk_reply(&b, &header, b"clear rtp"));
        assert_eq!(plan.entries()[0].what, What::TrunkReply(0));
        assert_eq!(plan.entries()[0].bytes, 25);
        let (to, bytes) = plan.reply(0);
        assert_eq!(to.as_socket(), b.as_socket());
        assert_eq!(&bytes[..16], &header);
        assert_eq!(&bytes[16..], b"clear rtp");
        // Larger than a slot: nothing planned (the caller counts it before it asks).
        assert!(plan.push_trunk_reply(&b, &header, &[0x80; REPLY_SIZE - 15]));
        assert_eq!(plan.entries().len(), 1);
        assert!(plan.push_trunk_reply(&b, &header, &[0x80; REPLY_SIZE - 16]));
        assert_eq!(plan.entries().len(), 2);
    }

    #[test]
    fn a_full_plan_refuses_until_cleared_and_replies_are_copied() {
        let (b, c) = (addr(2), addr(3));
        let mut plan = Plan::new(2, true);
        plan.begin(0, 10);
        assert!(plan.push(&b));
        assert!(plan.push_reply(&c, b"pong"));
        assert!(!plan.push(&c));
        let (to, bytes) = plan.reply(0);
        assert_eq!((to.as_socket(), bytes), (c.as_socket(), &b"pong"[..]));
        assert!(!plan.push_trunk_reply(&b, &[4; 16], b"rtp"), "full");
        plan.clear();
        plan.begin(1, 10);
        assert!(plan.push(&b));
        assert_eq!(runs(&plan), vec![(2, 1, 1)]);
    }
}
