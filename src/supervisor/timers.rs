//! Timers as a min-heap of monotonic deadlines. The earliest deadline is the
//! event loop's poll timeout, so an idle zurg with no timers sleeps forever:
//! no ticks, no periodic wake-ups.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug)]
pub struct Timers<K: Ord> {
    heap: BinaryHeap<Reverse<(u64, u64, K)>>,
    seq: u64,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord> Timers<K> {
    /// Arms `key` for `at_ms`. Timers are never cancelled: owners tag keys
    /// with a generation and ignore stale ones, which keeps this a plain heap.
    pub fn arm(&mut self, at_ms: u64, key: K) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Reverse((at_ms, self.seq, key)));
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest timer due at `now_ms`, if any.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<K> {
        if self.next_deadline()? > now_ms {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, key))| key)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_then_arming_order() {
        let mut t = Timers::default();
        t.arm(30, "c");
        t.arm(10, "a");
        t.arm(10, "b");
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(10), Some("a"));
        assert_eq!(t.pop_due(10), Some("b"));
        assert_eq!(t.pop_due(29), None);
        assert_eq!(t.pop_due(100), Some("c"));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
