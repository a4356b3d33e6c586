//! A table's absolute intervals, filed by UTC day.

use super::*;

impl Intervals {
    /// Files `intervals` (from, to, rule word) by UTC day; returns the ones that go to the
    /// always-checked list instead (longer than [`LONG_DAYS`], or too far apart).
    pub(super) fn build(intervals: Vec<(i64, i64, u32)>) -> (Intervals, Vec<(i64, i64, u32)>) {
        let days =
            |&(from, to, _): &(i64, i64, u32)| (from.div_euclid(DAY), (to - 1).div_euclid(DAY));
        let (mut long, mut bucketed): (Vec<_>, Vec<_>) = intervals.into_iter().partition(|iv| {
            let (first, last) = days(iv);
            last - first >= LONG_DAYS
        });
        let (Some(first_day), Some(last_day)) = (
            bucketed.iter().map(|iv| days(iv).0).min(),
            bucketed.iter().map(|iv| days(iv).1).max(),
        ) else {
            return (Intervals::default(), long);
        };
        let entries: i64 = bucketed.iter().map(|iv| days(iv).1 - days(iv).0 + 1).sum();
        // A directory entry per day between the first and the last: the days are far apart
        // only when intervals are years apart, then the few far ones are scanned.
        if last_day - first_day > 4 * entries + 366 {
            long.append(&mut bucketed);
            return (Intervals::default(), long);
        }
        // Sorted by start, each interval is placed in every day it overlaps: within a day
        // the items stay sorted by start.
        bucketed.sort_unstable();
        let span = (last_day - first_day + 1) as usize;
        let mut day_at = vec![0u32; span + 1].into_boxed_slice();
        for iv in &bucketed {
            let (first, last) = days(iv);
            for d in first..=last {
                day_at[(d - first_day) as usize + 1] += 1;
            }
        }
        for d in 0..span {
            day_at[d + 1] += day_at[d];
        }
        let mut next = day_at[..span].to_vec();
        let mut items = vec![(0u32, 0u32, 0u32); day_at[span] as usize].into_boxed_slice();
        for iv in &bucketed {
            let (from, to, word) = *iv;
            let (first, last) = days(iv);
            for d in first..=last {
                let start = d * DAY;
                let clipped =
                    ((from.max(start) - start) as u32, (to.min(start + DAY) - start) as u32);
                let slot = &mut next[(d - first_day) as usize];
                items[*slot as usize] = (clipped.0, clipped.1, word);
                *slot += 1;
            }
        }
        (Intervals { first_day, day_at, items }, long)
    }

    #[inline]
    pub(super) fn query(&self, t: i64, mut emit: impl FnMut(u32)) {
        let day = t.div_euclid(DAY) - self.first_day;
        if day >= 0 && (day as usize) + 1 < self.day_at.len() {
            let (a, b) =
                (self.day_at[day as usize] as usize, self.day_at[day as usize + 1] as usize);
            let pos = t.rem_euclid(DAY) as u32;
            // Sorted by start within the day.
            for &(from, to, word) in &self.items[a..b] {
                if from > pos {
                    break;
                }
                if pos < to {
                    emit(word);
                }
            }
        }
    }
}
