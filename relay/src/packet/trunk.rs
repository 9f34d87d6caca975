//! Trunk encapsulation: the 16-byte header a relay puts in front of an RTP or RTCP datagram it
//! sends to another relay of the fleet.
//!
//! The datagram behind the header is the one the client sent, byte for byte: the relay never
//! copies or rewrites it (the sending side points one iovec at the header and one at the
//! received buffer; the receiving side routes on `payload()`, a borrow at offset 16).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    version    |C|MED|W| zero  |          origin node          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          room number                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   sender participant number                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             epoch                             |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |          the untouched RTP or RTCP datagram (>= 2 bytes)      |
//! |                             ....                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! - **version** (8 bits): the layout's version: 4 ([`VERSION_4`]) or 5 ([`VERSION`]). Versions
//!   are numbered from 4 so that every possible version, 4 to 15, lies in the first-byte range
//!   that RFC 7983 §7 and RFC 9443 §3 leave unassigned (0-3 STUN, 16-19 ZRTP, 20-63 DTLS, 64-79
//!   TURN channels, 128-191 RTP/RTCP, 192-255 QUIC): a trunk datagram that reaches a media port
//!   classifies as [`demux::Kind::Other`] and is dropped there as not media. Version 5 is
//!   version 4 with the W bit defined; a relay writes version 5 only when W is set, so a header
//!   without W is byte for byte the version 4 one and a relay that reads version 4 only still
//!   takes it. Such a relay refuses version 5 ([`Error::BadVersion`], counted
//!   `trunk_malformed`): exactly the media it could not treat as WebRTC media (below).
//! - **C** (1 bit): 0 RTP, 1 RTCP. It must agree with what [`demux::classify`] says of the
//!   inner datagram.
//! - **MED** (2 bits): the media kind of the track the packet belongs to: 0 unspecified (RTCP
//!   that is not tied to one track, such as receiver feedback crossing back to a publisher's
//!   relay), 1 audio, 2 video; 3 is reserved and refused.
//! - **W** (1 bit, version 5; reserved and 0 in version 4): the inner datagram is the clear
//!   copy of what a WebRTC leg sent, SRTP or SRTCP removed by the origin relay. The receiving
//!   relay treats it as it treats a local WebRTC leg's media: each WebRTC receiver gets a copy
//!   sealed for its own leg, and plain receivers get it only in a room with `plain_legs`. A
//!   version 4 header with this bit set is refused ([`Error::BadFlags`]).
//! - **zero** (4 bits): reserved, sent as 0 and refused otherwise, so a later use of them
//!   comes with a new version rather than being read wrongly by an older relay. (A hop count,
//!   for trees instead of a full mesh, is the expected first use.)
//! - **origin node** (16 bits): the sending relay's fleet node number. A receiver accepts the
//!   datagram only from that node's registered trunk address.
//! - **room number** (32 bits): the room's fleet-wide number (assigned once in the store).
//! - **sender participant number** (32 bits): the fleet-wide number of the participant whose
//!   packet this is: the publisher for media and sender reports, the receiver for feedback.
//! - **epoch** (32 bits): the origin's membership epoch (the low 32 bits of the store revision
//!   at which it registered). A receiver compares it, for equality, with the epoch the node
//!   list gives for the origin, so packets from a previous life of a relay are dropped.
//!
//! No address is carried: the relay that receives a trunk datagram fans it out to its own
//! participants only, from its own tables. All fields are big-endian.

use core::fmt;

use crate::packet::demux;

/// The newest version of the layout above: version 4 with the W bit. Written only in headers
/// that set W.
pub const VERSION: u8 = 5;

/// The first version of the layout: no W bit (it is reserved, 0). Written in every header
/// without W, so that relays that read only this version keep reading them.
pub const VERSION_4: u8 = 4;

/// Bytes of header in front of the inner datagram.
pub const HEADER_LEN: usize = 16;

/// Byte offset of the room number, for a reader that cannot call [`Packet`]: the kernel program
/// that spreads trunk datagrams over the workers (`io/socket.rs`).
pub const ROOM_OFFSET: usize = field::ROOM;

/// Byte offset of the sender participant number (as [`ROOM_OFFSET`]).
pub const SENDER_OFFSET: usize = field::SENDER;

/// A relay's node number in the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeNo(pub u16);

/// A room's fleet-wide number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomNo(pub u32);

/// A participant's fleet-wide number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantNo(pub u32);

/// A relay's membership epoch: the low 32 bits of the store revision at which it registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u32);

/// What the inner datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Content {
    /// An RTP packet.
    Rtp,
    /// An RTCP compound (or SRTCP).
    Rtcp,
}

