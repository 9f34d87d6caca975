//! The portable backend: `recvmmsg` into fixed slots, `sendmmsg` of the planned sends.
//!
//! A fan-out of one datagram to N destinations queues N `mmsghdr`s that all point at the same
//! iovec, which points into the receive slot: one buffer, N sends, no copy. A GSO run points at
//! the consecutive iovecs of its datagrams, and the kernel cuts the concatenation at the segment
//! size. The queue is flushed before the next receive overwrites the slots.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Instant;

use socket2::SockAddr;

use super::SLOT_SIZE;
use super::datagram::{Datapath, Output};
use super::idle::IdleSpin;
use super::plan::{Plan, REPLY_SLOTS, What};
use super::send::{self, SEGMENT_CMSG_SPACE, SegmentCmsg, Sent};
use super::socket;
use super::stats::BatchCounts;
use super::worker::Worker;
use crate::packet::trunk;

/// Runs a worker on this backend until shutdown. `ready` hears once that set-up is done.
pub(crate) fn run(w: &Worker, ready: impl FnOnce(io::Result<()>)) -> io::Result<()> {
    let fd = w.socket.as_raw_fd();
    let trunk_fd = w.trunk.as_ref().map(AsRawFd::as_raw_fd);
    let gso = w.settings.gso && send::gso_supported(fd);
    let mut path = Datapath::new(w.index, w.latches.clone(), w.dtls.clone(), w.fence.clone());
    let mut batch = RecvBatch::new(w.settings.recv_batch, SLOT_SIZE);
    // The trunk port's batch: each slot's send iovec skips the trunk header.
    let mut trunk_batch = trunk_fd.map(|_| RecvBatch::new(w.settings.recv_batch, SLOT_SIZE));
    let mut queue = SendQueue::new(w.settings.send_batch, gso, trunk_fd);
    let mut spin = IdleSpin::new(w.settings.idle_spin);
    // When the socket last ran dry, while it stays dry.
    let mut dry_since: Option<Instant> = None;
    ready(Ok(()));
    loop {
        if !w.apply_messages(&mut path) {
            return Ok(());
        }
        let n = batch.recv(fd)?;
        let t = match (&mut trunk_batch, trunk_fd) {
            (Some(tb), Some(tfd)) => {
                let t = tb.recv(tfd)?;
                tb.skip_headers();
                t
            }
            _ => 0,
        };
        if n == 0 && t == 0 {
            let dry = *dry_since.get_or_insert_with(Instant::now);
            if w.settings.busy_poll || spin.keep_polling(dry.elapsed()) {
                std::hint::spin_loop();
            } else {
                wait(fd, trunk_fd, w.wake.as_raw_fd())?;
                spin.slept(dry.elapsed());
                dry_since = None;
            }
            continue;
        }
        dry_since = None;
        path.begin_batch();
        if let Some(tb) = trunk_batch.as_ref().filter(|_| t > 0) {
            for k in 0..t {
                let (src, bytes, truncated) = tb.datagram(k);
                queue.plan.begin(k as u32, tb.send_iovs[k].iov_len);
                let mut out = Out {
                    queue: &mut queue,
                    batch: tb,
                    fd,
                };
                path.handle_trunk(src, bytes, truncated, &mut out);
            }
            queue.flush(fd, tb);
        }
        for k in 0..n {
            let (src, bytes, truncated) = batch.datagram(k);
            queue.plan.begin(k as u32, bytes.len());
            let mut out = Out {
                queue: &mut queue,
                batch: &batch,
                fd,
            };
            path.handle(src, bytes, truncated, &mut out);
        }
        queue.flush(fd, &batch);
        queue.take_counts(&mut path.counts);
        w.stats.publish(&path.counts);
        path.counts = BatchCounts::default();
    }
}

/// The [`Output`] of this backend: plans sends, flushing when the plan is full.
struct Out<'a> {
    queue: &'a mut SendQueue,
    batch: &'a RecvBatch,
    fd: RawFd,
}

