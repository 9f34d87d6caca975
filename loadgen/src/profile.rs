//! Media profiles and their pacers: when each stream sends a frame, how many packets the frame
//! has and how big they are. Pure: the caller gives times, the pacer never reads a clock.

use serde::{Deserialize, Serialize};

use crate::rtp;

/// What a stream carries. Screen share is video to the relay (its track kind is "video").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Opus-like voice.
    Audio,
    /// Camera video.
    Video,
    /// Screen share: few small frames, rare large bursts.
    Screen,
}

impl Kind {
    /// All kinds, in report order.
    pub const ALL: [Self; 3] = [Self::Audio, Self::Video, Self::Screen];

    /// The track kind the relay knows.
    pub fn media(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video | Self::Screen => "video",
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Screen => "screen",
        }
    }

    /// RTP payload type we put on it (dynamic range, RFC 3551 §6).
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Audio => 111,
            Self::Video => 96,
            Self::Screen => 97,
        }
    }

    /// RTP clock rate: 48 kHz for Opus (RFC 7587 §4.1), 90 kHz for video (RFC 6184 §8.2.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Audio => 48_000,
            Self::Video | Self::Screen => 90_000,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How one stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// What the stream carries.
    pub kind: Kind,
    /// Frame interval in ns (audio: packet time; video: 1 s / fps).
    pub frame_ns: u64,
    /// Audio: smallest and largest packet, bytes of RTP. Video: the range the stream's
    /// packet size is drawn from.
    pub len: (u16, u16),
    /// Video: target bitrate in bit/s, keyframes included.
    pub bitrate: u64,
    /// Video: a keyframe every this many ns (0: none after the first).
    pub keyframe_ns: u64,
    /// Video: keyframe size as a multiple of a delta frame.
    pub keyframe_mult: f64,
    /// Audio: discontinuous transmission (silence suppression).
    pub dtx: bool,
}

impl Profile {
    /// Opus-like: 20 ms frames, 50 packets/s, 60 to 160 B.
    pub fn audio() -> Self {
        Self {
            kind: Kind::Audio,
            frame_ns: 20_000_000,
            len: (60, 160),
            bitrate: 0,
            keyframe_ns: 0,
            keyframe_mult: 1.0,
            dtx: false,
        }
    }

    /// Camera video: `fps` frames/s at `bitrate` bit/s, keyframe every 4 s at 5x.
    pub fn video(fps: u32, bitrate: u64) -> Self {
        Self {
            kind: Kind::Video,
            frame_ns: 1_000_000_000 / u64::from(fps.max(1)),
            len: (1100, 1200),
            bitrate,
            keyframe_ns: 4_000_000_000,
            keyframe_mult: 5.0,
            dtx: false,
        }
    }

    /// Screen share: 5 frames/s of small deltas and a large burst (a slide change) every 10 s.
    pub fn screen() -> Self {
        Self {
            kind: Kind::Screen,
            frame_ns: 200_000_000,
            len: (1100, 1200),
            bitrate: 200_000,
            keyframe_ns: 10_000_000_000,
            keyframe_mult: 40.0,
            dtx: false,
        }
    }

    /// The default profile of a kind.
    pub fn of(kind: Kind) -> Self {
        match kind {
            Kind::Audio => Self::audio(),
            Kind::Video => Self::video(30, 1_000_000),
            Kind::Screen => Self::screen(),
        }
    }

    /// Packets per second this profile sends on average (measured by running its pacer).
    pub fn nominal_pps(&self) -> f64 {
        const SPAN_NS: u64 = 60_000_000_000;
        let mut pacer = Pacer::new(self, 1, 0);
        let mut packets = 0u64;
        while pacer.due() < SPAN_NS {
            packets += u64::from(pacer.next_frame().count);
        }
        packets as f64 * 1e9 / SPAN_NS as f64
    }

    /// This profile sending `m` times as many packets: audio shortens its packet time, video
    /// raises its bitrate.
    pub fn scaled(&self, m: f64) -> Self {
        let m = m.max(1e-6);
        let mut p = *self;
        match p.kind {
            Kind::Audio => p.frame_ns = ((p.frame_ns as f64 / m) as u64).max(1_000),
            Kind::Video | Kind::Screen => p.bitrate = ((p.bitrate as f64 * m) as u64).max(8_000),
        }
        p
    }

    /// This profile scaled to send about `pps` packets per second.
    pub fn with_pps(&self, pps: f64) -> Self {
        let mut p = *self;
        // Video packet counts round up per frame, so correct twice.
        for _ in 0..3 {
            let now = p.nominal_pps();
            if now <= 0.0 {
                break;
            }
            p = p.scaled(pps / now);
        }
        p
    }
}

