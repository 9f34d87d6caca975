//! The relay's DTLS certificate: one self-signed ECDSA P-256 certificate per process.

use std::fmt;

use dimpl::DtlsCertificate;
use rand::RngCore;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::sdp::{Fingerprint, HashFunction};

/// The relay's certificate and private key, with the SHA-256 fingerprint that goes into SDP.
///
/// Made once at start-up and shared by every handshake (WebRTC only pins the fingerprint, so
/// one certificate serves every participant).
#[derive(Clone)]
pub struct Certificate {
    inner: DtlsCertificate,
    fingerprint: Fingerprint,
}

/// The certificate could not be made (the crypto library refused: a bug or a broken build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateError(String);

impl Certificate {
    /// Generates a fresh key pair and a self-signed certificate over it.
    ///
    /// - ECDSA P-256 with SHA-256: RFC 8827 §6.5 makes it mandatory for WebRTC endpoints, and
    ///   its flights fit in one datagram.
    /// - A random, positive 127-bit serial from `rng`: Firefox refuses a certificate whose issuer
    ///   and serial it saw before with another key (`SEC_ERROR_REUSED_ISSUER_AND_SERIAL`), so two
    ///   processes must never share one.
    /// - Validity from 1975 to 4096 (rcgen's default): WebRTC peers check the fingerprint, not
    ///   dates, and this keeps the clock out of the module.
    ///
    /// The key pair itself comes from the operating system's randomness (aws-lc).
    pub fn generate(rng: &mut impl RngCore) -> Result<Self, CertificateError> {
        let key_pair =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertificateError::from)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "relay");
        params.distinguished_name = name;
        let mut serial = [0u8; 16];
        rng.fill_bytes(&mut serial);
        serial[0] = (serial[0] & 0x7f) | 0x40; // positive and exactly 16 octets (RFC 5280 §4.1.2.2)
        params.serial_number = Some(serial.to_vec().into());
        let cert = params
            .self_signed(&key_pair)
            .map_err(CertificateError::from)?;
        let der = cert.der().to_vec();
        let fingerprint = fingerprint_of(HashFunction::Sha256, &der);
        let inner = DtlsCertificate {
            certificate: der,
            private_key: key_pair.serialize_der(),
        };
        Ok(Self { inner, fingerprint })
    }

    /// The SHA-256 fingerprint; `to_string()` gives the `a=fingerprint` value
    /// `sha-256 AB:CD:...`.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate in DER.
    pub fn der(&self) -> &[u8] {
        &self.inner.certificate
    }

    pub(crate) fn dimpl(&self) -> DtlsCertificate {
        self.inner.clone()
    }
}

/// The fingerprint of a DER certificate under `hash` (RFC 8122 §5: the hash of the DER form).
pub fn fingerprint_of(hash: HashFunction, der: &[u8]) -> Fingerprint {
    let value = match hash {
        HashFunction::Sha1 => Sha1::digest(der).to_vec(),
        HashFunction::Sha224 => Sha224::digest(der).to_vec(),
        HashFunction::Sha256 => Sha256::digest(der).to_vec(),
        HashFunction::Sha384 => Sha384::digest(der).to_vec(),
        HashFunction::Sha512 => Sha512::digest(der).to_vec(),
    };
    Fingerprint { hash, value }
}

impl fmt::Debug for Certificate {
    /// The fingerprint only: never the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish()
    }
}

impl From<rcgen::Error> for CertificateError {
    fn from(e: rcgen::Error) -> Self {
        Self(e.to_string())
    }
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot make the DTLS certificate: {}", self.0)
    }
}

impl std::error::Error for CertificateError {}
