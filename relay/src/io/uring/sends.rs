//! Send records: the memory one io_uring send needs until its completion.
//!
//! A record holds the `msghdr`, a copy of the destination address, the iovecs (one per segment),
//! the UDP_SEGMENT control message and the ids of the buffers the iovecs point into. It is taken
//! from the free list when the send is queued and returns there when its completion is reaped,
//! so the kernel never sees a record change while it may read it.

use std::mem;
use std::ptr;

use crate::io::plan::{MAX_SEGMENTS, REPLY_SIZE};
use crate::io::send::{SEGMENT_CMSG_SPACE, SegmentCmsg};
use crate::packet::trunk::HEADER_LEN;
use crate::route::Addr;

/// One send in flight. The fields a single-datagram send touches come first, so that it touches
/// few cache lines; the iovecs of a GSO run come last.
#[repr(C)]
pub(super) struct Record {
    pub(super) hdr: libc::msghdr,
    /// The destination: the kernel reads it when the send is submitted, after the plan that
    /// pointed at the room's copy was cleared.
    name: Addr,
    pub(super) count: u16,
    /// The reply slot this send owns, if it is a reply.
    pub(super) reply: Option<u16>,
    cmsg: SegmentCmsg,
    pub(super) iov: [libc::iovec; MAX_SEGMENTS],
    /// Buffers the iovecs point into; empty for a reply.
    pub(super) bids: [u16; MAX_SEGMENTS],
    /// A trunk send's header and its two iovecs (header, datagram).
    theader: [u8; HEADER_LEN],
    tiov: [libc::iovec; 2],
}

/// A fixed pool of records and of reply buffers.
pub(super) struct Records {
    base: *mut Record,
    len: usize,
    free: Vec<u32>,
    replies: *mut [u8; REPLY_SIZE],
    reply_count: usize,
    free_replies: Vec<u16>,
}

// SAFETY: the raw pointers refer to allocations owned by this value, used by one thread.
unsafe impl Send for Records {}

impl Records {
    pub(super) fn new(len: usize, replies: usize) -> Self {
        let records: Box<[Record]> = (0..len)
            // SAFETY: every field of Record is a plain C struct, integer array or Option of an
            // integer, for which all-zero bytes are a valid value.
            .map(|_| unsafe { mem::zeroed() })
            .collect();
        let reply_bufs: Box<[[u8; REPLY_SIZE]]> = vec![[0u8; REPLY_SIZE]; replies].into();
        Self {
            base: Box::into_raw(records).cast(),
            len,
            free: (0..len as u32).rev().collect(),
            replies: Box::into_raw(reply_bufs).cast(),
            reply_count: replies,
            free_replies: (0..replies as u16).rev().collect(),
        }
    }

    /// Whether every record is free (nothing in flight).
    pub(super) fn idle(&self) -> bool {
        self.free.len() == self.len
    }

    /// Whether a record is free.
    pub(super) fn any_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Fills a free record with a send of `iovs` to `dest`, as GSO segments of `segment` bytes
    /// when there are several. Returns its index and the `msghdr` to submit.
    pub(super) fn fill(
        &mut self,
        dest: &Addr,
        iovs: impl ExactSizeIterator<Item = (libc::iovec, u16)>,
        segment: u16,
    ) -> Option<(u32, *const libc::msghdr)> {
        let idx = self.free.pop()?;
        // SAFETY: idx < len; a free record is not in flight, so nothing else reads it.
        let r = unsafe { &mut *self.base.add(idx as usize) };
        let count = iovs.len().min(MAX_SEGMENTS);
        for (k, (iov, bid)) in iovs.take(count).enumerate() {
            r.iov[k] = iov;
            r.bids[k] = bid;
        }
        r.count = count as u16;
        r.reply = None;
        r.set_header(dest, count, (count > 1).then_some(segment));
        Some((idx, &raw const r.hdr))
    }

