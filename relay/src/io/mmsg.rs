//! The portable backend: `recvmmsg` into fixed slots, `sendmmsg` of the planned sends.
//!
//! A fan-out of one datagram to N destinations queues N `mmsghdr`s that all point at the same
//! iovec, which points into the receive slot: one buffer, N sends, no copy. A GSO run points at
//! the consecutive iovecs of its datagrams, and the kernel cuts the concatenation at the segment
//! size. The queue is flushed before the next receive overwrites the slots.
//!
//! A worker that shares fan-outs (`io::handoff`) receives into a pool of slots, so that a slot
//! other workers still send from is not overwritten, and each turn sends its share of up to
//! [`JOBS_PER_TURN`] jobs other workers handed it (as many as a receive batch holds datagrams,
//! so that a peer keeps pace with the worker that receives), before it receives again.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Instant;

use super::SLOT_SIZE;
use super::datagram::{Datapath, Output};
use super::handoff::{Handoff, JOBS_PER_TURN, Job};
use super::idle::IdleSpin;
use super::plan::{Plan, REPLY_SLOTS, What};
use super::send::{self, SEGMENT_CMSG_SPACE, SegmentCmsg, Sent};
use super::socket;
use super::stats::BatchCounts;
use super::worker::Worker;
use crate::packet::trunk;
use crate::route::{Addr, Hot};

/// Receive slots of a worker that hands off fan-outs, in receive batches: a slot that other
/// workers still send from is not received into again until they are done (its lease, one per
/// slot). The last batch's worth of slots is never leased, so a worker always has slots to
/// receive into.
pub(crate) const BATCHES: usize = 8;

/// Runs a worker on this backend until shutdown. `ready` hears once that set-up is done.
pub(crate) fn run(w: &Worker, ready: impl FnOnce(io::Result<()>)) -> io::Result<()> {
    let fd = w.socket.as_raw_fd();
    let trunk_fd = w.trunk.as_ref().map(AsRawFd::as_raw_fd);
    let gso = w.settings.gso && send::gso_supported(fd);
    let mut path = Datapath::new(w.index, w.latches.clone(), w.dtls.clone(), w.fence.clone());
    let mut handoff = w.handoff();
    path.share = handoff.share();
    let pool = if handoff.active() { BATCHES } else { 1 };
    let mut batch = RecvBatch::new(w.settings.recv_batch, pool, SLOT_SIZE);
    // The trunk port's batch (never lent): each slot's send iovec skips the trunk header.
    let mut trunk_batch = trunk_fd.map(|_| RecvBatch::new(w.settings.recv_batch, 1, SLOT_SIZE));
    let mut queue = SendQueue::new(w.settings.send_batch, w.settings.plan_sends, gso, trunk_fd);
    let mut jobs = Jobs::new();
    ready(Ok(()));
    let result = serve(
        w,
        fd,
        &mut path,
        &mut handoff,
        &mut batch,
        trunk_batch.as_mut(),
        &mut queue,
        &mut jobs,
    );
    if !handoff.close() {
        tracing::warn!("peers did not release this worker's buffers at exit: leaking them");
        mem::forget(batch);
    }
    result
}

