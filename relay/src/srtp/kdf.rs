//! The SRTP key derivation function (RFC 3711 §4.3) with the AES-CM PRF (§4.3.3), key derivation
//! rate 0: session keys depend on the master key, the master salt and a label only.
//!
//! RFC 3711 §4.3.1: key_id is the 8-bit label followed by r = index DIV key_derivation_rate
//! (48 bits, 0 at rate 0); x is key_id XOR the master salt, right-aligned. §4.3.3: the PRF is
//! AES in counter mode keyed with the master key, IV = x * 2^16.
//!
//! AES-256 master keys use AES-256 as the PRF (RFC 6188 §7). The 96-bit master salts of the GCM
//! profiles (RFC 7714 §11) take the place of the top 96 of the 112 bits, with the low 16 bits
//! zero, as libsrtp (which the browsers use) derives them; the interop test against libsrtp
//! checks that.

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroize;

use super::Error;

/// The labels of RFC 3711 §4.3.2, for SRTP (0-2) and SRTCP (3-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Label {
    RtpEncryption = 0x00,
    RtpAuthentication = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuthentication = 0x04,
    RtcpSalt = 0x05,
}

/// The AES-CM PRF keyed with one master key and salt.
pub(super) struct Prf {
    aes: EncryptingKey,
    salt: [u8; 14],
}

impl Prf {
    /// `key` is 16 or 32 bytes, `salt` 12 or 14.
    pub(super) fn new(key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        let algorithm = match key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(Error::BadKeyLength),
        };
        if salt.len() != 12 && salt.len() != 14 {
            return Err(Error::BadKeyLength);
        }
        let aes = UnboundCipherKey::new(algorithm, key)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| Error::BadKeyLength)?;
        let mut padded = [0; 14];
        padded[..salt.len()].copy_from_slice(salt);
        Ok(Self { aes, salt: padded })
    }

    /// Fills `out` with the first `out.len()` bytes of the PRF output for `label`.
    pub(super) fn derive(&self, label: Label, out: &mut [u8]) {
        // key_id = label || r (48 bits, 0): right-aligned in the 112-bit x, the label is byte 7.
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        iv[7] ^= label as u8;
        out.fill(0);
        // The AES-CM keystream is the encryption of zeros. `less_safe_encrypt` fails only for a
        // context of the wrong kind, and this one is the 16-byte IV CTR takes.
        let _ = self
            .aes
            .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::<16>::from(iv)));
        iv.zeroize();
    }
}

impl Drop for Prf {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    /// RFC 3711 Appendix B.3 (https://www.rfc-editor.org/rfc/rfc3711#appendix-B.3):
    ///
    /// ```text
    /// master key:  E1F97A0D3E018BE0D64FA32C06DE4139
    /// master salt: 0EC675AD498AFEEBB6960B3AABE6
    /// ```
    #[test]
    fn rfc3711_b3_key_derivation() {
        let prf = Prf::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();

        // Cipher key: label 0.
        let mut key = [0u8; 16];
        prf.derive(Label::RtpEncryption, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

        // Cipher salt: label 2, one keystream block, of which the first 112 bits are the
        // session salt.
        let mut salt = [0u8; 16];
        prf.derive(Label::RtpSalt, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE17AC6"));

        // Authentication key: label 1, the 94 bytes of keystream the RFC lists (n_a = 160
        // takes the first 20).
        let mut auth = [0u8; 94];
        prf.derive(Label::RtpAuthentication, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A15\
                 6D38BAA48F0A0ACF3C34E2359E6CDBCE\
                 E049646C43D9327AD175578EF7227098\
                 6371C10C9A369AC2F94A8C5FBCDDDC25\
                 6D6E919A48B610EF17C2041E47403576\
                 6B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    #[test]
    fn refuses_bad_lengths() {
        assert!(Prf::new(&[0; 24], &[0; 14]).is_err());
        assert!(Prf::new(&[0; 16], &[0; 13]).is_err());
        assert!(Prf::new(&[0; 32], &[0; 12]).is_ok());
    }
}