/// One frame to send: `count` packets back to back, all of `len` bytes but the last, which has
/// `last_len` bytes and (for video) the marker bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// When it is due, ns since the run's start.
    pub due_ns: u64,
    /// RTP clock ticks since the stream's start (before the random base is added).
    pub rtp_ticks: u64,
    /// Packets in the frame.
    pub count: u16,
    /// Length of each packet but the last.
    pub len: u16,
    /// Length of the last packet.
    pub last_len: u16,
    /// Whether the last packet carries the marker bit (RFC 3551 §4.1 for audio talk spurts is
    /// not modelled; video marks the end of a frame, RFC 6184 §5.1).
    pub marker: bool,
}

/// Generates the frames of one stream.
#[derive(Debug, Clone)]
pub struct Pacer {
    profile: Profile,
    rng: Rng,
    start_ns: u64,
    next_ns: u64,
    packet_len: u16,
    next_key_ns: u64,
    talking: bool,
    spurt_until_ns: u64,
}

impl Pacer {
    /// A pacer whose first frame is due at `start_ns`; `seed` varies sizes between streams.
    pub fn new(profile: &Profile, seed: u64, start_ns: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (lo, hi) = profile.len;
        let packet_len = rng.range(u64::from(lo), u64::from(hi.max(lo))) as u16;
        // Streams are met mid-life: each one's periodic keyframes fall at a phase of its own, so
        // that the keyframes of many streams started together are not all sent at once.
        let key_phase = if profile.keyframe_ns == 0 {
            0
        } else {
            rng.range(0, profile.keyframe_ns - 1)
        };
        Self {
            profile: *profile,
            rng,
            start_ns,
            next_ns: start_ns,
            packet_len,
            next_key_ns: start_ns + key_phase,
            talking: true,
            spurt_until_ns: start_ns,
        }
    }

    /// When the next frame is due.
    pub fn due(&self) -> u64 {
        self.next_ns
    }

    /// The frame due at `due()`; advances to the next one.
    pub fn next_frame(&mut self) -> Frame {
        let due_ns = self.next_ns;
        let p = &self.profile;
        let rtp_ticks =
            (due_ns - self.start_ns) as u128 * u128::from(p.kind.clock_rate()) / 1_000_000_000;
        let rtp_ticks = rtp_ticks as u64;
        match p.kind {
            Kind::Audio => self.audio_frame(due_ns, rtp_ticks),
            Kind::Video | Kind::Screen => self.video_frame(due_ns, rtp_ticks),
        }
    }

    /// Skips frames due before `now_ns` (a sender that was not allowed to send yet).
    pub fn skip_to(&mut self, now_ns: u64) {
        while self.next_ns < now_ns {
            self.next_frame();
        }
    }

    fn audio_frame(&mut self, due_ns: u64, rtp_ticks: u64) -> Frame {
        let p = self.profile;
        if p.dtx && due_ns >= self.spurt_until_ns {
            // Talk spurts and pauses of 0.5 to 3 s each.
            self.talking = !self.talking;
            self.spurt_until_ns = due_ns + self.rng.range(500, 3_000) * 1_000_000;
        }
        let (len, step) = if self.talking || !p.dtx {
            let len = self
                .rng
                .range(u64::from(p.len.0), u64::from(p.len.1.max(p.len.0)));
            (len as u16, p.frame_ns)
        } else {
            // Opus DTX: about one small frame every 400 ms during silence.
            (
                rtp::MIN_LEN as u16,
                (p.frame_ns * 20)
                    .min(self.spurt_until_ns - due_ns)
                    .max(p.frame_ns),
            )
        };
        self.next_ns = due_ns + step;
        Frame {
            due_ns,
            rtp_ticks,
            count: 1,
            len,
            last_len: len,
            marker: false,
        }
    }

    fn video_frame(&mut self, due_ns: u64, rtp_ticks: u64) -> Frame {
        let p = self.profile;
        self.next_ns = due_ns + p.frame_ns;
        let per_s = 1e9 / p.frame_ns as f64;
        let avg = p.bitrate as f64 / 8.0 / per_s;
        // Size delta frames so that the mean bitrate, keyframes included, is the target.
        let frames_per_key = if p.keyframe_ns == 0 {
            f64::INFINITY
        } else {
            (p.keyframe_ns as f64 / p.frame_ns as f64).max(1.0)
        };
        let delta = if frames_per_key.is_finite() {
            avg * frames_per_key / (frames_per_key - 1.0 + p.keyframe_mult)
        } else {
            avg
        };
        let mut size = delta * (0.75 + 0.5 * self.rng.unit());
        if due_ns >= self.next_key_ns {
            size = delta * p.keyframe_mult;
            self.next_key_ns = if p.keyframe_ns == 0 {
                u64::MAX
            } else {
                due_ns + p.keyframe_ns
            };
        }
        let size = (size as u64).max(rtp::MIN_LEN as u64);
        let len = u64::from(self.packet_len.max(rtp::MIN_LEN as u16));
        let count = size.div_ceil(len).clamp(1, u64::from(MAX_FRAME_PACKETS));
        let last = (size - (count - 1) * len).clamp(rtp::MIN_LEN as u64, len);
        Frame {
            due_ns,
            rtp_ticks,
            count: count as u16,
            len: len as u16,
            last_len: last as u16,
            marker: true,
        }
    }
}

