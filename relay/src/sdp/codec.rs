//! The relay's codec table and the room's payload type numbers.
//!
//! The relay forwards RTP without rewriting it, so every participant of a room must use the
//! same payload type number for the same codec: a receiver decodes with the numbers of its own
//! description. A room's [`CodecTable`] pins them; [`CodecTable::negotiate`] applies the rule
//! (see the module docs of [`crate::sdp`]) to an offer.

use std::fmt;

use super::session::{Media, MediaKind, Payload, Session};

/// The codecs the relay takes: what every browser can send and decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Opus, 48 kHz stereo (RFC 7587).
    Opus,
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 constrained baseline, packetization-mode 1 (RFC 6184; `profile-level-id` 42e01f
    /// and the other levels of that profile).
    H264,
}

/// Every codec the relay takes, audio first.
pub const CODECS: [Codec; 3] = [Codec::Opus, Codec::Vp8, Codec::H264];

/// One codec's payload type numbers in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The codec.
    pub codec: Codec,
    /// Its payload type number.
    pub pt: u8,
    /// Its RTX payload type number (RFC 4588, `apt=pt`); video codecs only.
    pub rtx: Option<u8>,
}

/// A room's payload type numbers, fixed by the first offer that brings each codec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecTable {
    entries: Vec<Entry>,
}

/// The relay would have to send a codec with the offer's number, which differs from the room's
/// (API: `409 codec_mismatch`, naming the codec). RFC 3264 §6.1: when the answerer sends, "it
/// MUST use the payload type numbers from the offer"; the relay forwards RTP unchanged, so it
/// can only send the room's numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecMismatch {
    /// The codec.
    pub codec: Codec,
    /// Whether the numbers are those of its RTX rather than of the codec itself.
    pub rtx: bool,
    /// The room's payload type for it.
    pub room_pt: u8,
    /// The offer's payload type for it.
    pub offer_pt: u8,
    /// The `m=` line of the section.
    pub line: usize,
}

/// The outcome of [`CodecTable::negotiate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The room's table with the codecs this offer brought first; store it only if the whole
    /// request succeeds.
    pub table: CodecTable,
    /// Per media section of the offer (same index): the room's entries to answer with, in the
    /// offer's order of preference; empty when the relay takes no codec from it.
    pub sections: Vec<Vec<Entry>>,
}

impl Codec {
    /// The media kind it belongs to.
    pub fn kind(self) -> MediaKind {
        match self {
            Self::Opus => MediaKind::Audio,
            Self::Vp8 | Self::H264 => MediaKind::Video,
        }
    }

    /// The encoding name as the relay writes it in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Vp8 => "VP8",
            Self::H264 => "H264",
        }
    }

    /// The codec of an encoding name as [`Codec::name`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        CODECS.into_iter().find(|c| c.name() == name)
    }

    /// Whether an offered payload type is this codec in a form the relay takes.
    pub fn matches(self, p: &Payload) -> bool {
        match self {
            Self::Opus => {
                p.encoding.eq_ignore_ascii_case("opus")
                    && p.clock_rate == 48000
                    && p.channels == Some(2)
            }
            Self::Vp8 => p.encoding.eq_ignore_ascii_case("VP8") && p.clock_rate == 90000,
            Self::H264 => {
                p.encoding.eq_ignore_ascii_case("H264")
                    && p.clock_rate == 90000
                    && p.fmtp.as_deref().is_some_and(is_constrained_baseline_mode1)
            }
        }
    }

    /// The payload the relay writes for this codec under number `pt`: its `a=rtpmap`,
    /// `a=fmtp` and `a=rtcp-fb` (NACK, PLI and FIR for video; no `transport-cc`, no
    /// `goog-remb`: neither TWCC nor REMB is negotiated in this version).
    pub fn payload(self, pt: u8) -> Payload {
        let video_fb = || {
            vec![
                "nack".to_owned(),
                "nack pli".to_owned(),
                "ccm fir".to_owned(),
            ]
        };
        let (encoding, clock_rate, channels, fmtp, rtcp_fb) = match self {
            Self::Opus => ("opus", 48000, Some(2), Some(OPUS_FMTP), vec![]),
            Self::Vp8 => ("VP8", 90000, None, None, video_fb()),
            Self::H264 => ("H264", 90000, None, Some(H264_FMTP), video_fb()),
        };
        Payload {
            pt,
            encoding: encoding.to_owned(),
            clock_rate,
            channels,
            fmtp: fmtp.map(str::to_owned),
            rtcp_fb,
        }
    }
}

