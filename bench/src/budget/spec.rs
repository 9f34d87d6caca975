//! `bench/budgets.toml`: the scenarios and their budgets.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// How the knee search steps.
    pub search: Search,
    /// Scenarios, run in order (a file may hold only side-by-side or webinar runs).
    #[serde(default)]
    pub scenario: Vec<ScenarioSpec>,
    /// Knee egress of one scenario against another's (GSO on/off, one backend against the other).
    #[serde(default)]
    pub compare: Vec<Compare>,
    /// The relay and rtpengine at the same offered rates, point by point.
    #[serde(default)]
    pub side_by_side: Vec<SideBySide>,
    /// One publisher, listeners joining in bursts through the control API.
    #[serde(default)]
    pub webinar: Vec<WebinarSpec>,
}

/// The relay and rtpengine on the same core at the same offered rates, alternating point by
/// point (the host's speed drifts; one whole sweep after the other would compare two hosts).
/// Calls of two, one sender each, every packet read by loadgen.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SideBySide {
    /// Name used in tables and JSON.
    pub name: String,
    /// What it stands for, one line.
    pub about: String,
    /// Calls (rooms of two); one participant of each sends.
    pub calls: u32,
    /// RTP length of every packet, bytes.
    pub packet_len: u16,
    /// Offered packets per second of the first step.
    pub rate: f64,
    /// Each step offers this many times the previous one (finer than the knee search's, so
    /// that the comparison sees more rates).
    pub step_factor: f64,
    /// Offered rate of the smoke run.
    pub smoke_rate: f64,
    /// Relay flags beyond the runner's own.
    #[serde(default)]
    pub relay_args: Vec<String>,
    /// loadgen polls without sleeping (see [`ScenarioSpec::loadgen_spin`]).
    #[serde(default)]
    pub loadgen_spin: bool,
    /// The checks.
    pub budget: SideBySideBudget,
}

/// Checks of a side-by-side run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SideBySideBudget {
    /// At every offered rate up to rtpengine's latency-bounded knee, the relay's added p50 and
    /// p99 are at most rtpengine's.
    pub latency_le_rtpengine: bool,
    /// The relay's latency-bounded knee at least this many times rtpengine's.
    pub knee_vs_rtpengine: f64,
    /// A window at 80% of the relay's latency-bounded knee: loss at most this share.
    pub loss_at_80: f64,
    /// The same window: added p99 at most this, µs.
    pub p99_added_at_80_us: f64,
}

impl SideBySide {
    /// The scenario loadgen plays at every point.
    pub fn scenario(&self) -> ScenarioSpec {
        ScenarioSpec {
            name: self.name.clone(),
            about: self.about.clone(),
            media: Media::Audio,
            rooms: self.calls,
            size: 2,
            senders: 1,
            sinks: 0,
            step: Step::Rate,
            rate: Some(self.rate),
            video_fps: None,
            video_bitrate: None,
            audio_len: Some(self.packet_len),
            smoke_mult: self.smoke_rate / self.rate,
            rtpengine: true,
            relay_args: self.relay_args.clone(),
            loadgen_spin: self.loadgen_spin,
            webrtc: false,
            budget: Budget::default(),
        }
    }
}

/// A webinar: one publisher with audio and video in one room; listeners join in bursts through
/// the control API while it sends (loadgen's webinar).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebinarSpec {
    /// Name used in tables and JSON.
    pub name: String,
    /// What it stands for, one line.
    pub about: String,
    /// Listeners.
    pub listeners: u32,
    /// Joins per second.
    pub join_rate: f64,
    /// Listeners per burst.
    pub burst: u32,
    /// API connections making a burst's joins at once.
    pub connections: usize,
    /// Listeners loadgen reads (the rest are registered and never read).
    pub read: u32,
    /// Seconds of sending (the bursts take listeners / join_rate of them at least).
    pub seconds: f64,
    /// Video frames per second and bitrate of the publisher.
    pub video_fps: u32,
    /// Video bitrate, bit/s.
    pub video_bitrate: u64,
    /// Listeners and seconds of the smoke run.
    pub smoke_listeners: u32,
    /// Seconds of the smoke run.
    pub smoke_seconds: f64,
    /// Relay flags beyond the runner's own (`--max-participants` at least the listeners).
    #[serde(default)]
    pub relay_args: Vec<String>,
    /// The checks.
    pub budget: WebinarBudget,
}

