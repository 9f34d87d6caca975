//! Prometheus text exposition of the relay's counters.

use std::fmt::Write;

use super::state::State;
use crate::io::WorkerStats;
use crate::route::DropReason;

/// A counter of [`WorkerStats`]: name, help, and how to read it.
type Series = (&'static str, &'static str, fn(&WorkerStats) -> u64);

/// Renders every metric. Per-worker series carry a `worker` label; the unlabelled series is the
/// sum over workers.
pub(super) fn render(state: &State) -> String {
    let plane = state.plane();
    let stats: Vec<&WorkerStats> = plane.stats().collect();
    let mut out = String::with_capacity(4096);
    let counters: [Series; 9] = [
        ("packets_in", "Datagrams received on the media port.", |s| {
            WorkerStats::get(&s.packets_in)
        }),
        ("received_bytes", "Bytes received on the media port.", |s| {
            WorkerStats::get(&s.bytes_in)
        }),
        ("packets_out", "Datagrams sent.", |s| {
            WorkerStats::get(&s.packets_out)
        }),
        ("sent_bytes", "Bytes sent.", |s| {
            WorkerStats::get(&s.bytes_out)
        }),
        ("send_errors", "Sends the kernel refused.", |s| {
            WorkerStats::get(&s.send_errors)
        }),
        (
            "gso_sends",
            "UDP GSO sends (runs of packets sent as one).",
            |s| WorkerStats::get(&s.gso_sends),
        ),
        (
            "gso_fallbacks",
            "Sockets that fell back from GSO after the kernel refused it.",
            |s| WorkerStats::get(&s.gso_fallbacks),
        ),
        (
            "recv_rearms",
            "io_uring multishot receives re-armed (buffers ran out).",
            |s| WorkerStats::get(&s.recv_rearms),
        ),
        ("batches", "Receive batches processed.", |s| {
            WorkerStats::get(&s.batches)
        }),
    ];
    for (name, help, get) in counters {
        let total: u64 = stats.iter().map(|s| get(s)).sum();
        let _ = writeln!(out, "# HELP relay_{name}_total {help}");
        let _ = writeln!(out, "# TYPE relay_{name}_total counter");
        let _ = writeln!(out, "relay_{name}_total {total}");
        let _ = writeln!(out, "# HELP relay_worker_{name}_total {help} Per worker.");
        let _ = writeln!(out, "# TYPE relay_worker_{name}_total counter");
        for (i, s) in stats.iter().enumerate() {
            let _ = writeln!(
                out,
                "relay_worker_{name}_total{{worker=\"{i}\"}} {}",
                get(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP relay_dropped_packets_total Datagrams dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE relay_dropped_packets_total counter");
    for r in DropReason::ALL {
        let total: u64 = stats
            .iter()
            .map(|s| WorkerStats::get(&s.drops[r.index()]))
            .sum();
        let _ = writeln!(
            out,
            "relay_dropped_packets_total{{reason=\"{}\"}} {total}",
            r.name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP relay_worker_dropped_packets_total Datagrams dropped, by worker and reason."
    );
    let _ = writeln!(out, "# TYPE relay_worker_dropped_packets_total counter");
    for (i, s) in stats.iter().enumerate() {
        for r in DropReason::ALL {
            let _ = writeln!(
                out,
                "relay_worker_dropped_packets_total{{worker=\"{i}\",reason=\"{}\"}} {}",
                r.name(),
                WorkerStats::get(&s.drops[r.index()])
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP relay_latches_total Addresses latched by authenticated STUN.\n# TYPE relay_latches_total counter\nrelay_latches_total {}",
        state.latch_count()
    );
    let _ = writeln!(
        out,
        "# HELP relay_socket_drops_total Datagrams the kernel dropped at the media sockets (receive buffers full).\n# TYPE relay_socket_drops_total counter\nrelay_socket_drops_total {}",
        socket_drops(plane.local_addr().port())
    );
    let (rooms, participants) = state.sizes();
    let _ = writeln!(
        out,
        "# HELP relay_rooms Rooms open.\n# TYPE relay_rooms gauge\nrelay_rooms {rooms}"
    );
    let _ = writeln!(
        out,
        "# HELP relay_participants Participants in all rooms.\n# TYPE relay_participants gauge\nrelay_participants {participants}"
    );
    let _ = writeln!(
        out,
        "# HELP relay_workers Data-plane workers.\n# TYPE relay_workers gauge\nrelay_workers {}",
        stats.len()
    );
    crate::telemetry::render(&mut out, plane);
    out
}

/// Datagrams the kernel dropped at the sockets bound to `port`: the last column of
/// /proc/net/udp and /proc/net/udp6 (the sockets of the SO_REUSEPORT group share the port).
fn socket_drops(port: u16) -> u64 {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(&suffix))
                })
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
