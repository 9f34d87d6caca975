//! Network namespaces for fleet tests: a bridge in a namespace of its own and N hosts, each a
//! namespace with one veth pair to the bridge and an address in a private /24.
//!
//! Names and subnets come from this process's PID and a per-process counter, so test runs (and
//! tests inside one run) never share a namespace or a subnet: namespaces are
//! `rlyt-{pid}-{n}-{role}`, the subnet is `10.{100 + k / 256}.{k % 256}.0/24` with
//! `k = (pid * 16 + n) mod 32768`. Hosts are `.1`, `.2`, ... in the order given. Every host
//! also has its loopback up.
//!
//! Everything is removed on `Drop`, even when the test panics: processes still inside the
//! namespaces are killed (SIGKILL, by the PIDs `ip netns pids` names), then the namespaces are
//! deleted, which destroys their veth pairs and the bridge. [`sweep_stale`] (called by
//! [`Lan::new`]) deletes what a killed run left behind: only namespaces with this harness's
//! `rlyt-` prefix whose PID is no longer alive.
//!
//! Needs root and `ip` (iproute2); `nft` (nftables) for counters and drop rules.
//! `tests/install-deps.sh` installs them.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A bridge and its hosts. Dropping it removes them all.
pub struct Lan {
    /// The namespace that holds the bridge.
    pub bridge: String,
    /// The hosts, in the order their names were given.
    pub hosts: Vec<Host>,
    /// The first three octets of the /24.
    pub subnet: [u8; 3],
}

/// One host: a namespace with `eth0` on the LAN.
#[derive(Clone, Debug)]
pub struct Host {
    /// The short name the test gave it.
    pub name: String,
    /// The namespace's name (`ip netns exec <ns> ...`).
    pub ns: String,
    /// Its address on the LAN.
    pub addr: Ipv4Addr,
}

/// A named nftables counter's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (IP length).
    pub bytes: u64,
}

/// The netfilter hook a counter or drop rule sits on, in the host's own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Packets addressed to this host.
    Input,
    /// Packets this host sends.
    Output,
}

impl Lan {
    /// Makes a bridge namespace and one host namespace per name, each wired to the bridge.
    pub fn new(names: &[&str]) -> Result<Self> {
        if names.is_empty() || names.len() > 250 {
            bail!("a LAN has 1 to 250 hosts");
        }
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let k = (pid.wrapping_mul(16).wrapping_add(n)) % 32768;
        let subnet = [10, 100 + (k / 256) as u8, (k % 256) as u8];
        let prefix = format!("{PREFIX}{pid}-{n}");
        let mut lan = Self {
            bridge: format!("{prefix}-br"),
            hosts: Vec::new(),
            subnet,
        };
        // From here on, `lan` owns what exists: an error drops it and removes it all.
        ip(&["netns", "add", &lan.bridge])?;
        lan.exec_in(&lan.bridge, &["ip", "link", "add", "br0", "type", "bridge"])?;
        lan.exec_in(&lan.bridge, &["ip", "link", "set", "br0", "up"])?;
        lan.exec_in(&lan.bridge, &["ip", "link", "set", "lo", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{prefix}-{name}");
            let addr = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], i as u8 + 1);
            ip(&["netns", "add", &ns])?;
            lan.hosts.push(Host {
                name: (*name).to_owned(),
                ns: ns.clone(),
                addr,
            });
            let port = format!("h{i}");
            // Both ends are created straight in their namespaces, so no name is ever used in
            // the root namespace (parallel runs would collide there).
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.bridge,
            ])?;
            lan.exec_in(&lan.bridge, &["ip", "link", "set", &port, "master", "br0"])?;
            lan.exec_in(&lan.bridge, &["ip", "link", "set", &port, "up"])?;
            let cidr = format!("{addr}/24");
            lan.exec_in(&ns, &["ip", "addr", "add", &cidr, "dev", "eth0"])?;
            lan.exec_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
            lan.exec_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    /// The host with this short name.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} on this LAN"))
    }

    fn exec_in(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            remove_namespace(&h.ns);
        }
        remove_namespace(&self.bridge);
    }
}

