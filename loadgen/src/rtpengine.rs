//! rtpengine's ng control protocol (bencode over UDP).

use std::net::SocketAddr;

use anyhow::{Result, bail};

use crate::scenario::Plan;

/// An ng control connection.
pub struct Rtpengine {
    /// Commands sent.
    pub calls: u64,
}

impl Rtpengine {
    /// Connects to rtpengine's ng port.
    pub fn connect(_control: &str) -> Result<Self> {
        bail!("rtpengine target not implemented yet")
    }

    pub(crate) fn setup(
        &mut self,
        _plan: &Plan,
        _addrs: &[SocketAddr],
    ) -> Result<Vec<Vec<SocketAddr>>> {
        bail!("rtpengine target not implemented yet")
    }

    /// Deletes every call made.
    pub fn teardown(&mut self) -> Result<()> {
        Ok(())
    }
}
