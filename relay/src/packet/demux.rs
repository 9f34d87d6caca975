//! First-byte demultiplexing of a media port (RFC 7983 §7, RFC 5761 §4).
//!
//! One UDP port carries STUN, DTLS, RTP and RTCP. RFC 7983 §7 splits them by the first byte:
//!
//! ```text
//!              +----------------+
//!              |        [0..3] -+--> forward to STUN
//!              |                |
//!              |      [16..19] -+--> forward to ZRTP      (Other here)
//!              |                |
//!  packet -->  |      [20..63] -+--> forward to DTLS
//!              |                |
//!              |      [64..79] -+--> forward to TURN Channel (Other here)
//!              |                |
//!              |    [128..191] -+--> forward to RTP/RTCP
//!              +----------------+
//! ```
//!
//! RTP and RTCP are then told apart by the second byte (RFC 5761 §4): RTCP packet types
//! 192..=223 fall where an RTP packet would carry the marker bit and payload types 64..=95,
//! which RFC 5761 tells senders not to use on a muxed port.

/// What a datagram on the media port is, judged by its first two bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// STUN (first byte 0..=3).
    Stun,
    /// DTLS (first byte 20..=63).
    Dtls,
    /// RTP (first byte 128..=191, second byte outside 192..=223).
    Rtp,
    /// RTCP (first byte 128..=191, second byte 192..=223).
    Rtcp,
    /// Anything else, including an empty datagram and a one-byte RTP/RTCP lookalike.
    Other,
}

/// Classifies a datagram by its first byte (RFC 7983 §7) and, for RTP/RTCP, its second
/// (RFC 5761 §4). Never reads past the second byte.
pub fn classify(buf: &[u8]) -> Kind {
    match buf {
        [0..=3, ..] => Kind::Stun,
        [20..=63, ..] => Kind::Dtls,
        [128..=191, 192..=223, ..] => Kind::Rtcp,
        [128..=191, _, ..] => Kind::Rtp,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_range() {
        assert_eq!(classify(&[0x00, 0x01, 0x00, 0x00]), Kind::Stun);
        assert_eq!(classify(&[0x01, 0x01]), Kind::Stun);
        assert_eq!(classify(&[0x03]), Kind::Stun);
        assert_eq!(classify(&[0x04, 0x00]), Kind::Other);
    }

    #[test]
    fn dtls_range() {
        // 0x16 = 22: DTLS handshake record.
        assert_eq!(classify(&[0x16, 0xfe, 0xfd]), Kind::Dtls);
        assert_eq!(classify(&[0x14]), Kind::Dtls);
        assert_eq!(classify(&[0x3f]), Kind::Dtls);
        assert_eq!(classify(&[0x13]), Kind::Other); // ZRTP
        assert_eq!(classify(&[0x40, 0x00]), Kind::Other); // TURN channel
    }

    #[test]
    fn rtp_and_rtcp() {
        // V=2, PT 111 (Opus) without and with the marker bit.
        assert_eq!(classify(&[0x80, 0x6f, 0x00, 0x01]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 0xef, 0x00, 0x01]), Kind::Rtp);
        // SR (200), RR (201), PSFB (206), and both ends of 192..=223.
        assert_eq!(classify(&[0x80, 0xc8, 0x00, 0x06]), Kind::Rtcp);
        assert_eq!(classify(&[0x81, 0xc9, 0x00, 0x07]), Kind::Rtcp);
        assert_eq!(classify(&[0x81, 0xce]), Kind::Rtcp);
        assert_eq!(classify(&[0xbf, 0xc0]), Kind::Rtcp);
        assert_eq!(classify(&[0x80, 0xdf]), Kind::Rtcp);
        assert_eq!(classify(&[0x80, 0xe0]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 0xbf]), Kind::Rtp);
    }

    #[test]
    fn malformed() {
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0x80]), Kind::Other);
        assert_eq!(classify(&[0xc0, 0xc8]), Kind::Other); // version 3
        assert_eq!(classify(&[0x7f, 0x00]), Kind::Other);
        assert_eq!(classify(&[0xff, 0xff]), Kind::Other);
    }
}
