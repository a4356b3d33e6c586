//! What the daemon's pipeline reads from PostgreSQL besides the outbox's own operations:
//! the outbox gauges' summary and the intake's snoozes (with their change counter and the
//! purge of ended ones), with the semantics of their SQLite counterparts in
//! [`crate::store::outbox::pending_summary`] and [`crate::store::snoozes`].

use super::outbox::PgOutbox;
use crate::store::StoreError;
use crate::store::snoozes::{NewSnooze, Scope, Snooze, SnoozeSet};

impl PgOutbox {
    /// How many rows are pending and the `created_at` (unix ms) of the oldest.
    pub async fn pending_summary(&self) -> Result<(u64, Option<i64>), StoreError> {
        let conn = self.store().get().await?;
        let row = conn
            .query_one(
                "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(|e| self.store().error(&e))?;
        let n: i64 = row.get(0);
        Ok((u64::try_from(n).unwrap_or(0), row.get(1)))
    }

    /// The snoozes' change counter (`snoozes_version`).
    pub async fn snoozes_version(&self) -> Result<i64, StoreError> {
        let conn = self.store().get().await?;
        let row = conn
            .query_opt("SELECT version FROM snoozes_version WHERE id = 1", &[])
            .await
            .map_err(|e| self.store().error(&e))?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    /// The snoozes not expired at `now_ms` and the counter, read in one snapshot (a
    /// `REPEATABLE READ` transaction), as [`SnoozeSet::load`] does on SQLite.
    pub async fn snoozes(&self, now_ms: i64) -> Result<SnoozeSet, StoreError> {
        let mut conn = self.store().get().await?;
        let err = |e: tokio_postgres::Error| self.store().error(&e);
        let (tx, version) = self.store().begin_view(&mut conn, "snoozes_version").await?;
        let rows = tx
            .query(
                "SELECT id, script_id, scope, user_id, camera_id, starts_at, until
                 FROM snoozes WHERE until > $1 ORDER BY script_id, id",
                &[&now_ms],
            )
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        let snoozes = rows
            .iter()
            .map(|r| {
                let scope: String = r.get(2);
                Snooze {
                    id: r.get(0),
                    spec: NewSnooze {
                        script_id: r.get(1),
                        // The CHECK constraint allows only the two spellings.
                        scope: Scope::parse(&scope).unwrap_or(Scope::Script),
                        user_id: r.get(3),
                        camera_id: r.get(4),
                        starts_at: r.get(5),
                        until: r.get(6),
                    },
                }
            })
            .collect();
        Ok(SnoozeSet::new(version, snoozes))
    }

    /// Deletes the snoozes that ended before `before_ms`; how many went.
    pub async fn purge_snoozes(&self, before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.store().get().await?;
        let n = conn
            .execute("DELETE FROM snoozes WHERE until <= $1", &[&before_ms])
            .await
            .map_err(|e| self.store().error(&e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