/// Checks of a webinar run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebinarBudget {
    /// Every listener joined before the end of the run.
    pub all_joined: bool,
    /// p99 of the join calls, ms, at most.
    pub join_p99_ms: f64,
    /// p50 of the last burst's joins over the first burst's, at most (a join into a large room
    /// costs at most this many times a join into a small one).
    pub join_growth: f64,
    /// Loss at the listeners loadgen reads, at most this share.
    pub loss: f64,
    /// p99 of the media's one-way latency at the read listeners, µs, at most.
    pub media_p99_us: f64,
}

/// A ratio of two scenarios' knee egress.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// What is compared, one line.
    pub name: String,
    /// The numerator's scenario.
    pub scenario: String,
    /// The denominator's scenario.
    pub baseline: String,
    /// The ratio must be at least this; absent: reported, not judged.
    pub at_least: Option<f64>,
}

/// Knee search settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Seconds of sending per step.
    pub step_seconds: f64,
    /// Each step offers this many times the previous one.
    pub step_factor: f64,
    /// Steps at most (before the one refining step).
    pub max_steps: u32,
    /// Loss share under which a step passes (0.001 = 0.1%).
    pub loss_limit: f64,
    /// Seconds of sending per smoke run.
    pub smoke_seconds: f64,
    /// Steps between the last pass and the first failure, each halving the gap (geometrically).
    #[serde(default = "default_refine_steps")]
    pub refine_steps: u32,
    /// Added p99 (the system's p99 minus the direct path's at the same load), µs, above which
    /// a step fails: the knee is the highest load with less than `loss_limit` loss and at most
    /// this added p99.
    pub p99_added_limit_us: f64,
}

fn default_refine_steps() -> u32 {
    2
}

/// How the offered load grows from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Scale the packets per second of the same rooms.
    Rate,
    /// Scale the number of rooms (each keeps its own pacing, e.g. video frames).
    Rooms,
}

/// Media a scenario's senders send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// loadgen's audio profile.
    Audio,
    /// loadgen's video profile.
    Video,
}

/// One scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Name used in tables and JSON.
    pub name: String,
    /// What it stands for, one line.
    pub about: String,
    /// Media of the senders.
    pub media: Media,
    /// Rooms at load multiplier 1.
    pub rooms: u32,
    /// Participants per room, senders included.
    pub size: u32,
    /// Senders per room (the first participants).
    pub senders: u32,
    /// Receivers per room that are sinks: sockets nobody reads, registered with the relay by
    /// fixed address (the kernel fills and drops them). loadgen plays and reads the others.
    pub sinks: u32,
    /// How the load grows.
    pub step: Step,
    /// Offered packets per second of all senders at multiplier 1 (`step = "rate"`); absent:
    /// the profile's own pacing.
    pub rate: Option<f64>,
    /// Video frames per second (`media = "video"`).
    pub video_fps: Option<u32>,
    /// Video bitrate, bit/s (`media = "video"`).
    pub video_bitrate: Option<u64>,
    /// RTP length of every audio packet, bytes (absent: loadgen's 60 to 160).
    #[serde(default)]
    pub audio_len: Option<u16>,
    /// Load multiplier of the smoke run.
    pub smoke_mult: f64,
    /// Compare with rtpengine (rtpengine carries audio only).
    pub rtpengine: bool,
    /// Relay flags of this scenario beyond the runner's own (`--backend io_uring`, `--gso false`,
    /// `--busy-poll true`). Each scenario starts a fresh relay.
    #[serde(default)]
    pub relay_args: Vec<String>,
    /// loadgen polls without sleeping (relay, direct path and rtpengine alike), so no read
    /// receiver needs a wake-up across cores.
    #[serde(default)]
    pub loadgen_spin: bool,
    /// Every participant is a WebRTC leg (`loadgen::webrtc`: publish or subscribe exchange,
    /// ICE with USE-CANDIDATE, DTLS with dimpl, SRTP). loadgen then plays the sinks too:
    /// connected like the others, never read. The direct path stays plain (the latency floor).
    #[serde(default)]
    pub webrtc: bool,
    /// The budgets.
    pub budget: Budget,
}

/// Budgets of one scenario. Ratios are to floors measured in the same run.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Egress at the knee, at least this share of the raw kernel send rate to as many sockets.
    pub egress_vs_blast: f64,
    /// Added p50 at 50% of the knee, µs, at most.
    pub p50_added_us: f64,
    /// Added p50 at 50% of the knee minus one loopback hop (the relay path crosses the machine
    /// once more than the direct path), µs, at most.
    pub p50_over_hop_us: Option<f64>,
    /// Added p99 at 80% of the knee, µs, at most.
    pub p99_added_us: f64,
    /// Added p99.9 at 50% of the knee, µs, at most.
    pub p999_added_us: f64,
    /// Knee egress at least this many times rtpengine's in the same run.
    pub egress_vs_rtpengine: Option<f64>,
    /// Added p50 at 50% of the knee at most this share of rtpengine's in the same run.
    pub p50_vs_rtpengine: Option<f64>,
    /// CPU per forwarded packet at 80% of the knee, at most this many times the blaster's CPU
    /// per sent packet.
    pub cpu_vs_blast: f64,
}

