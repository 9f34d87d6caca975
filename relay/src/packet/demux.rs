#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}
pub fn classify(buf: &[u8]) -> Kind {
    match buf.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if buf.len() >= 2 => {
            if (192..=223).contains(&buf[1]) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Other,
    }
}
