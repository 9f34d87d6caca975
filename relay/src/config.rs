//! Command line, configuration file and environment.
//!
//! Every `serve` flag can also be set by an environment variable `RELAY_<FLAG>` and by a key of the
//! same name in a TOML file given with `--config`. Precedence: flag, then environment, then file,
//! then the embedded default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// The `relay` command line.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    about = "Media relay with scoped, audited drop rules"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default).
    Serve(Box<ServeArgs>),
    /// Work with the audit log.
    Audit {
        /// The audit action.
        #[command(subcommand)]
        action: AuditAction,
    },
}

/// `relay audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the hash chain of the audit log; exits non-zero naming the first bad entry.
    Verify {
        /// The data directory that holds the database.
        #[arg(long, env = "RELAY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// Flags of `relay serve`. Each is optional here so that the file can fill what flags leave out.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys named like the flags).
    #[arg(long, env = "RELAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// UDP media address [default: 0.0.0.0:40000]; port 0 picks a free port.
    #[arg(long, env = "RELAY_MEDIA")]
    pub media: Option<SocketAddr>,
    /// HTTP control address [default: 127.0.0.1:7780]; port 0 picks a free port.
    #[arg(long, env = "RELAY_CONTROL")]
    pub control: Option<SocketAddr>,
    /// Directory for the rules database and audit log [default: ./relay-data].
    #[arg(long, env = "RELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Worker threads [default: one per available core].
    #[arg(long, env = "RELAY_WORKERS")]
    pub workers: Option<usize>,
    /// Data-plane backend: mmsg, io_uring, or auto (io_uring where the kernel allows it)
    /// [default: mmsg, measured cheaper for audio; docs/BENCHMARKS.md].
    #[arg(long, env = "RELAY_BACKEND")]
    pub backend: Option<String>,
    /// IP address to give clients as the media address, when the bound one is not reachable
    /// as is (a wildcard bind, NAT) [default: the bound address].
    #[arg(long, env = "RELAY_ADVERTISE")]
    pub advertise: Option<std::net::IpAddr>,
    /// Bearer token required on every /v1 call; several, separated by commas, are all valid
    /// (rotation).
    #[arg(long, env = "RELAY_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// File of bearer tokens, one per line (`#` starts a comment), all valid besides
    /// --control-token; re-read on SIGHUP.
    #[arg(long, env = "RELAY_CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,
    /// Second HTTP address serving only /healthz, /readyz and /metrics, without a token.
    #[arg(long, env = "RELAY_OPS")]
    pub ops: Option<SocketAddr>,
    /// MaxMind country database for region attribution.
    #[arg(long, env = "RELAY_GEOIP")]
    pub geoip: Option<PathBuf>,
    /// Pin worker i to core i [default: true].
    #[arg(long, env = "RELAY_PIN")]
    pub pin: Option<bool>,
    /// SO_RCVBUF and SO_SNDBUF of each media socket, in bytes [default: 4194304].
    #[arg(long, env = "RELAY_SOCKET_BUFFER")]
    pub socket_buffer: Option<usize>,
    /// Datagrams per receive batch [default: 64].
    #[arg(long, env = "RELAY_RECV_BATCH")]
    pub recv_batch: Option<usize>,
    /// Sends submitted at once (a window of sendmmsg calls, or the io_uring submission queue);
    /// the send plan is as wide as the largest fan-out whatever this is [default: 1024].
    #[arg(long, env = "RELAY_SEND_BATCH")]
    pub send_batch: Option<usize>,
    /// Receive buffers per worker in the io_uring buffer ring, a power of two [default: 1024].
    #[arg(long, env = "RELAY_RING_BUFFERS")]
    pub ring_buffers: Option<usize>,
    /// Send bursts of equal-size packets to a receiver as one UDP GSO send [default: true].
    #[arg(long, env = "RELAY_GSO")]
    pub gso: Option<bool>,
    /// Spin instead of sleeping when idle: lower latency for a whole core per worker
    /// [default: false].
    #[arg(long, env = "RELAY_BUSY_POLL")]
    pub busy_poll: Option<bool>,
    /// Rooms of at least this many members share each packet's fan-out among all workers;
    /// 0 never shares [default: 128].
    #[arg(long, env = "RELAY_HANDOFF_MIN_MEMBERS")]
    pub handoff_min_members: Option<usize>,
    /// The most an idle worker keeps polling its socket before it sleeps, in µs; the window
    /// adapts to the gaps between datagrams, and 0 sleeps at once [default: 0].
    #[arg(long, env = "RELAY_IDLE_POLL_US")]
    pub idle_poll_us: Option<u64>,
    /// Scheduling of the worker threads: normal, nice:N (-20 to 19) or fifo:N (SCHED_FIFO,
    /// 1 to 99); below nice 0 and fifo need CAP_SYS_NICE or RLIMIT_NICE / RLIMIT_RTPRIO
    /// [default: normal].
    #[arg(long, env = "RELAY_WORKER_PRIORITY")]
    pub worker_priority: Option<String>,
    /// Most rooms at once [default: 10000].
    #[arg(long, env = "RELAY_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Most participants in one room [default: 10000; at most 65534].
    #[arg(long, env = "RELAY_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Most tracks of one participant [default: 32].
    #[arg(long, env = "RELAY_MAX_TRACKS")]
    pub max_tracks: Option<usize>,
    /// Seconds without a packet or STUN request before a latched address is dropped
    /// [default: 30].
    #[arg(long, env = "RELAY_LATCH_TIMEOUT")]
    pub latch_timeout: Option<u64>,
    /// Rule changes (add or lift) accepted per second, with bursts of twice that [default: 20].
    #[arg(long, env = "RELAY_MAX_RULE_CHANGES")]
    pub max_rule_changes: Option<u32>,
    /// Also POST every event to this http:// URL, signed with --webhook-secret.
    #[arg(long, env = "RELAY_WEBHOOK")]
    pub webhook: Option<String>,
    /// HMAC-SHA256 key for webhook signatures (at least 16 bytes).
    #[arg(long, env = "RELAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Events kept for /v1/events streams to resume from [default: 10000].
    #[arg(long, env = "RELAY_EVENT_HISTORY")]
    pub event_history: Option<usize>,
    /// etcd client URLs (`http://host:2379`), separated by commas: turns fleet mode on.
    /// Without it the relay runs alone and needs no etcd.
    #[arg(long, env = "RELAY_ETCD")]
    pub etcd: Option<String>,
    /// This relay's name in the fleet, unique, 1 to 64 of [A-Za-z0-9._-] [default: the
    /// hostname].
    #[arg(long, env = "RELAY_NODE")]
    pub node: Option<String>,
    /// UDP address for relay-to-relay (trunk) traffic, as peers reach it [default: the media
    /// IP (or --advertise) and port 40001].
    #[arg(long, env = "RELAY_TRUNK")]
    pub trunk: Option<SocketAddr>,
    /// Where this relay runs, for rules limited with `relays_in` and for placement: an
    /// ISO 3166-1 alpha-2 code or another short code of [A-Z0-9-] [default: no region].
    #[arg(long, env = "RELAY_REGION")]
    pub region: Option<String>,
    /// Log filter, in tracing's EnvFilter syntax [default: info].
    #[arg(long, env = "RELAY_LOG")]
    pub log: Option<String>,
    /// Log format on standard error: text, or json (one object per line) [default: text].
    #[arg(long, env = "RELAY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./relay-data";

/// The resolved settings of `relay serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP media address.
    pub media: SocketAddr,
    /// HTTP control address.
    pub control: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Requested backend.
    pub backend: BackendChoice,
    /// Valid bearer tokens (empty: none needed), as read at start; [`TokenSources::read`]
    /// reads them again.
    pub control_tokens: Vec<String>,
    /// Where the tokens come from, to read them again on SIGHUP.
    pub token_sources: TokenSources,
    /// The ops listener, if any.
    pub ops: Option<SocketAddr>,
    /// The webhook, if any.
    pub webhook: Option<crate::control::webhook::WebhookConfig>,
    /// IP given to clients as the media address.
    pub advertise: Option<std::net::IpAddr>,
    /// MaxMind database path, if any.
    pub geoip: Option<PathBuf>,
    /// Pin workers to cores.
    pub pin: bool,
    /// Socket buffer size in bytes.
    pub socket_buffer: usize,
    /// Datagrams per receive batch.
    pub recv_batch: usize,
    /// Sends submitted at once (the plan's width is `io::plan::width`).
    pub send_batch: usize,
    /// io_uring receive buffers per worker.
    pub ring_buffers: usize,
    /// UDP GSO for bursts.
    pub gso: bool,
    /// Spin instead of sleeping.
    pub busy_poll: bool,
    /// Smallest room whose fan-out is shared among workers (0: never).
    pub handoff_min_members: usize,
    /// The most an idle worker polls before it sleeps.
    pub idle_poll: std::time::Duration,
    /// Scheduling of the worker threads.
    pub worker_priority: crate::io::WorkerPriority,
    /// API limits.
    pub limits: Limits,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Fleet mode (`--etcd`), if on.
    pub fleet: Option<FleetSettings>,
}