impl ScenarioSpec {
    /// Receivers of each packet.
    pub fn fanout(&self) -> u32 {
        self.size - 1
    }

    /// Participants per room that loadgen plays (senders and read receivers).
    pub fn played(&self) -> u32 {
        self.size - self.sinks
    }
}

impl Budgets {
    /// Parses and checks the file's text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let b: Self = toml::from_str(text)?;
        let s = &b.search;
        if !(s.step_seconds > 0.0
            && s.step_factor > 1.0
            && s.max_steps > 0
            && s.loss_limit > 0.0
            && s.p99_added_limit_us > 0.0)
        {
            bail!(
                "search: step_seconds > 0, step_factor > 1, max_steps > 0, loss_limit > 0, \
                 p99_added_limit_us > 0"
            );
        }
        for sb in &b.side_by_side {
            if sb.calls == 0 || !(sb.rate > 0.0 && sb.smoke_rate > 0.0 && sb.step_factor > 1.0) {
                bail!(
                    "{}: calls >= 1, rate > 0, smoke_rate > 0, step_factor > 1",
                    sb.name
                );
            }
        }
        for w in &b.webinar {
            if w.listeners == 0
                || w.burst == 0
                || w.join_rate.is_nan()
                || w.join_rate <= 0.0
                || w.smoke_listeners == 0
            {
                bail!(
                    "{}: listeners, burst, join_rate and smoke_listeners > 0",
                    w.name
                );
            }
        }
        for sc in &b.scenario {
            // loadgen must read at least one receiver of every packet.
            if sc.senders == 0 || sc.senders > sc.size || sc.sinks + 2 > sc.size {
                bail!(
                    "{}: need 1 <= senders <= size and sinks <= size - 2",
                    sc.name
                );
            }
            if sc.step == Step::Rate && sc.rate.is_none() {
                bail!("{}: step = \"rate\" needs a rate", sc.name);
            }
            if sc.rtpengine && sc.media != Media::Audio {
                bail!("{}: rtpengine comparisons carry audio only", sc.name);
            }
            let b = &sc.budget;
            if !sc.rtpengine && (b.egress_vs_rtpengine.is_some() || b.p50_vs_rtpengine.is_some()) {
                bail!(
                    "{}: budgets against rtpengine need rtpengine = true",
                    sc.name
                );
            }
        }
        for c in &b.compare {
            for name in [&c.scenario, &c.baseline] {
                if !b.scenario.iter().any(|s| &s.name == name) {
                    bail!("compare {}: no scenario named {name}", c.name);
                }
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_budgets_parse() {
        let text = include_str!("../../budgets.toml");
        let b = Budgets::from_toml(text).unwrap();
        assert!(b.scenario.len() >= 3);
        let f = b
            .scenario
            .iter()
            .find(|s| s.name == "fanout16_audio")
            .unwrap();
        assert_eq!(f.fanout(), 16);
        assert!(f.sinks > f.played());
    }

    #[test]
    fn issue_12_sections_parse() {
        let b = Budgets::from_toml(include_str!("../../budgets.toml")).unwrap();
        let sb = b.side_by_side.first().unwrap();
        let sc = sb.scenario();
        assert_eq!((sc.rooms, sc.size, sc.senders, sc.sinks), (100, 2, 1, 0));
        assert_eq!(sc.audio_len, Some(200));
        assert!(b.webinar.first().unwrap().listeners >= 2000);
        assert!(b.search.p99_added_limit_us > 0.0);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let text = include_str!("../../budgets.toml").replace("sinks = 13", "sinks = 16");
        assert!(Budgets::from_toml(&text).is_err());
    }

    #[test]
    fn comparisons_name_existing_scenarios() {
        let text = include_str!("../../budgets.toml");
        let b = Budgets::from_toml(text).unwrap();
        assert!(!b.compare.is_empty());
        let bad = text.replace("baseline = \"video_burst16_nogso\"", "baseline = \"nope\"");
        assert!(bad != text && Budgets::from_toml(&bad).is_err());
    }
}
