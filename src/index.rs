//! The schedule index: which scripts fire for (event, camera, instant).
//!
//! Built once from every rule ([`ScheduleIndex::build`]) and then only read, so a changed
//! script set means building a new index and swapping it in (`arc_swap`); readers never wait.
//!
//! ## How a query avoids looking at scripts that cannot match
//!
//! 1. **Event and camera.** Rules are grouped into tables by `(event, camera)`, plus one
//!    table per event for rules with `cameras: null`. A query reads two tables.
//!    Each table keeps its members and their spans packed in one array, so a query touches a
//!    few consecutive cache lines per table rather than one line per rule.
//! 2. **Time of week.** A day entry repeats every week on the wall clock of its zone, so a
//!    rule's day entries compile into *spans* of week position (seconds after Monday 00:00)
//!    with the breaks already cut out. Entries written with fixed offsets all share one frame
//!    (UTC week position); entries in an IANA zone use that zone's wall-clock week. In a large
//!    table the week is cut into 15-minute slots: per slot a bitset of the members active for
//!    the whole slot (emitted without any check) and a short list of members with a span
//!    boundary inside the slot (checked against their spans). Small tables check each member's
//!    spans directly with a binary search.
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
//! Nothing here reads the clock: the instant is an argument.

use chrono::{DateTime, Utc, Weekday};
use rustc_hash::FxHashMap;

use crate::rules::Rule;
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

/// The compiled schedule of every enabled rule.
pub struct ScheduleIndex {
    rules: Vec<Rule>,
    by_camera: FxHashMap<(i64, i64), Table>,
    by_event: FxHashMap<i64, Table>,
    enabled: usize,
}

/// The rules of one (event, camera) or (event, any camera) key. The first two frames and
/// the interval directory are stored inline: a query's first cache miss lands on them.
#[derive(Default)]
struct Table {
    frames: [Option<FrameTable>; 2],
    more_frames: Vec<FrameTable>,
    intervals: Intervals,
    /// Rules that always take the reference evaluation.
    exact: Vec<u32>,
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
        self.frames.iter().flatten().chain(self.more_frames.iter())
    }

    fn frames_mut(&mut self) -> impl Iterator<Item = &mut FrameTable> {
        self.frames.iter_mut().flatten().chain(self.more_frames.iter_mut())
    }

    fn frame_mut(&mut self, frame: Zone) -> &mut FrameTable {
        let inline = self.frames.iter().position(|f| f.as_ref().is_some_and(|f| f.frame == frame));
        let free = self.frames.iter().position(Option::is_none);
        let more = self.more_frames.iter().position(|f| f.frame == frame);
        match (inline, more, free) {
            (Some(i), _, _) => self.frames[i].get_or_insert_with(|| FrameTable::new(frame)),
            (None, Some(i), _) => &mut self.more_frames[i],
            (None, None, Some(i)) => self.frames[i].insert(FrameTable::new(frame)),
            (None, None, None) => {
                self.more_frames.push(FrameTable::new(frame));
                let last = self.more_frames.len() - 1;
                &mut self.more_frames[last]
            }
        }
    }
}

/// The members of a table whose day entries live in one frame.
struct FrameTable {
    frame: Zone,
    /// Per member: `[rule word, n, from0, to0, …, from(n-1), to(n-1)]`, spans sorted and
    /// disjoint.
    packed: Vec<u32>,
    members: u32,
    slots: Option<Box<Slots>>,
}

struct Slots {
    /// Slot width, seconds.
    width: u32,
    words: usize,
    /// `slots × words` bits: member active during the whole slot.
    full: Vec<u64>,
    /// Rule word of each member, by member number.
    rules: Vec<u32>,
    /// CSR offsets into `partial`, one per slot plus the end.
    partial_at: Vec<u32>,
    /// Offsets into `packed` of the members with a span boundary inside the slot.
    partial: Vec<u32>,
}

/// A table's absolute intervals.
#[derive(Default)]
struct Intervals {
    /// UTC day number of `day_at[0]`.
    first_day: i64,
    /// Offsets into `items` where each day from `first_day` starts, plus the end; empty
    /// when the table has no bucketed intervals.
    day_at: Vec<u32>,
    /// (from, to, rule word), grouped by day.
    items: Vec<(i64, i64, u32)>,
    /// Intervals longer than [`LONG_DAYS`].
    long: Vec<(i64, i64, u32)>,
    /// While building: (day, from, to, rule word).
    pending: Vec<(i64, i64, i64, u32)>,
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

/// True when the packed spans `[from0, to0, from1, to1, …]` (sorted, disjoint) contain `pos`.
#[inline]
fn packed_contains(spans: &[u32], pos: u32) -> bool {
    for pair in spans.chunks_exact(2) {
        if pos < pair[0] {
            return false;
        }
        if pos < pair[1] {
            return true;
        }
    }
    false
}

impl FrameTable {
    fn new(frame: Zone) -> FrameTable {
        FrameTable { frame, packed: Vec::new(), members: 0, slots: None }
    }

