//! STUN (RFC 8489 §5, §14): the view accepts exactly what a plain reference check accepts, the
//! attribute iterator tiles the message, the helpers read only the attributes that count, and
//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT agree with independent HMAC and
//! CRC computations, also after the input is re-signed with a fixed key so the success paths
//! run. A Binding response built for the message parses back and verifies.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use relay::packet::stun::{
    AttributeType, BindingResponse, Class, IntegrityError, Message, message_type,
};
use sha1::Sha1;
use sha2::Sha256;

/// The RFC 5769 password.
const KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

fuzz_target!(|data: &[u8]| {
    let parsed = Message::new_checked(data);
    let Some(attrs) = reference_attributes(data) else {
        assert!(parsed.is_err(), "accepted an invalid message");
        return;
    };
    let Ok(m) = parsed else {
        panic!("refused a valid message: {parsed:?}");
    };
    check_header(&m, data);
    check_attributes(&m, &attrs);
    check_protection(&m, data, &attrs);
    check_response(&m, data);
});

/// One attribute as the reference walk finds it: (type, offset, value range).
type Attr = (u16, usize, core::ops::Range<usize>);

/// RFC 8489 §5 and §14 written out plainly: the attributes of a valid message, or `None`.
fn reference_attributes(data: &[u8]) -> Option<Vec<Attr>> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if length % 4 != 0 || 20 + length != data.len() {
        return None;
    }
    let mut attrs = Vec::new();
    let mut at = 20;
    while at < data.len() {
        let header = data.get(at..at + 4)?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let next = at + 4 + len.div_ceil(4) * 4;
        if next > data.len() {
            return None;
        }
        attrs.push((
            u16::from_be_bytes([header[0], header[1]]),
            at,
            at + 4..at + 4 + len,
        ));
        at = next;
    }
    Some(attrs)
}

fn check_header(m: &Message<&[u8]>, data: &[u8]) {
    assert_eq!(m.as_bytes(), data);
    assert_eq!(usize::from(m.length()), data.len() - 20);
    assert_eq!(m.message_type(), u16::from_be_bytes([data[0], data[1]]));
    assert_eq!(message_type(m.method(), m.class()), m.message_type());
    assert_eq!(m.transaction_id()[..], data[8..20]);
}

fn check_attributes(m: &Message<&[u8]>, attrs: &[Attr]) {
    let data = m.as_bytes();
    let walked: Vec<Attr> = m
        .attributes()
        .map(|a| {
            let start = a.offset + 4;
            assert_eq!(a.value, &data[start..start + a.value.len()]);
            (a.attr_type.0, a.offset, start..start + a.value.len())
        })
        .collect();
    assert_eq!(walked, attrs);

    // Helpers read only up to the first protection attribute (RFC 8489 §14.5).
    let protection = [0x0008, 0x001c, 0x8028];
    let covered_end = attrs
        .iter()
        .find(|a| protection.contains(&a.0))
        .map_or(data.len(), |a| a.1);
    let first = |t: u16| {
        attrs
            .iter()
            .find(|a| a.0 == t && a.1 < covered_end)
            .map(|a| &data[a.2.clone()])
    };
    for t in [
        0x0006, 0x8022, 0x0014, 0x0015, 0x0024, 0x0020, 0x0009, 0x0008, 0x8028,
    ] {
        assert_eq!(
            m.attribute(AttributeType(t)),
            first(t),
            "attribute {t:#06x}"
        );
    }
    assert_eq!(m.username(), first(0x0006));
    assert_eq!(m.software(), first(0x8022));
    assert_eq!(m.realm(), first(0x0014));
    assert_eq!(m.nonce(), first(0x0015));
    assert_eq!(m.use_candidate(), first(0x0025).is_some());
    let word = |t: u16| first(t).and_then(|v| <[u8; 4]>::try_from(v).ok());
    let dword = |t: u16| first(t).and_then(|v| <[u8; 8]>::try_from(v).ok());
    assert_eq!(m.priority(), word(0x0024).map(u32::from_be_bytes));
    assert_eq!(m.ice_controlling(), dword(0x802a).map(u64::from_be_bytes));
    assert_eq!(m.ice_controlled(), dword(0x8029).map(u64::from_be_bytes));
    assert_eq!(
        m.xor_mapped_address(),
        first(0x0020).and_then(|v| xor_address(v, data))
    );
    if let Some((code, reason)) = m.error_code() {
        assert!((300..=699).contains(&code));
        let v = first(0x0009).unwrap();
        assert_eq!(reason, &v[4..]);
        assert_eq!(code, u16::from(v[2] & 7) * 100 + u16::from(v[3]));
    }
}

