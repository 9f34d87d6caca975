//! A WebRTC stack (Chromium, Firefox, aiortc) in a child process, for the WebRTC end-to-end
//! tests, and a way to run a whole test in a network namespace of its own.

#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use e2e::Relay;
use relay::sdp::{IceCredentials, Local};
use serde_json::{Value, json};

/// A WebRTC stack in a child process, spoken to in JSON lines; killed when dropped.
pub(crate) struct Peer {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
    pub(crate) name: &'static str,
}

impl Peer {
    pub(crate) fn chromium() -> Self {
        let dir = browser_dir();
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules missing: run tests/install-deps.sh"
        );
        Self::spawn(
            "chromium",
            Command::new("node").arg(dir.join("sdp_peer.mjs")),
        )
    }

    pub(crate) fn firefox() -> Self {
        let dir = browser_dir();
        Self::spawn(
            "firefox",
            Command::new("node").arg(dir.join("firefox_peer.mjs")),
        )
    }

    pub(crate) fn aiortc() -> Self {
        let python = browser_dir().join(".venv/bin/python");
        assert!(
            python.exists(),
            "tests/browser/.venv missing: run tests/install-deps.sh"
        );
        Self::spawn(
            "aiortc",
            Command::new(python)
                .arg(browser_dir().join("aiortc_peer.py"))
                .arg("--loopback"),
        )
    }

    /// Starts `cmd` in a network namespace of its own with only `lo` up (`unshare -n`, as
    /// root), so that nothing a browser does can leave the machine; without `unshare`, as is.
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let mut isolated = Command::new("unshare");
        isolated.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"]);
        isolated.arg(cmd.get_program()).args(cmd.get_args());
        let cmd = if in_netns() || !can_isolate() {
            cmd
        } else {
            &mut isolated
        };
        // A process group of its own, so that dropping the peer also ends what it started (a
        // browser outlives its parent's SIGKILL otherwise).
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} peer: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            replies,
            name,
        }
    }

    /// One request, one reply; a reply with "error" fails the test with the stack's words.
    pub(crate) fn call(&mut self, request: Value) -> Value {
        let reply = self.try_call(request.clone());
        if let Some(e) = reply.get("error") {
            panic!("{} refused {}: {e}", self.name, request["op"]);
        }
        reply
    }

    pub(crate) fn try_call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let line = self
            .replies
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("{} did not answer {} within 60 s", self.name, request["op"])
            });
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this peer's child leads (set at spawn).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `unshare -n` works here (root, or a user namespace allowed).
pub(crate) fn can_isolate() -> bool {
    Command::new("unshare")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

pub(crate) fn local() -> Local {
    let cert = relay::dtls::Certificate::generate(&mut rand::thread_rng()).unwrap();
    Local {
        ice: IceCredentials {
            ufrag: "r3lA".to_owned(),
            pwd: "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
        },
        fingerprint: cert.fingerprint().clone(),
        // Loopback only: the stacks start ICE checks towards these (nothing listens there).
        addresses: vec!["127.0.0.1:9".parse().unwrap(), "[::1]:9".parse().unwrap()],
        session_id: 7_000_000_001,
        session_version: 2,
    }
}

/// Set in a test process that `in_own_netns` started inside `unshare -n`.
const NETNS_ENV: &str = "RELAY_TEST_IN_NETNS";

/// Whether this process already runs in the test's own network namespace.
pub(crate) fn in_netns() -> bool {
    std::env::var_os(NETNS_ENV).is_some()
}

/// Runs test `name` of this test binary again inside a network namespace with only `lo` (so a
/// browser and the test's own sockets share a loopback that nothing else reaches) and returns
/// true if it did; the caller then returns. Returns false when already inside, or when
/// `unshare -n` is not allowed here: the caller runs the test body itself.
pub(crate) fn in_own_netns(name: &str) -> bool {
    if in_netns() || !can_isolate() {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .unwrap();
    assert!(status.success(), "{name} failed in its network namespace");
    true
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `secs` seconds.
pub(crate) fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        thread::sleep(Duration::from_millis(250));
    }
    None
}

/// Runs the publish exchange for `id` in room `r` on a new peer connection of `peer`; returns
/// its id.
pub(crate) fn publish(relay: &Relay, peer: &mut Peer, id: &str) -> Value {
    let offer = peer.call(json!({"op": "publish_offer"}));
    let (status, answer) = relay.call(
        "POST",
        &format!("/v1/rooms/r/participants/{id}/webrtc/publish"),
        Some(&json!({"sdp": offer["sdp"]})),
    );
    assert_eq!(status, 200, "{answer}");
    let text = answer["sdp"].as_str().unwrap();
    assert!(text.contains("a=ice-lite") && text.contains("a=setup:passive"));
    peer.call(json!({"op": "set_answer", "id": offer["id"], "sdp": answer["sdp"]}));
    offer["id"].clone()
}

/// Runs the subscribe exchange for `id` in room `r` on a new peer connection of `peer`; returns its id.
pub(crate) fn subscribe(relay: &Relay, peer: &mut Peer, id: &str) -> Value {
    let offer = relay.ok(
        "POST",
        &format!("/v1/rooms/r/participants/{id}/webrtc/subscribe"),
        Some(&json!({})),
    );
    let reply = peer.call(json!({"op": "answer", "sdp": offer["sdp"]}));
    let (status, body) = relay.call(
        "PUT",
        &format!("/v1/rooms/r/participants/{id}/webrtc/subscribe"),
        Some(&json!({"sdp": reply["sdp"]})),
    );
    assert_eq!(status, 204, "{body}");
    reply["id"].clone()
}
