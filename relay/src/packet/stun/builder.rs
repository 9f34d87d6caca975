//! Builders for the messages the relay (and the load generator) send: `buffer_len()` says how
//! many bytes `emit` needs, `emit` writes them into a caller's buffer.
//!
//! Padding bytes are written as 0x20 (space). RFC 8489 §14 lets them be anything; spaces make
//! text attributes read cleanly and reproduce the RFC 5769 vectors byte for byte.

use std::net::SocketAddr;

use hmac::Mac;

use crate::packet::stun::integrity::{SHA1_LEN, feed, fingerprint, hmac_sha1};
use crate::packet::stun::{
    AttributeType, BINDING, Class, Error, FAMILY_IPV4, FAMILY_IPV6, HEADER_LEN, MAGIC_COOKIE,
    message_type, xor_mask,
};

/// A Binding success response (RFC 8489 §7.3.1.1, RFC 8445 §7.3.1.4): SOFTWARE (if any),
/// XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT, in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingResponse<'a> {
    /// The transaction ID of the request being answered.
    pub transaction_id: [u8; 12],
    /// The source address the request came from.
    pub mapped: SocketAddr,
    /// A SOFTWARE description, fewer than 128 characters.
    pub software: Option<&'a str>,
    /// The MESSAGE-INTEGRITY key: for ICE, the relay's own ICE password for this participant.
    pub integrity_key: &'a [u8],
}

impl BindingResponse<'_> {
    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.software.map_or(0, |s| attr_len(s.len()))
            + attr_len(address_len(self.mapped))
            + INTEGRITY_LEN
            + FINGERPRINT_LEN
    }

    /// Writes the response at the start of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        if let Some(software) = self.software {
            check_text(software)?;
        }
        let len = self.buffer_len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        let mut w = Writer::new(
            out,
            message_type(BINDING, Class::Success),
            &self.transaction_id,
        );
        if let Some(software) = self.software {
            w.attribute(AttributeType::SOFTWARE, software.as_bytes());
        }
        w.xor_address(self.mapped, &self.transaction_id);
        w.integrity(self.integrity_key);
        w.fingerprint();
        Ok(w.finish())
    }
}

/// A Binding error response (RFC 8489 §6.3.4) with ERROR-CODE (§14.8) and FINGERPRINT, and no
/// MESSAGE-INTEGRITY: 400 for a malformed request, 401 when the credentials do not check
/// (§9.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    /// The transaction ID of the request being answered.
    pub transaction_id: [u8; 12],
    /// The error code, 300..=699.
    pub code: u16,
    /// The reason phrase, fewer than 128 characters.
    pub reason: &'a str,
    /// A SOFTWARE description, written before ERROR-CODE.
    pub software: Option<&'a str>,
}

impl ErrorResponse<'static> {
    /// 400 Bad Request.
    pub fn bad_request(transaction_id: [u8; 12]) -> Self {
        Self {
            transaction_id,
            code: 400,
            reason: "Bad Request",
            software: None,
        }
    }

    /// 401 Unauthorized.
    pub fn unauthorized(transaction_id: [u8; 12]) -> Self {
        Self {
            transaction_id,
            code: 401,
            reason: "Unauthorized",
            software: None,
        }
    }
}

impl ErrorResponse<'_> {
    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.software.map_or(0, |s| attr_len(s.len()))
            + attr_len(4 + self.reason.len())
            + FINGERPRINT_LEN
    }

    /// Writes the response at the start of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        if !(300..=699).contains(&self.code) {
            return Err(Error::BadAttribute);
        }
        check_text(self.reason)?;
        if let Some(software) = self.software {
            check_text(software)?;
        }
        let len = self.buffer_len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        let mut w = Writer::new(
            out,
            message_type(BINDING, Class::Error),
            &self.transaction_id,
        );
        if let Some(software) = self.software {
            w.attribute(AttributeType::SOFTWARE, software.as_bytes());
        }
        // 21 reserved bits, the class (hundreds) in 3 bits, the number in 8 bits.
        let head = [0, 0, (self.code / 100) as u8, (self.code % 100) as u8];
        w.attribute_parts(AttributeType::ERROR_CODE, &head, self.reason.as_bytes());
        w.fingerprint();
        Ok(w.finish())
    }
}

/// A Binding request as an ICE agent sends it (RFC 8445 §7.2.2): USERNAME, PRIORITY,
/// ICE-CONTROLLING (if set), USE-CANDIDATE (if set), MESSAGE-INTEGRITY (unless the key is
/// empty) and FINGERPRINT (if set). For tests and the load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRequest<'a> {
    /// A fresh random transaction ID.
    pub transaction_id: [u8; 12],
    /// "remote-ufrag:local-ufrag", fewer than 509 bytes.
    pub username: &'a [u8],
    /// The candidate priority (RFC 8445 §5.1.2).
    pub priority: u32,
    /// The tie-breaker, when the agent is controlling.
    pub ice_controlling: Option<u64>,
    /// Nominate the pair (RFC 8445 §8.1.1).
    pub use_candidate: bool,
    /// The MESSAGE-INTEGRITY key (the peer's ICE password); empty to send no integrity.
    pub integrity_key: &'a [u8],
    /// Append FINGERPRINT.
    pub fingerprint: bool,
}

