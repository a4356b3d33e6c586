//! # SQLite behind the backend interface
//!
//! The SQLite store itself is the rest of `store/` (its connections, migrations and the
//! outbox's queries in [`crate::store::outbox`]); the daemon's dispatcher and intake call
//! those directly, with their held connections, own-task writes and hand-over in memory.
//! [`SqliteOutbox`] puts the same queries behind [`OutboxBackend`], unchanged, so the
//! outbox's conformance tests run the same cases on SQLite and on PostgreSQL. Its calls
//! run on tokio's blocking pool over one held connection and one [`OutboxWriter`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use crate::settings::ExpireAfter;
use crate::store::outbox::backend::{OutboxBackend, lease_ms};
use crate::store::outbox::{
    self, Channel, Claimed, Fired, Handoff, NewDelivery, OutboxWriter, Recorded, RowRef,
};
use crate::store::{Conn, HeldConn, Store, StoreError};

/// The SQLite outbox behind [`OutboxBackend`]; cheap to clone.
#[derive(Clone)]
pub struct SqliteOutbox {
    conn: Arc<Mutex<HeldConn>>,
    writer: Arc<Mutex<OutboxWriter>>,
    handoff: Arc<Handoff>,
}

impl std::fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutbox").finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// The outbox of `store`, with connections of its own.
    pub fn new(store: &Store) -> Result<SqliteOutbox, StoreError> {
        let handoff = Arc::new(Handoff::default());
        Ok(SqliteOutbox {
            conn: Arc::new(Mutex::new(HeldConn::open(store.clone())?)),
            writer: Arc::new(Mutex::new(OutboxWriter::new(store, handoff.clone())?)),
            handoff,
        })
    }

    /// Runs `f` on the held connection on the blocking pool.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn, &Handoff) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let handoff = self.handoff.clone();
        tokio::task::spawn_blocking(move || {
            let mut held = conn.lock().unwrap_or_else(|p| p.into_inner());
            let result = held.get().and_then(|c| f(c, &handoff));
            if result.as_ref().is_err_and(|e| !matches!(e, StoreError::Busy)) {
                held.close();
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::TaskFailed(format!("outbox task: {e}"))))
    }
}

impl OutboxBackend for SqliteOutbox {
    async fn enqueue(
        &self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let writer = self.writer.clone();
        let (deliveries, fired) = (deliveries.to_vec(), fired.to_vec());
        tokio::task::spawn_blocking(move || {
            writer.lock().unwrap_or_else(|p| p.into_inner()).enqueue_with_cooldowns(
                &deliveries,
                &fired,
                now_ms,
            )
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::TaskFailed(format!("outbox task: {e}"))))
    }

    async fn claim(
        &self,
        channel: Channel,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let until = now_ms.saturating_add(lease_ms(lease));
        self.with_conn(move |conn, handoff| {
            // Read and lease in one write transaction, so the rows read are the ones leased.
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let leased = (|| {
                let rows = handoff
                    .query_channels(&[channel], || outbox::due_in(conn, channel, now_ms, limit))?;
                let mut lease = conn.prepare_cached(
                    "UPDATE deliveries SET next_attempt_at = ?2 WHERE rowid = ?1",
                )?;
                for row in &rows {
                    lease.execute(params![row.rowid, until])?;
                }
                Ok::<_, StoreError>(rows)
            })();
            let rows = match leased {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            conn.execute_batch("COMMIT")?;
            Ok(rows)
        })
        .await
    }

    async fn record(&self, outcomes: &[(RowRef, Recorded)], now_ms: i64) -> Result<(), StoreError> {
        let outcomes = outcomes.to_vec();
        self.with_conn(move |conn, _| outbox::record(conn, &outcomes, now_ms)).await
    }

    async fn expire(
        &self,
        now_ms: i64,
        after: &ExpireAfter,
    ) -> Result<Vec<(&'static str, usize)>, StoreError> {
        let after = *after;
        self.with_conn(move |conn, _| outbox::expire(conn, now_ms, &after)).await
    }

    async fn coalesce(&self, head: &mut Claimed, now_ms: i64) -> Result<usize, StoreError> {
        let mut row = head.clone();
        let (row, n) = self
            .with_conn(move |conn, _| {
                let n = outbox::coalesce(conn, &mut row, now_ms)?;
                Ok((row, n))
            })
            .await?;
        *head = row;
        Ok(n)
    }

    async fn next_due_after(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.with_conn(move |conn, _| outbox::next_due_after(conn, now_ms)).await
    }

    async fn load_cooldowns(&self) -> Result<Vec<Fired>, StoreError> {
        self.with_conn(|conn, _| outbox::load_cooldowns(conn)).await
    }

    async fn state_of(&self, id: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn, _| {
            Ok(conn
                .query_row(
                    "SELECT state, COALESCE(coalesced_into, last_error) FROM deliveries
                     WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn prune(&self, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.with_conn(move |conn, _| outbox::prune(conn, cutoff_ms, limit)).await
    }
}
