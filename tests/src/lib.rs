//! Helpers for the end-to-end tests: start the real `relay` binary on loopback with ephemeral
//! ports, drive its HTTP API, and play plain UDP clients.
//!
//! `netns` makes network namespaces joined by a bridge (fleet tests), `etcd` runs an etcd
//! cluster for them.
//!
//! The binary is found in `RELAY_BIN`, or next to the test executable in the target directory;
//! `tests/run.sh` builds it first. `RELAY_TEST_BACKEND` selects the data-plane backend.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod control;
pub mod etcd;
pub mod media;
pub mod netns;

/// A running relay process, stopped (SIGKILL) when dropped.
pub struct Relay {
    child: Option<Child>,
    /// The UDP media address.
    pub media: SocketAddr,
    /// The HTTP control address.
    pub control: SocketAddr,
    /// The ops address (`--ops`), if the relay has one.
    pub ops: Option<SocketAddr>,
    /// The token sent with API calls, if any.
    pub token: Option<String>,
    /// The data directory (kept alive for the relay's lifetime).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Path of the relay binary.
pub fn relay_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RELAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/relay
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join("relay");
    assert!(
        bin.exists(),
        "relay binary not found at {}: run `cargo build -p relay` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// A path inside the repository, e.g. `deploy/relay.toml`.
pub fn repo_path(relative: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .join(relative)
}

/// Path of the loadgen binary: `LOADGEN_BIN`, or beside the relay binary.
pub fn loadgen_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LOADGEN_BIN") {
        return PathBuf::from(p);
    }
    let bin = relay_bin().with_file_name("loadgen");
    assert!(
        bin.exists(),
        "loadgen binary not found at {}: run `cargo build -p loadgen` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// Options for starting a relay.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Token to send with API calls (also pass it in args or env for the relay to require it).
    pub token: Option<String>,
    /// Use this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Leave out `--media` and `--control` (to test defaults from env or file).
    pub no_addresses: bool,
    /// Write the relay's standard error to this file instead of the test's.
    pub stderr: Option<PathBuf>,
    /// Run this relay binary instead of [`relay_bin`] (e.g. one unpacked from the package).
    pub bin: Option<PathBuf>,
    /// A command to run the relay under, e.g. `["prlimit", "--memlock=0:0", "--"]`; the relay's
    /// path and arguments follow it.
    pub prefix: Vec<String>,
}

impl Relay {
    /// Starts a relay with ephemeral ports and a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a relay with options.
    pub fn start_with(opts: Options) -> Self {
        let (tmp, data_dir) = match opts.data_dir.clone() {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let bin = opts.bin.clone().unwrap_or_else(relay_bin);
        let mut cmd = match opts.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("serve");
        if !opts.no_addresses {
            cmd.args(["--media", "127.0.0.1:0", "--control", "127.0.0.1:0"]);
        }
        cmd.arg("--data-dir").arg(&data_dir);
        if let Ok(b) = std::env::var("RELAY_TEST_BACKEND") {
            cmd.args(["--backend", &b]);
        }
        cmd.args(&opts.args)
            .env(
                "RELAY_LOG",
                if opts.stderr.is_some() {
                    "info"
                } else {
                    "warn"
                },
            )
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match &opts.stderr {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("stderr file")),
                None => Stdio::inherit(),
            });
        let mut child = cmd.spawn().expect("spawn relay");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in ready line {line:?}"))
                .parse()
                .expect("address in ready line")
        };
        let media = field("media");
        let control = field("control");
        let ops = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ops="))
            .map(|a| a.parse().expect("ops address in ready line"));
        Self {
            child: Some(child),
            media,
            control,
            ops,
            token: opts.token,
            data_dir,
            _tmp: tmp,
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, signal) };
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An API call; returns (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_raw(
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
            self.token.as_deref(),
        )
    }

    /// An API call with a raw body and an explicit token.
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("http://{}{}", self.control, path);
        let mut req = ureq::request(method, &url).timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Calls and asserts a 2xx status; returns the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} -> {status} {v}"
        );
        v
    }

    /// The value of an unlabelled or labelled metric line, e.g. `relay_packets_out_total` or
    /// `relay_dropped_packets_total{reason="unknown_source"}`.
    pub fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.call("GET", "/metrics", None);
        let text = text.as_str().expect("metrics are text").to_owned();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metric {series}"))
    }

    /// The whole `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let (status, text) = self.call("GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics");
        text.as_str().expect("metrics are text").to_owned()
    }

    /// Creates a room.
    pub fn room(&self, room: &str) {
        self.ok("PUT", &format!("/v1/rooms/{room}"), None);
    }

    /// Adds a drop rule with a test basis and a one-hour expiry; returns its id.
    pub fn rule(&self, rule: Value) -> u64 {
        let mut rule = rule;
        let obj = rule.as_object_mut().expect("rule is an object");
        obj.entry("basis").or_insert_with(|| {
            serde_json::json!({"authority": "Test Court", "reference": "T-1", "jurisdiction": "ZZ"})
        });
        obj.entry("expires_at")
            .or_insert_with(|| Value::String(rfc3339_in(3600)));
        let (status, v) = self.call("POST", "/v1/rules", Some(&rule));
        assert_eq!(status, 201, "POST /v1/rules {rule} -> {v}");
        v["id"].as_u64().expect("rule id")
    }

    /// Lifts a rule.
    pub fn lift(&self, id: u64) {
        let body = serde_json::json!({"reason": "test over"});
        self.ok("DELETE", &format!("/v1/rules/{id}"), Some(&body));
    }

    /// Adds a participant with a fixed address and the given tracks.
    pub fn join(&self, room: &str, id: &str, client: &Client, tracks: &[(u32, &str)]) -> Value {
        let tracks: Vec<Value> = tracks
            .iter()
            .map(|(s, k)| serde_json::json!({"ssrc": s, "kind": k}))
            .collect();
        let body = serde_json::json!({"address": client.addr().to_string(), "tracks": tracks});
        self.ok(
            "PUT",
            &format!("/v1/rooms/{room}/participants/{id}"),
            Some(&body),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain UDP client on loopback.
pub struct Client {
    sock: UdpSocket,
}

impl Client {
    /// Binds 127.0.0.1:0.
    pub fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        Self { sock }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    /// Sends one datagram to `to`.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).expect("send");
    }

    /// Receives everything that arrives within `wait` of the last datagram.
    pub fn recv_all(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        self.sock.set_read_timeout(Some(wait)).expect("timeout");
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// Receives up to `n` datagrams, waiting at most `timeout` in all.
    pub fn recv_n(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((len, _)) => out.push(buf[..len].to_vec()),
                Err(_) => break,
            }
        }
        out
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

/// Pins the calling thread to the last core, away from the relay's worker pinned to core 0: the
/// flood gets one whole core, as a load generator on its own core would.
pub fn pin_to_last_core() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is a plain bit set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cores - 1, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A relay with one worker, pinned to core 0, with 64 MiB socket buffers: a flood of 64 KB
/// datagrams fills the default 4 MiB in about a millisecond, so any scheduling hiccup of the
/// worker would drop at the socket whatever arrives, legitimate or not. OPERATIONS.md tells
/// operators to size the buffers the same way.
pub fn one_core_relay() -> Relay {
    Relay::start_with(Options {
        args: vec![
            "--workers".into(),
            "1".into(),
            "--socket-buffer".into(),
            (64usize << 20).to_string(),
        ],
        ..Default::default()
    })
}

/// Gives a test socket a receive buffer (16 MiB, SO_RCVBUFFORCE: the tests run as root) that
/// holds a whole burst, read after the sending.
pub fn roomy(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 16 << 20;
    // SAFETY: setsockopt reads one c_int from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE");
}

/// An RTP packet: version 2, payload type 96, the given SSRC and sequence number.
pub fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An RTCP sender report (RFC 3550 §6.4.1) from `ssrc`, with no report blocks.
pub fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]); // NTP, RTP timestamp, counts
    p
}

