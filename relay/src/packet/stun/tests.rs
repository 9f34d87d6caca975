//! STUN tests: the RFC 5769 vectors byte for byte, then builders and malformed input.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1 (https://www.rfc-editor.org/rfc/rfc5769#section-2.1): "This request uses the
/// following parameters: Software name: "STUN test client" (without quotes); Username:
/// "evtj:h6vY" (without quotes); Password: "VOkJxbRl1RmTxUk/WvJxBt" (without quotes)".
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 §2.2: "Password: "VOkJxbRl1RmTxUk/WvJxBt"; Software name: "test vector";
/// Mapped address: 192.0.2.1 port 32853".
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 §2.3: "Mapped address: 2001:db8:1234:5678:11:2233:4455:6677 port 32853".
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 §2.4: "Username: "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>" ... Password:
/// "The<U+00AA>M<U+00AA>tr<U+2168>" resp. "TheMatrIX" (without quotes) respectively before and
/// after SASLprep processing; Nonce: "f//499k954d6OL34oL9FSTvy64sA"; Realm: "example.org"".
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    let m = Message::new_checked(&bytes[..]).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.message_type(), 0x0001);
    assert_eq!(m.length(), 0x58);
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(m.software(), Some(&b"STUN test client"[..]));
    assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.priority(), Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
    assert_eq!(m.ice_controlling(), None);
    assert!(!m.use_candidate());
    assert_eq!(m.xor_mapped_address(), None);
    assert_eq!(m.integrity_offset(), Some(76));
    assert_eq!(m.fingerprint_offset(), Some(100));
    assert_eq!(m.attributes().count(), 6);
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(
        m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"),
        Err(IntegrityError::Mismatch)
    );
    assert_eq!(
        m.verify_integrity_sha256(PASSWORD),
        Err(IntegrityError::Missing)
    );
    assert_eq!(m.check_fingerprint(), Ok(()));
}

#[test]
fn rfc5769_ipv4_response() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let m = Message::new_checked(&bytes[..]).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.software(), Some(&b"test vector"[..]));
    let mapped: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(m.xor_mapped_address(), Some(mapped));
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.check_fingerprint(), Ok(()));

    let response = BindingResponse {
        transaction_id: m.transaction_id(),
        mapped,
        software: Some("test vector"),
        integrity_key: PASSWORD,
    };
    assert_eq!(response.buffer_len(), bytes.len());
    let mut out = [0u8; 128];
    let n = response.emit(&mut out).unwrap();
    assert_eq!(out[..n], bytes[..]);
}

#[test]
fn rfc5769_ipv6_response() {
    let bytes = hex(SAMPLE_IPV6_RESPONSE);
    let m = Message::new_checked(&bytes[..]).unwrap();
    assert_eq!(m.class(), Class::Success);
    let mapped: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(m.xor_mapped_address(), Some(mapped));
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.check_fingerprint(), Ok(()));

    let response = BindingResponse {
        transaction_id: TID,
        mapped,
        software: Some("test vector"),
        integrity_key: PASSWORD,
    };
    assert_eq!(response.buffer_len(), bytes.len());
    let mut out = [0u8; 128];
    let n = response.emit(&mut out).unwrap();
    assert_eq!(out[..n], bytes[..]);
}

#[test]
fn rfc5769_long_term_request() {
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    let m = Message::new_checked(&bytes[..]).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.username(), Some("マトリックス".as_bytes()));
    assert_eq!(m.nonce(), Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..]));
    assert_eq!(m.realm(), Some(&b"example.org"[..]));
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::Missing));
    // Long-term key = MD5("マトリックス:example.org:TheMatrIX"), computed outside the test.
    let key = hex("e8 ca 7a d5 9d 5e b0 51 8e 31 29 11 d2 da b2 a9");
    assert_eq!(m.verify_integrity(&key), Ok(()));
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Mismatch));
}

