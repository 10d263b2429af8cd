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
    distinct: u128,
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
        if self.insert_range(seq, seq) == 1 {
            Insert::Duplicate
        } else {
            Insert::New
        }
    }

    /// Records every number in `lo..=hi` and returns how many of them had
    /// already been seen (duplicates). Numbers below the frozen floor are
    /// counted in [`SeqSet::untracked`] only.
    pub fn insert_range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi < lo {
            return 0;
        }
        if hi < self.floor {
            self.untracked = self.untracked.saturating_add((hi - lo).saturating_add(1));
            return 0;
        }
        let lo = if lo < self.floor {
            self.untracked = self.untracked.saturating_add(self.floor - lo);
            self.floor
        } else {
            lo
        };
        // Intervals that overlap or touch lo..=hi: the one starting at or before lo,
        // and every one starting up to hi + 1.
        let mut touching: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &e)) = self.ranges.range(..lo).next_back()
            && e.saturating_add(1) >= lo
        {
            touching.push((s, e));
        }
        touching.extend(
            self.ranges
                .range(lo..=hi.saturating_add(1))
                .map(|(&s, &e)| (s, e)),
        );
        let mut dups = 0;
        let (mut new_lo, mut new_hi) = (lo, hi);
        for &(s, e) in &touching {
            let (ol, oh) = (s.max(lo), e.min(hi));
            if ol <= oh {
                dups += (oh - ol).saturating_add(1);
            }
            new_lo = new_lo.min(s);
            new_hi = new_hi.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(new_lo, new_hi);
        self.distinct += u128::from(hi - lo) + 1 - u128::from(dups);
        self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        while self.ranges.len() > self.max_intervals {
            let Some((_, end)) = self.ranges.pop_first() else {
                break;
            };
            self.floor = end.saturating_add(1);
        }
        dups
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
                // Numbers below the frozen floor (untracked) are not counted as
                // seen: a duplicate there must not hide a gap.
                let span = u128::from(hi - lo) + 1;
                u64::try_from(span.saturating_sub(self.distinct)).unwrap_or(u64::MAX)
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

    /// Freezes the lowest intervals until at most `keep` (at least 1) remain,
    /// as the cap does; returns how many were freed. Gaps below the new floor
    /// stay counted as missing.
    pub fn freeze_to(&mut self, keep: usize) -> usize {
        let keep = keep.max(1);
        let mut freed = 0;
        while self.ranges.len() > keep {
            let Some((_, end)) = self.ranges.pop_first() else {
                break;
            };
            self.floor = end.saturating_add(1);
            freed += 1;
        }
        freed
    }
}

/// Sorts `seqs` and collapses it into runs of consecutive numbers; also returns
/// how many numbers appeared more than once within `seqs`. Done outside any lock,
/// so the shared set is touched once per run instead of once per span.
pub fn runs(seqs: &mut [u64]) -> (Vec<(u64, u64)>, u64) {
    seqs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut dups = 0;
    for &n in seqs.iter() {
        match out.last_mut() {
            Some((_, hi)) if n == *hi => dups += 1,
            Some((_, hi)) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => out.push((n, n)),
        }
    }
    (out, dups)
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
        // Re-sent numbers below the floor do not make gaps look filled.
        for _ in 0..500 {
            s.insert(0);
        }
        assert_eq!(s.missing(), 999);
        assert_eq!(s.untracked(), 501);
    }

    /// Freezing to a smaller share keeps the missing count and sends late
    /// numbers below the floor to `untracked`, never to "seen".
    #[test]
    fn freeze_to_keeps_missing() {
        let mut s = SeqSet::new(100);
        for n in (0..50).map(|i| i * 3) {
            s.insert(n);
        }
        let missing = s.missing();
        assert_eq!(s.freeze_to(5), 45);
        assert_eq!((s.intervals(), s.missing()), (5, missing));
        assert_eq!(s.insert(1), Insert::Untracked);
        assert_eq!(
            s.missing(),
            missing,
            "a late number below the floor fills no gap"
        );
    }

    /// Ranges count their overlap with what was there as duplicates and merge.
    #[test]
    fn ranges() {
        let mut s = SeqSet::new(100);
        assert_eq!(s.insert_range(1, 10), 0);
        assert_eq!(s.insert_range(20, 30), 0);
        assert_eq!(s.missing(), 9);
        assert_eq!(s.insert_range(5, 25), 6 + 6);
        assert_eq!((s.intervals(), s.missing()), (1, 0));
        assert_eq!(s.insert_range(31, 31), 0);
        assert_eq!(s.intervals(), 1, "adjacent ranges merge");
        assert_eq!(s.insert_range(u64::MAX - 1, u64::MAX), 0);
        assert_eq!(s.insert_range(u64::MAX, u64::MAX), 1);
        let mut all = SeqSet::new(10);
        assert_eq!(all.insert_range(0, u64::MAX), 0);
        assert_eq!(all.missing(), 0);
    }

    /// Runs: sorted, consecutive numbers collapsed, in-batch repeats counted.
    #[test]
    fn batch_runs() {
        let mut v = vec![7, 3, 4, 5, 7, 9, 1, u64::MAX];
        assert_eq!(
            runs(&mut v),
            (
                vec![(1, 1), (3, 5), (7, 7), (9, 9), (u64::MAX, u64::MAX)],
                1
            )
        );
        assert_eq!(runs(&mut []), (vec![], 0));
    }

    /// Inserting one by one and by runs give the same result.
    #[test]
    fn runs_match_single_inserts() {
        let seqs: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 331).collect();
        let mut one = SeqSet::new(1000);
        let dup_one = seqs
            .iter()
            .filter(|&&n| one.insert(n) == Insert::Duplicate)
            .count() as u64;
        let mut two = SeqSet::new(1000);
        let mut v = seqs.clone();
        let (rs, in_batch) = runs(&mut v);
        let dup_two = in_batch + rs.iter().map(|&(a, b)| two.insert_range(a, b)).sum::<u64>();
        assert_eq!(dup_one, dup_two);
        assert_eq!(
            (one.missing(), one.min(), one.max()),
            (two.missing(), two.min(), two.max())
        );
    }
}
