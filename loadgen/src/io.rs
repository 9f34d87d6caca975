//! Batched UDP I/O for many sockets: `sendmmsg` and `recvmmsg` batches, and an epoll set to find
//! the sockets that have something to read. Linux only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use socket2::SockAddr;

use crate::rtp::MAX_LEN;

/// Packets to send from one socket: each packet is written once into its own buffer and then
/// sent to one or more destinations without copying.
pub(crate) struct SendBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    /// (packet index, destination index) per datagram.
    msgs: Vec<(u32, u32)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub(crate) fn new(packets: usize) -> Self {
        Self {
            buf: vec![0; packets * MAX_LEN],
            lens: Vec::with_capacity(packets),
            msgs: Vec::new(),
            iovs: Vec::new(),
            hdrs: Vec::new(),
        }
    }

    /// Whether another packet fits.
    pub(crate) fn has_room(&self) -> bool {
        self.lens.len() * MAX_LEN < self.buf.len()
    }

    /// Packets in the batch.
    pub(crate) fn packets(&self) -> usize {
        self.lens.len()
    }

    /// Appends a packet written by `write` (which returns its length) and returns its index.
    pub(crate) fn push(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let i = self.lens.len();
        let slot = &mut self.buf[i * MAX_LEN..(i + 1) * MAX_LEN];
        let len = write(slot).min(MAX_LEN);
        self.lens.push(len);
        i
    }

    /// Sends packet `packet` to destination `dest` too.
    pub(crate) fn send_to(&mut self, packet: usize, dest: usize) {
        self.msgs.push((packet as u32, dest as u32));
    }

    /// Each packet's bytes, to stamp them just before sending.
    pub(crate) fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i];
        &mut self.buf[i * MAX_LEN..i * MAX_LEN + len]
    }

    /// Rewrites packet `i` in its slot: `f(slot, len)` returns its new length (sealed with
    /// SRTP, which appends a tag), or `None` to leave it as it was; returns whether it did.
    pub(crate) fn rewrite(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut [u8], usize) -> Option<usize>,
    ) -> bool {
        let slot = &mut self.buf[i * MAX_LEN..(i + 1) * MAX_LEN];
        match f(slot, self.lens[i]) {
            Some(len) => {
                self.lens[i] = len.min(MAX_LEN);
                true
            }
            None => false,
        }
    }

    /// Sends every datagram and empties the batch. Returns the datagrams that went out, the
    /// packets that went out to at least one destination (a prefix of the batch: the first
    /// error stops the rest) and the error.
    pub(crate) fn flush(&mut self, fd: RawFd, dests: &[SockAddr]) -> Flushed {
        self.iovs.clear();
        self.hdrs.clear();
        for i in 0..self.lens.len() {
            self.iovs.push(libc::iovec {
                iov_base: self.buf[i * MAX_LEN..].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            });
        }
        for &(packet, dest) in &self.msgs {
            let addr = &dests[dest as usize];
            // SAFETY: an all-zero msghdr is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = addr.len();
            h.msg_hdr.msg_iov = &mut self.iovs[packet as usize];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let total = self.hdrs.len();
        let mut done = 0;
        let mut error = None;
        let mut retries = 0;
        while done < total {
            let n = (total - done).min(MAX_MMSG);
            // SAFETY: hdrs[done..done+n] are valid headers pointing into self.iovs, self.buf and
            // dests, all of which outlive the call.
            let r =
                unsafe { libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), n as libc::c_uint, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR)
                );
                if transient && retries < 3 {
                    retries += 1;
                    std::thread::yield_now();
                    continue;
                }
                error = Some(e);
                break;
            }
            done += r as usize;
        }
        let packets = if done == total {
            self.lens.len()
        } else {
            let failed = self.msgs[done].0 as usize;
            let partly = done > 0 && self.msgs[done - 1].0 as usize == failed;
            failed + usize::from(partly)
        };
        self.lens.clear();
        self.msgs.clear();
        Flushed {
            datagrams: done,
            packets,
            error,
        }
    }
}

/// What a `SendBatch::flush` did.
pub(crate) struct Flushed {
    pub(crate) datagrams: usize,
    pub(crate) packets: usize,
    pub(crate) error: Option<io::Error>,
}

/// A batch of receive buffers for `recvmmsg`, with each datagram's kernel receive time
/// (`SO_TIMESTAMPNS`, when the socket asks for it: see [`timestamp_arrivals`]).
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One control-message buffer per datagram, 8-byte aligned.
    cmsgs: Vec<[u64; CMSG_WORDS]>,
}

/// Room for one `SCM_TIMESTAMPNS` control message (a `timespec`), in 8-byte words.
const CMSG_WORDS: usize = 8;