/// The media kind of the track a trunk datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    /// Not tied to one track (receiver feedback).
    Unspecified,
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

/// Why a buffer is not a valid trunk datagram, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the header plus two bytes of inner datagram (or, for `emit`, an output
    /// buffer shorter than the header).
    Truncated,
    /// The first byte is not a version this relay reads.
    BadVersion,
    /// The media kind is the reserved value 3, or a reserved flag bit is set (W counts as
    /// reserved in version 4).
    BadFlags,
    /// The inner datagram is not what the C bit says (RTP or RTCP by RFC 7983 and RFC 5761).
    BadContent,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "trunk datagram shorter than its header and an RTP/RTCP header",
            Self::BadVersion => "trunk header version is not one this relay reads",
            Self::BadFlags => "trunk header has a reserved media kind or flag bit",
            Self::BadContent => "trunk payload is not the RTP or RTCP its header says",
        })
    }
}

impl std::error::Error for Error {}

/// A checked view of a trunk datagram. Build it with [`Packet::new_checked`]; after that no
/// getter panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks, in order: length (header and at least the two bytes the RFC 7983 demux reads),
    /// version (4 or 5), flags (the ones of that version), and that the inner datagram
    /// classifies as the C bit says.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN + 2 {
            return Err(Error::Truncated);
        }
        let reserved = match buf[field::VERSION] {
            VERSION_4 => field::RESERVED | field::WEBRTC,
            VERSION => field::RESERVED,
            _ => return Err(Error::BadVersion),
        };
        let flags = buf[field::FLAGS];
        if flags & reserved != 0 || (flags & field::MEDIA) >> field::MEDIA_SHIFT == 3 {
            return Err(Error::BadFlags);
        }
        let expected = if flags & field::RTCP != 0 {
            demux::Kind::Rtcp
        } else {
            demux::Kind::Rtp
        };
        if demux::classify(&buf[HEADER_LEN..]) != expected {
            return Err(Error::BadContent);
        }
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole trunk datagram, header included.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version byte ([`VERSION_4`] or [`VERSION`] once checked).
    pub fn version(&self) -> u8 {
        self.as_bytes()[field::VERSION]
    }

    /// RTP or RTCP.
    pub fn content(&self) -> Content {
        if self.as_bytes()[field::FLAGS] & field::RTCP != 0 {
            Content::Rtcp
        } else {
            Content::Rtp
        }
    }

    /// The media kind of the track.
    pub fn media(&self) -> Media {
        match (self.as_bytes()[field::FLAGS] & field::MEDIA) >> field::MEDIA_SHIFT {
            1 => Media::Audio,
            2 => Media::Video,
            // 3 was refused by `new_checked`.
            _ => Media::Unspecified,
        }
    }

    /// Whether the inner datagram is the clear copy of a WebRTC leg's media (the W bit; never
    /// set in version 4).
    pub fn webrtc(&self) -> bool {
        self.as_bytes()[field::FLAGS] & field::WEBRTC != 0
    }

    /// The sending relay's node number.
    pub fn origin(&self) -> NodeNo {
        let b = self.as_bytes();
        NodeNo(u16::from_be_bytes([b[field::ORIGIN], b[field::ORIGIN + 1]]))
    }

    /// The room's fleet-wide number.
    pub fn room(&self) -> RoomNo {
        RoomNo(read_u32(self.as_bytes(), field::ROOM))
    }

    /// The sending participant's fleet-wide number.
    pub fn sender(&self) -> ParticipantNo {
        ParticipantNo(read_u32(self.as_bytes(), field::SENDER))
    }

    /// The origin's membership epoch.
    pub fn epoch(&self) -> Epoch {
        Epoch(read_u32(self.as_bytes(), field::EPOCH))
    }

    /// The header's fields.
    pub fn header(&self) -> Header {
        Header {
            content: self.content(),
            media: self.media(),
            webrtc: self.webrtc(),
            origin: self.origin(),
            room: self.room(),
            sender: self.sender(),
            epoch: self.epoch(),
        }
    }

    /// The inner RTP or RTCP datagram, exactly as the client sent it. Borrows from the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.as_bytes()[HEADER_LEN..]
    }
}

/// The header's fields, for building one (`emit`) or reading one whole (`Packet::header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// RTP or RTCP.
    pub content: Content,
    /// The media kind of the track.
    pub media: Media,
    /// The inner datagram is the clear copy of a WebRTC leg's media (W; written as version 5).
    pub webrtc: bool,
    /// The sending relay.
    pub origin: NodeNo,
    /// The room.
    pub room: RoomNo,
    /// The participant whose packet it is.
    pub sender: ParticipantNo,
    /// The origin's membership epoch.
    pub epoch: Epoch,
}

