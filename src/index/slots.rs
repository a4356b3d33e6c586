//! A large frame table's week cut into slots: per slot, the members active for all of it
//! (a bitset) and those with a span boundary inside it.

use super::spans::*;
use super::{MID_MAX, SLOT_LARGE, SLOT_MID, Slots};
use crate::timetable::zone::WEEK;

/// Calls `f(slot, offset)` once for each slot in which the member at `offset` of `packed`
/// has a span boundary (is active for part of the slot).
pub(super) fn each_partial(
    packed: &[u32],
    width: u32,
    last: &mut [u32],
    mut f: impl FnMut(usize, u32),
) {
    last.fill(u32::MAX);
    for (at, _, spans) in packed_members(packed) {
        for (from, to) in decode_spans(spans) {
            let first = (from / width) as usize;
            let slots = &mut last[first..=((to - 1) / width) as usize];
            for (s, last) in (first..).zip(slots.iter_mut()) {
                let slot_start = s as u32 * width;
                let whole = from <= slot_start && slot_start + width <= to;
                if !whole && *last != at as u32 {
                    *last = at as u32;
                    f(s, at as u32);
                }
            }
        }
    }
}

/// The slot bitsets and boundary lists of a large frame table with `members` members.
pub(super) fn build_slots(packed: &[u32], members: usize) -> Slots {
    let width = if members > MID_MAX as usize { SLOT_LARGE } else { SLOT_MID };
    let slots = (WEEK as u32 / width) as usize;
    let words = members.div_ceil(64);
    let mut full = vec![0u64; slots * words].into_boxed_slice();
    let mut rules = Vec::with_capacity(members);
    for (m, (_, word, spans)) in packed_members(packed).enumerate() {
        rules.push(word);
        for (from, to) in decode_spans(spans) {
            for s in (from / width) as usize..=((to - 1) / width) as usize {
                let slot_start = s as u32 * width;
                if from <= slot_start && slot_start + width <= to {
                    full[s * words + m / 64] |= 1 << (m % 64);
                }
            }
        }
    }
    // Boundary lists in CSR form, exactly sized: count per slot, then place.
    let mut last = vec![u32::MAX; slots];
    let mut partial_at = vec![0u32; slots + 1].into_boxed_slice();
    each_partial(packed, width, &mut last, |s, _| partial_at[s + 1] += 1);
    for s in 0..slots {
        partial_at[s + 1] += partial_at[s];
    }
    let mut partial = vec![0u32; partial_at[slots] as usize].into_boxed_slice();
    let mut next = partial_at[..slots].to_vec();
    each_partial(packed, width, &mut last, |s, at| {
        partial[next[s] as usize] = at;
        next[s] += 1;
    });
    Slots { width, words, full, rules: rules.into_boxed_slice(), partial_at, partial }
}
