//! Trunk peers as the workers see them: the other relays of the fleet, by node number and by
//! trunk address, and this relay's own node number and epoch for the headers it writes.
//!
//! The control thread builds a [`Peers`] from the fleet's node list and publishes it whole
//! ([`super::Update::Peers`]) when the list changes (a relay joins, leaves or rejoins): a change
//! costs O(relays), a handful. A worker reads it per trunk packet through `&self`: one hash
//! lookup by source address on ingress, one index by node number on egress.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::addr::Addr;
use super::counter::Counter;
use crate::packet::trunk::{Epoch, NodeNo};

/// Trunk packets sent to and received from one peer, one cell per worker.
#[derive(Debug)]
pub struct TrunkCounters {
    /// Trunk datagrams this relay queued for the peer.
    pub sent: Counter,
    /// Trunk datagrams accepted from the peer (registered address, current epoch, well formed).
    pub received: Counter,
}

impl TrunkCounters {
    /// Zeroed counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            sent: Counter::new(workers),
            received: Counter::new(workers),
        }
    }
}

/// Another relay of the fleet.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its node name (the metrics' `peer` label).
    pub name: Arc<str>,
    /// Its node number (trunk headers' origin).
    pub node: NodeNo,
    /// Its membership epoch: trunk packets from it must carry this one.
    pub epoch: Epoch,
    /// Its registered trunk address: the only source its trunk packets are accepted from.
    pub addr: SocketAddr,
    pub(crate) sockaddr: Addr,
    /// Its counters, kept by the control thread across node list changes.
    pub counters: Arc<TrunkCounters>,
}

impl Peer {
    /// A peer; `counters` are the ones the control thread keeps for that node name.
    pub fn new(
        name: &str,
        node: NodeNo,
        epoch: Epoch,
        addr: SocketAddr,
        counters: Arc<TrunkCounters>,
    ) -> Self {
        Self {
            name: name.into(),
            node,
            epoch,
            addr,
            sockaddr: Addr::from(addr),
            counters,
        }
    }
}

/// This relay's identity in trunk headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// Its node number.
    pub node: NodeNo,
    /// Its current membership epoch.
    pub epoch: Epoch,
}

/// The fleet as one worker forwards with it. Empty (no trunks) outside fleet mode.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    local: Option<Local>,
    by_node: Vec<Option<Peer>>,
    by_addr: HashMap<SocketAddr, u16>,
}

impl Peers {
    /// No fleet: nothing is sent to or accepted from a trunk.
    pub fn none() -> Self {
        Self::default()
    }

    /// This relay as `local` and the live peers. A peer that has this relay's node number, or
    /// a number or trunk address another peer already has, is left out.
    pub fn new(local: Local, peers: impl IntoIterator<Item = Peer>) -> Self {
        let mut out = Self {
            local: Some(local),
            ..Self::default()
        };
        for p in peers {
            let n = usize::from(p.node.0);
            if p.node == local.node
                || out.by_addr.contains_key(&p.addr)
                || out.by_node.get(n).is_some_and(Option::is_some)
            {
                continue;
            }
            if out.by_node.len() <= n {
                out.by_node.resize(n + 1, None);
            }
            out.by_addr.insert(p.addr, p.node.0);
            out.by_node[n] = Some(p);
        }
        out
    }

    /// This relay's node number and epoch; `None` outside fleet mode.
    #[inline]
    pub fn local(&self) -> Option<Local> {
        self.local
    }

    /// The peer with node number `node`.
    #[inline]
    pub fn get(&self, node: u16) -> Option<&Peer> {
        self.by_node.get(usize::from(node))?.as_ref()
    }

    /// The peer whose registered trunk address is `addr`.
    #[inline]
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<&Peer> {
        self.get(*self.by_addr.get(addr)?)
    }

    /// Every peer, by node number.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_node.iter().flatten()
    }
}

/// A room's fleet-wide number: FNV-1a (32 bits) of its name, so that every relay computes the
/// same one without asking the store. Receivers use it as a check (a trunk packet's sender is
/// found by origin node and participant number), so a collision between two rooms' numbers
/// costs nothing but that check.
pub fn room_number(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, node: u16, port: u16) -> Peer {
        Peer::new(
            name,
            NodeNo(node),
            Epoch(7),
            SocketAddr::from(([10, 0, 0, 1], port)),
            Arc::new(TrunkCounters::new(1)),
        )
    }

    #[test]
    fn peers_are_found_by_node_and_address_and_duplicates_are_left_out() {
        let local = Local {
            node: NodeNo(1),
            epoch: Epoch(9),
        };
        let peers = Peers::new(
            local,
            [
                peer("b", 2, 5000),
                peer("c", 5, 5001),
                peer("self", 1, 5002),
                peer("again", 2, 5003),
                peer("same-addr", 6, 5000),
            ],
        );
        assert_eq!(peers.local(), Some(local));
        assert_eq!(&*peers.get(2).unwrap().name, "b");
        assert_eq!(&*peers.get(5).unwrap().name, "c");
        assert!(peers.get(1).is_none() && peers.get(6).is_none() && peers.get(999).is_none());
        let addr = SocketAddr::from(([10, 0, 0, 1], 5001));
        assert_eq!(peers.by_addr(&addr).unwrap().node, NodeNo(5));
        assert!(
            peers
                .by_addr(&SocketAddr::from(([10, 0, 0, 1], 5003)))
                .is_none()
        );
        assert_eq!(peers.iter().count(), 2);
        assert!(Peers::none().local().is_none());
    }

    #[test]
    fn room_numbers_are_fnv1a() {
        // FNV-1a 32 test vectors (draft-eastlake-fnv): "" and "a".
        assert_eq!(room_number(""), 0x811c_9dc5);
        assert_eq!(room_number("a"), 0xe40c_292c);
        assert_eq!(room_number("foobar"), 0xbf9c_f968);
    }
}
