//! The outbox on PostgreSQL: [`PgOutbox`] implements [`OutboxBackend`] with the semantics
//! of the SQLite outbox (see [`crate::store::outbox::backend`]).
//!
//! - Deliveries are inserted in one statement per batch (`UNNEST` of arrays, in batch
//!   order so `seq` keeps the enqueue order) with `ON CONFLICT (id) DO NOTHING`, in the
//!   same transaction as the cooldown states.
//! - A claim is one statement: the due rows of one channel (its partial index of due rows,
//!   a lane's head only) `FOR UPDATE SKIP LOCKED LIMIT n`, and their `next_attempt_at`
//!   moved to the lease's end. Concurrent claims from other instances skip the rows locked
//!   by this one and, once it commits, no longer see them as due.
//! - Outcomes of a group are one transaction, by `seq` ([`RowRef::Rowid`]) or by id.

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::Row;

use super::PgStore;
use crate::settings::ExpireAfter;
use crate::store::StoreError;
use crate::store::outbox::backend::{OutboxBackend, lease_ms};
use crate::store::outbox::claim::summary_of;
use crate::store::outbox::{
    Channel, Claimed, Fired, NewDelivery, Recorded, RowRef, Target, target_from,
};

/// The PostgreSQL outbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgOutbox {
    store: PgStore,
    pacing: ChatPacing,
}

/// The least time between two messages to one Telegram chat, for every instance together:
/// a chat's next message is claimed only once its last sent one is that old (each instance
/// also paces its own sends, see `dispatch::telegram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatPacing {
    /// A chat (a positive id or `@channel`), ms.
    pub chat_ms: i64,
    /// A group chat (an id starting with `-`), ms.
    pub group_ms: i64,
}

impl Default for ChatPacing {
    /// Telegram's published limits: 1 message a second per chat, 20 a minute per group.
    fn default() -> Self {
        ChatPacing { chat_ms: 1_000, group_ms: 3_000 }
    }
}

impl ChatPacing {
    /// From the `[telegram]` rates: a chat's interval is the stricter of its per-second and
    /// per-minute rate; a group's, its per-minute rate evenly spread.
    pub fn from_settings(t: &crate::settings::TelegramSettings) -> ChatPacing {
        let every = |per: u32, window_ms: i64| window_ms / i64::from(per.max(1));
        let chat_ms = every(t.per_chat_per_second, 1_000).max(every(t.per_chat_per_minute, 60_000));
        ChatPacing { chat_ms, group_ms: chat_ms.max(every(t.per_group_per_minute, 60_000)) }
    }
}

impl PgOutbox {
    /// The outbox in `store`'s database (migrated), with Telegram's default pacing.
    pub fn new(store: PgStore) -> PgOutbox {
        PgOutbox { store, pacing: ChatPacing::default() }
    }

    /// The same outbox with `pacing` between two messages to one chat.
    pub fn with_chat_pacing(self, pacing: ChatPacing) -> PgOutbox {
        PgOutbox { pacing, ..self }
    }

    /// The database this outbox is in.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        self.store.error(&e)
    }
}

/// The columns a claim returns, in [`claimed`]'s order.
const CLAIMED: &str =
    "d.seq, d.id, d.reaction, d.lane, d.attempts, d.payload, d.target, d.recipient";

/// The claim of one channel's due rows (`$1` now, `$2` limit, `$3` the lease's end). The
/// channel is a literal, not a parameter: a partial index's condition (`channel = 'push'`)
/// can only be proven from a constant, so with `channel = $1` PostgreSQL's generic plan
/// (used after a statement's first executions) could not read the channel's due index.
pub fn claim_sql(channel: Channel) -> String {
    claim_sql_paced(channel, ChatPacing::default())
}