/// How this relay joins a fleet (`--etcd`, `--node`, `--trunk`, `--region`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSettings {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// This relay's unique name.
    pub node: String,
    /// Its trunk address.
    pub trunk: SocketAddr,
    /// Its region code (may be empty: none).
    pub region: String,
}

/// Resolves the fleet flags: `None` without `--etcd`.
fn fleet_settings(
    args: &ServeArgs,
    media: SocketAddr,
    advertise: Option<std::net::IpAddr>,
) -> anyhow::Result<Option<FleetSettings>> {
    let endpoints: Vec<String> = split_tokens(args.etcd.as_deref());
    if endpoints.is_empty() {
        if args.node.is_some() || args.trunk.is_some() || args.region.is_some() {
            bail!("--node, --trunk and --region need --etcd (fleet mode)");
        }
        return Ok(None);
    }
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            bail!("--etcd {e:?}: expected http://host:port");
        }
    }
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the hostname for --node")?
            .trim()
            .to_owned(),
    };
    if !crate::fleet::keys::valid_node_name(&node) {
        bail!("--node {node:?}: expected 1 to 64 of [A-Za-z0-9._-]");
    }
    let region = args.region.clone().unwrap_or_default();
    if !valid_region(&region) {
        bail!("--region {region:?}: expected up to 16 of [A-Z0-9-], e.g. CN");
    }
    let trunk = args
        .trunk
        .unwrap_or_else(|| SocketAddr::new(advertise.unwrap_or(media.ip()), DEFAULT_TRUNK_PORT));
    Ok(Some(FleetSettings {
        endpoints,
        node,
        trunk,
        region,
    }))
}

