//! Protection profiles and master keys: what DTLS-SRTP negotiates and exports (RFC 5764 §4.1.2,
//! §4.2; RFC 7714 §14.2).

use core::fmt;

use zeroize::Zeroize;

use super::Error;

/// An SRTP protection profile: cipher, key and salt lengths, and tag lengths.
///
/// The DTLS server picks one from the client's `use_srtp` list; its two-byte id is
/// [`Profile::id`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `SRTP_AEAD_AES_128_GCM` {0x00, 0x07} (RFC 7714 §14.2): AES-128-GCM, 96-bit salt,
    /// 128-bit tag.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` {0x00, 0x08} (RFC 7714 §14.2): AES-256-GCM, 96-bit salt,
    /// 128-bit tag.
    AeadAes256Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80` {0x00, 0x01} (RFC 5764 §4.1.2): AES-128 counter mode,
    /// 112-bit salt, HMAC-SHA1 tag of 80 bits on SRTP and SRTCP.
    Aes128CmHmacSha1_80,
    /// `SRTP_AES128_CM_HMAC_SHA1_32` {0x00, 0x02} (RFC 5764 §4.1.2): as `_80`, but the SRTP tag
    /// is 32 bits. The SRTCP tag stays 80 bits.
    Aes128CmHmacSha1_32,
}

impl Profile {
    /// Every profile, in the order the relay prefers them as DTLS server: GCM authenticates
    /// for less CPU than HMAC-SHA1, and 128-bit GCM is what browsers list first.
    pub const ALL: [Self; 4] = [
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
        Self::Aes128CmHmacSha1_80,
        Self::Aes128CmHmacSha1_32,
    ];

    /// The profile with this DTLS-SRTP id, if the relay implements it.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }

    /// The DTLS-SRTP protection profile id (the `use_srtp` extension's two bytes, big-endian).
    pub fn id(self) -> u16 {
        match self {
            Self::Aes128CmHmacSha1_80 => 0x0001,
            Self::Aes128CmHmacSha1_32 => 0x0002,
            Self::AeadAes128Gcm => 0x0007,
            Self::AeadAes256Gcm => 0x0008,
        }
    }

    /// The registry name, as the API and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Self::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
            Self::Aes128CmHmacSha1_32 => "SRTP_AES128_CM_HMAC_SHA1_32",
        }
    }

    /// Whether this is an AEAD (GCM) profile.
    pub fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }

    /// Master (and session) encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master (and session) salt length in bytes: 12 for GCM (RFC 7714 §12), 14 for AES-CM
    /// (RFC 3711 §8.2).
    pub fn salt_len(self) -> usize {
        if self.is_aead() { 12 } else { 14 }
    }

    /// Bytes SRTP adds to an RTP packet: the authentication tag.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
            Self::Aes128CmHmacSha1_80 => 10,
            Self::Aes128CmHmacSha1_32 => 4,
        }
    }

    /// Bytes SRTCP adds to an RTCP compound: the tag and the 4-byte E flag and SRTCP index.
    pub fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }

    /// Length of the DTLS exporter output this profile needs: two keys and two salts
    /// (RFC 5764 §4.2).
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// The SRTCP tag: 16 bytes for GCM, 10 bytes (80 bits) for both AES-CM profiles.
    pub(super) fn rtcp_tag_len(self) -> usize {
        if self.is_aead() { 16 } else { 10 }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key and master salt for one direction of one leg. Wiped from memory on drop, and
/// never printed.
#[derive(Clone)]
pub struct MasterKey {
    profile: Profile,
    key: [u8; MAX_KEY_LEN],
    salt: [u8; MAX_SALT_LEN],
}

impl MasterKey {
    /// A master key from its parts; their lengths must be the profile's.
    pub fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(Error::BadKeyLength);
        }
        let mut master = Self {
            profile,
            key: [0; MAX_KEY_LEN],
            salt: [0; MAX_SALT_LEN],
        };
        master.key[..key.len()].copy_from_slice(key);
        master.salt[..salt.len()].copy_from_slice(salt);
        Ok(master)
    }

    /// The profile this key is for.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The master key bytes.
    pub(super) fn key(&self) -> &[u8] {
        &self.key[..self.profile.key_len()]
    }

    /// The master salt bytes.
    pub(super) fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.salt_len()]
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.salt.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Both master keys of a leg, as the DTLS server (the relay) uses them.
#[derive(Clone, Debug)]
pub struct LegKeys {
    /// What the relay protects with: the server write key and salt.
    pub local: MasterKey,
    /// What the relay unprotects with: the client write key and salt.
    pub remote: MasterKey,
}

/// Splits DTLS-SRTP keying material (the `EXTRACTOR-dtls_srtp` exporter output) for the DTLS
/// server. RFC 5764 §4.2 lays it out as
///
/// ```text
/// client_write_SRTP_master_key[key_len] | server_write_SRTP_master_key[key_len] |
/// client_write_SRTP_master_salt[salt_len] | server_write_SRTP_master_salt[salt_len]
/// ```
///
/// The relay is always the DTLS server (`a=setup:passive`), so it protects with the server's
/// half and unprotects with the client's.
pub fn split_keying_material(profile: Profile, material: &[u8]) -> Result<LegKeys, Error> {
    if material.len() != profile.keying_material_len() {
        return Err(Error::BadKeyLength);
    }
    let (k, s) = (profile.key_len(), profile.salt_len());
    let (client_key, rest) = material.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    Ok(LegKeys {
        local: MasterKey::new(profile, server_key, server_salt)?,
        remote: MasterKey::new(profile, client_key, client_salt)?,
    })
}

