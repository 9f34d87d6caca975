//! The provided buffer ring that the multishot receive fills, and a reference count per buffer.
//!
//! The kernel picks a free buffer from the ring for each datagram and names it in the completion.
//! From then on the buffer is ours: one reference while the batch is planned, one per send that
//! points at it. When the last reference goes, the buffer goes back on the ring; the new tail is
//! published once per batch, so the kernel never writes into a buffer that a send still reads.

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The buffer group id of a worker's ring (one ring per io_uring instance).
pub(super) const GROUP: u16 = 0;

pub(super) struct BufRing {
    /// `entries` ring slots, page-aligned, shared with the kernel.
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// `entries` buffers of `size` bytes.
    mem: *mut u8,
    mem_layout: Layout,
    size: usize,
    entries: u16,
    /// Our tail: where the next recycled buffer goes. Published with [`BufRing::publish`].
    tail: u16,
    refs: Box<[u32]>,
    /// Buffers the kernel has handed out and that are not back on the ring.
    out: usize,
}

// SAFETY: the raw pointers refer to allocations owned by this value, used by one thread.
unsafe impl Send for BufRing {}

impl BufRing {
    /// `entries` (a power of two, at most 32768) buffers of `size` bytes, all on the ring.
    pub(super) fn new(entries: usize, size: usize) -> io::Result<Self> {
        assert!(entries.is_power_of_two() && entries <= 32768);
        let ring_layout = Layout::from_size_align(entries * size_of::<BufRingEntry>(), 4096)
            .map_err(io::Error::other)?;
        let mem_layout = Layout::from_size_align(entries * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (ring, mem) = unsafe { (alloc::alloc_zeroed(ring_layout), alloc::alloc(mem_layout)) };
        if ring.is_null() || mem.is_null() {
            alloc::handle_alloc_error(ring_layout);
        }
        let mut this = Self {
            ring: ring.cast(),
            ring_layout,
            mem,
            mem_layout,
            size,
            entries: entries as u16,
            tail: 0,
            refs: vec![0; entries].into_boxed_slice(),
            out: 0,
        };
        for bid in 0..entries {
            this.put(bid as u16);
        }
        this.publish();
        Ok(this)
    }

    /// Registers the ring with `ring`'s kernel side under [`GROUP`].
    pub(super) fn register(&self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory stays allocated and in place until this value is dropped,
        // which happens only after the io_uring instance is gone or the group unregistered.
        unsafe { submitter.register_buf_ring_with_flags(self.ring as u64, self.entries, GROUP, 0) }
    }

    /// The number of buffers.
    pub(super) fn len(&self) -> usize {
        usize::from(self.entries)
    }

    /// Whether any buffer is on the ring for the kernel to fill.
    pub(super) fn any_free(&self) -> bool {
        self.out < self.len()
    }

    /// Takes ownership of buffer `bid`, which a receive completion named: one reference, held
    /// while the batch is planned. Returns its first `len` bytes.
    ///
    /// The slice stays valid until the last reference is released; the caller must not use it
    /// after that.
    pub(super) fn take<'a>(&mut self, bid: u16, len: usize) -> &'a [u8] {
        let i = usize::from(bid);
        debug_assert_eq!(self.refs[i], 0, "the kernel handed out a buffer we hold");
        self.refs[i] = 1;
        self.out += 1;
        // SAFETY: bid < entries, so the buffer lies inside `mem`; the kernel wrote it before
        // posting the completion and will not write it again until we put it back on the ring,
        // which happens only when its references are gone.
        unsafe { std::slice::from_raw_parts(self.mem.add(i * self.size), len.min(self.size)) }
    }

    /// Adds a reference to buffer `bid` (a send that points into it).
    pub(super) fn hold(&mut self, bid: u16) {
        self.refs[usize::from(bid)] += 1;
    }

    /// Drops a reference to buffer `bid`; the last one puts it back on the ring.
    pub(super) fn release(&mut self, bid: u16) {
        let r = &mut self.refs[usize::from(bid)];
        debug_assert!(*r > 0);
        *r -= 1;
        if *r == 0 {
            self.put(bid);
            self.out -= 1;
        }
    }

    /// Makes the buffers put back since the last call visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail field lives inside the first ring entry, which we allocated; the
        // kernel only reads it. Release ordering publishes the entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Writes buffer `bid` into the next ring slot (not yet published).
    fn put(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        // SAFETY: slot < entries, inside the ring allocation; the kernel does not read slots at
        // or past the published tail, and this one is at our unpublished tail.
        let entry = unsafe { &mut *self.ring.add(slot) };
        // SAFETY: bid < entries, inside `mem`.
        entry.set_addr(unsafe { self.mem.add(usize::from(bid) * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both were allocated in `new` with these layouts; the owner drops this value
        // only when the kernel no longer uses the ring (see `Uring::drop`).
        unsafe {
            alloc::dealloc(self.ring.cast(), self.ring_layout);
            alloc::dealloc(self.mem, self.mem_layout);
        }
    }
}
