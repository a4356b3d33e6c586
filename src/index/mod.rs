//! The schedule index: which scripts fire for (event, camera, instant).
//!
//! Built once from every rule ([`ScheduleIndex::build`], or one rule at a time with an
//! [`IndexBuilder`]) and then only read, so a changed script set means building a new index
//! and swapping it in (`arc_swap`); readers never wait.
//!
//! ## How a query avoids looking at scripts that cannot match
//!
//! 1. **Event and camera.** Rules are grouped into tables by `(event, camera)`, plus one
//!    table per event for rules with `cameras: null`. A query reads two tables.
//!    Each table keeps its members and their spans packed in one array, so a query touches a
//!    few consecutive cache lines per table rather than one line per rule.
//! 2. **Time of week.** A day entry repeats every week on the wall clock of its zone, so a
//!    rule's day entries compile into *spans* of week position (seconds after Monday 00:00,
//!    stored as minutes when they fall on whole minutes) with the breaks already cut out.
//!    Entries written with fixed offsets all share one frame (UTC week position); entries
//!    in an IANA zone use that zone's wall-clock week. In a large table the week is cut into
//!    15-minute slots: per slot a bitset of the members active for the whole slot (emitted
//!    without any check) and a short list of members with a span boundary inside the slot
//!    (checked against their spans). Small tables check each member's spans directly with a
//!    binary search.
//! 3. **Intervals.** Absolute intervals are registered per table in every UTC day they
//!    overlap (those longer than a month go to a short list that is always checked), so a
//!    query reads the one day bucket of t.
//!
//! Two cases go to the reference evaluation ([`crate::timetable::Timetable::is_active_at`]):
//! an instant inside an IANA zone's repeated hour (its wall-clock reading is ambiguous, so
//! the week position alone cannot apply the DST policy), and entries whose bounds are written
//! in zones whose difference depends on the date. Both are rare, and the property test
//! `tests/index_matches_naive.rs` checks that the index always equals the naive scan.
//!
//! ## What is kept
//!
//! Only what queries read: the tables, each laid out once at its final size, the script id
//! of each rule, and the reference timetable of the rules that may take the reference
//! evaluation (those with an IANA-zone entry or a per-date entry), one per distinct
//! timetable. The rules themselves are not kept.
//!
//! Nothing here reads the clock: the instant is an argument.

pub mod rules;
pub mod week;

use std::sync::Arc;

use chrono::{DateTime, Utc, Weekday};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::index::rules::Rule;
use crate::timetable::zone::{DAY, WEEK, week_position_fixed};
use crate::timetable::{Axis, DayEntry, Timetable, Zone};

/// Width of a week slot, seconds: 15 minutes in large tables, an hour in mid-size ones
/// (a quarter of the bitset memory, a few more boundary checks).
const SLOT_LARGE: u32 = 900;
const SLOT_MID: u32 = 3600;
/// Tables with more members than this use 15-minute slots.
const MID_MAX: u32 = 128;
/// Tables with more members than this get slot bitsets; smaller ones are scanned.
const SCAN_MAX: usize = 48;
/// Flag in a member word: the rule can be found twice by one query (it has day entries in
/// several frames, or days and intervals), so emitting it checks for a repeat.
const REPEAT: u32 = 1 << 31;
/// Intervals longer than this many days are not put into day buckets.
const LONG_DAYS: i64 = 31;
/// Flag in a member's span count: its spans fall on whole minutes and take one word each,
/// `from << 16 | to` in minutes of the week (a week has 10,080), instead of two words of
/// seconds. Bounds are written `HH:MM` and offsets `±HH:MM`, so nearly every member has it.
const MINUTES: u32 = 1 << 31;

/// Marks a rule position without compiled data (a disabled rule) in [`IndexBuilder`].
const NONE: usize = usize::MAX;

/// The compiled schedule of every enabled rule.
///
/// Only what queries read is kept: the tables, each rule's script id and, for the few rules
/// a query may evaluate directly (see the module documentation), the reference timetable.
pub struct ScheduleIndex {
    /// Script id of each rule, by position.
    script_ids: Box<[i64]>,
    /// The reference timetable of each rule that may take the reference evaluation, by
    /// position; `None` for the others.
    reference: Box<[Option<Arc<Timetable>>]>,
    by_camera: FxHashMap<(i64, i64), Table>,
    by_event: FxHashMap<i64, Table>,
    enabled: usize,
}

/// The rules of one (event, camera) or (event, any camera) key. The first two frames and
/// the interval directory are stored inline: a query's first cache miss lands on them. A
/// table sits in its hash bucket, so it is kept small; the rare parts are out of line.
#[derive(Default)]
struct Table {
    frames: [Option<FrameTable>; 2],
    intervals: Intervals,
    rare: Option<Box<Rare>>,
}

/// The parts of a table few tables have.
#[derive(Default)]
struct Rare {
    /// Frames past the first two.
    frames: Box<[FrameTable]>,
    /// Intervals longer than [`LONG_DAYS`] (or too far apart for a day directory):
    /// (from, to, rule word).
    long: Box<[(i64, i64, u32)]>,
    /// Rules that always take the reference evaluation.
    exact: Box<[u32]>,
}

