//! The dispatcher's housekeeping ([`super::worker`]): the outbox gauges every few seconds
//! and the retention sweep of finished rows every few minutes, in batches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::handle::Stats;
use super::link::Handle;
use crate::ops::telemetry;
use crate::store::{StoreError, now_ms};

/// Finished rows deleted per retention transaction.
pub const PRUNE_BATCH: usize = 1000;
/// How often the retention sweep runs.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How soon a failed sweep is tried again.
const PRUNE_RETRY: Duration = Duration::from_secs(10);
/// How often the outbox gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(2);

/// When the gauges and the sweep are next due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Upkeep {
    next_gauges: Instant,
    next_prune: Instant,
}

impl Upkeep {
    /// Both due now.
    pub(super) fn new() -> Upkeep {
        Upkeep { next_gauges: Instant::now(), next_prune: Instant::now() }
    }

    /// Does what is due: refreshes `stats.pending` and the gauges `OUTBOX_DEPTH` and
    /// `OUTBOX_OLDEST_PENDING`; deletes up to [`PRUNE_BATCH`] finished rows (any state but
    /// `pending`) last updated longer than `retention` ago (a full batch: more next turn, other
    /// work goes between). Returns the call that failed.
    pub(super) async fn run(
        &mut self,
        db: &Handle,
        stats: &Stats,
        retention: Duration,
    ) -> Result<(), (&'static str, StoreError)> {
        let now = Instant::now();
        if now >= self.next_gauges {
            self.next_gauges = now + GAUGES_EVERY;
            let (count, oldest) = db.pending_summary().await.map_err(|e| ("count pending", e))?;
            stats.pending.store(count, Ordering::Relaxed);
            metrics::gauge!(telemetry::OUTBOX_DEPTH).set(count as f64);
            let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
            metrics::gauge!(telemetry::OUTBOX_OLDEST_PENDING).set(age);
        }
        if now >= self.next_prune {
            let cutoff =
                now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            match db.prune(cutoff, PRUNE_BATCH).await {
                Ok(n) if n >= PRUNE_BATCH => {}
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(deleted = n, "pruned finished deliveries");
                    }
                    self.next_prune = now + PRUNE_EVERY;
                }
                Err(e) => {
                    self.next_prune = now + PRUNE_RETRY;
                    return Err(("prune", e));
                }
            }
        }
        Ok(())
    }
}