/// A region code: up to 16 of `[A-Z0-9-]` (empty: none).
pub fn valid_region(region: &str) -> bool {
    region.len() <= 16
        && region
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

/// The trunk port when `--trunk` is not given.
pub const DEFAULT_TRUNK_PORT: u16 = 40001;

/// Where control tokens come from: a flag or the environment (fixed for the process's life),
/// the config file and the token file (both read again on SIGHUP).
#[derive(Clone, Debug, Default)]
pub struct TokenSources {
    /// `--control-token` or `RELAY_CONTROL_TOKEN`.
    pub fixed: Option<String>,
    /// The `--config` file, whose `control-token` key counts when no flag or variable gave one.
    pub config_file: Option<PathBuf>,
    /// `--control-token-file`.
    pub token_file: Option<PathBuf>,
}

impl TokenSources {
    /// Reads the tokens now.
    pub fn read(&self) -> anyhow::Result<Vec<String>> {
        let from_file = match (&self.fixed, &self.config_file) {
            (Some(_), _) | (None, None) => None,
            (None, Some(path)) => read_file(path)?.control_token,
        };
        let mut tokens = split_tokens(self.fixed.as_deref().or(from_file.as_deref()));
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        for t in &tokens {
            if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("a control token holds whitespace or control characters");
            }
        }
        tokens.sort();
        tokens.dedup();
        Ok(tokens)
    }
}

fn split_tokens(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The backend the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring where the kernel allows it, else mmsg.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

/// Limits the control API enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most rooms at once.
    pub max_rooms: usize,
    /// Most participants per room.
    pub max_participants: usize,
    /// Most tracks per participant.
    pub max_tracks: usize,
    /// Rule changes accepted per second.
    pub rule_changes_per_sec: u32,
    /// Silence after which a latched address is dropped.
    pub latch_timeout: std::time::Duration,
    /// Events kept for streams to resume from.
    pub event_history: usize,
}

