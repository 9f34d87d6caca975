//! Key schedules: the session keys of one direction of one leg (RFC 3711 §4.3), expanded once
//! into aws-lc-rs keys, and the per-packet transforms that use them with a given index.
//!
//! Read first: RFC 3711 §3.1 (SRTP packet), §3.4 (SRTCP packet), §4.1.1 (AES-CM IV), §4.2
//! (HMAC-SHA1 over the packet and ROC); RFC 7714 §8 (GCM on RTP: the header is the associated
//! data), §9 (on RTCP: the 8-byte header and the E flag and index are), §8.1 and §9.1 (IVs).
//!
//! Nothing here checks indices or remembers them: [`super::Ingress`] and [`super::Egress`] do,
//! before and after these calls.

use core::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroize;

use super::kdf::{Label, Prf};
use super::{Error, MasterKey, Profile};

/// The expanded session keys of one direction of one leg: SRTP and SRTCP, cipher and
/// authentication. Built once (this allocates inside aws-lc-rs), immutable afterwards, `Send`
/// and `Sync`, so workers can share one through an `Arc`.
pub struct Keys {
    profile: Profile,
    rtp: Transform,
    rtcp: Transform,
}

impl Keys {
    /// Derives the six session keys from `master` (RFC 3711 §4.3, key derivation rate 0) and
    /// expands them. The derived bytes are wiped once expanded.
    pub fn new(master: &MasterKey) -> Result<Self, Error> {
        let profile = master.profile();
        let prf = Prf::new(master.key(), master.salt())?;
        let rtp = Transform::new(
            profile,
            &prf,
            [
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            ],
            profile.rtp_overhead(),
        )?;
        let rtcp = Transform::new(
            profile,
            &prf,
            [
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            ],
            profile.rtcp_tag_len(),
        )?;
        Ok(Self { profile, rtp, rtcp })
    }

    /// Keys from session keys given directly, as the RFC 7714 test vectors give them (for both
    /// SRTP and SRTCP). GCM profiles only.
    #[cfg(test)]
    pub(super) fn from_session_gcm(
        profile: Profile,
        key: &[u8],
        salt: &[u8],
    ) -> Result<Self, Error> {
        Ok(Self {
            profile,
            rtp: Transform::gcm(profile, key, salt)?,
            rtcp: Transform::gcm(profile, key, salt)?,
        })
    }