impl BindingRequest<'_> {
    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + attr_len(self.username.len())
            + attr_len(4)
            + self.ice_controlling.map_or(0, |_| attr_len(8))
            + if self.use_candidate { attr_len(0) } else { 0 }
            + if self.integrity_key.is_empty() {
                0
            } else {
                INTEGRITY_LEN
            }
            + if self.fingerprint { FINGERPRINT_LEN } else { 0 }
    }

    /// Writes the request at the start of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        if self.username.len() >= MAX_USERNAME {
            return Err(Error::BadAttribute);
        }
        let len = self.buffer_len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        let mut w = Writer::new(
            out,
            message_type(BINDING, Class::Request),
            &self.transaction_id,
        );
        w.attribute(AttributeType::USERNAME, self.username);
        w.attribute(AttributeType::PRIORITY, &self.priority.to_be_bytes());
        if let Some(tie_breaker) = self.ice_controlling {
            w.attribute(AttributeType::ICE_CONTROLLING, &tie_breaker.to_be_bytes());
        }
        if self.use_candidate {
            w.attribute(AttributeType::USE_CANDIDATE, &[]);
        }
        if !self.integrity_key.is_empty() {
            w.integrity(self.integrity_key);
        }
        if self.fingerprint {
            w.fingerprint();
        }
        Ok(w.finish())
    }
}

/// Writes a message into a buffer of exactly the length its builder's `buffer_len` gave, so
/// no write below can fall outside it.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8], message_type: u16, transaction_id: &[u8; 12]) -> Self {
        out[..2].copy_from_slice(&message_type.to_be_bytes());
        out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out[8..HEADER_LEN].copy_from_slice(transaction_id);
        let mut w = Self {
            out,
            at: HEADER_LEN,
        };
        w.set_length();
        w
    }

    fn attribute(&mut self, attr_type: AttributeType, value: &[u8]) {
        self.attribute_parts(attr_type, value, &[]);
    }

    /// Writes one attribute whose value is `a` then `b`, padded to 4 bytes.
    fn attribute_parts(&mut self, attr_type: AttributeType, a: &[u8], b: &[u8]) {
        let len = a.len() + b.len();
        let at = self.at;
        self.out[at..at + 2].copy_from_slice(&attr_type.0.to_be_bytes());
        // Callers keep values far below 64 KiB (text limits are checked before writing).
        self.out[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
        self.out[at + 4..at + 4 + a.len()].copy_from_slice(a);
        self.out[at + 4 + a.len()..at + 4 + len].copy_from_slice(b);
        self.out[at + 4 + len..at + attr_len(len)].fill(PAD);
        self.at += attr_len(len);
        self.set_length();
    }

    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    fn xor_address(&mut self, addr: SocketAddr, transaction_id: &[u8; 12]) {
        let mask = xor_mask(transaction_id);
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut value = [0u8; 20];
        value[2..4].copy_from_slice(&port.to_be_bytes());
        let ip_len = match addr {
            SocketAddr::V4(a) => {
                value[1] = FAMILY_IPV4;
                value[4..8].copy_from_slice(&a.ip().octets());
                4
            }
            SocketAddr::V6(a) => {
                value[1] = FAMILY_IPV6;
                value[4..20].copy_from_slice(&a.ip().octets());
                16
            }
        };
        for (v, m) in value[4..4 + ip_len].iter_mut().zip(mask) {
            *v ^= m;
        }
        self.attribute(AttributeType::XOR_MAPPED_ADDRESS, &value[..4 + ip_len]);
    }

    /// MESSAGE-INTEGRITY over everything written so far (RFC 8489 §14.5).
    fn integrity(&mut self, key: &[u8]) {
        let mut mac = hmac_sha1(key);
        feed(&mut mac, &self.out[..self.at], self.at, SHA1_LEN);
        let tag = mac.finalize().into_bytes();
        self.attribute(AttributeType::MESSAGE_INTEGRITY, &tag);
    }

    /// FINGERPRINT over everything written so far (RFC 8489 §14.7); its length is counted in
    /// the header before the CRC is taken.
    fn fingerprint(&mut self) {
        let at = self.at;
        self.at += FINGERPRINT_LEN;
        self.set_length();
        let crc = fingerprint(&self.out[..at]);
        self.out[at..at + 2].copy_from_slice(&AttributeType::FINGERPRINT.0.to_be_bytes());
        self.out[at + 2..at + 4].copy_from_slice(&4u16.to_be_bytes());
        self.out[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
    }

    fn set_length(&mut self) {
        let length = (self.at - HEADER_LEN) as u16;
        self.out[2..4].copy_from_slice(&length.to_be_bytes());
    }

    fn finish(self) -> usize {
        self.at
    }
}

/// Length of an attribute with a value of `len` bytes: header plus padded value.
fn attr_len(len: usize) -> usize {
    4 + len.next_multiple_of(4)
}

fn address_len(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// SOFTWARE and reason phrases: "fewer than 128 characters" (RFC 8489 §14.8, §14.14).
fn check_text(text: &str) -> Result<(), Error> {
    if text.chars().count() >= MAX_TEXT_CHARS {
        return Err(Error::BadAttribute);
    }
    Ok(())
}

const PAD: u8 = 0x20;
const INTEGRITY_LEN: usize = 4 + SHA1_LEN;
const FINGERPRINT_LEN: usize = 8;
const MAX_TEXT_CHARS: usize = 128;
/// USERNAME: "fewer than 509 bytes" (RFC 8489 §14.3).
const MAX_USERNAME: usize = 509;
