//! The data plane in-process on loopback, on both backends: GSO bursts come out byte-identical,
//! the io_uring receive survives running out of buffers, idle workers wake for changes, and a
//! fenced data plane (fleet mode) forwards nothing.

mod common;

use std::time::Duration;

use common::*;
use relay::config::BackendChoice;

const PATIENT: Duration = Duration::from_secs(5);

/// Sends `bursts` bursts of `per` RTP packets of SSRC 100 from `from` to `to`, each burst in one
/// GSO send so that it reaches the relay's socket together; packet `i` of burst `b` is
/// `len(b, i)` bytes long. Returns every packet, in the order sent.
fn send_bursts(
    from: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    bursts: u16,
    per: u16,
    len: impl Fn(u16, u16) -> usize,
) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for burst in 0..bursts {
        let packets: Vec<Vec<u8>> = (0..per)
            .map(|i| rtp(100, burst * per + i, len(burst, i)))
            .collect();
        send_burst(from, to, &packets);
        sent.extend(packets);
    }
    sent
}

/// Bursts of equal-size packets (the last of each shorter) from a to b and c: both get exactly
/// the same datagrams in the same order, with GSO on and off; with GSO on, runs were joined.
#[test]
fn bursts_arrive_byte_identical_with_and_without_gso() {
    for backend in BACKENDS {
        for gso in [true, false] {
            let plane = start(backend, |c| c.gso = gso);
            let socks = clients(3);
            let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
            install(&plane, 1, 100, &addrs);
            let sent = send_bursts(&socks[0], plane.local_addr(), 20, 10, |burst, i| {
                if i == 9 {
                    77
                } else {
                    200 + usize::from(burst) * 60
                }
            });
            for r in &socks[1..] {
                let got = recv_n(r, sent.len(), PATIENT);
                assert!(
                    got == sent,
                    "{backend:?} gso={gso}: got {} of {}",
                    got.len(),
                    sent.len()
                );
            }
            assert_eq!(discard(&socks[0]), 0, "no echo to the sender");
            // Counters are published after the batch's sends: give the worker a moment.
            let out = || sum(&plane, |s| &s.packets_out);
            assert!(
                wait_until(PATIENT, || out() == 400),
                "{backend:?} gso={gso}: {}",
                out()
            );
            let gso_sends = sum(&plane, |s| &s.gso_sends);
            if gso {
                assert!(gso_sends > 0, "{backend:?}: no GSO send was made");
            } else {
                assert_eq!(gso_sends, 0, "{backend:?}");
            }
            assert_eq!(sum(&plane, |s| &s.gso_fallbacks), 0);
        }
    }
}

/// A fan-out wider than `--send-batch` (40 receivers, batches of 8): the plan still joins each
/// burst into one GSO send per receiver, the sends go out window by window, and every receiver
/// gets every datagram in order.
#[test]
fn a_fan_out_wider_than_the_send_batch_still_forms_runs_in_order() {
    for backend in BACKENDS {
        let plane = start(backend, |c| c.send_batch = 8);
        let socks = clients(41);
        let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
        install(&plane, 1, 100, &addrs);
        let sent = send_bursts(&socks[0], plane.local_addr(), 5, 8, |_, i| {
            if i == 7 { 90 } else { 300 }
        });
        for (i, r) in socks[1..].iter().enumerate() {
            let got = recv_n(r, sent.len(), PATIENT);
            assert!(
                got == sent,
                "{backend:?}: receiver {i} got {} of {} (or out of order)",
                got.len(),
                sent.len()
            );
        }
        let out = || sum(&plane, |s| &s.packets_out);
        assert!(
            wait_until(PATIENT, || out() == 40 * 40),
            "{backend:?}: {}",
            out()
        );
        // A burst reaches the relay in one receive batch, so each receiver's copies of it join
        // into runs: far fewer sends than copies (one per datagram without the plan's width).
        let gso_sends = sum(&plane, |s| &s.gso_sends);
        assert!(
            gso_sends > 0 && gso_sends <= 5 * 40 * 2,
            "{backend:?}: {gso_sends} GSO sends for 5 bursts to 40 receivers"
        );
    }
}

/// With only 64 receive buffers, bursts larger than the ring end the multishot receive with
/// ENOBUFS; the worker arms it again and nothing is lost.
#[test]
fn io_uring_receive_survives_running_out_of_buffers() {
    let plane = start(BackendChoice::IoUring, |c| c.ring_buffers = 64);
    let socks = clients(2);
    let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    install(&plane, 1, 100, &addrs);
    let sent = send_bursts(&socks[0], plane.local_addr(), 10, 64, |_, _| 500);
    let got = recv_n(&socks[1], sent.len(), PATIENT);
    assert!(got == sent, "got {} of {}", got.len(), sent.len());
    assert!(
        sum(&plane, |s| &s.recv_rearms) > 0,
        "the receive never ran dry"
    );
    assert!(plane.healthy());
}

/// Datagrams larger than a slot are dropped as oversize on both backends, and the next one goes
/// through.
#[test]
fn oversize_datagrams_are_dropped_on_both_backends() {
    for backend in BACKENDS {
        let plane = start(backend, |_| {});
        let socks = clients(2);
        let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
        install(&plane, 1, 100, &addrs);
        for len in [2049, 3000, 9000] {
            socks[0]
                .send_to(&rtp(100, 1, len), plane.local_addr())
                .unwrap();
        }
        let ok = rtp(100, 2, 2048);
        socks[0].send_to(&ok, plane.local_addr()).unwrap();
        assert_eq!(recv_n(&socks[1], 1, PATIENT), vec![ok], "{backend:?}");
        let oversize = relay::route::DropReason::Oversize.index();
        assert!(wait_until(PATIENT, || sum(&plane, |s| &s.drops[oversize]) == 3));
    }
}

