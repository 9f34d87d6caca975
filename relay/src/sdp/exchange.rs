//! The two exchanges of a browser with the relay: publish (the client offers, the relay
//! answers) and subscribe (the relay offers, the client answers).

use std::fmt;
use std::net::SocketAddr;

use super::Fingerprint;
use super::codec::{CodecMismatch, CodecTable, Entry};
use super::parse::ParseError;
use super::session::*;

/// What the relay says about itself in every description it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// The participant's relay-side ICE credentials (the ones STUN checks use).
    pub ice: IceCredentials,
    /// The relay's certificate fingerprint (`dtls::Certificate::fingerprint`).
    pub fingerprint: Fingerprint,
    /// The media addresses (`--advertise`): one host candidate each, IPv4 and IPv6.
    pub addresses: Vec<SocketAddr>,
    /// `o=` session id: random per participant connection, kept across its re-offers.
    pub session_id: u64,
    /// `o=` session version: one more for each new description of the same session.
    pub session_version: u64,
}

/// The client's side of a transport, from its offer or answer: what the ICE and DTLS layers
/// check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// The client's ICE credentials (its ufrag names it in STUN USERNAME `relay:client`).
    pub ice: IceCredentials,
    /// The certificate fingerprints the client's DTLS certificate must match one of.
    pub fingerprints: Vec<Fingerprint>,
}

/// One track a publish offer brings: a media SSRC (and its RTX SSRC) in one media section.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Track {
    /// The section's mid.
    pub mid: String,
    /// `Audio` or `Video`.
    pub kind: MediaKind,
    /// The media SSRC.
    pub ssrc: u32,
    /// Its RTX SSRC (`a=ssrc-group:FID <ssrc> <rtx>`), for video.
    pub rtx_ssrc: Option<u32>,
    /// The RTCP CNAME (`a=ssrc:<ssrc> cname:`), for the subscribers' lip sync.
    pub cname: String,
    /// The MediaStream id and track id (`a=msid`, or `a=ssrc:<ssrc> msid:`).
    pub msid: Msid,
}

/// The publish exchange: what the relay answers and what it learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// The answer to send back (write it with [`super::write`]).
    pub answer: Session,
    /// The room's codec table after this offer: store it when the request succeeds.
    pub table: CodecTable,
    /// The tracks the client will send.
    pub tracks: Vec<Track>,
    /// The client's ICE credentials and fingerprints.
    pub remote: Remote,
}

/// One media section of a subscribe offer, in the order the caller keeps across re-offers
/// (JSEP, RFC 8829 §5.2.2: a later offer keeps every earlier section in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A track the participant receives.
    Track {
        /// The section's mid, unique within the participant's subscribe session.
        mid: String,
        /// The publisher's track.
        track: Track,
    },
    /// A section whose track went away: sent with port 0 until the session is renegotiated
    /// from scratch.
    Stopped {
        /// Its mid.
        mid: String,
        /// Its media kind.
        kind: MediaKind,
    },
}

/// What the client's subscribe answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeAnswer {
    /// The client's ICE credentials and fingerprints.
    pub remote: Remote,
    /// The mids of the sections the client accepted (port not 0, `recvonly`).
    pub accepted: Vec<String>,
    /// The mids of the sections it rejected or set inactive.
    pub rejected: Vec<String>,
}

/// Why an exchange was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The text is not SDP the relay can use (API: `400 invalid_sdp`, naming the line).
    Invalid(ParseError),
    /// The offer and the room disagree on a codec's number (API: `409 codec_mismatch`).
    CodecMismatch(CodecMismatch),
}

