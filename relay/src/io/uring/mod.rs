//! The io_uring backend: one ring per worker, created on the worker's pinned thread.
//!
//! - Receive: one multishot `RecvMsgMulti` on the registered socket fills buffers from a provided
//!   buffer ring ([`bufs`]); each completion is one datagram (16-byte header, the source address,
//!   the payload). When the ring runs dry the kernel ends the multishot with ENOBUFS; unread
//!   datagrams stay queued on the socket, and the worker arms it again once buffers are back.
//! - Send: every planned send is a `SendMsg` whose iovecs point into the receive buffers (one
//!   buffer, N sends); a GSO run points at several. Each buffer counts its sends and goes back
//!   to the ring when the last one completes ([`sends`] keeps what a send needs until then).
//! - Wake-up: a multishot poll on the control eventfd, so a control message ends the wait.
//!
//! The ring is SINGLE_ISSUER and DEFER_TASKRUN: completions are produced only when this thread
//! enters the kernel to wait for them, so nothing interrupts a batch.
//!
//! Calling order of one turn: apply control messages, arm what ended, submit and wait, reap
//! (sends complete, datagrams queue), handle the datagrams, submit their sends, release the
//! batch's buffer references, publish counters.

mod bufs;
mod probe;
mod sends;

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use io_uring::types::{Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::SLOT_SIZE;
use super::datagram::{Datapath, Output};
use super::handoff::{Handoff, Held, JOBS_PER_TURN, Job, SENDS_PER_TURN};
use super::idle::IdleSpin;
use super::plan::{Plan, REPLY_SLOTS, What};
use super::send::{self, Sent};
use super::socket;
use super::stats::BatchCounts;
use super::worker::Worker;
use crate::route::{Addr, Hot};
use bufs::BufRing;
use sends::Records;

pub(crate) use probe::probe;

/// Room in a receive buffer for the header and the source address ahead of the payload.
const BUF_HEADROOM: usize = 64;
/// The size of `struct io_uring_recvmsg_out` (four u32s), which starts every receive buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// user_data of the multishot receive, the wake-up poll and cancellations; sends use their
/// record index.
const RECV: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
const CANCEL: u64 = u64::MAX - 2;
/// user_data of the trunk socket's multishot receive (fleet mode).
const RECV_TRUNK: u64 = u64::MAX - 3;
/// Registered file slots.
const SOCKET_SLOT: Fixed = Fixed(0);
/// Buffer ids from here on name another worker's buffer that a job lent this worker: `Held`
/// id `bid - REMOTE` (the ring's own ids are below 32768).
const REMOTE: u16 = 32768;
/// Jobs of other workers whose sends may be in flight at once.
const HELD_JOBS: usize = 4 * JOBS_PER_TURN;
/// How long a worker whose buffers are all lent out waits before it looks at their leases again.
const LEASE_POLL_NS: u32 = 50_000;
const WAKE_SLOT: Fixed = Fixed(1);
const TRUNK_SLOT: Fixed = Fixed(2);

/// Runs a worker on this backend until shutdown. `ready` hears once that set-up is done.
pub(crate) fn run(w: &Worker, ready: impl FnOnce(io::Result<()>)) -> io::Result<()> {
    let mut u = match Uring::new(w) {
        Ok(u) => u,
        Err(e) => {
            let kind = e.kind();
            ready(Err(io::Error::new(
                kind,
                format!("io_uring worker set-up: {e}{}", memlock_hint(&e)),
            )));
            return Err(e);
        }
    };
    ready(Ok(()));
    let result = u.serve(w);
    u.drain();
    if !u.handoff.close() {
        tracing::warn!("peers did not release this worker's buffers at exit: leaking them");
        u.leak_bufs();
    }
    result
}

/// What to add to a ring set-up error: ENOMEM there means RLIMIT_MEMLOCK, which the kernel charges
/// the rings to when the process lacks CAP_IPC_LOCK (as under the systemd unit).
fn memlock_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOMEM) {
        ": io_uring's rings count against RLIMIT_MEMLOCK; raise it (LimitMEMLOCK= in the unit, \
         ulimit -l), about 0.3 MiB per worker with the default settings (OPERATIONS.md)"
    } else {
        ""
    }
}

