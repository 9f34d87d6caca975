//! Hand-off of a hot publisher's fan-out to the other workers.
//!
//! In a room large enough to share (`route::Share`), the worker that received a packet sends the
//! receivers of its own chunks and pushes one [`Job`] per other worker onto a lock-free
//! single-producer single-consumer [`Ring`] (one per ordered worker pair). A job carries what the
//! peer routes its share with ([`Hot`]: room, sender's slot and SSRC; the peer uses its own
//! snapshot of the room), a pointer to the payload in the receiving worker's buffer (no copy) and
//! a pointer to that buffer's *lease*: an atomic count of jobs not yet done with it. The peer sends its share from the same bytes and
//! decrements the lease once its sends no longer read them (after `sendmmsg` returned; with
//! io_uring, after the last send completed). The owner reuses the buffer (mmsg: the receive batch;
//! io_uring: the provided buffer, put back on the ring) only when its lease is zero.
//!
//! A full ring refuses the job, and so does a buffer that cannot be leased: that share of the
//! packet is dropped and counted (`handoff_full`); the receiving worker never waits and never
//! sends it itself, since a later local send would overtake copies still queued on the peer.
//! Each ring also counts the jobs whose sends its consumer has issued ([`Handoff::issued`]), so
//! that a producer knows when none of its jobs is still queued ([`Handoff::pending`]). After pushing, the receiving worker writes each peer's eventfd
//! once per batch, the one that control updates use, so an idle peer wakes at once.
//!
//! Calling order, per worker: [`Handoff::pending`] before routing a batch (it sets
//! `Share::keep`), [`Handoff::offer`] while routing it, [`Handoff::wake`] once it is routed,
//! [`Handoff::take`] each turn to collect jobs for this worker, [`Handoff::issued`] once their
//! sends are issued, then [`Job::done`] for each once its sends no longer read the buffer. At
//! exit, [`Handoff::close`] before the worker's buffers are freed.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::socket;
use crate::route::{Hot, Share};

/// Jobs one ring holds: four full receive batches of lag behind one peer.
pub(crate) const RING_JOBS: usize = 256;
/// Most jobs a worker takes from its rings in one turn.
pub(crate) const JOBS_PER_TURN: usize = 64;
/// Copies an io_uring worker plans in one turn, half for received datagrams and the rest for
/// jobs, before it submits, reaps (receives included: with DEFER_TASKRUN nothing arrives while a
/// turn runs) and looks at its rings again. A packet's fan-out is never split, so a turn is at
/// most this plus one fan-out. About 2-8 ms of sends at the rates measured on loopback
/// (docs/ARCHITECTURE.md); large enough that a share of 1,000 receivers forms GSO runs of 8.
pub(crate) const SENDS_PER_TURN: usize = 16_384;
/// Default smallest room whose fan-out is shared (docs/ARCHITECTURE.md, "One hot publisher").
pub const DEFAULT_MIN_MEMBERS: usize = 128;
/// How long a worker at exit waits for its peers to let go of its buffers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One packet's share of a fan-out, for another worker to send.
pub(crate) struct Job {
    /// What the peer routes its share with.
    pub(crate) hot: Hot,
    /// The payload, in the receiving worker's buffer, valid while the lease is held.
    bytes: *const u8,
    len: usize,
    lease: *const AtomicU32,
}

// SAFETY: the pointers refer to buffers and lease counters that their owner keeps alive (and
// does not reuse) until the lease is released, or until `Handoff::close` says nobody holds it.
unsafe impl Send for Job {}

impl Job {
    /// The payload to send.
    pub(crate) fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.bytes as *mut libc::c_void,
            iov_len: self.len,
        }
    }

    /// The payload's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the owner keeps the buffer and does not write it while this job's lease is
        // held (`Handoff::offer` took it, `Job::done` or the io_uring `Held` releases it).
        unsafe { std::slice::from_raw_parts(self.bytes, self.len) }
    }

    /// The buffer's lease, to release later (io_uring: when the last send completes).
    pub(crate) fn lease(&self) -> Lease {
        Lease(self.lease)
    }

    /// Releases the buffer: the caller's sends no longer read it.
    pub(crate) fn done(self) {
        self.lease().release();
    }
}

