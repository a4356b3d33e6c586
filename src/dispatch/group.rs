//! Outcomes waiting to be recorded: the dispatcher's group commit ([`super::worker`]).
//!
//! A transaction per outcome would cost more than the sends at a few hundred outcomes per
//! second, so finished attempts (and deferrals) wait here and are recorded together. A
//! group is recorded once [`RECORD_WINDOW`] passed since its first outcome, or it holds
//! [`RECORD_GROUP`] outcomes, or a channel has no free slot left, or half of a channel's
//! budget is waiting. The last one keeps the window of attempts moving under load: half
//! of it is recorded while the other half is still in flight, instead of after it
//! (measured +1–8 % at full speed with a backlog). The bound on repeats after a crash is
//! the same whichever applies: an unrecorded outcome keeps its in-flight slot, and slots
//! are freed only by the commit.

use std::time::Duration;

use tokio::time::Instant;

use super::attempt::Finished;
use super::bulkhead::Bulkheads;
use crate::store::outbox::Channel;

/// The longest an outcome waits to be recorded with others. At 1,000 pushes per second
/// with the default budgets a group is recorded when half the push budget (25) waits, a
/// transaction every 25 ms instead of every 10: -8 % CPU per occurrence and a lower p99
/// (1.1 against 1.8 ms), since fewer commits of the dispatcher's meet the intake's.
pub(super) const RECORD_WINDOW: Duration = Duration::from_millis(50);
/// Outcomes that are recorded at once without waiting for the window.
pub(super) const RECORD_GROUP: usize = 256;

/// Finished attempts not yet recorded; see the module documentation.
#[derive(Default)]
pub(super) struct Group {
    finished: Vec<Finished>,
    /// When the oldest of them finished.
    since: Option<Instant>,
    /// How many of them per [`Channel::index`].
    per_channel: [usize; 3],
}

impl Group {
    /// Queues a finished attempt (or a deferral), finished at `now`.
    pub(super) fn push(&mut self, f: Finished, now: Instant) {
        if self.finished.is_empty() {
            self.since = Some(now);
        }
        self.per_channel[f.slot.channel.index()] += 1;
        self.finished.push(f);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.finished.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.finished.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Finished> {
        self.finished.iter()
    }

    /// When the queued outcomes must be recorded at the latest.
    pub(super) fn record_at(&self) -> Option<Instant> {
        self.since.map(|t| t + RECORD_WINDOW)
    }

    /// Whether to record the queued outcomes at `now`, with the slots of `bulk`.
    pub(super) fn due(&self, bulk: &Bulkheads, now: Instant) -> bool {
        !self.finished.is_empty()
            && (self.finished.len() >= RECORD_GROUP
                || self.record_at().is_some_and(|t| t <= now)
                || Channel::ALL.into_iter().any(|c| {
                    let waiting = self.per_channel[c.index()];
                    bulk.free(c) == 0 || (waiting > 0 && waiting * 2 >= bulk.budget(c))
                }))
    }

    /// Everything queued (once it was recorded); the group starts empty again.
    pub(super) fn take(&mut self) -> Vec<Finished> {
        self.since = None;
        self.per_channel = [0; 3];
        std::mem::take(&mut self.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::bulkhead::{Limits, Verdict};
    use crate::dispatch::in_flight::Slot;
    use crate::store::outbox::{Claimed, Recorded, Target};

    fn finished(channel: Channel) -> Finished {
        let target = match channel {
            Channel::Push => Target::Push { user_id: 1 },
            Channel::Webhook => {
                Target::Webhook { url: "http://127.0.0.1:9/h".into(), secret: None }
            }
            Channel::Telegram => Target::Telegram {
                bot_token: crate::secret::Secret::new("1:t"),
                chat_id: "5".into(),
                text: "t".into(),
                photo_url: None,
            },
        };
        let row = Claimed {
            rowid: 1,
            epoch: 0,
            id: "d".into(),
            reaction: "r".into(),
            lane: String::new(),
            attempts: 0,
            payload: String::new(),
            target: Ok(target),
        };
        Finished {
            slot: Slot::of(&row),
            recorded: Recorded::Sent,
            verdict: Verdict::Answered,
            attempted: true,
        }
    }

    /// Push 8 slots, Telegram and webhook 4 each, of 16.
    fn bulk() -> Bulkheads {
        Bulkheads::new(Limits { channel: [8, 4, 4], per_target: [8, 2, 2], ..Limits::shared(16) })
    }

    #[test]
    fn a_group_waits_for_its_window_unless_it_is_full_or_slots_run_short() {
        let t0 = Instant::now();
        let mut bulk = bulk();
        let mut group = Group::default();
        assert!(!group.due(&bulk, t0 + RECORD_WINDOW), "nothing to record");

        // One outcome of eight push slots: only the window makes it due.
        bulk.start(Channel::Push, None);
        group.push(finished(Channel::Push), t0);
        assert_eq!(group.record_at(), Some(t0 + RECORD_WINDOW));
        assert!(!group.due(&bulk, t0 + RECORD_WINDOW / 2));
        assert!(group.due(&bulk, t0 + RECORD_WINDOW));

        // Half the push budget waiting: due at once, with slots still free.
        for _ in 0..3 {
            bulk.start(Channel::Push, None);
            group.push(finished(Channel::Push), t0);
        }
        assert!(bulk.free(Channel::Push) > 0);
        assert!(group.due(&bulk, t0), "4 of 8 push slots wait to be recorded");

        // Recorded: empty again, the window starts over.
        assert_eq!(group.take().len(), 4);
        assert!(group.is_empty());
        assert_eq!(group.record_at(), None);

        // Another channel's outcome below its half, while push has no free slot: due.
        let mut bulk = bulk_with_push_full();
        let mut group = Group::default();
        group.push(finished(Channel::Webhook), t0);
        assert!(group.due(&bulk, t0));
        // With the push slots free again it waits for its window.
        for _ in 0..8 {
            bulk.release(Channel::Push, None);
        }
        assert!(!group.due(&bulk, t0));

        // A full group is due whatever the slots.
        let mut group = Group::default();
        let bulk = Bulkheads::new(Limits::shared(10_000));
        for _ in 0..RECORD_GROUP - 1 {
            group.push(finished(Channel::Push), t0);
        }
        let half = Bulkheads::new(Limits::shared(2 * RECORD_GROUP));
        assert!(!group.due(&half, t0), "255 of 512 is under half");
        group.push(finished(Channel::Push), t0);
        assert!(group.due(&bulk, t0));
    }

    fn bulk_with_push_full() -> Bulkheads {
        let mut bulk = bulk();
        for _ in 0..8 {
            bulk.start(Channel::Push, None);
        }
        assert_eq!(bulk.free(Channel::Push), 0);
        bulk
    }
}