/// The kernel's largest completion queue (`IORING_MAX_CQ_ENTRIES`).
const MAX_CQ_ENTRIES: usize = 65536;

/// Creates a ring with the flags the workers use. The calling thread becomes its only issuer.
fn new_ring(sq: u32, cq: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(sq)
}

/// One datagram of the current turn: the iovec that sends it and its buffer.
#[derive(Clone, Copy)]
struct Received {
    iov: libc::iovec,
    bid: u16,
}

struct Uring {
    // Declared first so that it is dropped first: the kernel lets go of the memory below.
    ring: IoUring,
    bufs: BufRing,
    records: Records,
    /// The header the multishot receive reads its name and control lengths from.
    recv_hdr: Box<libc::msghdr>,
    /// Receive completions reaped but not yet handled: (result, flags, from the trunk socket).
    pending: Vec<(i32, u32, bool)>,
    /// The datagrams of this turn, in order; a GSO run is a range of them.
    turn: Vec<Received>,
    plan: Plan,
    fd: RawFd,
    wake: RawFd,
    recv_armed: bool,
    /// Whether there is a trunk socket, and its receive is armed.
    trunk: bool,
    trunk_armed: bool,
    wake_armed: bool,
    busy_poll: bool,
    sent: Sent,
    gso_sends: u64,
    gso_fallbacks: u64,
    rearms: u64,
    recv_errors: u64,
    handoff: Handoff,
    /// Leases on other workers' buffers that this worker's sends read.
    held: Held,
    /// Jobs from other workers planned this turn (their leases move to `held` until their sends
    /// complete).
    jobs: Vec<Job>,
    /// This worker's buffers that other workers send from, until their leases are released.
    lent: Vec<u16>,
    /// Copies planned this turn (the turn's budget, [`SENDS_PER_TURN`]).
    planned: usize,
}

impl Uring {
    fn new(w: &Worker) -> io::Result<Self> {
        let s = &w.settings;
        let records = s.send_batch * 2;
        let sq = (s.send_batch + 16).next_power_of_two() as u32;
        // Twice what can be outstanding, within the kernel's limit (IORING_MAX_CQ_ENTRIES, 65536),
        // which still leaves room for every buffer and record at the largest `--ring-buffers`.
        let cq = ((s.ring_buffers + records) * 2)
            .next_power_of_two()
            .min(MAX_CQ_ENTRIES) as u32;
        let ring = new_ring(sq, cq)?;
        let fd = w.socket.as_raw_fd();
        let wake = w.wake.as_raw_fd();
        let trunk = w.trunk.as_ref().map(AsRawFd::as_raw_fd);
        match trunk {
            Some(t) => ring.submitter().register_files(&[fd, wake, t])?,
            None => ring.submitter().register_files(&[fd, wake])?,
        }
        let bufs = BufRing::new(s.ring_buffers, SLOT_SIZE + BUF_HEADROOM)?;
        bufs.register(&ring.submitter())?;
        // SAFETY: a zeroed msghdr is valid; the kernel reads only the two lengths set below.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        recv_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let gso = s.gso && send::gso_supported(fd);
        Ok(Self {
            ring,
            bufs,
            records: Records::new(records, REPLY_SLOTS),
            recv_hdr,
            pending: Vec::with_capacity(s.ring_buffers + 8),
            // A turn holds what was received and the jobs of other workers it serves.
            turn: Vec::with_capacity(s.ring_buffers + 8 + JOBS_PER_TURN),
            plan: Plan::new(s.plan_sends, gso),
            fd,
            wake,
            recv_armed: false,
            trunk: trunk.is_some(),
            trunk_armed: false,
            wake_armed: false,
            busy_poll: s.busy_poll,
            sent: Sent::default(),
            gso_sends: 0,
            gso_fallbacks: 0,
            rearms: 0,
            recv_errors: 0,
            handoff: w.handoff(),
            held: Held::new(HELD_JOBS),
            jobs: Vec::with_capacity(JOBS_PER_TURN),
            lent: Vec::with_capacity(s.ring_buffers),
            planned: 0,
        })
    }