/// One job's hold on a buffer of another worker.
#[derive(Clone, Copy)]
pub(crate) struct Lease(*const AtomicU32);

impl Lease {
    /// Lets go of the buffer. Release ordering: the sends' reads happen before the owner reuses it.
    pub(crate) fn release(self) {
        // SAFETY: lease counters live in `Links`, which every worker holds until it exits.
        unsafe { &*self.0 }.fetch_sub(1, Ordering::Release);
    }
}

/// A bounded lock-free queue for one producer thread and one consumer thread.
pub(crate) struct Ring {
    /// Next slot to read; written by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot to write; written by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Jobs whose sends the consumer has issued (a count from the start, like `head`): equal
    /// to `tail` when none of the producer's jobs is still waiting to be sent.
    done: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<Job>>]>,
}

// SAFETY: a slot is written only by the producer while it is outside head..tail and read only by
// the consumer while inside; the Release stores and Acquire loads of head and tail order those
// accesses. One producer and one consumer at a time (see `Links`).
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring of `capacity` jobs (a power of two).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        Self {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            done: CachePadded::new(AtomicUsize::new(0)),
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
        }
    }

    /// Adds a job at the tail; gives it back when the ring is full. Producer only.
    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) == self.slots.len() {
            return Err(job);
        }
        let slot = &self.slots[tail & (self.slots.len() - 1)];
        // SAFETY: the slot is outside head..tail, so the consumer does not read it.
        unsafe { (*slot.get()).write(job) };
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the job at the head. Consumer only.
    pub(crate) fn pop(&self) -> Option<Job> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let slot = &self.slots[head & (self.slots.len() - 1)];
        // SAFETY: the slot is inside head..tail: the producer wrote it (Acquire above) and does
        // not touch it until head moves past it.
        let job = unsafe { (*slot.get()).assume_init_read() };
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(job)
    }
}

/// What all workers share for hand-offs: the rings, the wake-ups, the leases.
pub(crate) struct Links {
    workers: usize,
    /// `rings[from * workers + to]`: producer `from`, consumer `to`.
    rings: Box<[Ring]>,
    wakes: Box<[Arc<OwnedFd>]>,
    /// Per worker, one lease counter per buffer it may hand out.
    leases: Box<[Box<[AtomicU32]>]>,
    /// Set by a worker once it takes no more jobs (at exit).
    gone: Box<[AtomicBool]>,
}

