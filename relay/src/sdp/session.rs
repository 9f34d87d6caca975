//! The typed session description: what the parser returns and what the writer writes.
//!
//! Only what a WebRTC edge needs is kept; any other attribute is skipped by the parser and never
//! written. `parse(write(s))` gives `s` back for every `s` the writer accepts.

use super::Fingerprint;

/// A whole session description (RFC 8866 §5): session-level fields and the media sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// `o=` session id (decimal digits, as browsers write it).
    pub session_id: u64,
    /// `o=` session version: a later offer or answer of the same session has a larger one.
    pub session_version: u64,
    /// `a=ice-lite` (RFC 8839 §5.3).
    pub ice_lite: bool,
    /// `a=group:BUNDLE` mids (RFC 9143); empty when there is no BUNDLE group.
    pub bundle: Vec<String>,
    /// Session-level `a=ice-ufrag`/`a=ice-pwd`; media-level ones take precedence.
    pub ice: Option<IceCredentials>,
    /// Session-level `a=fingerprint`s; media-level ones take precedence.
    pub fingerprints: Vec<Fingerprint>,
    /// Session-level `a=setup`; a media-level one takes precedence.
    pub setup: Option<Setup>,
    /// The media sections, in order.
    pub media: Vec<Media>,
}

/// One media section (`m=` and the lines up to the next one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// The 1-based line number of the `m=` line in the parsed text (0 for built sections): what
    /// errors name.
    pub line: usize,
    /// The media type.
    pub kind: MediaKind,
    /// The port; 0 rejects (or stops) the section (RFC 3264 §6).
    pub port: u16,
    /// The transport protocol, e.g. `UDP/TLS/RTP/SAVPF`.
    pub protocol: String,
    /// The format list: payload type numbers for RTP, `webrtc-datachannel` for SCTP.
    pub formats: Vec<String>,
    /// `c=` address (`IN IP4 x` / `IN IP6 x`), when present.
    pub connection: Option<String>,
    /// `a=mid` (RFC 9143 §7.3).
    pub mid: Option<String>,
    /// `a=bundle-only` (RFC 9143 §6): with port 0 in an offer, the section is not rejected but
    /// will use the BUNDLE transport (Firefox offers its second section this way).
    pub bundle_only: bool,
    /// `a=sendrecv` (the default when absent), `sendonly`, `recvonly` or `inactive`.
    pub direction: Direction,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=rtcp-rsize` (RFC 5506).
    pub rtcp_rsize: bool,
    /// Media-level `a=ice-ufrag`/`a=ice-pwd`.
    pub ice: Option<IceCredentials>,
    /// Media-level `a=fingerprint`s.
    pub fingerprints: Vec<Fingerprint>,
    /// Media-level `a=setup`.
    pub setup: Option<Setup>,
    /// `a=candidate` lines (RFC 8839 §5.1).
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates`.
    pub end_of_candidates: bool,
    /// `a=rtpmap`, `a=fmtp`, `a=rtcp-fb` per payload type, in the order of the format list.
    pub payloads: Vec<Payload>,
    /// `a=extmap` (RFC 8285).
    pub extmaps: Vec<Extmap>,
    /// `a=msid` (RFC 8830): stream id and track id.
    pub msid: Option<Msid>,
    /// `a=ssrc` (RFC 5576), one entry per SSRC with its `cname` and `msid` attributes.
    pub ssrcs: Vec<SsrcInfo>,
    /// `a=ssrc-group` (RFC 5576 §4.2), e.g. `FID` for an SSRC and its RTX SSRC.
    pub ssrc_groups: Vec<SsrcGroup>,
}

/// `m=` media type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `audio`
    #[default]
    Audio,
    /// `video`
    Video,
    /// `application` (data channels)
    Application,
    /// Anything else (`text`, `message`, ...), kept as written.
    Other(String),
}

/// Media direction attribute (RFC 8866 §6.7), seen from the side that wrote the description.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

/// `a=setup` (RFC 4145 §4, RFC 8842): which side is the DTLS client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setup {
    /// `active`: the writer will be the DTLS client.
    Active,
    /// `passive`: the writer will be the DTLS server.
    Passive,
    /// `actpass`: the writer lets the answerer choose (offers only).
    ActPass,
    /// `holdconn`: no connection for now.
    HoldConn,
}

/// ICE short-term credentials (RFC 8839 §5.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IceCredentials {
    /// `a=ice-ufrag` (4-256 ice-chars).
    pub ufrag: String,
    /// `a=ice-pwd` (22-256 ice-chars).
    pub pwd: String,
}