    /// The profile these keys are for.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Encrypts and authenticates an RTP packet in place. `buf[..len]` is the clear packet with
    /// a header of `header_len` bytes; the tag goes at `buf[len..]`. Returns the new length.
    pub(super) fn seal_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_overhead();
        let total = len + tag_len;
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let (packet, rest) = buf.split_at_mut(len);
        let tag = &mut rest[..tag_len];
        match &self.rtp {
            Transform::Gcm { key, salt } => {
                let (header, payload) = packet.split_at_mut(header_len);
                let t = key
                    .seal_in_place_separate_tag(
                        gcm_rtp_nonce(salt, ssrc, index),
                        Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| Error::BufferTooSmall)?;
                tag.copy_from_slice(t.as_ref());
            }
            Transform::Cm {
                key, auth, salt, ..
            } => {
                cm_crypt(key, cm_iv(salt, ssrc, index), &mut packet[header_len..]);
                let roc = ((index >> 16) as u32).to_be_bytes();
                cm_sign(auth, packet, &roc, tag);
            }
        }
        Ok(total)
    }

    /// Encrypts and authenticates the clear RTP packet `clear` (header of `header_len` bytes)
    /// into `out`, leaving `clear` untouched. Returns the protected length.
    pub(super) fn seal_rtp_into(
        &self,
        clear: &[u8],
        out: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, Error> {
        let len = clear.len();
        let tag_len = self.profile.rtp_overhead();
        if out.len() < len + tag_len {
            return Err(Error::BufferTooSmall);
        }
        match &self.rtp {
            Transform::Gcm { key, salt } => {
                // One pass: read the clear payload, write the ciphertext and tag into `out`.
                let (header, payload) = clear.split_at(header_len);
                out[..header_len].copy_from_slice(header);
                let (ciphertext, tag) = out[header_len..len + tag_len].split_at_mut(payload.len());
                key.seal_out_of_place_scatter(
                    gcm_rtp_nonce(salt, ssrc, index),
                    Aad::from(header),
                    payload,
                    ciphertext,
                    &[],
                    tag,
                )
                .map_err(|_| Error::BufferTooSmall)?;
                Ok(len + tag_len)
            }
            Transform::Cm { .. } => {
                // The CTR API works in place only: copy, then encrypt the copy.
                out[..len].copy_from_slice(clear);
                self.seal_rtp(out, len, header_len, ssrc, index)
            }
        }
    }

    /// Authenticates, then decrypts in place, the SRTP packet `buf` (header of `header_len`
    /// bytes, tag at the end) under `index`. Returns the clear length; `buf` past it is scratch.
    /// On failure the header is unchanged but the rest of `buf` may not be.
    pub(super) fn open_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_overhead();
        let Some(len) = buf.len().checked_sub(tag_len).filter(|&l| l >= header_len) else {
            return Err(Error::TooShort);
        };
        let (packet, tag) = buf.split_at_mut(len);
        match &self.rtp {
            Transform::Gcm { key, salt } => {
                let (header, payload) = packet.split_at_mut(header_len);
                key.open_in_place_separate_tag(
                    gcm_rtp_nonce(salt, ssrc, index),
                    Aad::from(&*header),
                    tag,
                    payload,
                )
                .map_err(|_| Error::AuthFailed)?;
            }
            Transform::Cm {
                key, auth, salt, ..
            } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                cm_verify(auth, packet, &roc, tag)?;
                cm_crypt(key, cm_iv(salt, ssrc, index), &mut packet[header_len..]);
            }
        }
        Ok(len)
    }

    /// Encrypts and authenticates an RTCP compound in place with SRTCP index `index` (31 bits)
    /// and the E flag set. `buf[..len]` is the clear compound; the SRTCP trailer and tag go at
    /// `buf[len..]`. Returns the new length.
    pub(super) fn seal_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, Error> {
        let total = len + self.profile.rtcp_overhead();
        if buf.len() < total || len < RTCP_HEADER {
            return Err(Error::BufferTooSmall);
        }
        let e_index = (E_FLAG | index).to_be_bytes();
        match &self.rtcp {
            Transform::Gcm { key, salt } => {
                // RFC 7714 §9.2: header | ciphertext | tag | E || index; the associated data is
                // the header and E || index.
                let (packet, rest) = buf.split_at_mut(len);
                let (header, payload) = packet.split_at_mut(RTCP_HEADER);
                let aad = gcm_rtcp_aad(header, &e_index);
                let t = key
                    .seal_in_place_separate_tag(
                        gcm_rtcp_nonce(salt, ssrc, index),
                        Aad::from(&aad[..]),
                        payload,
                    )
                    .map_err(|_| Error::BufferTooSmall)?;
                rest[..GCM_TAG].copy_from_slice(t.as_ref());
                rest[GCM_TAG..GCM_TAG + 4].copy_from_slice(&e_index);
            }
            Transform::Cm {
                key,
                auth,
                salt,
                tag_len,
            } => {
                // RFC 3711 §3.4: header | encrypted part | E || index | tag, all but the tag
                // authenticated.
                cm_crypt(
                    key,
                    cm_iv(salt, ssrc, u64::from(index)),
                    &mut buf[RTCP_HEADER..len],
                );
                buf[len..len + 4].copy_from_slice(&e_index);
                let (signed, tag) = buf.split_at_mut(len + 4);
                cm_sign(auth, signed, &[], &mut tag[..*tag_len]);
            }
        }
        Ok(total)
    }

    /// Authenticates, then decrypts in place when the E flag is set, the SRTCP packet `buf`.
    /// Returns the SRTCP index (without the E flag) and the clear length.
    pub(super) fn open_rtcp(&self, buf: &mut [u8], ssrc: u32) -> Result<(u32, usize), Error> {
        let overhead = self.profile.rtcp_overhead();
        let Some(len) = buf
            .len()
            .checked_sub(overhead)
            .filter(|&l| l >= RTCP_HEADER)
        else {
            return Err(Error::TooShort);
        };
        match &self.rtcp {
            Transform::Gcm { key, salt } => {
                let (packet, rest) = buf.split_at_mut(len);
                let (tag, e_index) = rest.split_at(GCM_TAG);
                let e_index = [e_index[0], e_index[1], e_index[2], e_index[3]];
                let word = u32::from_be_bytes(e_index);
                let index = word & !E_FLAG;
                let nonce = gcm_rtcp_nonce(salt, ssrc, index);
                if word & E_FLAG != 0 {
                    let (header, payload) = packet.split_at_mut(RTCP_HEADER);
                    let aad = gcm_rtcp_aad(header, &e_index);
                    key.open_in_place_separate_tag(nonce, Aad::from(&aad[..]), tag, payload)
                        .map_err(|_| Error::AuthFailed)?;
                } else {
                    // RFC 7714 §9.3: unencrypted, only authenticated.
                    let expected = gcm_tag_unencrypted(key, nonce, packet, &e_index)?;
                    verify_slices_are_equal(expected.as_ref(), tag)
                        .map_err(|_| Error::AuthFailed)?;
                }
                Ok((index, len))
            }
            Transform::Cm {
                key,
                auth,
                salt,
                tag_len,
            } => {
                let (signed, tag) = buf.split_at_mut(len + 4);
                cm_verify(auth, signed, &[], &tag[..*tag_len])?;
                let e_index = &signed[len..];
                let word = u32::from_be_bytes([e_index[0], e_index[1], e_index[2], e_index[3]]);
                let index = word & !E_FLAG;
                if word & E_FLAG != 0 {
                    cm_crypt(
                        key,
                        cm_iv(salt, ssrc, u64::from(index)),
                        &mut signed[RTCP_HEADER..len],
                    );
                }
                Ok((index, len))
            }
        }
    }

    /// Authenticates an RTCP compound without encrypting it (E = 0), as RFC 7714 §17.3 shows.
    /// The relay always encrypts; this exists to check the vectors in both directions.
    #[cfg(test)]
    pub(super) fn seal_rtcp_unencrypted(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, Error> {
        let Transform::Gcm { key, salt } = &self.rtcp else {
            return Err(Error::BadKeyLength);
        };
        let e_index = index.to_be_bytes();
        let tag = gcm_tag_unencrypted(
            key,
            gcm_rtcp_nonce(salt, ssrc, index),
            &buf[..len],
            &e_index,
        )?;
        buf[len..len + GCM_TAG].copy_from_slice(tag.as_ref());
        buf[len + GCM_TAG..len + GCM_TAG + 4].copy_from_slice(&e_index);
        Ok(len + GCM_TAG + 4)
    }

    /// Reads the SRTCP index (without the E flag) from a protected packet, before it is
    /// authenticated, so the replay check can run first.
    pub(super) fn rtcp_index(&self, buf: &[u8]) -> Result<u32, Error> {
        let overhead = self.profile.rtcp_overhead();
        let len = buf
            .len()
            .checked_sub(overhead)
            .filter(|&l| l >= RTCP_HEADER)
            .ok_or(Error::TooShort)?;
        let at = match self.rtcp {
            Transform::Gcm { .. } => len + GCM_TAG,
            Transform::Cm { .. } => len,
        };
        let w = &buf[at..at + 4];
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) & !E_FLAG)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// One of SRTP or SRTCP's expanded keys.
// The CM variant holds the AES key schedule and HMAC state inline (about a kilobyte); there are
// two per leg and direction, and boxing them would add a pointer chase to every packet.
#[allow(clippy::large_enum_variant)]
enum Transform {
    /// RFC 7714: AES-GCM with the 12-byte session salt.
    Gcm { key: LessSafeKey, salt: [u8; 12] },
    /// RFC 3711: AES-128 in counter mode, HMAC-SHA1 truncated to `tag_len`.
    Cm {
        key: EncryptingKey,
        auth: hmac::Key,
        salt: [u8; 14],
        tag_len: usize,
    },
}

