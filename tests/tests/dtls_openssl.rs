//! The relay's DTLS server (`relay::dtls`, over dimpl) against an independent DTLS-SRTP client:
//! the `openssl s_client` command-line tool (OpenSSL's own stack, run as a separate process,
//! never linked), over loopback UDP. One handshake per SRTP profile, offered alone by the
//! client; the keying material OpenSSL exports (`EXTRACTOR-dtls_srtp`, RFC 5764 §4.2) must be
//! exactly the keys the relay hands to SRTP.

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay::dtls::{
    Certificate, Failure, Handshake, Limits, Output, SrtpKeys, SrtpProfile, fingerprint_of,
};
use relay::sdp::{Fingerprint, HashFunction};

/// A P-256 client certificate made by openssl in `dir`; returns its SHA-256 fingerprint.
fn client_cert(dir: &Path) -> Fingerprint {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=client", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed (tests/install-deps.sh)");
    assert!(status.success());
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap()
        .stdout;
    fingerprint_of(HashFunction::Sha256, &der)
}

/// What one handshake against `openssl s_client` gave.
struct Outcome {
    server: Option<SrtpKeys>,
    failure: Option<Failure>,
    client_output: String,
}

/// Serves one handshake on a loopback socket to `openssl s_client -use_srtp <profile>`.
fn handshake(profile: &str, export_len: usize, expected: Vec<Fingerprint>, dir: &Path) -> Outcome {
    let cert = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let client = Command::new("openssl")
        .args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-use_srtp",
            profile,
        ])
        .args([
            "-keymatexport",
            "EXTRACTOR-dtls_srtp",
            "-keymatexportlen",
            &export_len.to_string(),
        ])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut hs = Handshake::new(&cert, expected, Limits::default(), start);
    let mut outcome = Outcome {
        server: None,
        failure: None,
        client_output: String::new(),
    };
    let mut peer = None;
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(15) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer = Some(from);
                hs.handle_datagram(Instant::now(), &buf[..n]);
            }
            Err(_) => hs.handle_timeout(Instant::now()),
        }
        while let Some(o) = hs.poll_output() {
            match o {
                Output::Transmit(d) => {
                    socket.send_to(&d, peer.expect("we only answer")).unwrap();
                }
                Output::Connected(keys) => outcome.server = Some(keys),
                Output::Failed(f) => outcome.failure = Some(f),
                Output::Closed => {}
            }
        }
        if outcome.failure.is_some() {
            break;
        }
        if outcome.server.is_some() {
            // Keep serving a little: our last flight may need to reach the client again.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    hs.handle_datagram(Instant::now(), &buf[..n]);
                    while let Some(Output::Transmit(d)) = hs.poll_output() {
                        socket.send_to(&d, peer.unwrap()).unwrap();
                    }
                }
            }
            break;
        }
    }
    outcome.client_output = finish(client);
    outcome
}

/// Closes the client's stdin (it then sends close_notify and exits) and returns its stdout.
fn finish(mut client: Child) -> String {
    drop(client.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if client.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.kill();
    let _ = client.wait();
    let mut out = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// The exporter output OpenSSL printed ("Keying material: <hex>").
fn exported(output: &str) -> Vec<u8> {
    let hex = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Keying material: "))
        .unwrap_or_else(|| panic!("no keying material in s_client output:\n{output}"));
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn openssl_client_gets_the_same_keys_for_each_profile() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = client_cert(dir.path());
    for (name, profile) in [
        ("SRTP_AEAD_AES_256_GCM", SrtpProfile::AeadAes256Gcm),
        ("SRTP_AEAD_AES_128_GCM", SrtpProfile::AeadAes128Gcm),
        ("SRTP_AES128_CM_SHA1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let len = 2 * (profile.key_len() + profile.salt_len());
        let o = handshake(name, len, vec![fingerprint.clone()], dir.path());
        let keys = o
            .server
            .unwrap_or_else(|| panic!("{name}: {:?}\n{}", o.failure, o.client_output));
        assert_eq!(keys.profile, profile);
        assert!(
            o.client_output
                .contains(&format!("SRTP Extension negotiated, profile={name}")),
            "{name}:\n{}",
            o.client_output
        );
        assert_eq!(
            SrtpKeys::from_exporter(profile, &exported(&o.client_output)),
            Some(keys),
            "{name}"
        );
    }
}

#[test]
fn openssl_client_with_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _ = client_cert(dir.path());
    let other = Certificate::generate(&mut rand::thread_rng()).unwrap();
    let o = handshake(
        "SRTP_AEAD_AES_128_GCM",
        56,
        vec![other.fingerprint().clone()],
        dir.path(),
    );
    assert_eq!(
        o.failure,
        Some(Failure::BadFingerprint),
        "{}",
        o.client_output
    );
    assert!(o.server.is_none());
}