    fn push(&mut self, word: u32, spans: &[(u32, u32)]) {
        self.packed.push(word);
        self.packed.push(spans.len() as u32);
        for &(f, t) in spans {
            self.packed.push(f);
            self.packed.push(t);
        }
        self.members += 1;
    }

    /// Member number, offset into `packed`, rule word and spans of each member.
    fn each_member(&self) -> impl Iterator<Item = (usize, usize, u32, &[u32])> {
        let mut at = 0;
        (0..self.members as usize).map(move |m| {
            let word = self.packed[at];
            let n = self.packed[at + 1] as usize;
            let spans = &self.packed[at + 2..at + 2 + 2 * n];
            let item = (m, at, word, spans);
            at += 2 + 2 * n;
            item
        })
    }

    fn build_slots(&mut self) {
        let width = if self.members > MID_MAX { SLOT_LARGE } else { SLOT_MID };
        let slots = (WEEK as u32 / width) as usize;
        let words = (self.members as usize).div_ceil(64);
        let mut full = vec![0u64; slots * words];
        let mut rules = Vec::with_capacity(self.members as usize);
        let mut partial_lists: Vec<Vec<u32>> = vec![Vec::new(); slots];
        for (m, at, word, spans) in self.each_member() {
            rules.push(word);
            for pair in spans.chunks_exact(2) {
                let (f, t) = (pair[0], pair[1]);
                for s in (f / width) as usize..=((t - 1) / width) as usize {
                    let slot_start = s as u32 * width;
                    if f <= slot_start && slot_start + width <= t {
                        full[s * words + m / 64] |= 1 << (m % 64);
                    } else if partial_lists[s].last() != Some(&(at as u32)) {
                        partial_lists[s].push(at as u32);
                    }
                }
            }
        }
        let mut partial_at = Vec::with_capacity(slots + 1);
        let mut partial = Vec::with_capacity(partial_lists.iter().map(Vec::len).sum());
        partial_at.push(0);
        for list in partial_lists {
            partial.extend(list);
            partial_at.push(partial.len() as u32);
        }
        self.slots = Some(Box::new(Slots { width, words, full, rules, partial_at, partial }));
    }
}

impl Intervals {
    fn add(&mut self, from: i64, to: i64, word: u32) {
        let (first, last) = (from.div_euclid(DAY), (to - 1).div_euclid(DAY));
        if last - first >= LONG_DAYS {
            self.long.push((from, to, word));
            return;
        }
        for day in first..=last {
            self.pending.push((day, from, to, word));
        }
    }

    fn finish(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        if let (Some(first), Some(last)) = (pending.first(), pending.last()) {
            let (first_day, last_day) = (first.0, last.0);
            // A directory entry per day between the first and the last: the days are far
            // apart only when intervals are years apart, then the few far ones are scanned.
            if last_day - first_day > 4 * pending.len() as i64 + 366 {
                self.long.extend(pending.iter().map(|&(_, f, t, w)| (f, t, w)));
                self.long.sort_unstable();
                self.long.dedup();
            } else {
                self.first_day = first_day;
                self.day_at = Vec::with_capacity((last_day - first_day + 2) as usize);
                let mut day = first_day;
                self.day_at.push(0);
                for (d, from, to, word) in pending {
                    while day < d {
                        self.day_at.push(self.items.len() as u32);
                        day += 1;
                    }
                    self.items.push((from, to, word));
                }
                self.day_at.push(self.items.len() as u32);
            }
        }
        self.items.shrink_to_fit();
        self.long.shrink_to_fit();
    }