impl Output for Out<'_> {
    fn forward(&mut self, dest: &SockAddr) {
        if !self.queue.plan.push(dest) {
            self.queue.flush(self.fd, self.batch);
            let planned = self.queue.plan.push(dest);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }

    fn reply(&mut self, dest: &SockAddr, bytes: &[u8]) {
        if !self.queue.plan.push_reply(dest, bytes) {
            self.queue.flush(self.fd, self.batch);
            let planned = self.queue.plan.push_reply(dest, bytes);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn reply_with(&mut self, dest: &SockAddr, write: &mut dyn FnMut(&mut [u8]) -> Option<usize>) {
        if !self.queue.plan.push_reply_with(dest, &mut *write) {
            self.queue.flush(self.fd, self.batch);
            let planned = self.queue.plan.push_reply_with(dest, write);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn trunk(&mut self, dest: &SockAddr, header: &[u8; trunk::HEADER_LEN]) {
        if self.queue.trunk_fd.is_none() {
            return;
        }
        if !self.queue.plan.push_trunk(dest, header) {
            self.queue.flush(self.fd, self.batch);
            let planned = self.queue.plan.push_trunk(dest, header);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }
}

/// A batch of received datagrams in fixed-size slots.
pub(crate) struct RecvBatch {
    slot_size: usize,
    slots: Box<[u8]>,
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
    /// A batch of `count` slots of `slot_size` bytes each.
    pub(crate) fn new(count: usize, slot_size: usize) -> Self {
        let count = count.max(1);
        let mut batch = Self {
            slot_size,
            slots: vec![0u8; count * slot_size].into_boxed_slice(),
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
            // bytes are a valid value.
            names: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            iovs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            hdrs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            send_iovs: (0..count).map(|_| unsafe { mem::zeroed() }).collect(),
            len: 0,
        };
        let base = batch.slots.as_mut_ptr();
        for i in 0..count {
            batch.iovs[i] = libc::iovec {
                // SAFETY: i * slot_size < count * slot_size, inside the slots allocation.
                iov_base: unsafe { base.add(i * slot_size) }.cast(),
                iov_len: slot_size,
            };
        }
        batch
    }

    /// Receives up to a batch without blocking. Returns the number of datagrams, 0 when none wait.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.len = 0;
        for i in 0..self.hdrs.len() {
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
        // SAFETY: every header points at a name buffer and an iovec into `slots`, all owned by
        // self and valid for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
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
        let bytes = &self.slots[i * self.slot_size..i * self.slot_size + len];
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
    fn new(capacity: usize, gso: bool, trunk_fd: Option<RawFd>) -> Self {
        let capacity = capacity.max(1);
        let empty = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            plan: Plan::new(capacity, gso),
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

    /// Sends everything planned, in as few `sendmmsg` calls as the kernel allows. A datagram the
    /// kernel refuses is counted and skipped; the rest still go out. A GSO send the kernel
    /// refuses turns GSO off for this socket and goes out one datagram at a time.
    fn flush(&mut self, fd: RawFd, batch: &RecvBatch) {
        self.hdrs.clear();
        self.order.clear();
        self.trunk_hdrs.clear();
        for (i, e) in self.plan.entries().iter().enumerate() {
            // SAFETY: a zeroed mmsghdr is valid; the fields set below are the only ones read.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            let dest = match e.what {
                // SAFETY: the destination lives in a compiled room (or the worker's peer
                // table) that the worker holds until the flush.
                What::Run { .. } | What::Trunk { .. } => unsafe { &*e.dest },
                What::Reply(n) => self.plan.reply(n).0,
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
                    hdr.msg_hdr.msg_iov =
                        ptr::from_ref(&batch.send_iovs[first as usize]).cast_mut();
                    hdr.msg_hdr.msg_iovlen = usize::from(count) as _;
                    if count > 1 {
                        self.cmsgs[i] = SegmentCmsg::new(segment);
                        hdr.msg_hdr.msg_control = ptr::from_mut(&mut self.cmsgs[i]).cast();
                        hdr.msg_hdr.msg_controllen = SEGMENT_CMSG_SPACE as _;
                    }
                }
                What::Reply(n) => {
                    let (_, bytes) = self.plan.reply(n);
                    self.reply_iovs[usize::from(n)] = libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    };
                    hdr.msg_hdr.msg_iov = &raw mut self.reply_iovs[usize::from(n)];
                    hdr.msg_hdr.msg_iovlen = 1;
                }
                What::Trunk { first, ref header } => {
                    let k = self.trunk_hdrs.len();
                    self.trunk_iovs[k] = [
                        libc::iovec {
                            iov_base: header.as_ptr() as *mut libc::c_void,
                            iov_len: header.len(),
                        },
                        batch.send_iovs[first as usize],
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
                // The send buffer is full: drop the rest of this batch, counted, and go on reading.
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
                let iovs = &batch.send_iovs[first as usize..][..usize::from(count)];
                // SAFETY: the iovecs point into live slots and the destination into a live room.
                let s = unsafe { send::send_each(fd, &*e.dest, iovs) };
                self.sent.packets += s.packets;
                self.sent.bytes += s.bytes;
                self.sent.errors += s.errors;
            } else {
                self.sent.errors += e.segments();
            }
            start += 1;
        }
        self.plan.clear();
    }

    /// Sends the planned trunk datagrams from the trunk socket (never GSO: each has its header).
    fn flush_trunk(&mut self, tfd: RawFd) {
        let mut start = 0;
        while start < self.trunk_hdrs.len() {
            // SAFETY: each header points at two iovecs of this queue (a header inside the plan's
            // entry, a datagram in a live slot) and a peer's address, none of which change until
            // the call returns.
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
