//! The intake's snooze check on PostgreSQL: as on SQLite (see `Intake::refresh_snoozes`),
//! the ended snoozes are purged when due, and the active ones read again only when
//! `snoozes_version` moved.

use crate::store::StoreError;
use crate::store::postgres::outbox::PgOutbox;
use crate::store::snoozes::SnoozeSet;

/// Purges (when `purge`) the snoozes that ended before `horizon`, then reads the active
/// ones unless the counter is still `version` (`None`).
pub(super) async fn read_snoozes(
    pg: &PgOutbox,
    purge: bool,
    horizon: i64,
    version: i64,
) -> Result<Option<SnoozeSet>, StoreError> {
    if purge {
        let gone = pg.purge_snoozes(horizon).await?;
        if gone > 0 {
            tracing::debug!(snoozes = gone, "expired snoozes deleted");
        }
    }
    if pg.snoozes_version().await? == version {
        return Ok(None);
    }
    pg.snoozes(horizon).await.map(Some)
}