/// Builds the relay's answer to a client's publish offer. See the module docs for what is taken
/// and what is rejected. The relay never sends on a publish connection (sections are answered
/// `recvonly` or `inactive`), so the room's numbers are always answerable here: this never
/// returns [`ExchangeError::CodecMismatch`] today.
pub fn answer_publish(
    offer: &Session,
    table: &CodecTable,
    local: &Local,
) -> Result<Publish, ExchangeError> {
    if offer.media.is_empty() {
        return Err(invalid(0, "the offer has no media section"));
    }
    let negotiated = table
        .negotiate(offer, |_| false)
        .map_err(ExchangeError::CodecMismatch)?;
    let mut media = Vec::with_capacity(offer.media.len());
    let mut bundle = Vec::new();
    let mut remote: Option<Remote> = None;
    let mut tracks = Vec::new();
    for (m, entries) in offer.media.iter().zip(&negotiated.sections) {
        if entries.is_empty() || !m.protocol.contains("SAVPF") && !m.protocol.contains("SAVP") {
            media.push(rejected(m));
            continue;
        }
        let mid = m
            .mid
            .clone()
            .ok_or_else(|| invalid(m.line, "an accepted media section needs a=mid"))?;
        if !offer.bundle.contains(&mid) {
            return Err(invalid(
                m.line,
                "every accepted media section must be in a=group:BUNDLE",
            ));
        }
        if !m.rtcp_mux {
            return Err(invalid(m.line, "a=rtcp-mux is required (RFC 8858)"));
        }
        if offer.setup_of(m) == Some(Setup::Passive) || offer.setup_of(m) == Some(Setup::HoldConn) {
            return Err(invalid(
                m.line,
                "the relay is always the DTLS server: offer a=setup:actpass",
            ));
        }
        let section_remote = remote_of(offer, m)?;
        match &remote {
            None => remote = Some(section_remote),
            Some(r) if *r != section_remote => {
                return Err(invalid(
                    m.line,
                    "BUNDLEd sections with different ICE or DTLS parameters",
                ));
            }
            Some(_) => {}
        }
        let direction = match m.direction {
            Direction::SendOnly | Direction::SendRecv => {
                tracks.push(track_of(m, &mid)?);
                Direction::RecvOnly
            }
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
        bundle.push(mid.clone());
        media.push(accepted(
            m.kind.clone(),
            &m.protocol,
            mid,
            direction,
            entries,
            Setup::Passive,
            local,
        ));
    }
    let Some(remote) = remote else {
        return Err(invalid(
            0,
            "the offer has no audio or video section with a codec the relay takes",
        ));
    };
    let mut ssrcs: Vec<u32> = tracks
        .iter()
        .flat_map(|t| [Some(t.ssrc), t.rtx_ssrc])
        .flatten()
        .collect();
    ssrcs.sort_unstable();
    if ssrcs.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            0,
            "the same SSRC is declared in two media sections",
        ));
    }
    let answer = Session {
        session_id: local.session_id,
        session_version: local.session_version,
        ice_lite: true,
        bundle,
        media,
        ..Session::default()
    };
    Ok(Publish {
        answer,
        table: negotiated.table,
        tracks,
        remote,
    })
}

/// Builds the relay's subscribe offer: one `sendonly` section per slot with the publisher's
/// SSRCs, the room's payload types for its kind, no header extensions.
pub fn offer_subscribe(
    slots: &[Slot],
    table: &CodecTable,
    local: &Local,
) -> Result<Session, ExchangeError> {
    if slots.is_empty() {
        return Err(invalid(
            0,
            "nothing to offer: the participant may receive no track",
        ));
    }
    let mut media = Vec::with_capacity(slots.len());
    let mut bundle = Vec::new();
    for slot in slots {
        match slot {
            Slot::Track { mid, track } => {
                let entries = table.of_kind(&track.kind);
                if entries.is_empty() {
                    return Err(invalid(
                        0,
                        "the room has no codec for this track's kind yet",
                    ));
                }
                let mut m = accepted(
                    track.kind.clone(),
                    PROTOCOL,
                    mid.clone(),
                    Direction::SendOnly,
                    &entries,
                    Setup::ActPass,
                    local,
                );
                m.msid = Some(track.msid.clone());
                let info = |ssrc| SsrcInfo {
                    ssrc,
                    cname: Some(track.cname.clone()),
                    msid: Some(track.msid.clone()),
                };
                m.ssrcs.push(info(track.ssrc));
                if let Some(rtx) = track.rtx_ssrc {
                    m.ssrcs.push(info(rtx));
                    m.ssrc_groups.push(SsrcGroup {
                        semantics: "FID".to_owned(),
                        ssrcs: vec![track.ssrc, rtx],
                    });
                }
                bundle.push(mid.clone());
                media.push(m);
            }
            Slot::Stopped { mid, kind } => {
                let formats = table
                    .of_kind(kind)
                    .iter()
                    .map(|e| e.pt.to_string())
                    .collect::<Vec<_>>();
                media.push(Media {
                    kind: kind.clone(),
                    port: 0,
                    protocol: PROTOCOL.to_owned(),
                    formats: if formats.is_empty() {
                        vec!["0".to_owned()]
                    } else {
                        formats
                    },
                    connection: Some(NO_ADDRESS.to_owned()),
                    mid: Some(mid.clone()),
                    direction: Direction::Inactive,
                    ..Media::default()
                });
            }
        }
    }
    Ok(Session {
        session_id: local.session_id,
        session_version: local.session_version,
        ice_lite: true,
        bundle,
        media,
        ..Session::default()
    })
}

