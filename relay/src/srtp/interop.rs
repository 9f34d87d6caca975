//! Known-answer cross-check against libsrtp (through PyPI `pylibsrtp`, which `tests/install-deps.sh`
//! installs): libsrtp is what Chrome and Firefox run, and shares no code with this module or
//! aws-lc. For each profile, with one master key:
//!
//! - libsrtp protects RTP and RTCP; this module unprotects them;
//! - this module protects the same RTP packets and must produce libsrtp's bytes exactly (same
//!   keys, same index: SRTP is deterministic); libsrtp unprotects ours, RTP and RTCP.
//!
//! The packets cross a sequence wrap (so both ends must agree on the rollover counter), carry
//! CSRCs and header extensions, and come from two SSRCs.

use std::io::Write;
use std::process::{Command, Stdio};

use super::tests::{hex, master, rtcp_rr, rtp_with};
use super::*;

/// Reads a JSON request on stdin, answers on stdout. Sessions use libsrtp's own key
/// derivation from the master key and salt.
const SCRIPT: &str = r#"
import json, sys
import pylibsrtp
req = json.load(sys.stdin)
key = bytes.fromhex(req["key"])
profile = getattr(pylibsrtp.Policy, req["profile"])
def session(direction):
    policy = pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=profile)
    policy.window_size = 1024
    return pylibsrtp.Session(policy)
tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
rx = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
b = bytes.fromhex
json.dump({
    "srtp": [tx.protect(b(p)).hex() for p in req["rtp"]],
    "srtcp": [tx.protect_rtcp(b(p)).hex() for p in req["rtcp"]],
    "rtp": [rx.unprotect(b(p)).hex() for p in req["our_srtp"]],
    "rtcp": [rx.unprotect_rtcp(b(p)).hex() for p in req["our_srtcp"]],
}, sys.stdout)
"#;

fn libsrtp_name(profile: Profile) -> &'static str {
    match profile {
        Profile::AeadAes128Gcm => "SRTP_PROFILE_AEAD_AES_128_GCM",
        Profile::AeadAes256Gcm => "SRTP_PROFILE_AEAD_AES_256_GCM",
        Profile::Aes128CmHmacSha1_80 => "SRTP_PROFILE_AES128_CM_SHA1_80",
        Profile::Aes128CmHmacSha1_32 => "SRTP_PROFILE_AES128_CM_SHA1_32",
    }
}

/// Runs the script; panics with what to do when python3 or pylibsrtp is missing.
fn libsrtp(request: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the libsrtp cross-check: run tests/install-deps.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "libsrtp refused (a missing pylibsrtp shows as ModuleNotFoundError: run \
         tests/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hexes(v: &serde_json::Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| hex(s.as_str().unwrap()))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn libsrtp_agrees_on_every_profile() {
    for profile in Profile::ALL {
        let m = master(profile, 0x42);
        let mut key = m.key().to_vec();
        key.extend_from_slice(m.salt());

        // Two SSRCs; the first crosses the 16-bit wrap, with CSRCs and extensions on some.
        let mut rtp = Vec::new();
        for (n, seq) in (65_530u16..=65_535).chain(0..6).enumerate() {
            let payload: Vec<u8> = (0..(n * 97 % 1200)).map(|i| (i * 31 + n) as u8).collect();
            rtp.push(rtp_with(
                0x0102_0304,
                seq,
                (n % 3) as u8,
                (n % 2) as u16,
                &payload,
            ));
            rtp.push(rtp_with(
                0xfeed_beef,
                1000 + n as u16,
                0,
                0,
                &payload[..payload.len() / 2],
            ));
        }
        let rtcp: Vec<Vec<u8>> = (0..5u32).map(|n| rtcp_rr(0x0102_0304 + n % 2)).collect();

        let mut ours = Egress::new(Keys::new(&m).unwrap());
        let our_srtp: Vec<Vec<u8>> = rtp
            .iter()
            .map(|p| {
                let mut out = vec![0; p.len() + profile.rtp_overhead()];
                let n = ours.protect_rtp(p, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect();
        let our_srtcp: Vec<Vec<u8>> = rtcp
            .iter()
            .map(|p| {
                let mut out = vec![0; p.len() + profile.rtcp_overhead()];
                let n = ours.protect_rtcp(p, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect();

        let answer = libsrtp(&serde_json::json!({
            "profile": libsrtp_name(profile),
            "key": to_hex(&key),
            "rtp": rtp.iter().map(|p| to_hex(p)).collect::<Vec<_>>(),
            "rtcp": rtcp.iter().map(|p| to_hex(p)).collect::<Vec<_>>(),
            "our_srtp": our_srtp.iter().map(|p| to_hex(p)).collect::<Vec<_>>(),
            "our_srtcp": our_srtcp.iter().map(|p| to_hex(p)).collect::<Vec<_>>(),
        }));

        // libsrtp opens what we sealed.
        assert_eq!(
            hexes(&answer["rtp"]),
            rtp,
            "{profile}: libsrtp unprotects our SRTP"
        );
        assert_eq!(
            hexes(&answer["rtcp"]),
            rtcp,
            "{profile}: libsrtp unprotects our SRTCP"
        );

        // The same packets under the same keys and indices: the same bytes.
        let theirs = hexes(&answer["srtp"]);
        assert_eq!(theirs, our_srtp, "{profile}: SRTP bytes equal libsrtp's");

        // We open what libsrtp sealed.
        let mut ingress = Ingress::new(Keys::new(&m).unwrap());
        for (clear, protected) in rtp.iter().zip(&theirs) {
            let mut buf = protected.clone();
            let n = ingress.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(&buf[..n], &clear[..], "{profile}");
        }
        assert_eq!(ingress.rtp_state(Ssrc(0x0102_0304)).unwrap().roc(), 1);
        for (clear, protected) in rtcp.iter().zip(hexes(&answer["srtcp"])) {
            let mut buf = protected;
            let n = ingress.unprotect_rtcp(&mut buf).unwrap();
            assert_eq!(&buf[..n], &clear[..], "{profile}: libsrtp's SRTCP");
        }
    }
}
