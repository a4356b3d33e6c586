//! The outbox's one interface over two databases: [`OutboxBackend`], implemented by
//! [`crate::store::sqlite::SqliteOutbox`] and [`crate::store::postgres::outbox::PgOutbox`],
//! and checked by one conformance test module run against each (`tests/it/
//! outbox_conformance.rs`).
//!
//! The semantics, the same on both:
//!
//! - [`OutboxBackend::enqueue`] writes deliveries and the cooldown state of their firings in
//!   one transaction; a delivery id already present adds nothing (the row's key).
//! - [`OutboxBackend::claim`] takes up to `limit` due pending rows of one channel, oldest
//!   due first (then enqueue order), only a lane's head, and leases them: their
//!   `next_attempt_at` moves to the end of the lease, so a row claimed by a process that
//!   died is due again when the lease ends. On PostgreSQL the rows are locked with
//!   `FOR UPDATE SKIP LOCKED` while they are leased, so instances never claim the same row.
//! - [`OutboxBackend::record`] records a group of outcomes in one transaction.
//! - [`OutboxBackend::expire`] and [`OutboxBackend::coalesce`] as described at
//!   [`super::expire`] and [`super::coalesce`].

use std::future::Future;
use std::time::Duration;

use super::{Channel, Claimed, Fired, NewDelivery, Recorded, RowRef};
use crate::settings::ExpireAfter;
use crate::store::StoreError;

/// How long a claimed row stays leased when nothing else is said (`delivery.lease_seconds`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The outbox operations of the intake and the dispatcher; see the module documentation.
pub trait OutboxBackend: Send + Sync {
    /// Writes `deliveries` and `fired` in one transaction; returns how many rows are new.
    fn enqueue(
        &self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Claims up to `limit` due rows of `channel`, leased until `now_ms + lease`.
    fn claim(
        &self,
        channel: Channel,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Records `outcomes` in one transaction; rows no longer pending are left alone (a
    /// `sent` outcome also ends an `expired` row: the attempt started in time).
    fn record(
        &self,
        outcomes: &[(RowRef, Recorded)],
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends pending rows older than their channel's limit; how many per channel.
    fn expire(
        &self,
        now_ms: i64,
        after: &ExpireAfter,
    ) -> impl Future<Output = Result<Vec<(&'static str, usize)>, StoreError>> + Send;

    /// Coalesces the Telegram lane of `head` (its claimed head); how many rows ended.
    fn coalesce(
        &self,
        head: &mut Claimed,
        now_ms: i64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The earliest `next_attempt_at` after `now_ms` of a pending row.
    fn next_due_after(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Every stored cooldown state.
    fn load_cooldowns(&self) -> impl Future<Output = Result<Vec<Fired>, StoreError>> + Send;

    /// A delivery's state and `last_error`, by id (`None`: no such row).
    fn state_of(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<(String, Option<String>)>, StoreError>> + Send;

    /// Deletes up to `limit` finished rows last updated before `cutoff_ms`.
    fn prune(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// `lease` in ms, for the queries.
pub(crate) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// One claim of a dispatcher through a backend that leases ([`OutboxBackend::claim`]): as
/// [`super::claim_rows`] on SQLite, expires the old pending rows of the `asked` channels,
/// claims up to each channel's limit, and coalesces the Telegram rows claimed whose lane
/// is not in `busy`.
pub async fn claim_leased<B: OutboxBackend>(
    backend: &B,
    asked: &[(Channel, usize)],
    now_ms: i64,
    expire_after: &ExpireAfter,
    busy: &std::collections::HashSet<String>,
    lease: Duration,
) -> Result<super::ClaimFound, StoreError> {
    let is_asked = |c: Channel| asked.iter().any(|(a, _)| *a == c);
    let only_asked = ExpireAfter {
        push: if is_asked(Channel::Push) { expire_after.push } else { 0 },
        telegram: if is_asked(Channel::Telegram) { expire_after.telegram } else { 0 },
        webhook: if is_asked(Channel::Webhook) { expire_after.webhook } else { 0 },
    };
    let expired = backend.expire(now_ms, &only_asked).await?;
    let mut found = Vec::with_capacity(asked.len());
    for (channel, limit) in asked {
        found.push(backend.claim(*channel, now_ms, *limit, lease).await?);
    }
    let mut coalesced = 0;
    for row in found.iter_mut().flatten().filter(|r| !busy.contains(&r.lane)) {
        coalesced += backend.coalesce(row, now_ms).await?;
    }
    Ok((expired, coalesced, found))
}
