//! `a=fingerprint` (RFC 8122 §5): a hash function and the certificate's digest under it.

use std::fmt;

/// The hash functions RFC 8122 §5 names (the "Hash Function Textual Names" registry) that the
/// relay can check: SHA-1 for old peers, the SHA-2 family for everyone else. MD2/MD5 are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashFunction {
    /// `sha-1`
    Sha1,
    /// `sha-224`
    Sha224,
    /// `sha-256`: the one browsers send and the relay uses for its own certificate.
    Sha256,
    /// `sha-384`
    Sha384,
    /// `sha-512`
    Sha512,
}

impl HashFunction {
    /// Parses the textual name; RFC 8122 §5 says it is case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha-1" => Self::Sha1,
            "sha-224" => Self::Sha224,
            "sha-256" => Self::Sha256,
            "sha-384" => Self::Sha384,
            "sha-512" => Self::Sha512,
            _ => return None,
        })
    }

    /// The name as it is written in SDP (lower case, as browsers write it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha-1",
            Self::Sha224 => "sha-224",
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
        }
    }

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// One `a=fingerprint` value: `sha-256 AB:CD:...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The hash function.
    pub hash: HashFunction,
    /// The digest of the DER certificate, `hash.digest_len()` bytes.
    pub value: Vec<u8>,
}

/// Why an `a=fingerprint` value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FingerprintError {
    /// No space between the hash function and the value.
    Missing,
    /// A hash function the relay does not check (or MD2/MD5, which RFC 8122 §5 forbids).
    UnknownHash,
    /// The value is not colon-separated pairs of hex digits of the hash's length.
    BadValue,
}

impl Fingerprint {
    /// Parses `sha-256 AB:CD:...` (the attribute value after `a=fingerprint:`).
    pub fn parse(value: &str) -> Result<Self, FingerprintError> {
        let (name, hex) = value
            .trim()
            .split_once(' ')
            .ok_or(FingerprintError::Missing)?;
        let hash = HashFunction::from_name(name).ok_or(FingerprintError::UnknownHash)?;
        let hex = hex.trim();
        let mut bytes = Vec::with_capacity(hash.digest_len());
        for pair in hex.split(':') {
            let [hi, lo] = pair.as_bytes() else {
                return Err(FingerprintError::BadValue);
            };
            let byte = hex_digit(*hi)
                .zip(hex_digit(*lo))
                .map(|(hi, lo)| hi << 4 | lo)
                .ok_or(FingerprintError::BadValue)?;
            bytes.push(byte);
        }
        if bytes.len() != hash.digest_len() {
            return Err(FingerprintError::BadValue);
        }
        Ok(Self { hash, value: bytes })
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:...`: upper-case hex pairs, as RFC 8122 §5 writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hash.name())?;
        for (i, byte) in self.value.iter().enumerate() {
            let sep = if i == 0 { ' ' } else { ':' };
            write!(f, "{sep}{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "expected '<hash function> <hex pairs>'",
            Self::UnknownHash => "unsupported hash function (sha-1, sha-224/256/384/512 accepted)",
            Self::BadValue => "the value is not colon-separated hex pairs of the hash's length",
        })
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_chromium_fingerprint() {
        let text = "sha-256 5A:AD:A8:09:F4:F6:9E:95:9B:A3:91:D7:17:1A:8B:91:96:2D:33:C8:F9:EE:DF:\
                    51:61:19:9E:EC:E9:3F:56:8D";
        let fp = Fingerprint::parse(text).unwrap();
        assert_eq!(fp.hash, HashFunction::Sha256);
        assert_eq!(fp.value[0], 0x5a);
        assert_eq!(fp.value[31], 0x8d);
        assert_eq!(fp.to_string(), text);
    }

    #[test]
    fn accepts_every_sha_and_case() {
        for hash in [
            HashFunction::Sha1,
            HashFunction::Sha224,
            HashFunction::Sha256,
            HashFunction::Sha384,
            HashFunction::Sha512,
        ] {
            let fp = Fingerprint {
                hash,
                value: (0..hash.digest_len() as u8).collect(),
            };
            let text = fp.to_string();
            assert_eq!(Fingerprint::parse(&text).unwrap(), fp);
            assert_eq!(Fingerprint::parse(&text.to_lowercase()).unwrap(), fp);
            assert_eq!(Fingerprint::parse(&text.to_uppercase()).unwrap(), fp);
        }
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(
            Fingerprint::parse("sha-256"),
            Err(FingerprintError::Missing)
        );
        assert_eq!(
            Fingerprint::parse("md5 AB:CD"),
            Err(FingerprintError::UnknownHash)
        );
        assert_eq!(
            Fingerprint::parse("sha-1 AB:CD"),
            Err(FingerprintError::BadValue)
        );
        assert_eq!(
            Fingerprint::parse("sha-1 ABC:D"),
            Err(FingerprintError::BadValue)
        );
        let long = vec!["AB"; 21].join(":");
        assert_eq!(
            Fingerprint::parse(&format!("sha-1 {long}")),
            Err(FingerprintError::BadValue)
        );
        let bad = vec!["G0"; 20].join(":");
        assert_eq!(
            Fingerprint::parse(&format!("sha-1 {bad}")),
            Err(FingerprintError::BadValue)
        );
    }
}