#[test]
fn message_type_bits() {
    for method in [0x001, 0x003, 0x00a, 0x0f0, 0xabc, 0xfff] {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let t = message_type(method, class);
            assert_eq!(t & 0xc000, 0);
            let mut b = hex(SAMPLE_IPV4_RESPONSE);
            b[..2].copy_from_slice(&t.to_be_bytes());
            let m = Message::new_checked(&b[..]).unwrap();
            assert_eq!((m.method(), m.class()), (method, class));
        }
    }
    // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
    assert_eq!(message_type(BINDING, Class::Request), 0x0001);
    assert_eq!(message_type(BINDING, Class::Indication), 0x0011);
    assert_eq!(message_type(BINDING, Class::Success), 0x0101);
    assert_eq!(message_type(BINDING, Class::Error), 0x0111);
}

#[test]
fn header_errors() {
    let good = hex(SAMPLE_REQUEST);
    assert_eq!(Message::new_checked(&good[..19]), Err(Error::Truncated));
    assert_eq!(Message::new_checked(&[][..]), Err(Error::Truncated));
    let mut b = good.clone();
    b[0] |= 0x40;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadHeader));
    let mut b = good.clone();
    b[7] ^= 1;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadMagic));
    let mut b = good.clone();
    b[3] = 0x57;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadLength));
    // Length past the datagram, and bytes after the message.
    assert_eq!(
        Message::new_checked(&good[..good.len() - 4]),
        Err(Error::Truncated)
    );
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadLength));
    // An empty message is fine.
    let mut b = good[..20].to_vec();
    b[3] = 0;
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.attributes().count(), 0);
    assert_eq!(m.username(), None);
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Missing));
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::Missing));
}

#[test]
fn attribute_errors() {
    let good = hex(SAMPLE_REQUEST);
    // SOFTWARE claiming 0x58 bytes runs past the end.
    let mut b = good.clone();
    b[23] = 0x58;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadAttribute));
    // USERNAME's padding runs past the end of a message cut right after its value.
    let mut b = good[..72].to_vec();
    b[3] = 52;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadAttribute));
    // A PRIORITY header with no room for its value.
    let mut b = good[..40].to_vec();
    b.extend_from_slice(&[0x00, 0x24, 0x00, 0x08]);
    b[3] = 24;
    assert_eq!(Message::new_checked(&b[..]), Err(Error::BadAttribute));
}

#[test]
fn malformed_attribute_values_read_as_none() {
    let mut b = hex(SAMPLE_IPV4_RESPONSE);
    // Family 3.
    b[41] = 3;
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.xor_mapped_address(), None);
    // Family 2 with an IPv4-sized value.
    b[41] = 2;
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.xor_mapped_address(), None);
    // PRIORITY with 8 bytes, ICE-CONTROLLED with 4: written over the request's own values.
    let mut r = hex(SAMPLE_REQUEST);
    r[40..42].copy_from_slice(&AttributeType::ICE_CONTROLLED.0.to_be_bytes());
    r[48..50].copy_from_slice(&AttributeType::PRIORITY.0.to_be_bytes());
    let m = Message::new_checked(&r[..]).unwrap();
    assert_eq!(m.priority(), None);
    assert_eq!(m.ice_controlled(), None);
}

#[test]
fn attributes_after_integrity_are_ignored() {
    // Append a USE-CANDIDATE and a second USERNAME after FINGERPRINT and fix the length.
    let mut b = hex(SAMPLE_REQUEST);
    b.extend_from_slice(&[
        0x00, 0x25, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, b'x', 0x20, 0x20, 0x20,
    ]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::new_checked(&b[..]).unwrap();
    assert!(!m.use_candidate());
    assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.attributes().count(), 8);
    // MESSAGE-INTEGRITY still verifies (it covers only what precedes it) ...
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    // ... but FINGERPRINT is no longer last.
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::Misplaced));
}

