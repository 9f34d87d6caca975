//! Packet indices: the RFC 3711 §3.3.1 / Appendix A estimate of a 48-bit SRTP index from a
//! 16-bit sequence number, and a sliding window of the indices already used.
//!
//! One [`Window`] type serves both directions. On ingress it is the replay list of RFC 3711
//! §3.3.2, checked before authentication and updated after it; on egress it is
//! the list of indices already encrypted, so the relay never seals two packets under one
//! (key, SSRC, index).

use super::Error;

/// How many indices behind the highest one a window remembers. mediasoup configures libsrtp with
/// 1024 (libsrtp's own default is 128).
pub const REPLAY_WINDOW: u64 = 1024;

/// The highest index seen (or sent) for one SSRC and which of the [`REPLAY_WINDOW`] indices below
/// it were seen. Starts empty; the first accepted index sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// `None` until the first index is accepted.
    highest: Option<u64>,
    /// Bit `i % REPLAY_WINDOW` set: index `i` was seen, for `i` within the window.
    seen: [u64; WORDS],
}

impl Window {
    /// An empty window: no index seen yet. Only this module makes one: a caller could otherwise
    /// put a fresh window in place of a used one and reuse its indices.
    pub(super) const fn new() -> Self {
        Self {
            highest: None,
            seen: [0; WORDS],
        }
    }

    /// The highest index accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// The rollover counter the next estimate starts from (0 before the first packet).
    pub fn roc(&self) -> u32 {
        self.highest.map_or(0, |h| (h >> 16) as u32)
    }

    /// RFC 3711 Appendix A: the index of a packet with sequence number `seq`, taking the
    /// rollover counter of the highest index so far, one less, or one more, whichever puts the
    /// packet nearest to it. Before the first packet the ROC is 0 and the index is `seq`.
    ///
    /// Fails with [`Error::TooOld`] when the estimate is below index 0 (ROC 0, and `seq` more
    /// than 2^15 ahead of the highest, which Appendix A reads as a packet from before ROC 0), and
    /// with [`Error::KeyExhausted`] when the ROC would pass 2^32 - 1.
    pub(super) fn estimate(&self, seq: u16) -> Result<u64, Error> {
        let Some(highest) = self.highest else {
            return Ok(u64::from(seq));
        };
        let roc = highest >> 16;
        let s_l = (highest & 0xffff) as u16;
        let seq_wide = u64::from(seq);
        // Appendix A, condensed: if s_l < 2^15 { if SEQ - s_l > 2^15 { ROC - 1 } else { ROC } }
        // else { if s_l - 2^15 > SEQ { ROC + 1 } else { ROC } }
        let v = if s_l < HALF {
            if u32::from(seq) > u32::from(s_l) + u32::from(HALF) {
                roc.checked_sub(1).ok_or(Error::TooOld)?
            } else {
                roc
            }
        } else if s_l - HALF > seq {
            if roc == MAX_ROC {
                return Err(Error::KeyExhausted);
            }
            roc + 1
        } else {
            roc
        };
        Ok(v << 16 | seq_wide)
    }