/// Integrity and fingerprint against independent computations, before and after re-signing.
fn check_protection(m: &Message<&[u8]>, data: &[u8], attrs: &[Attr]) {
    // Which attribute counts (RFC 8489 §14.5-14.7): MESSAGE-INTEGRITY before any other
    // protection, MESSAGE-INTEGRITY-SHA256 before FINGERPRINT, the first FINGERPRINT.
    let fingerprint = attrs.iter().find(|a| a.0 == 0x8028).map(|a| a.1);
    let before_fp = |a: &&Attr| fingerprint.is_none_or(|f| a.1 < f);
    let sha256 = attrs
        .iter()
        .filter(before_fp)
        .find(|a| a.0 == 0x001c)
        .map(|a| a.1);
    let sha1 = attrs
        .iter()
        .filter(before_fp)
        .filter(|a| sha256.is_none_or(|s| a.1 < s))
        .find(|a| a.0 == 0x0008)
        .map(|a| a.1);
    assert_eq!(m.fingerprint_offset(), fingerprint);
    assert_eq!(m.integrity_sha256_offset(), sha256);
    assert_eq!(m.integrity_offset(), sha1);

    let value = |at: usize| attrs.iter().find(|a| a.1 == at).unwrap().2.clone();
    let mut signed = data.to_vec();

    match sha1 {
        None => assert_eq!(m.verify_integrity(KEY), Err(IntegrityError::Missing)),
        Some(at) if value(at).len() != 20 => {
            assert_eq!(m.verify_integrity(KEY), Err(IntegrityError::BadLength));
        }
        Some(at) => {
            let mac = hmac_sha1(KEY, data, at, 20);
            let expected = if data[value(at)] == mac[..] {
                Ok(())
            } else {
                Err(IntegrityError::Mismatch)
            };
            assert_eq!(m.verify_integrity(KEY), expected);
        }
    }
    match sha256 {
        None => assert_eq!(m.verify_integrity_sha256(KEY), Err(IntegrityError::Missing)),
        Some(at) => {
            let len = value(at).len();
            if !(16..=32).contains(&len) || len % 4 != 0 {
                assert_eq!(
                    m.verify_integrity_sha256(KEY),
                    Err(IntegrityError::BadLength)
                );
            } else {
                let mac = hmac_sha256(KEY, data, at, len);
                let expected = if data[value(at)] == mac[..len] {
                    Ok(())
                } else {
                    Err(IntegrityError::Mismatch)
                };
                assert_eq!(m.verify_integrity_sha256(KEY), expected);
            }
        }
    }
    match fingerprint {
        None => assert_eq!(m.check_fingerprint(), Err(IntegrityError::Missing)),
        Some(at) if value(at).len() != 4 => {
            assert_eq!(m.check_fingerprint(), Err(IntegrityError::BadLength));
        }
        Some(at) if at + 8 != data.len() => {
            assert_eq!(m.check_fingerprint(), Err(IntegrityError::Misplaced));
        }
        Some(at) => {
            let crc = crc32fast::hash(&data[..at]) ^ 0x5354_554e;
            let expected = if data[value(at)] == crc.to_be_bytes() {
                Ok(())
            } else {
                Err(IntegrityError::Mismatch)
            };
            assert_eq!(m.check_fingerprint(), expected);
        }
    }

    // Re-signed with KEY, in message order (each later check covers the earlier values): every
    // integrity that can be valid now verifies, a wrong key does not, and a fresh FINGERPRINT
    // over the re-signed bytes checks.
    if let Some(at) = sha1.filter(|&at| value(at).len() == 20) {
        let mac = hmac_sha1(KEY, &signed, at, 20);
        signed[value(at)].copy_from_slice(&mac);
    }
    if let Some(at) = sha256 {
        let len = value(at).len();
        if (16..=32).contains(&len) && len % 4 == 0 {
            let mac = hmac_sha256(KEY, &signed, at, len);
            signed[value(at)].copy_from_slice(&mac[..len]);
        }
    }
    if let Some(at) = fingerprint.filter(|&at| value(at).len() == 4 && at + 8 == data.len()) {
        let crc = crc32fast::hash(&signed[..at]) ^ 0x5354_554e;
        signed[value(at)].copy_from_slice(&crc.to_be_bytes());
    }
    let resigned = Message::new_checked(&signed[..]).expect("re-signing keeps the layout");
    if sha1.is_some_and(|at| value(at).len() == 20) {
        assert_eq!(resigned.verify_integrity(KEY), Ok(()));
        assert_eq!(
            resigned.verify_integrity(b"wrong"),
            Err(IntegrityError::Mismatch)
        );
    }
    if let Some(at) = sha256 {
        let len = value(at).len();
        if (16..=32).contains(&len) && len % 4 == 0 {
            assert_eq!(resigned.verify_integrity_sha256(KEY), Ok(()));
            assert_eq!(
                resigned.verify_integrity_sha256(b"wrong"),
                Err(IntegrityError::Mismatch)
            );
        }
    }
    if fingerprint.is_some_and(|at| value(at).len() == 4 && at + 8 == data.len()) {
        assert_eq!(resigned.check_fingerprint(), Ok(()));
    }
}