/// Reads the client's answer to `offer` (a subscribe offer the relay made).
pub fn read_subscribe_answer(
    answer: &Session,
    offer: &Session,
) -> Result<SubscribeAnswer, ExchangeError> {
    if answer.media.len() != offer.media.len() {
        return Err(invalid(
            0,
            "the answer must have as many media sections as the offer",
        ));
    }
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    let mut remote: Option<Remote> = None;
    for (a, o) in answer.media.iter().zip(&offer.media) {
        if a.mid != o.mid || a.kind != o.kind {
            return Err(invalid(
                a.line,
                "the answer's sections must match the offer's mids in order",
            ));
        }
        let mid = a.mid.clone().unwrap_or_default();
        // RFC 9143 §7.3: an answer rejects a bundled section with port 0 *and* by leaving it out
        // of its BUNDLE group; port 0 alone is how some answerers write a bundled section.
        let rejected_here = o.port == 0 || (a.port == 0 && !answer.bundle.contains(&mid));
        if rejected_here || a.direction != Direction::RecvOnly {
            if !rejected_here && a.direction != Direction::Inactive {
                return Err(invalid(
                    a.line,
                    "answer a sendonly section with recvonly or inactive",
                ));
            }
            rejected.push(mid);
            continue;
        }
        if !a.rtcp_mux {
            return Err(invalid(a.line, "a=rtcp-mux is required (RFC 8858)"));
        }
        if answer.setup_of(a) != Some(Setup::Active) {
            return Err(invalid(
                a.line,
                "the relay is the DTLS server: answer a=setup:active",
            ));
        }
        let section_remote = remote_of(answer, a)?;
        match &remote {
            None => remote = Some(section_remote),
            Some(r) if *r != section_remote => {
                return Err(invalid(
                    a.line,
                    "BUNDLEd sections with different ICE or DTLS parameters",
                ));
            }
            Some(_) => {}
        }
        accepted.push(mid);
    }
    let Some(remote) = remote else {
        return Err(invalid(0, "the answer accepts no media section"));
    };
    Ok(SubscribeAnswer {
        remote,
        accepted,
        rejected,
    })
}

impl ExchangeError {
    /// The API error code: `invalid_sdp` or `codec_mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_sdp",
            Self::CodecMismatch(_) => "codec_mismatch",
        }
    }

    /// The HTTP status: 400 for bad SDP, 409 for a conflict with the room.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::CodecMismatch(_) => 409,
        }
    }
}