    /// Whether `index` is new: above the highest, or within the window and not seen.
    pub(super) fn check(&self, index: u64) -> Result<(), Error> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        if highest - index >= REPLAY_WINDOW {
            return Err(Error::TooOld);
        }
        if self.is_seen(index) {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Records `index`, which [`Window::check`] accepted, sliding the window when it is the new
    /// highest. Call it only once the packet authenticated (or, on egress, was sealed).
    pub(super) fn accept(&mut self, index: u64) {
        match self.highest {
            None => {
                self.seen = [0; WORDS];
                self.highest = Some(index);
            }
            Some(highest) if index > highest => {
                if index - highest >= REPLAY_WINDOW {
                    self.seen = [0; WORDS];
                } else {
                    // Forget the indices that leave the window: they share bit positions with
                    // the new ones.
                    for i in highest + 1..index {
                        self.clear(i);
                    }
                }
                self.highest = Some(index);
            }
            Some(_) => {}
        }
        let bit = index % REPLAY_WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn is_seen(&self, index: u64) -> bool {
        let bit = index % REPLAY_WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn clear(&mut self, index: u64) {
        let bit = index % REPLAY_WINDOW;
        self.seen[(bit / 64) as usize] &= !(1 << (bit % 64));
    }
}

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;
const HALF: u16 = 1 << 15;
const MAX_ROC: u64 = u32::MAX as u64;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 3711 Appendix A written as the RFC writes it, on signed integers.
    fn appendix_a(roc: i64, s_l: i64, seq: i64) -> i64 {
        let v = if s_l < 32768 {
            if seq - s_l > 32768 { roc - 1 } else { roc }
        } else if s_l - 32768 > seq {
            roc + 1
        } else {
            roc
        };
        seq + v * 65536
    }

    fn window_at(highest: u64) -> Window {
        let mut w = Window::new();
        w.accept(highest);
        w
    }

    #[test]
    fn first_packet_takes_roc_zero() {
        let w = Window::new();
        assert_eq!(w.estimate(0xf17b), Ok(0xf17b));
        assert_eq!(w.check(0xf17b), Ok(()));
        assert_eq!(w.roc(), 0);
    }

    #[test]
    fn wrap_and_reorder_across_it() {
        let mut w = window_at(65_534);
        for seq in [65_535u16, 0, 1] {
            let i = w.estimate(seq).unwrap();
            w.check(i).unwrap();
            w.accept(i);
        }
        assert_eq!(w.highest(), Some(65_536 + 1));
        assert_eq!(w.roc(), 1);
        // 65,533 arrives late: it belongs to ROC 0, is within the window and unseen.
        let late = w.estimate(65_533).unwrap();
        assert_eq!(late, 65_533);
        assert_eq!(w.check(late), Ok(()));
        w.accept(late);
        assert_eq!(w.check(late), Err(Error::Replayed));
        assert_eq!(w.check(w.estimate(65_535).unwrap()), Err(Error::Replayed));
        assert_eq!(w.highest(), Some(65_537));
    }

    #[test]
    fn jump_of_more_than_half_reads_as_old() {
        // s_l = 1000, ROC 0: seq 40,000 is more than 2^15 ahead, so Appendix A takes ROC - 1,
        // below zero: too old.
        let w = window_at(1000);
        assert_eq!(w.estimate(40_000), Err(Error::TooOld));
        // With ROC 3 it estimates ROC 2, far behind the window.
        let w = window_at(3 << 16 | 1000);
        let i = w.estimate(40_000).unwrap();
        assert_eq!(i, 2 << 16 | 40_000);
        assert_eq!(w.check(i), Err(Error::TooOld));
        // Exactly 2^15 ahead is still the same ROC.
        assert_eq!(w.estimate(1000 + 32_768), Ok(3 << 16 | (1000 + 32_768)));
    }

    #[test]
    fn window_slides_and_forgets() {
        let mut w = window_at(5000);
        w.accept(4000);
        assert_eq!(w.check(4000), Err(Error::Replayed));
        assert_eq!(w.check(5000 - REPLAY_WINDOW), Err(Error::TooOld));
        assert_eq!(w.check(5000 - REPLAY_WINDOW + 1), Ok(()));
        // Slide by one: 4000 keeps its bit; the index that shares a bit with the new highest
        // is forgotten (it left the window).
        w.accept(5001);
        assert_eq!(w.check(4000), Err(Error::Replayed));
        // Slide past 4000's window: it becomes too old, not "unseen".
        w.accept(4000 + REPLAY_WINDOW);
        assert_eq!(w.check(4000), Err(Error::TooOld));
        assert_eq!(w.check(4001), Ok(()));
        // A jump bigger than the window clears everything.
        w.accept(100_000);
        assert_eq!(w.check(100_000 - 1), Ok(()));
        assert_eq!(w.check(100_000), Err(Error::Replayed));
    }

    #[test]
    fn roc_exhaustion_is_an_error() {
        let w = window_at(MAX_ROC << 16 | 0xfff0);
        assert_eq!(w.estimate(5), Err(Error::KeyExhausted));
        assert_eq!(w.estimate(0xfff1), Ok(MAX_ROC << 16 | 0xfff1));
    }

    proptest! {
        /// The estimate equals Appendix A on signed integers, whenever that is not negative.
        #[test]
        fn estimate_is_appendix_a(roc in 0u64..=u64::from(u32::MAX), s_l: u16, seq: u16) {
            let w = window_at(roc << 16 | u64::from(s_l));
            let reference = appendix_a(roc as i64, i64::from(s_l), i64::from(seq));
            match w.estimate(seq) {
                Ok(i) => prop_assert_eq!(i as i64, reference),
                Err(Error::TooOld) => prop_assert!(reference < 0),
                Err(Error::KeyExhausted) => prop_assert!(reference >> 16 > i64::from(u32::MAX)),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        /// Against a plain set of seen indices: `check` says Replayed exactly for a seen index
        /// within the window, TooOld below it, and accepts everything else.
        #[test]
        fn window_matches_a_set(steps in proptest::collection::vec(0u64..3000, 1..200)) {
            let mut w = Window::new();
            let mut seen = std::collections::BTreeSet::new();
            for i in steps {
                let expected = match seen.last().copied() {
                    None => Ok(()),
                    Some(h) if i > h => Ok(()),
                    Some(h) if h - i >= REPLAY_WINDOW => Err(Error::TooOld),
                    Some(_) if seen.contains(&i) => Err(Error::Replayed),
                    Some(_) => Ok(()),
                };
                prop_assert_eq!(w.check(i), expected);
                if expected.is_ok() {
                    w.accept(i);
                    seen.insert(i);
                }
            }
        }
    }
}
