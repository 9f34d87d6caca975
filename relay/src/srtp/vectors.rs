//! RFC 7714 §16 (SRTP) and §17 (SRTCP) test vectors, byte for byte, in both directions
//! (https://www.rfc-editor.org/rfc/rfc7714#section-16).
//!
//! The RFC gives session keys, not master keys: "The 16-octet (128-bit) key is 00 01 02 ... 0f,
//! and the 32-octet (256-bit) key is 00 01 02 ... 1f", with the salt "Quid pro quo"
//! (51756964 2070726f 2071756f), ROC 0, and for SRTCP the index 000005d4.
//! The RFC 3711 Appendix B vectors are next to the code they check (`kdf.rs`, `keys.rs`).

use super::tests::hex;
use super::*;

const SALT: &str = "51756964 2070726f 2071756f";
const KEY_128: &str = "00010203 04050607 08090a0b 0c0d0e0f";
const KEY_256: &str = "00010203 04050607 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f";

/// §16: "Encrypting the following packet" (12-octet header, then "Gallia est omnis divisa in
/// partes tres").
const RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
                   69736120 696e2070 61727465 73207472 6573";

/// §16.1.1 "Encrypted and tagged packet" (AEAD_AES_128_GCM).
const SRTP_128: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                        be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                        6a9152cf 765ee439 0cce";

/// §16.2.1 "Encrypted and tagged packet" (AEAD_AES_256_GCM).
const SRTP_256: &str = "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa
                        b1801238 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff
                        d6b0f9bb 7878d7a7 6c13";

/// §17: the RTCP compound (an SR from SSRC "Mars").
const RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
                    deadbeef deadbeef deadbeef deadbeef deadbeef";

/// §17.1 "SRTCP AEAD_AES_128_GCM Encryption and Tagging": ciphertext, tag, then E || index.
const SRTCP_128: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                         6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                         96cf4d2f c5abf872 45d9eade 800005d4";

/// §17.2 "SRTCP AEAD_AES_256_GCM Verification and Decryption".
const SRTCP_256: &str = "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d
                         bffe0a50 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c
                         4446839f 57ff6f6c b26ac3be 800005d4";

/// §17.3 "SRTCP AEAD_AES_128_GCM Tagging Only": the clear compound, the tag, E = 0 || index.
const SRTCP_128_TAG_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a
                                  0000e930 4c756e61 deadbeef deadbeef deadbeef deadbeef
                                  deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4";

/// §17.4, the same under AEAD_AES_256_GCM.
const SRTCP_256_TAG_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a
                                  0000e930 4c756e61 deadbeef deadbeef deadbeef deadbeef
                                  deadbeef 91db4afb feee5a97 8fab4393 ed2615fe 000005d4";

const RTCP_SSRC: u32 = 0x4d61_7273;
const RTCP_INDEX: u32 = 0x5d4;

fn keys(profile: Profile) -> Keys {
    let key = match profile {
        Profile::AeadAes128Gcm => hex(KEY_128),
        _ => hex(KEY_256),
    };
    Keys::from_session_gcm(profile, &key, &hex(SALT)).unwrap()
}