    /// The worker loop.
    fn serve(&mut self, w: &Worker) -> io::Result<()> {
        let mut path = Datapath::new(w.index, w.latches.clone(), w.dtls.clone(), w.fence.clone());
        path.share = self.handoff.share();
        let mut first_arm = true;
        let mut spin = IdleSpin::new(w.settings.idle_spin);
        // When the last turn without datagrams began, while none come.
        let mut dry_since: Option<Instant> = None;
        // Whether the last turn stopped at its budget with work left (datagrams or jobs).
        let mut more = false;
        loop {
            if !w.apply_messages(&mut path) {
                return Ok(());
            }
            if !self.recv_armed && self.bufs.any_free() {
                self.push(
                    opcode::RecvMsgMulti::new(SOCKET_SLOT, &*self.recv_hdr, bufs::GROUP).build(),
                    RECV,
                )?;
                self.recv_armed = true;
                self.rearms += u64::from(!mem::take(&mut first_arm));
            }
            if self.trunk && !self.trunk_armed && self.bufs.any_free() {
                self.push(
                    opcode::RecvMsgMulti::new(TRUNK_SLOT, &*self.recv_hdr, bufs::GROUP).build(),
                    RECV_TRUNK,
                )?;
                self.trunk_armed = true;
            }
            if !self.wake_armed {
                let poll = opcode::PollAdd::new(WAKE_SLOT, libc::POLLIN as u32).multi(true);
                self.push(poll.build(), WAKE)?;
                self.wake_armed = true;
            }
            let sleep = !self.busy_poll
                && !more
                && dry_since.is_some_and(|dry| !spin.keep_polling(dry.elapsed()));
            // With every buffer lent to peers and none free, nothing would wake this worker when
            // their leases are released: wait briefly, then look again.
            let starved = !self.lent.is_empty() && !self.bufs.any_free();
            let wait = match () {
                _ if !sleep => Timespec::new(),
                _ if starved => Timespec::new().nsec(LEASE_POLL_NS),
                _ => Timespec::new().sec(1),
            };
            self.enter(&wait)?;
            // The sends of the jobs planned last turn are submitted now.
            self.handoff.issued();
            self.reap();
            let received = !self.pending.is_empty();
            if received {
                if let (true, Some(dry)) = (sleep, dry_since) {
                    spin.slept(dry.elapsed());
                }
                dry_since = None;
            } else {
                // Nothing came (a wake-up by send completions or a control message leaves the
                // socket as dry as it was).
                dry_since.get_or_insert_with(Instant::now);
            }
            if received {
                path.begin_batch();
                path.share.keep = self.handoff.pending();
            }
            // Received datagrams up to half the turn's budget (at least one), then jobs up to
            // the rest: a fan-out of thousands neither holds the worker nor starves the other.
            self.planned = 0;
            let mut i = 0;
            while i < self.pending.len() && (i == 0 || self.planned < SENDS_PER_TURN / 2) {
                let (res, flags, trunk) = self.pending[i];
                i += 1;
                self.receive(res, flags, trunk, &mut path)?;
            }
            self.pending.drain(..i);
            self.handoff.wake();
            let budget = SENDS_PER_TURN.saturating_sub(self.planned).max(1);
            let jobs = self.serve_jobs(&mut path, budget);
            more =
                !self.pending.is_empty() || jobs == JOBS_PER_TURN || self.planned >= SENDS_PER_TURN;
            self.flush();
            self.jobs.clear();
            for r in self.turn.drain(..) {
                release(&mut self.bufs, &mut self.held, r.bid);
            }
            let (bufs, handoff) = (&mut self.bufs, &self.handoff);
            self.lent.retain(|&bid| {
                let busy = !handoff.unleased(usize::from(bid));
                if !busy {
                    bufs.release(bid);
                }
                busy
            });
            self.bufs.publish();
            // Counters go out once per batch; a turn with only send completions (or a wake-up)
            // publishes too when it has something to add.
            let sent = self.sent.packets + self.sent.errors;
            if received || jobs > 0 || sent > 0 || self.gso_fallbacks > 0 {
                self.take_counts(&mut path.counts);
                w.stats.publish(&path.counts);
                path.counts = BatchCounts::default();
            }
        }
    }

