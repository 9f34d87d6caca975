//! The portable backend: `recvmmsg` into fixed slots, `sendmmsg` of queued sends.
//!
//! A fan-out of one datagram to N destinations queues N `mmsghdr`s that all point at the same
//! iovec, which points into the receive slot: one buffer, N sends, no copy. The queue is flushed
//! before the next receive overwrites the slots.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

/// A batch of received datagrams in fixed-size slots.
pub(crate) struct RecvBatch {
    slot_size: usize,
    slots: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// One iovec per received datagram, sized to its length, for the sends that forward it.
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

    /// The number of datagrams in the batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Datagram `i`: its source, its bytes, and whether it was larger than a slot.
    pub(crate) fn datagram(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let hdr = &self.hdrs[i];
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = (hdr.msg_len as usize).min(self.slot_size);
        let bytes = &self.slots[i * self.slot_size..i * self.slot_size + len];
        let src = sockaddr_to_std(&self.names[i], hdr.msg_hdr.msg_namelen);
        (src, bytes, truncated)
    }

    /// The source address of datagram `i` as the kernel wrote it, for sending a reply.
    pub(crate) fn source(&self, i: usize) -> (*const libc::sockaddr_storage, libc::socklen_t) {
        (&self.names[i], self.hdrs[i].msg_hdr.msg_namelen)
    }

    /// The iovec that sends datagram `i` as received.
    pub(crate) fn send_iov(&self, i: usize) -> *const libc::iovec {
        &self.send_iovs[i]
    }
}

/// Sends waiting for the next `sendmmsg`.
pub(crate) struct SendQueue {
    hdrs: Vec<libc::mmsghdr>,
    bytes: u64,
}

// SAFETY: the queued pointers refer to the receive batch and compiled rooms, which the owning
// worker keeps alive until `flush`; the queue is used by one thread at a time.
unsafe impl Send for SendQueue {}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flushed {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
}

impl SendQueue {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            hdrs: Vec::with_capacity(capacity.max(1)),
            bytes: 0,
        }
    }

    /// Whether the queue must be flushed before another push.
    pub(crate) fn is_full(&self) -> bool {
        self.hdrs.len() == self.hdrs.capacity()
    }

    /// Queues one send of the bytes that `iov` describes to `dest`.
    ///
    /// The caller keeps `iov`, the memory it points to, and `dest` alive and unchanged until the
    /// next `flush`, and never pushes to a full queue (which would allocate).
    pub(crate) fn push(&mut self, iov: *const libc::iovec, dest: &SockAddr) {
        self.push_raw(iov, dest.as_ptr().cast(), dest.len());
    }

    /// As [`SendQueue::push`], with the address as a raw pointer and length.
    pub(crate) fn push_raw(
        &mut self,
        iov: *const libc::iovec,
        name: *const libc::sockaddr_storage,
        namelen: libc::socklen_t,
    ) {
        debug_assert!(!self.is_full());
        // SAFETY: a zeroed mmsghdr is valid; the fields set below are the only ones read.
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        hdr.msg_hdr.msg_name = name.cast_mut().cast();
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iov = iov.cast_mut();
        hdr.msg_hdr.msg_iovlen = 1;
        // SAFETY: the caller guarantees that iov is valid until the flush.
        self.bytes += unsafe { (*iov).iov_len } as u64;
        self.hdrs.push(hdr);
    }

    /// Sends everything queued, in as few `sendmmsg` calls as the kernel allows. A datagram the
    /// kernel refuses is counted and skipped; the rest still go out.
    pub(crate) fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut done = Flushed::default();
        let mut start = 0;
        while start < self.hdrs.len() {
            let rest = &mut self.hdrs[start..];
            // SAFETY: each header points at a live iovec and address (see `push`).
            let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first datagram failed: skip it and go on with the others.
                done.errors += 1;
                start += 1;
                continue;
            }
            for h in &rest[..n as usize] {
                done.packets += 1;
                done.bytes += u64::from(h.msg_len);
            }
            start += n as usize;
        }
        self.hdrs.clear();
        self.bytes = 0;
        done
    }
}

/// Converts a kernel socket address, mapping IPv4-mapped IPv6 addresses to plain IPv4 so that a
/// dual-stack socket sees the addresses participants were registered with.
pub(crate) fn sockaddr_to_std(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    // SAFETY: storage is a fully initialised sockaddr_storage, and len is what the kernel wrote.
    let addr = unsafe { SockAddr::new(*storage, len) };
    let std = addr.as_socket()?;
    Some(match std {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => std,
        },
        v4 => v4,
    })
}
