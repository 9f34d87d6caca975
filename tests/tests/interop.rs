//! Interop with real media stacks: ffmpeg and GStreamer send H.264 and Opus as RTP through the
//! relay, and ffmpeg and GStreamer receivers decode what it fans out.
//!
//! Each test is one room on its own relay. A sender is a send-only participant with a fixed
//! address (the tool's local port) and the SSRC the tool uses declared as its track; receivers are
//! receive-only participants with fixed addresses (the ports in their SDP or pipeline), subscribed
//! to the sender. Receivers start first; the sender runs a few seconds of real-time media to
//! completion. Each receiver must then have decoded at least 90% of the frames sent, identical bit
//! for bit to the reference decode of the sender's own copy of what it encoded, with no decode
//! error in its log.
//!
//! Neither tool multiplexes RTCP with RTP on one port, and the relay knows one address per
//! participant: ffmpeg's sender reports come from the port above its media port and are dropped
//! as `unknown_source`. Without a BYE, an ffmpeg receiver would wait ten seconds for more. So when
//! a sender is done, the test says BYE for it (an SR and a BYE) from its media address, as a
//! sender using rtcp-mux would; the relay forwards it like any RTCP with sender information, and
//! ffmpeg receivers end on it and finish their output (RFC 3550 §6.6). GStreamer receivers get
//! SIGINT instead. Receivers never need RTCP to decode.
//!
//! The tools are required, not optional: without them these tests fail and name the package.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use e2e::Relay;
use e2e::media::{self, Codec, Tool};

/// Seconds of media each ffmpeg sender sends.
const SECONDS: u32 = 3;
/// Frames each GStreamer sender sends (three seconds).
const GST_FRAMES: u32 = 3 * media::FPS;
/// Share of the sent frames every receiver must decode, bit-exact.
const MIN_SHARE: f64 = 0.9;
/// How long a tool may take to bind its port.
const START: Duration = Duration::from_secs(10);
/// How long a sender may take to send a few seconds of real-time media.
const SEND: Duration = Duration::from_secs(30);
/// Time for the last forwarded packets to reach the receivers after the sender exits.
const DRAIN: Duration = Duration::from_millis(300);
/// How long an ffmpeg receiver may take to end after the BYE.
const BYE_END: Duration = Duration::from_secs(3);
/// How long a receiver may take to finish after SIGINT: ffmpeg with a quiet input acts on it
/// only when its read times out, after ten seconds.
const STOP: Duration = Duration::from_secs(15);

#[test]
fn h264_from_ffmpeg_decodes_bit_exact_at_two_ffmpeg_receivers() {
    require_ffmpeg();
    let t = Session::new();
    let mut rx = vec![
        t.receiver("rx1", Stack::Ffmpeg, Codec::H264, "tx"),
        t.receiver("rx2", Stack::Ffmpeg, Codec::H264, "tx"),
    ];
    let mut tx = t.sender("tx", Source::FfmpegH264, 0x0123_4567, 0x0123_4567);
    let sent = tx.finish(&t);
    t.check_delivery(&tx, &mut rx, &sent);
}

#[test]
fn opus_from_ffmpeg_decodes_bit_exact_at_two_ffmpeg_receivers() {
    require_ffmpeg();
    let t = Session::new();
    let mut rx = vec![
        t.receiver("rx1", Stack::Ffmpeg, Codec::Opus, "tx"),
        t.receiver("rx2", Stack::Ffmpeg, Codec::Opus, "tx"),
    ];
    let mut tx = t.sender("tx", Source::FfmpegOpus, 0x0765_4321, 0x0765_4321);
    // The first frame differs from the reference: the copy's container carries the encoder's
    // pre-skip (as Ogg does, RFC 7845 §5.1) and its decoder trims the first frame by it, while
    // the RTP payload format has no place for it (RFC 7587). Every other frame must match.
    let sent = tx.finish(&t);
    t.check_delivery(&tx, &mut rx, &sent);
}

#[test]
fn h264_from_ffmpeg_decodes_bit_exact_in_gstreamer() {
    require_ffmpeg();
    require_gstreamer();
    let t = Session::new();
    let mut rx = vec![
        t.receiver("gst", Stack::Gstreamer, Codec::H264, "tx"),
        t.receiver("ffmpeg", Stack::Ffmpeg, Codec::H264, "tx"),
    ];
    let mut tx = t.sender("tx", Source::FfmpegH264, 0x1122_3344, 0x1122_3344);
    let sent = tx.finish(&t);
    t.check_delivery(&tx, &mut rx, &sent);
}

