//! A bounded map from SSRC to per-SSRC state, allocated once. A leg carries few SSRCs (a
//! browser sends audio, video and RTX; a subscriber receives a few per publisher), so a linear
//! scan over a compact key array beats hashing, and an SSRC the network picks cannot steer it.

use crate::packet::rtp::Ssrc;

use super::Error;

/// Up to `capacity` entries, preallocated; lookups and inserts never allocate.
#[derive(Clone, Debug)]
pub(super) struct Table<S> {
    ssrcs: Box<[u32]>,
    states: Box<[S]>,
    len: usize,
}

impl<S: Clone> Table<S> {
    /// A table for up to `capacity` SSRCs, its unused slots holding `empty` (allocates here,
    /// once).
    pub(super) fn new(capacity: usize, empty: S) -> Self {
        Self {
            ssrcs: vec![0; capacity].into_boxed_slice(),
            states: vec![empty; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// Where `ssrc` is, if present.
    pub(super) fn find(&self, ssrc: Ssrc) -> Option<usize> {
        self.ssrcs[..self.len].iter().position(|&s| s == ssrc.0)
    }

    /// Whether a new SSRC would fit.
    pub(super) fn is_full(&self) -> bool {
        self.len == self.ssrcs.len()
    }

    /// The state at a position [`Table::find`] or [`Table::insert`] gave.
    pub(super) fn get(&self, at: usize) -> &S {
        &self.states[at]
    }

    /// The state at a position [`Table::find`] or [`Table::insert`] gave.
    pub(super) fn get_mut(&mut self, at: usize) -> &mut S {
        &mut self.states[at]
    }

    /// Adds `ssrc` with `state`; the caller checked it is absent.
    pub(super) fn insert(&mut self, ssrc: Ssrc, state: S) -> Result<usize, Error> {
        if self.is_full() {
            return Err(Error::SsrcTableFull);
        }
        let at = self.len;
        self.ssrcs[at] = ssrc.0;
        self.states[at] = state;
        self.len += 1;
        Ok(at)
    }

    /// Takes `ssrc` out, giving its state back (swap-remove: positions of others may change).
    pub(super) fn remove(&mut self, ssrc: Ssrc) -> Option<S> {
        let at = self.find(ssrc)?;
        let last = self.len - 1;
        self.ssrcs.swap(at, last);
        self.states.swap(at, last);
        self.len = last;
        Some(self.states[last].clone())
    }

    /// How many SSRCs fit.
    pub(super) fn capacity(&self) -> usize {
        self.ssrcs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_full() {
        let mut t: Table<u32> = Table::new(3, 0);
        assert_eq!(t.find(Ssrc(7)), None);
        let a = t.insert(Ssrc(7), 70).unwrap();
        t.insert(Ssrc(8), 80).unwrap();
        t.insert(Ssrc(0), 1).unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(Ssrc(9), 90), Err(Error::SsrcTableFull));
        assert_eq!(*t.get(a), 70);
        *t.get_mut(a) += 1;
        assert_eq!(t.remove(Ssrc(7)), Some(71));
        assert_eq!(t.remove(Ssrc(7)), None);
        assert!(!t.is_full());
        assert_eq!(*t.get(t.find(Ssrc(0)).unwrap()), 1);
        assert_eq!(*t.get(t.find(Ssrc(8)).unwrap()), 80);
        assert_eq!(t.capacity(), 3);
    }
}
