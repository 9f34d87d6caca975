//! Raw packet rate: a blaster that sends `sendmmsg` batches from one socket to a set of sink
//! addresses at a target rate, and sinks that count what arrives. For measuring what the kernel
//! (or a relay) can move, without the realism of the client threads.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use socket2::SockAddr;

use crate::io::{Poller, RecvBatch, SendBatch};
use crate::report::Latency;
use crate::rtp;

/// What to blast.
#[derive(Debug, Clone)]
pub struct BlastConfig {
    /// Destinations, sent to in turn.
    pub sinks: Vec<SocketAddr>,
    /// Packets per second (None: as fast as possible).
    pub rate_pps: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// Datagram length in bytes.
    pub len: usize,
    /// Stop after this many packets.
    pub max_packets: u64,
    /// Datagrams per `sendmmsg`.
    pub batch: usize,
}

impl Default for BlastConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            rate_pps: None,
            duration: Duration::from_secs(1),
            len: 200,
            max_packets: u64::MAX,
            batch: 64,
        }
    }
}

/// What a blast did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BlastReport {
    /// Datagrams sent.
    pub sent: u64,
    /// `sendmmsg` calls that failed.
    pub errors: u64,
    /// Seconds spent sending.
    pub elapsed_s: f64,
    /// Achieved rate.
    pub pps: f64,
}

/// Sends to `cfg.sinks` from one new loopback socket. Packets are loadgen RTP whose send times
/// count from `epoch`, so a `Sink` with the same epoch measures latency.
pub fn blast(cfg: &BlastConfig, epoch: Instant) -> io::Result<BlastReport> {
    if cfg.sinks.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no sinks"));
    }
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    crate::io::size_buffers(&socket2::SockRef::from(&socket), 4 << 20);
    let dests: Vec<SockAddr> = cfg.sinks.iter().map(|&a| a.into()).collect();
    let batch_len = cfg.batch.clamp(1, 1024);
    let mut batch = SendBatch::new(batch_len);
    let mut seq = vec![0u32; dests.len()];
    let (mut sent, mut errors, mut next) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < cfg.duration && sent < cfg.max_packets {
        let mut n = batch_len as u64;
        if let Some(rate) = cfg.rate_pps {
            let allowed = (start.elapsed().as_secs_f64() * rate) as u64;
            n = n.min(allowed.saturating_sub(sent));
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
        }
        n = n.min(cfg.max_packets - sent);
        let now = epoch.elapsed().as_nanos() as u64;
        for _ in 0..n {
            let h = rtp::Header {
                payload_type: 96,
                marker: false,
                timestamp: 0,
                ssrc: 0x4c47_0000 + next as u32,
                stream: next as u32,
                seq: seq[next],
            };
            seq[next] = seq[next].wrapping_add(1) % crate::stats::MAX_SEQ;
            let p = batch.push(|b| rtp::encode(&h, now, cfg.len, b));
            batch.send_to(p, next);
            next = (next + 1) % dests.len();
        }
        let f = batch.flush(socket.as_raw_fd(), &dests);
        sent += f.datagrams as u64;
        if f.error.is_some() {
            errors += 1;
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(BlastReport {
        sent,
        errors,
        elapsed_s,
        pps: sent as f64 / elapsed_s.max(1e-9),
    })
}

/// Loopback sockets that count (and time) what arrives, on a thread of their own.
pub struct Sink {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<SinkReport>>,
}

/// What a sink received.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SinkReport {
    /// Datagrams received.
    pub received: u64,
    /// Latency of those that were loadgen RTP, µs.
    pub latency_us: Latency,
}

impl Sink {
    /// Binds `n` sockets on 127.0.0.1 and starts reading them; send times count from `epoch`.
    pub fn start(n: usize, epoch: Instant) -> io::Result<Self> {
        let sockets: Vec<UdpSocket> = (0..n.max(1))
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_nonblocking(true)?;
                crate::io::size_buffers(&socket2::SockRef::from(&s), 4 << 20);
                Ok(s)
            })
            .collect::<io::Result<_>>()?;
        let addrs = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<_>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || sink_loop(&sockets, &flag, epoch));
        Ok(Self {
            addrs,
            stop,
            thread,
        })
    }

    /// The sockets' addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops reading and returns the counts.
    pub fn stop(self) -> io::Result<SinkReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("sink thread panicked"))?
    }
}

fn sink_loop(sockets: &[UdpSocket], stop: &AtomicBool, epoch: Instant) -> io::Result<SinkReport> {
    let mut poller = Poller::new()?;
    for (i, s) in sockets.iter().enumerate() {
        poller.add(s.as_raw_fd(), i as u64)?;
    }
    let mut batch = RecvBatch::new(64);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut received = 0;
    while !stop.load(Ordering::Relaxed) {
        let ready: Vec<u64> = poller.wait(Duration::from_millis(10))?.collect();
        for token in ready {
            let n = batch.recv(sockets[token as usize].as_raw_fd())?;
            let now = epoch.elapsed().as_nanos() as u64;
            received += n as u64;
            for i in 0..n {
                if let Ok(p) = rtp::decode(batch.get(i)) {
                    hist.saturating_record((now.saturating_sub(p.send_ns) / 1_000).max(1));
                }
            }
        }
    }
    Ok(SinkReport {
        received,
        latency_us: Latency::of(&hist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blaster_reaches_sinks_at_the_set_rate() {
        let epoch = Instant::now();
        let sink = Sink::start(4, epoch).unwrap();
        let cfg = BlastConfig {
            sinks: sink.addrs().to_vec(),
            rate_pps: Some(20_000.0),
            duration: Duration::from_millis(300),
            max_packets: 100_000,
            ..BlastConfig::default()
        };
        let r = blast(&cfg, epoch).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = sink.stop().unwrap();
        // Bounded by rate and time: about 6,000 packets.
        assert!(r.sent > 0 && r.sent <= 6_100, "{r:?}");
        assert_eq!(s.received, r.sent);
        assert!(s.latency_us.max > 0);
    }
}
