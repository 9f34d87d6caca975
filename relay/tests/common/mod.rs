//! Shared helpers for the in-process data-plane tests: start a `DataPlane` on loopback with a
//! chosen backend, install rooms through `publish`, and play clients on loopback sockets.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::config::BackendChoice;
use relay::io::{DataPlane, DataPlaneConfig, WorkerStats};
use relay::packet::rtp::Ssrc;
use relay::route::RuleCounters;
use relay::route::{MediaKind, Participant, ParticipantCounters, RoomId, Update, compile_all};
use relay::rules::RuleSet;

/// Both backends, for tests that run on each.
pub const BACKENDS: [BackendChoice; 2] = [BackendChoice::Mmsg, BackendChoice::IoUring];

/// A data plane on 127.0.0.1 with one unpinned worker.
pub fn start(backend: BackendChoice, tweak: impl FnOnce(&mut DataPlaneConfig)) -> DataPlane {
    let mut config = DataPlaneConfig {
        media: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        backend,
        pin: false,
        ..Default::default()
    };
    tweak(&mut config);
    DataPlane::start(&config).expect("data plane starts")
}

/// Installs room `id` whose member i sends SSRC `base + i` from `addrs[i]` and gets everybody
/// else's media: compiled from scratch with `route::compile_all`, installed whole.
pub fn install(plane: &DataPlane, id: u32, base: u32, addrs: &[SocketAddr]) {
    install_with(plane, id, base, addrs, |_| None);
}

/// As [`install`], but member i subscribes only to the members `only(i)` lists, where it lists
/// any (a selective subscription).
pub fn install_with(
    plane: &DataPlane,
    id: u32,
    base: u32,
    addrs: &[SocketAddr],
    only: impl Fn(usize) -> Option<Vec<usize>>,
) {
    install_ruled(plane, id, base, addrs, only, &RuleSet::new());
}

/// Like `install_with`, with `rules` compiled into the room (members are named `m0`, `m1`, ...
/// in room `room-{id}`; each rule gets fresh counters).
pub fn install_ruled(
    plane: &DataPlane,
    id: u32,
    base: u32,
    addrs: &[SocketAddr],
    only: impl Fn(usize) -> Option<Vec<usize>>,
    rules: &RuleSet,
) {
    let names: Vec<String> = (0..addrs.len()).map(|i| format!("m{i}")).collect();
    let lists: Vec<Option<Vec<String>>> = (0..addrs.len())
        .map(|i| only(i).map(|l| l.into_iter().map(|m| format!("m{m}")).collect()))
        .collect();
    let participants: Vec<Participant<'_>> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| Participant {
            id: &names[i],
            slot: i as u16,
            region: None,
            addr: Some(addr),
            tracks: vec![(Ssrc(base + i as u32), MediaKind::Video)],
            subscribe: lists[i].as_deref(),
            counters: Arc::new(ParticipantCounters::new(plane.workers())),
            ice: None,
            webrtc: None,
            number: 0,
            peer: None,
        })
        .collect();
    let compiled = compile_all(&format!("room-{id}"), &participants, rules, |_| {
        Some(Arc::new(RuleCounters::new(plane.workers())))
    })
    .expect("room compiles");
    plane
        .publish(vec![Update::Room {
            id: RoomId(id),
            room: compiled.room,
            slots: compiled.slots,
        }])
        .expect("publish");
}

/// `n` client sockets on 127.0.0.1 with large receive buffers.
pub fn clients(n: usize) -> Vec<UdpSocket> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let size: libc::c_int = 4 << 20;
            // Beyond rmem_max where the process may; the plain request otherwise.
            for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
                // SAFETY: setsockopt reads a c_int from a live pointer.
                let r = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&raw const size).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r == 0 {
                    break;
                }
            }
            s
        })
        .collect()
}

/// An RTP packet of exactly `len` bytes (at least 12): version 2, the SSRC and sequence number,
/// and a payload that varies with both so that any mix-up shows.
pub fn rtp(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..len.saturating_sub(12)).map(|i| (i as u32 ^ ssrc ^ u32::from(seq)) as u8));
    p
}

/// Sends `packets` to `to` in one UDP_SEGMENT send, so that they reach the relay's socket
/// together. All must have the size of the first, except the last, which may be shorter.
pub fn send_burst(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    let segment = packets[0].len() as u16;
    let bytes: Vec<u8> = packets.concat();
    let dest = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    #[repr(C)]
    struct Cmsg {
        hdr: libc::cmsghdr,
        size: u16,
        pad: [u8; 6],
    }
    // SAFETY: plain C structs, all-zero is valid.
    let mut cmsg: Cmsg = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_LEN only does arithmetic.
    cmsg.hdr.cmsg_len = unsafe { libc::CMSG_LEN(2) } as _;
    cmsg.hdr.cmsg_level = libc::SOL_UDP;
    cmsg.hdr.cmsg_type = libc::UDP_SEGMENT;
    cmsg.size = segment;
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = dest.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = dest.len();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if packets.len() > 1 {
        msg.msg_control = (&raw mut cmsg).cast();
        // SAFETY: CMSG_SPACE only does arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
    }
    // SAFETY: msg points at live name, iovec, bytes and control message.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    assert_eq!(
        n as usize,
        bytes.len(),
        "{}",
        std::io::Error::last_os_error()
    );
}

/// Receives until `n` datagrams arrived or `timeout` passed.
pub fn recv_n(sock: &UdpSocket, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => out.push(buf[..len].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Drops whatever is queued on a socket without waiting.
pub fn discard(sock: &UdpSocket) -> usize {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    sock.set_nonblocking(false).unwrap();
    n
}

/// A counter summed over every worker.
pub fn sum(plane: &DataPlane, f: impl Fn(&WorkerStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    plane.stats().map(|s| WorkerStats::get(f(s))).sum()
}

/// Waits until `cond` holds, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}
