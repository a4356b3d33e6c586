//! WAL checkpoints off the hot path.
//!
//! SQLite copies the write-ahead log back into the database file in a *checkpoint*. By
//! default the connection whose commit takes the log past 1,000 pages runs it, inside that
//! commit: with `synchronous = normal` that is a copy of up to 1,000 pages plus two fsyncs,
//! a few milliseconds on a typical disk. In the daemon the committing connection is
//! usually the intake's, so an occurrence's deliveries were handed to the dispatcher only
//! after the checkpoint: at 1,000 occurrences per second that all fire, checkpoints ran 8
//! times a second and were the whole p99 of the publish→push latency (4.5–5.3 ms; 1.8 ms
//! without them).
//!
//! The daemon's store therefore uses [`Store::with_background_checkpoints`]: its
//! connections checkpoint inside a commit only past [`FALLBACK_PAGES`] (a safety net: the
//! log stays bounded should the background checkpoints stop or fall behind), and a
//! [`Checkpointer`] on its own connection runs a `PASSIVE` checkpoint every
//! [`CHECKPOINT_PERIOD`] while the log has pages to copy ([`run_after_writes`]: woken by a
//! commit, asleep once the log is copied, so an idle daemon does not wake for it). A
//! passive checkpoint never waits for a lock and never blocks a
//! writer or a reader; what it cannot copy yet (a reader still uses those pages) it copies
//! next time. Once the log is fully copied, the next writer starts it over from its
//! beginning, so the file stops growing.
//!
//! Command-line tools keep SQLite's default; the last connection to close checkpoints too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{HeldConn, Store, StoreError};

/// How often the daemon's [`Checkpointer`] runs.
pub const CHECKPOINT_PERIOD: Duration = Duration::from_millis(200);

/// The longest [`run_after_writes`] sleeps without being told of a write.
pub const CHECKPOINT_IDLE: Duration = Duration::from_secs(60);

/// Log pages after which a commit still checkpoints itself in a store with background
/// checkpoints (~40 MB with 4 KiB pages): about 4 s of the heaviest load measured, 20 times
/// the period of the background checkpoints.
pub const FALLBACK_PAGES: u32 = 10_000;

/// What one checkpoint did (`PRAGMA wal_checkpoint(PASSIVE)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// Frames in the log.
    pub log_frames: i64,
    /// Frames copied into the database file (this time or before); equal to `log_frames`
    /// when the log is fully copied.
    pub copied_frames: i64,
}

/// Runs passive checkpoints over a connection of its own (see the module documentation).
#[derive(Debug)]
pub struct Checkpointer {
    conn: HeldConn,
}

impl Checkpointer {
    /// A checkpointer for `store`; it connects on its first run.
    pub fn new(store: Store) -> Checkpointer {
        Checkpointer { conn: HeldConn::new(store) }
    }

    /// One passive checkpoint (blocking). A connection to a replaced database file is let
    /// go first, so the replacement is never held up (the next run connects to the new
    /// file).
    pub fn run(&mut self) -> Result<Checkpointed, StoreError> {
        let conn = self.conn.get()?;
        let (log_frames, copied_frames) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?;
        Ok(Checkpointed { log_frames, copied_frames })
    }
}

/// Runs passive WAL checkpoints on the blocking pool (see [`crate::store::checkpoint`])
/// while the log has pages to copy, until `stop`: woken by `written` (a commit), it waits
/// `period` (so a checkpoint covers that period's commits, not one each) and checkpoints,
/// every `period` until a checkpoint finds the whole log copied; then it sleeps until the
/// next `written` (at most [`CHECKPOINT_IDLE`]). A
/// failure is logged once per streak and retried every `period` (the commits' own fallback
/// keeps the log bounded meanwhile).
pub async fn run_after_writes(
    mut checkpointer: Checkpointer,
    period: Duration,
    written: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut failing = false;
    let mut copied_all = false;
    loop {
        if copied_all {
            tokio::select! {
                () = &mut stop => return,
                () = written.notified() => {}
                () = tokio::time::sleep(CHECKPOINT_IDLE) => {}
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(period) => {}
        }
        let Ok((c, result)) = tokio::task::spawn_blocking(move || {
            let r = checkpointer.run();
            (checkpointer, r)
        })
        .await
        else {
            tracing::error!("the WAL checkpointer panicked; checkpoints fall back to commits");
            return;
        };
        checkpointer = c;
        copied_all = matches!(result, Ok(done) if done.copied_frames == done.log_frames);
        match result {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot checkpoint the WAL; retrying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;

    use super::*;
    use crate::store::now_ms;
    use crate::store::outbox::{Handoff, NewDelivery, OutboxWriter};

    /// A commit of one delivery per occurrence number in `occurrences` (5–6 log pages
    /// each).
    fn commit_deliveries(store: &Store, occurrences: Range<usize>) {
        let handoff = Arc::new(Handoff::default());
        let mut writer = OutboxWriter::new(store, handoff.clone()).unwrap();
        for i in occurrences {
            let push = NewDelivery::test_push(&format!("occ-{i}:1:42"));
            assert_eq!(writer.enqueue(&[push], now_ms()).unwrap(), 1);
            handoff.take(usize::MAX);
        }
    }

    #[test]
    fn with_background_checkpoints_commits_leave_the_log_to_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::migrate(&dir.path().join("scriptd.db")).unwrap().with_background_checkpoints();
        // Open throughout, as in the daemon: the last connection to close checkpoints too.
        let _open = store.connect().unwrap();
        commit_deliveries(&store, 0..400);
        let mut checkpointer = Checkpointer::new(store.clone());
        let first = checkpointer.run().unwrap();
        // No commit checkpointed past SQLite's default of 1,000 pages: the log still
        // holds every commit, and the checkpointer copied all of it.
        assert!(first.log_frames > 1_000, "{first:?}");
        assert_eq!(first.copied_frames, first.log_frames);
        // The next writer starts the log over: it does not grow past what was copied.
        commit_deliveries(&store, 400..401);
        let second = checkpointer.run().unwrap();
        assert!(second.log_frames < 100, "{second:?}");
        assert_eq!(second.copied_frames, second.log_frames);
    }

    #[test]
    fn without_them_a_commit_checkpoints_past_a_thousand_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("scriptd.db")).unwrap();
        let _open = store.connect().unwrap();
        commit_deliveries(&store, 0..400);
        let after = Checkpointer::new(store).run().unwrap();
        assert!(after.log_frames < 1_000, "{after:?}");
    }
}