/// Asks the CPU to start loading the cache line at `p`; never faults, changes nothing.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it does not dereference `p` and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Table {
    /// Starts loading what a query at `t` reads first.
    #[inline]
    fn prefetch(&self, t: i64) {
        for ft in self.frames.iter().flatten() {
            match &ft.slots {
                None => prefetch(ft.packed.as_ptr()),
                Some(slots) => {
                    if ft.frame.is_fixed() {
                        let s = (week_position_fixed(t, 0) / slots.width) as usize;
                        prefetch(slots.full.as_ptr().wrapping_add(s * slots.words));
                        prefetch(slots.partial_at.as_ptr().wrapping_add(s));
                    }
                    prefetch(slots.rules.as_ptr());
                }
            }
        }
        let day = t.div_euclid(DAY) - self.intervals.first_day;
        if day >= 0 {
            prefetch(self.intervals.day_at.as_ptr().wrapping_add(day as usize));
        }
    }

    fn frames(&self) -> impl Iterator<Item = &FrameTable> {
        let more = self.rare.as_ref().map_or(&[][..], |r| &r.frames[..]);
        self.frames.iter().flatten().chain(more.iter())
    }
}

/// The members of a table whose day entries live in one frame.
struct FrameTable {
    frame: Zone,
    /// Per member: `[rule word, n, spans…]`, spans sorted and disjoint: `from0, to0, …,
    /// from(n-1), to(n-1)` in seconds of the week, or with [`MINUTES`] in `n`, one word
    /// `from << 16 | to` per span in minutes.
    packed: Box<[u32]>,
    slots: Option<Box<Slots>>,
}

struct Slots {
    /// Slot width, seconds.
    width: u32,
    words: usize,
    /// `slots × words` bits: member active during the whole slot.
    full: Box<[u64]>,
    /// Rule word of each member, by member number.
    rules: Box<[u32]>,
    /// CSR offsets into `partial`, one per slot plus the end.
    partial_at: Box<[u32]>,
    /// Offsets into `packed` of the members with a span boundary inside the slot.
    partial: Box<[u32]>,
}

/// A table's absolute intervals shorter than [`LONG_DAYS`], by UTC day.
#[derive(Default)]
struct Intervals {
    /// UTC day number of `day_at[0]`.
    first_day: i64,
    /// Offsets into `items` where each day from `first_day` starts, plus the end; empty
    /// when the table has no bucketed intervals.
    day_at: Box<[u32]>,
    /// (from, to, rule word) of each interval cut to the day, as seconds after the day's
    /// 00:00 UTC (`to` up to 86400); grouped by day, sorted by `from` within a day.
    items: Box<[(u32, u32, u32)]>,
}