#[test]
fn h264_from_gstreamer_decodes_bit_exact_in_ffmpeg() {
    require_ffmpeg();
    require_gstreamer();
    let t = Session::new();
    let mut rx = vec![
        t.receiver("ffmpeg", Stack::Ffmpeg, Codec::H264, "tx"),
        t.receiver("gst", Stack::Gstreamer, Codec::H264, "tx"),
    ];
    // GStreamer takes the whole unsigned range: an SSRC above 2^31.
    let mut tx = t.sender("tx", Source::GstH264, 0xdead_beef, 0xdead_beef);
    let sent = tx.finish(&t);
    assert_eq!(
        sent.len(),
        GST_FRAMES as usize,
        "the copy holds every frame"
    );
    t.check_delivery(&tx, &mut rx, &sent);
}

#[test]
fn an_undeclared_ssrc_gets_nothing_through() {
    require_ffmpeg();
    let t = Session::new();
    // Two identical set-ups side by side; only the second sender's SSRC differs from the one
    // declared for it.
    let mut good_rx = t.receiver("good-rx", Stack::Ffmpeg, Codec::H264, "good");
    let mut bad_rx = t.receiver("bad-rx", Stack::Ffmpeg, Codec::H264, "bad");
    let mut good = t.sender("good", Source::FfmpegH264, 0x600d, 0x600d);
    let mut bad = t.sender("bad", Source::FfmpegH264, 0x0bad, 0x0bad + 1);
    let sent = good.finish(&t);
    let bad_sent = bad.finish(&t);
    std::thread::sleep(DRAIN);

    // The control: the same set-up with the declared SSRC works.
    let (got, end) = good_rx.finish();
    t.check_frames(&good_rx, &sent, &got, end);
    assert_eq!(
        end,
        End::Bye,
        "good-rx ended on the BYE the relay forwarded"
    );
    // The undeclared SSRC: nothing decoded (not even the BYE got through), every packet
    // dropped and counted.
    let (got_bad, end) = bad_rx.finish();
    eprintln!(
        "bad-rx (ffmpeg): decoded {} frames of {} sent with an undeclared SSRC; {end:?}",
        got_bad.len(),
        bad_sent.len()
    );
    assert!(
        got_bad.is_empty(),
        "a receiver decoded {} frames from an SSRC that was never declared",
        got_bad.len()
    );
    assert_eq!(
        end,
        End::Interrupted,
        "the bad sender's BYE must not get through"
    );
    let bad_in = t.counter("bad", "packets_in");
    assert!(
        bad_in >= bad_sent.len() as u64,
        "the relay saw {bad_in} packets from the bad sender, fewer than its {} frames",
        bad_sent.len()
    );
    assert_eq!(
        t.counter("bad", "packets_dropped"),
        bad_in,
        "every packet of the undeclared SSRC is dropped"
    );
    assert!(
        t.relay
            .metric("relay_dropped_packets_total{reason=\"undeclared_ssrc\"}")
            >= bad_in
    );
    assert_eq!(
        t.relay.metric("relay_packets_out_total"),
        t.counter("good", "packets_in"),
        "only the good sender's packets go out, once each to its one receiver"
    );
}

fn require_ffmpeg() {
    media::require_tool("ffmpeg", "-version", "ffmpeg");
}

fn require_gstreamer() {
    media::require_gst_elements(&[
        ("videotestsrc", "gstreamer1.0-plugins-base"),
        ("udpsrc", "gstreamer1.0-plugins-good"),
        ("udpsink", "gstreamer1.0-plugins-good"),
        ("rtpbin", "gstreamer1.0-plugins-good"),
        ("rtph264pay", "gstreamer1.0-plugins-good"),
        ("rtph264depay", "gstreamer1.0-plugins-good"),
        ("x264enc", "gstreamer1.0-plugins-ugly"),
        ("avdec_h264", "gstreamer1.0-libav"),
    ]);
}

/// The room every test uses, one relay per test.
const ROOM: &str = "interop";

