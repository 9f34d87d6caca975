//! RTP header view (RFC 3550 §5.1, §5.3.1): accepts exactly what a plain reference check
//! accepts, every getter reads the bytes it names, and header, payload and padding tile the
//! datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::packet::rtp::{Packet, Ssrc};

fuzz_target!(|data: &[u8]| {
    let parsed = Packet::new_checked(data);
    let reference = reference(data);
    let Ok(p) = parsed else {
        assert_eq!(reference, None, "refused a valid packet: {parsed:?}");
        return;
    };
    let Some((header_len, padding_len)) = reference else {
        panic!("accepted an invalid packet");
    };
    assert_eq!(p.header_len(), header_len);
    assert_eq!(p.padding_len(), padding_len);
    assert_eq!(p.as_bytes(), data);

    // Fields straight from the bytes.
    assert_eq!(p.version(), 2);
    assert_eq!(p.padding(), data[0] & 0x20 != 0);
    assert_eq!(p.has_extension(), data[0] & 0x10 != 0);
    assert_eq!(p.csrc_count(), data[0] & 0x0f);
    assert_eq!(p.marker(), data[1] & 0x80 != 0);
    assert_eq!(p.payload_type(), data[1] & 0x7f);
    assert_eq!(p.sequence_number(), u16::from_be_bytes([data[2], data[3]]));
    assert_eq!(p.timestamp(), word(data, 4));
    assert_eq!(p.ssrc(), Ssrc(word(data, 8)));

    // CSRCs: exactly CC of them, in order.
    let csrc_end = 12 + 4 * usize::from(p.csrc_count());
    assert_eq!(p.csrcs().len(), usize::from(p.csrc_count()));
    assert!(
        p.csrcs()
            .enumerate()
            .all(|(i, c)| c == Ssrc(word(data, 12 + 4 * i)))
    );

    // Extension: its header sits right after the CSRCs and its data ends the header.
    match p.extension() {
        Some((profile, ext)) => {
            assert!(p.has_extension());
            assert_eq!(
                profile,
                u16::from_be_bytes([data[csrc_end], data[csrc_end + 1]])
            );
            assert_eq!(ext.len() % 4, 0);
            assert_eq!(p.header_len(), csrc_end + 4 + ext.len());
            assert_eq!(offset(data, ext), csrc_end + 4);
        }
        None => {
            assert!(!p.has_extension());
            assert_eq!(p.header_len(), csrc_end);
        }
    }

    // Header, payload and padding tile the datagram; the payload lies inside it.
    let payload = p.payload();
    assert_eq!(p.header_len() + payload.len() + p.padding_len(), data.len());
    assert_eq!(offset(data, payload), p.header_len());
    if p.padding() {
        assert!(p.padding_len() >= 1);
        assert_eq!(p.padding_len(), usize::from(data[data.len() - 1]));
    } else {
        assert_eq!(p.padding_len(), 0);
    }
});

/// RFC 3550 Appendix A.1 and §5.3.1 written out plainly: `(header length, padding length)` of
/// a valid packet.
fn reference(data: &[u8]) -> Option<(usize, usize)> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let mut header = 12 + 4 * usize::from(data[0] & 0x0f);
    if data[0] & 0x10 != 0 {
        if header + 4 > data.len() {
            return None;
        }
        let words = usize::from(u16::from_be_bytes([data[header + 2], data[header + 3]]));
        header += 4 + 4 * words;
    }
    if header > data.len() {
        return None;
    }
    let mut padding = 0;
    if data[0] & 0x20 != 0 {
        padding = usize::from(data[data.len() - 1]);
        if padding == 0 || header + padding > data.len() {
            return None;
        }
    }
    Some((header, padding))
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where `part` starts inside `whole`; panics if it is not inside.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        start + part.len() <= whole.len(),
        "slice outside the buffer"
    );
    start
}