/// A small, fast, seeded generator (xorshift64*); sizes need variety, not quality.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and zero is fine.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A frame never has more packets than this (a 1.5 MB keyframe).
const MAX_FRAME_PACKETS: u16 = 1_200;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(profile: &Profile, secs: u64) -> (u64, u64, Vec<Frame>) {
        let mut pacer = Pacer::new(profile, 9, 1_000);
        let (mut packets, mut bytes, mut frames) = (0, 0, Vec::new());
        while pacer.due() < 1_000 + secs * 1_000_000_000 {
            let f = pacer.next_frame();
            packets += u64::from(f.count);
            bytes += u64::from(f.count - 1) * u64::from(f.len) + u64::from(f.last_len);
            frames.push(f);
        }
        (packets, bytes, frames)
    }

    #[test]
    fn audio_sends_50_packets_per_second() {
        let (packets, bytes, frames) = run(&Profile::audio(), 10);
        assert_eq!(packets, 500);
        assert!(
            frames
                .iter()
                .all(|f| (60..=160).contains(&f.len) && f.count == 1)
        );
        let mean = bytes / packets;
        assert!((90..=130).contains(&mean), "mean {mean}");
        // 20 ms at 48 kHz is 960 ticks.
        assert_eq!(frames[1].rtp_ticks - frames[0].rtp_ticks, 960);
    }

    #[test]
    fn audio_dtx_sends_less() {
        let p = Profile {
            dtx: true,
            ..Profile::audio()
        };
        let (packets, _, frames) = run(&p, 60);
        assert!(packets < 3_000 * 8 / 10 && packets > 3_000 / 4, "{packets}");
        assert!(frames.iter().any(|f| usize::from(f.len) == rtp::MIN_LEN));
    }

    #[test]
    fn video_meets_frame_rate_and_bitrate() {
        for fps in [15, 30] {
            let p = Profile::video(fps, 1_200_000);
            let (_, bytes, frames) = run(&p, 20);
            assert!((frames.len() as u32).abs_diff(20 * fps) <= 1);
            let bps = bytes * 8 / 20;
            assert!(
                (1_080_000..=1_320_000).contains(&bps),
                "{fps} fps: {bps} bit/s"
            );
            for f in &frames {
                assert!((1100..=1200).contains(&f.len));
                assert!(f.last_len <= f.len && f.marker);
            }
            // Keyframes every 4 s are several times larger than the median frame.
            let max = frames.iter().map(|f| f.count).max().unwrap();
            let mut counts: Vec<_> = frames.iter().map(|f| f.count).collect();
            counts.sort_unstable();
            assert!(max >= 3 * counts[counts.len() / 2], "max {max}");
            assert_eq!(frames.iter().filter(|f| f.count == max).count(), 5);
        }
    }

    #[test]
    fn screen_share_has_rare_large_bursts() {
        let (_, _, frames) = run(&Profile::screen(), 30);
        assert_eq!(frames.len(), 150);
        let big: Vec<_> = frames.iter().filter(|f| f.count > 20).collect();
        assert_eq!(big.len(), 3);
    }

    #[test]
    fn scaling_reaches_the_requested_rate() {
        for p in [
            Profile::audio(),
            Profile::video(30, 1_000_000),
            Profile::screen(),
        ] {
            let q = p.with_pps(400.0);
            let got = q.nominal_pps();
            assert!((360.0..=440.0).contains(&got), "{:?}: {got}", p.kind);
        }
    }

    #[test]
    fn keyframes_of_streams_started_together_are_spread() {
        let p = Profile::video(30, 1_200_000);
        let first_key = |seed| {
            let mut pacer = Pacer::new(&p, seed, 0);
            (0..200)
                .map(|_| pacer.next_frame())
                .find(|f| f.count >= 20)
                .unwrap()
                .due_ns
        };
        let mut at: Vec<u64> = (1..=20).map(first_key).collect();
        at.sort_unstable();
        at.dedup();
        assert!(at.len() >= 15, "{at:?}");
        assert!(at.iter().all(|&t| t < 4_000_000_000));
    }

    #[test]
    fn skip_to_drops_missed_frames() {
        let mut pacer = Pacer::new(&Profile::audio(), 1, 0);
        pacer.skip_to(1_000_000_000);
        assert_eq!(pacer.due(), 1_000_000_000);
        assert_eq!(pacer.next_frame().rtp_ticks, 48_000);
    }
}
