//! Send helpers shared by both backends: the UDP_SEGMENT control message, `sendmmsg` in a loop,
//! and the one-datagram-at-a-time fallback used when the kernel refuses GSO.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::ptr;

use super::plan::MAX_SEGMENTS;
use super::socket;
use crate::route::Addr;

/// A control message that asks for UDP segmentation offload with the given segment size
/// (`UDP_SEGMENT`, Linux 4.18): the kernel cuts the send into datagrams of that size, the last
/// one possibly shorter.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    pad: [u8; 6],
}

/// The length of a [`SegmentCmsg`] as `msg_controllen`.
// SAFETY: CMSG_SPACE only does arithmetic on its argument.
pub(crate) const SEGMENT_CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
// SAFETY: as above.
const SEGMENT_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
const _: () = assert!(SEGMENT_CMSG_SPACE <= size_of::<SegmentCmsg>());

impl SegmentCmsg {
    pub(crate) fn new(size: u16) -> Self {
        // SAFETY: cmsghdr is a plain C struct; all-zero bytes are a valid value.
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_len = SEGMENT_CMSG_LEN as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        Self {
            hdr,
            size,
            pad: [0; 6],
        }
    }
}

/// Whether the kernel knows UDP_SEGMENT on this socket.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    socket::getsockopt(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
}

/// Whether a failed GSO send means that this socket cannot do GSO (no checksum offload on the
/// device, or a kernel that refuses the segment size): then GSO is turned off for the socket and
/// the segments are sent one by one.
pub(crate) fn refuses_gso(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL))
}

/// What a group of sends did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sent {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
}

/// Calls `sendmmsg` until every header went or one failed. Returns how many went and, if one
/// failed, its error (the failed header is `hdrs[returned count]`).
///
/// # Safety
/// Every header must point at live names, iovecs, buffers and control messages.
pub(crate) unsafe fn sendmmsg(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < hdrs.len() {
        let rest = &mut hdrs[done..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        // SAFETY: the caller guarantees that each header points at live memory.
        // Never block: a full send buffer (on loopback, receivers that do not read) must cost a
        // counted drop, not a stalled worker and every other stream with it.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), len, libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (done, Some(err));
        }
        done += n as usize;
    }
    (done, None)
}

/// Sends each iovec as its own datagram to `dest`: the fallback for a GSO send the kernel
/// refused. A datagram the kernel refuses is counted and skipped.
///
/// # Safety
/// Each iovec must point at live, initialised bytes.
pub(crate) unsafe fn send_each(fd: RawFd, dest: &Addr, iovs: &[libc::iovec]) -> Sent {
    // SAFETY: mmsghdr is a plain C struct; all-zero bytes are a valid value.
    let mut hdrs: [libc::mmsghdr; MAX_SEGMENTS] = unsafe { mem::zeroed() };
    let mut sent = Sent::default();
    for chunk in iovs.chunks(MAX_SEGMENTS) {
        for (h, iov) in hdrs.iter_mut().zip(chunk) {
            h.msg_hdr.msg_name = dest.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = dest.len();
            h.msg_hdr.msg_iov = ptr::from_ref(iov).cast_mut();
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut start = 0;
        while start < chunk.len() {
            // SAFETY: the headers point at `dest` and the caller's iovecs, live for this call.
            let (n, err) = unsafe { sendmmsg(fd, &mut hdrs[start..chunk.len()]) };
            for h in &hdrs[start..start + n] {
                sent.packets += 1;
                sent.bytes += u64::from(h.msg_len);
            }
            start += n;
            if err.is_some() {
                sent.errors += 1;
                start += 1;
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    /// The kernel takes an [`Addr`] as a `msg_name` for both families: each datagram reaches
    /// the receiver it names, from the sender's address.
    #[test]
    fn the_kernel_delivers_to_an_addr_of_either_family() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let (Ok(tx), Ok(rx)) = (UdpSocket::bind(local), UdpSocket::bind(local)) else {
                eprintln!("skipped {local}: no such loopback here");
                continue;
            };
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let dest = Addr::from(rx.local_addr().unwrap());
            let bytes = [*b"first", *b"other"];
            let iovs: Vec<libc::iovec> = bytes
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: the iovecs point at `bytes`, live and initialised for the call.
            let sent = unsafe { send_each(tx.as_raw_fd(), &dest, &iovs) };
            assert_eq!(
                (sent.packets, sent.bytes, sent.errors),
                (2, 10, 0),
                "{local}"
            );
            for want in &bytes {
                let mut buf = [0u8; 16];
                let (n, from): (usize, SocketAddr) = rx.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], want, "{local}");
                assert_eq!(from, tx.local_addr().unwrap(), "{local}");
            }
        }
    }
}
