//! A member's spans packed into `u32` words: `[n, spans…]`, in seconds of the week, or
//! with [`MINUTES`] one word per span in minutes.

use super::MINUTES;

/// Appends `[n, spans…]` for sorted, disjoint spans in seconds of the week, in minutes
/// (see [`MINUTES`]) when they all fall on whole minutes.
pub(super) fn encode_spans(spans: &[(u32, u32)], out: &mut Vec<u32>) {
    if spans.iter().all(|&(f, t)| f % 60 == 0 && t % 60 == 0) {
        out.push(spans.len() as u32 | MINUTES);
        out.extend(spans.iter().map(|&(f, t)| (f / 60) << 16 | (t / 60)));
    } else {
        out.push(spans.len() as u32);
        out.extend(spans.iter().flat_map(|&(f, t)| [f, t]));
    }
}

/// Words taken by the spans that follow the span count `n`.
#[inline]
pub(super) fn spans_len(n: u32) -> usize {
    if n & MINUTES != 0 { (n & !MINUTES) as usize } else { 2 * n as usize }
}

/// True when the spans `[n, spans…]` at the start of `p` contain week position `pos`
/// (seconds; `pos_min` is `pos / 60`), and the words they take including `n`.
#[inline]
pub(super) fn spans_contain(p: &[u32], pos: u32, pos_min: u32) -> (bool, usize) {
    let n = p[0];
    let len = spans_len(n);
    let spans = &p[1..1 + len];
    if n & MINUTES != 0 {
        // `pos` lies in `[from·60, to·60)` exactly when `pos / 60` lies in `[from, to)`.
        for &span in spans {
            if pos_min < span >> 16 {
                return (false, 1 + len);
            }
            if pos_min < span & 0xffff {
                return (true, 1 + len);
            }
        }
    } else {
        for pair in spans.chunks_exact(2) {
            if pos < pair[0] {
                return (false, 1 + len);
            }
            if pos < pair[1] {
                return (true, 1 + len);
            }
        }
    }
    (false, 1 + len)
}

/// The spans `[n, spans…]` at the start of `p` as `(from, to)` seconds of the week.
pub(super) fn decode_spans(p: &[u32]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let n = p[0];
    let spans = &p[1..1 + spans_len(n)];
    let (minutes, seconds) = if n & MINUTES != 0 { (spans, &[][..]) } else { (&[][..], spans) };
    let minutes = minutes.iter().map(|&s| ((s >> 16) * 60, (s & 0xffff) * 60));
    minutes.chain(seconds.chunks_exact(2).map(|pair| (pair[0], pair[1])))
}

/// Offset into `packed`, rule word and spans `[n, spans…]` of each member of a packed array.
pub(super) fn packed_members(packed: &[u32]) -> impl Iterator<Item = (usize, u32, &[u32])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= packed.len() {
            return None;
        }
        let end = at + 2 + spans_len(packed[at + 1]);
        let item = (at, packed[at], &packed[at + 1..end]);
        at = end;
        Some(item)
    })
}
