//! Bursts of equal-size packets (video frames) through the real binary, with UDP GSO on and off:
//! every receiver gets exactly the datagrams that were sent, byte for byte and in order.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use e2e::{Client, Options, PATIENT, QUIET, Relay, rtp};

/// Sends `packets` in one UDP_SEGMENT send so that they reach the relay together, as a frame's
/// packets do. All have the first one's size except the last, which may be shorter.
fn send_burst(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    let bytes = packets.concat();
    let SocketAddr::V4(to) = to else {
        panic!("the test relay listens on IPv4")
    };
    // SAFETY: sockaddr_in is a plain C struct; all-zero bytes are valid.
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = to.port().to_be();
    name.sin_addr.s_addr = u32::from(*to.ip()).to_be();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    #[repr(C)]
    struct Segment {
        hdr: libc::cmsghdr,
        size: u16,
        pad: [u8; 6],
    }
    // SAFETY: plain C structs; all-zero bytes are valid.
    let mut cmsg: Segment = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_LEN and CMSG_SPACE only do arithmetic.
    let (len, space) = unsafe { (libc::CMSG_LEN(2), libc::CMSG_SPACE(2)) };
    cmsg.hdr.cmsg_len = len as _;
    cmsg.hdr.cmsg_level = libc::SOL_UDP;
    cmsg.hdr.cmsg_type = libc::UDP_SEGMENT;
    cmsg.size = packets[0].len() as u16;
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&raw mut cmsg).cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at a live name, iovec, payload and control message.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    assert_eq!(
        n as usize,
        bytes.len(),
        "{}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn bursts_of_equal_size_packets_are_forwarded_byte_identical_with_and_without_gso() {
    for gso in ["true", "false"] {
        let relay = Relay::start_with(Options {
            args: vec!["--gso".into(), gso.into()],
            ..Default::default()
        });
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (b, c) = (Client::new(), Client::new());
        relay.room("r");
        let body = serde_json::json!({"address": sender.local_addr().unwrap().to_string(),
            "tracks": [{"ssrc": 7, "kind": "video"}]});
        relay.ok("PUT", "/v1/rooms/r/participants/a", Some(&body));
        relay.join("r", "b", &b, &[(8, "audio")]);
        relay.join("r", "c", &c, &[]);
        let mut sent = Vec::new();
        for frame in 0..12u16 {
            // Sizes from small to MTU-sized; the last packet of a frame is shorter.
            let size = 100 + usize::from(frame) * 110;
            let count = 2 + usize::from(frame % 5) * 4;
            let packets: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let len = if i + 1 == count { size / 3 } else { size };
                    let seq = frame * 100 + i as u16;
                    let payload: Vec<u8> = (0..len - 12).map(|j| (j as u16 ^ seq) as u8).collect();
                    rtp(7, seq, &payload)
                })
                .collect();
            send_burst(&sender, relay.media, &packets);
            sent.extend(packets);
        }
        for (name, r) in [("b", &b), ("c", &c)] {
            let got = r.recv_n(sent.len(), PATIENT);
            assert_eq!(got.len(), sent.len(), "gso={gso}: {name} got too few");
            assert!(
                got == sent,
                "gso={gso}: {name} got different bytes or order"
            );
        }
        sender.set_read_timeout(Some(QUIET)).unwrap();
        assert!(sender.recv_from(&mut [0u8; 64]).is_err(), "no echo");
        // Counters are published just after the batch's sends: allow the worker a moment.
        let deadline = std::time::Instant::now() + PATIENT;
        while relay.metric("relay_packets_out_total") < 2 * sent.len() as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "gso={gso}: packets_out too low"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
