//! Network namespaces for multi-relay runs: each participant's socket is made inside its relay's
//! namespace (a socket keeps the namespace it was made in), and that relay's API is called from
//! inside it, on a thread of its own that entered it with `setns(2)`. Nothing else of loadgen
//! ever changes namespace.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Opens `/var/run/netns/NAME`; a clear error if it does not exist.
    pub fn open(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') {
            bail!("{name:?} is not a network namespace name");
        }
        let path = PathBuf::from(NETNS_DIR).join(name);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "network namespace {name} does not exist ({} not found; `ip netns add {name}` \
                 makes one)",
                path.display()
            ),
            _ => anyhow!("opening network namespace {name} ({}): {e}", path.display()),
        })?;
        Ok(Self {
            name: name.to_owned(),
            file,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread that first enters this namespace, and returns its result.
    /// Sockets made in `f` stay in the namespace after it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns(2) with a namespace file descriptor that `self` keeps open
                    // for the whole call; CLONE_NEWNET changes the network namespace of this
                    // thread only (a thread of its own, ended when `f` returns) and touches no
                    // memory of ours.
                    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(anyhow!(
                            "entering network namespace {}: {}",
                            self.name,
                            std::io::Error::last_os_error()
                        ));
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Runs `f` in `ns`, or right here without one.
pub fn run_in<T: Send>(ns: Option<&Netns>, f: impl FnOnce() -> T + Send) -> Result<T> {
    match ns {
        Some(ns) => ns.run(f),
        None => Ok(f()),
    }
}

/// The local address this namespace's routes pick to reach `to` (a connected UDP socket's own
/// address; nothing is sent).
pub fn source_for(to: SocketAddr) -> Result<IpAddr> {
    let probe = UdpSocket::bind(SocketAddr::new(
        match to {
            SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
            SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
        },
        0,
    ))?;
    probe
        .connect(to)
        .with_context(|| format!("no route to {to}"))?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let e = Netns::open("loadgen-test-no-such-namespace").unwrap_err();
        assert!(
            e.to_string()
                .contains("network namespace loadgen-test-no-such-namespace does not exist"),
            "{e}"
        );
        assert!(Netns::open("../etc").is_err());
    }

    #[test]
    fn loopback_is_reached_from_loopback() {
        let ip = source_for("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
    }
}
