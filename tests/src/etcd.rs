//! An etcd cluster for tests: 1 or 3 members of Debian's `etcd` (3.4), started by the test,
//! each with a data directory in a temporary directory, killed (SIGKILL) on `Drop`.
//!
//! Members listen either on loopback with ephemeral ports ([`Etcd::start`]) or on the
//! addresses of network namespaces a [`crate::netns::Lan`] made ([`Etcd::start_on`], ports
//! 2379 and 2380 in each host's own namespace). The harness waits until every running member
//! answers `/health`, finds the leader through the v3 JSON gateway
//! (`/v3/maintenance/status`), kills a member with SIGKILL by its PID and restarts it on the
//! same data directory (etcd then ignores the `--initial-cluster*` flags and rejoins).
//!
//! Each member's standard error goes to `<tmp>/<name>.log`; a failed start prints its tail.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Host;

/// A running etcd cluster.
pub struct Etcd {
    /// The members, in the order of `--initial-cluster`.
    pub members: Vec<Member>,
    cluster: String,
    token: String,
    /// `--election-timeout` in ms, if not etcd's default (1000 ms; heartbeat a tenth of it).
    election_ms: Option<u64>,
    dir: tempfile::TempDir,
}

/// One member.
pub struct Member {
    /// Its `--name`.
    pub name: String,
    /// The client address (`http://` + this is an endpoint).
    pub client: SocketAddr,
    /// The peer address.
    pub peer: SocketAddr,
    host: Option<Host>,
    child: Option<Child>,
}