impl Header {
    /// Bytes `emit` writes: the header alone (the inner datagram is sent from where it lies).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let out = out.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        out.copy_from_slice(&self.to_bytes());
        Ok(HEADER_LEN)
    }

    /// The header as bytes, for a preallocated header slot of a send record.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[field::VERSION] = if self.webrtc { VERSION } else { VERSION_4 };
        let media: u8 = match self.media {
            Media::Unspecified => 0,
            Media::Audio => 1,
            Media::Video => 2,
        };
        let rtcp = match self.content {
            Content::Rtp => 0,
            Content::Rtcp => field::RTCP,
        };
        let webrtc = if self.webrtc { field::WEBRTC } else { 0 };
        b[field::FLAGS] = rtcp | media << field::MEDIA_SHIFT | webrtc;
        b[field::ORIGIN..field::ORIGIN + 2].copy_from_slice(&self.origin.0.to_be_bytes());
        b[field::ROOM..field::ROOM + 4].copy_from_slice(&self.room.0.to_be_bytes());
        b[field::SENDER..field::SENDER + 4].copy_from_slice(&self.sender.0.to_be_bytes());
        b[field::EPOCH..field::EPOCH + 4].copy_from_slice(&self.epoch.0.to_be_bytes());
        b
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

mod field {
    pub(super) const VERSION: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const RTCP: u8 = 0x80;
    pub(super) const MEDIA: u8 = 0x60;
    pub(super) const MEDIA_SHIFT: u32 = 5;
    /// W (version 5 only).
    pub(super) const WEBRTC: u8 = 0x10;
    /// Reserved in every version.
    pub(super) const RESERVED: u8 = 0x0f;
    pub(super) const ORIGIN: usize = 2;
    pub(super) const ROOM: usize = 4;
    pub(super) const SENDER: usize = 8;
    pub(super) const EPOCH: usize = 12;
}

#[cfg(test)]
mod tests {
    use super::*;

    // Version 4, RTP, video, origin 0x0102, room 0x0a0b0c0d, sender 0x11223344,
    // epoch 0xdeadbeef; then an RTP packet (V=2, PT 96, seq 1, ts 0, SSRC 0xcafebabe, "ab").
    const VIDEO_RTP: [u8; 30] = [
        0x04, 0x40, 0x01, 0x02, 0x0a, 0x0b, 0x0c, 0x0d, 0x11, 0x22, 0x33, 0x44, 0xde, 0xad, 0xbe,
        0xef, // trunk header
        0x80, 0x60, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xca, 0xfe, 0xba, 0xbe, 0x61,
        0x62, // RTP
    ];

    // Version 4, RTCP, unspecified kind, origin 7, room 1, sender 2, epoch 3; then a PLI
    // (PSFB 206, FMT 1) from SSRC 1 about SSRC 2.
    const FEEDBACK_RTCP: [u8; 28] = [
        0x04, 0x80, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x03, // trunk header
        0x81, 0xce, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // PLI
    ];