    fn query(&self, t: i64, mut emit: impl FnMut(u32)) {
        let day = t.div_euclid(DAY) - self.first_day;
        if day >= 0 && (day as usize) + 1 < self.day_at.len() {
            let (a, b) =
                (self.day_at[day as usize] as usize, self.day_at[day as usize + 1] as usize);
            // Sorted by start within the day.
            for &(from, to, word) in &self.items[a..b] {
                if from > t {
                    break;
                }
                if t < to {
                    emit(word);
                }
            }
        }
        for &(from, to, word) in &self.long {
            if from <= t && t < to {
                emit(word);
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
    /// Rule positions found by the last query, each once (see [`ScheduleIndex::rule`]).
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

impl ScheduleIndex {
    /// Builds the index from every rule; disabled rules are kept but never match.
    ///
    /// # Panics
    /// With 2³¹ rules or more (positions are 31-bit).
    pub fn build(rules: Vec<Rule>) -> ScheduleIndex {
        assert!(rules.len() < REPEAT as usize, "too many rules for one index");
        let mut by_camera: FxHashMap<(i64, i64), Table> = FxHashMap::default();
        let mut by_event: FxHashMap<i64, Table> = FxHashMap::default();
        let mut enabled = 0;
        for (idx, rule) in rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            enabled += 1;
            let compiled = compile_days(&rule.timetable);
            let exact = compiled.is_none();
            let frames = compiled.unwrap_or_default();
            // Each frame and each interval can find the rule once.
            let sources = frames.len() + rule.timetable.intervals.len();
            let word = idx as u32 | if sources > 1 { REPEAT } else { 0 };
            let add = |table: &mut Table| {
                if exact {
                    table.exact.push(idx as u32);
                    return;
                }
                for fs in &frames {
                    table.frame_mut(fs.frame).push(word, &fs.spans);
                }
                for i in &rule.timetable.intervals {
                    table.intervals.add(i.from, i.to, word);
                }
            };
            match &rule.cameras {
                None => add(by_event.entry(rule.event_id).or_default()),
                Some(cams) => {
                    for &cam in cams {
                        add(by_camera.entry((rule.event_id, cam)).or_default());
                    }
                }
            }
        }
        for table in by_camera.values_mut().chain(by_event.values_mut()) {
            for ft in table.frames_mut() {
                ft.packed.shrink_to_fit();
                if ft.members as usize > SCAN_MAX {
                    ft.build_slots();
                }
            }
            table.intervals.finish();
            table.exact.shrink_to_fit();
        }
        ScheduleIndex { rules, by_camera, by_event, enabled }
    }

    /// Script ids (sorted) of the enabled rules that fire for `event_id` on `camera_id` at `at`.
    pub fn matches(&self, event_id: i64, camera_id: i64, at: DateTime<Utc>) -> Vec<i64> {
        let mut m = Matches::new();
        self.matches_into(event_id, camera_id, at.timestamp(), &mut m);
        let mut ids: Vec<i64> =
            m.positions.iter().map(|&i| self.rules[i as usize].script_id).collect();
        ids.sort_unstable();
        ids
    }

    /// Like [`matches`](Self::matches), at unix second `t`, leaving the rule positions (see
    /// [`rule`](Self::rule)) in `m.positions`, each once, in no particular order. Reusing one
    /// `Matches` per thread keeps queries free of allocation.
    pub fn matches_into(&self, event_id: i64, camera_id: i64, t: i64, m: &mut Matches) {
        m.positions.clear();
        let words = self.rules.len().div_ceil(64);
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

    fn query_table(&self, table: &Table, t: i64, positions: &mut Positions, m: &mut Matches) {
        for ft in table.frames() {
            let (pos, ambiguous) = positions.get(ft.frame);
            if ambiguous {
                // The repeated hour: the week position cannot apply the DST policy.
                for (_, _, word, _) in ft.each_member() {
                    if self.rules[(word & !REPEAT) as usize].timetable.is_active_at(t) {
                        m.push(word);
                    }
                }
                continue;
            }
            match &ft.slots {
                None => {
                    let p = &ft.packed;
                    let mut at = 0;
                    while at < p.len() {
                        let n = p[at + 1] as usize;
                        if packed_contains(&p[at + 2..at + 2 + 2 * n], pos) {
                            m.push(p[at]);
                        }
                        at += 2 + 2 * n;
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
                        let n = ft.packed[at + 1] as usize;
                        if packed_contains(&ft.packed[at + 2..at + 2 + 2 * n], pos) {
                            m.push(ft.packed[at]);
                        }
                    }
                }
            }
        }
        table.intervals.query(t, |word| m.push(word));
        for &rule in &table.exact {
            if self.rules[rule as usize].timetable.is_active_at(t) {
                m.push(rule);
            }
        }
    }

    /// The rule at a position returned by [`matches_into`](Self::matches_into).
    pub fn rule(&self, position: u32) -> &Rule {
        &self.rules[position as usize]
    }

    /// All rules the index was built from, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules (enabled or not).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when built from no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of enabled rules.
    pub fn enabled(&self) -> usize {
        self.enabled
    }

    /// Approximate heap bytes of the index structures (not counting the rules), by part:
    /// (tables, packed spans, slot bitsets, slot boundary lists, intervals).
    pub fn heap_bytes(&self) -> [usize; 5] {
        let mut b = [0usize; 5];
        let tables = self.by_camera.len() + self.by_event.len();
        b[0] = tables * (std::mem::size_of::<Table>() + 16);
        for t in self.by_camera.values().chain(self.by_event.values()) {
            for ft in t.frames() {
                b[1] += ft.packed.capacity() * 4;
                if let Some(s) = &ft.slots {
                    b[2] += s.full.capacity() * 8 + s.rules.capacity() * 4;
                    b[3] += (s.partial_at.capacity() + s.partial.capacity()) * 4;
                }
            }
            b[4] += t.intervals.day_at.capacity() * 4
                + (t.intervals.items.capacity() + t.intervals.long.capacity()) * 24
                + t.exact.capacity() * 4;
        }
        b
    }
}

impl std::fmt::Debug for ScheduleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleIndex")
            .field("rules", &self.rules.len())
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
    use crate::rules::naive_matches;
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
