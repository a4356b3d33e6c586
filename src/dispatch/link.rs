//! The dispatcher's way to its outbox, on either database ([`OutboxDb`]): [`Link`] gives a
//! [`Handle`] for each step of the loop (or none while the database fails), and the
//! handle runs the step's calls.
//!
//! - On SQLite the link is [`DbLink`] (one connection, a replaced file, the hand-over) and
//!   every call is the blocking query it always was, on tokio's blocking pool. Nothing
//!   is added to that path: the enum's `match` is the only difference.
//! - On PostgreSQL each call takes a connection from the pool; claims go through
//!   [`claim_leased`], which leases the rows it returns for `delivery.lease_seconds`. The
//!   rows the intake wrote leased to this instance come through the hand-over (see
//!   [`crate::store::postgres::outbox`]); a claim leaves them there.
//!   Failures are logged once per streak with the same growing pause.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::db_link::{Db, DbLink, with_db};
use crate::backoff::{Backoff, Jitter};
use crate::settings::ExpireAfter;
use crate::store::outbox::backend::{OutboxBackend, claim_leased};
use crate::store::outbox::{self, Channel, ClaimFound, Handoff, Recorded, RowRef};
use crate::store::postgres::outbox::PgOutbox;
use crate::store::{OutboxDb, StoreError, now_ms};

/// See the module documentation.
pub(super) enum Link {
    Sqlite(DbLink),
    Postgres { outbox: PgOutbox, trouble: Backoff },
}

/// The database of one step.
pub(super) enum Handle {
    Sqlite(Db),
    Postgres(PgOutbox),
}

impl Link {
    /// The link to `db`; SQLite's uses `handoff`.
    pub(super) fn new(db: OutboxDb, handoff: Arc<Handoff>) -> Link {
        match db {
            OutboxDb::Sqlite(store) => Link::Sqlite(DbLink::new(store, handoff)),
            OutboxDb::Postgres(outbox) => Link::Postgres {
                outbox,
                trouble: Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
                    .with_jitter(Jitter::None),
            },
        }
    }

    /// True when claimed rows are leased (PostgreSQL): a row claimed and not started stays
    /// unavailable until its lease ends unless it is given back.
    pub(super) fn leases(&self) -> bool {
        matches!(self, Link::Postgres { .. })
    }

    /// The file generation of SQLite's connection (always 0 on PostgreSQL, whose rows keep
    /// their `seq`).
    pub(super) fn epoch(&self) -> u64 {
        match self {
            Link::Sqlite(l) => l.epoch(),
            Link::Postgres { .. } => 0,
        }
    }

    /// The handle for a step and whether every channel needs a query (see
    /// [`DbLink::get`]); no handle while SQLite cannot be opened.
    pub(super) async fn get(&mut self) -> (Option<Handle>, bool) {
        match self {
            Link::Sqlite(l) => {
                let linked = l.get().await;
                (linked.db.map(Handle::Sqlite), linked.requery)
            }
            Link::Postgres { outbox, .. } => (Some(Handle::Postgres(outbox.clone())), false),
        }
    }

    /// The handle for housekeeping, without any check (none: skip a turn).
    pub(super) fn current(&self) -> Option<Handle> {
        match self {
            Link::Sqlite(l) => l.current().map(Handle::Sqlite),
            Link::Postgres { outbox, .. } => Some(Handle::Postgres(outbox.clone())),
        }
    }

    /// A call succeeded: a failure streak ends (logged).
    pub(super) fn ok(&mut self) {
        match self {
            Link::Sqlite(l) => l.ok(),
            Link::Postgres { trouble, .. } => {
                if trouble.reset() {
                    tracing::info!("outbox database usable again");
                }
            }
        }
    }

    /// A call failed: logged once per streak.
    pub(super) fn failed(&mut self, what: &str, e: &StoreError) {
        match self {
            Link::Sqlite(l) => l.failed(what, e),
            Link::Postgres { trouble, .. } => {
                if trouble.failures() == 0 {
                    tracing::warn!(error = %e, what, "outbox database call failed; retrying with backoff");
                }
            }
        }
    }

    /// The pause before the next try after a failure; grows until [`Link::ok`].
    pub(super) fn pause(&mut self) -> Duration {
        match self {
            Link::Sqlite(l) => l.pause(),
            Link::Postgres { trouble, .. } => trouble.next_delay(),
        }
    }
}

impl Handle {
    /// Records `outcomes` in one transaction.
    pub(super) async fn record(&self, outcomes: Vec<(RowRef, Recorded)>) -> Result<(), StoreError> {
        match self {
            Handle::Sqlite(db) => {
                with_db(db, move |c| outbox::record(c, &outcomes, now_ms())).await
            }
            Handle::Postgres(pg) => pg.record(&outcomes, now_ms()).await,
        }
    }

    /// One claim of the dispatcher (see [`outbox::claim_rows`] and [`claim_leased`]).
    pub(super) async fn claim(
        &self,
        handoff: &Arc<Handoff>,
        asked: Vec<(Channel, usize)>,
        now: i64,
        expire_after: ExpireAfter,
        busy: HashSet<String>,
        lease: Duration,
    ) -> Result<ClaimFound, StoreError> {
        match self {
            Handle::Sqlite(db) => {
                let handoff = handoff.clone();
                with_db(db, move |c| {
                    outbox::claim_rows(c, &handoff, &asked, now, &expire_after, &busy)
                })
                .await
            }
            Handle::Postgres(pg) => {
                // Rows committed until now that were not handed over are this claim's.
                let channels: Vec<Channel> = asked.iter().map(|(c, _)| *c).collect();
                handoff.claiming(&channels);
                claim_leased(pg, &asked, now, &expire_after, &busy, lease).await
            }
        }
    }

    /// The earliest `next_attempt_at` after `now` of a pending row.
    pub(super) async fn next_due_after(&self, now: i64) -> Result<Option<i64>, StoreError> {
        match self {
            Handle::Sqlite(db) => with_db(db, move |c| outbox::next_due_after(c, now)).await,
            Handle::Postgres(pg) => pg.next_due_after(now).await,
        }
    }

    /// Pending rows and the `created_at` of the oldest.
    pub(super) async fn pending_summary(&self) -> Result<(u64, Option<i64>), StoreError> {
        match self {
            Handle::Sqlite(db) => with_db(db, |c| outbox::pending_summary(c)).await,
            Handle::Postgres(pg) => pg.pending_summary().await,
        }
    }

    /// Deletes up to `limit` finished rows last updated before `cutoff`.
    pub(super) async fn prune(&self, cutoff: i64, limit: usize) -> Result<usize, StoreError> {
        match self {
            Handle::Sqlite(db) => with_db(db, move |c| outbox::prune(c, cutoff, limit)).await,
            Handle::Postgres(pg) => pg.prune(cutoff, limit).await,
        }
    }
}
