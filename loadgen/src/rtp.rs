//! The RTP packets loadgen sends: a plain RTP header (RFC 3550 §5.1) and a payload that carries
//! what a receiver needs to account for the packet.
//!
//! Payload layout, big-endian, right after the 12-byte RTP header:
//! `magic u32 | stream u32 | seq u32 | send_ns u64 | len u16`, then filler up to `len` bytes of
//! datagram. `seq` is the stream's packet counter (the RTP sequence number is its low 16 bits),
//! `send_ns` the sender's monotonic clock since the run's shared start, `len` the datagram length
//! the sender wrote, so a truncated or padded copy is caught.

/// Marks a payload as ours ("LGv1").
pub const MAGIC: u32 = 0x4c47_7631;
/// Length of the fixed RTP header we write (no CSRC, no extension).
pub const HEADER_LEN: usize = 12;
/// Smallest datagram loadgen can send: RTP header plus the accounting fields.
pub const MIN_LEN: usize = HEADER_LEN + 22;
/// Largest datagram loadgen sends.
pub const MAX_LEN: usize = 1500;

/// What a sender writes into one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// RTP payload type (7 bits).
    pub payload_type: u8,
    /// RTP marker bit: last packet of a video frame.
    pub marker: bool,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
    /// Loadgen stream id.
    pub stream: u32,
    /// Packet counter of the stream; the RTP sequence number is its low 16 bits.
    pub seq: u32,
}

/// What a receiver reads back from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
    /// Loadgen stream id.
    pub stream: u32,
    /// Packet counter of the stream.
    pub seq: u32,
    /// Send time, ns since the run's start.
    pub send_ns: u64,
    /// RTP marker bit.
    pub marker: bool,
}

/// Why a datagram is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than an RTP header plus our fields.
    Truncated,
    /// RTP version is not 2.
    BadVersion,
    /// The payload does not start with our magic.
    BadMagic,
    /// The datagram length differs from the one the sender wrote.
    BadLength,
    /// The RTP sequence number disagrees with the counter in the payload.
    BadSeq,
}

/// Writes a packet of `len` bytes (clamped to `MIN_LEN..=MAX_LEN`) into `buf` and returns its
/// length. `buf` must hold `MAX_LEN` bytes.
pub fn encode(h: &Header, send_ns: u64, len: usize, buf: &mut [u8]) -> usize {
    let len = len.clamp(MIN_LEN, MAX_LEN);
    let buf = &mut buf[..len];
    buf[0] = 0x80; // V=2, P=0, X=0, CC=0
    buf[1] = (u8::from(h.marker) << 7) | (h.payload_type & 0x7f);
    buf[2..4].copy_from_slice(&(h.seq as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    buf[12..16].copy_from_slice(&MAGIC.to_be_bytes());
    buf[16..20].copy_from_slice(&h.stream.to_be_bytes());
    buf[20..24].copy_from_slice(&h.seq.to_be_bytes());
    buf[24..32].copy_from_slice(&send_ns.to_be_bytes());
    buf[32..34].copy_from_slice(&(len as u16).to_be_bytes());
    len
}

/// Rewrites the send time of an encoded packet (stamped just before the send syscall).
pub fn restamp(buf: &mut [u8], send_ns: u64) {
    if buf.len() >= MIN_LEN {
        buf[24..32].copy_from_slice(&send_ns.to_be_bytes());
    }
}

/// Reads our fields from a datagram. Never panics.
pub fn decode(buf: &[u8]) -> Result<Probe, DecodeError> {
    if buf.len() < MIN_LEN {
        return Err(DecodeError::Truncated);
    }
    if buf[0] >> 6 != 2 {
        return Err(DecodeError::BadVersion);
    }
    let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if u32_at(12) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if usize::from(u16::from_be_bytes([buf[32], buf[33]])) != buf.len() {
        return Err(DecodeError::BadLength);
    }
    let seq = u32_at(20);
    if u16::from_be_bytes([buf[2], buf[3]]) != seq as u16 {
        return Err(DecodeError::BadSeq);
    }
    let mut ns = [0; 8];
    ns.copy_from_slice(&buf[24..32]);
    Ok(Probe {
        timestamp: u32_at(4),
        ssrc: u32_at(8),
        stream: u32_at(16),
        seq,
        send_ns: u64::from_be_bytes(ns),
        marker: buf[1] & 0x80 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            payload_type: 111,
            marker: true,
            timestamp: 0x0102_0304,
            ssrc: 0xdead_beef,
            stream: 7,
            seq: 0x0001_0005,
        }
    }

    #[test]
    fn encode_writes_rtp_header() {
        let mut buf = [0u8; MAX_LEN];
        let n = encode(&header(), 42, 60, &mut buf);
        assert_eq!(n, 60);
        assert_eq!(
            &buf[..12],
            &[
                0x80, 0xef, 0x00, 0x05, 0x01, 0x02, 0x03, 0x04, 0xde, 0xad, 0xbe, 0xef
            ]
        );
        assert_eq!(&buf[12..16], b"LGv1");
    }

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; MAX_LEN];
        let n = encode(&header(), 123_456_789_012, 1200, &mut buf);
        let p = decode(&buf[..n]).unwrap();
        assert_eq!(p.stream, 7);
        assert_eq!(p.seq, 0x0001_0005);
        assert_eq!(p.send_ns, 123_456_789_012);
        assert_eq!(p.timestamp, 0x0102_0304);
        assert_eq!(p.ssrc, 0xdead_beef);
        assert!(p.marker);
        restamp(&mut buf[..n], 5);
        assert_eq!(decode(&buf[..n]).unwrap().send_ns, 5);
    }

    #[test]
    fn length_is_clamped() {
        let mut buf = [0u8; MAX_LEN];
        assert_eq!(encode(&header(), 0, 3, &mut buf), MIN_LEN);
        assert_eq!(encode(&header(), 0, 9000, &mut buf), MAX_LEN);
    }

    #[test]
    fn rejects_foreign_datagrams() {
        let mut buf = [0u8; MAX_LEN];
        let n = encode(&header(), 1, 100, &mut buf);
        assert_eq!(decode(&buf[..MIN_LEN - 1]), Err(DecodeError::Truncated));
        assert_eq!(decode(&buf[..n - 1]), Err(DecodeError::BadLength));
        let mut stun = buf;
        stun[0] = 0x00;
        assert_eq!(decode(&stun[..n]), Err(DecodeError::BadVersion));
        let mut other = buf;
        other[12] = b'X';
        assert_eq!(decode(&other[..n]), Err(DecodeError::BadMagic));
        let mut seq = buf;
        seq[3] ^= 1;
        assert_eq!(decode(&seq[..n]), Err(DecodeError::BadSeq));
        for len in 0..n {
            let _ = decode(&buf[..len]);
        }
    }
}