    /// Plans this worker's share of the jobs other workers handed it, one job at a time until
    /// `budget` copies are planned (at least one job) or [`JOBS_PER_TURN`]. Returns how many.
    fn serve_jobs(&mut self, path: &mut Datapath, budget: usize) -> usize {
        let max = JOBS_PER_TURN.min(self.held.available());
        let mut jobs = mem::take(&mut self.jobs);
        let start = self.planned;
        while jobs.len() < max && (jobs.is_empty() || self.planned - start < budget) {
            let k = jobs.len();
            self.handoff.take(&mut jobs, 1);
            let Some(job) = jobs.get(k) else {
                break;
            };
            if k == 0 {
                // The fence and the clock, once per turn that serves jobs.
                path.begin_batch();
            }
            let id = self
                .held
                .take(job.lease())
                .expect("no more jobs are taken than `held` has room for");
            let t = self.turn.len() as u32;
            self.turn.push(Received {
                iov: job.iovec(),
                bid: REMOTE + id,
            });
            self.plan.begin(t, job.len());
            path.handle_hot(&job.hot, job.bytes(), &mut Out { u: self });
        }
        let n = jobs.len();
        self.jobs = jobs;
        n
    }

    /// Handles one receive completion.
    fn receive(
        &mut self,
        res: i32,
        flags: u32,
        trunk: bool,
        path: &mut Datapath,
    ) -> io::Result<()> {
        if !cqueue::more(flags) {
            if trunk {
                self.trunk_armed = false;
            } else {
                self.recv_armed = false;
            }
        }
        if res < 0 {
            return match -res {
                // Out of buffers, or stopped by the kernel: armed again at the top of the loop.
                libc::ENOBUFS | libc::ECANCELED | libc::EINTR | libc::EAGAIN => Ok(()),
                libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP => Err(
                    io::Error::other(format!("multishot receive: {}", errno(res))),
                ),
                _ => {
                    if self.recv_errors == 0 {
                        tracing::warn!(error = %errno(res), "multishot receive failed; re-arming");
                    }
                    self.recv_errors += 1;
                    Ok(())
                }
            };
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return Ok(());
        };
        let buf = self.bufs.take(bid, res as usize);
        let k = self.turn.len() as u32;
        let (src, bytes, truncated) = match types::RecvMsgOut::parse(buf, &self.recv_hdr) {
            Ok(m) => {
                // The payload follows the header and the fixed-size name field (no control).
                let start = RECVMSG_OUT_LEN + self.recv_hdr.msg_namelen as usize;
                let len = m.payload_data().len();
                (
                    socket::name_to_addr(m.name_data()),
                    buf.get(start..start + len).unwrap_or_default(),
                    m.is_payload_truncated(),
                )
            }
            Err(()) => (None, &buf[..0], true),
        };
        // A trunk datagram forwards its inner datagram, after the header.
        let sent = if trunk {
            bytes
                .get(crate::packet::trunk::HEADER_LEN..)
                .unwrap_or_default()
        } else {
            bytes
        };
        self.turn.push(Received {
            iov: libc::iovec {
                iov_base: sent.as_ptr() as *mut libc::c_void,
                iov_len: sent.len(),
            },
            bid,
        });
        self.plan.begin(k, sent.len());
        if trunk {
            path.handle_trunk(src, bytes, truncated, &mut Out { u: self });
        } else {
            path.handle(src, bytes, truncated, &mut Out { u: self });
        }
        Ok(())
    }

