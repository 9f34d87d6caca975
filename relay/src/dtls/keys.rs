//! What a finished handshake hands to the SRTP module: the profile and the master keys.

use std::fmt;

/// The SRTP protection profiles the relay negotiates (RFC 5764 §4.1.2, RFC 7714 §14.2), in the
/// server's order of preference: as DTLS server the relay chooses, and AEAD is both cheaper per
/// packet and stronger than HMAC-SHA1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AEAD_AES_256_GCM` (0x0008): 32-byte key, 12-byte salt.
    AeadAes256Gcm,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001): 16-byte key, 14-byte salt.
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm => 32,
            Self::AeadAes128Gcm | Self::Aes128CmHmacSha1_80 => 16,
        }
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm | Self::AeadAes128Gcm => 12,
            Self::Aes128CmHmacSha1_80 => 14,
        }
    }

    /// The name in the IANA "DTLS-SRTP Protection Profiles" registry (RFC 5764 §4.1.2,
    /// RFC 7714 §14.2), which `srtpCipher` in `getStats()` uses: Chromium 156 reports
    /// `SRTP_AEAD_AES_256_GCM` against the relay (tests/tests/webrtc_dtls.rs).
    pub fn name(self) -> &'static str {
        match self {
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
        }
    }

    pub(crate) fn from_dimpl(profile: dimpl::SrtpProfile) -> Option<Self> {
        match profile {
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Self::AeadAes256Gcm),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Self::AeadAes128Gcm),
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Self::Aes128CmHmacSha1_80),
            _ => None,
        }
    }
}

/// One direction's SRTP master key and master salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// Master key, [`SrtpProfile::key_len`] bytes.
    pub key: Vec<u8>,
    /// Master salt, [`SrtpProfile::salt_len`] bytes.
    pub salt: Vec<u8>,
}

/// The keys of one DTLS-SRTP session, sliced as RFC 5764 §4.2 lays out the exporter output
/// (`EXTRACTOR-dtls_srtp`): client key, server key, client salt, server salt.
///
/// The relay is the DTLS server, so it **protects** what it sends with [`SrtpKeys::server`]
/// and **unprotects** what it receives with [`SrtpKeys::client`].
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The negotiated profile.
    pub profile: SrtpProfile,
    /// `client_write_SRTP_master_key` and `_salt`: what the browser sends with.
    pub client: MasterKey,
    /// `server_write_SRTP_master_key` and `_salt`: what the relay sends with.
    pub server: MasterKey,
}

impl SrtpKeys {
    /// Slices exporter output of `2 * (key_len + salt_len)` bytes; `None` for another length.
    pub fn from_exporter(profile: SrtpProfile, material: &[u8]) -> Option<Self> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() != 2 * (k + s) {
            return None;
        }
        let (keys, salts) = material.split_at(2 * k);
        Some(Self {
            profile,
            client: MasterKey {
                key: keys[..k].to_vec(),
                salt: salts[..s].to_vec(),
            },
            server: MasterKey {
                key: keys[k..].to_vec(),
                salt: salts[s..].to_vec(),
            },
        })
    }
}

impl fmt::Debug for MasterKey {
    /// Lengths only: key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MasterKey({} + {} bytes)",
            self.key.len(),
            self.salt.len()
        )
    }
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}