impl ServeArgs {
    /// Fills unset fields from `other`.
    fn or(self, other: Self) -> Self {
        Self {
            config: self.config.or(other.config),
            media: self.media.or(other.media),
            control: self.control.or(other.control),
            data_dir: self.data_dir.or(other.data_dir),
            workers: self.workers.or(other.workers),
            backend: self.backend.or(other.backend),
            control_token: self.control_token.or(other.control_token),
            control_token_file: self.control_token_file.or(other.control_token_file),
            ops: self.ops.or(other.ops),
            advertise: self.advertise.or(other.advertise),
            geoip: self.geoip.or(other.geoip),
            pin: self.pin.or(other.pin),
            socket_buffer: self.socket_buffer.or(other.socket_buffer),
            recv_batch: self.recv_batch.or(other.recv_batch),
            send_batch: self.send_batch.or(other.send_batch),
            ring_buffers: self.ring_buffers.or(other.ring_buffers),
            gso: self.gso.or(other.gso),
            busy_poll: self.busy_poll.or(other.busy_poll),
            handoff_min_members: self.handoff_min_members.or(other.handoff_min_members),
            idle_poll_us: self.idle_poll_us.or(other.idle_poll_us),
            worker_priority: self.worker_priority.or(other.worker_priority),
            max_rooms: self.max_rooms.or(other.max_rooms),
            max_participants: self.max_participants.or(other.max_participants),
            max_tracks: self.max_tracks.or(other.max_tracks),
            max_rule_changes: self.max_rule_changes.or(other.max_rule_changes),
            latch_timeout: self.latch_timeout.or(other.latch_timeout),
            event_history: self.event_history.or(other.event_history),
            webhook: self.webhook.or(other.webhook),
            webhook_secret: self.webhook_secret.or(other.webhook_secret),
            etcd: self.etcd.or(other.etcd),
            node: self.node.or(other.node),
            trunk: self.trunk.or(other.trunk),
            region: self.region.or(other.region),
            log: self.log.or(other.log),
            log_format: self.log_format.or(other.log_format),
        }
    }

