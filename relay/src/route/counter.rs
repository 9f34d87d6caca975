//! Per-worker counters that the control thread sums on read.
//!
//! Each worker owns one cache-line-padded cell and is its only writer, so an add is a relaxed load
//! and store: no locked instruction and no cache line shared between cores on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A counter with one cell per worker.
#[derive(Debug)]
pub struct Counter {
    cells: Box<[CachePadded<AtomicU64>]>,
}

impl Counter {
    /// A counter for `workers` workers, all cells zero.
    pub fn new(workers: usize) -> Self {
        let cells = (0..workers.max(1))
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect();
        Self { cells }
    }

    /// Adds `n` to the cell of `worker`. Only that worker may call this with its index.
    #[inline]
    pub fn add(&self, worker: usize, n: u64) {
        if let Some(cell) = self.cells.get(worker) {
            // Single writer per cell: a plain load and store is enough and avoids a locked add.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    /// The sum over all workers.
    pub fn sum(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// The value of one worker's cell.
    pub fn worker(&self, worker: usize) -> u64 {
        self.cells
            .get(worker)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Counters of one participant, shared by every compiled copy of its room: per worker one
/// cache line holding all four, so a participant costs one line per worker, not four.
#[derive(Debug)]
pub struct ParticipantCounters {
    cells: Box<[CachePadded<[AtomicU64; 4]>]>,
}

/// One of a participant's counters.
#[derive(Clone, Copy, Debug)]
pub struct ParticipantCounter<'a> {
    cells: &'a [CachePadded<[AtomicU64; 4]>],
    index: usize,
}

impl ParticipantCounters {
    /// Zeroed counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        let cells = (0..workers.max(1))
            .map(|_| CachePadded::new([const { AtomicU64::new(0) }; 4]))
            .collect();
        Self { cells }
    }

    /// RTP and RTCP packets received from the participant.
    #[inline]
    pub fn packets_in(&self) -> ParticipantCounter<'_> {
        self.counter(0)
    }

    /// Bytes received from the participant.
    #[inline]
    pub fn bytes_in(&self) -> ParticipantCounter<'_> {
        self.counter(1)
    }

    /// Packets from the participant that were dropped (undeclared SSRC, rule, malformed).
    #[inline]
    pub fn packets_dropped(&self) -> ParticipantCounter<'_> {
        self.counter(2)
    }

    /// Authenticated STUN Binding requests answered.
    #[inline]
    pub fn stun_ok(&self) -> ParticipantCounter<'_> {
        self.counter(3)
    }

    #[inline]
    fn counter(&self, index: usize) -> ParticipantCounter<'_> {
        ParticipantCounter {
            cells: &self.cells,
            index,
        }
    }
}

impl ParticipantCounter<'_> {
    /// Adds `n` to the cell of `worker`. Only that worker may call this with its index.
    #[inline]
    pub fn add(&self, worker: usize, n: u64) {
        if let Some(cell) = self.cells.get(worker) {
            let c = &cell[self.index];
            // Single writer per cell: a plain load and store is enough and avoids a locked add.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    /// The sum over all workers.
    pub fn sum(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c[self.index].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Dropped-packet counters of one rule, per direction.
#[derive(Debug)]
pub struct RuleCounters {
    /// Packets not forwarded at all because their sender is blocked.
    pub dropped_send: Counter,
    /// Copies not sent to receivers who are blocked from receiving.
    pub dropped_receive: Counter,
}

impl RuleCounters {
    /// Zeroed counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            dropped_send: Counter::new(workers),
            dropped_receive: Counter::new(workers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_counters_are_separate() {
        let c = ParticipantCounters::new(2);
        c.packets_in().add(0, 1);
        c.packets_in().add(1, 2);
        c.bytes_in().add(1, 100);
        c.stun_ok().add(5, 1); // out of range: ignored
        assert_eq!(c.packets_in().sum(), 3);
        assert_eq!(c.bytes_in().sum(), 100);
        assert_eq!(c.packets_dropped().sum(), 0);
        assert_eq!(c.stun_ok().sum(), 0);
    }

    #[test]
    fn cells_sum() {
        let c = Counter::new(3);
        c.add(0, 2);
        c.add(2, 5);
        c.add(7, 100); // out of range: ignored, never a panic
        assert_eq!(c.sum(), 7);
        assert_eq!(c.worker(2), 5);
        assert_eq!(c.worker(9), 0);
    }
}
