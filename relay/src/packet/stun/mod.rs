//! STUN messages (RFC 8489) with the ICE attributes (RFC 8445 §7.3, §16.1): a checked view of
//! what arrives, integrity and fingerprint checks, and builders for what the relay sends.
//!
//! Read first: RFC 8489 §5 (header), §14 (attributes), RFC 5769 (test vectors).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|     STUN Message Type     |         Message Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Magic Cookie                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Transaction ID (96 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type  |  Length  |  Value (padded to 4 bytes) ...   (repeated)
//! ```
//!
//! A relay handling a Binding request calls [`Message::new_checked`], reads
//! [`Message::username`] to find the participant, [`Message::verify_integrity`] with that
//! participant's ICE password, and replies with [`BindingResponse::emit`] (or
//! [`ErrorResponse::emit`]). Attributes that follow MESSAGE-INTEGRITY are not covered by it, so
//! the attribute helpers ([`Message::attribute`], [`Message::username`], ...) never look past
//! the first MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT (RFC 8489 §14.5).

mod builder;
mod integrity;

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use builder::{BindingRequest, BindingResponse, ErrorResponse};
pub use integrity::IntegrityError;

/// The Binding method (RFC 8489 §18.2).
pub const BINDING: u16 = 0x001;
/// The magic cookie every RFC 5389/8489 message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;

/// The class of a STUN message (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request (C1 C0 = 0b00).
    Request,
    /// An indication (0b01).
    Indication,
    /// A success response (0b10).
    Success,
    /// An error response (0b11).
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Self::Request => 0b00,
            Self::Indication => 0b01,
            Self::Success => 0b10,
            Self::Error => 0b11,
        }
    }
}

/// Builds the 14-bit message type from a method and a class (RFC 8489 §5: the class bits C1 and
/// C0 sit at bits 8 and 4, between the method bits).
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0fff;
    let c = class.bits();
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// A STUN attribute type (RFC 8489 §18.3, RFC 8445 §16.1). Open: unknown values pass through
/// and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeType(pub u16);

impl AttributeType {
    /// MAPPED-ADDRESS (§14.1).
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// USERNAME (§14.3).
    pub const USERNAME: Self = Self(0x0006);
    /// MESSAGE-INTEGRITY (§14.5).
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    /// ERROR-CODE (§14.8).
    pub const ERROR_CODE: Self = Self(0x0009);
    /// UNKNOWN-ATTRIBUTES (§14.13).
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000a);
    /// REALM (§14.9).
    pub const REALM: Self = Self(0x0014);
    /// NONCE (§14.10).
    pub const NONCE: Self = Self(0x0015);
    /// MESSAGE-INTEGRITY-SHA256 (§14.6).
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001c);
    /// PASSWORD-ALGORITHM (§14.12).
    pub const PASSWORD_ALGORITHM: Self = Self(0x001d);
    /// USERHASH (§14.4).
    pub const USERHASH: Self = Self(0x001e);
    /// XOR-MAPPED-ADDRESS (§14.2).
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// PRIORITY (RFC 8445 §7.1.1).
    pub const PRIORITY: Self = Self(0x0024);
    /// USE-CANDIDATE (RFC 8445 §7.1.2).
    pub const USE_CANDIDATE: Self = Self(0x0025);
    /// PASSWORD-ALGORITHMS (§14.11).
    pub const PASSWORD_ALGORITHMS: Self = Self(0x8002);
    /// ALTERNATE-DOMAIN (§14.16).
    pub const ALTERNATE_DOMAIN: Self = Self(0x8003);
    /// SOFTWARE (§14.14).
    pub const SOFTWARE: Self = Self(0x8022);
    /// ALTERNATE-SERVER (§14.15).
    pub const ALTERNATE_SERVER: Self = Self(0x8023);
    /// FINGERPRINT (§14.7).
    pub const FINGERPRINT: Self = Self(0x8028);
    /// ICE-CONTROLLED (RFC 8445 §7.1.3).
    pub const ICE_CONTROLLED: Self = Self(0x8029);
    /// ICE-CONTROLLING (RFC 8445 §7.1.3).
    pub const ICE_CONTROLLING: Self = Self(0x802a);

    /// Comprehension-required attributes are 0x0000-0x7fff (RFC 8489 §14): an agent that does
    /// not know one must reject the message.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

