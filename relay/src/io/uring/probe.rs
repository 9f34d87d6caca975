//! Whether this kernel and process can run the io_uring backend.
//!
//! io_uring can be missing (old kernel), switched off (`kernel.io_uring_disabled`), or filtered
//! (seccomp in containers). Rather than read version numbers, the probe does what a worker does,
//! on a throw-away ring and a socket pair: it creates a ring with the worker's flags, checks the
//! opcodes with `register_probe`, registers a provided buffer ring, and runs a multishot
//! `recvmsg` until it sees a datagram and the end of the multishot for lack of buffers.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{Probe, cqueue, opcode, types};

use super::bufs::{BufRing, GROUP};

/// Ok when the io_uring backend can run; otherwise the reason it cannot.
pub(crate) fn probe() -> Result<(), String> {
    let mut ring = super::new_ring(8, 16).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => format!("creating a ring is not permitted ({e}): see the kernel.io_uring_disabled sysctl and seccomp"),
        Some(libc::ENOSYS) => format!("the kernel has no io_uring ({e})"),
        Some(libc::ENOMEM) => format!("creating a ring failed ({e}){}", super::memlock_hint(&e)),
        _ => format!("creating a ring failed ({e}): the kernel may lack SINGLE_ISSUER or DEFER_TASKRUN (Linux 6.1)"),
    })?;
    if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
        return Err("the kernel lacks the EXT_ARG or NODROP io_uring features".into());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("register_probe failed: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "recvmsg"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!(
                "the kernel does not support the io_uring {name} operation"
            ));
        }
    }
    // One buffer: the first datagram fills it, the second ends the multishot with ENOBUFS, so
    // nothing is left in flight when the buffers are freed.
    let bufs = BufRing::new(1, 256).map_err(|e| e.to_string())?;
    bufs.register(&ring.submitter())
        .map_err(|e| format!("registering a provided buffer ring failed: {e}"))?;
    let (a, b) = UnixDatagram::pair().map_err(|e| e.to_string())?;
    for _ in 0..2 {
        b.send(b"probe").map_err(|e| e.to_string())?;
    }
    // SAFETY: a zeroed msghdr is valid; the kernel reads only its name and control lengths.
    let msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    let recv = opcode::RecvMsgMulti::new(types::Fd(a.as_raw_fd()), &*msghdr, GROUP)
        .build()
        .user_data(1);
    // SAFETY: msghdr and the buffers outlive the operation: the loop below waits for its end.
    unsafe { ring.submission().push(&recv) }.map_err(|_| "submission queue full".to_string())?;
    let ts = Timespec::new().sec(1);
    let args = SubmitArgs::new().timespec(&ts);
    let mut got_datagram = false;
    let mut outcome = None;
    for _ in 0..4 {
        if let Err(e) = ring.submitter().submit_with_args(1, &args)
            && e.raw_os_error() != Some(libc::ETIME)
        {
            outcome = Some(Err(format!("io_uring_enter failed: {e}")));
            break;
        }
        for cqe in ring.completion() {
            let res = cqe.result();
            if res > 0 && cqueue::buffer_select(cqe.flags()).is_some() {
                got_datagram = true;
            }
            if !cqueue::more(cqe.flags()) {
                outcome = Some(match (res, got_datagram) {
                    (r, true) if r >= 0 || r == -libc::ENOBUFS => Ok(()),
                    (r, _) if r < 0 && r != -libc::ENOBUFS => Err(format!(
                        "multishot recvmsg failed: {} (it needs Linux 6.0)",
                        std::io::Error::from_raw_os_error(-r)
                    )),
                    _ => Err("multishot recvmsg delivered nothing".into()),
                });
                break;
            }
        }
        if outcome.is_some() {
            break;
        }
    }
    match outcome {
        Some(Ok(())) => {
            // Nothing is in flight any more: the ring goes first, then the memory.
            drop(ring);
            drop(bufs);
            drop(msghdr);
            Ok(())
        }
        other => {
            // The operation may still be in flight: keep its memory for good rather than free it.
            drop(ring);
            std::mem::forget(bufs);
            Box::leak(msghdr);
            other.unwrap_or_else(|| Err("multishot recvmsg did not complete in time".into()))
        }
    }
}
