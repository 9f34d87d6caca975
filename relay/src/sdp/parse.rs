//! The SDP parser (RFC 8866 §5 syntax, RFC 8829 usage): text in, [`Session`] or a
//! [`ParseError`] naming the line out. Bounded in every dimension; never panics.

use std::collections::HashSet;
use std::fmt;

use super::fingerprint::{Fingerprint, FingerprintError};
use super::session::*;

/// Why a description was refused: the line (1-based; 0 for the whole text), the line itself
/// (cut at 100 characters) and what was wrong. The API answers `400 invalid_sdp` with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number; 0 when the error concerns the whole text.
    pub line: usize,
    /// The offending line, cut at 100 characters (empty for line 0).
    pub text: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Largest description accepted, in bytes: a Chromium offer with audio and video is about
/// 6.5 KB; 64 such sections fit.
pub const MAX_BYTES: usize = 512 * 1024;
/// Most lines accepted.
pub const MAX_LINES: usize = 16 * 1024;
/// Longest line accepted, in bytes.
pub const MAX_LINE: usize = 4096;
/// Most media sections accepted.
pub const MAX_MEDIA: usize = 64;
/// Most SSRCs (`a=ssrc` ids) per media section: a media SSRC, its RTX and FEC, or three
/// simulcast layers with RTX, fit with room to spare.
pub const MAX_SSRCS: usize = 16;
/// Most `a=candidate` lines per media section.
pub const MAX_CANDIDATES: usize = 32;
/// Most `a=fingerprint` lines per level.
pub const MAX_FINGERPRINTS: usize = 8;
/// Most `a=extmap` lines per media section (RFC 8285 allows ids 1-255; browsers use ~15).
pub const MAX_EXTMAPS: usize = 32;
/// Most `a=rtcp-fb` values per payload type.
pub const MAX_RTCP_FB: usize = 16;
/// Most `a=ssrc-group` lines per media section.
pub const MAX_SSRC_GROUPS: usize = 8;