impl fmt::Debug for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::MAPPED_ADDRESS => "MAPPED-ADDRESS",
            Self::USERNAME => "USERNAME",
            Self::MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
            Self::ERROR_CODE => "ERROR-CODE",
            Self::UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
            Self::REALM => "REALM",
            Self::NONCE => "NONCE",
            Self::MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
            Self::PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
            Self::USERHASH => "USERHASH",
            Self::XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
            Self::PRIORITY => "PRIORITY",
            Self::USE_CANDIDATE => "USE-CANDIDATE",
            Self::PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
            Self::ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
            Self::SOFTWARE => "SOFTWARE",
            Self::ALTERNATE_SERVER => "ALTERNATE-SERVER",
            Self::FINGERPRINT => "FINGERPRINT",
            Self::ICE_CONTROLLED => "ICE-CONTROLLED",
            Self::ICE_CONTROLLING => "ICE-CONTROLLING",
            Self(other) => return write!(f, "AttributeType({other:#06x})"),
        };
        f.write_str(name)
    }
}

/// One attribute of a message: its type, its value without padding, and where its 4-byte
/// header starts in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type.
    pub attr_type: AttributeType,
    /// The value, as long as the attribute's length field says (padding excluded).
    pub value: &'a [u8],
    /// Byte offset of the attribute's header from the start of the message.
    pub offset: usize,
}

/// Why a buffer is not a STUN message, or why a builder could not write one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the 20-byte header, or than the header's length field says.
    Truncated,
    /// The first two bits are not zero.
    BadHeader,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message, or not STUN).
    BadMagic,
    /// The length field is not a multiple of 4, or bytes follow the message.
    BadLength,
    /// An attribute's header or padded value runs past the message; for builders, a value that
    /// may not be encoded (too long a text, an error code outside 300..=699).
    BadAttribute,
    /// The output buffer is shorter than [`BindingResponse::buffer_len`] (or the other
    /// builders' `buffer_len`).
    BufferTooSmall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "STUN message shorter than its header or length field",
            Self::BadHeader => "STUN message type has its top bits set",
            Self::BadMagic => "STUN magic cookie missing",
            Self::BadLength => "STUN length is not a multiple of 4 or does not match the datagram",
            Self::BadAttribute => "STUN attribute malformed or not encodable",
            Self::BufferTooSmall => "buffer too small for the STUN message",
        })
    }
}

impl std::error::Error for Error {}

