//! A measurement, not a check (ignored by default): forwarding rate and worker CPU time per
//! forwarded packet, per backend, with GSO on and off, for three traffic shapes. Run with
//!
//! ```sh
//! cargo test --release -p relay --test throughput -- --ignored --nocapture --test-threads=1
//! ```
//!
//! One worker pinned to core 0; this thread (the load) pinned to core 1. CPU time comes from the
//! worker's schedstat (nanoseconds on a CPU), so it is the relay's cost alone.
//! `RELAY_BENCH_CELL="Video10 IoUring gso=false"` runs the cells whose name contains it;
//! `RELAY_BENCH_RECV_BATCH`, `RELAY_BENCH_SEND_BATCH` and `RELAY_BENCH_RING_BUFFERS` override the
//! batch sizes.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use relay::config::BackendChoice;

const SECONDS: f64 = 2.0;
const RUNS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// 32 rooms of 2, packets of growing size (never joined): fan-out 1, like audio.
    Audio,
    /// One room of 10; the sender sends frames of 8 × 1100 bytes: fan-out 9.
    Video10,
    /// One room of 50; frames of 8 × 1100 bytes: fan-out 49.
    Video50,
}

#[test]
#[ignore = "a measurement: run by hand in release mode"]
fn measure_forwarding() {
    pin_self(1);
    let shapes = [Shape::Audio, Shape::Video10, Shape::Video50];
    for shape in shapes {
        for backend in [BackendChoice::Mmsg, BackendChoice::IoUring] {
            for gso in [false, true] {
                let cell = format!("{shape:?} {backend:?} gso={gso}");
                if std::env::var("RELAY_BENCH_CELL").is_ok_and(|f| !cell.contains(&f)) {
                    continue;
                }
                let mut rates = Vec::new();
                let mut costs = Vec::new();
                for _ in 0..RUNS {
                    let (rate, cost) = run(shape, backend, gso);
                    rates.push(rate);
                    costs.push(cost);
                }
                println!(
                    "{cell}: out {:.0} kpps (median of {RUNS}: {:?}), \
                     worker {:.0} ns/packet out (median; runs {:?})",
                    median(&rates) / 1e3,
                    rates.iter().map(|r| (r / 1e3) as u64).collect::<Vec<_>>(),
                    median(&costs),
                    costs.iter().map(|c| *c as u64).collect::<Vec<_>>(),
                );
            }
        }
    }
}