/// The response the relay would send parses back and verifies.
fn check_response(m: &Message<&[u8]>, data: &[u8]) {
    // A source address taken from the input, IPv4 or IPv6.
    let tid = m.transaction_id();
    let port = u16::from_be_bytes([tid[0], tid[1]]);
    let ip = if data[19] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(tid[2], tid[3], tid[4], tid[5]))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            u128::from_be_bytes([tid[4]; 16]) ^ u128::from(port),
        ))
    };
    let mapped = SocketAddr::new(ip, port);
    let response = BindingResponse {
        transaction_id: tid,
        mapped,
        software: m
            .software()
            .and_then(|s| std::str::from_utf8(s).ok())
            .filter(|s| s.len() < 128),
        integrity_key: KEY,
    };
    let mut out = [0u8; 256];
    let len = response
        .emit(&mut out)
        .expect("a short SOFTWARE text is accepted");
    assert_eq!(len, response.buffer_len());
    let r = Message::new_checked(&out[..len]).expect("our response parses");
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.transaction_id(), tid);
    assert_eq!(r.xor_mapped_address(), Some(mapped));
    assert_eq!(r.verify_integrity(KEY), Ok(()));
    assert_eq!(r.check_fingerprint(), Ok(()));
}

fn xor_address(v: &[u8], data: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ 0x2112;
    let mask: Vec<u8> = data[4..20].to_vec();
    let addr: Vec<u8> = v.get(4..)?.iter().zip(&mask).map(|(a, m)| a ^ m).collect();
    let ip = match (v[1], v.len()) {
        (1, 8) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&addr[..]).ok()?)),
        (2, 20) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&addr[..]).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// HMAC over the message before the attribute at `at`, with the length field set to end
/// right after that attribute (RFC 8489 §14.5).
fn hmac_sha1(key: &[u8], data: &[u8], at: usize, value_len: usize) -> Vec<u8> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap();
    mac.update(&prefix(data, at, value_len));
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8], at: usize, value_len: usize) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(&prefix(data, at, value_len));
    mac.finalize().into_bytes().to_vec()
}

fn prefix(data: &[u8], at: usize, value_len: usize) -> Vec<u8> {
    let mut p = data[..at].to_vec();
    let length = (at + 4 + value_len - 20) as u16;
    p[2..4].copy_from_slice(&length.to_be_bytes());
    p
}
