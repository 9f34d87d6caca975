//! The processes under test (the relay, rtpengine): started pinned to a core, stopped by PID,
//! and read from outside: CPU time from `/proc/<pid>/stat`, counters from `GET /metrics`, and
//! the kernel's UDP counters from `/proc/net/snmp`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Pins the calling thread (and the threads it starts later) to `core`.
pub fn pin_current_thread(core: usize) -> std::io::Result<()> {
    set_affinity(0, core)
}

fn set_affinity(pid: libc::pid_t, core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it, and
    // sched_setaffinity reads it. Nothing here allocates, so it is also safe after fork.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A started process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` pinned to `core` (when given), its stderr to `log`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        core: Option<usize>,
        log: &Path,
    ) -> Result<Self> {
        let err = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        if let Some(core) = core {
            // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || set_affinity(0, core));
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            child,
            name,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of its stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits (bounded) for a stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let out = self
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with(&prefix) {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(_) => {
                self.check_alive()?;
                bail!("{} did not get ready in {timeout:?}", self.name)
            }
        }
    }

    /// Stops it: SIGTERM, up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system CPU time of a process, ns.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields count from the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of proc(5), utime 14 and stime 15.
    let ticks =
        |i: usize| -> Result<u64> { Ok(f.get(i).ok_or_else(|| anyhow!("short stat"))?.parse()?) };
    let total = ticks(11)? + ticks(12)?;
    Ok((total as f64 * 1e9 / super::core::user_hz()) as u64)
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's UDP counters (`Udp:` lines of /proc/net/snmp).
pub fn udp_counters() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let mut out = BTreeMap::new();
    if let [names, values, ..] = lines.as_slice() {
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = v.parse() {
                out.insert(n.to_owned(), v);
            }
        }
    }
    out
}

/// Unlabelled series of a Prometheus text page.
pub fn metrics(control: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&control, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {control}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.contains('{') {
            continue;
        }
        if let Some((name, value)) = line.split_once(' ')
            && let Ok(v) = value.trim().parse()
        {
            out.insert(name.to_owned(), v);
        }
    }
    Ok(out)
}

/// The relay under test.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Its media address.
    pub media: SocketAddr,
    /// Its control address.
    pub control: SocketAddr,
    /// The backend it runs (from its ready line).
    pub backend: String,
    /// The core it is pinned to.
    pub core: Option<usize>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts `binary` with one worker on loopback, pinned to `core`, with `extra` flags.
    pub fn start(binary: &Path, core: Option<usize>, extra: &[String]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(binary);
        cmd.args(["--workers", "1", "--media", "127.0.0.1:0"])
            .args(["--control", "127.0.0.1:0", "--log", "warn", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra);
        let mut proc = Proc::spawn("relay", cmd, core, &dir.path().join("relay.log"))?;
        let line = proc.wait_line("relay ready", Duration::from_secs(20))?;
        let field = |key: &str| -> Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .ok_or_else(|| anyhow!("no {key} in {line:?}"))?
                .parse()
                .with_context(|| format!("{key} in {line:?}"))
        };
        Ok(Self {
            media: field("media=")?,
            control: field("control=")?,
            backend: line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("backend="))
                .unwrap_or("?")
                .to_owned(),
            core,
            proc,
            _dir: dir,
        })
    }
}

/// rtpengine under test.
pub struct Rtpengine {
    /// The process.
    pub proc: Proc,
    /// Its ng control address.
    pub ng: SocketAddr,
    /// The core it is pinned to.
    pub core: Option<usize>,
    _dir: tempfile::TempDir,
}

/// Finds `rtpengine` on PATH.
pub fn find_rtpengine() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("rtpengine"))
        .find(|p| p.is_file())
}

/// rtpengine's settings: userspace forwarding only (no kernel table), loopback only, one
/// media thread, quiet logs; `{NG}` and `{CLI}` are filled with free ports.
const RTPENGINE_CONF: &str = "[rtpengine]
table = -1
no-fallback = false
interface = 127.0.0.1
listen-ng = 127.0.0.1:{NG}
listen-cli = 127.0.0.1:{CLI}
foreground = true
log-stderr = true
log-level = 5
num-threads = 1
media-num-threads = 1
port-min = 30000
port-max = 39999
timeout = 60
silent-timeout = 3600
delete-delay = 0
max-sessions = 5000
endpoint-learning = heuristic
";

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Rtpengine {
    /// Starts `binary` pinned to `core` with `config`, or with settings of our own when absent.
    pub fn start(binary: &Path, config: Option<&Path>, core: Option<usize>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (conf, ng) = match config {
            Some(c) => {
                let text = std::fs::read_to_string(c)
                    .with_context(|| format!("reading {}", c.display()))?;
                let ng = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("listen-ng"))
                    .and_then(|v| v.trim().trim_start_matches('=').trim().parse().ok())
                    .ok_or_else(|| anyhow!("{}: no listen-ng IP:PORT", c.display()))?;
                (c.to_owned(), ng)
            }
            None => {
                let ng_port = free_port()?;
                let text = RTPENGINE_CONF
                    .replace("{NG}", &ng_port.to_string())
                    .replace("{CLI}", &free_port()?.to_string());
                let path = dir.path().join("rtpengine.conf");
                std::fs::write(&path, text)?;
                (path, SocketAddr::from(([127, 0, 0, 1], ng_port)))
            }
        };
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config-file={}", conf.display()))
            .arg("--num-threads=1");
        let mut proc = Proc::spawn("rtpengine", cmd, core, &dir.path().join("rtpengine.log"))?;
        // Ready when it answers an ng ping.
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        loop {
            proc.check_alive()?;
            sock.send_to(b"budget1 d7:command4:pinge", ng)?;
            if let Ok(n) = sock.recv(&mut buf)
                && buf[..n].windows(4).any(|w| w == b"pong")
            {
                break;
            }
            if Instant::now() > until {
                bail!(
                    "rtpengine did not answer an ng ping on {ng}:\n{}",
                    proc.log_tail()
                );
            }
        }
        Ok(Self {
            proc,
            ng,
            core,
            _dir: dir,
        })
    }
}