/// The worker loop.
#[allow(
    clippy::too_many_arguments,
    reason = "the worker's state, borrowed apart"
)]
fn serve(
    w: &Worker,
    fd: RawFd,
    path: &mut Datapath,
    handoff: &mut Handoff,
    batch: &mut RecvBatch,
    mut trunk_batch: Option<&mut RecvBatch>,
    queue: &mut SendQueue,
    jobs: &mut Jobs,
) -> io::Result<()> {
    let mut spin = IdleSpin::new(w.settings.idle_spin);
    // When the socket last ran dry, while it stays dry.
    let mut dry_since: Option<Instant> = None;
    loop {
        if !w.apply_messages(path) {
            return Ok(());
        }
        let served = jobs.serve(path, handoff, queue, fd);
        let n = batch.recv(fd, |slot| handoff.unleased(slot))?;
        let t = match (trunk_batch.as_deref_mut(), queue.trunk_fd) {
            (Some(tb), Some(tfd)) => {
                let t = tb.recv(tfd, |_| false)?;
                tb.skip_headers();
                t
            }
            _ => 0,
        };
        if n == 0 && t == 0 {
            if served {
                publish(w, path, queue, handoff);
                continue;
            }
            let dry = *dry_since.get_or_insert_with(Instant::now);
            if w.settings.busy_poll || spin.keep_polling(dry.elapsed()) {
                std::hint::spin_loop();
            } else {
                wait(fd, queue.trunk_fd, w.wake.as_raw_fd())?;
                spin.slept(dry.elapsed());
                dry_since = None;
            }
            continue;
        }
        dry_since = None;
        path.begin_batch();
        path.share.keep = handoff.pending();
        // Trunk ingress is served here, never handed off (`Table::route_trunk`).
        if let Some(tb) = trunk_batch.as_deref().filter(|_| t > 0) {
            for k in 0..t {
                let (src, bytes, truncated) = tb.datagram(k);
                queue.plan.begin(k as u32, tb.send_iovs[k].iov_len);
                let mut out = Out {
                    queue,
                    iovs: &tb.send_iovs,
                    fd,
                    handoff,
                    bytes,
                    lease: None,
                };
                path.handle_trunk(src, bytes, truncated, &mut out);
            }
            queue.flush(fd, &tb.send_iovs);
        }
        for k in 0..n {
            let (src, bytes, truncated) = batch.datagram(k);
            queue.plan.begin(k as u32, bytes.len());
            let mut out = Out {
                queue,
                iovs: &batch.send_iovs,
                fd,
                handoff,
                bytes,
                lease: batch.lease(k),
            };
            path.handle(src, bytes, truncated, &mut out);
        }
        // Peers start on their shares while this worker sends its own.
        handoff.wake();
        queue.flush(fd, &batch.send_iovs);
        publish(w, path, queue, handoff);
    }
}

/// Publishes the counts of the turn.
fn publish(w: &Worker, path: &mut Datapath, queue: &mut SendQueue, handoff: &mut Handoff) {
    queue.take_counts(&mut path.counts);
    path.counts.handoff = mem::take(&mut handoff.counts);
    w.stats.publish(&path.counts);
    path.counts = BatchCounts::default();
}

/// Jobs from other workers and the iovecs that send them.
struct Jobs {
    jobs: Vec<Job>,
    iovs: Box<[libc::iovec]>,
}

// SAFETY: the iovecs point into other workers' buffers held by the jobs' leases; one thread.
unsafe impl Send for Jobs {}

impl Jobs {
    fn new() -> Self {
        Self {
            jobs: Vec::with_capacity(JOBS_PER_TURN),
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                JOBS_PER_TURN
            ]
            .into_boxed_slice(),
        }
    }

    /// Sends this worker's share of up to [`JOBS_PER_TURN`] jobs waiting for it, then releases
    /// them. Returns whether there were any.
    fn serve(
        &mut self,
        path: &mut Datapath,
        handoff: &mut Handoff,
        queue: &mut SendQueue,
        fd: RawFd,
    ) -> bool {
        while self.jobs.len() < JOBS_PER_TURN {
            let k = self.jobs.len();
            handoff.take(&mut self.jobs, 1);
            let Some(job) = self.jobs.get(k) else {
                break;
            };
            if k == 0 {
                // The fence and the clock, once per turn that serves jobs.
                path.begin_batch();
            }
            self.iovs[k] = job.iovec();
            queue.plan.begin(k as u32, job.len());
            let mut out = Out {
                queue,
                iovs: &self.iovs,
                fd,
                handoff,
                bytes: &[],
                lease: None,
            };
            path.handle_hot(&job.hot, job.bytes(), &mut out);
        }
        if self.jobs.is_empty() {
            return false;
        }
        queue.flush(fd, &self.iovs);
        handoff.issued();
        self.jobs.drain(..).for_each(Job::done);
        true
    }
}

