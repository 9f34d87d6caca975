//! The client side of a WebRTC leg, as a browser does it, for load against the relay's WebRTC
//! edge: the publish or subscribe exchange over the API (SDP written here), ICE as the
//! controlling agent (a Binding request with USE-CANDIDATE to the relay's host candidate), a DTLS
//! 1.2 client handshake with `dimpl` on the participant's own socket, and SRTP with the relay's
//! `srtp` module keyed from the handshake's exporter. Nothing here is a shortcut the relay
//! offers for tests: it sees the same exchanges, checks and handshake as from a browser.
//!
//! Calling order: [`publish`] for a participant that sends (its tracks become the offer's
//! `a=ssrc` lines), [`subscribe`] for one that receives (after some publisher's tracks exist);
//! each returns a [`Leg`] with its SRTP state once the relay reports the leg connected. The
//! sender seals each packet with [`Srtp::Send`], the receiver opens each with
//! [`Srtp::Receive`], in place.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use relay::sdp::HashFunction;
use relay::srtp::{self, Egress, Ingress, Keys, Profile};

use crate::api::{Api, Ice};
use crate::profile::Kind;

/// A connected WebRTC leg.
pub struct Leg {
    /// The relay's media address (its host candidate).
    pub relay: SocketAddr,
    /// The relay's ICE credentials for this leg.
    pub ice: Ice,
    /// Our ICE ufrag (the second half of USERNAME in our Binding requests).
    pub local_ufrag: String,
    /// The SRTP profile the relay chose.
    pub profile: Profile,
    /// What the client thread uses per packet.
    pub srtp: Srtp,
}

/// The SRTP state of a leg, for one direction (a publish leg sends, a subscribe leg receives).
pub enum Srtp {
    /// Seals what the publisher sends (the DTLS client's write key).
    Send(Egress),
    /// Opens what the relay sends (the DTLS server's write key).
    Receive(Box<Ingress>),
}

/// Runs the publish exchange for `participant` with one sendonly section per `(ssrc, kind)`,
/// then ICE and DTLS from `socket` (non-blocking, bound, unread by anyone else meanwhile).
pub fn publish(
    api: &Api,
    room: &str,
    participant: &str,
    tracks: &[(u32, Kind)],
    socket: &UdpSocket,
    timeout: Duration,
) -> Result<Leg> {
    let client = Client::new(participant)?;
    let offer = client.publish_offer(tracks);
    let answer = api
        .webrtc_publish(room, participant, &offer)
        .with_context(|| format!("publish exchange of {participant}"))?;
    let remote = Remote::of(&answer)?;
    let (profile, keys) = client.connect(socket, &remote, timeout)?;
    wait_connected(api, room, participant, timeout)?;
    Ok(Leg {
        relay: remote.address,
        ice: remote.ice,
        local_ufrag: client.ufrag,
        profile,
        srtp: Srtp::Send(Egress::new(Keys::new(&keys.remote)?)),
    })
}

/// Runs the subscribe exchange for `participant` (the relay offers, we answer recvonly), then
/// ICE and DTLS from `socket`.
pub fn subscribe(
    api: &Api,
    room: &str,
    participant: &str,
    socket: &UdpSocket,
    timeout: Duration,
) -> Result<Leg> {
    let client = Client::new(participant)?;
    let offer = api
        .webrtc_subscribe_offer(room, participant)
        .with_context(|| format!("subscribe offer for {participant}"))?;
    let remote = Remote::of(&offer)?;
    let answer = client.subscribe_answer(&offer);
    api.webrtc_subscribe_answer(room, participant, &answer)
        .with_context(|| format!("subscribe answer of {participant}"))?;
    let (profile, keys) = client.connect(socket, &remote, timeout)?;
    wait_connected(api, room, participant, timeout)?;
    Ok(Leg {
        relay: remote.address,
        ice: remote.ice,
        local_ufrag: client.ufrag,
        profile,
        srtp: Srtp::Receive(Box::new(Ingress::new(Keys::new(&keys.local)?))),
    })
}

/// Our side of a leg: ICE credentials and a DTLS certificate of our own.
struct Client {
    ufrag: String,
    pwd: String,
    cert: dimpl::DtlsCertificate,
    fingerprint: String,
}

/// What the relay's SDP says about its side.
struct Remote {
    ice: Ice,
    address: SocketAddr,
}

