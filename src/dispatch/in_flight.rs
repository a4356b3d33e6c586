//! The deliveries the dispatcher has claimed and not yet recorded ([`super::worker`]).
//!
//! A delivery is in flight from its claim until its new state is committed; while it is, a
//! query or a hand-over that finds its row again must not start it a second time, and no
//! other row of its lane may start (one Telegram chat's messages go one at a time). A row is
//! known by its rowid within a database file and, across a replacement of the file (its
//! pending rows are carried into the new one under new rowids), by its delivery id.

use std::collections::HashSet;

use super::bulkhead::TargetKey;
use crate::store::outbox::{Channel, Claimed};

/// What the dispatcher keeps of a row whose attempt is in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) rowid: i64,
    /// The file generation the rowid belongs to ([`crate::store::Conn::epoch`]).
    pub(super) epoch: u64,
    pub(super) id: String,
    pub(super) lane: String,
    pub(super) reaction: String,
    pub(super) channel: Channel,
    pub(super) target: Option<TargetKey>,
}

impl Slot {
    pub(super) fn of(row: &Claimed) -> Slot {
        Slot {
            rowid: row.rowid,
            epoch: row.epoch,
            id: row.id.clone(),
            lane: row.lane.clone(),
            reaction: row.reaction.clone(),
            channel: Channel::of(&row.target),
            target: TargetKey::of(row),
        }
    }
}

/// The in-flight set: see the module documentation.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// (epoch, rowid) of each row.
    rows: HashSet<(u64, i64)>,
    /// Their delivery ids.
    ids: HashSet<String>,
    /// Non-empty lanes with a delivery in flight.
    lanes: HashSet<String>,
}

impl InFlight {
    /// Whether `row` (by rowid in its file, or by delivery id) is in flight.
    pub(super) fn contains(&self, row: &Claimed) -> bool {
        self.rows.contains(&(row.epoch, row.rowid)) || self.ids.contains(&row.id)
    }

    /// Whether `row` must not start now: it is in flight, or its lane has a delivery in
    /// flight.
    pub(super) fn blocks(&self, row: &Claimed) -> bool {
        self.contains(row) || (!row.lane.is_empty() && self.lanes.contains(&row.lane))
    }

    /// Marks `row` in flight.
    pub(super) fn insert(&mut self, row: &Claimed) {
        self.rows.insert((row.epoch, row.rowid));
        self.ids.insert(row.id.clone());
        if !row.lane.is_empty() {
            self.lanes.insert(row.lane.clone());
        }
    }

    /// Frees the row of `slot` and its lane (once its outcome is committed).
    pub(super) fn remove(&mut self, slot: &Slot) {
        self.rows.remove(&(slot.epoch, slot.rowid));
        self.ids.remove(&slot.id);
        if !slot.lane.is_empty() {
            self.lanes.remove(&slot.lane);
        }
    }

    /// The lanes with a delivery in flight (a claim must not rewrite their heads).
    pub(super) fn busy_lanes(&self) -> HashSet<String> {
        self.lanes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::outbox::Target;

    fn row(epoch: u64, rowid: i64, id: &str, lane: &str) -> Claimed {
        Claimed {
            rowid,
            epoch,
            id: id.into(),
            reaction: "telegram-message".into(),
            lane: lane.into(),
            attempts: 0,
            payload: "{}".into(),
            target: Ok(Target::Telegram {
                bot_token: Secret::new("1:t"),
                chat_id: "5".into(),
                text: id.into(),
                photo_url: None,
            }),
        }
    }

    #[test]
    fn a_row_is_in_flight_by_rowid_and_by_delivery_id_until_removed() {
        let mut f = InFlight::default();
        let a = row(1, 10, "occ-1:1:5", "");
        f.insert(&a);
        assert!(f.contains(&a));
        // The same rowid in another file is another row…
        assert!(!f.contains(&row(2, 10, "occ-9:1:5", "")));
        // …but the same delivery carried into a new file under a new rowid is this one.
        assert!(f.contains(&row(2, 77, "occ-1:1:5", "")));
        f.remove(&Slot::of(&a));
        assert!(!f.contains(&a) && !f.contains(&row(2, 77, "occ-1:1:5", "")));
        assert!(f.rows.is_empty() && f.ids.is_empty());
    }

    #[test]
    fn a_lane_with_a_delivery_in_flight_blocks_its_other_rows_only() {
        let mut f = InFlight::default();
        let head = row(1, 1, "a", "tg:x:5");
        f.insert(&head);
        let next = row(1, 2, "b", "tg:x:5");
        assert!(!f.contains(&next), "another row");
        assert!(f.blocks(&next), "of a busy lane");
        assert!(!f.blocks(&row(1, 3, "c", "tg:x:6")), "another lane");
        assert!(!f.blocks(&row(1, 4, "d", "")), "no lane");
        assert_eq!(f.busy_lanes(), HashSet::from(["tg:x:5".to_string()]));
        f.remove(&Slot::of(&head));
        assert!(!f.blocks(&next));
        assert!(f.busy_lanes().is_empty());
    }

    #[test]
    fn rows_without_a_lane_never_mark_the_empty_lane_busy() {
        let mut f = InFlight::default();
        f.insert(&row(1, 1, "a", ""));
        assert!(f.busy_lanes().is_empty());
        assert!(!f.blocks(&row(1, 2, "b", "")));
    }
}