impl From<ParseError> for ExchangeError {
    fn from(e: ParseError) -> Self {
        Self::Invalid(e)
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => e.fmt(f),
            Self::CodecMismatch(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// An accepted section as the relay writes it, in an answer (`passive`) or an offer
/// (`actpass`).
fn accepted(
    kind: MediaKind,
    protocol: &str,
    mid: String,
    direction: Direction,
    entries: &[Entry],
    setup: Setup,
    local: &Local,
) -> Media {
    let payloads: Vec<Payload> = entries.iter().flat_map(Entry::payloads).collect();
    Media {
        line: 0,
        kind,
        // RFC 8839 §4.3.1: with ICE the m= port is a placeholder; 9 as JSEP writes it.
        port: 9,
        protocol: protocol.to_owned(),
        formats: payloads.iter().map(|p| p.pt.to_string()).collect(),
        connection: Some(NO_ADDRESS.to_owned()),
        mid: Some(mid),
        direction,
        rtcp_mux: true,
        rtcp_rsize: false,
        ice: Some(local.ice.clone()),
        fingerprints: vec![local.fingerprint.clone()],
        setup: Some(setup),
        candidates: candidates(&local.addresses),
        end_of_candidates: true,
        payloads,
        ..Media::default()
    }
}

/// A rejected section (RFC 3264 §6: port 0), keeping the mid so the client can match it.
fn rejected(m: &Media) -> Media {
    Media {
        kind: m.kind.clone(),
        port: 0,
        protocol: m.protocol.clone(),
        formats: m.formats.iter().take(1).cloned().collect(),
        connection: Some(NO_ADDRESS.to_owned()),
        mid: m.mid.clone(),
        direction: Direction::Inactive,
        ..Media::default()
    }
}

/// One host candidate per media address (RFC 8445 §5.1.2.1 priority: type preference 126 for
/// host, local preference descending so IPv4 comes first, component 1).
fn candidates(addresses: &[SocketAddr]) -> Vec<Candidate> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| Candidate {
            foundation: (i + 1).to_string(),
            component: 1,
            transport: "udp".to_owned(),
            priority: (126 << 24) | ((65535 - i as u32) << 8) | 255,
            address: a.ip().to_string(),
            port: a.port(),
            typ: "host".to_owned(),
        })
        .collect()
}

fn remote_of(session: &Session, m: &Media) -> Result<Remote, ExchangeError> {
    let ice = session
        .ice_of(m)
        .cloned()
        .ok_or_else(|| invalid(m.line, "no a=ice-ufrag/a=ice-pwd for this section"))?;
    let fingerprints = session.fingerprints_of(m).to_vec();
    if fingerprints.is_empty() {
        return Err(invalid(
            m.line,
            "no a=fingerprint (sha-1/224/256/384/512) for this section",
        ));
    }
    Ok(Remote { ice, fingerprints })
}

/// The track of a sending section: one media SSRC, its RTX from `a=ssrc-group:FID`.
///
/// The relay routes on SSRCs it was told, so a sending section must declare them with `a=ssrc`
/// (Chromium and Firefox do in unified plan; so does aiortc). Simulcast (`a=ssrc-group:SIM`,
/// or `a=rid` without SSRCs) is refused: this version forwards one stream per track.
fn track_of(m: &Media, mid: &str) -> Result<Track, ExchangeError> {
    if m.ssrcs.is_empty() {
        return Err(invalid(
            m.line,
            "a sending section must declare its SSRC with a=ssrc lines",
        ));
    }
    if m.ssrc_groups.iter().any(|g| g.semantics == "SIM") {
        return Err(invalid(
            m.line,
            "simulcast (a=ssrc-group:SIM) is not supported",
        ));
    }
    let fid = m.ssrc_groups.iter().find(|g| g.semantics == "FID");
    let rtx_ssrc = match fid.map(|g| g.ssrcs.as_slice()) {
        None => None,
        Some([_, rtx]) => Some(*rtx),
        Some(_) => return Err(invalid(m.line, "a=ssrc-group:FID must name two SSRCs")),
    };
    let is_secondary = |s: u32| {
        m.ssrc_groups
            .iter()
            .any(|g| g.ssrcs.iter().skip(1).any(|x| *x == s))
    };
    let mut primaries = m.ssrcs.iter().filter(|s| !is_secondary(s.ssrc));
    let (Some(primary), None) = (primaries.next(), primaries.next()) else {
        return Err(invalid(
            m.line,
            "one media SSRC per section (and its RTX) is supported",
        ));
    };
    if fid.is_some_and(|g| g.ssrcs.first() != Some(&primary.ssrc)) {
        return Err(invalid(
            m.line,
            "a=ssrc-group:FID must start with the media SSRC",
        ));
    }
    if rtx_ssrc == Some(primary.ssrc) {
        return Err(invalid(
            m.line,
            "the RTX SSRC must differ from the media SSRC",
        ));
    }
    let cname = primary
        .cname
        .clone()
        .ok_or_else(|| invalid(m.line, "the media SSRC has no cname"))?;
    let msid = m
        .msid
        .clone()
        .or_else(|| primary.msid.clone())
        .unwrap_or_else(|| Msid {
            stream: "-".to_owned(),
            track: Some(format!("{mid}-{}", primary.ssrc)),
        });
    Ok(Track {
        mid: mid.to_owned(),
        kind: m.kind.clone(),
        ssrc: primary.ssrc,
        rtx_ssrc,
        cname,
        msid,
    })
}

fn invalid(line: usize, reason: &'static str) -> ExchangeError {
    ExchangeError::Invalid(ParseError {
        line,
        text: String::new(),
        reason,
    })
}

const PROTOCOL: &str = "UDP/TLS/RTP/SAVPF";
const NO_ADDRESS: &str = "IN IP4 0.0.0.0";