impl Links {
    /// Links for workers woken through `wakes`, each with `leases` lease counters.
    pub(crate) fn new(wakes: Vec<Arc<OwnedFd>>, leases: usize) -> Self {
        let workers = wakes.len();
        let rings = if workers > 1 { workers * workers } else { 0 };
        Self {
            workers,
            rings: (0..rings).map(|_| Ring::new(RING_JOBS)).collect(),
            wakes: wakes.into(),
            leases: (0..workers)
                .map(|_| (0..leases).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            gone: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn ring(&self, from: usize, to: usize) -> &Ring {
        &self.rings[from * self.workers + to]
    }
}

/// Hand-off counters of one batch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    /// Jobs pushed to other workers.
    pub(crate) out: u64,
    /// Jobs refused by a full ring (or no free buffer): that share of the packet is dropped.
    pub(crate) full: u64,
    /// Jobs taken from other workers.
    pub(crate) taken: u64,
}

/// One worker's end of the hand-off links.
pub(crate) struct Handoff {
    links: Arc<Links>,
    share: Share,
    /// Peers that got a job since the last wake, one bit each (the first 64 workers; more are
    /// woken all together).
    to_wake: u64,
    wake_all: bool,
    /// Origin of the next ring to read, so that no origin starves the others.
    next_from: usize,
    /// Per peer, the jobs pushed to it.
    pushed: Box<[usize]>,
    /// Per peer, the jobs taken from it.
    took: Box<[usize]>,
    pub(crate) counts: Counts,
}

impl Handoff {
    /// Worker `worker`'s end, sharing rooms of at least `min_members` members.
    pub(crate) fn new(links: Arc<Links>, worker: usize, min_members: usize) -> Self {
        let share = Share {
            worker,
            workers: links.workers,
            min_members,
            keep: false,
        };
        let workers = links.workers;
        Self {
            links,
            share,
            to_wake: 0,
            wake_all: false,
            next_from: 0,
            pushed: vec![0; workers].into_boxed_slice(),
            took: vec![0; workers].into_boxed_slice(),
            counts: Counts::default(),
        }
    }

    /// How this worker shares fan-outs.
    pub(crate) fn share(&self) -> Share {
        self.share
    }

    /// Whether any other worker exists to share with.
    pub(crate) fn active(&self) -> bool {
        self.share.workers > 1 && self.share.min_members > 0
    }

    /// Whether any peer still has jobs from this worker whose sends it has not issued: while
    /// so, `Share::keep` holds rooms shared (`route::share`). One load per peer.
    pub(crate) fn pending(&self) -> bool {
        let me = self.share.worker;
        (0..self.share.workers)
            .filter(|&to| to != me)
            .any(|to| self.links.ring(me, to).done.load(Ordering::Acquire) != self.pushed[to])
    }

    /// Says that the sends of every job taken so far are issued (in the socket's queue, or
    /// submitted to io_uring): their copies can no longer be overtaken by the owner's later
    /// sends. One store per peer that handed jobs over since the last call.
    pub(crate) fn issued(&mut self) {
        let me = self.share.worker;
        for from in (0..self.share.workers).filter(|&f| f != me) {
            let done = &self.links.ring(from, me).done;
            if done.load(Ordering::Relaxed) != self.took[from] {
                done.store(self.took[from], Ordering::Release);
            }
        }
    }

    /// Pushes `hot`'s share for worker `to`, with the payload `bytes` in this worker's buffer
    /// `buffer` (an index of its leases). Returns false, counted, when the ring is full: that
    /// share is dropped.
    pub(crate) fn offer(&mut self, to: usize, hot: &Hot, bytes: &[u8], buffer: usize) -> bool {
        let me = self.share.worker;
        let Some(lease) = self.links.leases[me].get(buffer) else {
            self.counts.full += 1;
            return false;
        };
        lease.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            hot: *hot,
            bytes: bytes.as_ptr(),
            len: bytes.len(),
            lease: lease as *const AtomicU32,
        };
        match self.links.ring(me, to).push(job) {
            Ok(()) => {
                self.pushed[to] = self.pushed[to].wrapping_add(1);
                if to < 64 {
                    self.to_wake |= 1 << to;
                } else {
                    self.wake_all = true;
                }
                self.counts.out += 1;
                true
            }
            Err(_) => {
                lease.fetch_sub(1, Ordering::Relaxed);
                self.counts.full += 1;
                false
            }
        }
    }

    /// Counts a share that could not be offered (its buffer cannot be leased): dropped.
    pub(crate) fn refuse(&mut self) {
        self.counts.full += 1;
    }

    /// Whether buffer `buffer` of this worker is free of jobs (Acquire: their sends are done).
    pub(crate) fn unleased(&self, buffer: usize) -> bool {
        self.links.leases[self.share.worker]
            .get(buffer)
            .is_none_or(|l| l.load(Ordering::Acquire) == 0)
    }

    /// Wakes each peer that got a job since the last call: one eventfd write per peer.
    pub(crate) fn wake(&mut self) {
        if self.to_wake == 0 && !self.wake_all {
            return;
        }
        for (to, wake) in self.links.wakes.iter().enumerate() {
            if self.wake_all || (to < 64 && self.to_wake & (1 << to) != 0) {
                socket::signal(wake.as_raw_fd());
            }
        }
        self.to_wake = 0;
        self.wake_all = false;
    }

    /// Moves up to `max` jobs for this worker into `into`, taking from each origin in turn.
    pub(crate) fn take(&mut self, into: &mut Vec<Job>, max: usize) {
        let me = self.share.worker;
        let n = self.share.workers;
        if n < 2 {
            return;
        }
        let start = into.len();
        let mut idle = 0;
        while into.len() - start < max && idle < n {
            let from = self.next_from;
            self.next_from = (self.next_from + 1) % n;
            match (from != me)
                .then(|| self.links.ring(from, me).pop())
                .flatten()
            {
                Some(job) => {
                    into.push(job);
                    self.took[from] = self.took[from].wrapping_add(1);
                    idle = 0;
                }
                None => idle += 1,
            }
        }
        self.counts.taken += (into.len() - start) as u64;
    }

    /// At exit: drops every job for this worker (releasing its lease), reclaims the jobs this
    /// worker pushed to workers that already left, and waits until no other worker holds a
    /// lease on this worker's buffers. Returns false if that did not happen in time: the
    /// caller must then leak its buffers rather than free them.
    pub(crate) fn close(&mut self) -> bool {
        let me = self.share.worker;
        let n = self.share.workers;
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut jobs = Vec::with_capacity(JOBS_PER_TURN);
        let released = loop {
            self.discard_incoming(&mut jobs);
            for to in (0..n).filter(|&to| to != me) {
                if self.links.gone[to].load(Ordering::Acquire) {
                    // `to` pops no more: this worker may take its place as the consumer.
                    while let Some(job) = self.links.ring(me, to).pop() {
                        job.done();
                    }
                }
            }
            if self.links.leases[me]
                .iter()
                .all(|l| l.load(Ordering::Acquire) == 0)
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        self.discard_incoming(&mut jobs);
        self.links.gone[me].store(true, Ordering::Release);
        released
    }

    fn discard_incoming(&mut self, jobs: &mut Vec<Job>) {
        loop {
            self.take(jobs, JOBS_PER_TURN);
            if jobs.is_empty() {
                return;
            }
            jobs.drain(..).for_each(Job::done);
            self.issued();
        }
    }
}

/// Leases on other workers' buffers held by this worker's sends in flight (io_uring), addressed
/// by ids that the backend keeps beside its own buffer ids.
pub(crate) struct Held {
    slots: Box<[(Option<Lease>, u32)]>,
    free: Vec<u16>,
}

impl Held {
    /// Room for `len` jobs in flight.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            slots: (0..len).map(|_| (None, 0)).collect(),
            free: (0..len as u16).rev().collect(),
        }
    }

