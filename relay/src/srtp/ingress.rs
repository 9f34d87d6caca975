//! Ingress: unprotecting what one WebRTC leg sends, in place in the receive buffer.

use crate::packet::rtp::Ssrc;

use super::keys::RTCP_HEADER;
use super::replay::Window;
use super::table::Table;
use super::{Error, Keys, MAX_SSRCS, Profile, rtp_header};

/// The receive side of one leg: the remote (client) keys, and per SSRC the rollover counter,
/// highest index and replay window of SRTP, and the replay window of SRTCP.
///
/// Owned by the worker that receives the leg's datagrams, used through `&mut`. A packet moves
/// its SSRC's state only once it authenticated: a forged or corrupted packet changes nothing.
#[derive(Debug)]
pub struct Ingress {
    keys: Keys,
    rtp: Table<Window>,
    rtcp: Table<Window>,
}

impl Ingress {
    /// Receive state for a leg with the remote `keys`, for up to [`MAX_SSRCS`] SSRCs each of SRTP
    /// and SRTCP (allocated here, once).
    pub fn new(keys: Keys) -> Self {
        Self::with_capacity(keys, MAX_SSRCS)
    }

    /// As [`Ingress::new`], for up to `ssrcs` SSRCs each of SRTP and SRTCP.
    pub fn with_capacity(keys: Keys, ssrcs: usize) -> Self {
        Self {
            keys,
            rtp: Table::new(ssrcs, Window::new()),
            rtcp: Table::new(ssrcs, Window::new()),
        }
    }

    /// Authenticates, checks for replay, and decrypts the SRTP packet `packet` in place
    /// (RFC 3711 §3.3). On success `packet[..n]` is the clear RTP packet (header unchanged,
    /// tag trimmed) and the SSRC's ROC and window have moved; on failure nothing has moved and
    /// the packet must be dropped (its payload bytes may have been overwritten).
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        let header = rtp_header(packet)?;
        if packet.len() < header.len + self.keys.profile().rtp_overhead() {
            return Err(Error::TooShort);
        }
        let slot = self.rtp.find(header.ssrc);
        let window = match slot {
            Some(at) => self.rtp.get(at),
            None if self.rtp.is_full() => return Err(Error::SsrcTableFull),
            None => &EMPTY,
        };
        let index = window.estimate(header.seq)?;
        window.check(index)?;
        let len = self
            .keys
            .open_rtp(packet, header.len, header.ssrc.0, index)?;
        // Authenticated: only now may the ROC and window move (RFC 3711 §3.3.1, §3.3.2).
        let at = match slot {
            Some(at) => at,
            None => self.rtp.insert(header.ssrc, Window::new())?,
        };
        self.rtp.get_mut(at).accept(index);
        Ok(len)
    }

    /// Authenticates, checks for replay, and decrypts (when its E flag is set) the SRTCP packet
    /// `packet` in place (RFC 3711 §3.4, RFC 7714 §9). On success `packet[..n]` is the clear RTCP
    /// compound; on failure nothing has moved.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        if packet.len() < RTCP_HEADER + self.keys.profile().rtcp_overhead() {
            return Err(Error::TooShort);
        }
        if packet[0] >> 6 != 2 {
            return Err(Error::BadHeader);
        }
        let ssrc = Ssrc(u32::from_be_bytes([
            packet[4], packet[5], packet[6], packet[7],
        ]));
        let index = u64::from(self.keys.rtcp_index(packet)?);
        let slot = self.rtcp.find(ssrc);
        let window = match slot {
            Some(at) => self.rtcp.get(at),
            None if self.rtcp.is_full() => return Err(Error::SsrcTableFull),
            None => &EMPTY,
        };
        window.check(index)?;
        let (_, len) = self.keys.open_rtcp(packet, ssrc.0)?;
        let at = match slot {
            Some(at) => at,
            None => self.rtcp.insert(ssrc, Window::new())?,
        };
        self.rtcp.get_mut(at).accept(index);
        Ok(len)
    }

    /// The profile of the leg's keys.
    pub fn profile(&self) -> Profile {
        self.keys.profile()
    }

    /// The SRTP receive state of `ssrc`, if a packet of it authenticated.
    pub fn rtp_state(&self, ssrc: Ssrc) -> Option<&Window> {
        self.rtp.find(ssrc).map(|at| self.rtp.get(at))
    }

    /// The SRTCP receive state of `ssrc`, if a packet of it authenticated.
    pub fn rtcp_state(&self, ssrc: Ssrc) -> Option<&Window> {
        self.rtcp.find(ssrc).map(|at| self.rtcp.get(at))
    }
}

/// The state of an SSRC not seen yet: ROC 0, nothing received.
const EMPTY: Window = Window::new();