/// An idle worker applies a change at once: publish returns well before the one-second
/// fallback timeout of the wait, every time.
#[test]
fn idle_workers_wake_for_changes() {
    for backend in BACKENDS {
        let plane = start(backend, |c| c.workers = 2);
        std::thread::sleep(Duration::from_millis(50));
        let t = std::time::Instant::now();
        for id in 0..10 {
            install(&plane, id, 100, &[]);
        }
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{backend:?}: {:?}",
            t.elapsed()
        );
    }
}

/// Busy polling forwards, applies changes and shuts down like the sleeping loop, on both
/// backends.
#[test]
fn busy_poll_forwards_and_stops() {
    for backend in BACKENDS {
        let plane = start(backend, |c| c.busy_poll = true);
        let socks = clients(2);
        let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
        install(&plane, 1, 100, &addrs);
        let p = rtp(100, 1, 300);
        socks[0].send_to(&p, plane.local_addr()).unwrap();
        let got = recv_n(&socks[1], 1, PATIENT);
        assert!(
            got == vec![p],
            "{backend:?}: healthy {} in {} out {}",
            plane.healthy(),
            sum(&plane, |s| &s.packets_in),
            sum(&plane, |s| &s.packets_out),
        );
        install(&plane, 1, 100, &addrs[..1]);
        socks[0]
            .send_to(&rtp(100, 2, 300), plane.local_addr())
            .unwrap();
        assert!(recv_n(&socks[1], 1, Duration::from_millis(100)).is_empty());
        drop(plane);
    }
}

/// When the kernel refuses GSO on the relay's socket (here: SO_NO_CHECK, with which Linux
/// refuses UDP_SEGMENT with EINVAL), the worker turns GSO off once, resends the refused runs one
/// datagram at a time, and nothing is lost or changed.
#[test]
fn refused_gso_falls_back_without_loss() {
    for backend in BACKENDS {
        let plane = start(backend, |c| c.gso = true);
        refuse_gso(plane.local_addr());
        let socks = clients(3);
        let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
        install(&plane, 1, 100, &addrs);
        let sent = send_bursts(&socks[0], plane.local_addr(), 5, 6, |_, i| {
            if i == 5 { 50 } else { 700 }
        });
        for r in &socks[1..] {
            let got = recv_n(r, sent.len(), PATIENT);
            assert!(
                got == sent,
                "{backend:?}: got {} of {}",
                got.len(),
                sent.len()
            );
        }
        let out = || sum(&plane, |s| &s.packets_out);
        assert!(
            wait_until(PATIENT, || out() == 60),
            "{backend:?}: {}",
            out()
        );
        assert_eq!(sum(&plane, |s| &s.gso_fallbacks), 1, "{backend:?}");
        assert_eq!(sum(&plane, |s| &s.gso_sends), 0, "{backend:?}");
        assert_eq!(sum(&plane, |s| &s.send_errors), 0, "{backend:?}");
    }
}

/// Finds this process's socket bound to `addr` and sets SO_NO_CHECK on it.
fn refuse_gso(addr: std::net::SocketAddr) {
    let mut found = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: a zeroed sockaddr_storage is valid.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into `name`; a descriptor that is not a
        // socket (or was closed meanwhile by another test) just fails.
        if unsafe { libc::getsockname(fd, (&raw mut name).cast(), &mut len) } != 0 {
            continue;
        }
        // SAFETY: the kernel wrote `len` bytes of a socket address into `name`.
        let bound = unsafe { socket2::SockAddr::new(name, len) };
        if bound.as_socket() != Some(addr) {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads a c_int from a live pointer.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        found += 1;
    }
    // One socket, two descriptors: the worker's and the DTLS thread's clone that sends flights
    // (`DataPlane::dtls_socket`); the option is the socket's, set through either.
    assert_eq!(found, 2, "the worker socket and its clone");
}

/// In fleet mode a fenced relay forwards nothing, on both backends: every datagram counts as
/// drop reason `fenced` (the status says fenced until the relay has joined and caught up).
#[test]
fn a_fenced_data_plane_forwards_nothing() {
    for backend in BACKENDS {
        let status = std::sync::Arc::new(relay::fleet::Status::new());
        assert!(status.fenced());
        let plane = start(backend, |c| c.fence = Some(status.clone()));
        let socks = clients(2);
        let addrs: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
        install(&plane, 1, 100, &addrs);
        for seq in 0..10 {
            socks[0]
                .send_to(&rtp(100, seq, 200), plane.local_addr())
                .unwrap();
        }
        let fenced = relay::route::DropReason::Fenced.index();
        assert!(
            wait_until(PATIENT, || sum(&plane, |s| &s.drops[fenced]) == 10),
            "{backend:?}"
        );
        assert!(
            recv_n(&socks[1], 1, Duration::from_millis(200)).is_empty(),
            "{backend:?}"
        );
        assert_eq!(sum(&plane, |s| &s.packets_out), 0, "{backend:?}");
    }
}