/// A checked view of a STUN message. Build it with [`Message::new_checked`]; after that no
/// getter panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
    /// End of the attributes the helpers read: the offset of the first MESSAGE-INTEGRITY,
    /// MESSAGE-INTEGRITY-SHA256 or FINGERPRINT, or the end of the message.
    covered_end: usize,
    /// Offset of the MESSAGE-INTEGRITY that counts (§14.5), if any.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 that counts (§14.6), if any.
    integrity_sha256: Option<usize>,
    /// Offset of the first FINGERPRINT, if any.
    fingerprint: Option<usize>,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Checks `buffer` as one whole STUN message (RFC 8489 §5, §14): header length, top two
    /// bits zero, magic cookie, length field a multiple of 4 that matches the buffer, and every
    /// attribute with its padding inside the message.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if buf[0] & 0xc0 != 0 {
            return Err(Error::BadHeader);
        }
        if buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(Error::BadMagic);
        }
        let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if length % 4 != 0 {
            return Err(Error::BadLength);
        }
        if HEADER_LEN + length > buf.len() {
            return Err(Error::Truncated);
        }
        if HEADER_LEN + length < buf.len() {
            return Err(Error::BadLength);
        }
        let mut message = Self {
            covered_end: buf.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            buffer,
        };
        message.find_protection()?;
        Ok(message)
    }

    /// Walks the attributes once: checks their bounds and notes where the integrity and
    /// fingerprint attributes that count sit (RFC 8489 §14.5-14.7).
    fn find_protection(&mut self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        let mut walk = Attributes::new(buf, HEADER_LEN, buf.len());
        while let Some(attr) = walk.next_checked()? {
            match attr.attr_type {
                AttributeType::MESSAGE_INTEGRITY
                    if self.integrity.is_none()
                        && self.integrity_sha256.is_none()
                        && self.fingerprint.is_none() =>
                {
                    self.integrity = Some(attr.offset);
                }
                AttributeType::MESSAGE_INTEGRITY_SHA256
                    if self.integrity_sha256.is_none() && self.fingerprint.is_none() =>
                {
                    self.integrity_sha256 = Some(attr.offset);
                }
                AttributeType::FINGERPRINT if self.fingerprint.is_none() => {
                    self.fingerprint = Some(attr.offset);
                }
                _ => continue,
            }
            self.covered_end = self.covered_end.min(attr.offset);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The 14-bit message type (method and class interleaved).
    pub fn message_type(&self) -> u16 {
        let b = self.as_bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The message class.
    pub fn class(&self) -> Class {
        let t = self.message_type();
        match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }

    /// The 12-bit method ([`BINDING`] for ICE connectivity checks).
    pub fn method(&self) -> u16 {
        let t = self.message_type();
        (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80)
    }

    /// The length field: bytes of attributes after the header.
    pub fn length(&self) -> u16 {
        let b = self.as_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The 96-bit transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut id = [0; 12];
        id.copy_from_slice(&self.as_bytes()[8..HEADER_LEN]);
        id
    }

    /// Every attribute of the message, in order, including those after MESSAGE-INTEGRITY and
    /// FINGERPRINT that the helpers below ignore.
    pub fn attributes(&self) -> Attributes<'_> {
        let b = self.as_bytes();
        Attributes::new(b, HEADER_LEN, b.len())
    }

    /// The value of the first attribute of type `attr_type` that comes before any
    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT (RFC 8489 §14: only the first
    /// occurrence counts; §14.5: what follows the integrity attribute is not protected).
    pub fn attribute(&self, attr_type: AttributeType) -> Option<&[u8]> {
        let b = self.as_bytes();
        Attributes::new(b, HEADER_LEN, self.covered_end)
            .find(|a| a.attr_type == attr_type)
            .map(|a| a.value)
    }

    /// USERNAME (for ICE, "remote-ufrag:local-ufrag" as the sender writes it).
    pub fn username(&self) -> Option<&[u8]> {
        self.attribute(AttributeType::USERNAME)
    }

    /// SOFTWARE.
    pub fn software(&self) -> Option<&[u8]> {
        self.attribute(AttributeType::SOFTWARE)
    }

    /// REALM.
    pub fn realm(&self) -> Option<&[u8]> {
        self.attribute(AttributeType::REALM)
    }

    /// NONCE.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.attribute(AttributeType::NONCE)
    }

    /// PRIORITY, when present with its 4-byte value.
    pub fn priority(&self) -> Option<u32> {
        let v: [u8; 4] = self.attribute(AttributeType::PRIORITY)?.try_into().ok()?;
        Some(u32::from_be_bytes(v))
    }

    /// The tie-breaker of ICE-CONTROLLING, when present with its 8-byte value.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.u64_attribute(AttributeType::ICE_CONTROLLING)
    }

    /// The tie-breaker of ICE-CONTROLLED, when present with its 8-byte value.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.u64_attribute(AttributeType::ICE_CONTROLLED)
    }

    /// Whether USE-CANDIDATE is present (its value is empty).
    pub fn use_candidate(&self) -> bool {
        self.attribute(AttributeType::USE_CANDIDATE).is_some()
    }

    /// XOR-MAPPED-ADDRESS, decoded (RFC 8489 §14.2). `None` when absent or malformed.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let v = self.attribute(AttributeType::XOR_MAPPED_ADDRESS)?;
        let &[_, family, p0, p1, ref addr @ ..] = v else {
            return None;
        };
        let port = u16::from_be_bytes([p0, p1]) ^ (MAGIC_COOKIE >> 16) as u16;
        let mask = xor_mask(&self.transaction_id());
        let ip = match (family, addr.len()) {
            (FAMILY_IPV4, 4) => {
                let mut a = [0u8; 4];
                for (i, byte) in a.iter_mut().enumerate() {
                    *byte = addr[i] ^ mask[i];
                }
                IpAddr::V4(Ipv4Addr::from(a))
            }
            (FAMILY_IPV6, 16) => {
                let mut a = [0u8; 16];
                for (i, byte) in a.iter_mut().enumerate() {
                    *byte = addr[i] ^ mask[i];
                }
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// ERROR-CODE as (code 300..=699, reason phrase), RFC 8489 §14.8. `None` when absent or
    /// malformed.
    pub fn error_code(&self) -> Option<(u16, &[u8])> {
        let v = self.attribute(AttributeType::ERROR_CODE)?;
        let &[_, _, class, number, ref reason @ ..] = v else {
            return None;
        };
        let code = u16::from(class & 0x07) * 100 + u16::from(number);
        if !(300..=699).contains(&code) || number > 99 {
            return None;
        }
        Some((code, reason))
    }

    /// Offset of the MESSAGE-INTEGRITY attribute that counts, if any.
    pub fn integrity_offset(&self) -> Option<usize> {
        self.integrity
    }

    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute that counts, if any.
    pub fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256
    }

    /// Offset of the first FINGERPRINT attribute, if any (it must be the last attribute to be
    /// valid; [`Message::check_fingerprint`] checks that).
    pub fn fingerprint_offset(&self) -> Option<usize> {
        self.fingerprint
    }

    fn u64_attribute(&self, attr_type: AttributeType) -> Option<u64> {
        let v: [u8; 8] = self.attribute(attr_type)?.try_into().ok()?;
        Some(u64::from_be_bytes(v))
    }

    /// The attribute at `offset`, as found by `new_checked`.
    fn attribute_at(&self, offset: usize) -> Option<Attribute<'_>> {
        let b = self.as_bytes();
        Attributes::new(b, offset, b.len()).next()
    }
}