const MAX_KEY_LEN: usize = 32;
const MAX_SALT_LEN: usize = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_id(p.id()), Some(p));
        }
        // RFC 5764 §4.1.2 and RFC 7714 §14.2.
        assert_eq!(Profile::Aes128CmHmacSha1_80.id(), 0x0001);
        assert_eq!(Profile::Aes128CmHmacSha1_32.id(), 0x0002);
        assert_eq!(Profile::AeadAes128Gcm.id(), 0x0007);
        assert_eq!(Profile::AeadAes256Gcm.id(), 0x0008);
        // NULL profiles (0x0005, 0x0006) and unknown ids are not implemented.
        for id in [0x0000, 0x0003, 0x0005, 0x0006, 0x0009, 0xffff] {
            assert_eq!(Profile::from_id(id), None);
        }
    }

    #[test]
    fn lengths() {
        // RFC 5764 §4.2: 2 * (key + salt) bytes of keying material.
        assert_eq!(Profile::Aes128CmHmacSha1_80.keying_material_len(), 60);
        assert_eq!(Profile::Aes128CmHmacSha1_32.keying_material_len(), 60);
        assert_eq!(Profile::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(Profile::AeadAes256Gcm.keying_material_len(), 88);
        assert_eq!(Profile::Aes128CmHmacSha1_80.rtp_overhead(), 10);
        assert_eq!(Profile::Aes128CmHmacSha1_32.rtp_overhead(), 4);
        assert_eq!(Profile::Aes128CmHmacSha1_32.rtcp_overhead(), 14);
        assert_eq!(Profile::AeadAes256Gcm.rtcp_overhead(), 20);
    }

    #[test]
    fn split_gives_server_half_to_local() {
        let p = Profile::AeadAes128Gcm;
        let material: Vec<u8> = (0..56).collect();
        let keys = split_keying_material(p, &material).unwrap();
        assert_eq!(keys.remote.key(), &material[0..16]);
        assert_eq!(keys.local.key(), &material[16..32]);
        assert_eq!(keys.remote.salt(), &material[32..44]);
        assert_eq!(keys.local.salt(), &material[44..56]);
        assert_eq!(
            split_keying_material(p, &material[..55]).unwrap_err(),
            Error::BadKeyLength
        );
        assert_eq!(
            split_keying_material(Profile::Aes128CmHmacSha1_80, &material).unwrap_err(),
            Error::BadKeyLength
        );
    }

    #[test]
    fn master_key_checks_lengths_and_hides_bytes() {
        let p = Profile::Aes128CmHmacSha1_80;
        assert_eq!(
            MasterKey::new(p, &[1; 16], &[2; 12]).unwrap_err(),
            Error::BadKeyLength
        );
        let key = MasterKey::new(p, &[0xab; 16], &[0xcd; 14]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"));
    }
}