/// Parses a session description.
pub fn parse(text: &str) -> Result<Session, ParseError> {
    if text.len() > MAX_BYTES {
        return Err(ParseError::whole("description larger than 512 KiB"));
    }
    let mut p = Parser::default();
    let mut number = 0;
    for raw in text.split('\n') {
        number += 1;
        if number > MAX_LINES {
            return Err(ParseError::whole("more than 16384 lines"));
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue; // a trailing newline, or a blank line some writers leave
        }
        p.line(number, line)
            .map_err(|reason| ParseError::at(number, line, reason))?;
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    session: Session,
    seen_version: bool,
    seen_origin: bool,
    /// Session-level ICE parts, joined in `finish`.
    ice: IceParts,
    /// Per media section: ICE parts, `rtcp-fb:*` values.
    media_ice: Vec<IceParts>,
    wildcard_fb: Vec<Vec<String>>,
    mids: HashSet<String>,
}

#[derive(Default)]
struct IceParts {
    ufrag: Option<(usize, String)>,
    pwd: Option<(usize, String)>,
}

impl Parser {
    fn line(&mut self, number: usize, line: &str) -> Result<(), &'static str> {
        if line.len() > MAX_LINE {
            return Err("line longer than 4096 bytes");
        }
        if line.bytes().any(|b| b < 0x20 && b != b'\t') {
            return Err("control character in line");
        }
        let (kind, value) = match line.as_bytes() {
            [k, b'=', ..] => (*k, &line[2..]),
            _ => return Err("expected <type>=<value>"),
        };
        if !self.seen_version {
            if line != "v=0" {
                return Err("the first line must be v=0");
            }
            self.seen_version = true;
            return Ok(());
        }
        match kind {
            b'o' => self.origin(value),
            b'm' => self.media_line(number, value),
            b'c' => {
                if let Some(m) = self.session.media.last_mut() {
                    m.connection = Some(value.to_owned());
                }
                Ok(())
            }
            b'a' => self.attribute(number, value),
            // RFC 8866 §5: the types it defines; their values are not needed here.
            b'v' => Err("v= may appear only once, first"),
            b's' | b'i' | b'u' | b'e' | b'p' | b'b' | b't' | b'r' | b'z' | b'k' => Ok(()),
            // "An SDP parser MUST completely ignore any session description that contains a
            // type letter that it does not understand" (RFC 8866 §5).
            _ => Err("unknown line type"),
        }
    }

    fn origin(&mut self, value: &str) -> Result<(), &'static str> {
        if self.seen_origin || !self.session.media.is_empty() {
            return Err("o= must appear once, before any m=");
        }
        let mut f = value.split(' ');
        let (_user, id, version) = (f.next(), f.next(), f.next());
        self.session.session_id = digits(id).ok_or("bad o= session id")?;
        self.session.session_version = digits(version).ok_or("bad o= session version")?;
        if f.count() != 3 {
            return Err("o= needs 6 fields");
        }
        self.seen_origin = true;
        Ok(())
    }

    fn media_line(&mut self, number: usize, value: &str) -> Result<(), &'static str> {
        if !self.seen_origin {
            return Err("m= before o=");
        }
        if self.session.media.len() >= MAX_MEDIA {
            return Err("more than 64 media sections");
        }
        let mut f = value.split(' ');
        let kind = f
            .next()
            .filter(|k| is_token(k))
            .ok_or("bad m= media type")?;
        let port = f.next().ok_or("m= without port")?;
        // `<port>/<number of ports>` is not used with ICE; take the port.
        let port = port.split('/').next().and_then(|p| p.parse::<u16>().ok());
        let port = port.ok_or("bad m= port")?;
        let protocol = f
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("m= without protocol")?;
        let formats: Vec<String> = f.map(str::to_owned).collect();
        if formats.is_empty() || formats.iter().any(|t| !is_token(t)) {
            return Err("m= needs at least one format");
        }
        let mut payloads = Vec::new();
        if protocol.contains("RTP/") {
            let mut seen = HashSet::new();
            for fmt in &formats {
                let pt = fmt.parse::<u8>().ok().filter(|pt| *pt <= 127);
                let pt = pt.ok_or("RTP format that is not a payload type 0-127")?;
                if !seen.insert(pt) {
                    return Err("payload type listed twice");
                }
                payloads.push(Payload {
                    pt,
                    encoding: String::new(),
                    clock_rate: 0,
                    channels: None,
                    fmtp: None,
                    rtcp_fb: Vec::new(),
                });
            }
        }
        self.session.media.push(Media {
            line: number,
            kind: MediaKind::from_name(kind),
            port,
            protocol: protocol.to_owned(),
            formats,
            payloads,
            ..Media::default()
        });
        self.media_ice.push(IceParts::default());
        self.wildcard_fb.push(Vec::new());
        Ok(())
    }

    fn attribute(&mut self, number: usize, value: &str) -> Result<(), &'static str> {
        let (name, arg) = match value.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (value, None),
        };
        let in_media = !self.session.media.is_empty();
        match (name, arg) {
            ("group", Some(arg)) => {
                if in_media {
                    return Err("a=group must be at session level");
                }
                let mut f = arg.split(' ');
                if f.next() == Some("BUNDLE") {
                    if !self.session.bundle.is_empty() {
                        return Err("more than one BUNDLE group");
                    }
                    self.session.bundle = f.filter(|m| !m.is_empty()).map(str::to_owned).collect();
                    if self.session.bundle.len() > MAX_MEDIA {
                        return Err("BUNDLE group larger than 64");
                    }
                }
                Ok(())
            }
            ("ice-lite", None) => {
                self.session.ice_lite = true;
                Ok(())
            }
            ("ice-ufrag", Some(arg)) => {
                let parts = self.ice_parts();
                if parts.ufrag.is_some() {
                    return Err("a=ice-ufrag twice");
                }
                if !(4..=256).contains(&arg.len()) || !arg.bytes().all(is_ice_char) {
                    return Err("a=ice-ufrag must be 4-256 ice-chars (RFC 8839 §5.4)");
                }
                parts.ufrag = Some((number, arg.to_owned()));
                Ok(())
            }
            ("ice-pwd", Some(arg)) => {
                let parts = self.ice_parts();
                if parts.pwd.is_some() {
                    return Err("a=ice-pwd twice");
                }
                if !(22..=256).contains(&arg.len()) || !arg.bytes().all(is_ice_char) {
                    return Err("a=ice-pwd must be 22-256 ice-chars (RFC 8839 §5.4)");
                }
                parts.pwd = Some((number, arg.to_owned()));
                Ok(())
            }
            ("fingerprint", Some(arg)) => {
                let fp = match Fingerprint::parse(arg) {
                    Ok(fp) => fp,
                    // Another hash next to a sha-2 one is fine; we check what we know.
                    Err(FingerprintError::UnknownHash) => return Ok(()),
                    Err(FingerprintError::Missing) => return Err("bad a=fingerprint"),
                    Err(FingerprintError::BadValue) => {
                        return Err("a=fingerprint value is not hex pairs of the hash's length");
                    }
                };
                let list = match self.session.media.last_mut() {
                    Some(m) => &mut m.fingerprints,
                    None => &mut self.session.fingerprints,
                };
                if list.len() >= MAX_FINGERPRINTS {
                    return Err("more than 8 a=fingerprint lines");
                }
                list.push(fp);
                Ok(())
            }
            ("setup", Some(arg)) => {
                let setup = Setup::from_name(arg)
                    .ok_or("a=setup must be active, passive, actpass or holdconn")?;
                match self.session.media.last_mut() {
                    Some(m) => m.setup = Some(setup),
                    None => self.session.setup = Some(setup),
                }
                Ok(())
            }
            _ if !in_media => Ok(()), // other session-level attributes are not needed
            ("mid", Some(arg)) => {
                if arg.is_empty() || arg.len() > 32 || !is_token(arg) {
                    return Err("a=mid must be a token of 1-32 characters");
                }
                if !self.mids.insert(arg.to_owned()) {
                    return Err("the same a=mid in two media sections");
                }
                self.media()?.mid = Some(arg.to_owned());
                Ok(())
            }
            ("sendrecv", None) => self.direction(Direction::SendRecv),
            ("sendonly", None) => self.direction(Direction::SendOnly),
            ("recvonly", None) => self.direction(Direction::RecvOnly),
            ("inactive", None) => self.direction(Direction::Inactive),
            ("bundle-only", None) => {
                self.media()?.bundle_only = true;
                Ok(())
            }
            ("rtcp-mux", None) => {
                self.media()?.rtcp_mux = true;
                Ok(())
            }
            ("rtcp-rsize", None) => {
                self.media()?.rtcp_rsize = true;
                Ok(())
            }
            ("candidate", Some(arg)) => {
                let c = candidate(arg).ok_or("bad a=candidate (RFC 8839 §5.1)")?;
                let m = self.media()?;
                if m.candidates.len() >= MAX_CANDIDATES {
                    return Err("more than 32 candidates in one media section");
                }
                m.candidates.push(c);
                Ok(())
            }
            ("end-of-candidates", None) => {
                self.media()?.end_of_candidates = true;
                Ok(())
            }
            ("rtpmap", Some(arg)) => {
                let (pt, rest) = pt_and_rest(arg).ok_or("bad a=rtpmap")?;
                let mut f = rest.split('/');
                let encoding = f
                    .next()
                    .filter(|e| is_token(e))
                    .ok_or("bad a=rtpmap encoding")?;
                let clock_rate = f.next().and_then(|c| c.parse::<u32>().ok());
                let clock_rate = clock_rate
                    .filter(|c| *c > 0)
                    .ok_or("bad a=rtpmap clock rate")?;
                let channels = match f.next() {
                    None => None,
                    Some(c) => Some(c.parse::<u16>().ok().ok_or("bad a=rtpmap channels")?),
                };
                if f.next().is_some() {
                    return Err("bad a=rtpmap");
                }
                let p = self.payload(pt)?;
                if !p.encoding.is_empty() {
                    return Err("a=rtpmap twice for one payload type");
                }
                p.encoding = encoding.to_owned();
                p.clock_rate = clock_rate;
                p.channels = channels;
                Ok(())
            }
            ("fmtp", Some(arg)) => {
                let (pt, rest) = pt_and_rest(arg).ok_or("bad a=fmtp")?;
                let p = self.payload(pt)?;
                if p.fmtp.is_some() {
                    return Err("a=fmtp twice for one payload type");
                }
                p.fmtp = Some(rest.to_owned());
                Ok(())
            }
            ("rtcp-fb", Some(arg)) => {
                let (pt, fb) = arg.split_once(' ').ok_or("bad a=rtcp-fb")?;
                let fb = fb.trim();
                if fb.is_empty() {
                    return Err("bad a=rtcp-fb");
                }
                let list = if pt == "*" {
                    self.wildcard_fb
                        .last_mut()
                        .ok_or("a=rtcp-fb outside a media section")?
                } else {
                    let pt = pt.parse::<u8>().map_err(|_| "bad a=rtcp-fb payload type")?;
                    &mut self.payload(pt)?.rtcp_fb
                };
                if list.len() >= MAX_RTCP_FB {
                    return Err("more than 16 a=rtcp-fb for one payload type");
                }
                list.push(fb.to_owned());
                Ok(())
            }
            ("extmap", Some(arg)) => {
                let (id, rest) = arg.split_once(' ').ok_or("bad a=extmap")?;
                // `<id>/<direction>`: the direction is not used here.
                let id = id.split('/').next().and_then(|i| i.parse::<u8>().ok());
                let id = id.filter(|i| *i != 0).ok_or("bad a=extmap id")?;
                let uri = rest.split(' ').next().filter(|u| !u.is_empty());
                let uri = uri.ok_or("a=extmap without URI")?;
                let m = self.media()?;
                if m.extmaps.len() >= MAX_EXTMAPS {
                    return Err("more than 32 a=extmap in one media section");
                }
                if m.extmaps.iter().any(|e| e.id == id) {
                    return Err("a=extmap id used twice");
                }
                m.extmaps.push(Extmap {
                    id,
                    uri: uri.to_owned(),
                });
                Ok(())
            }
            ("msid", Some(arg)) => {
                let msid = msid(arg).ok_or("bad a=msid")?;
                self.media()?.msid = Some(msid);
                Ok(())
            }
            ("ssrc", Some(arg)) => {
                let (ssrc, attr) = arg.split_once(' ').ok_or("bad a=ssrc")?;
                let ssrc = ssrc.parse::<u32>().map_err(|_| "bad a=ssrc id")?;
                let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
                let info = self.ssrc(ssrc)?;
                match name {
                    "cname" if !value.is_empty() => info.cname = Some(value.to_owned()),
                    "cname" => return Err("empty a=ssrc cname"),
                    "msid" => info.msid = Some(msid(value).ok_or("bad a=ssrc msid")?),
                    _ => {} // mslabel, label: the old Plan B attributes
                }
                Ok(())
            }
            ("ssrc-group", Some(arg)) => {
                let mut f = arg.split(' ');
                let semantics = f.next().filter(|s| is_token(s)).ok_or("bad a=ssrc-group")?;
                let mut ssrcs = Vec::new();
                for s in f {
                    ssrcs.push(s.parse::<u32>().map_err(|_| "bad a=ssrc-group SSRC")?);
                    if ssrcs.len() > MAX_SSRCS {
                        return Err("a=ssrc-group with more than 16 SSRCs");
                    }
                }
                if ssrcs.is_empty() {
                    return Err("a=ssrc-group without SSRCs");
                }
                let m = self.media()?;
                if m.ssrc_groups.len() >= MAX_SSRC_GROUPS {
                    return Err("more than 8 a=ssrc-group in one media section");
                }
                m.ssrc_groups.push(SsrcGroup {
                    semantics: semantics.to_owned(),
                    ssrcs,
                });
                Ok(())
            }
            _ => Ok(()), // other media-level attributes are not needed
        }
    }

    fn finish(mut self) -> Result<Session, ParseError> {
        if !self.seen_version {
            return Err(ParseError::whole("empty description: no v=0 line"));
        }
        if !self.seen_origin {
            return Err(ParseError::whole("no o= line"));
        }
        self.session.ice = self.ice.join()?;
        for (i, parts) in self.media_ice.into_iter().enumerate() {
            let ice = parts.join()?;
            let wildcard = &self.wildcard_fb[i];
            let m = &mut self.session.media[i];
            m.ice = ice;
            for p in &mut m.payloads {
                p.rtcp_fb.extend(wildcard.iter().cloned());
            }
            let declared: HashSet<u32> = m.ssrcs.iter().map(|s| s.ssrc).collect();
            if m.ssrc_groups
                .iter()
                .flat_map(|g| &g.ssrcs)
                .any(|s| !declared.contains(s))
            {
                return Err(ParseError::at(
                    m.line,
                    "",
                    "a=ssrc-group names an SSRC without a=ssrc",
                ));
            }
        }
        Ok(self.session)
    }

    fn media(&mut self) -> Result<&mut Media, &'static str> {
        self.session
            .media
            .last_mut()
            .ok_or("media attribute outside a media section")
    }

    fn ice_parts(&mut self) -> &mut IceParts {
        self.media_ice.last_mut().unwrap_or(&mut self.ice)
    }

    fn direction(&mut self, d: Direction) -> Result<(), &'static str> {
        self.media()?.direction = d;
        Ok(())
    }

    fn payload(&mut self, pt: u8) -> Result<&mut Payload, &'static str> {
        let m = self.media()?;
        m.payloads
            .iter_mut()
            .find(|p| p.pt == pt)
            .ok_or("payload type not on the m= line")
    }

    fn ssrc(&mut self, ssrc: u32) -> Result<&mut SsrcInfo, &'static str> {
        let m = self.media()?;
        let i = match m.ssrcs.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                if m.ssrcs.len() >= MAX_SSRCS {
                    return Err("more than 16 SSRCs in one media section");
                }
                m.ssrcs.push(SsrcInfo {
                    ssrc,
                    cname: None,
                    msid: None,
                });
                m.ssrcs.len() - 1
            }
        };
        Ok(&mut m.ssrcs[i])
    }
}

