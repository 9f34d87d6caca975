//! MESSAGE-INTEGRITY (RFC 8489 §14.5), MESSAGE-INTEGRITY-SHA256 (§14.6) and FINGERPRINT
//! (§14.7).
//!
//! Both HMACs cover the message up to the integrity attribute, with the header's length field
//! rewritten as if the message ended right after that attribute. The MAC is fed the header
//! with the rewritten length and then the rest, so nothing is copied; the comparison is
//! constant-time (`Mac::verify_slice`).

use core::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::packet::stun::{HEADER_LEN, Message};

/// Why a message's MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegrityError {
    /// The attribute is not in the message (or only where it does not count, such as after a
    /// FINGERPRINT).
    Missing,
    /// The attribute's value has the wrong length (20 bytes for MESSAGE-INTEGRITY, 16..=32 in
    /// steps of 4 for MESSAGE-INTEGRITY-SHA256, 4 for FINGERPRINT).
    BadLength,
    /// FINGERPRINT is not the last attribute.
    Misplaced,
    /// The value does not match: wrong key, or the message was altered.
    Mismatch,
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "STUN integrity attribute missing",
            Self::BadLength => "STUN integrity attribute has the wrong length",
            Self::Misplaced => "STUN FINGERPRINT is not the last attribute",
            Self::Mismatch => "STUN integrity check failed",
        })
    }
}

impl std::error::Error for IntegrityError {}

impl<T: AsRef<[u8]>> Message<T> {
    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`: for ICE
    /// (short-term credentials) the password itself; for long-term credentials
    /// MD5(username ":" realm ":" password).
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let at = self.integrity_offset().ok_or(IntegrityError::Missing)?;
        let attr = self.attribute_at(at).ok_or(IntegrityError::Missing)?;
        if attr.value.len() != SHA1_LEN {
            return Err(IntegrityError::BadLength);
        }
        let mut mac = hmac_sha1(key);
        feed(&mut mac, self.as_bytes(), at, attr.value.len());
        mac.verify_slice(attr.value)
            .map_err(|_| IntegrityError::Mismatch)
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated to 16..32 bytes,
    /// RFC 8489 §14.6) with `key`.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let at = self
            .integrity_sha256_offset()
            .ok_or(IntegrityError::Missing)?;
        let attr = self.attribute_at(at).ok_or(IntegrityError::Missing)?;
        let len = attr.value.len();
        if !(16..=32).contains(&len) || len % 4 != 0 {
            return Err(IntegrityError::BadLength);
        }
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
        feed(&mut mac, self.as_bytes(), at, len);
        mac.verify_truncated_left(attr.value)
            .map_err(|_| IntegrityError::Mismatch)
    }

    /// Checks FINGERPRINT (RFC 8489 §14.7): the last attribute, holding the CRC-32 of the
    /// message before it XORed with 0x5354554E.
    pub fn check_fingerprint(&self) -> Result<(), IntegrityError> {
        let at = self.fingerprint_offset().ok_or(IntegrityError::Missing)?;
        let attr = self.attribute_at(at).ok_or(IntegrityError::Missing)?;
        let value: [u8; 4] = attr
            .value
            .try_into()
            .map_err(|_| IntegrityError::BadLength)?;
        if at + 8 != self.as_bytes().len() {
            return Err(IntegrityError::Misplaced);
        }
        if u32::from_be_bytes(value) != fingerprint(&self.as_bytes()[..at]) {
            return Err(IntegrityError::Mismatch);
        }
        Ok(())
    }
}

/// A fresh HMAC-SHA1 keyed with `key`.
pub(super) fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // HMAC hashes long keys and pads short ones: no key length is refused.
    <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Feeds `message[..at]` to `mac`, with the header's length field set to end after an
/// attribute of `value_len` bytes at `at` (RFC 8489 §14.5, §14.6).
pub(super) fn feed(mac: &mut impl Mac, message: &[u8], at: usize, value_len: usize) {
    // `at` and the value lie inside a message whose length fits in 16 bits.
    let length = (at + 4 + value_len - HEADER_LEN) as u16;
    mac.update(&message[..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&message[4..at]);
}

/// The FINGERPRINT value for a message whose bytes before the attribute are `prefix` (with
/// its length field already counting the FINGERPRINT).
pub(super) fn fingerprint(prefix: &[u8]) -> u32 {
    crc32fast::hash(prefix) ^ FINGERPRINT_XOR
}

pub(super) const SHA1_LEN: usize = 20;
/// "STUN" in ASCII (RFC 8489 §14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554e;
