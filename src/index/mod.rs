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
//! 4. **Holidays.** A rule with `timetable.holidays` is indexed by its days and intervals
//!    as any other, and its holiday windows are compiled the same way (as every-day
//!    entries). Its holidays (calendar dates and inline dates, each resolved to a UTC span
//!    in its zone when the index is built) are merged into one sorted list for the whole
//!    index and, per table, into groups of rules sharing the same holiday spans; each group
//!    keeps its members' compiled holiday windows as frame tables of its own. A query at an
//!    instant on no holiday costs one binary search in that list. On a holiday, each group
//!    whose spans hold the instant (one binary search) has its members' day spans masked
//!    while the table's frames are read, and its holiday windows read instead: the same
//!    work as an ordinary query, with no per-date zone resolution.
//!
//! Two cases go to the reference evaluation ([`crate::timetable::Timetable::is_active_at`]):
//! an instant inside an IANA zone's repeated hour (its wall-clock reading is ambiguous, so
//! the week position alone cannot apply the DST policy), and entries whose bounds are written
//! in zones whose difference depends on the date. Both are rare, and the property test
//! `tests/it/index_matches_naive.rs` checks that the index always equals the naive scan.
//!
//! ## What is kept
//!
//! Only what queries read: the tables, each laid out once at its final size, the script id
//! of each rule, and the reference timetable of the rules that may take the reference
//! evaluation (those with an IANA-zone entry or a per-date entry), one per distinct
//! timetable. The rules themselves are not kept.
//!
//! Nothing here reads the clock: the instant is an argument.

mod builder;
mod intervals;
pub mod rules;
mod slots;
mod spans;
pub mod week;

pub use builder::IndexBuilder;
use spans::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::index::rules::Rule;
use crate::timetable::zone::{DAY, week_position_fixed};
use crate::timetable::{Timetable, Zone};

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
    /// Every rule's holidays merged: sorted, disjoint `[from, to)` unix seconds.
    holidays: Box<[(i64, i64)]>,
}

/// The rules of one (event, camera) or (event, any camera) key. The first two frames and
/// the interval directory are stored inline: a query's first cache miss lands on them. A
/// table sits in its hash bucket, so it is kept small; the rare parts are out of line.
#[derive(Default)]
struct Table {
    frames: [Option<FrameTable>; 2],
    intervals: Intervals,
    rare: Option<Box<Rare>>,
    /// Rules with holidays, grouped by their holiday spans; read only at an instant on a
    /// holiday of some rule of the index.
    holidays: Option<Box<[HolidayGroup]>>,
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

/// Rules of a table that share their holidays. Their day entries are in the table's frames
/// like any other rule's; at an instant on one of the holidays those are masked for them
/// and their compiled holiday windows are read instead.
struct HolidayGroup {
    /// Sorted, disjoint `[from, to)` unix seconds.
    spans: Arc<[(i64, i64)]>,
    /// Rule positions, ascending.
    members: Box<[u32]>,
    /// The members' holiday windows compiled as every-day day entries, per frame.
    windows: Box<[FrameTable]>,
}

impl HolidayGroup {
    fn contains(&self, t: i64) -> bool {
        spans_hold(&self.spans, t)
    }
}

/// True when `t` lies in one of the sorted, disjoint `[from, to)` spans.
fn spans_hold(spans: &[(i64, i64)], t: i64) -> bool {
    let i = spans.partition_point(|&(from, _)| from <= t);
    i > 0 && t < spans[i - 1].1
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

impl FrameTable {
    /// Offset into `packed`, rule word and spans `[n, spans…]` of each member.
    fn each_member(&self) -> impl Iterator<Item = (usize, u32, &[u32])> {
        packed_members(&self.packed)
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
        // Holidays: one binary search unless `t` is on a holiday of some rule.
        let on_holiday = spans_hold(&self.holidays, t);
        if let Some(table) = by_camera {
            self.query_table(table, t, on_holiday, &mut positions, m);
        }
        if let Some(table) = by_event {
            self.query_table(table, t, on_holiday, &mut positions, m);
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

    fn query_table(
        &self,
        table: &Table,
        t: i64,
        on_holiday: bool,
        positions: &mut Positions,
        m: &mut Matches,
    ) {
        // On a holiday of a group, its members' day spans are masked: their seen-bits are
        // set while the frames are read (their words all carry `REPEAT`), then cleared and
        // the group's holiday windows read instead. A rule is in one table of a query.
        let groups = match &table.holidays {
            Some(groups) if on_holiday => &groups[..],
            _ => &[],
        };
        for group in groups.iter().filter(|g| g.contains(t)) {
            for &p in &group.members {
                m.seen[p as usize / 64] |= 1 << (p % 64);
            }
        }
        for ft in table.frames() {
            self.query_frame(ft, t, positions, m);
        }
        for group in groups.iter().filter(|g| g.contains(t)) {
            for &p in &group.members {
                m.seen[p as usize / 64] &= !(1 << (p % 64));
            }
            for ft in &group.windows {
                self.query_frame(ft, t, positions, m);
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

    /// Pushes the members of one frame table active at `t`.
    #[inline]
    fn query_frame(&self, ft: &FrameTable, t: i64, positions: &mut Positions, m: &mut Matches) {
        let (pos, ambiguous) = positions.get(ft.frame);
        if ambiguous {
            // The repeated hour: the week position cannot apply the DST policy.
            for (_, word, _) in ft.each_member() {
                if self.active_by_reference(word & !REPEAT, t) {
                    m.push(word);
                }
            }
            return;
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
            for g in t.holidays.iter().flatten() {
                b[5] += g.members.len() * 4 + g.spans.len() * 16;
                for ft in g.windows.iter() {
                    b[2] += ft.packed.len() * 4;
                    if let Some(s) = &ft.slots {
                        b[3] += s.full.len() * 8 + s.rules.len() * 4;
                        b[4] += (s.partial_at.len() + s.partial.len()) * 4;
                    }
                }
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
mod tests;