/// One cell: (packets out per second, worker CPU ns per packet out).
fn run(shape: Shape, backend: BackendChoice, gso: bool) -> (f64, f64) {
    let plane = start(backend, |c| {
        c.gso = gso;
        c.pin = true;
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        c.recv_batch = var("RELAY_BENCH_RECV_BATCH").unwrap_or(c.recv_batch);
        c.send_batch = var("RELAY_BENCH_SEND_BATCH").unwrap_or(c.send_batch);
        c.ring_buffers = var("RELAY_BENCH_RING_BUFFERS").unwrap_or(c.ring_buffers);
    });
    let to = plane.local_addr();
    // Every member's socket stays open (a closed one would answer with ICMP errors).
    let (senders, batches, _members) = match shape {
        Shape::Audio => {
            let socks = clients(64);
            for r in 0..32 {
                let pair = [
                    socks[2 * r].local_addr().unwrap(),
                    socks[2 * r + 1].local_addr().unwrap(),
                ];
                install(&plane, r as u32, 1000 + 10 * r as u32, &pair);
            }
            let batches: Vec<Vec<Vec<u8>>> = (0..32)
                .map(|r| {
                    (0..64u16)
                        .map(|i| rtp(1000 + 10 * r as u32, i, 100 + usize::from(i)))
                        .collect()
                })
                .collect();
            let senders: Vec<UdpSocket> = socks
                .iter()
                .step_by(2)
                .map(|s| s.try_clone().unwrap())
                .collect();
            (senders, batches, socks)
        }
        Shape::Video10 | Shape::Video50 => {
            let n = if matches!(shape, Shape::Video10) {
                10
            } else {
                50
            };
            let socks = clients(n);
            let addrs: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
            install(&plane, 1, 2000, &addrs);
            let frame: Vec<Vec<u8>> = (0..8u16).map(|i| rtp(2000, i, 1100)).collect();
            let senders = vec![socks[0].try_clone().unwrap()];
            (senders, vec![frame], socks)
        }
    };
    let video = !matches!(shape, Shape::Audio);
    let cpu0 = worker_cpu_ns();
    let out0 = sum(&plane, |s| &s.packets_out);
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed().as_secs_f64() < SECONDS {
        let k = i % senders.len();
        if video {
            // Frames arrive whole: one GSO send from the client puts all 8 on the socket.
            send_burst(&senders[k], to, &batches[0]);
        } else {
            sendmmsg(&senders[k], to, &batches[k]);
        }
        i += 1;
    }
    // Let the worker finish what is queued, then read.
    std::thread::sleep(Duration::from_millis(100));
    let elapsed = start.elapsed().as_secs_f64();
    let out = sum(&plane, |s| &s.packets_out) - out0;
    let cpu = worker_cpu_ns() - cpu0;
    drop(plane);
    (out as f64 / elapsed, cpu as f64 / out.max(1) as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sends each packet as its own datagram in one sendmmsg.
fn sendmmsg(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    let dest = socket2::SockAddr::from(to);
    let mut iovs: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: plain C struct; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = dest.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = dest.len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: the headers point at live iovecs, payloads and address.
    unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
}

/// CPU time of the thread named worker-0, from /proc schedstat (ns on a CPU).
fn worker_cpu_ns() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "worker-0" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
            return stat.split_whitespace().next().unwrap().parse().unwrap();
        }
    }
    panic!("no worker-0 thread")
}

fn pin_self(core: usize) {
    // SAFETY: cpu_set_t is a plain bit array; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time per datagram of the ways to send 1100-byte datagrams to one loopback receiver:
/// `sendto`, `send` on a connected socket, `sendmmsg` of 64 (unconnected and connected), and
/// one UDP GSO send of 8 segments. The loopback send also runs the receiver's delivery.
#[test]
#[ignore = "a measurement: run by hand in release mode"]
fn measure_send_paths() {
    pin_self(1);
    let payload = rtp(1, 1, 1100);
    let burst: Vec<Vec<u8>> = (0..8).map(|_| payload.clone()).collect();
    let batch: Vec<Vec<u8>> = (0..64).map(|_| payload.clone()).collect();
    type Send = Box<dyn Fn(&UdpSocket, SocketAddr) -> usize>;
    let p1 = payload.clone();
    let p2 = payload.clone();
    let b1 = batch.clone();
    let ways: Vec<(&str, bool, Send)> = vec![
        (
            "sendto",
            false,
            Box::new(move |s, to| {
                s.send_to(&p1, to).unwrap();
                1
            }),
        ),
        (
            "send (connected)",
            true,
            Box::new(move |s, _| {
                s.send(&p2).unwrap();
                1
            }),
        ),
        (
            "sendmmsg x64",
            false,
            Box::new(move |s, to| {
                sendmmsg(s, to, &b1);
                64
            }),
        ),
        (
            "GSO x8",
            false,
            Box::new(move |s, to| {
                send_burst(s, to, &burst);
                8
            }),
        ),
    ];
    for (name, connected, send) in &ways {
        let mut costs = Vec::new();
        for _ in 0..5 {
            let rx = &clients(1)[0];
            let to = rx.local_addr().unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            if *connected {
                tx.connect(to).unwrap();
            }
            let (mut cpu, mut sent) = (0u64, 0usize);
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(400) {
                let t0 = thread_cpu_ns();
                let mut n = 0;
                while n < 1024 {
                    n += send(&tx, to);
                }
                cpu += thread_cpu_ns() - t0;
                sent += n;
                discard(rx);
            }
            costs.push(cpu as f64 / sent as f64);
        }
        println!(
            "{name}: {:.0} ns per datagram (median of 5: {:?})",
            median(&costs),
            costs.iter().map(|c| *c as u64).collect::<Vec<_>>()
        );
    }
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes one timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