/// One `a=candidate` (RFC 8839 §5.1). Only what a host candidate needs; the rest of the line
/// (extensions such as `generation`) is skipped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Foundation.
    pub foundation: String,
    /// Component id: 1 for RTP (with rtcp-mux there is no other).
    pub component: u16,
    /// Transport, `udp` or `tcp` (as written).
    pub transport: String,
    /// Priority (RFC 8445 §5.1.2).
    pub priority: u32,
    /// Connection address: an IP address, or an mDNS name (`*.local`) from browsers that hide
    /// their addresses.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `typ`: `host`, `srflx`, `prflx` or `relay`.
    pub typ: String,
}

/// One payload type's `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payload {
    /// The payload type number (0-127).
    pub pt: u8,
    /// Encoding name as written (`opus`, `VP8`, `H264`, `rtx`, ...); empty for a static payload
    /// type without `a=rtpmap`.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters: the channel count for audio.
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters, as written (`minptime=10;useinbandfec=1`).
    pub fmtp: Option<String>,
    /// The `a=rtcp-fb` values for this payload type (`nack`, `nack pli`, `ccm fir`, ...).
    pub rtcp_fb: Vec<String>,
}

/// `a=extmap:<id>[/<direction>] <uri>` (RFC 8285 §8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Extmap {
    /// The id (1-14 for one-byte headers, up to 255 for two-byte ones).
    pub id: u8,
    /// The extension's URI.
    pub uri: String,
}

/// `a=msid:<stream> <track>` (RFC 8830 §2). Browsers write `-` for a track without a stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Msid {
    /// The MediaStream id.
    pub stream: String,
    /// The track id (the "appdata"); browsers always write one.
    pub track: Option<String>,
}

/// One SSRC of an `a=ssrc` block (RFC 5576 §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SsrcInfo {
    /// The SSRC.
    pub ssrc: u32,
    /// `a=ssrc:<ssrc> cname:<cname>`.
    pub cname: Option<String>,
    /// `a=ssrc:<ssrc> msid:<stream> <track>` (the pre-RFC 8830 form browsers still write).
    pub msid: Option<Msid>,
}

/// `a=ssrc-group:<semantics> <ssrc> ...` (RFC 5576 §4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SsrcGroup {
    /// `FID` (RTX, RFC 4588 §8.1), `SIM` (simulcast), `FEC-FR`, ...
    pub semantics: String,
    /// The SSRCs, in order (for FID: the media SSRC, then its RTX SSRC).
    pub ssrcs: Vec<u32>,
}

impl Session {
    /// The ICE credentials that apply to `media`: its own, else the session's.
    pub fn ice_of<'a>(&'a self, media: &'a Media) -> Option<&'a IceCredentials> {
        media.ice.as_ref().or(self.ice.as_ref())
    }

    /// The fingerprints that apply to `media`: its own, else the session's.
    pub fn fingerprints_of<'a>(&'a self, media: &'a Media) -> &'a [Fingerprint] {
        if media.fingerprints.is_empty() {
            &self.fingerprints
        } else {
            &media.fingerprints
        }
    }

    /// The `a=setup` that applies to `media`: its own, else the session's.
    pub fn setup_of(&self, media: &Media) -> Option<Setup> {
        media.setup.or(self.setup)
    }

    /// The media section with this mid.
    pub fn media_by_mid(&self, mid: &str) -> Option<&Media> {
        self.media.iter().find(|m| m.mid.as_deref() == Some(mid))
    }
}

impl Media {
    /// The payload type's entry, if the section lists it.
    pub fn payload(&self, pt: u8) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.pt == pt)
    }

    /// The SSRC entry, if the section declares it.
    pub fn ssrc(&self, ssrc: u32) -> Option<&SsrcInfo> {
        self.ssrcs.iter().find(|s| s.ssrc == ssrc)
    }

    /// Whether the writer of the description sends media in this section.
    pub fn sends(&self) -> bool {
        self.is_active() && matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    /// Not rejected: a port other than 0, or port 0 with `a=bundle-only` (RFC 9143 §6).
    pub fn is_active(&self) -> bool {
        self.port != 0 || self.bundle_only
    }
}

impl MediaKind {
    /// The name as written on the `m=` line.
    pub fn name(&self) -> &str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Application => "application",
            Self::Other(name) => name,
        }
    }

    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "audio" => Self::Audio,
            "video" => Self::Video,
            "application" => Self::Application,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Direction {
    /// The attribute name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
}

impl Setup {
    /// The attribute value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
            Self::HoldConn => "holdconn",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "active" => Self::Active,
            "passive" => Self::Passive,
            "actpass" => Self::ActPass,
            "holdconn" => Self::HoldConn,
            _ => return None,
        })
    }
}
