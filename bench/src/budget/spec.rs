//! `bench/budgets.toml`: the scenarios and their budgets.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// How the knee search steps.
    pub search: Search,
    /// Scenarios, run in order.
    pub scenario: Vec<ScenarioSpec>,
    /// Knee egress of one scenario against another's (GSO on/off, one backend against the other).
    #[serde(default)]
    pub compare: Vec<Compare>,
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
    /// The budgets.
    pub budget: Budget,
}

/// Budgets of one scenario. Ratios are to floors measured in the same run.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
        if !(s.step_seconds > 0.0 && s.step_factor > 1.0 && s.max_steps > 0 && s.loss_limit > 0.0) {
            bail!("search: step_seconds > 0, step_factor > 1, max_steps > 0, loss_limit > 0");
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