impl Etcd {
    /// Starts `n` members on loopback with ephemeral ports and waits until they are healthy.
    pub fn start(n: usize) -> Result<Self> {
        let mut last = None;
        // Free ports are found by binding port 0 and closing; another process may take one in
        // between, in which case etcd fails to bind and the whole start is tried again.
        for _ in 0..3 {
            let listeners: Vec<TcpListener> = (0..2 * n)
                .map(|_| TcpListener::bind("127.0.0.1:0"))
                .collect::<std::io::Result<_>>()?;
            let addrs: Vec<SocketAddr> = listeners
                .iter()
                .map(|l| l.local_addr())
                .collect::<std::io::Result<_>>()?;
            drop(listeners);
            let places = (0..n)
                .map(|i| (None, addrs[2 * i], addrs[2 * i + 1]))
                .collect();
            match Self::launch(places, None) {
                Ok(etcd) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// Starts one member in each host's namespace, on its address, ports 2379 (client) and
    /// 2380 (peer), and waits until they are healthy.
    pub fn start_on(hosts: &[&Host]) -> Result<Self> {
        Self::start_on_electing(hosts, None)
    }

    /// As [`Etcd::start_on`], with `--election-timeout` set to `election` (and the heartbeat
    /// to a tenth of it) when given.
    pub fn start_on_electing(hosts: &[&Host], election: Option<Duration>) -> Result<Self> {
        let places = hosts
            .iter()
            .map(|h| {
                (
                    Some((*h).clone()),
                    SocketAddr::from((h.addr, 2379)),
                    SocketAddr::from((h.addr, 2380)),
                )
            })
            .collect();
        Self::launch(places, election.map(|e| e.as_millis() as u64))
    }

    /// The client endpoints, `http://addr:port`, for `--etcd` and the fleet client.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    /// A member's PID while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Waits until every running member answers `/health` with `"health": "true"`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if let Some(status) = self.members[i].child.as_mut().unwrap().try_wait()? {
                    bail!(
                        "etcd member {} exited ({status}):\n{}",
                        self.members[i].name,
                        self.log_tail(i)
                    );
                }
                let healthy = self
                    .get(i, "/health")
                    .map(|v| v["health"] == "true")
                    .unwrap_or(false);
                all &= healthy;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tails: Vec<String> =
                    (0..self.members.len()).map(|i| self.log_tail(i)).collect();
                bail!("etcd not healthy after {timeout:?}:\n{}", tails.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the member that every running member names as leader, once they agree.
    pub fn leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(i) = self.agreed_leader() {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return self.agreed_leader();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills a member with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        let mut child = self.members[i]
            .child
            .take()
            .with_context(|| format!("member {i} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts a killed member again on its data directory and waits until all are healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.members[i].child.is_some() {
            bail!("member {i} is running");
        }
        let child = self.spawn(i)?;
        self.members[i].child = Some(child);
        self.wait_healthy(Duration::from_secs(20))
    }

    /// The tail of a member's log.
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "--- {} ---\n{}",
            self.members[i].name,
            lines[from..].join("\n")
        )
    }

    fn launch(
        places: Vec<(Option<Host>, SocketAddr, SocketAddr)>,
        election_ms: Option<u64>,
    ) -> Result<Self> {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let token = format!("relay-test-{}-{n}", std::process::id());
        let members: Vec<Member> = places
            .into_iter()
            .enumerate()
            .map(|(i, (host, client, peer))| Member {
                name: format!("m{i}"),
                client,
                peer,
                host,
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            members,
            cluster,
            token,
            election_ms,
            dir: tempfile::tempdir()?,
        };
        for i in 0..etcd.members.len() {
            let child = etcd.spawn(i)?;
            etcd.members[i].child = Some(child);
        }
        etcd.wait_healthy(Duration::from_secs(20))?;
        Ok(etcd)
    }

    fn spawn(&self, i: usize) -> Result<Child> {
        let m = &self.members[i];
        let mut cmd = match &m.host {
            Some(h) => h.command("etcd"),
            None => Command::new("etcd"),
        };
        let client = format!("http://{}", m.client);
        let peer = format!("http://{}", m.peer);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(ms) = self.election_ms {
            cmd.arg("--election-timeout")
                .arg(ms.to_string())
                .arg("--heartbeat-interval")
                .arg((ms / 10).max(10).to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path(i))?,
            ));
        cmd.spawn()
            .context("spawn etcd (run tests/install-deps.sh)")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn agreed_leader(&self) -> Result<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                ids.push(None);
                continue;
            }
            let v = self.post(i, "/v3/maintenance/status", "{}")?;
            ids.push(Some(json_u64(&v["header"]["member_id"])?));
            leaders.push(json_u64(&v["leader"])?);
        }
        let first = *leaders.first().context("no member running")?;
        if first == 0 || leaders.iter().any(|&l| l != first) {
            bail!("members do not agree on a leader: {leaders:?}");
        }
        ids.iter()
            .position(|id| *id == Some(first))
            .context("the leader is not a running member")
    }

    fn get(&self, i: usize, path: &str) -> Result<Value> {
        let url = format!("http://{}{path}", self.members[i].client);
        self.in_place(i, move || -> Result<Value> {
            Ok(ureq::get(&url)
                .timeout(Duration::from_secs(2))
                .call()?
                .into_json()?)
        })
    }

    fn post(&self, i: usize, path: &str, body: &'static str) -> Result<Value> {
        let url = format!("http://{}{path}", self.members[i].client);
        self.in_place(i, move || -> Result<Value> {
            Ok(ureq::post(&url)
                .timeout(Duration::from_secs(2))
                .set("Content-Type", "application/json")
                .send_string(body)?
                .into_json()?)
        })
    }

    /// Runs `f` where member `i`'s address is reachable: in its namespace, or right here.
    fn in_place<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match &self.members[i].host {
            Some(h) => h.run(f)?,
            None => f(),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The gateway writes 64-bit integers as JSON strings.
fn json_u64(v: &Value) -> Result<u64> {
    match v {
        Value::String(s) => Ok(s.parse()?),
        Value::Number(n) => n.as_u64().context("not a u64"),
        _ => bail!("not a number: {v}"),
    }
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);