/// An RTCP receiver report from `ssrc` with one report block about `media`.
pub fn rtcp_rr(ssrc: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

/// An RTCP PLI (RFC 4585 §6.3.1) from `ssrc` about `media`.
pub fn rtcp_pli(ssrc: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// An RTCP generic NACK (RFC 4585 §6.2.1) from `ssrc` about `media`, for one lost packet.
pub fn rtcp_nack(ssrc: u32, media: u32, pid: u16) -> Vec<u8> {
    let mut p = vec![0x81, 205, 0, 3];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

/// Writes a MaxMind country database with the real MaxMind writer (Debian's
/// libmaxmind-db-writer-perl): `mappings` are `CIDR=CC`, e.g. `127.0.0.0/24=CN`.
pub fn make_mmdb(out: &std::path::Path, mappings: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/make-mmdb.pl");
    let status = Command::new("perl")
        .arg(script)
        .arg(out)
        .args(mappings)
        .status()
        .expect("perl is needed (tests/install-deps.sh installs it)");
    assert!(
        status.success(),
        "writing the MMDB failed: is libmaxmind-db-writer-perl installed?"
    );
}

/// A STUN Binding request (RFC 8489) as an ICE full agent sends it to the relay: USERNAME
/// `<relay ufrag>:peer`, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY keyed with the
/// relay's `pwd`, FINGERPRINT. `tid` fills the transaction id.
pub fn stun_request(ufrag: &str, pwd: &str, tid: u8) -> Vec<u8> {
    let username = format!("{ufrag}:peer");
    let req = relay::packet::stun::BindingRequest {
        transaction_id: [tid; 12],
        username: username.as_bytes(),
        priority: 0x6e0001ff,
        ice_controlling: Some(0x1234),
        use_candidate: true,
        integrity_key: pwd.as_bytes(),
        fingerprint: true,
    };
    let mut buf = vec![0u8; req.buffer_len()];
    let n = req.emit(&mut buf).expect("a request fits its own length");
    buf.truncate(n);
    buf
}

/// An RFC 3339 UTC time `secs` seconds from now.
pub fn rfc3339_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let unix = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rem) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Polls `done` every 20 ms until it holds; fails after `within`.
pub fn poll_until(within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "not done within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long the tests wait for datagrams that should not arrive.
pub const QUIET: Duration = Duration::from_millis(200);

/// How long the tests wait for datagrams that should arrive.
pub const PATIENT: Duration = Duration::from_secs(3);