#[test]
fn tampering_is_detected() {
    let good = hex(SAMPLE_REQUEST);
    // Change a byte of PRIORITY.
    let mut b = good.clone();
    b[47] ^= 1;
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Mismatch));
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::Mismatch));
    // Change the MAC itself.
    let mut b = good.clone();
    b[90] ^= 0x80;
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Mismatch));
    // MESSAGE-INTEGRITY of the wrong length: rewrite it as a 16-byte value and pad.
    let mut b = good[..76].to_vec();
    b.extend_from_slice(&[0x00, 0x08, 0x00, 0x10]);
    b.extend_from_slice(&[0; 16]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::BadLength));
    // FINGERPRINT of the wrong length.
    let mut b = good[..100].to_vec();
    b.extend_from_slice(&[0x80, 0x28, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::BadLength));
}

/// The §2.1 request's attributes up to USERNAME, then a MESSAGE-INTEGRITY-SHA256 of `tag_len`
/// bytes computed here independently of the code under test.
fn with_sha256(key: &[u8], tag_len: usize) -> Vec<u8> {
    let mut b = hex(SAMPLE_REQUEST)[..76].to_vec();
    let length = (76 + 4 + tag_len - 20) as u16;
    b[2..4].copy_from_slice(&length.to_be_bytes());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(&b);
    let tag = mac.finalize().into_bytes();
    b.extend_from_slice(&[0x00, 0x1c, 0x00, tag_len as u8]);
    b.extend_from_slice(&tag[..tag_len]);
    b
}

#[test]
fn message_integrity_sha256() {
    for tag_len in [16, 20, 32] {
        let b = with_sha256(PASSWORD, tag_len);
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!(m.integrity_sha256_offset(), Some(76));
        assert_eq!(m.verify_integrity_sha256(PASSWORD), Ok(()));
        assert_eq!(
            m.verify_integrity_sha256(b"x"),
            Err(IntegrityError::Mismatch)
        );
        assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Missing));
        assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
    }
    // 12 bytes is below the 16-byte minimum.
    let b = with_sha256(PASSWORD, 12);
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(
        m.verify_integrity_sha256(PASSWORD),
        Err(IntegrityError::BadLength)
    );
    // MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 does not count (RFC 8489 §14.6).
    let mut b = with_sha256(PASSWORD, 32);
    b.extend_from_slice(&hex(SAMPLE_REQUEST)[76..100]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::new_checked(&b[..]).unwrap();
    assert_eq!(m.integrity_offset(), None);
    assert_eq!(m.verify_integrity_sha256(PASSWORD), Ok(()));
}

#[test]
fn error_responses() {
    let mut out = [0u8; 128];
    for (response, code, reason) in [
        (ErrorResponse::unauthorized(TID), 401, &b"Unauthorized"[..]),
        (ErrorResponse::bad_request(TID), 400, &b"Bad Request"[..]),
    ] {
        let n = response.emit(&mut out).unwrap();
        assert_eq!(n, response.buffer_len());
        let m = Message::new_checked(&out[..n]).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.method(), BINDING);
        assert_eq!(m.transaction_id(), TID);
        assert_eq!(m.error_code(), Some((code, reason)));
        assert_eq!(m.integrity_offset(), None);
        assert_eq!(m.check_fingerprint(), Ok(()));
    }
    // 401 Unauthorized: header, ERROR-CODE (class 4, number 1, "Unauthorized"), FINGERPRINT.
    let n = ErrorResponse::unauthorized(TID).emit(&mut out).unwrap();
    assert_eq!(
        out[..n - 4],
        hex("01 11 00 1c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             00 09 00 10 00 00 04 01 55 6e 61 75 74 68 6f 72 69 7a 65 64
             80 28 00 04")[..]
    );
    let with_software = ErrorResponse {
        software: Some("relay"),
        reason: "Bad Request: missing USERNAME",
        ..ErrorResponse::bad_request(TID)
    };
    let n = with_software.emit(&mut out).unwrap();
    let m = Message::new_checked(&out[..n]).unwrap();
    assert_eq!(m.software(), Some(&b"relay"[..]));
    assert_eq!(
        m.error_code(),
        Some((400, &b"Bad Request: missing USERNAME"[..]))
    );
}

