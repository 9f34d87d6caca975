//! Command line: `loadgen --control HOST:PORT[,HOST:PORT...] [--netns NAME[,NAME...]] [--token T] [--scenario FILE] [--rooms N
//! --participants M --profile audio|video|mixed] [--fixed-address] --duration SECONDS [--json]`
//! plus tuning flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::scenario::{Addressing, Scenario, Send, Target};

/// Load generator for the relay: plays a signaling server and many RTP clients, and measures
/// loss, duplicates, reordering, jitter, latency and misdelivery.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Control address: the relay's HTTP API, or rtpengine's ng port with --target rtpengine.
    /// Several relays of a fleet: their API addresses separated by commas; every room is
    /// created once and its participants are spread over the relays, round robin.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub control: Option<String>,
    /// Network namespaces (`ip netns` names), one per control address, in the same order: each
    /// participant's socket is made in its relay's namespace and that relay's API is called
    /// from there.
    #[arg(
        long,
        value_name = "NAME[,NAME...]",
        value_delimiter = ',',
        requires = "control"
    )]
    pub netns: Vec<String>,
    /// Bearer token for the relay's control API.
    #[arg(long, value_name = "T", env = "LOADGEN_TOKEN")]
    pub token: Option<String>,
    /// Scenario file (TOML); flags given as well override it.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Number of rooms.
    #[arg(long, value_name = "N")]
    pub rooms: Option<u32>,
    /// Participants per room.
    #[arg(long, value_name = "M")]
    pub participants: Option<u32>,
    /// What each participant sends.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Register each client's address through the API instead of latching it with STUN.
    #[arg(long)]
    pub fixed_address: bool,
    /// Every participant is a WebRTC leg: publish or subscribe exchange, ICE with
    /// USE-CANDIDATE, DTLS (dimpl) and SRTP; one sender a room.
    #[arg(long)]
    pub webrtc: bool,
    /// The last N participants of each room are connected but never read (sinks).
    #[arg(long, value_name = "N")]
    pub unread: Option<u32>,
    /// Seconds of sending.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where the media goes.
    #[arg(long, value_enum, default_value = "relay")]
    pub target: TargetArg,
    /// Total packets per second to offer, all streams together.
    #[arg(long, value_name = "PPS")]
    pub rate: Option<f64>,
    /// Packets per second per stream.
    #[arg(long, value_name = "PPS")]
    pub stream_rate: Option<f64>,
    /// Client threads.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Client threads poll without sleeping (no wake-ups; each takes a whole core).
    #[arg(long)]
    pub spin: bool,
    /// Seconds over which participants join at the start.
    #[arg(long, value_name = "SECONDS")]
    pub ramp_up: Option<f64>,
    /// Participants leaving (and rejoining) per minute.
    #[arg(long, value_name = "N")]
    pub leaves_per_min: Option<f64>,
    /// Drop rules added (and lifted) per minute.
    #[arg(long, value_name = "N")]
    pub rules_per_min: Option<f64>,
    /// Milliseconds to wait for packets in flight after the last send.
    #[arg(long, value_name = "MS")]
    pub drain_ms: Option<u64>,
    /// Stop after this many packets in all.
    #[arg(long, value_name = "N")]
    pub max_packets: Option<u64>,
    /// Seed for every random choice.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Webinar: one room, one publisher with audio and video, N listeners joining in bursts
    /// through the control API while it sends (relay only).
    #[arg(long, value_name = "N")]
    pub webinar: Option<u32>,
    /// Webinar joins per second [default: 1000].
    #[arg(long, value_name = "PER_S", requires = "webinar")]
    pub join_rate: Option<f64>,
    /// Webinar listeners per burst [default: 100].
    #[arg(long, value_name = "N", requires = "webinar")]
    pub join_burst: Option<u32>,
    /// API connections that make a burst's joins at once [default: 8].
    #[arg(long, value_name = "N", requires = "webinar")]
    pub join_connections: Option<usize>,
    /// Webinar listeners whose copies loadgen reads; the others are registered and never read
    /// [default: all].
    #[arg(long, value_name = "N", requires = "webinar")]
    pub read_listeners: Option<u32>,
    /// Length of every audio packet, bytes of RTP [default: 60 to 160].
    #[arg(long, value_name = "BYTES")]
    pub audio_len: Option<u16>,
    /// Write an HDR histogram interval log of latency (µs) to FILE.
    #[arg(long, value_name = "FILE")]
    pub histogram_log: Option<PathBuf>,
}