fn cases() -> [(Profile, &'static str, &'static str, &'static str); 2] {
    [
        (
            Profile::AeadAes128Gcm,
            SRTP_128,
            SRTCP_128,
            SRTCP_128_TAG_ONLY,
        ),
        (
            Profile::AeadAes256Gcm,
            SRTP_256,
            SRTCP_256,
            SRTCP_256_TAG_ONLY,
        ),
    ]
}

/// §16.1.1, §16.2.1 (encryption) and §16.1.2, §16.2.2 (decryption) through the leg types: the
/// first packet of an SSRC has ROC 0, so its index is its sequence number 0xf17b.
#[test]
fn rfc7714_16_srtp() {
    for (profile, srtp, _, _) in cases() {
        let clear = hex(RTP);
        let expected = hex(srtp);

        let mut out = vec![0u8; expected.len()];
        let mut egress = Egress::new(keys(profile));
        assert_eq!(egress.protect_rtp(&clear, &mut out), Ok(expected.len()));
        assert_eq!(out, expected, "{profile}: protect (copy)");

        let mut buf = clear.clone();
        buf.resize(expected.len(), 0);
        let mut egress = Egress::new(keys(profile));
        assert_eq!(
            egress.protect_rtp_in_place(&mut buf, clear.len()),
            Ok(expected.len())
        );
        assert_eq!(buf, expected, "{profile}: protect (in place)");

        let mut ingress = Ingress::new(keys(profile));
        let mut buf = expected.clone();
        assert_eq!(ingress.unprotect_rtp(&mut buf), Ok(clear.len()));
        assert_eq!(buf[..clear.len()], clear[..], "{profile}: unprotect");
        let state = ingress.rtp_state(Ssrc(0x5501_a0b2)).unwrap();
        assert_eq!((state.roc(), state.highest()), (0, Some(0xf17b)));

        // One flipped bit anywhere, header included, and it no longer authenticates.
        for at in [0, 3, 11, 12, 30, expected.len() - 1] {
            let mut forged = expected.clone();
            forged[at] ^= 0x02;
            let mut ingress = Ingress::new(keys(profile));
            assert!(
                ingress.unprotect_rtp(&mut forged).is_err(),
                "{profile} byte {at}"
            );
        }
    }
}

/// §17.1 (encryption) and §17.2 (verification and decryption), each in both directions, at
/// SRTCP index 0x5d4.
#[test]
fn rfc7714_17_srtcp_encrypted() {
    for (profile, _, srtcp, _) in cases() {
        let clear = hex(RTCP);
        let expected = hex(srtcp);

        let egress = Egress::new(keys(profile));
        egress.set_rtcp_index(RTCP_INDEX);
        let mut out = vec![0u8; expected.len()];
        assert_eq!(egress.protect_rtcp(&clear, &mut out), Ok(expected.len()));
        assert_eq!(out, expected, "{profile}: protect");

        let mut ingress = Ingress::new(keys(profile));
        let mut buf = expected.clone();
        assert_eq!(ingress.unprotect_rtcp(&mut buf), Ok(clear.len()));
        assert_eq!(buf[..clear.len()], clear[..], "{profile}: unprotect");
        let state = ingress.rtcp_state(Ssrc(RTCP_SSRC)).unwrap();
        assert_eq!(state.highest(), Some(u64::from(RTCP_INDEX)));

        let mut forged = expected.clone();
        forged[20] ^= 0x80;
        assert_eq!(
            Ingress::new(keys(profile)).unprotect_rtcp(&mut forged),
            Err(Error::AuthFailed)
        );
    }
}

/// §17.3 and §17.4: authenticated but not encrypted (E = 0). The relay never sends this, but
/// must accept it from a peer.
#[test]
fn rfc7714_17_srtcp_tag_only() {
    for (profile, _, _, tagged) in cases() {
        let clear = hex(RTCP);
        let expected = hex(tagged);

        let k = keys(profile);
        let mut buf = clear.clone();
        buf.resize(expected.len(), 0);
        assert_eq!(
            k.seal_rtcp_unencrypted(&mut buf, clear.len(), RTCP_SSRC, RTCP_INDEX),
            Ok(expected.len())
        );
        assert_eq!(buf, expected, "{profile}: tag");

        let mut ingress = Ingress::new(keys(profile));
        let mut buf = expected.clone();
        assert_eq!(ingress.unprotect_rtcp(&mut buf), Ok(clear.len()));
        assert_eq!(buf[..clear.len()], clear[..], "{profile}: verify");

        let mut forged = expected.clone();
        forged[9] ^= 1;
        assert_eq!(
            Ingress::new(keys(profile)).unprotect_rtcp(&mut forged),
            Err(Error::AuthFailed)
        );
    }
}
