//! A set of byte ranges: which bytes of a file the local cache holds.

use std::ops::Range;

/// Sorted, disjoint, non-touching byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<Range<u64>>);

impl Ranges {
    /// Adds `r` (joining ranges it touches or overlaps).
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for x in self.0.drain(..) {
            if x.end < start {
                out.push(x);
            } else if x.start > end {
                if !placed {
                    out.push(start..end);
                    placed = true;
                }
                out.push(x);
            } else {
                start = start.min(x.start);
                end = end.max(x.end);
            }
        }
        if !placed {
            out.push(start..end);
        }
        self.0 = out;
    }

    /// Drops everything at or past `len`.
    pub fn truncate(&mut self, len: u64) {
        self.0.retain(|r| r.start < len);
        if let Some(last) = self.0.last_mut() {
            last.end = last.end.min(len);
        }
    }

    /// Whether every byte of `r` is in the set.
    pub fn covers(&self, r: Range<u64>) -> bool {
        r.is_empty() || self.0.iter().any(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Bytes in the set.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Range<u64>> {
        self.0.iter()
    }

    /// Cuts `r` into consecutive pieces, each wholly inside the set (true)
    /// or wholly outside it (false).
    pub fn split(&self, r: Range<u64>) -> Vec<(Range<u64>, bool)> {
        let mut out = Vec::new();
        if r.is_empty() {
            return out;
        }
        let mut at = r.start;
        for x in &self.0 {
            if x.end <= at {
                continue;
            }
            if x.start >= r.end {
                break;
            }
            if x.start > at {
                out.push((at..x.start, false));
            }
            let end = x.end.min(r.end);
            out.push((x.start.max(at)..end, true));
            at = end;
        }
        if at < r.end {
            out.push((at..r.end, false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The set agrees with a bitmap under random inserts and truncations,
        /// and `split` partitions any range by membership.
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..60, any::<bool>()), 0..40),
                            probe in (0u64..220, 0u64..220)) {
            let mut set = Ranges::default();
            let mut bits = vec![false; 300];
            for (at, len, cut) in ops {
                if cut {
                    set.truncate(at);
                    for b in bits.iter_mut().skip(at as usize) { *b = false; }
                } else {
                    set.insert(at..at + len);
                    for b in &mut bits[at as usize..(at + len) as usize] { *b = true; }
                }
            }
            prop_assert_eq!(set.total(), bits.iter().filter(|b| **b).count() as u64);
            for w in set.0.windows(2) {
                prop_assert!(w[0].end < w[1].start, "ranges touch: {:?}", set);
            }
            let (a, b) = (probe.0.min(probe.1), probe.0.max(probe.1));
            let pieces = set.split(a..b);
            let mut at = a;
            for (r, inside) in &pieces {
                prop_assert_eq!(r.start, at);
                prop_assert!(!r.is_empty());
                for i in r.clone() { prop_assert_eq!(bits[i as usize], *inside); }
                at = r.end;
            }
            prop_assert_eq!(at, b);
            prop_assert_eq!(set.covers(a..b), (a..b).all(|i| bits[i as usize]));
        }
    }
}
