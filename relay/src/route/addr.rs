//! A destination address laid out as the kernel reads a `msg_name`: the bytes of a
//! `sockaddr_in` or `sockaddr_in6` and their length, in 32 bytes.
//!
//! Every send path takes one of these: the fan-out keeps them densely per chunk of a room and
//! the backends hand a pointer to one straight to `sendmmsg` or io_uring. A general socket
//! address (`sockaddr_storage`, 128 bytes, its length after it) would put each receiver's
//! address and length on two cache lines and spread a room's receivers four times as wide.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes of a `sockaddr_in6`, the larger of the two layouts.
const NAME_LEN: usize = 28;
const IN_LEN: usize = 16;

/// A socket address as `sendmsg` reads it. The default value is unset (length 0): no send path
/// is ever given one.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C, align(4))]
pub struct Addr {
    name: [u8; NAME_LEN],
    len: u32,
}

impl Addr {
    /// A pointer to the `sockaddr` bytes, for a `msghdr`'s `msg_name`.
    #[inline]
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        self.name.as_ptr().cast()
    }

    /// The length of the `sockaddr` (`msg_namelen`): 16 for IPv4, 28 for IPv6, 0 when unset.
    #[inline]
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// Whether this is the unset address.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `sockaddr` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.name[..self.len as usize]
    }

    /// The address as the standard library's type; `None` when unset.
    pub fn as_socket(&self) -> Option<SocketAddr> {
        Self::read(self.as_bytes())
    }

    /// Reads `sockaddr_in` or `sockaddr_in6` bytes (as here, or as `recvmsg` writes a source),
    /// exactly as they are; `None` for another family or too few bytes.
    #[inline]
    pub(crate) fn read(name: &[u8]) -> Option<SocketAddr> {
        let family = i32::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
        let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
        match family {
            libc::AF_INET => {
                let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
                Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
            }
            libc::AF_INET6 => {
                let flowinfo: [u8; 4] = name.get(4..8)?.try_into().ok()?;
                let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
                let scope: [u8; 4] = name.get(24..NAME_LEN)?.try_into().ok()?;
                let ip = Ipv6Addr::from(ip);
                let (flowinfo, scope) = (u32::from_ne_bytes(flowinfo), u32::from_ne_bytes(scope));
                Some(SocketAddrV6::new(ip, port, flowinfo, scope).into())
            }
            _ => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        let mut name = [0u8; NAME_LEN];
        name[2..4].copy_from_slice(&addr.port().to_be_bytes());
        let len = match addr {
            SocketAddr::V4(a) => {
                name[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                name[4..8].copy_from_slice(&a.ip().octets());
                IN_LEN
            }
            SocketAddr::V6(a) => {
                name[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                name[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
                name[8..24].copy_from_slice(&a.ip().octets());
                name[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                NAME_LEN
            }
        };
        Self {
            name,
            len: len as u32,
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_socket() {
            Some(a) => write!(f, "Addr({a})"),
            None => f.write_str("Addr(unset)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Length and family as the platform's own conversion (socket2's) makes them, and the same
    /// address read back. That the kernel takes the bytes is tested where they are sent
    /// (`io::send`).
    #[test]
    fn converts_both_families() {
        for text in [
            "127.0.0.1:5004",
            "203.0.113.9:65535",
            "[::1]:9",
            "[2001:db8::7]:40000",
            "[fe80::1%3]:1",
            "[::ffff:10.1.2.3]:9",
        ] {
            let a: SocketAddr = text.parse().unwrap();
            let ours = Addr::from(a);
            let theirs = socket2::SockAddr::from(a);
            assert_eq!(ours.len(), theirs.len(), "{text}");
            let family = u16::from_ne_bytes([ours.as_bytes()[0], ours.as_bytes()[1]]);
            assert_eq!(family, theirs.family(), "{text}");
            assert_eq!(ours.as_socket(), Some(a), "{text}");
        }
    }

    #[test]
    fn the_default_is_unset() {
        let a = Addr::default();
        assert!(a.is_empty());
        assert_eq!(a.as_socket(), None);
        assert_eq!(format!("{a:?}"), "Addr(unset)");
        assert_eq!(size_of::<Addr>(), 32);
    }
}
