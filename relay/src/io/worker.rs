//! One data-plane worker: a loop pinned to one core that owns one socket and one routing table.
//!
//! Each turn: apply pending control messages, receive a batch, route every datagram, send the
//! batch, publish counters. When the socket is empty it sleeps in `poll` on the socket and its
//! wake-up eventfd, so a control message reaches an idle worker at once.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use socket2::Socket;

use super::mmsg::{RecvBatch, SendQueue};
use super::stats::{BatchCounts, WorkerStats};
use crate::route::{DropReason, Latch, StunAction, StunGuard, Table, Update, Verdict};

/// A message from the control thread to a worker.
#[derive(Debug)]
pub(crate) enum Message {
    /// Apply the update, then acknowledge.
    Update(Update, Sender<()>),
    /// Finish the current batch and exit.
    Shutdown,
}

/// Batch sizes and buffer sizes of a worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub(crate) recv_batch: usize,
    pub(crate) slot_size: usize,
    pub(crate) send_queue: usize,
}

pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) socket: Socket,
    pub(crate) wake: Arc<OwnedFd>,
    pub(crate) rx: Receiver<Message>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) sizes: Sizes,
    pub(crate) latches: Sender<Latch>,
}

/// Room for a STUN response: header, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT, or an
/// error with a short reason, all well under this.
const REPLY_SIZE: usize = 256;

impl Worker {
    pub(crate) fn run(self) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut table = Table::new();
        let mut batch = RecvBatch::new(self.sizes.recv_batch, self.sizes.slot_size);
        let mut queue = SendQueue::with_capacity(self.sizes.send_queue);
        let mut guard = StunGuard::new();
        // One reply buffer per datagram of a batch, so replies live until the flush.
        let mut replies = vec![[0u8; REPLY_SIZE]; self.sizes.recv_batch.max(1)];
        let mut reply_iovs: Vec<libc::iovec> = replies
            .iter_mut()
            .map(|r| libc::iovec {
                iov_base: r.as_mut_ptr().cast(),
                iov_len: 0,
            })
            .collect();
        let start = Instant::now();
        loop {
            if !self.apply_messages(&mut table) {
                return Ok(());
            }
            let n = batch.recv(fd)?;
            if n == 0 {
                wait(fd, self.wake.as_raw_fd())?;
                continue;
            }
            let mut counts = BatchCounts::default();
            let now_ms = start.elapsed().as_millis() as u64 + 1;
            for i in 0..batch.len() {
                let (src, bytes, truncated) = batch.datagram(i);
                counts.packets_in += 1;
                counts.bytes_in += bytes.len() as u64;
                let verdict = match src {
                    _ if truncated => Verdict::Drop(DropReason::Oversize),
                    None => Verdict::Drop(DropReason::UnknownSource),
                    Some(src) => {
                        let iov = batch.send_iov(i);
                        table.route(self.index, &src, bytes, |dest| {
                            if queue.is_full() {
                                add_flushed(&mut counts, queue.flush(fd));
                            }
                            queue.push(iov, dest);
                        })
                    }
                };
                match verdict {
                    Verdict::Forward(_) => {}
                    Verdict::Stun => {
                        let Some(src) = src else { continue };
                        let action = table.stun(
                            self.index,
                            now_ms,
                            &mut guard,
                            &src,
                            bytes,
                            &mut replies[i],
                        );
                        match action {
                            StunAction::Reply { len, latch } => {
                                reply_iovs[i].iov_len = len;
                                if queue.is_full() {
                                    add_flushed(&mut counts, queue.flush(fd));
                                }
                                let (name, namelen) = batch.source(i);
                                queue.push_raw(&reply_iovs[i], name, namelen);
                                if let Some(latch) = latch {
                                    // The control thread applies latches; if it is behind, the
                                    // client's next check retries.
                                    let _ = self.latches.try_send(latch);
                                }
                            }
                            StunAction::Drop(reason) => counts.drops[reason.index()] += 1,
                        }
                    }
                    Verdict::Drop(reason) => counts.drops[reason.index()] += 1,
                }
            }
            add_flushed(&mut counts, queue.flush(fd));
            self.stats.publish(&counts);
        }
    }

    /// Applies every pending message. Returns false on shutdown.
    fn apply_messages(&self, table: &mut Table) -> bool {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Message::Update(update, ack) => {
                    table.apply(update);
                    // The control thread may have given up waiting; nothing to do then.
                    let _ = ack.send(());
                }
                Message::Shutdown => return false,
            }
        }
        true
    }
}

fn add_flushed(counts: &mut BatchCounts, f: super::mmsg::Flushed) {
    counts.packets_out += f.packets;
    counts.bytes_out += f.bytes;
    counts.send_errors += f.errors;
}

/// Sleeps until the socket is readable or the eventfd is signalled, then drains the eventfd.
fn wait(sock: RawFd, wake: RawFd) -> io::Result<()> {
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
    ];
    // SAFETY: fds is a valid array of two pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if fds[1].revents & libc::POLLIN != 0 {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from an eventfd we own.
        unsafe { libc::read(wake, buf.as_mut_ptr().cast(), 8) };
    }
    Ok(())
}
