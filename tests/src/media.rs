//! Real media tools as relay clients: ffmpeg and GStreamer send and receive RTP through the
//! relay, as a conference client or a gateway would.
//!
//! Each tool runs as a child process whose output goes to files in a test's temporary
//! directory. Senders also keep a copy of every frame they encoded, so a test can decode that copy
//! as the reference and check that what the receivers decoded through the relay is the same,
//! frame for frame and bit for bit (per-frame Adler-32, as ffmpeg's `framecrc` writes it).
//!
//! The tools are required: a missing one fails the test with the package to install
//! (`tests/install-deps.sh` installs them all).

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Relay;

/// Width of every test video: small, so encoding and decoding cost little.
pub const WIDTH: usize = 320;
/// Height of every test video.
pub const HEIGHT: usize = 240;
/// Frame rate of every test video.
pub const FPS: u32 = 25;
/// Bytes of one decoded I420 (4:2:0, 8-bit) frame.
pub const I420_FRAME: usize = WIDTH * HEIGHT * 3 / 2;
/// RTP payload type the tests use for H.264 (dynamic, RFC 3551 §6).
pub const PT_H264: u8 = 96;
/// RTP payload type the tests use for Opus.
pub const PT_OPUS: u8 = 97;

/// What a sender encodes and a receiver's SDP describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264 video, packetization mode 1 (RFC 6184).
    H264,
    /// Opus audio, 48 kHz (RFC 7587).
    Opus,
}