impl Client {
    fn new(participant: &str) -> Result<Self> {
        let cert = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|e| anyhow!("a DTLS certificate: {e:?}"))?;
        let fingerprint = relay::dtls::fingerprint_of(HashFunction::Sha256, &cert.certificate);
        let token: u64 = rand::random();
        Ok(Self {
            // ICE wants 4 to 256 characters of ufrag and at least 22 of password.
            ufrag: format!(
                "lg{}{:04x}",
                participant
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>(),
                token & 0xffff
            ),
            pwd: format!("{token:016x}{:016x}", rand::random::<u64>()),
            cert,
            fingerprint: fingerprint.to_string(),
        })
    }

    /// The transport lines every section of ours carries.
    fn transport(&self, sdp: &mut String, setup: &str) {
        let _ = write!(
            sdp,
            "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n\
             a=fingerprint:{}\r\na=setup:{setup}\r\na=rtcp-mux\r\n",
            self.ufrag, self.pwd, self.fingerprint
        );
    }

    /// A sendonly offer with one section per track, with loadgen's payload types (Opus for
    /// audio, VP8 for video and screen).
    fn publish_offer(&self, tracks: &[(u32, Kind)]) -> String {
        let mids: Vec<String> = (0..tracks.len()).map(|i| i.to_string()).collect();
        let mut sdp = format!(
            "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
             a=msid-semantic: WMS lg\r\n",
            rand::random::<u32>(),
            mids.join(" ")
        );
        for (mid, &(ssrc, kind)) in mids.iter().zip(tracks) {
            let pt = kind.payload_type();
            let (media, rtpmap) = match kind {
                Kind::Audio => ("audio", "opus/48000/2"),
                Kind::Video | Kind::Screen => ("video", "VP8/90000"),
            };
            let _ = write!(sdp, "m={media} 9 UDP/TLS/RTP/SAVPF {pt}\r\n");
            self.transport(&mut sdp, "actpass");
            let _ = write!(
                sdp,
                "a=mid:{mid}\r\na=sendonly\r\na=msid:lg t{ssrc}\r\na=rtpmap:{pt} {rtpmap}\r\n\
                 a=ssrc:{ssrc} cname:lg\r\na=ssrc:{ssrc} msid:lg t{ssrc}\r\n"
            );
        }
        sdp
    }

    /// A recvonly answer to the relay's subscribe offer: each section's media line and codecs
    /// as offered, a stopped section (port 0) stays stopped.
    fn subscribe_answer(&self, offer: &str) -> String {
        let mut sdp = format!(
            "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            rand::random::<u32>()
        );
        if let Some(group) = offer.lines().find(|l| l.starts_with("a=group:BUNDLE")) {
            let _ = write!(sdp, "{}\r\n", group.trim_end());
        }
        for section in sections(offer) {
            let mline = section[0].trim_end();
            let stopped = mline.split(' ').nth(1) == Some("0");
            let _ = write!(sdp, "{mline}\r\n");
            self.transport(&mut sdp, "active");
            for line in &section[1..] {
                let line = line.trim_end();
                if line.starts_with("a=mid:")
                    || line.starts_with("a=rtpmap:")
                    || line.starts_with("a=fmtp:")
                    || line.starts_with("a=rtcp-fb:")
                {
                    let _ = write!(sdp, "{line}\r\n");
                }
            }
            sdp.push_str(if stopped {
                "a=inactive\r\n"
            } else {
                "a=recvonly\r\n"
            });
        }
        sdp
    }

    /// ICE (until the relay answers a Binding request with USE-CANDIDATE), then the DTLS
    /// handshake as the client; returns the profile and the keys.
    fn connect(
        &self,
        socket: &UdpSocket,
        remote: &Remote,
        timeout: Duration,
    ) -> Result<(Profile, srtp::LegKeys)> {
        let deadline = Instant::now() + timeout;
        let request = crate::stun::binding_request(&remote.ice, &self.ufrag)?;
        let mut buf = vec![0u8; 2048];
        let mut latched = false;
        while !latched {
            if Instant::now() > deadline {
                bail!(
                    "no STUN Binding success from {} within {timeout:?}",
                    remote.address
                );
            }
            socket.send_to(&request, remote.address)?;
            let resend = Instant::now() + crate::stun::RESEND;
            while !latched && Instant::now() < resend {
                match socket.recv(&mut buf) {
                    Ok(n) => latched = crate::stun::is_binding_success(&buf[..n]),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        let now = Instant::now();
        let mut dtls =
            dimpl::Dtls::new_12(Arc::new(dimpl::Config::default()), self.cert.clone(), now);
        dtls.set_active(true);
        let mut out = vec![0u8; 2048];
        let mut keys = None;
        let mut connected = false;
        let mut wake = now;
        loop {
            let now = Instant::now();
            if now > deadline {
                bail!(
                    "DTLS with {} not connected within {timeout:?}",
                    remote.address
                );
            }
            if now >= wake {
                dtls.handle_timeout(now)
                    .map_err(|e| anyhow!("DTLS timeout handling: {e:?}"))?;
            }
            loop {
                match dtls.poll_output(&mut out) {
                    dimpl::Output::Packet(p) => {
                        socket.send_to(p, remote.address)?;
                    }
                    dimpl::Output::Timeout(t) => {
                        wake = t;
                        break;
                    }
                    dimpl::Output::Connected => connected = true,
                    dimpl::Output::KeyingMaterial(material, profile) => {
                        let profile = profile_id(profile)
                            .and_then(Profile::from_id)
                            .ok_or_else(|| anyhow!("SRTP profile {profile:?} unknown"))?;
                        keys = Some((profile, srtp::split_keying_material(profile, &material)?));
                    }
                    _ => {}
                }
            }
            if connected && let Some(k) = keys.take() {
                return Ok(k);
            }
            match socket.recv(&mut buf) {
                // DTLS records (RFC 7983); STUN answers to a resend, and anything else, are not.
                Ok(n) if (20..=63).contains(&buf[0]) => {
                    dtls.handle_packet(&buf[..n])
                        .map_err(|e| anyhow!("DTLS from the relay: {e:?}"))?;
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    }
}

impl Remote {
    /// The relay's ICE credentials and its first IPv4 host candidate.
    fn of(sdp: &str) -> Result<Self> {
        let attr = |name: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| anyhow!("the relay's SDP has no {name}"))
        };
        let ice = Ice {
            ufrag: attr("a=ice-ufrag:")?,
            pwd: attr("a=ice-pwd:")?,
        };
        // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ host
        let address = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .filter_map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
            })
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("the relay's SDP has no IPv4 host candidate"))?;
        Ok(Self { ice, address })
    }
}