    /// Queues every planned send as a `SendMsg` and submits them. A send waits for a free
    /// record, which a completion returns.
    fn flush(&mut self) {
        for j in 0..self.plan.entries().len() {
            let e = self.plan.entries()[j];
            let mut reply_retried = false;
            let filled = loop {
                let filled = match e.what {
                    What::Run {
                        first,
                        count,
                        segment,
                        ..
                    } => {
                        // SAFETY: the destination lives in a compiled room that the worker holds
                        // until the end of the turn; the record copies it.
                        let dest = unsafe { &*e.dest };
                        let run = &self.turn[first as usize..][..usize::from(count)];
                        self.records
                            .fill(dest, run.iter().map(|r| (r.iov, r.bid)), segment)
                    }
                    What::Trunk { first, ref header } => {
                        // SAFETY: the destination lives in the worker's peer table, which it
                        // holds until the end of the turn; the record copies it.
                        let dest = unsafe { &*e.dest };
                        let r = self.turn[first as usize];
                        self.records.fill_trunk(dest, header, r.iov, r.bid)
                    }
                    What::Reply(n) | What::TrunkReply(n) => {
                        let (dest, bytes) = self.plan.reply(n);
                        let r = self.records.fill_reply(dest, bytes);
                        if r.is_none() && self.records.any_free() {
                            // Every reply buffer is in flight: collect finished sends once,
                            // then drop this reply if none came back (the client retries).
                            if reply_retried {
                                self.sent.errors += 1;
                                break None;
                            }
                            reply_retried = true;
                            let _ = self.ring.submit();
                            self.reap();
                            continue;
                        }
                        r
                    }
                };
                if filled.is_some() {
                    break filled;
                }
                self.wait_for_record();
            };
            let Some((idx, hdr)) = filled else {
                continue;
            };
            let mut slot = SOCKET_SLOT;
            match e.what {
                What::Run { first, count, .. } => {
                    for r in &self.turn[first as usize..][..usize::from(count)] {
                        hold(&mut self.bufs, &mut self.held, r.bid);
                    }
                }
                What::Trunk { first, .. } => {
                    self.bufs.hold(self.turn[first as usize].bid);
                    slot = TRUNK_SLOT;
                }
                What::TrunkReply(_) => slot = TRUNK_SLOT,
                What::Reply(_) => {}
            }
            let sqe = opcode::SendMsg::new(slot, hdr).build();
            if self.push(sqe, u64::from(idx)).is_err() {
                // Unreachable: push submits to make room. Give the record back untouched.
                self.complete(idx, -libc::EAGAIN);
            }
        }
        self.plan.clear();
        if let Err(e) = self.ring.submit() {
            tracing::warn!(error = %e, "io_uring submit failed");
        }
    }

