//! Socket set-up shared by both backends: SO_REUSEPORT binding, buffer sizes, the wake-up eventfd
//! and core pinning. Nothing here runs per packet.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::route::Addr;

/// Binds `n` sockets to `addr` in one SO_REUSEPORT group, and returns them with the bound
/// address.
///
/// With port 0 the kernel may hand out a port that another socket of the same user already
/// holds with SO_REUSEPORT (it may share it), and then the two would split each other's traffic.
/// So after binding, the group checks that nobody else is on its port, and picks again if so.
pub(crate) fn bind_group(
    addr: SocketAddr,
    n: usize,
    buffer: usize,
) -> io::Result<(Vec<Socket>, SocketAddr)> {
    for _ in 0..PORT_ATTEMPTS {
        let first = bind(addr, buffer)?;
        let local = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("media socket has no IP address"))?;
        let mut sockets = vec![first];
        for _ in 1..n {
            sockets.push(bind(local, buffer)?);
        }
        if addr.port() != 0 || sockets_on_port(local.port()).is_none_or(|count| count <= n) {
            return Ok((sockets, local));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every port the kernel offered was shared with another socket",
    ))
}

/// Times `bind_group` asks the kernel for another port.
const PORT_ATTEMPTS: usize = 16;

/// UDP sockets on this host bound to `port`, from /proc (None when it cannot be read).
fn sockets_on_port(port: u16) -> Option<usize> {
    let needle = format!(":{port:04X}");
    let mut count = 0;
    let mut read_any = false;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        count += text
            .lines()
            .skip(1)
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&needle))
            })
            .count();
    }
    read_any.then_some(count)
}

/// Binds one worker socket with SO_REUSEPORT.
fn bind(addr: SocketAddr, buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Dual stack: IPv4 peers arrive as IPv4-mapped addresses, which the backend maps back.
        socket.set_only_v6(false)?;
    }
    if buffer > 0 {
        set_buffer(&socket, buffer);
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Sets DF on the socket's IPv4 datagrams and keeps the kernel from fragmenting them
/// (`IP_PMTUDISC_PROBE`: the outgoing device's MTU is the limit, a learned path MTU is not).
///
/// Why: a datagram the kernel might fragment needs a hashed IP ID (`__ip_select_ident`, a
/// SipHash and an atomic on a table shared by every core: 1.4% of the relay's core at 160k
/// packets/s, docs/BENCHMARKS.md); one with DF gets ID 0. Media stacks keep RTP below the path MTU
/// and set DF themselves; a forwarded datagram too large for the device is a counted send error
/// rather than fragments.
pub(crate) fn dont_fragment(socket: &Socket) -> io::Result<()> {
    setsockopt(
        socket.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// Sets the socket buffers, beyond `rmem_max` where the process may (CAP_NET_ADMIN).
fn set_buffer(socket: &Socket, bytes: usize) {
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, force, value).is_err() {
            let _ = setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, plain, value);
        }
    }
}