impl Entry {
    /// The payloads the relay writes for this entry: the codec, then its RTX.
    pub fn payloads(&self) -> Vec<Payload> {
        let mut out = vec![self.codec.payload(self.pt)];
        if let Some(rtx) = self.rtx {
            out.push(Payload {
                pt: rtx,
                encoding: "rtx".to_owned(),
                clock_rate: 90000,
                channels: None,
                fmtp: Some(format!("apt={}", self.pt)),
                rtcp_fb: vec![],
            });
        }
        out
    }
}

impl CodecTable {
    /// An empty table: a new room.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table kept from before (a room restored from the database). `None` when two entries
    /// name the same codec or the same number.
    pub fn from_entries(entries: Vec<Entry>) -> Option<Self> {
        for (i, e) in entries.iter().enumerate() {
            let numbers = |x: &Entry| [Some(x.pt), x.rtx];
            let clash = entries[..i].iter().any(|o| {
                o.codec == e.codec
                    || numbers(o)
                        .iter()
                        .flatten()
                        .any(|n| numbers(e).contains(&Some(*n)))
            });
            if clash {
                return None;
            }
        }
        Some(Self { entries })
    }

    /// The room's entries, in the order the codecs arrived.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of one codec.
    pub fn entry(&self, codec: Codec) -> Option<&Entry> {
        self.entries.iter().find(|e| e.codec == codec)
    }

    /// The entries of one media kind (what a subscribe offer lists).
    pub fn of_kind(&self, kind: &MediaKind) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.codec.kind() == *kind)
            .copied()
            .collect()
    }

    /// Applies the room's numbering to an offer's audio and video sections. `relay_sends(m)`
    /// says whether the answer will have the relay send in section `m` (the client receives
    /// there); the relay only receives in the others. Sections that are rejected (port 0
    /// without `a=bundle-only`) or not audio/video get no codecs. See the module docs for the
    /// rule.
    pub fn negotiate(
        &self,
        offer: &Session,
        relay_sends: impl Fn(&Media) -> bool,
    ) -> Result<Negotiated, CodecMismatch> {
        let used = offer_numbers(offer);
        let mut table = self.clone();
        let mut sections = Vec::with_capacity(offer.media.len());
        for m in &offer.media {
            let mut chosen: Vec<Entry> = Vec::new();
            if m.is_active() && matches!(m.kind, MediaKind::Audio | MediaKind::Video) {
                let sends = relay_sends(m);
                for p in &m.payloads {
                    let Some(codec) = CODECS
                        .into_iter()
                        .find(|c| c.kind() == m.kind && c.matches(p))
                    else {
                        continue;
                    };
                    if chosen.iter().any(|e| e.codec == codec) {
                        continue; // the offer's first form of a codec is the one taken
                    }
                    let offered_rtx = rtx_of(m, p.pt);
                    let entry = table.place(codec, p.pt, offered_rtx, &used);
                    if sends {
                        check_same(codec, false, entry.pt, Some(p.pt), m.line)?;
                        check_same(codec, true, entry.rtx.unwrap_or(0), offered_rtx, m.line)?;
                    }
                    chosen.push(Entry {
                        rtx: offered_rtx.and(entry.rtx),
                        ..entry
                    });
                }
            }
            sections.push(chosen);
        }
        Ok(Negotiated { table, sections })
    }

    /// The room's entry for `codec`, created from the offer's numbers when the room has none.
    fn place(&mut self, codec: Codec, offer_pt: u8, offer_rtx: Option<u8>, used: &[u8]) -> Entry {
        let i = match self.entries.iter().position(|e| e.codec == codec) {
            Some(i) => i,
            None => {
                let pt = self.free_pt(offer_pt, used);
                self.entries.push(Entry {
                    codec,
                    pt,
                    rtx: None,
                });
                self.entries.len() - 1
            }
        };
        if let Some(offer_rtx) = offer_rtx
            && codec.kind() == MediaKind::Video
            && self.entries[i].rtx.is_none()
        {
            let rtx = self.free_pt(offer_rtx, used);
            self.entries[i].rtx = Some(rtx);
        }
        self.entries[i]
    }

    /// A number for a new entry: the offer's own unless the room gave it to another codec,
    /// else the first dynamic number that neither the room nor the offer uses (so the answer
    /// differs from the offer no more than it must).
    fn free_pt(&self, wanted: u8, used: &[u8]) -> u8 {
        let taken = |pt: u8| self.entries.iter().any(|e| e.pt == pt || e.rtx == Some(pt));
        if !taken(wanted) {
            return wanted;
        }
        // Dynamic payload types (RFC 3551 §3): 96-127 first, then 35-63 as browsers do
        // (64-95 would collide with RTCP types under rtcp-mux, RFC 5761 §4).
        (96..=127u8)
            .chain(35..=63)
            .find(|pt| !taken(*pt) && !used.contains(pt))
            .or_else(|| (96..=127u8).chain(35..=63).find(|pt| !taken(*pt)))
            .unwrap_or(wanted) // 61 numbers for at most 5 entries: never reached
    }
}

