//! The intake's outbox database, SQLite or PostgreSQL: [`Db`], the constructor on either
//! ([`Intake::new_on`]), and the snooze check on PostgreSQL, which does what the SQLite one
//! in `Intake::refresh_snoozes` does: the ended snoozes are purged when due, and the
//! active ones read again only when `snoozes_version` moved.

use super::*;
use crate::store::postgres::outbox::PgOutbox;

/// The outbox database of an [`Intake`]. One per intake, never moved on the hot path: the
/// SQLite variant stays inline (no box to follow on every write), whatever its size.
#[allow(clippy::large_enum_variant)]
pub(super) enum Db {
    Sqlite {
        writer: Option<OutboxWriter>,
        store: Store,
        /// Given to every writer this intake opens: the dispatcher's hand-over.
        handoff: Arc<Handoff>,
        /// The connection the snooze checks read through, kept open between checks
        /// (opening one costs more than the check; in the pipeline benchmark at 1,000
        /// occurrences per second a new connection per check held some batches up to
        /// 80 ms).
        snooze_conn: Option<HeldConn>,
    },
    Postgres(PgOutbox),
}

impl Intake {
    /// [`Intake::new`] on either database (see *Where the write runs*); on PostgreSQL
    /// `handoff` is not used: the [`PgOutbox`] hands over when it was made
    /// [`PgOutbox::handing_over`]. Needs a tokio runtime.
    pub async fn new_on(
        db: OutboxDb,
        handoff: Arc<Handoff>,
        live: Live,
        settings: Arc<ArcSwap<LiveSettings>>,
        rejections: Arc<RejectionLog>,
    ) -> Result<Intake, StoreError> {
        match db {
            OutboxDb::Sqlite(store) => tokio::task::spawn_blocking(move || {
                Intake::new(store, handoff, live, settings, rejections)
            })
            .await
            .map_err(|e| StoreError::TaskFailed(format!("intake start: {e}")))?,
            OutboxDb::Postgres(pg) => {
                let cooldowns = pg.load_cooldowns().await?;
                Ok(Intake::with_db(Db::Postgres(pg), cooldowns, live, settings, rejections))
            }
        }
    }

    /// An intake writing to `db`, starting from the stored `cooldowns`.
    pub(super) fn with_db(
        db: Db,
        cooldowns: Vec<Fired>,
        live: Live,
        settings: Arc<ArcSwap<LiveSettings>>,
        rejections: Arc<RejectionLog>,
    ) -> Intake {
        let cooldowns = cooldowns
            .into_iter()
            .map(|f| ((f.script_id, f.camera_id), (f.occurred_at_ms, f.occurrence_id)))
            .collect();
        let timezone = live.timezone();
        Intake {
            live,
            settings,
            timezone,
            db,
            rejections,
            names: None,
            matches: Matches::new(),
            meters: Meters::new(),
            cooldowns,
            fired: Vec::new(),
            cooldown_undo: Vec::new(),
            snoozes: SnoozeSet::default(),
            snoozes_checked: None,
            snoozes_purged: None,
            health: None,
        }
    }
}

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
