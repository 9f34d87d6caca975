//! A timing wheel of stream indices by due time: O(1) to add and to take, where a binary heap
//! costs a sift of log(streams) comparisons per frame.

/// Items due in the same slot come out together, up to one slot early.
pub(crate) const SLOT_NS: u64 = 100_000;
/// Slots in the wheel: a 1.6 s horizon. Items due later wait in the last slot and go back in
/// when taken early.
const SLOTS: u64 = 16_384;

pub(crate) struct Wheel {
    slots: Vec<Vec<u32>>,
    /// The slot (absolute number) being drained.
    cursor: u64,
    /// Items filed; every one sits within `SLOTS` slots of the cursor, so a scan for one ends
    /// within `SLOTS` steps.
    len: usize,
}

impl Wheel {
    pub(crate) fn new(start_ns: u64) -> Self {
        Self {
            slots: vec![Vec::new(); SLOTS as usize],
            cursor: start_ns / SLOT_NS,
            len: 0,
        }
    }

    /// Files `item` under `due_ns` (never before the slot being drained).
    pub(crate) fn push(&mut self, due_ns: u64, item: u32) {
        let slot = (due_ns / SLOT_NS).clamp(self.cursor, self.cursor + SLOTS - 1);
        self.slots[(slot % SLOTS) as usize].push(item);
        self.len += 1;
    }

    /// An item whose slot has begun by `now_ns`; the caller puts back one that is not due yet.
    pub(crate) fn pop(&mut self, now_ns: u64) -> Option<u32> {
        let now_slot = now_ns / SLOT_NS;
        if self.len == 0 {
            self.cursor = self.cursor.max(now_slot);
            return None;
        }
        while self.cursor <= now_slot {
            if let Some(item) = self.slots[(self.cursor % SLOTS) as usize].pop() {
                self.len -= 1;
                return Some(item);
            }
            self.cursor += 1;
        }
        None
    }

    /// When the next occupied slot within `horizon_ns` of the cursor begins, if any.
    pub(crate) fn next_ns(&self, horizon_ns: u64) -> Option<u64> {
        (self.cursor..self.cursor + horizon_ns / SLOT_NS + 1)
            .find(|slot| !self.slots[(slot % SLOTS) as usize].is_empty())
            .map(|slot| slot * SLOT_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_slot_order() {
        let mut w = Wheel::new(1_000_000);
        w.push(1_250_000, 2);
        w.push(1_050_000, 1);
        w.push(5_000_000_000, 9); // beyond the horizon: kept in the last slot
        w.push(0, 0); // overdue: taken first
        assert_eq!(w.next_ns(1_000_000), Some(1_000_000));
        assert_eq!(w.pop(1_000_000), Some(0));
        assert_eq!(w.pop(1_000_000), Some(1));
        assert_eq!(w.pop(1_000_000), None);
        assert_eq!(w.next_ns(1_000_000), Some(1_200_000));
        assert_eq!(w.next_ns(50_000), None);
        assert_eq!(w.pop(1_300_000), Some(2));
        assert_eq!(w.pop(3_000_000_000), Some(9));
        assert_eq!(w.pop(u64::MAX / 2), None);
        // Far ahead with items left: the scan stops within one turn of the wheel.
        w.push(u64::MAX / 2 + 5 * SLOT_NS, 7);
        assert_eq!(w.pop(u64::MAX / 2 + 3 * SLOTS * SLOT_NS), Some(7));
    }
}
