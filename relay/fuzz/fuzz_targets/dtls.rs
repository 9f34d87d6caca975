//! The DTLS server handshake fed arbitrary datagrams and clock steps: no panic, never
//! connected (no client certificate can match an empty fingerprint list), and it fails, at the
//! latest, at its datagram limit.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay::dtls::{Certificate, Handshake, Limits, Output, State};

#[derive(Arbitrary, Debug)]
struct Step {
    advance_ms: u16,
    datagram: Vec<u8>,
}

fn cert() -> &'static Certificate {
    static CERT: OnceLock<Certificate> = OnceLock::new();
    CERT.get_or_init(|| Certificate::generate(&mut rand::thread_rng()).unwrap())
}

fuzz_target!(|steps: Vec<Step>| {
    let limits = Limits {
        max_datagrams: 16,
        ..Limits::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut hs = Handshake::new(cert(), vec![], limits, start);
    for (i, step) in steps.iter().take(64).enumerate() {
        now += Duration::from_millis(u64::from(step.advance_ms));
        hs.handle_datagram(now, &step.datagram);
        hs.handle_timeout(now);
        while let Some(o) = hs.poll_output() {
            assert!(!matches!(o, Output::Connected(_)));
        }
        if i >= 16 {
            assert!(matches!(hs.state(), State::Failed(_)), "{:?}", hs.state());
        }
    }
});
