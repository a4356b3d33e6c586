//! The outbox on PostgreSQL: [`PgOutbox`] implements [`OutboxBackend`] with the semantics
//! of the SQLite outbox (see [`crate::store::outbox::backend`]).
//!
//! - Deliveries are inserted in one statement per batch (`UNNEST` of arrays, in batch
//!   order so `seq` keeps the enqueue order) with `ON CONFLICT (id) DO NOTHING`, in the
//!   same transaction as the cooldown states; a firing stands only when no stored firing
//!   of its script on its camera covers it (the row lock serialises instances), and the
//!   deliveries of one that does not stand are left out.
//! - A claim is one statement ([`super::claim`]): the due rows of one channel (its partial index of due rows,
//!   a lane's head only) `FOR UPDATE SKIP LOCKED LIMIT n`, and their `next_attempt_at`
//!   moved to the lease's end. Concurrent claims from other instances skip the rows locked
//!   by this one and, once it commits, no longer see them as due.
//! - Written by an intake given the dispatcher's hand-over ([`PgOutbox::handing_over`]),
//!   rows without a lane are written already leased to this instance (`next_attempt_at` at
//!   the lease's end, as a claim would) and, once committed, handed to its dispatcher in
//!   memory: no claim round trip between the commit and the send. Other instances, and this
//!   one's own claims, skip them until the lease ends, which is also when the rows of an
//!   instance that died are due again. Rows with a lane (Telegram chats) keep their order
//!   through the claim only, and are written due.
//! - Outcomes of a group are one statement (`UNNEST` of arrays), by `seq`
//!   ([`RowRef::Rowid`]) or by id (both: two statements in one transaction).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Row;

use super::PgStore;
use super::claim::claimed;
pub use super::claim::{ChatPacing, claim_sql, claim_sql_paced};
use crate::settings::ExpireAfter;
use crate::store::StoreError;
use crate::store::outbox::backend::{OutboxBackend, lease_ms};
use crate::store::outbox::claim::summary_of;
use crate::store::outbox::{
    Channel, Claimed, Fired, Handoff, NewDelivery, Recorded, RowRef, Target,
};

/// The PostgreSQL outbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgOutbox {
    store: PgStore,
    pacing: ChatPacing,
    /// The dispatcher's hand-over and its lease (see the module documentation).
    handover: Option<(Arc<Handoff>, Duration)>,
}

impl PgOutbox {
    /// The outbox in `store`'s database (migrated), with Telegram's default pacing.
    pub fn new(store: PgStore) -> PgOutbox {
        PgOutbox { store, pacing: ChatPacing::default(), handover: None }
    }

    /// The same outbox with `pacing` between two messages to one chat.
    pub fn with_chat_pacing(self, pacing: ChatPacing) -> PgOutbox {
        PgOutbox { pacing, ..self }
    }

    /// This outbox, writing the rows it enqueues without a lane leased to this instance for
    /// `lease` (the dispatcher's `delivery.lease_seconds`) and handing them over through
    /// `handoff` once committed (see the module documentation).
    pub fn handing_over(mut self, handoff: Arc<Handoff>, lease: Duration) -> PgOutbox {
        self.handover = Some((handoff, lease));
        self
    }

