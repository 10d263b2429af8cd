//! A set of sequence numbers stored as disjoint closed intervals, so memory grows
//! with the number of gaps, not with the number of spans: a generator that lost
//! nothing costs one interval however long it runs.
//!
//! Memory stays bounded whatever a client sends: past `max_intervals`, the lowest
//! interval is folded into a "frozen" prefix. Its gaps stay counted as missing;
//! a number that later arrives below the frozen floor can no longer be told apart
//! (late or duplicate) and is counted in [`SeqSet::untracked`] only.

use std::collections::BTreeMap;

/// What inserting one sequence number found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Seen for the first time.
    New,
    /// Already seen.
    Duplicate,
    /// Below the frozen floor: cannot be classified any more.
    Untracked,
}

/// Interval set of seen sequence numbers with duplicate detection.
#[derive(Debug, Clone)]
pub struct SeqSet {
    /// start -> end (inclusive), disjoint and not adjacent.
    ranges: BTreeMap<u64, u64>,
    max_intervals: usize,
    /// Numbers `< floor` are frozen (only when the cap was reached).
    floor: u64,
    min: Option<u64>,
    max: Option<u64>,
    distinct: u64,
    untracked: u64,
}

impl SeqSet {
    /// An empty set keeping at most `max_intervals` intervals (at least 1).
    pub fn new(max_intervals: usize) -> Self {
        SeqSet {
            ranges: BTreeMap::new(),
            max_intervals: max_intervals.max(1),
            floor: 0,
            min: None,
            max: None,
            distinct: 0,
            untracked: 0,
        }
    }

    /// Records `seq`.
    pub fn insert(&mut self, seq: u64) -> Insert {
        if seq < self.floor {
            self.untracked += 1;
            return Insert::Untracked;
        }
        // The interval starting at or before seq.
        let before = self.ranges.range(..=seq).next_back().map(|(s, e)| (*s, *e));
        if let Some((_, e)) = before
            && seq <= e
        {
            return Insert::Duplicate;
        }
        let joins_before = before.filter(|&(_, e)| e.checked_add(1) == Some(seq));
        let after = seq
            .checked_add(1)
            .and_then(|n| self.ranges.get(&n).map(|e| (n, *e)));
        match (joins_before, after) {
            (Some((s, _)), Some((n, e))) => {
                self.ranges.remove(&n);
                self.ranges.insert(s, e);
            }
            (Some((s, _)), None) => {
                self.ranges.insert(s, seq);
            }
            (None, Some((n, e))) => {
                self.ranges.remove(&n);
                self.ranges.insert(seq, e);
            }
            (None, None) => {
                self.ranges.insert(seq, seq);
            }
        }
        self.distinct += 1;
        self.min = Some(self.min.map_or(seq, |m| m.min(seq)));
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        while self.ranges.len() > self.max_intervals {
            let (_, end) = self.ranges.pop_first().expect("non-empty");
            self.floor = end.saturating_add(1);
        }
        Insert::New
    }

    /// Smallest number seen.
    pub fn min(&self) -> Option<u64> {
        self.min
    }

    /// Largest number seen.
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// Numbers between the smallest and the largest seen that never arrived.
    pub fn missing(&self) -> u64 {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => {
                let span = u128::from(hi - lo) + 1;
                let seen = u128::from(self.distinct + self.untracked);
                u64::try_from(span.saturating_sub(seen)).unwrap_or(u64::MAX)
            }
            _ => 0,
        }
    }

    /// Numbers that arrived below the frozen floor (see the module doc).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Intervals currently held (memory is proportional to this).
    pub fn intervals(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=10 without 5 and with 7 twice: one missing, one duplicate.
    #[test]
    fn gap_and_duplicate() {
        let mut s = SeqSet::new(100);
        let mut dups = 0;
        for n in [1, 2, 3, 4, 6, 7, 7, 8, 9, 10] {
            if s.insert(n) == Insert::Duplicate {
                dups += 1;
            }
        }
        assert_eq!(dups, 1);
        assert_eq!(s.missing(), 1);
        assert_eq!((s.min(), s.max()), (Some(1), Some(10)));
        assert_eq!(s.intervals(), 2);
    }

    /// Out-of-order arrivals fill gaps and merge intervals.
    #[test]
    fn out_of_order_merges() {
        let mut s = SeqSet::new(100);
        for n in [10, 1, 5, 3, 2, 4, 6, 9, 8, 7] {
            assert_eq!(s.insert(n), Insert::New);
        }
        assert_eq!(s.intervals(), 1);
        assert_eq!(s.missing(), 0);
        assert_eq!(s.insert(1), Insert::Duplicate);
        assert_eq!(s.insert(10), Insert::Duplicate);
    }

    /// A long gap-free stream costs one interval.
    #[test]
    fn memory_follows_gaps() {
        let mut s = SeqSet::new(100);
        for n in 1..=100_000 {
            s.insert(n);
        }
        assert_eq!(s.intervals(), 1);
    }

    /// Extreme values do not overflow.
    #[test]
    fn extremes() {
        let mut s = SeqSet::new(100);
        s.insert(0);
        s.insert(u64::MAX);
        assert_eq!(s.missing(), u64::MAX - 1);
        assert_eq!(s.insert(u64::MAX), Insert::Duplicate);
    }

    /// Past the cap the lowest intervals are frozen: memory bounded, gaps still missing.
    #[test]
    fn cap_bounds_memory() {
        let mut s = SeqSet::new(10);
        for n in (0..1000).map(|i| i * 2) {
            s.insert(n);
        }
        assert!(s.intervals() <= 10);
        assert_eq!(s.missing(), 999);
        assert_eq!(s.insert(0), Insert::Untracked);
        assert_eq!(s.insert(1998), Insert::Duplicate);
    }
}
