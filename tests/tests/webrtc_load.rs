//! loadgen's WebRTC legs against the relay binary (`loadgen --webrtc`, what the budget runner's
//! `fanout16_audio_webrtc` plays): every leg made through the publish or subscribe exchange,
//! ICE with USE-CANDIDATE and a DTLS handshake, media sealed with SRTP by the publisher, opened
//! by the relay, sealed again per subscriber and opened by loadgen, every copy accounted for.

use e2e::Relay;

#[test]
fn loadgen_webrtc_legs_get_every_copy_sealed_for_them() {
    let relay = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("webrtc.toml");
    // Three rooms of one publisher (audio and video: two tracks on one publish leg) and five
    // subscribers, two of them sinks (connected, never read).
    std::fs::write(
        &scenario,
        "webrtc = true\nunread = 2\nrooms = 3\nduration = 3.0\n\
         [[room]]\nsize = [6, 6]\nprofile = \"mixed\"\nsenders = 0.1\n",
    )
    .unwrap();
    let out = std::process::Command::new(e2e::loadgen_bin())
        .arg("--control")
        .arg(relay.control.to_string())
        .arg("--scenario")
        .arg(&scenario)
        .arg("--json")
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}"));
    assert!(n("sent") > 500, "{r}");
    // Three read subscribers in each room get every packet of their publisher.
    assert_eq!(n("expected"), 3 * n("sent"), "{r}");
    assert_eq!(n("received"), n("expected"), "{r}");
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("misdelivered"), 0, "{r}");
    assert_eq!(n("srtp_errors"), 0, "{r}");
    // Every leg connected through the DTLS thread; nothing failed to open at the relay.
    assert_eq!(
        relay.metric("relay_dtls_handshakes_total{outcome=\"connected\"}"),
        18,
        "{}",
        relay.metrics_text()
    );
    for reason in ["srtp", "srtp_auth", "srtp_replay", "srtp_egress"] {
        assert_eq!(
            relay.metric(&format!(
                "relay_dropped_packets_total{{reason=\"{reason}\"}}"
            )),
            0,
            "{reason}"
        );
    }
    // The relay sealed a copy for each of the five subscribers of every packet.
    assert!(
        relay.metric("relay_packets_out_total") >= 5 * n("sent"),
        "{}",
        relay.metrics_text()
    );
}
