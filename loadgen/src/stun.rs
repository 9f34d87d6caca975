//! STUN latching (ICE-lite, RFC 8445): each client sends a Binding request from its own socket
//! to the relay's media address with the relay's ICE credentials; the relay learns the client's
//! address from it and answers with a success response.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use relay::packet::stun;

use crate::api::Ice;

/// A Binding request from a controlling agent with USE-CANDIDATE (RFC 8445 §7.2.2, §8.1.1):
/// USERNAME is "relay-ufrag:our-ufrag", MESSAGE-INTEGRITY is keyed with the relay's password.
pub(crate) fn binding_request(ice: &Ice, local_ufrag: &str) -> Result<Vec<u8>> {
    let username = format!("{}:{local_ufrag}", ice.ufrag);
    let request = stun::BindingRequest {
        transaction_id: rand::random(),
        username: username.as_bytes(),
        priority: PRIORITY,
        ice_controlling: Some(rand::random()),
        use_candidate: true,
        integrity_key: ice.pwd.as_bytes(),
        fingerprint: true,
    };
    let mut out = vec![0; request.buffer_len()];
    let n = request
        .emit(&mut out)
        .map_err(|e| anyhow!("building a STUN request: {e:?}"))?;
    out.truncate(n);
    Ok(out)
}

/// Whether a datagram is a Binding success response.
pub(crate) fn is_binding_success(datagram: &[u8]) -> bool {
    stun::Message::new_checked(datagram)
        .is_ok_and(|m| m.class() == stun::Class::Success && m.method() == stun::BINDING)
}

/// Latches every `(socket, relay address, credentials)` before the clients start: sends the
/// requests, resends every 200 ms, and reads the replies itself. Returns when all are latched;
/// fails after `timeout` naming how many were not.
pub(crate) fn latch_all(
    clients: &[(&UdpSocket, SocketAddr, &Ice)],
    timeout: Duration,
) -> Result<()> {
    let requests: Vec<Vec<u8>> = clients
        .iter()
        .enumerate()
        .map(|(i, (_, _, ice))| binding_request(ice, &format!("lg{i}")))
        .collect::<Result<_>>()?;
    let mut done = vec![false; clients.len()];
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        for (i, (socket, relay, _)) in clients.iter().enumerate() {
            if !done[i] {
                let _ = socket.send_to(&requests[i], relay);
            }
        }
        let resend = Instant::now() + RESEND;
        while Instant::now() < resend {
            for (i, (socket, _, _)) in clients.iter().enumerate() {
                // Non-blocking sockets: read what is there (media cannot arrive yet).
                while let Ok(n) = socket.recv(&mut buf) {
                    done[i] |= is_binding_success(&buf[..n]);
                }
            }
            if done.iter().all(|&d| d) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let missing = done.iter().filter(|&&d| !d).count();
    Err(anyhow!(
        "{missing} of {} clients got no STUN Binding success from the relay within {timeout:?}; \
         if this relay does not latch addresses from STUN, pass --fixed-address",
        clients.len()
    ))
}

/// ICE priority of a host candidate (RFC 8445 §5.1.2.1: type preference 126, local 65535,
/// component 1).
const PRIORITY: u32 = (126 << 24) | (65_535 << 8) | 255;
/// Requests are resent this often until answered.
pub(crate) const RESEND: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_valid_binding_request() {
        let ice = Ice {
            ufrag: "evtj".into(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
        };
        let bytes = binding_request(&ice, "lg1").unwrap();
        let m = stun::Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(m.class(), stun::Class::Request);
        assert_eq!(m.method(), stun::BINDING);
        assert_eq!(m.username(), Some(&b"evtj:lg1"[..]));
        assert!(m.use_candidate());
        assert!(!is_binding_success(&bytes));
        assert!(!is_binding_success(b"\x80\x00garbage"));
    }

    #[test]
    fn latch_times_out_with_a_clear_message() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_nonblocking(true).unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ice = Ice {
            ufrag: "evtj".into(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
        };
        let e = latch_all(
            &[(&client, silent.local_addr().unwrap(), &ice)],
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--fixed-address"), "{e}");
        // The relay side saw our requests.
        let mut buf = [0u8; 1500];
        let n = silent.recv(&mut buf).unwrap();
        assert!(stun::Message::new_checked(&buf[..n]).is_ok());
    }
}