    /// Submits what is queued and waits until some send completes and frees its record.
    fn wait_for_record(&mut self) {
        while !self.records.any_free() {
            let ts = Timespec::new().sec(1);
            let args = SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args)
                && !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                )
            {
                tracing::warn!(error = %e, "io_uring wait failed");
            }
            self.reap();
        }
    }

    /// Pushes one submission, submitting first when the queue is full.
    fn push(&mut self, sqe: squeue::Entry, user_data: u64) -> io::Result<()> {
        let sqe = sqe.user_data(user_data);
        for _ in 0..2 {
            // SAFETY: every submission points at memory that lives until its completion: the
            // receive header and buffer ring (owned by self, freed only after `drain`), and send
            // records (freed only when their completion is reaped).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Submits what is queued and collects completions: waits for one for at most `ts` (a
    /// second when idle, so that a missed wake-up costs a second, not forever; zero to spin).
    fn enter(&mut self, ts: &Timespec) -> io::Result<()> {
        let args = SubmitArgs::new().timespec(ts);
        // With DEFER_TASKRUN, completions appear only when entering with GETEVENTS, which
        // waiting for one completion (with a zero timeout when spinning) asks for.
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes every completion: sends finish at once, receives queue for the turn.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            match cqe.user_data() {
                RECV => self.pending.push((cqe.result(), cqe.flags(), false)),
                RECV_TRUNK => self.pending.push((cqe.result(), cqe.flags(), true)),
                WAKE => {
                    socket::drain(self.wake);
                    if !cqueue::more(cqe.flags()) {
                        self.wake_armed = false;
                    }
                }
                CANCEL => {}
                idx => complete(
                    &mut self.records,
                    (&mut self.bufs, &mut self.held),
                    &mut self.plan,
                    Counts {
                        sent: &mut self.sent,
                        gso_sends: &mut self.gso_sends,
                        gso_fallbacks: &mut self.gso_fallbacks,
                    },
                    self.fd,
                    idx as u32,
                    cqe.result(),
                ),
            }
        }
    }

    /// Finishes one send whose completion was not reaped from the ring.
    fn complete(&mut self, idx: u32, res: i32) {
        let counts = Counts {
            sent: &mut self.sent,
            gso_sends: &mut self.gso_sends,
            gso_fallbacks: &mut self.gso_fallbacks,
        };
        let (records, plan) = (&mut self.records, &mut self.plan);
        let bufs = (&mut self.bufs, &mut self.held);
        complete(records, bufs, plan, counts, self.fd, idx, res);
    }

    fn take_counts(&mut self, counts: &mut BatchCounts) {
        counts.add_sent(mem::take(&mut self.sent));
        counts.gso_sends += mem::take(&mut self.gso_sends);
        counts.gso_fallbacks += mem::take(&mut self.gso_fallbacks);
        counts.recv_rearms += mem::take(&mut self.rearms);
        counts.handoff = mem::take(&mut self.handoff.counts);
    }

    /// Forgets the receive buffers instead of freeing them: another worker may still read them.
    fn leak_bufs(&mut self) {
        let bufs = mem::replace(
            &mut self.bufs,
            BufRing::new(1, 64).expect("a one-buffer ring allocates"),
        );
        mem::forget(bufs);
    }

    /// Ends every operation and waits for the last completions, so that no memory the kernel
    /// may touch is freed. If the ring does not drain in time the memory is leaked instead.
    fn drain(&mut self) {
        for target in [RECV, WAKE, RECV_TRUNK] {
            let cancel = opcode::AsyncCancel::new(target).build();
            let _ = self.push(cancel, CANCEL);
        }
        for _ in 0..50 {
            if self.records.idle() && !self.recv_armed && !self.trunk_armed && !self.wake_armed {
                break;
            }
            let ts = Timespec::new().nsec(20_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
            for (_, flags, trunk) in self.pending.drain(..) {
                if !cqueue::more(flags) {
                    if trunk {
                        self.trunk_armed = false;
                    } else {
                        self.recv_armed = false;
                    }
                }
            }
        }
        if !self.records.idle() || self.recv_armed || self.trunk_armed {
            tracing::warn!("io_uring did not drain at shutdown: leaking its buffers");
            self.records.leak();
            self.leak_bufs();
            // SAFETY: a zeroed msghdr is valid.
            let hdr = mem::replace(&mut self.recv_hdr, Box::new(unsafe { mem::zeroed() }));
            mem::forget(hdr);
        }
    }
}

/// Counters a send completion adds to.
struct Counts<'a> {
    sent: &'a mut Sent,
    gso_sends: &'a mut u64,
    gso_fallbacks: &'a mut u64,
}

/// Finishes send `idx` with result `res`: counts it, resends a refused GSO send one datagram at
/// a time (and turns GSO off), releases its buffers and frees its record.
fn complete(
    records: &mut Records,
    (bufs, held): (&mut BufRing, &mut Held),
    plan: &mut Plan,
    c: Counts<'_>,
    fd: RawFd,
    idx: u32,
    res: i32,
) {
    let Some(r) = records.get(idx) else {
        return;
    };
    let segments = r.segments();
    if res >= 0 {
        c.sent.packets += segments;
        c.sent.bytes += res as u64;
        *c.gso_sends += u64::from(segments > 1);
    } else if segments > 1 && send::refuses_gso(&errno(res)) {
        if plan.gso() {
            plan.disable_gso();
            *c.gso_fallbacks += 1;
            tracing::warn!(error = %errno(res), "the kernel refused GSO: sending datagrams one by one");
        }
        // SAFETY: the record's iovecs point into buffers it still holds references to.
        let s = unsafe { send::send_each(fd, r.dest(), &r.iov[..usize::from(r.count)]) };
        c.sent.packets += s.packets;
        c.sent.bytes += s.bytes;
        c.sent.errors += s.errors;
    } else {
        c.sent.errors += segments;
    }
    for &bid in &r.bids[..usize::from(r.count)] {
        release(bufs, held, bid);
    }
    records.free(idx);
}