    #[test]
    fn reads_every_field() {
        let p = Packet::new_checked(&VIDEO_RTP[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.content(), Content::Rtp);
        assert_eq!(p.media(), Media::Video);
        assert_eq!(p.origin(), NodeNo(0x0102));
        assert_eq!(p.room(), RoomNo(0x0a0b_0c0d));
        assert_eq!(p.sender(), ParticipantNo(0x1122_3344));
        assert_eq!(p.epoch(), Epoch(0xdead_beef));
        assert_eq!(p.payload(), &VIDEO_RTP[16..]);
        assert_eq!(p.as_bytes(), &VIDEO_RTP[..]);

        let q = Packet::new_checked(FEEDBACK_RTCP).unwrap();
        assert_eq!(
            q.header(),
            Header {
                content: Content::Rtcp,
                media: Media::Unspecified,
                webrtc: false,
                origin: NodeNo(7),
                room: RoomNo(1),
                sender: ParticipantNo(2),
                epoch: Epoch(3),
            }
        );
        assert_eq!(q.into_inner(), FEEDBACK_RTCP);
    }

    #[test]
    fn writes_every_field() {
        let header = Header {
            content: Content::Rtp,
            media: Media::Video,
            webrtc: false,
            origin: NodeNo(0x0102),
            room: RoomNo(0x0a0b_0c0d),
            sender: ParticipantNo(0x1122_3344),
            epoch: Epoch(0xdead_beef),
        };
        assert_eq!(header.buffer_len(), 16);
        assert_eq!(header.to_bytes(), VIDEO_RTP[..16]);
        let mut out = [0xffu8; 20];
        assert_eq!(header.emit(&mut out), Ok(16));
        assert_eq!(out[..16], VIDEO_RTP[..16]);
        assert_eq!(out[16..], [0xff; 4], "emit writes the header only");
        assert_eq!(header.emit(&mut out[..15]), Err(Error::Truncated));

        let audio = Header {
            content: Content::Rtcp,
            media: Media::Audio,
            ..header
        };
        assert_eq!(audio.to_bytes()[..2], [0x04, 0xa0]);
    }

    #[test]
    fn the_webrtc_bit_is_version_5_and_only_it_is() {
        // The clear copy of a WebRTC leg's video: version 5, flags 0x50 (RTP, video, W).
        let header = Header {
            webrtc: true,
            ..Packet::new_checked(&VIDEO_RTP[..]).unwrap().header()
        };
        assert_eq!(header.to_bytes()[..2], [0x05, 0x50]);
        assert_eq!(
            header.to_bytes()[2..],
            VIDEO_RTP[2..16],
            "the other fields as before"
        );
        let mut b = VIDEO_RTP;
        b[..16].copy_from_slice(&header.to_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.webrtc()), (5, true));
        assert_eq!(p.header(), header);
        // Feedback crossing back from a WebRTC receiver: RTCP, unspecified kind, W.
        let q = Header {
            webrtc: true,
            ..Packet::new_checked(FEEDBACK_RTCP).unwrap().header()
        };
        assert_eq!(q.to_bytes()[..2], [0x05, 0x90]);
        // Without W the header is the version 4 one, byte for byte (older relays read it).
        let p4 = Packet::new_checked(&VIDEO_RTP[..]).unwrap();
        assert_eq!((p4.version(), p4.webrtc()), (4, false));
        // Version 5 without W reads as version 4 does.
        b[1] = 0x40;
        let p5 = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p5.version(), p5.webrtc(), p5.media()),
            (5, false, Media::Video)
        );
        // W in a version 4 header is a reserved bit: refused, never read as WebRTC media.
        let mut old = VIDEO_RTP;
        old[1] = 0x50;
        assert_eq!(Packet::new_checked(&old[..]), Err(Error::BadFlags));
        // Version 5 keeps the other four bits reserved.
        for bit in 0..4 {
            b[1] = 0x50 | 1 << bit;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadFlags));
        }
    }

    #[test]
    fn a_trunk_datagram_on_a_media_port_is_not_media() {
        // Every version the layout may ever take falls outside STUN, ZRTP, DTLS, TURN, RTP.
        for version in 4u8..=15 {
            let mut b = VIDEO_RTP;
            b[0] = version;
            assert_eq!(demux::classify(&b), demux::Kind::Other);
        }
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&[][..]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&VIDEO_RTP[..16]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&VIDEO_RTP[..17]), Err(Error::Truncated));
        // Two inner bytes are enough to classify; the RTP parser checks the rest.
        assert!(Packet::new_checked(&VIDEO_RTP[..18]).is_ok());
    }

    #[test]
    fn bad_version() {
        for first in [0x00, 0x03, 0x06, 0x0f, 0x80] {
            let mut b = VIDEO_RTP;
            b[0] = first;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion));
        }
    }

    #[test]
    fn bad_flags() {
        let mut b = VIDEO_RTP;
        b[1] = 0x60; // media kind 3
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadFlags));
        for bit in 0..5 {
            b[1] = 0x40 | 1 << bit;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadFlags));
        }
        b[1] = 0x20;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().media(), Media::Audio);
    }

    #[test]
    fn content_must_match_the_inner_datagram() {
        // RTP announced as RTCP, and RTCP announced as RTP.
        let mut b = VIDEO_RTP;
        b[1] |= 0x80;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadContent));
        let mut c = FEEDBACK_RTCP;
        c[1] = 0x00;
        assert_eq!(Packet::new_checked(&c[..]), Err(Error::BadContent));
        // A STUN message or a trunk datagram inside a trunk datagram.
        let mut d = VIDEO_RTP;
        d[16] = 0x00;
        assert_eq!(Packet::new_checked(&d[..]), Err(Error::BadContent));
        let mut nested = VIDEO_RTP.to_vec();
        nested.splice(16..16, VIDEO_RTP[..16].iter().copied());
        assert_eq!(Packet::new_checked(&nested[..]), Err(Error::BadContent));
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            Error::BadVersion.to_string(),
            "trunk header version is not one this relay reads"
        );
    }
}