/// [`claim_sql`] with `pacing` between two messages to one chat: a lane's head is due only
/// once the lane's last sent message is that old (every instance's sends count).
pub fn claim_sql_paced(channel: Channel, pacing: ChatPacing) -> String {
    let paced = if channel == Channel::Telegram {
        format!(
            "AND (d.lane = '' OR NOT EXISTS (
                  SELECT 1 FROM deliveries s
                  WHERE s.state = 'sent' AND s.lane <> '' AND s.lane = d.lane
                    AND s.updated_at > $1 - CASE WHEN d.recipient LIKE '-%'
                                                 THEN {} ELSE {} END))",
            pacing.group_ms, pacing.chat_ms
        )
    } else {
        String::new()
    };
    format!(
        "WITH due AS (
           SELECT d.seq, d.next_attempt_at AS due_at FROM deliveries d
           WHERE d.state = 'pending' AND d.channel = '{}' AND d.next_attempt_at <= $1
             AND (d.lane = '' OR NOT EXISTS (
                  SELECT 1 FROM deliveries e
                  WHERE e.state = 'pending' AND e.lane <> '' AND e.lane = d.lane
                    AND e.seq < d.seq))
             {paced}
           ORDER BY d.next_attempt_at, d.seq
           LIMIT $2
           FOR UPDATE SKIP LOCKED)
         UPDATE deliveries d SET next_attempt_at = $3 FROM due WHERE d.seq = due.seq
         RETURNING {CLAIMED}, due.due_at",
        channel.name()
    )
}

fn claimed(r: &Row) -> Claimed {
    let reaction: String = r.get(2);
    let recipient: String = r.get(7);
    let target: Option<String> = r.get(6);
    let attempts: i32 = r.get(4);
    Claimed {
        rowid: r.get(0),
        epoch: 0,
        id: r.get(1),
        target: target_from(target.as_deref(), &reaction, &recipient),
        reaction,
        lane: r.get(3),
        attempts: u32::try_from(attempts).unwrap_or(0),
        payload: r.get(5),
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
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient,
                       lane, channel, payload, target, state, attempts, next_attempt_at,
                       created_at, updated_at)
                     SELECT id, occ, sid, reaction, recipient, lane, channel, payload, target,
                            'pending', 0, $10, $10, $10
                     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::text[])
                          WITH ORDINALITY AS t(id, occ, sid, reaction, recipient, lane, channel,
                                               payload, target, ord)
                     ORDER BY ord
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(|e| self.err(e))?;
            let n = tx
                .execute(
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
                    ],
                )
                .await
                .map_err(|e| self.err(e))?;
            added = usize::try_from(n).unwrap_or(usize::MAX);
        }
        tx.commit().await.map_err(|e| self.err(e))?;
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
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut conn = self.store.get().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        for (row, outcome) in outcomes {
            let (by, seq, id) = match row {
                RowRef::Rowid(seq) => ("seq", *seq, None),
                RowRef::Id(id) => ("id", 0, Some(id.as_str())),
            };
            let key: &(dyn tokio_postgres::types::ToSql + Sync) = match &id {
                Some(id) => id,
                None => &seq,
            };
            // One statement for every outcome: the parameters say which columns change.
            let (state, error, next): (&str, Option<&str>, Option<i64>) = match outcome {
                Recorded::Sent => ("sent", None, None),
                Recorded::Failed { reason } => ("failed", Some(reason), None),
                Recorded::Retry { reason, next_attempt_at } => {
                    ("pending", Some(reason), Some(*next_attempt_at))
                }
                Recorded::Deferred { next_attempt_at } => ("pending", None, Some(*next_attempt_at)),
            };
            let attempted = !matches!(outcome, Recorded::Deferred { .. });
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET
                       state = $2,
                       attempts = attempts + CASE WHEN $5 THEN 1 ELSE 0 END,
                       last_error = CASE WHEN $2 = 'sent' AND state = 'expired' THEN NULL
                                         ELSE COALESCE($3, last_error) END,
                       next_attempt_at = COALESCE($4, next_attempt_at),
                       updated_at = $6
                     WHERE {by} = $1
                       AND (state = 'pending' OR ($2 = 'sent' AND state = 'expired'))"
                ))
                .await
                .map_err(|e| self.err(e))?;
            tx.execute(&stmt, &[key, &state, &error, &next, &attempted, &now_ms])
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
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