/// A relay with one room, and a directory for the tools' files.
struct Session {
    relay: Relay,
    dir: tempfile::TempDir,
}

/// A media stack on the receiving side.
#[derive(Clone, Copy, Debug)]
enum Stack {
    Ffmpeg,
    Gstreamer,
}

/// A sending tool and what it encodes.
#[derive(Clone, Copy, Debug)]
enum Source {
    FfmpegH264,
    FfmpegOpus,
    GstH264,
}

/// How a receiver ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// On its own, at the sender's BYE.
    Bye,
    /// On SIGINT.
    Interrupted,
}

struct Sender {
    name: String,
    source: Source,
    port: u16,
    ssrc: u32,
    copy: PathBuf,
    tool: Tool,
}

struct Receiver {
    name: String,
    stack: Stack,
    out: PathBuf,
    tool: Tool,
}

impl Session {
    fn new() -> Self {
        let relay = Relay::start();
        relay.room(ROOM);
        Self {
            relay,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Joins a receive-only participant subscribed to `from` and starts its tool; returns once
    /// the tool listens.
    fn receiver(&self, name: &str, stack: Stack, codec: Codec, from: &str) -> Receiver {
        let port = media::free_port_pair();
        media::join_fixed(&self.relay, ROOM, name, local(port), &[], Some(&[from]));
        let dir = self.dir.path();
        let (mut cmd, out) = match stack {
            Stack::Ffmpeg => {
                let sdp = dir.join(format!("{name}.sdp"));
                std::fs::write(&sdp, media::receiver_sdp(codec, port)).expect("write SDP");
                let out = dir.join(format!("{name}.crc"));
                (media::ffmpeg_receiver(&sdp, &out), out)
            }
            Stack::Gstreamer => {
                assert_eq!(codec, Codec::H264, "the GStreamer receiver decodes H.264");
                let out = dir.join(format!("{name}.yuv"));
                (media::gst_h264_receiver(port, &out), out)
            }
        };
        let tool = Tool::spawn(name, &mut cmd, dir);
        media::wait_bound(port, START, name);
        if let Stack::Ffmpeg = stack {
            // ffmpeg opens its RTCP socket after the RTP one: once both are bound it is reading.
            media::wait_bound(port + 1, START, name);
        }
        Receiver {
            name: name.to_owned(),
            stack,
            out,
            tool,
        }
    }

    /// Joins a send-only participant that declares `declared` and starts its tool, which sends
    /// with `ssrc`.
    fn sender(&self, name: &str, source: Source, ssrc: u32, declared: u32) -> Sender {
        let port = media::free_port_pair();
        let kind = match source {
            Source::FfmpegOpus => "audio",
            Source::FfmpegH264 | Source::GstH264 => "video",
        };
        media::join_fixed(
            &self.relay,
            ROOM,
            name,
            local(port),
            &[(declared, kind)],
            Some(&[]),
        );
        let dir = self.dir.path();
        let to = self.relay.media;
        let (mut cmd, copy) = match source {
            Source::FfmpegH264 | Source::FfmpegOpus => {
                let codec = match source {
                    Source::FfmpegOpus => Codec::Opus,
                    _ => Codec::H264,
                };
                let copy = dir.join(format!("{name}.nut"));
                let cmd = media::ffmpeg_sender(codec, to, port, ssrc, SECONDS, &copy);
                (cmd, copy)
            }
            Source::GstH264 => {
                let copy = dir.join(format!("{name}.h264"));
                (
                    media::gst_h264_sender(to, port, ssrc, GST_FRAMES, &copy),
                    copy,
                )
            }
        };
        let tool = Tool::spawn(name, &mut cmd, dir);
        Sender {
            name: name.to_owned(),
            source,
            port,
            ssrc,
            copy,
            tool,
        }
    }

    /// Lets the receivers finish and checks what each decoded against `sent`, then the relay's
    /// accounting: every packet of the sender forwarded once to each receiver, none dropped.
    fn check_delivery(&self, tx: &Sender, rx: &mut [Receiver], sent: &[u32]) {
        std::thread::sleep(DRAIN);
        for r in rx.iter_mut() {
            let (got, end) = r.finish();
            self.check_frames(r, sent, &got, end);
            if let Stack::Ffmpeg = r.stack {
                assert_eq!(
                    end,
                    End::Bye,
                    "{} did not end on the sender's BYE: the relay did not forward it",
                    r.name
                );
            }
        }
        let tx_in = self.counter(&tx.name, "packets_in");
        let tx_dropped = self.counter(&tx.name, "packets_dropped");
        let out = self.relay.metric("relay_packets_out_total");
        let unknown = self
            .relay
            .metric("relay_dropped_packets_total{reason=\"unknown_source\"}");
        eprintln!(
            "relay: {tx_in} packets in from {} ({:?}, the BYE included), {tx_dropped} dropped, \
             {out} out; {unknown} from unknown sources (the sender's own RTCP port)",
            tx.name, tx.source
        );
        assert!(tx_in > 0, "the relay heard nothing from the sender");
        assert_eq!(
            tx_dropped, 0,
            "the relay dropped some of the sender's packets"
        );
        assert_eq!(
            out,
            tx_in * rx.len() as u64,
            "each packet goes out once to each receiver"
        );
        assert_eq!(self.relay.metric("relay_send_errors_total"), 0);
    }

    /// Checks one receiver's decoded frames against the sent ones.
    fn check_frames(&self, r: &Receiver, sent: &[u32], got: &[u32], end: End) {
        let exact = media::matched_in_order(sent, got);
        eprintln!(
            "{} ({:?}): decoded {} of {} frames sent, {exact} bit-exact; ended: {end:?}",
            r.name,
            r.stack,
            got.len(),
            sent.len()
        );
        let need = (sent.len() as f64 * MIN_SHARE).ceil() as usize;
        assert!(!sent.is_empty(), "the sender's copy holds no frame");
        assert!(
            exact >= need,
            "{} decoded {} frames, {exact} of them identical to the {} sent; at least {need} \
             must be. Its log:\n{}",
            r.name,
            got.len(),
            sent.len(),
            r.tool.log()
        );
        let trouble = r.tool.trouble();
        assert!(
            trouble.is_empty(),
            "{} reported decoding trouble:\n{}",
            r.name,
            trouble.join("\n")
        );
    }

    /// A counter of one participant.
    fn counter(&self, id: &str, name: &str) -> u64 {
        let v = self
            .relay
            .ok("GET", &format!("/v1/rooms/{ROOM}/participants/{id}"), None);
        v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {v}"))
    }
}

impl Sender {
    /// Waits for the sender to send everything, then says BYE for it from its media address;
    /// returns the reference frames (the decode of its own copy of what it sent).
    fn finish(&mut self, t: &Session) -> Vec<u32> {
        let status = self.tool.wait(SEND);
        assert!(
            status.success(),
            "{} failed ({status}):\n{}",
            self.name,
            self.tool.log()
        );
        // The tool has exited, so its port is free again.
        let sock = UdpSocket::bind(local(self.port)).expect("bind the sender's port");
        sock.send_to(&media::rtcp_sr_bye(self.ssrc), t.relay.media)
            .expect("send BYE");
        let format = match self.source {
            Source::GstH264 => Some("h264"),
            Source::FfmpegH264 | Source::FfmpegOpus => None,
        };
        media::reference_frames(&self.copy, format, t.dir.path())
    }
}

impl Receiver {
    /// Lets the receiver finish: an ffmpeg receiver ends by itself at the BYE, others get
    /// SIGINT. Returns the checksums of the frames it decoded, and how it ended.
    fn finish(&mut self) -> (Vec<u32>, End) {
        let ended = match self.stack {
            Stack::Ffmpeg => self.tool.wait_for(BYE_END),
            Stack::Gstreamer => None,
        };
        let (status, end) = match ended {
            Some(status) => (status, End::Bye),
            None => (self.tool.interrupt(STOP), End::Interrupted),
        };
        let frames = match self.stack {
            Stack::Ffmpeg => media::framecrc(&self.out),
            Stack::Gstreamer => media::raw_frames(&self.out, media::I420_FRAME),
        };
        if end == End::Bye || matches!(self.stack, Stack::Gstreamer) {
            self.assert_success(status);
        }
        (frames, end)
    }

    fn assert_success(&self, status: ExitStatus) {
        assert!(
            status.success(),
            "{} failed ({status}):\n{}",
            self.name,
            self.tool.log()
        );
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