    /// Reads the file named by `--config` if any, and applies the defaults.
    pub fn resolve(self) -> anyhow::Result<Config> {
        // Flags and environment are merged into `args` below; a token from the file is read
        // again on SIGHUP, so keep the two apart.
        let from_cli_or_env = self.control_token.clone().filter(|t| !t.is_empty());
        let config_file = self.config.clone();
        let args = match self.config.clone() {
            Some(path) => self.or(read_file(&path)?),
            None => self,
        };
        let backend = match args.backend.as_deref().unwrap_or("mmsg") {
            "auto" => BackendChoice::Auto,
            "io_uring" | "io-uring" => BackendChoice::IoUring,
            "mmsg" => BackendChoice::Mmsg,
            other => bail!("unknown backend {other:?}: expected auto, io_uring or mmsg"),
        };
        let workers = match args.workers {
            Some(0) => bail!("--workers must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let control = args
            .control
            .unwrap_or_else(|| "127.0.0.1:7780".parse().expect("valid literal"));
        let token_sources = TokenSources {
            fixed: from_cli_or_env,
            config_file,
            token_file: args.control_token_file.clone(),
        };
        let control_tokens = token_sources.read()?;
        if !control.ip().is_loopback() && control_tokens.is_empty() {
            bail!(
                "the control API would listen on a non-loopback address without a token: \
                 set --control-token (or RELAY_CONTROL_TOKEN), or listen on loopback"
            );
        }
        let limits = Limits {
            max_rooms: args.max_rooms.unwrap_or(10_000),
            // A room's slots are u16 and slot 65535 is never given.
            max_participants: args
                .max_participants
                .unwrap_or(10_000)
                .min(usize::from(u16::MAX) - 1),
            max_tracks: args.max_tracks.unwrap_or(32),
            rule_changes_per_sec: args.max_rule_changes.unwrap_or(20).max(1),
            latch_timeout: std::time::Duration::from_secs(args.latch_timeout.unwrap_or(30).max(1)),
            event_history: args.event_history.unwrap_or(10_000).clamp(16, 1_000_000),
        };
        let media = args
            .media
            .unwrap_or_else(|| "0.0.0.0:40000".parse().expect("valid literal"));
        let fleet = fleet_settings(&args, media, args.advertise)?;
        let worker_priority = match args.worker_priority.as_deref() {
            None => crate::io::WorkerPriority::default(),
            Some(p) => p
                .parse()
                .map_err(|e| anyhow::anyhow!("--worker-priority {e}"))?,
        };
        let busy_poll = args.busy_poll.unwrap_or(false);
        let idle_poll = args.idle_poll_us.map_or(
            crate::io::DEFAULT_IDLE_SPIN,
            std::time::Duration::from_micros,
        );
        let fifo = matches!(worker_priority, crate::io::WorkerPriority::Fifo(_));
        if fifo && (busy_poll || !idle_poll.is_zero()) {
            // A real-time worker that never sleeps starves the normal tasks of its core (the
            // kernel's per-core work included) until the kernel stops it for tens of
            // milliseconds to catch them up: measured 35-63 ms stalls with loss (OPERATIONS.md).
            bail!(
                "--worker-priority fifo cannot be combined with --busy-poll true or \
                 --idle-poll-us above 0: a polling real-time worker is stopped by the kernel for \
                 tens of milliseconds at a time; choose one"
            );
        }
        Ok(Config {
            media,
            control,
            data_dir: args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            workers,
            backend,
            control_tokens,
            token_sources,
            ops: args.ops,
            webhook: match &args.webhook {
                None => None,
                Some(url) => Some(crate::control::webhook::WebhookConfig::new(
                    url,
                    args.webhook_secret.as_deref().unwrap_or(""),
                )?),
            },
            advertise: args.advertise,
            geoip: args.geoip,
            pin: args.pin.unwrap_or(true),
            socket_buffer: args.socket_buffer.unwrap_or(4 << 20),
            recv_batch: args.recv_batch.unwrap_or(64).clamp(1, 1024),
            send_batch: args.send_batch.unwrap_or(1024).clamp(1, 4096),
            ring_buffers: match args.ring_buffers {
                Some(n) if !(64..=32768).contains(&n) || !n.is_power_of_two() => {
                    bail!("--ring-buffers must be a power of two from 64 to 32768")
                }
                n => n.unwrap_or(1024),
            },
            gso: args.gso.unwrap_or(true),
            busy_poll,
            handoff_min_members: args
                .handoff_min_members
                .unwrap_or(crate::io::DEFAULT_HANDOFF_MIN_MEMBERS),
            idle_poll,
            worker_priority,
            limits,
            log: args.log.unwrap_or_else(|| "info".into()),
            log_format: args.log_format.unwrap_or_default(),
            fleet,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_time_worker_may_not_poll() {
        let fifo = |busy: Option<bool>, idle: Option<u64>| ServeArgs {
            worker_priority: Some("fifo:10".into()),
            busy_poll: busy,
            idle_poll_us: idle,
            ..ServeArgs::default()
        };
        for refused in [fifo(Some(true), None), fifo(None, Some(50))] {
            let err = refused.resolve().unwrap_err().to_string();
            assert!(err.contains("cannot be combined"), "{err}");
        }
        assert!(fifo(Some(false), Some(0)).resolve().is_ok());
        let polling_normal = ServeArgs {
            busy_poll: Some(true),
            idle_poll_us: Some(50),
            ..ServeArgs::default()
        };
        assert!(polling_normal.resolve().is_ok());
    }

    #[test]
    fn defaults_need_nothing() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.media.to_string(), "0.0.0.0:40000");
        assert_eq!(c.control.to_string(), "127.0.0.1:7780");
        assert_eq!(c.backend, BackendChoice::Mmsg);
        assert!(c.workers >= 1);
    }

    #[test]
    fn flags_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "media = \"127.0.0.1:5000\"\nworkers = 3\nmax-tracks = 4\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            workers: Some(1),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.media.to_string(), "127.0.0.1:5000");
        assert_eq!(c.workers, 1);
        assert_eq!(c.limits.max_tracks, 4);
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "mediaa = \"127.0.0.1:5000\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("mediaa"), "{err:#}");
    }

    #[test]
    fn log_format_from_file_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "log-format = \"json\"\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            from_file.clone().resolve().unwrap().log_format,
            LogFormat::Json
        );
        let flag = ServeArgs {
            log_format: Some(LogFormat::Text),
            ..from_file
        };
        assert_eq!(flag.resolve().unwrap().log_format, LogFormat::Text);
        assert_eq!(
            ServeArgs::default().resolve().unwrap().log_format,
            LogFormat::Text
        );
        std::fs::write(&path, "log-format = \"xml\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("xml"), "{err:#}");
    }

    #[test]
    fn fleet_flags() {
        assert_eq!(ServeArgs::default().resolve().unwrap().fleet, None);
        let lone = ServeArgs {
            region: Some("CN".into()),
            ..Default::default()
        };
        assert!(lone.resolve().is_err(), "--region without --etcd");
        let args = ServeArgs {
            etcd: Some("http://127.0.0.1:2379, http://127.0.0.2:2379".into()),
            node: Some("a-1".into()),
            region: Some("HK".into()),
            media: Some("10.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        };
        let f = args.clone().resolve().unwrap().fleet.unwrap();
        assert_eq!(f.endpoints.len(), 2);
        assert_eq!(f.node, "a-1");
        assert_eq!(f.region, "HK");
        assert_eq!(f.trunk.to_string(), "10.0.0.1:40001");
        let bad = ServeArgs {
            node: Some("a/b".into()),
            ..args.clone()
        };
        assert!(bad.resolve().is_err());
        let bad = ServeArgs {
            region: Some("cn".into()),
            ..args
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn public_control_needs_token() {
        let args = ServeArgs {
            control: Some("0.0.0.0:7780".parse().unwrap()),
            ..Default::default()
        };
        assert!(args.clone().resolve().is_err());
        let ok = ServeArgs {
            control_token: Some("secret".into()),
            ..args
        };
        assert!(ok.resolve().is_ok());
    }
}