impl Transform {
    /// Derives this transform's session keys with `labels` (encryption, authentication, salt).
    fn new(profile: Profile, prf: &Prf, labels: [Label; 3], tag_len: usize) -> Result<Self, Error> {
        let [enc, auth, salt_label] = labels;
        let mut key = [0u8; 32];
        let mut salt = [0u8; 14];
        let key = &mut key[..profile.key_len()];
        let salt = &mut salt[..profile.salt_len()];
        prf.derive(enc, key);
        prf.derive(salt_label, salt);
        let transform = if profile.is_aead() {
            Self::gcm(profile, key, salt)
        } else {
            // RFC 3711 §4.2.1 / RFC 5764 §4.1.2: n_a = 160, the auth key is 20 bytes.
            let mut auth_key = [0u8; 20];
            prf.derive(auth, &mut auth_key);
            let t = Self::cm(key, &auth_key, salt, tag_len);
            auth_key.zeroize();
            t
        };
        key.zeroize();
        salt.zeroize();
        transform
    }

    fn gcm(profile: Profile, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        let algorithm = match profile {
            Profile::AeadAes256Gcm => &aead::AES_256_GCM,
            _ => &aead::AES_128_GCM,
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| Error::BadKeyLength)?;
        Ok(Self::Gcm {
            key: LessSafeKey::new(key),
            salt: salt.try_into().map_err(|_| Error::BadKeyLength)?,
        })
    }