impl IceParts {
    fn join(self) -> Result<Option<IceCredentials>, ParseError> {
        match (self.ufrag, self.pwd) {
            (Some((_, ufrag)), Some((_, pwd))) => Ok(Some(IceCredentials { ufrag, pwd })),
            (None, None) => Ok(None),
            (Some((line, _)), None) => {
                Err(ParseError::at(line, "", "a=ice-ufrag without a=ice-pwd"))
            }
            (None, Some((line, _))) => {
                Err(ParseError::at(line, "", "a=ice-pwd without a=ice-ufrag"))
            }
        }
    }
}

impl ParseError {
    fn at(line: usize, text: &str, reason: &'static str) -> Self {
        Self {
            line,
            text: text.chars().take(100).collect(),
            reason,
        }
    }

    fn whole(reason: &'static str) -> Self {
        Self {
            line: 0,
            text: String::new(),
            reason,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.text.is_empty()) {
            (0, _) => write!(f, "{}", self.reason),
            (n, true) => write!(f, "line {n}: {}", self.reason),
            (n, false) => write!(f, "line {n}: {}: `{}`", self.reason, self.text),
        }
    }
}

impl std::error::Error for ParseError {}

fn digits(s: Option<&str>) -> Option<u64> {
    s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

fn pt_and_rest(arg: &str) -> Option<(u8, &str)> {
    let (pt, rest) = arg.split_once(' ')?;
    let pt = pt.parse::<u8>().ok().filter(|pt| *pt <= 127)?;
    Some((pt, rest.trim()))
}

fn msid(value: &str) -> Option<Msid> {
    let mut f = value.split(' ').filter(|s| !s.is_empty());
    let stream = f.next().filter(|s| s.len() <= 64)?;
    let track = f.next().filter(|t| t.len() <= 64);
    if f.next().is_some() {
        return None;
    }
    Some(Msid {
        stream: stream.to_owned(),
        track: track.map(str::to_owned),
    })
}

/// `foundation component transport priority address port typ type *(extension)`.
fn candidate(value: &str) -> Option<Candidate> {
    let mut f = value.split(' ');
    let foundation = f.next().filter(|s| !s.is_empty() && s.len() <= 32)?;
    let component = f.next()?.parse().ok()?;
    let transport = f.next().filter(|s| is_token(s))?;
    let priority = f.next()?.parse().ok()?;
    let address = f.next().filter(|s| !s.is_empty() && s.len() <= 255)?;
    let port = f.next()?.parse().ok()?;
    if f.next()? != "typ" {
        return None;
    }
    let typ = f.next().filter(|s| is_token(s))?;
    Some(Candidate {
        foundation: foundation.to_owned(),
        component,
        transport: transport.to_owned(),
        priority,
        address: address.to_owned(),
        port,
        typ: typ.to_owned(),
    })
}

/// RFC 8866 §9 `token`: visible ASCII except a few separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'0'..=b'9' | b'A'..=b'Z' | b'^'..=b'~')
        })
}

/// RFC 8839 §5.4 `ice-char`: ALPHA / DIGIT / "+" / "/".
fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}
