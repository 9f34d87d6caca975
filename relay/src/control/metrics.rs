//! Prometheus text exposition of the relay's counters.

use std::fmt::Write;

use std::sync::atomic::Ordering;

use super::{Readiness, Shared};
use crate::io::WorkerStats;
use crate::route::DropReason;

/// A counter of [`WorkerStats`]: name, help, and how to read it.
type Series = (&'static str, &'static str, fn(&WorkerStats) -> u64);

/// Renders every metric. Per-worker series carry a `worker` label; the unlabelled series is the
/// sum over workers. Reads atomics and short locks only: never waits for the control thread.
pub(super) fn render(shared: &Shared) -> String {
    let plane = &shared.plane;
    let stats: Vec<&WorkerStats> = plane.stats().collect();
    let mut out = String::with_capacity(4096);
    let counters: [Series; 12] = [
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
        (
            "handoff_out",
            "Fan-out shares of large rooms handed to another worker.",
            |s| WorkerStats::get(&s.handoff_out),
        ),
        (
            "handoff_full",
            "Fan-out shares dropped because the peer's hand-off ring was full (or no buffer could be lent).",
            |s| WorkerStats::get(&s.handoff_full),
        ),
        (
            "handoff_in",
            "Fan-out shares sent for another worker.",
            |s| WorkerStats::get(&s.handoff_in),
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
        shared.gauges.latches.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP relay_socket_drops_total Datagrams the kernel dropped at the media sockets (receive buffers full).\n# TYPE relay_socket_drops_total counter\nrelay_socket_drops_total {}",
        socket_drops(plane.local_addr().port())
    );
    let rooms = shared.gauges.rooms.load(Ordering::Relaxed);
    let participants = shared.gauges.participants.load(Ordering::Relaxed);
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
    dtls(shared, &mut out);
    control(shared, &mut out);
    crate::telemetry::render(&mut out, plane);
    out
}

/// The DTLS thread's series: handshakes by outcome, and what became of the datagrams the
/// workers passed to it (each source has its own bounded queue: a flood is dropped there).
fn dtls(shared: &Shared, out: &mut String) {
    let c = shared.dtls.load();
    let _ = writeln!(
        out,
        "# HELP relay_dtls_handshakes_total DTLS handshakes of WebRTC legs, by outcome.\n# TYPE relay_dtls_handshakes_total counter"
    );
    for (outcome, v) in [
        ("started", c.started),
        ("connected", c.connected),
        ("failed", c.failed),
        ("refused", c.refused),
    ] {
        let _ = writeln!(
            out,
            "relay_dtls_handshakes_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP relay_dtls_datagrams_total Datagrams the DTLS thread received from the workers, by what became of them.\n# TYPE relay_dtls_datagrams_total counter"
    );
    for (outcome, v) in [
        ("processed", c.processed),
        ("queue_full", c.queue_full),
        ("finished", c.finished),
        ("unknown_session", c.unknown_participant),
    ] {
        let _ = writeln!(
            out,
            "relay_dtls_datagrams_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
}

/// The control plane's own series: readiness, rules, audit, events, API requests.
fn control(shared: &Shared, out: &mut String) {
    let readiness = shared.readiness();
    let _ = writeln!(
        out,
        "# HELP relay_ready Whether the relay takes new rooms (1) or is starting, draining or stopping (0).\n# TYPE relay_ready gauge\nrelay_ready {}",
        u8::from(readiness == Readiness::Serving && shared.plane.healthy())
    );
    let _ = writeln!(
        out,
        "# HELP relay_draining Whether the relay is draining: existing rooms go on, new ones are refused.\n# TYPE relay_draining gauge\nrelay_draining {}",
        u8::from(readiness == Readiness::Draining)
    );
    let rules = shared.rules();
    let _ = writeln!(
        out,
        "# HELP relay_rules_active Drop rules in force.\n# TYPE relay_rules_active gauge\nrelay_rules_active {}",
        rules.len()
    );
    let _ = writeln!(
        out,
        "# HELP relay_rule_dropped_packets_total Packets a rule in force dropped, by direction (send: nobody got them; receive: copies its participants did not get).\n# TYPE relay_rule_dropped_packets_total counter"
    );
    for r in rules.iter() {
        let (send, receive) = r.dropped();
        let _ = writeln!(
            out,
            "relay_rule_dropped_packets_total{{rule=\"{}\",direction=\"send\"}} {send}\nrelay_rule_dropped_packets_total{{rule=\"{}\",direction=\"receive\"}} {receive}",
            r.id, r.id
        );
    }
    let _ = writeln!(
        out,
        "# HELP relay_rule_expiry_timestamp_seconds When a rule in force expires (Unix time).\n# TYPE relay_rule_expiry_timestamp_seconds gauge"
    );
    for r in rules.iter() {
        let _ = writeln!(
            out,
            "relay_rule_expiry_timestamp_seconds{{rule=\"{}\"}} {}",
            r.id, r.expires_at
        );
    }
    let audit = shared.gauges.audit_valid.load(Ordering::Relaxed);
    if audit >= 0 {
        let _ = writeln!(
            out,
            "# HELP relay_audit_chain_valid Whether the audit log's hash chain verified at its last check (at start and hourly).\n# TYPE relay_audit_chain_valid gauge\nrelay_audit_chain_valid {audit}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP relay_events_total Events published on /v1/events, by type.\n# TYPE relay_events_total counter"
    );
    for (kind, n) in shared.events.published() {
        let _ = writeln!(out, "relay_events_total{{type=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP relay_events_dropped_total Events streams missed because they fell behind the history.\n# TYPE relay_events_dropped_total counter\nrelay_events_dropped_total {}",
        shared.events.missed()
    );
    if let Some(fleet) = &shared.fleet {
        let _ = writeln!(
            out,
            "# HELP relay_fleet_fenced 1 while this relay is fenced from its fleet and forwards nothing.\n# TYPE relay_fleet_fenced gauge\nrelay_fleet_fenced {}\n# HELP relay_fleet_nodes Live relays of the fleet, this one included.\n# TYPE relay_fleet_nodes gauge\nrelay_fleet_nodes {}",
            u8::from(fleet.fenced()),
            shared.gauges.fleet_nodes.load(Ordering::Relaxed)
        );
        let trunks = shared.trunks();
        let _ = writeln!(
            out,
            "# HELP relay_trunk_packets_sent_total Trunk datagrams queued for a peer relay (one per packet and peer with an allowed receiver).\n# TYPE relay_trunk_packets_sent_total counter"
        );
        for (peer, c) in &trunks {
            let _ = writeln!(
                out,
                "relay_trunk_packets_sent_total{{peer=\"{peer}\"}} {}",
                c.sent.sum()
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_trunk_packets_received_total Trunk datagrams accepted from a peer relay (registered address, current epoch, well formed).\n# TYPE relay_trunk_packets_received_total counter"
        );
        for (peer, c) in &trunks {
            let _ = writeln!(
                out,
                "relay_trunk_packets_received_total{{peer=\"{peer}\"}} {}",
                c.received.sum()
            );
        }
    }
    let hook = &shared.webhook;
    let _ = writeln!(
        out,
        "# HELP relay_webhook_deliveries_total Webhook requests, by result (error: retried).\n# TYPE relay_webhook_deliveries_total counter\nrelay_webhook_deliveries_total{{result=\"ok\"}} {}\nrelay_webhook_deliveries_total{{result=\"error\"}} {}",
        hook.delivered.load(Ordering::Relaxed),
        hook.failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP relay_webhook_dropped_total Events that left the history before the webhook could deliver them.\n# TYPE relay_webhook_dropped_total counter\nrelay_webhook_dropped_total {}",
        hook.dropped.load(Ordering::Relaxed)
    );
    shared.http.render(out);
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