#[test]
fn error_response_rejects_bad_input() {
    let mut out = [0u8; 1024];
    let bad_code = ErrorResponse {
        code: 200,
        ..ErrorResponse::bad_request(TID)
    };
    assert_eq!(bad_code.emit(&mut out), Err(Error::BadAttribute));
    let long = "x".repeat(128);
    let long_reason = ErrorResponse {
        reason: &long,
        ..ErrorResponse::bad_request(TID)
    };
    assert_eq!(long_reason.emit(&mut out), Err(Error::BadAttribute));
    let r = ErrorResponse::unauthorized(TID);
    assert_eq!(
        r.emit(&mut out[..r.buffer_len() - 1]),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn binding_response_buffer_too_small() {
    let r = BindingResponse {
        transaction_id: TID,
        mapped: "192.0.2.1:32853".parse().unwrap(),
        software: None,
        integrity_key: PASSWORD,
    };
    assert_eq!(r.buffer_len(), 20 + 12 + 24 + 8);
    let mut out = [0u8; 64];
    assert_eq!(r.emit(&mut out[..63]), Err(Error::BufferTooSmall));
    assert_eq!(r.emit(&mut out), Ok(64));
    let long = "é".repeat(128);
    let r = BindingResponse {
        software: Some(&long),
        ..r
    };
    assert_eq!(r.emit(&mut [0u8; 1024]), Err(Error::BadAttribute));
}

#[test]
fn binding_request_round_trip() {
    let request = BindingRequest {
        transaction_id: TID,
        username: b"evtj:h6vY",
        priority: 0x6e00_01ff,
        ice_controlling: Some(0x0102_0304_0506_0708),
        use_candidate: true,
        integrity_key: PASSWORD,
        fingerprint: true,
    };
    let mut out = [0u8; 256];
    let n = request.emit(&mut out).unwrap();
    assert_eq!(n, request.buffer_len());
    let m = Message::new_checked(&out[..n]).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.priority(), Some(0x6e00_01ff));
    assert_eq!(m.ice_controlling(), Some(0x0102_0304_0506_0708));
    assert_eq!(m.ice_controlled(), None);
    assert!(m.use_candidate());
    assert_eq!(m.verify_integrity(PASSWORD), Ok(()));
    assert_eq!(m.check_fingerprint(), Ok(()));
    // USERNAME is padded with spaces, as in RFC 5769.
    assert_eq!(
        out[20..36],
        hex("00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20")[..]
    );

    let bare = BindingRequest {
        ice_controlling: None,
        use_candidate: false,
        integrity_key: b"",
        fingerprint: false,
        ..request
    };
    let n = bare.emit(&mut out).unwrap();
    assert_eq!(n, 20 + 16 + 8);
    let m = Message::new_checked(&out[..n]).unwrap();
    assert!(!m.use_candidate());
    assert_eq!(m.verify_integrity(PASSWORD), Err(IntegrityError::Missing));
    assert_eq!(m.check_fingerprint(), Err(IntegrityError::Missing));
    assert_eq!(bare.emit(&mut out[..n - 1]), Err(Error::BufferTooSmall));
    let long = [b'a'; 509];
    let too_long = BindingRequest {
        username: &long,
        ..bare
    };
    assert_eq!(too_long.emit(&mut [0u8; 1024]), Err(Error::BadAttribute));
}

#[test]
fn names_print() {
    assert_eq!(
        format!("{:?}", AttributeType::XOR_MAPPED_ADDRESS),
        "XOR-MAPPED-ADDRESS"
    );
    assert_eq!(
        format!("{:?}", AttributeType(0xc057)),
        "AttributeType(0xc057)"
    );
    assert!(AttributeType::USERNAME.is_comprehension_required());
    assert!(!AttributeType::SOFTWARE.is_comprehension_required());
    assert_eq!(Error::BadMagic.to_string(), "STUN magic cookie missing");
    assert_eq!(
        IntegrityError::Mismatch.to_string(),
        "STUN integrity check failed"
    );
}