/// Fails unless `program version_flag` runs; `package` is the Debian package that provides it.
pub fn require_tool(program: &str, version_flag: &str, package: &str) {
    let ok = Command::new(program)
        .arg(version_flag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{program}` is required by the interop tests: install Debian's {package} \
         (bash tests/install-deps.sh)"
    );
}

/// Fails unless every GStreamer element is installed; each comes with its Debian package.
pub fn require_gst_elements(elements: &[(&str, &str)]) {
    require_tool("gst-launch-1.0", "--version", "gstreamer1.0-tools");
    for (element, package) in elements {
        let ok = Command::new("gst-inspect-1.0")
            .args(["--exists", element])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "GStreamer element `{element}` is required by the interop tests: install Debian's \
             {package} (bash tests/install-deps.sh)"
        );
    }
}

/// A port P on 127.0.0.1 such that P and P + 1 were both free a moment ago: RTP tools without
/// rtcp-mux bind their RTCP socket on P + 1.
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = rtp.local_addr().expect("local addr").port();
        if port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free UDP ports on 127.0.0.1 in 100 tries");
}

/// Whether some socket on this host is bound to UDP `port` (any address), from /proc/net.
pub fn udp_bound(port: u16) -> bool {
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                // "  sl  local_address rem_address ...": local_address is HEXIP:HEXPORT.
                line.split_whitespace()
                    .nth(1)
                    .and_then(|local| local.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    == Some(port)
            })
        })
    })
}

/// Waits until UDP `port` is bound; fails after `timeout`.
pub fn wait_bound(port: u16, timeout: Duration, who: &str) {
    let deadline = Instant::now() + timeout;
    while !udp_bound(port) {
        assert!(
            Instant::now() < deadline,
            "{who} did not bind UDP port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds a participant with a fixed media address, its declared tracks, and the participants whose
/// media it receives (`None`: everyone's).
pub fn join_fixed(
    relay: &Relay,
    room: &str,
    id: &str,
    address: SocketAddr,
    tracks: &[(u32, &str)],
    subscribe: Option<&[&str]>,
) -> Value {
    let tracks: Vec<Value> = tracks
        .iter()
        .map(|(ssrc, kind)| json!({"ssrc": ssrc, "kind": kind}))
        .collect();
    let subscribe = subscribe.map_or(json!("all"), |ids| json!(ids));
    let body = json!({"address": address.to_string(), "tracks": tracks, "subscribe": subscribe});
    relay.ok(
        "PUT",
        &format!("/v1/rooms/{room}/participants/{id}"),
        Some(&body),
    )
}

/// A media tool running as a child process; killed (SIGKILL) if still running when dropped.
pub struct Tool {
    name: String,
    child: Option<Child>,
    stderr: PathBuf,
}

impl Tool {
    /// Spawns `cmd` with no standard input, its standard output and error in `dir`, named after
    /// the tool.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Self {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", cmd.get_program()));
        Self {
            name: name.to_owned(),
            child: Some(child),
            stderr,
        }
    }

    /// Waits for the tool to exit by itself; kills it and fails after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.wait_for(timeout) {
            return status;
        }
        let mut child = self.child.take().expect("tool still running");
        let state = process_state(child.id());
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} still running after {timeout:?} ({state}); its log:\n{}",
            self.name,
            self.log()
        );
    }

    /// Waits up to `timeout` for the tool to exit by itself; `None` if it still runs.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("tool still running");
        loop {
            if let Some(status) = child.try_wait().expect("wait for tool") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, on which ffmpeg and `gst-launch-1.0 -e` finish their output files, and
    /// waits for the exit status (SIGKILL and a failure after `timeout`).
    ///
    /// Once it is transcoding, ffmpeg acts on the signal only when a read returns: with its
    /// input quiet, that is when the read times out, ten seconds later. A second signal would
    /// abort the read, but also every write after it, and the end of the output would be lost.
    pub fn interrupt(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("tool still running").id();
        // SAFETY: signals our own child process, which has not been waited for yet (so the pid
        // cannot have been reused).
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        self.wait(timeout)
    }

    /// Its standard error so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The lines of its standard error that tell of trouble: decode errors, concealment,
    /// corrupt or invalid data, warnings.
    pub fn trouble(&self) -> Vec<String> {
        const WORDS: [&str; 7] = [
            "error",
            "corrupt",
            "conceal",
            "invalid",
            "non-existing",
            "missing",
            "warn",
        ];
        self.log()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                WORDS.iter().any(|w| l.contains(w))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a stuck process is doing, from /proc: its state, signal masks, and each thread's
/// wait channel.
fn process_state(pid: u32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut out: Vec<String> = status
        .lines()
        .filter(|l| {
            [
                "State:", "SigBlk:", "SigIgn:", "SigCgt:", "SigPnd:", "ShdPnd:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(str::to_owned)
        .collect();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let wchan = fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            out.push(format!("thread {} waits in {wchan}", comm.trim()));
        }
    }
    out.join("; ")
}

/// An SDP file for a receive-only client: it listens on `port` of 127.0.0.1 for one RTP stream of
/// `codec`, as the relay fans it out.
pub fn receiver_sdp(codec: Codec, port: u16) -> String {
    let media = match codec {
        Codec::H264 => format!(
            "m=video {port} RTP/AVP {PT_H264}\r\n\
             a=rtpmap:{PT_H264} H264/90000\r\n\
             a=fmtp:{PT_H264} packetization-mode=1\r\n"
        ),
        Codec::Opus => format!(
            "m=audio {port} RTP/AVP {PT_OPUS}\r\n\
             a=rtpmap:{PT_OPUS} opus/48000/2\r\n"
        ),
    };
    format!(
        "v=0\r\n\
         o=- 0 0 IN IP4 127.0.0.1\r\n\
         s=relay interop\r\n\
         c=IN IP4 127.0.0.1\r\n\
         t=0 0\r\n\
         a=recvonly\r\n\
         {media}"
    )
}

/// ffmpeg encoding `seconds` of a synthetic source in real time (`-re`) and sending it as RTP
/// with `ssrc` from 127.0.0.1:`local_port` to the relay at `to`. Every encoded frame also goes to
/// `copy` (NUT), the reference of what was sent.
///
/// ffmpeg does not multiplex RTCP: its sender reports come from `local_port + 1`, which is no
/// participant's address, so the relay drops them as `unknown_source`. They go to the relay's port
/// rather than to `to`'s port + 1, where some other socket may listen.
pub fn ffmpeg_sender(
    codec: Codec,
    to: SocketAddr,
    local_port: u16,
    ssrc: u32,
    seconds: u32,
    copy: &Path,
) -> Command {
    // ffmpeg's `ssrc` option is a signed 32-bit integer.
    let ssrc = i32::try_from(ssrc).expect("ffmpeg takes SSRCs below 2^31");
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
    ]);
    match codec {
        Codec::H264 => cmd
            .args(["-re", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={WIDTH}x{HEIGHT}:rate={FPS}"))
            .args(["-t", &seconds.to_string(), "-map", "0:v"])
            // A keyframe every second, with SPS and PPS in front of each (`dump_extra`), so a
            // decoder that starts late still finds its way in; one thread and no B-frames keep
            // the encoder simple and deterministic.
            .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-threads", "1"])
            .args(["-preset", "ultrafast", "-tune", "zerolatency"])
            .args(["-g", &FPS.to_string(), "-bsf:v", "dump_extra"]),
        Codec::Opus => cmd
            .args(["-re", "-f", "lavfi", "-i"])
            .arg("sine=frequency=440:sample_rate=48000")
            .args(["-t", &seconds.to_string(), "-map", "0:a"])
            .args(["-ac", "2", "-c:a", "libopus", "-b:a", "32k"]),
    };
    let pt = match codec {
        Codec::H264 => PT_H264,
        Codec::Opus => PT_OPUS,
    };
    let rtp = format!(
        "rtp://{}:{}?localport={local_port}&rtcpport={}",
        to.ip(),
        to.port(),
        to.port()
    );
    // The tee muxer writes the same encoded packets to the network and to the copy; a failed
    // RTP output aborts the run instead of going on with the copy alone.
    cmd.args(["-f", "tee", "-y"]).arg(format!(
        "[f=rtp:ssrc={ssrc}:payload_type={pt}:onfail=abort]{rtp}|[f=nut]{}",
        copy.display()
    ));
    cmd
}

/// A GStreamer pipeline encoding `frames` frames of a live test pattern to H.264 and sending them
/// as RTP with `ssrc` from 127.0.0.1:`local_port` to the relay at `to`. The encoded stream also
/// goes to `copy` (H.264 Annex B), the reference of what was sent.
pub fn gst_h264_sender(
    to: SocketAddr,
    local_port: u16,
    ssrc: u32,
    frames: u32,
    copy: &Path,
) -> Command {
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={frames} \
         ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} threads=1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! tee name=t \
         t. ! queue ! rtph264pay pt={PT_H264} ssrc={ssrc} config-interval=-1 \
            ! udpsink host={} port={} bind-address=127.0.0.1 bind-port={local_port} \
         t. ! queue ! filesink location={}",
        to.ip(),
        to.port(),
        copy.display()
    );
    gst_launch(&pipeline)
}

/// ffmpeg receiving the stream that `sdp` describes, decoding every frame and writing its
/// checksum to `out` (`framecrc`).
pub fn ffmpeg_receiver(sdp: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
    ])
    .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
    .arg(sdp)
    .args(["-map", "0", "-f", "framecrc", "-y"])
    .arg(out);
    cmd
}

/// A GStreamer pipeline receiving H.264 RTP on 127.0.0.1:`port` through an `rtpbin` (RTP
/// session and jitter buffer), decoding it with `avdec_h264` and writing the raw I420 frames to
/// `out`. RTCP arriving on the same port (rtcp-mux, as the relay forwards it) is not valid RTP:
/// the RTP session drops it quietly, where a bare depayloader would warn.
pub fn gst_h264_receiver(port: u16, out: &Path) -> Command {
    let pipeline = format!(
        "udpsrc address=127.0.0.1 port={port} \
           caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,\
payload={PT_H264}\" \
         ! rtpbin.recv_rtp_sink_0 rtpbin name=rtpbin \
         ! rtph264depay ! avdec_h264 \
         ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT} \
         ! filesink location={}",
        out.display()
    );
    gst_launch(&pipeline)
}

/// What a sender says when it leaves: an RTCP compound of an SR without report blocks and a BYE,
/// from `ssrc` (RFC 3550 §6.1: a compound starts with a report; §6.6: BYE comes last). ffmpeg
/// ignores RTCP datagrams shorter than an RTP header, so a BYE alone would not do.
pub fn rtcp_sr_bye(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0; 20]); // NTP and RTP timestamps, packet and octet counts
    p.extend_from_slice(&[0x81, 203, 0, 1]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// `gst-launch-1.0 -e` (EOS on SIGINT, so sinks finish their files), with GStreamer's and
/// libav's own warnings on standard error.
fn gst_launch(pipeline: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "-e"])
        .args(split_pipeline(pipeline))
        .env("GST_DEBUG", "2")
        .env("GST_DEBUG_NO_COLOR", "1");
    cmd
}

/// Splits a pipeline description into arguments as a shell would, keeping "..." together.
fn split_pipeline(pipeline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in pipeline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    args.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        args.push(word);
    }
    args
}

/// Decodes `input` with ffmpeg (`format` forces the demuxer) and returns each frame's checksum:
/// the reference that receivers are compared with.
pub fn reference_frames(input: &Path, format: Option<&str>, dir: &Path) -> Vec<u32> {
    let out = dir.join(format!(
        "{}.ref.crc",
        input.file_name().expect("file name").to_string_lossy()
    ));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
        if f == "h264" {
            cmd.args(["-framerate", &FPS.to_string()]);
        }
    }
    let status = cmd
        .arg("-i")
        .arg(input)
        .args(["-map", "0", "-f", "framecrc", "-y"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg could not decode {}",
        input.display()
    );
    framecrc(&out)
}

/// The per-frame checksums in an ffmpeg `framecrc` file, in order; empty when the file is
/// missing (the tool decoded nothing).
pub fn framecrc(path: &Path) -> Vec<u32> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    // "stream, dts, pts, duration, size, 0xADLER32", after '#' comment lines.
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let hex = l.rsplit(',').next().expect("a field").trim();
            let hex = hex.strip_prefix("0x").unwrap_or(hex);
            u32::from_str_radix(hex, 16)
                .unwrap_or_else(|_| panic!("bad framecrc line {l:?} in {}", path.display()))
        })
        .collect()
}

/// The checksums of the raw frames of `frame_len` bytes in `path`; empty when it is missing.
pub fn raw_frames(path: &Path, frame_len: usize) -> Vec<u32> {
    let bytes = fs::read(path).unwrap_or_default();
    assert_eq!(
        bytes.len() % frame_len,
        0,
        "{} holds a partial frame",
        path.display()
    );
    bytes.chunks(frame_len).map(adler32).collect()
}

/// Adler-32 (RFC 1950 §8.2) started from 0 rather than 1, as ffmpeg's `framecrc` computes it.
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (0u32, 0u32);
    // 5552 bytes is the most that can be summed before b overflows 32 bits (zlib's NMAX).
    for chunk in bytes.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// How many of `got` match `sent` in order: a frame may be lost on the way, but none may be
/// altered, repeated or reordered.
pub fn matched_in_order(sent: &[u32], got: &[u32]) -> usize {
    let mut next = 0;
    let mut matched = 0;
    for frame in got {
        if let Some(i) = sent[next..].iter().position(|s| s == frame) {
            next += i + 1;
            matched += 1;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_known_values() {
        // RFC 1950's Adler-32 of "Wikipedia" is 0x11E60398; started from 0 instead of 1, a is
        // one less and b is one less per byte.
        let from_one = 0x11e6_0398u32;
        let n = "Wikipedia".len() as u32;
        let want = (((from_one >> 16) - n) << 16) | ((from_one & 0xffff) - 1);
        assert_eq!(adler32(b"Wikipedia"), want);
        assert_eq!(adler32(&[]), 0);
        // Long input exercises the modulo steps.
        let long = vec![0xffu8; 100_000];
        let (mut a, mut b) = (0u64, 0u64);
        for &x in &long {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(adler32(&long), ((b << 16) | a) as u32);
    }

    #[test]
    fn in_order_matching_allows_loss_only() {
        assert_eq!(matched_in_order(&[1, 2, 3, 4], &[1, 2, 3, 4]), 4);
        assert_eq!(matched_in_order(&[1, 2, 3, 4], &[1, 3, 4]), 3);
        assert_eq!(matched_in_order(&[1, 2, 3, 4], &[2, 1]), 1);
        assert_eq!(matched_in_order(&[1, 2, 3, 4], &[9, 1, 2]), 2);
        assert_eq!(matched_in_order(&[1, 2], &[]), 0);
    }

    #[test]
    fn pipelines_split_like_a_shell() {
        assert_eq!(
            split_pipeline("a b=1  caps=\"x, y\" ! c"),
            vec!["a", "b=1", "caps=x, y", "!", "c"]
        );
    }

    #[test]
    fn proc_net_udp_sees_a_bound_port() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(udp_bound(sock.local_addr().unwrap().port()));
    }
}