    fn cm(key: &[u8], auth: &[u8], salt: &[u8], tag_len: usize) -> Result<Self, Error> {
        let algorithm = if key.len() == 32 { &AES_256 } else { &AES_128 };
        let key = UnboundCipherKey::new(algorithm, key)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| Error::BadKeyLength)?;
        Ok(Self::Cm {
            key,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
            salt: salt.try_into().map_err(|_| Error::BadKeyLength)?,
            tag_len,
        })
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        // aws-lc-rs wipes its own key structures; the salts are ours.
        match self {
            Self::Gcm { salt, .. } => salt.zeroize(),
            Self::Cm { salt, .. } => salt.zeroize(),
        }
    }
}

/// RFC 7714 §8.1: `00 00 || SSRC || ROC || SEQ`, XOR the salt.
fn gcm_rtp_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    xor(&mut iv, salt);
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.1: `00 00 || SSRC || 00 00 || 0 || SRTCP index`, XOR the salt.
fn gcm_rtcp_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
    xor(&mut iv, salt);
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.2: the associated data of an encrypted SRTCP packet, the first 8 bytes and the
/// E flag and index.
fn gcm_rtcp_aad(header: &[u8], e_index: &[u8; 4]) -> [u8; RTCP_HEADER + 4] {
    let mut aad = [0u8; RTCP_HEADER + 4];
    aad[..RTCP_HEADER].copy_from_slice(&header[..RTCP_HEADER]);
    aad[RTCP_HEADER..].copy_from_slice(e_index);
    aad
}

/// The GCM tag of an unencrypted SRTCP packet (E = 0, RFC 7714 §9.3): GMAC, the tag over an
/// empty plaintext with associated data `packet || e_index`. aws-lc-rs takes the associated
/// data as one slice, so the two parts are joined in a stack buffer; a compound longer than it
/// gets no tag. The relay itself always sets E, so this only checks what peers send.
fn gcm_tag_unencrypted(
    key: &LessSafeKey,
    nonce: Nonce,
    packet: &[u8],
    e_index: &[u8; 4],
) -> Result<aead::Tag, Error> {
    let mut aad = [0u8; MAX_UNENCRYPTED_RTCP + 4];
    let Some(joined) = aad.get_mut(..packet.len() + 4) else {
        return Err(Error::AuthFailed);
    };
    joined[..packet.len()].copy_from_slice(packet);
    joined[packet.len()..].copy_from_slice(e_index);
    key.seal_in_place_separate_tag(nonce, Aad::from(&*joined), &mut [])
        .map_err(|_| Error::AuthFailed)
}

/// RFC 3711 §4.1.1: `(k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..14].copy_from_slice(&index.to_be_bytes()[2..]);
    xor(&mut iv[..14], salt);
    iv
}

/// XORs the AES-CM keystream for `iv` into `data`.
fn cm_crypt(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) {
    // Fails only for a context CTR does not take; this is its 16-byte IV.
    let _ = key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)));
}