    /// The number of free slots.
    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a slot for `lease` with one reference; None when all are in use.
    pub(crate) fn take(&mut self, lease: Lease) -> Option<u16> {
        let id = self.free.pop()?;
        self.slots[usize::from(id)] = (Some(lease), 1);
        Some(id)
    }

    /// Adds a reference (a send that reads the buffer).
    pub(crate) fn hold(&mut self, id: u16) {
        self.slots[usize::from(id)].1 += 1;
    }

    /// Drops a reference; the last one releases the lease.
    pub(crate) fn release(&mut self, id: u16) {
        let slot = &mut self.slots[usize::from(id)];
        debug_assert!(slot.1 > 0);
        slot.1 -= 1;
        if slot.1 == 0
            && let Some(lease) = slot.0.take()
        {
            lease.release();
            self.free.push(id);
        }
    }
}

// SAFETY: leases point at counters in `Links`, alive while any worker runs; one thread uses this.
unsafe impl Send for Held {}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(lease: &AtomicU32, n: u8) -> Job {
        Job {
            hot: Hot {
                room: crate::route::RoomId(1),
                slot: u16::from(n),
                ssrc: crate::packet::rtp::Ssrc(7),
            },
            bytes: std::ptr::null(),
            len: 0,
            lease,
        }
    }

    #[test]
    fn a_job_stays_small() {
        assert_eq!(size_of::<Job>(), 40);
    }

    #[test]
    fn a_ring_keeps_order_and_refuses_when_full() {
        let lease = AtomicU32::new(0);
        let ring = Ring::new(4);
        for n in 0..4u8 {
            assert!(ring.push(job(&lease, n)).is_ok());
        }
        assert!(ring.push(job(&lease, 9)).is_err());
        for n in 0..4u8 {
            assert_eq!(ring.pop().map(|j| j.hot.slot), Some(u16::from(n)));
        }
        assert!(ring.pop().is_none());
    }

    fn hot(slot: u16) -> Hot {
        Hot {
            room: crate::route::RoomId(1),
            slot,
            ssrc: crate::packet::rtp::Ssrc(7),
        }
    }

    #[test]
    fn a_producer_knows_when_its_jobs_are_issued_and_a_full_ring_drops() {
        let wakes = (0..2)
            .map(|_| socket::eventfd().map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .unwrap();
        let links = Arc::new(Links::new(wakes, 4));
        let (mut a, mut b) = (Handoff::new(links.clone(), 0, 1), Handoff::new(links, 1, 1));
        let bytes = [1u8; 8];
        assert!(!a.pending());
        assert!(a.offer(1, &hot(1), &bytes, 0));
        assert!(a.pending() && !a.unleased(0));
        let mut jobs = Vec::new();
        b.take(&mut jobs, JOBS_PER_TURN);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].bytes(), &bytes);
        // Taken is not sent: the producer must keep the split until the sends are issued.
        assert!(a.pending());
        b.issued();
        assert!(!a.pending());
        assert!(!a.unleased(0));
        jobs.pop().unwrap().done();
        assert!(a.unleased(0));
        // A full ring refuses, counted, and leaves the lease as it was.
        for n in 0..RING_JOBS {
            assert!(a.offer(1, &hot(n as u16), &bytes, 1));
        }
        assert!(!a.offer(1, &hot(0), &bytes, 1));
        assert_eq!(a.counts.full, 1);
        assert_eq!(links_lease(&b, 0, 1), RING_JOBS as u32);
        // No lease counter for the buffer: refused too.
        assert!(!a.offer(1, &hot(0), &bytes, 99));
        assert_eq!(a.counts.full, 2);
        b.take(&mut jobs, RING_JOBS);
        assert_eq!(jobs.len(), JOBS_PER_TURN.max(RING_JOBS));
        let slots: Vec<u16> = jobs.iter().map(|j| j.hot.slot).collect();
        assert_eq!(slots, (0..RING_JOBS as u16).collect::<Vec<_>>(), "FIFO");
        jobs.drain(..).for_each(Job::done);
        b.issued();
        assert!(!a.pending() && a.unleased(1));
    }

    fn links_lease(h: &Handoff, worker: usize, buffer: usize) -> u32 {
        h.links.leases[worker][buffer].load(Ordering::Acquire)
    }

    #[test]
    fn a_ring_passes_jobs_between_threads_in_order() {
        let lease = Box::leak(Box::new(AtomicU32::new(0)));
        let ring = Arc::new(Ring::new(8));
        let consumer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut next = 0u32;
                while next < 100_000 {
                    if let Some(j) = ring.pop() {
                        assert_eq!(u32::from(j.hot.slot), next % 65_536);
                        next += 1;
                    }
                }
            })
        };
        let mut n = 0u32;
        while n < 100_000 {
            let mut j = job(lease, 0);
            j.hot.slot = (n % 65_536) as u16;
            if ring.push(j).is_ok() {
                n += 1;
            }
        }
        consumer.join().unwrap();
    }
}
