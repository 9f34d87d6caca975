#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Truncated,
    BadVersion,
}
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}
impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < 12 {
            return Err(Error::Truncated);
        }
        if b[0] >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        Ok(Self { buffer })
    }
    pub fn ssrc(&self) -> Ssrc {
        let b = self.buffer.as_ref();
        Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
    }
}