/// Writes the truncated HMAC-SHA1 of `signed || extra` to `tag`.
fn cm_sign(key: &hmac::Key, signed: &[u8], extra: &[u8], tag: &mut [u8]) {
    let full = cm_mac(key, signed, extra);
    tag.copy_from_slice(&full.as_ref()[..tag.len()]);
}

/// Checks `tag` against the truncated HMAC-SHA1 of `signed || extra`, in constant time.
fn cm_verify(key: &hmac::Key, signed: &[u8], extra: &[u8], tag: &[u8]) -> Result<(), Error> {
    let full = cm_mac(key, signed, extra);
    verify_slices_are_equal(&full.as_ref()[..tag.len()], tag).map_err(|_| Error::AuthFailed)
}

fn cm_mac(key: &hmac::Key, signed: &[u8], extra: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(signed);
    ctx.update(extra);
    ctx.sign()
}

fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// RFC 3711 §3.4: the first RTCP header and the sender SSRC stay in the clear.
pub(super) const RTCP_HEADER: usize = 8;
/// The E flag: the top bit of the word that carries the SRTCP index.
const E_FLAG: u32 = 1 << 31;
const GCM_TAG: usize = 16;
/// The longest unencrypted (E = 0) SRTCP compound checked under GCM: a full MTU.
const MAX_UNENCRYPTED_RTCP: usize = 1500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    /// RFC 3711 Appendix B.2 (https://www.rfc-editor.org/rfc/rfc3711#appendix-B.2), the AES-CM
    /// keystream for
    ///
    /// ```text
    /// Session Key:      2B7E151628AED2A6ABF7158809CF4F3C
    /// Rollover Counter: 00000000
    /// Sequence Number:  0000
    /// SSRC:             00000000
    /// Session Salt:     F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000 (already shifted)
    /// ```
    ///
    /// The keystream is the encryption of zeros; the RFC lists the first three blocks and the
    /// three around counter FF00.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key = UnboundCipherKey::new(&AES_128, &hex("2B7E151628AED2A6ABF7158809CF4F3C"))
            .and_then(EncryptingKey::ctr)
            .unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut stream = vec![0u8; 0xff02 * 16];
        cm_crypt(&key, iv, &mut stream);
        let block = |n: usize| stream[n * 16..n * 16 + 16].to_vec();
        // Counter F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000 and on.
        assert_eq!(block(0x0000), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(0x0001), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(0x0002), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        // Counter ...FCFEFFFF, ...FCFF0000, ...FCFF0001: the carry runs into the salt bytes.
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    /// RFC 7714 §16 and §17 print the IVs: SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b gives
    /// `51753c6580c2726f20718414`; SSRC 0x4d617273 ("Mars"), SRTCP index 0x5d4 gives
    /// `517524055203726f207170bb`, both under the salt "Quid pro quo".
    #[test]
    fn rfc7714_ivs() {
        let salt: [u8; 12] = b"Quid pro quo".to_owned();
        assert_eq!(salt.to_vec(), hex("517569642070726f2071756f"));
        let rtp = gcm_rtp_nonce(&salt, 0x5501_a0b2, 0xf17b);
        assert_eq!(rtp.as_ref().to_vec(), hex("51753c6580c2726f20718414"));
        let rtcp = gcm_rtcp_nonce(&salt, 0x4d61_7273, 0x5d4);
        assert_eq!(rtcp.as_ref().to_vec(), hex("517524055203726f207170bb"));
        // The E flag never enters the IV.
        let flagged = gcm_rtcp_nonce(&salt, 0x4d61_7273, 0x8000_05d4);
        assert_eq!(flagged.as_ref(), rtcp.as_ref());
    }

    /// RFC 3711 §4.1.1: the index lands in bytes 8..14 and the SSRC in bytes 4..8.
    #[test]
    fn cm_iv_layout() {
        let iv = cm_iv(&[0; 14], 0x0102_0304, 0x0a0b_0c0d_0e0f);
        assert_eq!(iv.to_vec(), hex("00000000 01020304 0a0b0c0d0e0f 0000"));
    }
}