impl Host {
    /// A command that runs `program` inside this host's namespace (`ip netns exec`). The
    /// spawned process's PID is the program's own: `ip` execs it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs a command to completion inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args.split_first().context("empty command")?;
        let out = self.command(program).args(rest).output()?;
        if !out.status.success() {
            bail!(
                "{args:?} in {}: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Runs `f` on a new thread inside this host's namespace and returns its result. Sockets
    /// that `f` opens, and threads it starts, live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.ns))
            .with_context(|| format!("open namespace {}", self.ns))?;
        let handle = std::thread::spawn(move || -> Result<T> {
            // SAFETY: setns(2) on a file descriptor we own, for this thread only
            // (CLONE_NEWNET); it touches no memory of ours.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Spawns a long-lived thread inside the namespace (a fleet instance, a UDP echo).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.ns))
            .with_context(|| format!("open namespace {}", self.ns))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: as in `run`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let entered = if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            let failed = entered.is_err();
            let _ = ready_tx.send(entered);
            if failed {
                // Never run `f` outside the namespace.
                panic!("setns failed");
            }
            f()
        });
        ready_rx.recv()?.context("setns")?;
        Ok(handle)
    }

    /// Loads an nft script (`nft -f -`) inside the namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {}: {}\n{script}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Adds a named counter of the packets on `hook` that match `matching` (nft syntax, such
    /// as `ip daddr 10.100.1.2 udp dport 40100`).
    pub fn count(&self, name: &str, hook: Hook, matching: &str) -> Result<()> {
        self.ensure_table()?;
        self.nft(&format!(
            "add counter inet {TABLE} {name}\nadd rule inet {TABLE} {} {matching} counter name {name}\n",
            hook.chain()
        ))
    }

    /// A named counter's values.
    pub fn counter(&self, name: &str) -> Result<Counter> {
        let out = self.exec(&["nft", "-j", "list", "counter", "inet", TABLE, name])?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let c = v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o.get("counter")))
            .context("no counter in nft output")?;
        Ok(Counter {
            packets: c["packets"].as_u64().unwrap_or(0),
            bytes: c["bytes"].as_u64().unwrap_or(0),
        })
    }

    /// Drops the packets on `hook` that match `matching`; returns the rule's handle, for
    /// [`Host::unblock`].
    pub fn block(&self, hook: Hook, matching: &str) -> Result<u64> {
        self.ensure_table()?;
        let out = self.exec(&[
            "nft",
            "--echo",
            "--handle",
            &format!("add rule inet {TABLE} {} {matching} drop", hook.chain()),
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "add rule ... drop # handle 3", then (newer nft) "# new generation 3 by ...".
        text.split("# handle ")
            .nth(1)
            .and_then(|h| h.split_whitespace().next())
            .and_then(|h| h.parse().ok())
            .with_context(|| format!("no handle in {text:?}"))
    }

    /// Removes a drop rule [`Host::block`] added.
    pub fn unblock(&self, hook: Hook, handle: u64) -> Result<()> {
        self.nft(&format!(
            "delete rule inet {TABLE} {} handle {handle}\n",
            hook.chain()
        ))
    }

    fn ensure_table(&self) -> Result<()> {
        // `add` is idempotent for tables and chains.
        self.nft(&format!(
            "add table inet {TABLE}\n\
             add chain inet {TABLE} input {{ type filter hook input priority 0; }}\n\
             add chain inet {TABLE} output {{ type filter hook output priority 0; }}\n"
        ))
    }
}

impl Hook {
    fn chain(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// Deletes namespaces that a killed run of these tests left: names with the `rlyt-` prefix
/// whose PID is not alive. Namespaces of live runs, and any other namespace, are left alone.
pub fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(&name);
        }
    }
}

/// Kills what runs inside `ns`, then deletes it. Best effort: used from `Drop`.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) takes plain integers. These PIDs are processes inside a
                // namespace this harness made for its own test.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

fn ip(args: &[&str]) -> Result<Output> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

const PREFIX: &str = "rlyt-";
const TABLE: &str = "relaytest";

static COUNTER: AtomicU32 = AtomicU32::new(0);