/// Adds a reference to buffer `bid`: this worker's own, or one lent by another worker.
fn hold(bufs: &mut BufRing, held: &mut Held, bid: u16) {
    match bid.checked_sub(REMOTE) {
        Some(id) => held.hold(id),
        None => bufs.hold(bid),
    }
}

/// Drops a reference to buffer `bid`; the last one gives it back to the ring or to its owner.
fn release(bufs: &mut BufRing, held: &mut Held, bid: u16) {
    match bid.checked_sub(REMOTE) {
        Some(id) => held.release(id),
        None => bufs.release(bid),
    }
}

fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// The [`Output`] of this backend: plans sends, flushing when the plan is full.
struct Out<'a> {
    u: &'a mut Uring,
}

impl Output for Out<'_> {
    fn forward(&mut self, dest: &Addr) {
        self.u.planned += 1;
        if !self.u.plan.push(dest) {
            self.u.flush();
            let planned = self.u.plan.push(dest);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }

    fn reply(&mut self, dest: &Addr, bytes: &[u8]) {
        self.u.planned += 1;
        if !self.u.plan.push_reply(dest, bytes) {
            self.u.flush();
            let planned = self.u.plan.push_reply(dest, bytes);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn reply_with(&mut self, dest: &Addr, write: &mut dyn FnMut(&mut [u8]) -> Option<usize>) {
        self.u.planned += 1;
        if !self.u.plan.push_reply_with(dest, &mut *write) {
            self.u.flush();
            let planned = self.u.plan.push_reply_with(dest, write);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }

    fn hand_off(&mut self, to: usize, hot: &Hot) -> bool {
        let u = &mut *self.u;
        let Some(r) = u.turn.last().copied().filter(|r| r.bid < REMOTE) else {
            u.handoff.refuse();
            return false;
        };
        // SAFETY: the iovec points at the payload in buffer `r.bid`, which this worker holds
        // for the turn; `offer` leases it on, and the buffer stays off the ring until the lease
        // is released (`lent`).
        let bytes =
            unsafe { std::slice::from_raw_parts(r.iov.iov_base as *const u8, r.iov.iov_len) };
        if !u.handoff.offer(to, hot, bytes, usize::from(r.bid)) {
            return false;
        }
        // A datagram's hand-offs come one after another: the first one holds the buffer.
        if u.lent.last() != Some(&r.bid) {
            u.bufs.hold(r.bid);
            u.lent.push(r.bid);
        }
        true
    }

    fn trunk(&mut self, dest: &Addr, header: &[u8; crate::packet::trunk::HEADER_LEN]) {
        if !self.u.trunk {
            return;
        }
        self.u.planned += 1;
        if !self.u.plan.push_trunk(dest, header) {
            self.u.flush();
            let planned = self.u.plan.push_trunk(dest, header);
            debug_assert!(planned, "an empty plan takes a send");
        }
    }

    fn trunk_copy(
        &mut self,
        dest: &Addr,
        header: &[u8; crate::packet::trunk::HEADER_LEN],
        bytes: &[u8],
    ) {
        if !self.u.trunk {
            return;
        }
        self.u.planned += 1;
        if !self.u.plan.push_trunk_reply(dest, header, bytes) {
            self.u.flush();
            let planned = self.u.plan.push_trunk_reply(dest, header, bytes);
            debug_assert!(planned, "an empty plan takes a reply");
        }
    }
}