/// `setsockopt` with an `int` value.
pub(crate) fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a pointer to a live c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt` of an `int` value.
pub(crate) fn getsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live c_int and updates `len`.
    let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking eventfd for waking a worker.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory arguments; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, which wakes whoever waits on it.
pub(crate) fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a u64 to an eventfd.
    unsafe { libc::write(fd, (&raw const one).cast(), 8) };
}

/// Spreads a trunk port's datagrams over the `workers` sockets of its SO_REUSEPORT group by
/// sender: the socket at index (room number XOR sender participant number) mod `workers`.
///
/// Without it the kernel picks the socket by the 4-tuple's hash, and every datagram from one
/// peer relay comes from its one trunk address, so all of a peer's traffic would land on one
/// worker however many publishers it carries. Steering by the header keeps each publisher's
/// packets on one worker (their order) and spreads publishers over all of them. The program is
/// classic BPF (`SO_ATTACH_REUSEPORT_CBPF`), which the kernel runs on the UDP payload: a datagram
/// too short for the two loads makes it return 0 (the first socket, which counts it as
/// malformed); the group's sockets are indexed in the order they were bound.
pub(crate) fn steer_trunk_by_sender(group: &Socket, workers: usize) -> io::Result<()> {
    use crate::packet::trunk::{ROOM_OFFSET, SENDER_OFFSET};
    if workers < 2 {
        return Ok(());
    }
    let op = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
    const XOR_X: u16 = (libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X) as u16;
    const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    let mut program = [
        op(LD_W_ABS, ROOM_OFFSET as u32),
        op(TAX, 0),
        op(LD_W_ABS, SENDER_OFFSET as u32),
        op(XOR_X, 0),
        op(MOD_K, workers as u32),
        op(RET_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads one sock_fprog from a live reference, and the kernel copies the
    // `len` instructions it points at (alive until the call returns).
    let r = unsafe {
        libc::setsockopt(
            group.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resets an eventfd's counter (non-blocking: nothing happens when it is zero).
pub(crate) fn drain(fd: RawFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reading at most 8 bytes into an 8-byte buffer.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
}

/// Pins the calling thread to one core.
pub(crate) fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is a plain bit array; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin worker to its core");
        }
    }
}

/// Reads a kernel socket address (`sockaddr_in` or `sockaddr_in6` bytes as `recvmsg` wrote them),
/// mapping IPv4-mapped IPv6 addresses to plain IPv4 so that a dual-stack socket sees the addresses
/// participants were registered with. `None` for anything else or too short.
pub(crate) fn name_to_addr(name: &[u8]) -> Option<SocketAddr> {
    Some(match Addr::read(name)? {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => SocketAddrV6::new(*a.ip(), a.port(), 0, a.scope_id()).into(),
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `send` until a raw socket sees it (tests running beside this one may flood the raw
    /// socket's buffer), and returns the IPv4 header fields (ID, DF) of the datagram it saw.
    fn ipv4_header_of(raw: &Socket, port: u16, mut send: impl FnMut()) -> (u16, bool) {
        use std::time::{Duration, Instant};
        let mut buf = [std::mem::MaybeUninit::new(0u8); 2048];
        for _ in 0..20 {
            send();
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                let Ok(n) = raw.recv(&mut buf) else {
                    break;
                };
                // SAFETY: recv initialised the first n bytes.
                let d: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let ihl = usize::from(d[0] & 0x0f) * 4;
                if d.len() >= ihl + 4 && u16::from_be_bytes([d[ihl + 2], d[ihl + 3]]) == port {
                    return (u16::from_be_bytes([d[4], d[5]]), d[6] & 0x40 != 0);
                }
            }
        }
        panic!("no datagram to port {port} reached the raw socket");
    }

    #[test]
    fn media_datagrams_go_out_with_df_and_no_hashed_ip_id() {
        use std::time::Duration;
        // Needs CAP_NET_RAW to read the headers the kernel wrote (CI runs as root).
        let raw = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: no CAP_NET_RAW");
                return;
            }
            Err(e) => panic!("raw socket: {e}"),
        };
        raw.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let (group, _) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 0).unwrap();
        dont_fragment(&group[0]).unwrap();
        assert_eq!(
            getsockopt(
                group[0].as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER
            )
            .unwrap(),
            libc::IP_PMTUDISC_PROBE
        );
        let to_sock = to.into();
        for _ in 0..3 {
            let header = ipv4_header_of(&raw, to.port(), || {
                group[0].send_to(&[0x80; 200], &to_sock).unwrap();
            });
            assert_eq!(header, (0, true));
        }
        // The kernel's default for an unconnected socket: a hashed ID on every datagram.
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ids: Vec<u16> = (0..3)
            .map(|_| {
                ipv4_header_of(&raw, to.port(), || {
                    plain.send_to(&[0x80; 200], to).unwrap();
                })
                .0
            })
            .collect();
        assert!(ids.iter().any(|&id| id != 0), "{ids:?}");
    }

    #[test]
    fn trunk_datagrams_are_spread_over_the_group_by_room_and_sender() {
        use crate::packet::trunk::{ROOM_OFFSET, SENDER_OFFSET};
        use std::time::Duration;
        let workers = 3;
        let (group, addr) = bind_group("127.0.0.1:0".parse().unwrap(), workers, 0).unwrap();
        steer_trunk_by_sender(&group[0], workers).unwrap();
        for s in &group {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        // One peer (one source address) carrying 30 publishers in two rooms, 10 packets each.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut want = vec![Vec::new(); workers];
        for seq in 0u32..10 {
            for (room, sender) in (0u32..30).map(|i| (7 + i % 2, 1000 + i)) {
                let mut d = [0u8; 28];
                d[0] = crate::packet::trunk::VERSION;
                d[ROOM_OFFSET..ROOM_OFFSET + 4].copy_from_slice(&room.to_be_bytes());
                d[SENDER_OFFSET..SENDER_OFFSET + 4].copy_from_slice(&sender.to_be_bytes());
                d[16..20].copy_from_slice(&seq.to_be_bytes());
                peer.send_to(&d, addr).unwrap();
                want[((room ^ sender) % workers as u32) as usize].push((sender, seq));
            }
        }
        // Too short for the program's loads: the first socket.
        peer.send_to(&[4, 0, 0], addr).unwrap();
        want[0].push((u32::MAX, u32::MAX));
        for (i, s) in group.iter().enumerate() {
            let mut got = Vec::new();
            let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
            while let Ok(n) = s.recv(&mut buf) {
                // SAFETY: recv initialised the first n bytes.
                let d: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if n < 28 {
                    got.push((u32::MAX, u32::MAX));
                    continue;
                }
                let word = |at: usize| u32::from_be_bytes(d[at..at + 4].try_into().unwrap());
                got.push((word(SENDER_OFFSET), word(16)));
            }
            assert!(
                want[i].len() > 30,
                "socket {i} was given only {}",
                want[i].len()
            );
            // Every datagram on the socket the program chose, each sender's in order.
            assert_eq!(got, want[i], "socket {i}");
        }
    }

    #[test]
    fn port_zero_groups_get_a_port_of_their_own() {
        // 800 binds among ~28,000 ephemeral ports: without the check, about ten would land on a
        // port another one holds.
        let groups: Vec<_> = (0..800)
            .map(|_| bind_group("127.0.0.1:0".parse().unwrap(), 1, 0).unwrap())
            .collect();
        let mut ports: Vec<u16> = groups.iter().map(|(_, a)| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), groups.len(), "two groups share a port");
        assert!(groups.iter().all(|(s, _)| s.len() == 1));
    }

    #[test]
    fn names_read_back_as_the_addresses_they_encode() {
        for text in ["127.0.0.1:5004", "[::1]:6000", "[fe80::1%3]:7"] {
            let addr: SocketAddr = text.parse().unwrap();
            let sa = socket2::SockAddr::from(addr);
            // SAFETY: as_ptr points at sa.len() initialised bytes owned by sa.
            let bytes =
                unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), sa.len() as usize) };
            assert_eq!(name_to_addr(bytes), Some(addr), "{text}");
        }
        let mapped = socket2::SockAddr::from("[::ffff:10.1.2.3]:9".parse::<SocketAddr>().unwrap());
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(mapped.as_ptr().cast::<u8>(), mapped.len() as usize)
        };
        assert_eq!(name_to_addr(bytes), Some("10.1.2.3:9".parse().unwrap()));
        assert_eq!(name_to_addr(&[]), None);
        assert_eq!(name_to_addr(&[2, 0, 1]), None);
        assert_eq!(name_to_addr(&[0xff; 28]), None);
    }
}