/// Refuses when the relay would send `codec` (or its RTX) with `room` but the offer asked for
/// another number.
fn check_same(
    codec: Codec,
    rtx: bool,
    room: u8,
    offer: Option<u8>,
    line: usize,
) -> Result<(), CodecMismatch> {
    match offer {
        Some(offer_pt) if offer_pt != room => Err(CodecMismatch {
            codec,
            rtx,
            room_pt: room,
            offer_pt,
            line,
        }),
        _ => Ok(()),
    }
}

impl fmt::Display for CodecMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.rtx { " RTX" } else { "" };
        write!(
            f,
            "{}{what}: the room sends payload type {}, the offer (m= line {}) asks for {}; the \
             relay does not rewrite payload types",
            self.codec.name(),
            self.room_pt,
            self.line,
            self.offer_pt,
        )
    }
}

impl std::error::Error for CodecMismatch {}

/// Every payload type number the offer uses, in any section.
fn offer_numbers(offer: &Session) -> Vec<u8> {
    offer
        .media
        .iter()
        .flat_map(|m| m.payloads.iter().map(|p| p.pt))
        .collect()
}

/// The RTX payload type the section pairs with `pt` (`a=rtpmap:<x> rtx/...` with `apt=pt`).
fn rtx_of(m: &Media, pt: u8) -> Option<u8> {
    m.payloads.iter().find(|p| apt(p) == Some(pt)).map(|p| p.pt)
}

/// `apt=` of an RTX payload (RFC 4588 §8.1).
fn apt(p: &Payload) -> Option<u8> {
    if !p.encoding.eq_ignore_ascii_case("rtx") {
        return None;
    }
    fmtp_param(p.fmtp.as_deref()?, "apt")?.parse().ok()
}

/// One `name=value` of an fmtp line (`;`-separated, RFC 8866 §6.15 leaves the format to each
/// codec; all of ours use this one).
pub(crate) fn fmtp_param<'a>(fmtp: &'a str, name: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// RFC 6184 §8.1: `packetization-mode=1` and a `profile-level-id` whose profile is constrained
/// baseline: profile_idc 0x42 (66) with constraint_set1_flag set (0x40 in profile-iop), as
/// RFC 6184 Table 5 and libwebrtc's `h264_profile_level_id` classify it. Any level.
fn is_constrained_baseline_mode1(fmtp: &str) -> bool {
    if fmtp_param(fmtp, "packetization-mode") != Some("1") {
        return false;
    }
    let Some(id) = fmtp_param(fmtp, "profile-level-id") else {
        return false;
    };
    if id.len() != 6 {
        return false;
    }
    let byte = |i: usize| {
        id.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    matches!((byte(0), byte(2)), (Some(0x42), Some(iop)) if iop & 0x40 != 0)
}

/// Opus as browsers offer it: in-band FEC on, 10 ms minimum packet time.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// H.264 constrained baseline level 3.1, packetization-mode 1, as Chrome offers it;
/// `level-asymmetry-allowed=1` lets each side send at its own level (RFC 6184 §8.2.2).
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