    /// Fills a free record with a trunk send: `header` (copied into the record) then the
    /// datagram at `iov` in buffer `bid`, to the peer relay at `dest`.
    pub(super) fn fill_trunk(
        &mut self,
        dest: &Addr,
        header: &[u8; HEADER_LEN],
        iov: libc::iovec,
        bid: u16,
    ) -> Option<(u32, *const libc::msghdr)> {
        let idx = self.free.pop()?;
        // SAFETY: as in `fill`.
        let r = unsafe { &mut *self.base.add(idx as usize) };
        r.theader = *header;
        r.tiov = [
            libc::iovec {
                iov_base: r.theader.as_mut_ptr().cast(),
                iov_len: HEADER_LEN,
            },
            iov,
        ];
        r.iov[0] = iov;
        r.bids[0] = bid;
        r.count = 1;
        r.reply = None;
        r.set_header(dest, 1, None);
        r.hdr.msg_iov = r.tiov.as_mut_ptr();
        r.hdr.msg_iovlen = 2;
        Some((idx, &raw const r.hdr))
    }

    /// Fills a free record with a copy of `bytes` for `dest`. None when no record or reply
    /// buffer is free.
    pub(super) fn fill_reply(
        &mut self,
        dest: &Addr,
        bytes: &[u8],
    ) -> Option<(u32, *const libc::msghdr)> {
        if self.free.is_empty() || bytes.len() > REPLY_SIZE {
            return None;
        }
        let slot = self.free_replies.pop()?;
        let idx = self.free.pop()?;
        // SAFETY: slot < reply_count; a free reply buffer is not in flight.
        let buf = unsafe { &mut *self.replies.add(usize::from(slot)) };
        buf[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: as in `fill`.
        let r = unsafe { &mut *self.base.add(idx as usize) };
        r.iov[0] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: bytes.len(),
        };
        r.count = 0;
        r.reply = Some(slot);
        r.set_header(dest, 1, None);
        Some((idx, &raw const r.hdr))
    }

    /// The record of a completed send. The caller reads it, then calls [`Records::free`].
    pub(super) fn get(&self, idx: u32) -> Option<&Record> {
        if idx as usize >= self.len {
            return None;
        }
        // SAFETY: idx < len; the send completed, so the kernel no longer reads the record.
        Some(unsafe { &*self.base.add(idx as usize) })
    }

    /// Returns a record (and its reply buffer) to the free lists.
    pub(super) fn free(&mut self, idx: u32) {
        if let Some(r) = self.get(idx) {
            if let Some(slot) = r.reply {
                self.free_replies.push(slot);
            }
            self.free.push(idx);
        }
    }

    /// Leaks the memory: for when the kernel may still read it (a ring that did not drain).
    pub(super) fn leak(&mut self) {
        self.len = 0;
        self.reply_count = 0;
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        if self.len == 0 && self.reply_count == 0 {
            return;
        }
        // SAFETY: both were made by Box::into_raw of boxed slices of these lengths in `new`, and
        // the owner drops this value only once nothing is in flight.
        unsafe {
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.base, self.len,
            )));
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.replies,
                self.reply_count,
            )));
        }
    }
}

impl Record {
    /// Points the header at this record's own address copy, iovecs and control message.
    fn set_header(&mut self, dest: &Addr, iovs: usize, segment: Option<u16>) {
        self.name = *dest;
        // SAFETY: a zeroed msghdr is valid; the fields set below are the only ones read.
        self.hdr = unsafe { mem::zeroed() };
        self.hdr.msg_name = self.name.as_ptr().cast_mut().cast();
        self.hdr.msg_namelen = self.name.len();
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = iovs as _;
        if let Some(size) = segment {
            self.cmsg = SegmentCmsg::new(size);
            self.hdr.msg_control = (&raw mut self.cmsg).cast();
            self.hdr.msg_controllen = SEGMENT_CMSG_SPACE as _;
        }
    }

    /// The destination, for the one-by-one fallback.
    pub(super) fn dest(&self) -> &Addr {
        &self.name
    }

    /// The datagrams this send puts on the wire.
    pub(super) fn segments(&self) -> u64 {
        u64::from(self.count.max(1))
    }
}