impl RecvBatch {
    pub(crate) fn new(packets: usize) -> Self {
        let mut buf = vec![0u8; packets * MAX_LEN];
        let mut iovs = Vec::with_capacity(packets);
        for i in 0..packets {
            iovs.push(libc::iovec {
                iov_base: buf[i * MAX_LEN..].as_mut_ptr().cast(),
                iov_len: MAX_LEN,
            });
        }
        let mut cmsgs = vec![[0u64; CMSG_WORDS]; packets];
        let mut hdrs = Vec::with_capacity(packets);
        for (iov, cmsg) in iovs.iter_mut().zip(cmsgs.iter_mut()) {
            // SAFETY: an all-zero msghdr is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of_val(cmsg) as _;
            hdrs.push(h);
        }
        Self {
            buf,
            lens: vec![0; packets],
            iovs,
            hdrs,
            cmsgs,
        }
    }

    /// Reads what is queued on `fd` without blocking; returns how many datagrams.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The heap buffers never move, so the pointers set in `new` stay valid; the kernel
        // shortens each controllen to what it wrote, so it is reset before every call.
        debug_assert_eq!(self.iovs.len(), self.hdrs.len());
        for (h, c) in self.hdrs.iter_mut().zip(&self.cmsgs) {
            h.msg_hdr.msg_controllen = std::mem::size_of_val(c) as _;
        }
        // SAFETY: every header points to an iovec of this batch, which points into self.buf,
        // and to a control buffer of this batch.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        let n = r as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(n)
    }

    /// Datagram `i` of the last `recv`.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        &self.buf[i * MAX_LEN..i * MAX_LEN + self.lens[i]]
    }

    /// Datagram `i`, to open it in place (SRTP).
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * MAX_LEN..i * MAX_LEN + self.lens[i]]
    }

    /// When the kernel queued datagram `i` of the last `recv` on the socket, ns of
    /// `CLOCK_REALTIME`; None when the socket does not timestamp.
    pub(crate) fn arrival_ns(&self, i: usize) -> Option<u64> {
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into the buffer
        // the header points at; CMSG_FIRSTHDR and CMSG_NXTHDR stay inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Buffers in the batch.
    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }
}

/// Asks the kernel to stamp every datagram `fd` receives with its receive time
/// (`SO_TIMESTAMPNS`), so that the time a datagram waited in the socket can be told apart
/// from the time it took to get there.
pub(crate) fn timestamp_arrivals(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a pointer to a live int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CLOCK_REALTIME` now, ns.
pub(crate) fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An epoll set of sockets, each with a token.
pub(crate) struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    /// Watches `fd` for reading (level-triggered).
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a valid event; fds are checked by the kernel.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for readable sockets; returns their tokens.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = u64> + '_> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: events has room for len entries; ts is a valid timespec (epoll_pwait2 takes a
        // ns timeout, Linux 5.11).
        let r = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        let n = if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            r as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

/// Sets a socket's kernel buffers as large as allowed (the kernel caps them at rmem_max and
/// wmem_max), so bursts do not overflow.
pub(crate) fn size_buffers(socket: &socket2::Socket, bytes: usize) {
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
}

/// Raises the open-file limit to at least `want` if it is lower (best effort: a process without
/// the privilege keeps its hard limit).
pub(crate) fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: raised is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: capped is a valid rlimit within the current hard limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) };
    }
}

/// Most datagrams handed to one `sendmmsg` (the kernel's UIO_MAXIOV).
const MAX_MMSG: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batches_roundtrip_on_loopback() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx: Vec<_> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &rx {
            s.set_nonblocking(true).unwrap();
            timestamp_arrivals(s.as_raw_fd()).unwrap();
        }
        let dests: Vec<SockAddr> = rx.iter().map(|s| s.local_addr().unwrap().into()).collect();
        let mut batch = SendBatch::new(8);
        for p in 0..4u8 {
            let i = batch.push(|b| {
                b[..10].fill(p);
                10 + usize::from(p)
            });
            for d in 0..3 {
                batch.send_to(i, d);
            }
        }
        let f = batch.flush(tx.as_raw_fd(), &dests);
        assert_eq!((f.datagrams, f.packets, f.error.is_none()), (12, 4, true));
        let mut poller = Poller::new().unwrap();
        for (i, s) in rx.iter().enumerate() {
            poller.add(s.as_raw_fd(), i as u64).unwrap();
        }
        let mut got = 0;
        let mut recv = RecvBatch::new(16);
        for _ in 0..100 {
            let ready: Vec<u64> = poller.wait(Duration::from_millis(10)).unwrap().collect();
            for token in ready {
                let n = recv.recv(rx[token as usize].as_raw_fd()).unwrap();
                for i in 0..n {
                    let d = recv.get(i);
                    assert_eq!(d.len(), 10 + usize::from(d[0]));
                    // Stamped by the kernel on arrival, a moment ago.
                    let at = recv.arrival_ns(i).expect("a receive timestamp");
                    let now = realtime_ns();
                    assert!(at <= now && now - at < 5_000_000_000, "{at} {now}");
                }
                got += n;
            }
            if got == 12 {
                break;
            }
        }
        assert_eq!(got, 12);
    }
}