    /// The database this outbox is in.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        self.store.error(&e)
    }

    /// Records `outcomes`, all of rows referred to `by` `seq` or `id`, in one statement:
    /// the parameters say which columns change.
    async fn record_rows(
        &self,
        client: &impl tokio_postgres::GenericClient,
        by: &str,
        outcomes: &[&(RowRef, Recorded)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let n = outcomes.len();
        let (mut seqs, mut ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut states, mut errors, mut nexts, mut attempted) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (row, outcome) in outcomes {
            match row {
                RowRef::Rowid(seq) => seqs.push(*seq),
                RowRef::Id(id) => ids.push(id.as_str()),
            }
            let (state, error, next): (&str, Option<&str>, Option<i64>) = match outcome {
                Recorded::Sent => ("sent", None, None),
                Recorded::Failed { reason } => ("failed", Some(reason), None),
                Recorded::Retry { reason, next_attempt_at } => {
                    ("pending", Some(reason), Some(*next_attempt_at))
                }
                Recorded::Deferred { next_attempt_at } => ("pending", None, Some(*next_attempt_at)),
            };
            states.push(state);
            errors.push(error);
            nexts.push(next);
            attempted.push(!matches!(outcome, Recorded::Deferred { .. }));
        }
        use tokio_postgres::types::Type;
        let (key_type, keys, key_array): (&str, &(dyn tokio_postgres::types::ToSql + Sync), Type) =
            match by {
                "seq" => ("int8", &seqs, Type::INT8_ARRAY),
                _ => ("text", &ids, Type::TEXT_ARRAY),
            };
        // An unnamed statement, planned for these arrays every time: a prepared one would
        // settle on a generic plan made while the table was small (a new database) and keep
        // scanning the whole table with it until the next ANALYZE. One round trip either way.
        client
            .query_typed(
                &format!(
                    "UPDATE deliveries d SET
                       state = u.state,
                       attempts = d.attempts + CASE WHEN u.attempted THEN 1 ELSE 0 END,
                       last_error = CASE WHEN u.state = 'sent' AND d.state = 'expired' THEN NULL
                                         ELSE COALESCE(u.error, d.last_error) END,
                       next_attempt_at = COALESCE(u.next, d.next_attempt_at),
                       updated_at = $6
                     FROM UNNEST($1::{key_type}[], $2::text[], $3::text[], $4::int8[], $5::bool[])
                          AS u(key, state, error, next, attempted)
                     WHERE d.{by} = u.key
                       AND (d.state = 'pending' OR (u.state = 'sent' AND d.state = 'expired'))"
                ),
                &[
                    (keys, key_array),
                    (&states, Type::TEXT_ARRAY),
                    (&errors, Type::TEXT_ARRAY),
                    (&nexts, Type::INT8_ARRAY),
                    (&attempted, Type::BOOL_ARRAY),
                    (&now_ms, Type::INT8),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl PgOutbox {
    /// The stored cooldown state of each (script, camera) of `keys` that has one.
    pub async fn cooldown_states(&self, keys: &[(i64, i64)]) -> Result<Vec<Fired>, StoreError> {
        let scripts: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let cameras: Vec<String> = keys.iter().map(|k| k.1.to_string()).collect();
        let conn = self.store.get().await?;
        let rows = conn
            .query(
                "SELECT c.script_id, c.camera, c.fired_at, c.occurrence_id
                 FROM cooldowns c
                 JOIN UNNEST($1::int8[], $2::text[]) AS k(sid, cam)
                   ON c.script_id = k.sid AND c.camera = k.cam",
                &[&scripts, &cameras],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(fired_from_row).collect())
    }
}

/// A `cooldowns` row (script_id, camera, fired_at, occurrence_id) as a stored state.
fn fired_from_row(r: &Row) -> Fired {
    Fired {
        script_id: r.get(0),
        camera_id: r.get::<_, String>(1).parse().unwrap_or(0),
        occurred_at_ms: r.get(2),
        occurrence_id: r.get(3),
        cooldown_ms: 0,
    }
}

impl OutboxBackend for PgOutbox {
    async fn enqueue(
        &self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if deliveries.is_empty() && fired.is_empty() {
            return Ok(0);
        }
        let mut conn = self.store.get().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        // A firing stands only if no other instance's firing of the script on the camera
        // covers it (the row is locked by the upsert, so concurrent firings serialise); the
        // deliveries of one that does not stand are left out.
        let mut lost: HashSet<(i64, &str)> = HashSet::new();
        if !fired.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO cooldowns (script_id, camera, fired_at, occurrence_id)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (script_id, camera) DO UPDATE
                     SET fired_at = excluded.fired_at, occurrence_id = excluded.occurrence_id
                     WHERE cooldowns.occurrence_id = excluded.occurrence_id
                        OR excluded.fired_at < cooldowns.fired_at
                        OR excluded.fired_at - cooldowns.fired_at >= $5
                     RETURNING 1",
                )
                .await
                .map_err(|e| self.err(e))?;
            for f in fired {
                let stood = tx
                    .query_opt(
                        &stmt,
                        &[
                            &f.script_id,
                            &f.camera_id.to_string(),
                            &f.occurred_at_ms,
                            &f.occurrence_id,
                            &f.cooldown_ms,
                        ],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                if stood.is_none() {
                    lost.insert((f.script_id, f.occurrence_id.as_str()));
                }
            }
        }
        let kept: Vec<NewDelivery>;
        let deliveries = if lost.is_empty() {
            deliveries
        } else {
            kept = deliveries
                .iter()
                .filter(|d| !lost.contains(&(d.script_id, d.occurrence_id.as_str())))
                .cloned()
                .collect();
            &kept[..]
        };
        let mut added = 0;
        let mut handed = Vec::new();
        let (mut db_only, mut laned) = (false, false);
        if !deliveries.is_empty() {
            let col = |f: fn(&NewDelivery) -> String| -> Vec<String> {
                deliveries.iter().map(f).collect()
            };
            let ids = col(|d| d.id.clone());
            let occurrences = col(|d| d.occurrence_id.clone());
            let scripts: Vec<i64> = deliveries.iter().map(|d| d.script_id).collect();
            let reactions = col(|d| d.reaction.clone());
            let recipients = col(|d| d.recipient.clone());
            let lanes = col(|d| d.lane.clone());
            let channels = col(|d| d.target.kind().to_owned());
            let payloads = col(|d| d.payload.clone());
            let targets = col(|d| d.target.to_json());
            // Rows without a lane: leased to this instance (`$11`, the lease's end) when
            // they are handed over, due now otherwise.
            let handoff =
                self.handover.as_ref().filter(|(h, _)| h.room_for_leased(deliveries.len()));
            let leased_until = match handoff {
                Some((_, lease)) => now_ms.saturating_add(lease_ms(*lease)),
                None => now_ms,
            };
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient,
                       lane, channel, payload, target, state, attempts, next_attempt_at,
                       created_at, updated_at)
                     SELECT id, occ, sid, reaction, recipient, lane, channel, payload, target,
                            'pending', 0, CASE WHEN lane = '' THEN $11::int8 ELSE $10::int8 END, $10, $10
                     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::text[])
                          WITH ORDINALITY AS t(id, occ, sid, reaction, recipient, lane, channel,
                                               payload, target, ord)
                     ORDER BY ord
                     ON CONFLICT (id) DO NOTHING
                     RETURNING seq, id, lane = ''",
                )
                .await
                .map_err(|e| self.err(e))?;
            let rows = tx
                .query(
                    &stmt,
                    &[
                        &ids,
                        &occurrences,
                        &scripts,
                        &reactions,
                        &recipients,
                        &lanes,
                        &channels,
                        &payloads,
                        &targets,
                        &now_ms,
                        &leased_until,
                    ],
                )
                .await
                .map_err(|e| self.err(e))?;
            added = rows.len();
            if self.handover.is_some() {
                // The first of a batch's rows with one id is the one inserted.
                let mut by_id = std::collections::HashMap::with_capacity(deliveries.len());
                for d in deliveries {
                    by_id.entry(d.id.as_str()).or_insert(d);
                }
                for r in &rows {
                    let (seq, id, unlaned): (i64, String, bool) = (r.get(0), r.get(1), r.get(2));
                    match (unlaned, handoff.is_some(), by_id.get(id.as_str())) {
                        (false, _, _) => laned = true,
                        (true, true, Some(d)) => handed.push((seq, *d)),
                        (true, _, _) => db_only = true,
                    }
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        if let Some((h, _)) = &self.handover {
            // After the commit only: nothing is attempted that may still be rolled back.
            handed.sort_by_key(|(seq, _)| *seq);
            let rows = handed.into_iter().map(|(seq, d)| d.handed_over(seq, 0)).collect();
            h.hand_over_leased(rows, db_only, laned);
        }
        Ok(added)
    }

    async fn claim(
        &self,
        channel: Channel,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let conn = self.store.get().await?;
        let sql = claim_sql_paced(channel, self.pacing);
        let stmt = conn.prepare_cached(&sql).await.map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(lease_ms(lease));
        let rows = conn.query(&stmt, &[&now_ms, &limit, &until]).await.map_err(|e| self.err(e))?;
        let mut out: Vec<(i64, Claimed)> = rows.iter().map(|r| (r.get(8), claimed(r))).collect();
        out.sort_by_key(|(due_at, c)| (*due_at, c.rowid));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn record(&self, outcomes: &[(RowRef, Recorded)], now_ms: i64) -> Result<(), StoreError> {
        let (by_seq, by_id): (Vec<_>, Vec<_>) =
            outcomes.iter().partition(|(row, _)| matches!(row, RowRef::Rowid(_)));
        let mut conn = self.store.get().await?;
        match (by_seq.is_empty(), by_id.is_empty()) {
            (true, true) => Ok(()),
            // One statement is one transaction: one round trip.
            (false, true) => self.record_rows(&**conn, "seq", &by_seq, now_ms).await,
            (true, false) => self.record_rows(&**conn, "id", &by_id, now_ms).await,
            (false, false) => {
                let tx = conn.transaction().await.map_err(|e| self.err(e))?;
                self.record_rows(&*tx, "seq", &by_seq, now_ms).await?;
                self.record_rows(&*tx, "id", &by_id, now_ms).await?;
                tx.commit().await.map_err(|e| self.err(e))
            }
        }
    }

    async fn expire(
        &self,
        now_ms: i64,
        after: &ExpireAfter,
    ) -> Result<Vec<(&'static str, usize)>, StoreError> {
        let conn = self.store.get().await?;
        let mut out = Vec::new();
        for (channel, secs) in
            [("push", after.push), ("telegram", after.telegram), ("webhook", after.webhook)]
        {
            if secs == 0 {
                continue;
            }
            // The channel as a literal, as in `claim_sql`.
            let stmt = conn
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'expired', updated_at = $2,
                            last_error = 'expired: not delivered within ' || $3 || ' s'
                     WHERE state = 'pending' AND created_at < $1 AND channel = '{channel}'"
                ))
                .await
                .map_err(|e| self.err(e))?;
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(secs.saturating_mul(1000));
            let n = conn
                .execute(&stmt, &[&cutoff, &now_ms, &secs.to_string()])
                .await
                .map_err(|e| self.err(e))?;
            if n > 0 {
                out.push((channel, usize::try_from(n).unwrap_or(usize::MAX)));
            }
        }
        Ok(out)
    }

    async fn coalesce(&self, head: &mut Claimed, now_ms: i64) -> Result<usize, StoreError> {
        let Ok(Target::Telegram { bot_token, chat_id, .. }) = &head.target else {
            return Ok(0);
        };
        if head.lane.is_empty() {
            return Ok(0);
        }
        let mut conn = self.store.get().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        let found = tx
            .query_opt(
                "SELECT script_id, seq FROM deliveries WHERE id = $1 AND state = 'pending'
                 FOR UPDATE",
                &[&head.id],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(found) = found else { return Ok(0) };
        let (script, seq): (i64, i64) = (found.get(0), found.get(1));
        let n = tx
            .execute(
                "UPDATE deliveries SET state = 'coalesced', coalesced_into = $1, updated_at = $2
                 WHERE state = 'pending' AND lane <> '' AND lane = $3 AND script_id = $4
                   AND seq > $5",
                &[&head.id, &now_ms, &head.lane, &script, &seq],
            )
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(0);
        }
        let payloads: Vec<String> = tx
            .query(
                "SELECT payload FROM (
                   SELECT payload, 0 AS o, seq FROM deliveries WHERE id = $1
                   UNION ALL
                   SELECT payload, 1, seq FROM deliveries
                   WHERE state = 'coalesced' AND coalesced_into = $1) p
                 ORDER BY o, seq",
                &[&head.id],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let target = Target::Telegram {
            bot_token: bot_token.clone(),
            chat_id: chat_id.clone(),
            text: summary_of(&payloads),
            photo_url: None,
        };
        // The summary reports the newest occurrence: it expires with it, not the oldest.
        tx.execute(
            "UPDATE deliveries SET target = $2, updated_at = $3,
                    created_at = GREATEST(created_at, (SELECT MAX(created_at) FROM deliveries
                                 WHERE state = 'coalesced' AND coalesced_into = $1))
             WHERE id = $1",
            &[&head.id, &target.to_json(), &now_ms],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        head.target = Ok(target);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn next_due_after(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let conn = self.store.get().await?;
        let per_channel: Vec<String> = Channel::ALL
            .iter()
            .map(|c| {
                format!(
                    "SELECT MIN(next_attempt_at) AS at FROM deliveries
                     WHERE state = 'pending' AND channel = '{}' AND next_attempt_at > $1",
                    c.name()
                )
            })
            .collect();
        let sql = format!("SELECT MIN(at) FROM ({}) t", per_channel.join(" UNION ALL "));
        let row = conn.query_one(&sql, &[&now_ms]).await.map_err(|e| self.err(e))?;
        Ok(row.get(0))
    }

    async fn load_cooldowns(&self) -> Result<Vec<Fired>, StoreError> {
        let conn = self.store.get().await?;
        let rows = conn
            .query("SELECT script_id, camera, fired_at, occurrence_id FROM cooldowns", &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(fired_from_row).collect())
    }

    async fn state_of(&self, id: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let conn = self.store.get().await?;
        let row = conn
            .query_opt(
                "SELECT state, COALESCE(coalesced_into, last_error) FROM deliveries WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn prune(&self, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let conn = self.store.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = conn
            .execute(
                "DELETE FROM deliveries WHERE seq IN (
                   SELECT seq FROM deliveries WHERE state <> 'pending' AND updated_at < $1
                   LIMIT $2)",
                &[&cutoff_ms, &limit],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
