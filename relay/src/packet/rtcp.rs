use super::rtp::Ssrc;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Truncated,
}
pub struct Feedback<'a> {
    buf: &'a [u8],
}
impl<'a> Feedback<'a> {
    pub fn media_ssrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        let b = self.buf;
        (b.len() >= 12)
            .then(|| Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]])))
            .into_iter()
    }
}
pub enum Route<'a> {
    Sender {
        sender: Ssrc,
    },
    Feedback {
        sender: Ssrc,
        feedback: Feedback<'a>,
    },
    Encrypted {
        sender: Ssrc,
    },
}
pub fn classify(buf: &[u8]) -> Result<Route<'_>, Error> {
    if buf.len() < 8 {
        return Err(Error::Truncated);
    }
    let sender = Ssrc(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]));
    Ok(match buf[1] {
        200 | 202 | 203 | 204 => Route::Sender { sender },
        _ => Route::Feedback {
            sender,
            feedback: Feedback { buf },
        },
    })
}