/// Iterator over the attributes of a checked message; see [`Message::attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    message: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Attributes<'a> {
    fn new(message: &'a [u8], at: usize, end: usize) -> Self {
        Self { message, at, end }
    }

    /// The next attribute, or `BadAttribute` when its header or padded value runs past `end`.
    fn next_checked(&mut self) -> Result<Option<Attribute<'a>>, Error> {
        if self.at >= self.end {
            return Ok(None);
        }
        let Some(&[t0, t1, l0, l1]) = self.message.get(self.at..self.at + 4) else {
            return Err(Error::BadAttribute);
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let start = self.at + 4;
        let next = start + len.next_multiple_of(4);
        if next > self.end {
            return Err(Error::BadAttribute);
        }
        let Some(value) = self.message.get(start..start + len) else {
            return Err(Error::BadAttribute);
        };
        let attr = Attribute {
            attr_type: AttributeType(u16::from_be_bytes([t0, t1])),
            value,
            offset: self.at,
        };
        self.at = next;
        Ok(Some(attr))
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        // Bounds were checked by `new_checked`; stop quietly if they were not.
        self.next_checked().unwrap_or_else(|_| {
            self.at = self.end;
            None
        })
    }
}

impl core::iter::FusedIterator for Attributes<'_> {}

/// The 16 bytes an IPv6 XOR-MAPPED-ADDRESS is XORed with: cookie then transaction ID (the
/// first 4 serve IPv4).
fn xor_mask(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction_id);
    mask
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

#[cfg(test)]
mod tests;