/// Spans of one rule in one frame while building.
struct FrameSpans {
    frame: Zone,
    spans: Vec<(u32, u32)>,
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// The frame an entry's spans are expressed in, and the shift into it.
fn frame_of(zone: Zone) -> (Zone, i64) {
    match zone {
        Zone::Fixed(off) => (Zone::Fixed(0), -i64::from(off)),
        named => (named, 0),
    }
}

/// Adds `[from, to)` (any integers) to `out` as spans within `[0, WEEK)`.
fn push_wrapped(out: &mut Vec<(u32, u32)>, from: i64, to: i64) {
    if to <= from {
        return;
    }
    if to - from >= WEEK {
        out.push((0, WEEK as u32));
        return;
    }
    let f = from.rem_euclid(WEEK);
    let t = f + (to - from);
    if t <= WEEK {
        out.push((f as u32, t as u32));
    } else {
        out.push((f as u32, WEEK as u32));
        out.push((0, (t - WEEK) as u32));
    }
}

/// Sorts and merges overlapping or touching spans.
fn merge(spans: &mut Vec<(u32, u32)>) {
    spans.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
    for &(f, t) in spans.iter() {
        match out.last_mut() {
            Some(last) if f <= last.1 => last.1 = last.1.max(t),
            _ => out.push((f, t)),
        }
    }
    *spans = out;
}

/// The window minus its breaks, as pieces on the entry's day line.
fn window_pieces(axis: &Axis) -> Vec<(i64, i64)> {
    let mut breaks = axis.breaks.clone();
    breaks.sort_unstable();
    let mut pieces = Vec::with_capacity(breaks.len() + 1);
    let mut cursor = axis.from;
    for (bf, bt) in breaks {
        if bf > cursor {
            pieces.push((cursor, bf));
        }
        cursor = cursor.max(bt);
    }
    if cursor < axis.to {
        pieces.push((cursor, axis.to));
    }
    pieces
}

/// Compiles a timetable's day entries into week spans per frame, or `None` when an entry
/// needs per-date conversion (the rule then takes the reference evaluation).
fn compile_days(tt: &Timetable) -> Option<Vec<FrameSpans>> {
    let mut frames: Vec<FrameSpans> = Vec::new();
    for entry in &tt.days {
        let (frame, shift) = frame_of(entry.zone);
        let pieces = static_pieces(entry)?;
        let slot = match frames.iter().position(|f| f.frame == frame) {
            Some(i) => i,
            None => {
                frames.push(FrameSpans { frame, spans: Vec::new() });
                frames.len() - 1
            }
        };
        let spans = &mut frames[slot].spans;
        for (w, day) in WEEKDAYS.iter().enumerate() {
            if !entry.kind.applies(*day) {
                continue;
            }
            let base = w as i64 * DAY + shift;
            for &(f, t) in &pieces {
                push_wrapped(spans, base + f, base + t);
            }
        }
    }
    for f in &mut frames {
        merge(&mut f.spans);
    }
    frames.retain(|f| !f.spans.is_empty());
    Some(frames)
}

fn static_pieces(entry: &DayEntry) -> Option<Vec<(i64, i64)>> {
    if !entry.is_static() {
        return None;
    }
    // Static bounds do not depend on the date: any date gives the same axis.
    let axis = entry.axis_on(chrono::NaiveDate::default())?;
    Some(window_pieces(&axis))
}

/// Appends `[n, spans…]` for sorted, disjoint spans in seconds of the week, in minutes
/// (see [`MINUTES`]) when they all fall on whole minutes.
fn encode_spans(spans: &[(u32, u32)], out: &mut Vec<u32>) {
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
fn spans_len(n: u32) -> usize {
    if n & MINUTES != 0 { (n & !MINUTES) as usize } else { 2 * n as usize }
}

/// True when the spans `[n, spans…]` at the start of `p` contain week position `pos`
/// (seconds; `pos_min` is `pos / 60`), and the words they take including `n`.
#[inline]
fn spans_contain(p: &[u32], pos: u32, pos_min: u32) -> (bool, usize) {
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
fn decode_spans(p: &[u32]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let n = p[0];
    let spans = &p[1..1 + spans_len(n)];
    let (minutes, seconds) = if n & MINUTES != 0 { (spans, &[][..]) } else { (&[][..], spans) };
    let minutes = minutes.iter().map(|&s| ((s >> 16) * 60, (s & 0xffff) * 60));
    minutes.chain(seconds.chunks_exact(2).map(|pair| (pair[0], pair[1])))
}

/// Offset into `packed`, rule word and spans `[n, spans…]` of each member of a packed array.
fn packed_members(packed: &[u32]) -> impl Iterator<Item = (usize, u32, &[u32])> {
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

impl FrameTable {
    /// Offset into `packed`, rule word and spans `[n, spans…]` of each member.
    fn each_member(&self) -> impl Iterator<Item = (usize, u32, &[u32])> {
        packed_members(&self.packed)
    }
}

/// Calls `f(slot, offset)` once for each slot in which the member at `offset` of `packed`
/// has a span boundary (is active for part of the slot).
fn each_partial(packed: &[u32], width: u32, last: &mut [u32], mut f: impl FnMut(usize, u32)) {
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
fn build_slots(packed: &[u32], members: usize) -> Slots {
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

impl Intervals {
    /// Files `intervals` (from, to, rule word) by UTC day; returns the ones that go to the
    /// always-checked list instead (longer than [`LONG_DAYS`], or too far apart).
    fn build(intervals: Vec<(i64, i64, u32)>) -> (Intervals, Vec<(i64, i64, u32)>) {
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
    fn query(&self, t: i64, mut emit: impl FnMut(u32)) {
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

/// Per-query cache of week positions, one per frame (a query rarely sees more than two).
struct Positions {
    seen: [(Zone, u32, bool); 4],
    len: usize,
    t: i64,
}

impl Positions {
    fn new(t: i64) -> Positions {
        Positions { seen: [(Zone::Fixed(0), 0, false); 4], len: 0, t }
    }

    fn get(&mut self, frame: Zone) -> (u32, bool) {
        if let Some(&(_, pos, amb)) = self.seen[..self.len].iter().find(|(z, _, _)| *z == frame) {
            return (pos, amb);
        }
        let (pos, amb) = match frame {
            Zone::Fixed(off) => (week_position_fixed(self.t, off), false),
            named => (named.week_position(self.t), named.is_ambiguous_at(self.t)),
        };
        if self.len < self.seen.len() {
            self.seen[self.len] = (frame, pos, amb);
            self.len += 1;
        }
        (pos, amb)
    }
}

/// Reusable per-caller buffers for [`ScheduleIndex::matches_into`].
#[derive(Debug, Default, Clone)]
pub struct Matches {
    /// Rule positions found by the last query, each once (see [`ScheduleIndex::script_id`]).
    pub positions: Vec<u32>,
    /// One bit per rule: already in `positions` (kept only for rules that can repeat).
    seen: Vec<u64>,
}

impl Matches {
    /// Empty buffers.
    pub fn new() -> Matches {
        Matches::default()
    }

    #[inline]
    fn push(&mut self, word: u32) {
        let rule = word & !REPEAT;
        if word & REPEAT != 0 {
            let (w, b) = (rule as usize / 64, rule % 64);
            if self.seen[w] & (1 << b) != 0 {
                return;
            }
            self.seen[w] |= 1 << b;
        }
        self.positions.push(rule);
    }
}

/// The key of a table: rules on one camera of an event, or on every camera of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Camera(i64, i64),
    Event(i64),
}

/// Builds a [`ScheduleIndex`] one rule at a time, so a caller that reads rules one by one
/// (the live snapshot streams database rows) never holds all of them: each rule is compiled
/// as it comes and only its spans are kept until [`IndexBuilder::finish`] lays out the
/// tables, each allocated at its final size.
#[derive(Default)]
pub struct IndexBuilder {
    script_ids: Vec<i64>,
    reference: Vec<Option<Arc<Timetable>>>,
    /// Per position: where the rule's compiled data starts in `data`, or [`NONE`].
    at: Vec<usize>,
    /// Per enabled rule: `[word, exact, frame count, (frame, n, spans…)…, interval count,
    /// first interval]` (spans encoded as in a packed table); an exact rule stops after
    /// `exact`.
    data: Vec<u32>,
    /// The enabled rules' intervals, each rule's consecutive.
    intervals: Vec<(i64, i64)>,
    /// The distinct frames, indexed by the frame numbers in `data`.
    frames: Vec<Zone>,
    /// Table number of each key, and the keys by number.
    tables: FxHashMap<Key, u32>,
    keys: Vec<Key>,
    /// (table number, rule position) of every membership, in the order added.
    members: Vec<(u32, u32)>,
    enabled: usize,
    /// The reference timetables kept so far and those of a previous index, by value: an
    /// equal timetable is kept once.
    timetables: FxHashSet<Arc<Timetable>>,
}

/// One enabled rule's compiled data, read back from an [`IndexBuilder`].
struct Compiled<'a> {
    word: u32,
    exact: bool,
    /// `(frame, n, spans…)…`.
    frames: &'a [u32],
    intervals: &'a [(i64, i64)],
}

impl Compiled<'_> {
    /// Frame number and spans `[n, spans…]` of each frame.
    fn frames(&self) -> impl Iterator<Item = (u32, &[u32])> {
        let d = self.frames;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= d.len() {
                return None;
            }
            let end = at + 2 + spans_len(d[at + 1]);
            let item = (d[at], &d[at + 1..end]);
            at = end;
            Some(item)
        })
    }
}

impl IndexBuilder {
    /// An empty builder with room for `rules` rules.
    pub fn with_capacity(rules: usize) -> IndexBuilder {
        IndexBuilder {
            script_ids: Vec::with_capacity(rules),
            reference: Vec::with_capacity(rules),
            at: Vec::with_capacity(rules),
            ..IndexBuilder::default()
        }
    }

    /// Shares the reference timetables of `previous` (the index this one replaces): a rule
    /// whose timetable equals one of them keeps that one, so while both indexes live (a
    /// rebuild swaps the new one in while readers may still hold the old) the unchanged
    /// timetables exist once.
    pub fn share_with(&mut self, previous: &ScheduleIndex) {
        self.timetables.extend(previous.reference.iter().flatten().cloned());
    }

    /// Adds the next rule; its position is the number of rules added before it. Disabled
    /// rules take a position but never match. Of equal timetables one is kept.
    ///
    /// # Panics
    /// With 2³¹ rules or more (positions are 31-bit), or 2³² - 1 intervals.
    pub fn add(&mut self, rule: &Rule) {
        let position = self.script_ids.len();
        assert!(position < REPEAT as usize, "too many rules for one index");
        self.script_ids.push(rule.script_id);
        if !rule.enabled {
            self.reference.push(None);
            self.at.push(NONE);
            return;
        }
        self.enabled += 1;
        let compiled = compile_days(&rule.timetable);
        let exact = compiled.is_none();
        let frames = compiled.unwrap_or_default();
        // Each frame and each interval can find the rule once.
        let sources = frames.len() + rule.timetable.intervals.len();
        let word = position as u32 | if sources > 1 { REPEAT } else { 0 };
        self.at.push(self.data.len());
        self.data.extend([word, u32::from(exact)]);
        if !exact {
            self.data.push(frames.len() as u32);
            for fs in &frames {
                let frame = match self.frames.iter().position(|&f| f == fs.frame) {
                    Some(i) => i,
                    None => {
                        self.frames.push(fs.frame);
                        self.frames.len() - 1
                    }
                };
                self.data.push(frame as u32);
                encode_spans(&fs.spans, &mut self.data);
            }
            let first = u32::try_from(self.intervals.len()).unwrap_or(u32::MAX);
            assert!(first < u32::MAX, "too many intervals for one index");
            self.data.extend([rule.timetable.intervals.len() as u32, first]);
            self.intervals.extend(rule.timetable.intervals.iter().map(|i| (i.from, i.to)));
        }
        // The reference timetable is kept for what the spans cannot answer: entries that
        // convert per date, and the repeated hour of an IANA zone.
        let needs_reference = exact || frames.iter().any(|f| !f.frame.is_fixed());
        match &rule.cameras {
            None => self.member(Key::Event(rule.event_id), position as u32),
            Some(cams) => {
                for &cam in cams {
                    self.member(Key::Camera(rule.event_id, cam), position as u32);
                }
            }
        }
        let reference = needs_reference.then(|| self.keep(&rule.timetable));
        self.reference.push(reference);
    }

    /// The kept timetable equal to `timetable`, which is kept when there is none.
    fn keep(&mut self, timetable: &Arc<Timetable>) -> Arc<Timetable> {
        match self.timetables.get(timetable) {
            Some(kept) => kept.clone(),
            None => {
                self.timetables.insert(timetable.clone());
                timetable.clone()
            }
        }
    }

    fn member(&mut self, key: Key, position: u32) {
        let next = self.keys.len() as u32;
        let table = *self.tables.entry(key).or_insert(next);
        if table == next {
            self.keys.push(key);
        }
        self.members.push((table, position));
    }

    fn compiled(&self, position: u32) -> Option<Compiled<'_>> {
        let at = *self.at.get(position as usize)?;
        let d = self.data.get(at..)?;
        let (&word, &exact) = (d.first()?, d.get(1)?);
        if exact != 0 {
            return Some(Compiled { word, exact: true, frames: &[], intervals: &[] });
        }
        let count = *d.get(2)? as usize;
        let mut end = 3;
        for _ in 0..count {
            end += 2 + spans_len(*d.get(end + 1)?);
        }
        let (n, first) = (*d.get(end)? as usize, *d.get(end + 1)? as usize);
        Some(Compiled {
            word,
            exact: false,
            frames: d.get(3..end)?,
            intervals: self.intervals.get(first..first + n)?,
        })
    }

    /// Lays out one table from its members' positions (ascending).
    fn table(&self, members: &[u32]) -> Table {
        // First pass: the frames in order of first appearance with their sizes, the exact
        // rules, the number of intervals.
        let mut frames: Vec<(u32, usize, usize)> = Vec::new(); // (frame, packed len, members)
        let mut exact = Vec::new();
        let mut intervals = 0;
        for c in members.iter().filter_map(|&p| self.compiled(p)) {
            if c.exact {
                exact.push(c.word & !REPEAT);
                continue;
            }
            for (frame, spans) in c.frames() {
                let i = match frames.iter().position(|f| f.0 == frame) {
                    Some(i) => i,
                    None => {
                        frames.push((frame, 0, 0));
                        frames.len() - 1
                    }
                };
                frames[i].1 += 1 + spans.len();
                frames[i].2 += 1;
            }
            intervals += c.intervals.len();
        }
        // Second pass: fill each frame's packed array and collect the intervals.
        let mut packed: Vec<Vec<u32>> = frames.iter().map(|f| Vec::with_capacity(f.1)).collect();
        let mut ivs = Vec::with_capacity(intervals);
        for c in members.iter().filter_map(|&p| self.compiled(p)) {
            for (frame, spans) in c.frames() {
                if let Some(i) = frames.iter().position(|f| f.0 == frame) {
                    packed[i].push(c.word);
                    packed[i].extend_from_slice(spans);
                }
            }
            ivs.extend(c.intervals.iter().map(|&(f, t)| (f, t, c.word)));
        }
        let mut tables = frames.iter().zip(packed).map(|(&(frame, _, members), packed)| {
            let packed = packed.into_boxed_slice();
            let slots = (members > SCAN_MAX).then(|| Box::new(build_slots(&packed, members)));
            FrameTable { frame: self.frames[frame as usize], packed, slots }
        });
        let inline = [tables.next(), tables.next()];
        let more: Box<[FrameTable]> = tables.collect();
        let (intervals, mut long) = Intervals::build(ivs);
        long.sort_unstable();
        long.dedup();
        let rare = (!more.is_empty() || !long.is_empty() || !exact.is_empty()).then(|| {
            Box::new(Rare {
                frames: more,
                long: long.into_boxed_slice(),
                exact: exact.into_boxed_slice(),
            })
        });
        Table { frames: inline, intervals, rare }
    }

    /// Lays out every table and returns the finished index.
    pub fn finish(mut self) -> ScheduleIndex {
        self.timetables = FxHashSet::default();
        // The memberships grouped by table (a counting sort keeps positions ascending).
        let tables = self.keys.len();
        let mut start = vec![0u32; tables + 1];
        for &(t, _) in &self.members {
            start[t as usize + 1] += 1;
        }
        for t in 0..tables {
            start[t + 1] += start[t];
        }
        let mut next = start[..tables].to_vec();
        let mut grouped = vec![0u32; self.members.len()];
        for &(t, p) in &self.members {
            grouped[next[t as usize] as usize] = p;
            next[t as usize] += 1;
        }
        drop(next);
        let cameras = self.keys.iter().filter(|k| matches!(k, Key::Camera(..))).count();
        let mut by_camera = FxHashMap::with_capacity_and_hasher(cameras, Default::default());
        let mut by_event =
            FxHashMap::with_capacity_and_hasher(tables - cameras, Default::default());
        for (t, key) in self.keys.iter().enumerate() {
            let table = self.table(&grouped[start[t] as usize..start[t + 1] as usize]);
            match *key {
                Key::Camera(event, camera) => {
                    by_camera.insert((event, camera), table);
                }
                Key::Event(event) => {
                    by_event.insert(event, table);
                }
            }
        }
        ScheduleIndex {
            script_ids: self.script_ids.into_boxed_slice(),
            reference: self.reference.into_boxed_slice(),
            by_camera,
            by_event,
            enabled: self.enabled,
        }
    }
}

impl ScheduleIndex {
    /// Builds the index from every rule; disabled rules are kept but never match. A rule's
    /// position is its place in `rules`.
    ///
    /// # Panics
    /// With 2³¹ rules or more (positions are 31-bit).
    pub fn build(rules: Vec<Rule>) -> ScheduleIndex {
        let mut builder = IndexBuilder::with_capacity(rules.len());
        for rule in rules {
            builder.add(&rule);
        }
        builder.finish()
    }

    /// Script ids (sorted) of the enabled rules that fire for `event_id` on `camera_id` at `at`.
    pub fn matches(&self, event_id: i64, camera_id: i64, at: DateTime<Utc>) -> Vec<i64> {
        let mut m = Matches::new();
        self.matches_into(event_id, camera_id, at.timestamp(), &mut m);
        let mut ids: Vec<i64> = m.positions.iter().map(|&i| self.script_id(i)).collect();
        ids.sort_unstable();
        ids
    }

    /// Like [`matches`](Self::matches), at unix second `t`, leaving the rule positions (see
    /// [`script_id`](Self::script_id)) in `m.positions`, each once, in no particular order.
    /// Reusing one `Matches` per thread keeps queries free of allocation.
    pub fn matches_into(&self, event_id: i64, camera_id: i64, t: i64, m: &mut Matches) {
        m.positions.clear();
        let words = self.script_ids.len().div_ceil(64);
        if m.seen.len() != words {
            m.seen = vec![0; words];
        }
        let mut positions = Positions::new(t);
        // Both lookups first, then start loading both tables' data, so the two chains of
        // cache misses overlap instead of following each other.
        let by_camera = self.by_camera.get(&(event_id, camera_id));
        let by_event = self.by_event.get(&event_id);
        for table in by_camera.iter().chain(by_event.iter()) {
            table.prefetch(t);
        }
        if let Some(table) = by_camera {
            self.query_table(table, t, &mut positions, m);
        }
        if let Some(table) = by_event {
            self.query_table(table, t, &mut positions, m);
        }
        // Leave the seen-bits clean for the next query.
        for &p in &m.positions {
            m.seen[p as usize / 64] &= !(1 << (p % 64));
        }
    }

    /// The reference evaluation of the rule at `position`.
    fn active_by_reference(&self, position: u32, t: i64) -> bool {
        self.reference
            .get(position as usize)
            .and_then(Option::as_ref)
            .is_some_and(|tt| tt.is_active_at(t))
    }

    fn query_table(&self, table: &Table, t: i64, positions: &mut Positions, m: &mut Matches) {
        for ft in table.frames() {
            let (pos, ambiguous) = positions.get(ft.frame);
            if ambiguous {
                // The repeated hour: the week position cannot apply the DST policy.
                for (_, word, _) in ft.each_member() {
                    if self.active_by_reference(word & !REPEAT, t) {
                        m.push(word);
                    }
                }
                continue;
            }
            let pos_min = pos / 60;
            match &ft.slots {
                None => {
                    let p = &ft.packed;
                    let mut at = 0;
                    while at < p.len() {
                        let (hit, len) = spans_contain(&p[at + 1..], pos, pos_min);
                        if hit {
                            m.push(p[at]);
                        }
                        at += 1 + len;
                    }
                }
                Some(slots) => {
                    let s = (pos / slots.width) as usize;
                    let row = &slots.full[s * slots.words..(s + 1) * slots.words];
                    for (w, &bits) in row.iter().enumerate() {
                        let mut bits = bits;
                        while bits != 0 {
                            let b = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            m.push(slots.rules[w * 64 + b]);
                        }
                    }
                    let (a, b) = (slots.partial_at[s] as usize, slots.partial_at[s + 1] as usize);
                    for &at in &slots.partial[a..b] {
                        let at = at as usize;
                        if spans_contain(&ft.packed[at + 1..], pos, pos_min).0 {
                            m.push(ft.packed[at]);
                        }
                    }
                }
            }
        }
        table.intervals.query(t, |word| m.push(word));
        if let Some(rare) = &table.rare {
            for &(from, to, word) in &rare.long {
                if from <= t && t < to {
                    m.push(word);
                }
            }
            for &rule in &rare.exact {
                if self.active_by_reference(rule, t) {
                    m.push(rule);
                }
            }
        }
    }

    /// The script id of the rule at a position returned by
    /// [`matches_into`](Self::matches_into).
    ///
    /// # Panics
    /// When `position` is not a rule position of this index.
    pub fn script_id(&self, position: u32) -> i64 {
        self.script_ids[position as usize]
    }

    /// Number of rules (enabled or not).
    pub fn len(&self) -> usize {
        self.script_ids.len()
    }

    /// True when built from no rules.
    pub fn is_empty(&self) -> bool {
        self.script_ids.is_empty()
    }

    /// Number of enabled rules.
    pub fn enabled(&self) -> usize {
        self.enabled
    }

    /// Number of rules that keep their reference timetable (see the module documentation).
    pub fn references(&self) -> usize {
        self.reference.iter().filter(|r| r.is_some()).count()
    }

    /// Approximate heap bytes of the index by part: (tables with their hash buckets, rule
    /// ids and reference pointers, packed spans, slot bitsets, slot boundary lists,
    /// intervals). The reference timetables themselves are not counted.
    pub fn heap_bytes(&self) -> [usize; 6] {
        fn buckets<K, V>(map: &FxHashMap<K, V>) -> usize {
            let b = (map.capacity() * 8 / 7).max(1).next_power_of_two();
            b * (std::mem::size_of::<(K, V)>() + 1)
        }
        let mut b = [0usize; 6];
        b[0] = buckets(&self.by_camera) + buckets(&self.by_event);
        b[1] = self.script_ids.len() * 8 + self.reference.len() * 8;
        for t in self.by_camera.values().chain(self.by_event.values()) {
            for ft in t.frames() {
                b[2] += ft.packed.len() * 4;
                if let Some(s) = &ft.slots {
                    b[3] += s.full.len() * 8 + s.rules.len() * 4;
                    b[4] += (s.partial_at.len() + s.partial.len()) * 4;
                }
            }
            b[5] += t.intervals.day_at.len() * 4 + t.intervals.items.len() * 12;
            if let Some(r) = &t.rare {
                b[0] += std::mem::size_of::<Rare>()
                    + r.frames.len() * std::mem::size_of::<FrameTable>();
                b[5] += r.long.len() * 24;
                b[1] += r.exact.len() * 4;
            }
        }
        b
    }
}

impl std::fmt::Debug for ScheduleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleIndex")
            .field("rules", &self.script_ids.len())
            .field("enabled", &self.enabled)
            .field("camera_tables", &self.by_camera.len())
            .field("event_tables", &self.by_event.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::index::rules::naive_matches;
    use crate::timetable::{ParseContext, parse_timetable};

    fn rule(id: i64, event: i64, cameras: Option<Vec<i64>>, tt: serde_json::Value) -> Rule {
        let ctx = ParseContext { timezone: chrono_tz::Europe::Berlin };
        Rule {
            script_id: id,
            event_id: event,
            cameras,
            enabled: true,
            timetable: Arc::new(parse_timetable(&tt, &ctx).unwrap()),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    #[test]
    fn wrapped_spans_split_at_the_week_end() {
        let mut v = Vec::new();
        push_wrapped(&mut v, WEEK - 10, WEEK + 5);
        assert_eq!(v, [((WEEK - 10) as u32, WEEK as u32), (0, 5)]);
        v.clear();
        push_wrapped(&mut v, -5, 5);
        assert_eq!(v, [((WEEK - 5) as u32, WEEK as u32), (0, 5)]);
    }

    #[test]
    fn event_camera_and_wildcard() {
        let all_day =
            json!({"days": [{"type": "same_every_day", "from": "00:00Z", "to": "23:59Z"}]});
        let rules = vec![
            rule(1, 10, Some(vec![1, 2]), all_day.clone()),
            rule(2, 10, None, all_day.clone()),
            rule(3, 11, None, all_day.clone()),
            Rule { enabled: false, ..rule(4, 10, None, all_day) },
        ];
        let index = ScheduleIndex::build(rules.clone());
        let t = at("2026-11-27T12:00:00Z");
        assert_eq!(index.matches(10, 1, t), vec![1, 2]);
        assert_eq!(index.matches(10, 3, t), vec![2]);
        assert_eq!(index.matches(11, 1, t), vec![3]);
        assert_eq!(index.matches(12, 1, t), Vec::<i64>::new());
        assert_eq!(index.enabled(), 3);
        assert_eq!(naive_matches(&rules, 10, 1, t), vec![1, 2]);
    }

    #[test]
    fn intervals_across_days_long_and_far_apart_agree_with_the_naive_scan() {
        let iv = |from: &str, to: &str| json!({"from": from, "to": to});
        let tts = [
            // Several UTC days, ending exactly at midnight.
            json!({"intervals": [iv("2026-11-27 22:00:00Z", "2026-11-30 00:00:00Z")]}),
            // Starting exactly at midnight, one second long.
            json!({"intervals": [iv("2026-11-28 00:00:00Z", "2026-11-28 00:00:01Z")]}),
            // Longer than LONG_DAYS.
            json!({"intervals": [iv("2026-10-01 00:00:00Z", "2026-12-15 12:00:00Z")]}),
            // Years apart: the table's intervals are scanned, not bucketed.
            json!({"intervals": [iv("2020-01-01 10:00:00Z", "2020-01-01 11:00:00Z"),
                                 iv("2026-11-28 10:00:00+05:00", "2026-11-28 12:00:00+05:00")]}),
            // Days and an interval: found once.
            json!({"days": [{"type": "saturday", "from": "00:00Z", "to": "23:59Z"}],
                   "intervals": [iv("2026-11-28 06:00:00Z", "2026-11-29 06:00:00Z")]}),
        ];
        // The far-apart pair alone on camera 2; the others on camera 1 and on every camera.
        let rules: Vec<Rule> = tts
            .iter()
            .enumerate()
            .flat_map(|(i, tt)| match i {
                3 => vec![rule(4, 1, Some(vec![2]), tt.clone())],
                _ => vec![
                    rule(i as i64 + 1, 1, Some(vec![1]), tt.clone()),
                    rule(i as i64 + 11, 1, None, tt.clone()),
                ],
            })
            .collect();
        let index = ScheduleIndex::build(rules.clone());
        let near = &index.by_camera[&(1, 1)].intervals;
        assert_eq!(near.day_at.len(), 4, "bucketed from 2026-11-27 to 2026-11-29");
        let far = &index.by_camera[&(1, 2)];
        assert!(far.intervals.day_at.is_empty());
        assert_eq!(far.rare.as_ref().map(|r| r.long.len()), Some(2));
        let start = at("2026-11-27T00:00:00Z").timestamp();
        for t in (start..start + 4 * DAY).step_by(1800).chain([
            at("2026-11-28T00:00:00Z").timestamp(),
            at("2026-11-28T00:00:01Z").timestamp(),
            at("2026-11-29T23:59:59Z").timestamp(),
            at("2026-11-30T00:00:00Z").timestamp(),
            at("2020-01-01T10:30:00Z").timestamp(),
            at("2026-12-15T11:59:59Z").timestamp(),
        ]) {
            let t = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
            for camera in [1, 2] {
                let want = naive_matches(&rules, 1, camera, t);
                assert_eq!(index.matches(1, camera, t), want, "camera {camera} at {t}");
            }
        }
    }

    #[test]
    fn equal_reference_timetables_are_kept_once_and_shared_with_the_previous_index() {
        // Berlin wall clock: kept for the repeated hour.
        let named = json!({"days": [{"type": "weekdays", "from": "08:00", "to": "18:00"}]});
        let fixed = json!({"days": [{"type": "weekdays", "from": "08:00Z", "to": "18:00Z"}]});
        let rules = |n: i64| -> Vec<Rule> {
            (1..=n)
                .map(|i| {
                    rule(
                        i,
                        1,
                        Some(vec![i]),
                        if i % 2 == 0 { named.clone() } else { fixed.clone() },
                    )
                })
                .collect()
        };
        let kept = |index: &ScheduleIndex| -> Vec<*const Timetable> {
            index.reference.iter().flatten().map(Arc::as_ptr).collect()
        };
        let first = ScheduleIndex::build(rules(6));
        let ptrs = kept(&first);
        assert_eq!(ptrs.len(), 3, "only the Berlin rules keep their timetable");
        assert!(ptrs.iter().all(|&p| p == ptrs[0]), "equal timetables are kept once");
        let mut builder = IndexBuilder::with_capacity(8);
        builder.share_with(&first);
        for r in rules(8) {
            builder.add(&r);
        }
        let second = builder.finish();
        assert!(kept(&second).iter().all(|&p| p == ptrs[0]), "shared with the previous index");
        let t = at("2026-11-27T10:00:00Z");
        assert_eq!(second.matches(1, 8, t), vec![8]);
        assert_eq!(second.matches(1, 7, t), vec![7]);
    }

    #[test]
    fn large_tables_use_slots_and_agree_with_the_naive_scan() {
        let mut rules = Vec::new();
        for i in 0..300 {
            let from = format!("{:02}:{:02}", (i * 7) % 24, (i * 13) % 60);
            let to = format!("{:02}:{:02}", (i * 11 + 5) % 24, (i * 17) % 60);
            let kind = ["same_every_day", "weekdays", "weekends", "tuesday"][i % 4];
            let tt = if from == to {
                json!({"days": [{"type": "weekdays", "from": "08:00", "to": "09:00"}]})
            } else {
                json!({"days": [{"type": kind, "from": from, "to": to}],
                       "intervals": if i % 5 == 0 { json!([{"from": "2026-11-27 10:00:00Z", "to": "2026-11-28 10:00:00Z"}]) } else { json!([]) }})
            };
            rules.push(rule(i as i64, 1, None, tt));
        }
        let index = ScheduleIndex::build(rules.clone());
        assert!(index.by_event[&1].frames().any(|f| f.slots.is_some()));
        let start = at("2026-11-23T00:00:00Z").timestamp();
        for k in 0..2000 {
            let t = DateTime::<Utc>::from_timestamp(start + k * 613, 0).unwrap();
            assert_eq!(index.matches(1, 5, t), naive_matches(&rules, 1, 5, t), "at {t}");
        }
    }
}