/// `--profile`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    /// Opus-like audio.
    Audio,
    /// Camera video.
    Video,
    /// Audio and video per participant.
    Mixed,
}

/// `--target`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TargetArg {
    /// The relay's control API.
    Relay,
    /// rtpengine's ng protocol.
    Rtpengine,
    /// No relay: clients send to each other.
    Direct,
}

impl Args {
    /// The scenario these flags describe.
    pub fn scenario(&self) -> Result<Scenario> {
        let mut s = match &self.scenario {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Scenario::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => {
                if self.duration.is_none() {
                    bail!("--duration SECONDS is required");
                }
                Scenario::default()
            }
        };
        if self.scenario.is_none()
            || self.rooms.is_some()
            || self.participants.is_some()
            || self.profile.is_some()
        {
            let base = s.room.first().cloned().unwrap_or_default();
            let profile = match self.profile {
                Some(ProfileArg::Audio) => Send::Audio,
                Some(ProfileArg::Video) => Send::Video,
                Some(ProfileArg::Mixed) => Send::Mixed,
                None if self.scenario.is_some() => base.profile,
                None => Send::Audio,
            };
            let size = self.participants.map_or(base.size, |m| [m, m]);
            let rooms = self
                .rooms
                .unwrap_or(if self.scenario.is_some() { s.rooms } else { 1 });
            let u = Scenario::uniform(rooms, size[0], profile);
            s.rooms = u.rooms;
            s.room = vec![crate::scenario::RoomClass {
                size,
                ..u.room[0].clone()
            }];
        }
        s.target = match self.target {
            TargetArg::Relay => Target::Relay,
            TargetArg::Rtpengine => Target::Rtpengine,
            TargetArg::Direct => Target::Direct,
        };
        match (&self.control, s.target) {
            (Some(c), _) => s.control = c.clone(),
            (None, Target::Direct) => {}
            (None, _) if self.scenario.is_some() => {}
            (None, _) => bail!("--control HOST:PORT is required"),
        }
        if !self.netns.is_empty() {
            s.netns = self.netns.clone();
        }
        if self.token.is_some() {
            s.token = self.token.clone();
        }
        if self.webrtc {
            s.webrtc = true;
        }
        if let Some(n) = self.unread {
            s.unread = n;
        }
        if self.fixed_address {
            s.addressing = Addressing::Fixed;
        }
        if self.spin {
            s.spin = true;
        }
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        set!(duration, ramp_up, drain_ms, max_packets, seed, threads);
        if let Some(v) = self.leaves_per_min {
            s.churn.leaves_per_min = v;
        }
        if let Some(v) = self.rules_per_min {
            s.churn.rules_per_min = v;
        }
        if self.rate.is_some() {
            s.rate = self.rate;
        }
        if self.stream_rate.is_some() {
            s.stream_rate = self.stream_rate;
        }
        if let Some(len) = self.audio_len {
            for c in &mut s.room {
                c.audio_len = Some([len, len]);
            }
        }
        if let Some(n) = self.webinar {
            let mut w = s.webinar.take().unwrap_or_default();
            w.listeners = n;
            if let Some(v) = self.join_rate {
                w.join_rate = v;
            }
            if let Some(v) = self.join_burst {
                w.burst = v;
            }
            if let Some(v) = self.join_connections {
                w.connections = v;
            }
            if let Some(v) = self.read_listeners {
                w.read = v;
            }
            s.webinar = Some(w);
        }
        if s.churn.leaves_per_min > 0.0 && s.churn.rejoin_after <= 0.0 {
            s.churn.rejoin_after = 5.0;
        }
        if s.churn.rules_per_min > 0.0 && s.churn.rule_hold <= 0.0 {
            s.churn.rule_hold = 5.0;
        }
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Scenario> {
        Args::try_parse_from(args.split_whitespace())?.scenario()
    }

    #[test]
    fn contract_flags() {
        let s = parse(
            "loadgen --control 127.0.0.1:7780 --token t --rooms 5 --participants 3 --profile mixed \
             --fixed-address --duration 2 --json",
        )
        .unwrap();
        assert_eq!(s.control, "127.0.0.1:7780");
        assert_eq!(s.token.as_deref(), Some("t"));
        assert_eq!(
            (s.rooms, s.room[0].size, s.room[0].profile),
            (5, [3, 3], Send::Mixed)
        );
        assert_eq!(s.addressing, Addressing::Fixed);
        assert_eq!(s.duration, 2.0);
        assert!(
            parse("loadgen --rooms 1 --duration 2").is_err(),
            "control is required"
        );
        assert!(
            parse("loadgen --control x:1").is_err(),
            "duration is required"
        );
        assert!(parse("loadgen --target direct --duration 1 --rate 1000").is_ok());
    }

    #[test]
    fn fleet_flags() {
        let s = parse(
            "loadgen --control 10.0.0.1:7780,10.0.0.2:7780,10.0.0.3:7780 --netns na,nb,nc \
             --participants 6 --fixed-address --duration 2",
        )
        .unwrap();
        assert_eq!(
            s.controls(),
            ["10.0.0.1:7780", "10.0.0.2:7780", "10.0.0.3:7780"]
        );
        assert_eq!(s.netns, ["na", "nb", "nc"]);
        assert_eq!((s.relays(), s.fleet()), (3, true));
        let one = parse("loadgen --control 127.0.0.1:7780 --duration 2").unwrap();
        assert_eq!((one.relays(), one.fleet(), one.netns.len()), (1, false, 0));
        assert!(
            parse("loadgen --control a:1,b:1 --netns na --duration 2").is_err(),
            "one namespace per relay"
        );
        assert!(parse("loadgen --control a:1,,b:1 --duration 2").is_err());
        assert!(parse("loadgen --netns na --duration 2").is_err());
        assert!(parse("loadgen --control a:1,b:1 --webrtc --duration 2").is_err());
        assert!(parse("loadgen --control a:1,b:1 --ramp-up 1 --duration 2").is_err());
        assert!(parse("loadgen --target direct --control a:1,b:1 --duration 2").is_err());
    }

    #[test]
    fn webinar_flags() {
        let s = parse(
            "loadgen --control 127.0.0.1:7780 --webinar 2000 --join-rate 500 --join-burst 50 \
             --read-listeners 20 --fixed-address --duration 6 --audio-len 200",
        )
        .unwrap();
        let w = s.webinar.clone().unwrap();
        assert_eq!(
            (w.listeners, w.join_rate, w.burst, w.read),
            (2000, 500.0, 50, 20)
        );
        assert_eq!(s.room[0].audio_len, Some([200, 200]));
        let plan = s.plan();
        assert_eq!(plan.participants.len(), 2001);
        assert_eq!(plan.streams.len(), 2, "audio and video of the publisher");
        assert_eq!(plan.participants.iter().filter(|p| p.read).count(), 21);
        // 40 bursts of 50, 100 ms apart, from 0.2 s.
        let bursts: Vec<u64> = plan.events.iter().map(|(t, _)| *t).collect();
        assert_eq!(bursts.len(), 40);
        assert_eq!(bursts[0], 200_000_000);
        assert_eq!(bursts[39], 200_000_000 + 39 * 100_000_000);
        assert!(parse("loadgen --target direct --webinar 10 --duration 2").is_err());
        assert!(parse("loadgen --control x:1 --join-rate 5 --duration 2").is_err());
    }
}
