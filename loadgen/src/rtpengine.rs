//! rtpengine's ng control protocol: one UDP datagram per command, `"<cookie> <bencoded dict>"`,
//! answered by `"<cookie> <bencoded dict>"` with `result` `ok`. Rooms of two become 1:1 calls
//! (offer, answer); larger rooms become one publisher and subscribers (publish, subscribe
//! request, subscribe answer).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::model::Subscribe;
use crate::profile::Kind;
use crate::scenario::Plan;

/// A bencoded value (BEP 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bencode {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Self>),
    /// `d...e`, keys sorted as raw bytes.
    Dict(BTreeMap<Vec<u8>, Self>),
}

/// Why bytes are not bencode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BencodeError {
    /// The input ended inside a value.
    Truncated,
    /// An integer or length is malformed.
    BadNumber,
    /// A byte that starts no value.
    UnexpectedByte(u8),
    /// A dictionary key is not a byte string.
    BadKey,
    /// Nested deeper than we accept.
    TooDeep,
    /// Bytes left after the value.
    Trailing,
}

impl Bencode {
    /// A byte string from text.
    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Self)>) -> Self {
        Self::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The value under `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The value as text, if it is a UTF-8 byte string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Self::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Self::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Self::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Self::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes exactly one value. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, BencodeError> {
        let (v, used) = decode_at(buf, 0)?;
        if used != buf.len() {
            return Err(BencodeError::Trailing);
        }
        Ok(v)
    }
}

fn decode_at(buf: &[u8], depth: usize) -> Result<(Bencode, usize), BencodeError> {
    if depth > MAX_DEPTH {
        return Err(BencodeError::TooDeep);
    }
    let first = *buf.first().ok_or(BencodeError::Truncated)?;
    match first {
        b'i' => {
            let end = buf
                .iter()
                .position(|&b| b == b'e')
                .ok_or(BencodeError::Truncated)?;
            let text = std::str::from_utf8(&buf[1..end]).map_err(|_| BencodeError::BadNumber)?;
            // BEP 3: no leading zeros, no negative zero.
            let bad = text.is_empty()
                || text == "-0"
                || (text.len() > 1 && text.starts_with('0'))
                || text.starts_with("-0");
            if bad {
                return Err(BencodeError::BadNumber);
            }
            let n = text.parse().map_err(|_| BencodeError::BadNumber)?;
            Ok((Bencode::Int(n), end + 1))
        }
        b'0'..=b'9' => {
            let colon = buf
                .iter()
                .position(|&b| b == b':')
                .ok_or(BencodeError::Truncated)?;
            let text = std::str::from_utf8(&buf[..colon]).map_err(|_| BencodeError::BadNumber)?;
            let len: usize = text.parse().map_err(|_| BencodeError::BadNumber)?;
            let end = colon
                .checked_add(1)
                .and_then(|s| s.checked_add(len))
                .ok_or(BencodeError::BadNumber)?;
            if end > buf.len() {
                return Err(BencodeError::Truncated);
            }
            Ok((Bencode::Bytes(buf[colon + 1..end].to_vec()), end))
        }
        b'l' | b'd' => {
            let mut at = 1;
            let mut list = Vec::new();
            let mut dict = BTreeMap::new();
            loop {
                match buf.get(at) {
                    None => return Err(BencodeError::Truncated),
                    Some(b'e') => break,
                    Some(_) => {}
                }
                let (v, used) = decode_at(&buf[at..], depth + 1)?;
                at += used;
                if first == b'l' {
                    list.push(v);
                    continue;
                }
                let Bencode::Bytes(key) = v else {
                    return Err(BencodeError::BadKey);
                };
                let (value, used) = decode_at(&buf[at..], depth + 1)?;
                at += used;
                dict.insert(key, value);
            }
            let v = if first == b'l' {
                Bencode::List(list)
            } else {
                Bencode::Dict(dict)
            };
            Ok((v, at + 1))
        }
        other => Err(BencodeError::UnexpectedByte(other)),
    }
}

/// An ng control connection, remembering the calls it made so it can delete them.
pub struct Rtpengine {
    socket: UdpSocket,
    cookie: u64,
    nonce: String,
    calls_made: Vec<String>,
    /// Commands sent.
    pub calls: u64,
    /// Slowest command, ms.
    pub slowest_ms: f64,
}

impl Rtpengine {
    /// Opens a socket towards rtpengine's ng port and checks that it answers `ping`.
    pub fn connect(control: &str) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket
            .connect(control)
            .with_context(|| format!("rtpengine ng address {control}"))?;
        let nonce = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let mut ng = Self {
            socket,
            cookie: 0,
            nonce,
            calls_made: Vec::new(),
            calls: 0,
            slowest_ms: 0.0,
        };
        let pong = ng
            .command(Bencode::dict([("command", Bencode::str("ping"))]))
            .with_context(|| format!("rtpengine does not answer on {control}"))?;
        if pong.get("result").and_then(Bencode::as_str) != Some("pong") {
            bail!("rtpengine ping: unexpected reply {pong:?}");
        }
        Ok(ng)
    }

    /// Sets up every room; returns each stream's destination (the rtpengine port it sends to).
    pub(crate) fn setup(
        &mut self,
        plan: &Plan,
        addrs: &[SocketAddr],
    ) -> Result<Vec<Vec<SocketAddr>>> {
        let mut dests = vec![Vec::new(); plan.streams.len()];
        for room in &plan.rooms {
            let call = format!("{}-{}", room.name, self.nonce);
            let kind = |p: u32| {
                plan.participants[p as usize]
                    .streams
                    .first()
                    .map_or(Kind::Audio, |&s| plan.streams[s as usize].profile.kind)
            };
            let tag = |p: u32| format!("t{p}");
            self.calls_made.push(call.clone());
            match room.members[..] {
                [_] => bail!(
                    "room {} has one participant: rtpengine needs two or more",
                    room.name
                ),
                [a, b] => {
                    let (sa, sb) = (addrs[a as usize], addrs[b as usize]);
                    let offer = self.sdp_command(
                        "offer",
                        &call,
                        &tag(a),
                        None,
                        &sdp(sa, kind(a), "sendrecv"),
                    )?;
                    let answer = self.sdp_command(
                        "answer",
                        &call,
                        &tag(a),
                        Some(&tag(b)),
                        &sdp(sb, kind(b), "sendrecv"),
                    )?;
                    // The offer's reply goes to the callee, who sends to the port it names; the
                    // answer's reply goes to the caller.
                    for &s in &plan.participants[a as usize].streams {
                        dests[s as usize] = vec![answer];
                    }
                    for &s in &plan.participants[b as usize].streams {
                        dests[s as usize] = vec![offer];
                    }
                }
                _ => {
                    let publisher = room.members[0];
                    let addr = addrs[publisher as usize];
                    let k = kind(publisher);
                    let port = self.sdp_command(
                        "publish",
                        &call,
                        &tag(publisher),
                        None,
                        &sdp(addr, k, "sendonly"),
                    )?;
                    for &s in &plan.participants[publisher as usize].streams {
                        dests[s as usize] = vec![port];
                    }
                    for &sub in &room.members[1..] {
                        if plan.participants[sub as usize].subscribe
                            != Subscribe::List(vec![publisher])
                        {
                            bail!(
                                "rtpengine rooms larger than two need one publisher and subscribers"
                            );
                        }
                        let reply = self.command(Bencode::dict([
                            ("command", Bencode::str("subscribe request")),
                            ("call-id", Bencode::str(&call)),
                            ("from-tag", Bencode::str(&tag(publisher))),
                            ("ICE", Bencode::str("remove")),
                            (
                                "flags",
                                Bencode::List(vec![Bencode::str("no rtcp attribute")]),
                            ),
                        ]))?;
                        let to_tag = reply
                            .get("to-tag")
                            .and_then(Bencode::as_str)
                            .ok_or_else(|| anyhow!("subscribe request: no to-tag in reply"))?
                            .to_owned();
                        let sub_sdp = sdp(addrs[sub as usize], k, "recvonly");
                        self.command(Bencode::dict([
                            ("command", Bencode::str("subscribe answer")),
                            ("call-id", Bencode::str(&call)),
                            ("to-tag", Bencode::str(&to_tag)),
                            ("sdp", Bencode::str(&sub_sdp)),
                            ("ICE", Bencode::str("remove")),
                            (
                                "flags",
                                Bencode::List(vec![Bencode::str("no rtcp attribute")]),
                            ),
                        ]))?;
                    }
                }
            }
        }
        Ok(dests)
    }

    /// Deletes every call made.
    pub fn teardown(&mut self) -> Result<()> {
        let mut first = None;
        for call in std::mem::take(&mut self.calls_made) {
            let r = self.command(Bencode::dict([
                ("command", Bencode::str("delete")),
                ("call-id", Bencode::str(&call)),
            ]));
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Sends an SDP-carrying command; returns the media address in the reply's SDP.
    fn sdp_command(
        &mut self,
        command: &str,
        call: &str,
        from: &str,
        to: Option<&str>,
        sdp: &str,
    ) -> Result<SocketAddr> {
        let mut pairs = vec![
            ("command", Bencode::str(command)),
            ("call-id", Bencode::str(call)),
            ("from-tag", Bencode::str(from)),
            ("sdp", Bencode::str(sdp)),
            ("ICE", Bencode::str("remove")),
            (
                "flags",
                Bencode::List(vec![Bencode::str("no rtcp attribute")]),
            ),
        ];
        if let Some(to) = to {
            pairs.push(("to-tag", Bencode::str(to)));
        }
        let reply = self.command(Bencode::dict(pairs))?;
        let text = reply
            .get("sdp")
            .and_then(Bencode::as_str)
            .ok_or_else(|| anyhow!("{command}: reply has no SDP"))?;
        media_address(text)
            .ok_or_else(|| anyhow!("{command}: no c= and m= line in the reply's SDP"))
    }

    /// Sends one command and waits for its reply (three tries, 2 s each).
    fn command(&mut self, dict: Bencode) -> Result<Bencode> {
        self.cookie += 1;
        let cookie = format!("{}_{}", self.nonce, self.cookie);
        let mut msg = format!("{cookie} ").into_bytes();
        dict.encode(&mut msg);
        let what = dict
            .get("command")
            .and_then(Bencode::as_str)
            .unwrap_or("?")
            .to_owned();
        let mut buf = vec![0u8; 65_536];
        let began = Instant::now();
        for _ in 0..3 {
            self.calls += 1;
            self.socket.send(&msg)?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                self.socket
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                let n = match self.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let reply = &buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    continue;
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue;
                }
                let ms = began.elapsed().as_secs_f64() * 1e3;
                self.slowest_ms = self.slowest_ms.max((ms * 10.0).round() / 10.0);
                let v = Bencode::decode(&reply[space + 1..])
                    .map_err(|e| anyhow!("{what}: bad reply: {e:?}"))?;
                return match v.get("result").and_then(Bencode::as_str) {
                    Some("ok" | "pong") => Ok(v),
                    _ => {
                        let reason = v
                            .get("error-reason")
                            .and_then(Bencode::as_str)
                            .unwrap_or("no reason");
                        Err(anyhow!("rtpengine {what}: {reason}"))
                    }
                };
            }
        }
        bail!("rtpengine {what}: no reply")
    }
}

/// A minimal SDP for one RTP stream from `addr`.
fn sdp(addr: SocketAddr, kind: Kind, direction: &str) -> String {
    let (media, pt, map) = match kind {
        Kind::Audio => ("audio", 111, "opus/48000/2"),
        Kind::Video | Kind::Screen => ("video", 96, "H264/90000"),
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=loadgen\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m={media} {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {map}\r\na={direction}\r\n",
        ip = addr.ip(),
        port = addr.port(),
    )
}

/// The address an SDP asks to receive media on: the `c=` address and the first `m=` port.
fn media_address(sdp: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = ip.or(c
                .split('/')
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok()));
        } else if let Some(m) = line.strip_prefix("m=") {
            port = port.or(m
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u16>().ok()));
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// Deepest nesting accepted in a reply.
const MAX_DEPTH: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_roundtrip() {
        let v = Bencode::dict([
            ("command", Bencode::str("offer")),
            (
                "flags",
                Bencode::List(vec![Bencode::str("no rtcp attribute"), Bencode::Int(-42)]),
            ),
            ("a", Bencode::Int(0)),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        // Keys are sorted.
        assert_eq!(
            out,
            b"d1:ai0e7:command5:offer5:flagsl17:no rtcp attributei-42eee".to_vec()
        );
        assert_eq!(Bencode::decode(&out), Ok(v.clone()));
        assert_eq!(v.get("command").and_then(Bencode::as_str), Some("offer"));
    }

    #[test]
    fn bencode_rejects_bad_input() {
        assert_eq!(Bencode::decode(b""), Err(BencodeError::Truncated));
        assert_eq!(Bencode::decode(b"i03e"), Err(BencodeError::BadNumber));
        assert_eq!(Bencode::decode(b"i-0e"), Err(BencodeError::BadNumber));
        assert_eq!(Bencode::decode(b"ie"), Err(BencodeError::BadNumber));
        assert_eq!(Bencode::decode(b"5:abc"), Err(BencodeError::Truncated));
        assert_eq!(Bencode::decode(b"di1ei2ee"), Err(BencodeError::BadKey));
        assert_eq!(Bencode::decode(b"l"), Err(BencodeError::Truncated));
        assert_eq!(Bencode::decode(b"i1ei2e"), Err(BencodeError::Trailing));
        assert_eq!(
            Bencode::decode(b"x"),
            Err(BencodeError::UnexpectedByte(b'x'))
        );
        assert_eq!(
            Bencode::decode(b"99999999999999999999999:a"),
            Err(BencodeError::BadNumber)
        );
        assert_eq!(Bencode::decode(&[b'l'; 100]), Err(BencodeError::TooDeep));
        // Every prefix of a valid message fails cleanly.
        let msg = b"d6:result2:ok3:sdp10:v=0\r\nc=x\r\ne";
        assert!(Bencode::decode(msg).is_ok());
        for n in 0..msg.len() {
            assert!(Bencode::decode(&msg[..n]).is_err());
        }
    }

    #[test]
    fn sdp_media_address() {
        let s = sdp("127.0.0.1:5004".parse().unwrap(), Kind::Audio, "sendrecv");
        assert!(s.contains("m=audio 5004 RTP/AVP 111\r\n"));
        assert_eq!(media_address(&s), Some("127.0.0.1:5004".parse().unwrap()));
        assert_eq!(media_address("v=0\r\nm=audio 1 RTP/AVP 0\r\n"), None);
    }
}