/// The [`Output`] of this backend: plans sends, flushing when the plan is full.
struct Out<'a> {
    queue: &'a mut SendQueue,
    /// The iovecs of the datagrams being planned (the plan's datagram indexes).
    iovs: &'a [libc::iovec],
    fd: RawFd,
    handoff: &'a mut Handoff,
    /// The datagram being handled, and the lease of its slot if it may be handed off.
    bytes: &'a [u8],
    lease: Option<usize>,
}

impl Output for Out<'_> {
    fn forward(&mut self, dest: &Addr) {
        if !self.queue.plan.push(dest) {
            self.queue.flush(self.fd, self.iovs);
            let planned = self.queue.plan.push(dest);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }

    fn reply(&mut self, dest: &Addr, bytes: &[u8]) {
        if !self.queue.plan.push_reply(dest, bytes) {
            self.queue.flush(self.fd, self.iovs);
            let planned = self.queue.plan.push_reply(dest, bytes);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn reply_with(&mut self, dest: &Addr, write: &mut dyn FnMut(&mut [u8]) -> Option<usize>) {
        if !self.queue.plan.push_reply_with(dest, &mut *write) {
            self.queue.flush(self.fd, self.iovs);
            let planned = self.queue.plan.push_reply_with(dest, write);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        match self.lease {
            Some(lease) => self.handoff.offer(to, hot, self.bytes, lease),
            None => {
                self.handoff.refuse();
                false
            }
        }
    }

    fn trunk(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN]) {
        if self.queue.trunk_fd.is_none() {
            return;
        }
        if !self.queue.plan.push_trunk(dest, header) {
            self.queue.flush(self.fd, self.iovs);
            let planned = self.queue.plan.push_trunk(dest, header);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }

    fn trunk_copy(&mut self, dest: &Addr, header: &[u8; trunk::HEADER_LEN], bytes: &[u8]) {
        if self.queue.trunk_fd.is_none() {
            return;
        }
        if !self.queue.plan.push_trunk_reply(dest, header, bytes) {
            self.queue.flush(self.fd, self.iovs);
            let planned = self.queue.plan.push_trunk_reply(dest, header, bytes);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }
}

/// A batch of received datagrams, in fixed-size slots taken from a pool.
///
/// With a pool of one batch the slots are simply reused each turn. With more, each receive
/// takes slots whose lease is free (other workers no longer send from them) from the leasable
/// part of the pool; when none is free it uses the last batch's worth, which is never leased.
pub(crate) struct RecvBatch {
    slot_size: usize,
    slots: Box<[u8]>,
    /// Slots that may be lent to other workers: all but the last batch's worth (none with a
    /// pool of one batch).
    leasable: usize,
    /// Where the search for free leasable slots goes on.
    cursor: usize,
    /// The slot each datagram of the batch was received into.
    slot_of: Box<[usize]>,
    /// Whether this batch's slots may be lent.
    lent: bool,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// One iovec per received datagram, sized to its length, for the sends that forward it.
    /// Consecutive datagrams have consecutive iovecs, which is what a GSO run sends.
    send_iovs: Box<[libc::iovec]>,
    len: usize,
}

// SAFETY: the raw pointers inside point into the batch's own boxed buffers, which move with it;
// the batch is used by one thread at a time.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// A batch of `count` datagrams from a pool of `pool` batches' worth of slots of
    /// `slot_size` bytes each.
    pub(crate) fn new(count: usize, pool: usize, slot_size: usize) -> Self {
        let count = count.max(1);
        let pool = pool.max(1);
        Self {
            slot_size,
            slots: vec![0u8; pool * count * slot_size].into_boxed_slice(),
            leasable: (pool - 1) * count,
            cursor: 0,
            slot_of: vec![0; count].into_boxed_slice(),
            lent: false,
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
            // bytes are a valid value.
            names: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            iovs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            hdrs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            send_iovs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            len: 0,
        }
    }

    /// Points the batch's iovecs at free slots: leasable ones that `free` says no other
    /// worker holds, or else the never-leased ones. Returns how many.
    fn take_slots(&mut self, free: impl Fn(usize) -> bool) -> usize {
        let count = self.iovs.len();
        let mut n = 0;
        for _ in 0..self.leasable {
            if n == count {
                break;
            }
            let slot = self.cursor;
            self.cursor = (self.cursor + 1) % self.leasable;
            if free(slot) {
                self.slot_of[n] = slot;
                n += 1;
            }
        }
        self.lent = n > 0;
        if n == 0 {
            for (i, s) in self.slot_of.iter_mut().enumerate() {
                *s = self.leasable + i;
            }
            n = count;
        }
        let base = self.slots.as_mut_ptr();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                // SAFETY: slot_of[i] < pool * count, so the slot lies inside `slots`.
                iov_base: unsafe { base.add(self.slot_of[i] * self.slot_size) }.cast(),
                iov_len: self.slot_size,
            };
        }
        n
    }

    /// Receives up to a batch without blocking, into slots that `free` allows (`take_slots`).
    /// Returns the number of datagrams, 0 when none wait.
    pub(crate) fn recv(&mut self, fd: RawFd, free: impl Fn(usize) -> bool) -> io::Result<usize> {
        self.len = 0;
        let slots = self.take_slots(free);
        for i in 0..slots {
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = ptr::from_mut(&mut self.names[i]).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_iovlen = 1;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: the first `slots` headers point at a name buffer and an iovec into `slots`,
        // all owned by self and valid for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                slots as u32,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.len = n as usize;
        for i in 0..self.len {
            let len = (self.hdrs[i].msg_len as usize).min(self.slot_size);
            self.send_iovs[i] = libc::iovec {
                iov_base: self.iovs[i].iov_base,
                iov_len: len,
            };
        }
        Ok(self.len)
    }

    /// The lease of datagram `i`'s slot, if it may be lent to another worker.
    pub(crate) fn lease(&self, i: usize) -> Option<usize> {
        self.lent.then(|| self.slot_of[i])
    }

    /// Points each received datagram's send iovec past the trunk header: a trunk port batch
    /// forwards the inner datagram (a shorter datagram gets an empty one and is dropped as
    /// malformed before anything is sent).
    pub(crate) fn skip_headers(&mut self) {
        for iov in &mut self.send_iovs[..self.len] {
            let skip = iov.iov_len.min(trunk::HEADER_LEN);
            // SAFETY: skip <= iov_len, so the pointer stays inside the same slot.
            iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(skip) }.cast();
            iov.iov_len -= skip;
        }
    }

    /// Datagram `i`: its source, its bytes, and whether it was larger than a slot.
    pub(crate) fn datagram(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let hdr = &self.hdrs[i];
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = (hdr.msg_len as usize).min(self.slot_size);
        let start = self.slot_of[i] * self.slot_size;
        let bytes = &self.slots[start..start + len];
        let namelen = (hdr.msg_hdr.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: names[i] is a live sockaddr_storage; namelen is clamped to its size.
        let name =
            unsafe { std::slice::from_raw_parts(ptr::from_ref(&self.names[i]).cast(), namelen) };
        (socket::name_to_addr(name), bytes, truncated)
    }
}

/// The planned sends of a batch and the `sendmmsg` headers that carry them.
struct SendQueue {
    plan: Plan,
    /// The headers of one window of the plan (`--send-batch` sends; `cmsgs` and `trunk_iovs`
    /// have one slot per header of the window).
    hdrs: Vec<libc::mmsghdr>,
    /// The plan's entry behind each header of `hdrs`.
    order: Vec<u32>,
    /// The trunk socket (fleet mode), its headers and their two iovecs each (trunk header,
    /// datagram).
    trunk_fd: Option<RawFd>,
    trunk_hdrs: Vec<libc::mmsghdr>,
    trunk_iovs: Box<[[libc::iovec; 2]]>,
    cmsgs: Box<[SegmentCmsg]>,
    reply_iovs: [libc::iovec; REPLY_SLOTS],
    sent: Sent,
    gso_sends: u64,
    gso_fallbacks: u64,
}

// SAFETY: the raw pointers inside refer to the queue's own buffers, the receive batch and
// compiled rooms, which the owning worker keeps alive until the flush; one thread at a time.
unsafe impl Send for SendQueue {}

impl SendQueue {
    /// A queue whose plan holds `plan_sends` sends and that submits up to `capacity` of them in
    /// one window of `sendmmsg` calls.
    fn new(capacity: usize, plan_sends: usize, gso: bool, trunk_fd: Option<RawFd>) -> Self {
        let capacity = capacity.clamp(1, plan_sends);
        let empty = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            plan: Plan::new(plan_sends, gso),
            hdrs: Vec::with_capacity(capacity),
            order: Vec::with_capacity(capacity),
            trunk_fd,
            trunk_hdrs: Vec::with_capacity(capacity),
            trunk_iovs: vec![[empty; 2]; capacity].into_boxed_slice(),
            cmsgs: vec![SegmentCmsg::new(0); capacity].into_boxed_slice(),
            reply_iovs: [libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            }; REPLY_SLOTS],
            sent: Sent::default(),
            gso_sends: 0,
            gso_fallbacks: 0,
        }
    }

    /// Sends everything planned, a window of `--send-batch` sends at a time, in as few
    /// `sendmmsg` calls as the kernel allows. A datagram the kernel refuses is counted and
    /// skipped; the rest still go out. A GSO send the kernel refuses turns GSO off for this
    /// socket and goes out one datagram at a time.
    fn flush(&mut self, fd: RawFd, iovs: &[libc::iovec]) {
        let (planned, window) = (self.plan.entries().len(), self.cmsgs.len());
        let mut from = 0;
        while from < planned {
            let to = planned.min(from + window);
            self.send_window(fd, iovs, from, to);
            from = to;
        }
        self.plan.clear();
    }

    /// Sends the plan's entries `from..to` (at most a window).
    fn send_window(&mut self, fd: RawFd, iovs: &[libc::iovec], from: usize, to: usize) {
        self.hdrs.clear();
        self.order.clear();
        self.trunk_hdrs.clear();
        for (i, e) in self.plan.entries()[from..to]
            .iter()
            .enumerate()
            .map(|(w, e)| (from + w, e))
        {
            // SAFETY: a zeroed mmsghdr is valid; the fields set below are the only ones read.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            let dest = match e.what {
                // SAFETY: the destination lives in a compiled room (or the worker's peer
                // table) that the worker holds until the flush.
                What::Run { .. } | What::Trunk { .. } => unsafe { &*e.dest },
                What::Reply(n) | What::TrunkReply(n) => self.plan.reply(n).0,
            };
            hdr.msg_hdr.msg_name = dest.as_ptr() as *mut libc::c_void;
            hdr.msg_hdr.msg_namelen = dest.len();
            match e.what {
                What::Run {
                    first,
                    count,
                    segment,
                    ..
                } => {
                    hdr.msg_hdr.msg_iov = ptr::from_ref(&iovs[first as usize]).cast_mut();
                    hdr.msg_hdr.msg_iovlen = usize::from(count) as _;
                    if count > 1 {
                        let c = &mut self.cmsgs[i - from];
                        *c = SegmentCmsg::new(segment);
                        hdr.msg_hdr.msg_control = ptr::from_mut(c).cast();
                        hdr.msg_hdr.msg_controllen = SEGMENT_CMSG_SPACE as _;
                    }
                }
                What::Reply(n) | What::TrunkReply(n) => {
                    let (_, bytes) = self.plan.reply(n);
                    self.reply_iovs[usize::from(n)] = libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    };
                    hdr.msg_hdr.msg_iov = &raw mut self.reply_iovs[usize::from(n)];
                    hdr.msg_hdr.msg_iovlen = 1;
                    if matches!(e.what, What::TrunkReply(_)) {
                        // A WebRTC leg's clear copy for a peer relay: from the trunk socket.
                        self.trunk_hdrs.push(hdr);
                        continue;
                    }
                }
                What::Trunk { first, ref header } => {
                    let k = self.trunk_hdrs.len();
                    self.trunk_iovs[k] = [
                        libc::iovec {
                            iov_base: header.as_ptr() as *mut libc::c_void,
                            iov_len: header.len(),
                        },
                        iovs[first as usize],
                    ];
                    hdr.msg_hdr.msg_iov = self.trunk_iovs[k].as_mut_ptr();
                    hdr.msg_hdr.msg_iovlen = 2;
                    self.trunk_hdrs.push(hdr);
                    continue;
                }
            }
            self.hdrs.push(hdr);
            self.order.push(i as u32);
        }
        if let Some(tfd) = self.trunk_fd {
            self.flush_trunk(tfd);
        }
        let mut start = 0;
        while start < self.hdrs.len() {
            // SAFETY: each header points at a live slot iovec or reply, a room's address, and a
            // control message of this queue, none of which change until the call returns.
            let (n, err) = unsafe { send::sendmmsg(fd, &mut self.hdrs[start..]) };
            let entries = self.plan.entries();
            for (h, &i) in self.hdrs[start..start + n].iter().zip(&self.order[start..]) {
                let e = &entries[i as usize];
                let segments = e.segments();
                self.sent.packets += segments;
                self.sent.bytes += u64::from(h.msg_len);
                self.gso_sends += u64::from(segments > 1);
            }
            start += n;
            let Some(err) = err else {
                break;
            };
            if err.kind() == std::io::ErrorKind::WouldBlock {
                // The send buffer is full: drop the rest of this window, counted, and go on.
                let rest: u64 = self.order[start..]
                    .iter()
                    .map(|&i| self.plan.entries()[i as usize].segments())
                    .sum();
                self.sent.errors += rest;
                break;
            }
            let e = self.plan.entries()[self.order[start] as usize];
            if e.segments() > 1 && send::refuses_gso(&err) {
                if self.plan.gso() {
                    self.plan.disable_gso();
                    self.gso_fallbacks += 1;
                    tracing::warn!(error = %err, "the kernel refused GSO: sending datagrams one by one");
                }
                let What::Run { first, count, .. } = e.what else {
                    unreachable!("only runs have several segments");
                };
                let run = &iovs[first as usize..][..usize::from(count)];
                // SAFETY: the iovecs point into live slots and the destination into a live room.
                let s = unsafe { send::send_each(fd, &*e.dest, run) };
                self.sent.packets += s.packets;
                self.sent.bytes += s.bytes;
                self.sent.errors += s.errors;
            } else {
                self.sent.errors += e.segments();
            }
            start += 1;
        }
    }

    /// Sends the planned trunk datagrams from the trunk socket (never GSO: each has its header).
    fn flush_trunk(&mut self, tfd: RawFd) {
        let mut start = 0;
        while start < self.trunk_hdrs.len() {
            // SAFETY: each header points at two iovecs of this queue (a header inside the plan's
            // entry, a datagram in a live slot) or one (a reply slot of the plan) and a peer's
            // address, none of which change until the call returns.
            let (n, err) = unsafe { send::sendmmsg(tfd, &mut self.trunk_hdrs[start..]) };
            for h in &self.trunk_hdrs[start..start + n] {
                self.sent.packets += 1;
                self.sent.bytes += u64::from(h.msg_len);
            }
            start += n;
            let Some(err) = err else {
                break;
            };
            if err.kind() == std::io::ErrorKind::WouldBlock {
                self.sent.errors += (self.trunk_hdrs.len() - start) as u64;
                break;
            }
            self.sent.errors += 1;
            start += 1;
        }
    }

    /// Moves the send counters into the batch counts.
    fn take_counts(&mut self, counts: &mut BatchCounts) {
        counts.add_sent(mem::take(&mut self.sent));
        counts.gso_sends += mem::take(&mut self.gso_sends);
        counts.gso_fallbacks += mem::take(&mut self.gso_fallbacks);
    }
}

/// Sleeps until a socket is readable or the eventfd is signalled, then drains the eventfd.
fn wait(sock: RawFd, trunk: Option<RawFd>, wake: RawFd) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: trunk.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let n = if trunk.is_some() { 3 } else { 2 };
    // SAFETY: fds is a valid array of at least `n` pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n, 1000) };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if fds[1].revents & libc::POLLIN != 0 {
        socket::drain(wake);
    }
    Ok(())
}