/// The media sections of an SDP text, each from its `m=` line.
fn sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push(vec![line]);
        } else if let Some(s) = out.last_mut() {
            s.push(line);
        }
    }
    out
}

/// The IANA id of a DTLS-SRTP profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
fn profile_id(p: dimpl::SrtpProfile) -> Option<u16> {
    match p {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(0x0001),
        dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(0x0007),
        dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(0x0008),
        _ => None,
    }
}

/// Waits until the relay's participant GET says `"dtls": "connected"`: the control thread has
/// the leg's keys and hands them to the workers as a room update (a publisher's first packets
/// before that would be counted drops, `srtp`; loadgen starts sending after every leg is made).
fn wait_connected(api: &Api, room: &str, participant: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = api.participant(room, participant)?;
        if p["dtls"] == "connected" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay did not report {participant} connected within {timeout:?}: {p}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_offer_parses_and_gets_an_answer_from_the_relays_sdp_code() {
        let client = Client::new("p0").unwrap();
        let offer = client.publish_offer(&[(7, Kind::Audio), (8, Kind::Video)]);
        let parsed = relay::sdp::parse(&offer).unwrap();
        let cert = relay::dtls::Certificate::generate(&mut rand::thread_rng()).unwrap();
        let local = relay::sdp::Local {
            ice: relay::sdp::IceCredentials {
                ufrag: "r3lA".into(),
                pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
            },
            fingerprint: cert.fingerprint().clone(),
            addresses: vec!["127.0.0.1:4000".parse().unwrap()],
            session_id: 1,
            session_version: 1,
        };
        let publish =
            relay::sdp::answer_publish(&parsed, &relay::sdp::CodecTable::new(), &local).unwrap();
        assert_eq!(publish.tracks.len(), 2);
        assert_eq!(publish.tracks[0].ssrc, 7);
        let answer = relay::sdp::write(&publish.answer);
        let remote = Remote::of(&answer).unwrap();
        assert_eq!(remote.ice.ufrag, "r3lA");
        assert_eq!(remote.address, "127.0.0.1:4000".parse().unwrap());
        // The subscribe offer the relay would make from these tracks, and our answer to it.
        let slots: Vec<relay::sdp::Slot> = publish
            .tracks
            .iter()
            .map(|t| relay::sdp::Slot::Track {
                mid: t.ssrc.to_string(),
                track: t.clone(),
            })
            .collect();
        let sub = relay::sdp::offer_subscribe(&slots, &publish.table, &local).unwrap();
        let answer = client.subscribe_answer(&relay::sdp::write(&sub));
        let read =
            relay::sdp::read_subscribe_answer(&relay::sdp::parse(&answer).unwrap(), &sub).unwrap();
        assert_eq!(read.accepted.len(), 2);
    }
}
