//! # The durable delivery outbox
//!
//! Every delivery (one reaction for one recipient, caused by one occurrence and one script)
//! is a row of the `deliveries` table, written by [`OutboxWriter::enqueue`] before anything
//! is attempted. The dispatcher ([`crate::dispatch::worker`]) claims due rows, attempts them
//! and records the outcome on the same row:
//!
//! | state | meaning |
//! | --- | --- |
//! | `pending` | not delivered yet; attempted again at `next_attempt_at` (unix ms) |
//! | `sent` | delivered (the peer acknowledged it) |
//! | `failed` | given up, with the reason in `last_error` |
//! | `expired` | not done within `delivery.expire_after_seconds` of its channel, never sent (see [`expire`]) |
//! | `coalesced` | replaced by a Telegram summary, whose `delivery_id` is in `last_error` |
//!
//! The row's id is the stable `delivery_id` of CONTRACT §5: `INSERT OR IGNORE` makes a
//! redelivered occurrence add nothing. Rows with the same non-empty `lane` are attempted one
//! at a time in enqueue order (SQLite's `rowid`); lane `""` has no ordering.
//!
//! How to deliver is stored with the row as JSON in the `target` column (migration 2), see
//! [`Target`]. It holds the bot token or webhook secret in clear text, as the script's
//! `extra` does; neither ever reaches a log line, `Debug` output or `last_error`.
//!
//! The functions below the writer are the dispatcher's blocking queries; they take a
//! connection so the dispatcher can keep one open.
//!
//! # Hand-over in memory
//!
//! A freshly committed row with an empty lane (pushes, webhooks) is also handed to the
//! dispatcher in memory through the [`Handoff`] of the [`Store`] handle it was written
//! with, so the dispatcher can attempt it without reading it back. The database stays the
//! truth: the hand-over is bounded ([`HANDOFF_MAX`]; beyond it rows are only in the
//! database and the dispatcher falls back to [`due`], as it does for rows with a lane,
//! whose order only the query keeps), and a dispatcher that queries the
//! outbox does so holding the hand-over's lock and then drops what was handed over, while
//! writers commit and hand over under that same lock. So a row is either seen by a query
//! or handed over after it, never both: no attempt starts twice.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::delivery::ReactionKind;
use crate::secret::Secret;
use crate::store::{Conn, Staleness, Store, StoreError};

/// How a delivery leaves the daemon; stored with the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MQTT QoS 1 to `{push_topic_prefix}/{user_id}/reactions`, then the API's push hub.
    Push {
        /// The receiving user.
        user_id: i64,
    },
    /// Bot API `sendMessage` (or `sendPhoto` with `photo_url`).
    Telegram {
        /// The script's bot token.
        bot_token: Secret,
        /// Numeric chat id or `@channel`.
        chat_id: String,
        /// The message text (or photo caption).
        text: String,
        /// Snapshot URL: sent as a photo with the text as caption.
        photo_url: Option<String>,
    },
    /// HMAC-signed HTTP POST of the payload.
    Webhook {
        /// Where to POST.
        url: String,
        /// Signing key; no signature header without it.
        secret: Option<Secret>,
    },
}

/// The stored form of [`Target`]: plain strings, because [`Secret`] serialises as a mask.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StoredTarget {
    Push {
        user_id: i64,
    },
    Telegram {
        bot_token: String,
        chat_id: String,
        text: String,
        #[serde(default)]
        photo_url: Option<String>,
    },
    Webhook {
        url: String,
        #[serde(default)]
        secret: Option<String>,
    },
}

impl Target {
    /// The JSON text stored in the `target` column.
    pub fn to_json(&self) -> String {
        let stored = match self {
            Target::Push { user_id } => StoredTarget::Push { user_id: *user_id },
            Target::Telegram { bot_token, chat_id, text, photo_url } => StoredTarget::Telegram {
                bot_token: bot_token.expose().to_owned(),
                chat_id: chat_id.clone(),
                text: text.clone(),
                photo_url: photo_url.clone(),
            },
            Target::Webhook { url, secret } => StoredTarget::Webhook {
                url: url.clone(),
                secret: secret.as_ref().map(|s| s.expose().to_owned()),
            },
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses the `target` column. The error never contains the text (it may hold a token).
    pub fn from_json(text: &str) -> Result<Target, String> {
        let stored: StoredTarget = serde_json::from_str(text).map_err(|e| {
            format!(
                "unreadable delivery target (line {} column {}: {:?})",
                e.line(),
                e.column(),
                e.classify()
            )
        })?;
        Ok(match stored {
            StoredTarget::Push { user_id } => Target::Push { user_id },
            StoredTarget::Telegram { bot_token, chat_id, text, photo_url } => {
                Target::Telegram { bot_token: Secret::new(bot_token), chat_id, text, photo_url }
            }
            StoredTarget::Webhook { url, secret } => {
                Target::Webhook { url, secret: secret.map(Secret::new) }
            }
        })
    }

    /// `push`, `telegram` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Push { .. } => "push",
            Target::Telegram { .. } => "telegram",
            Target::Webhook { .. } => "webhook",
        }
    }
}

/// The delivery channels; each has its own in-flight budget in the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// [`Target::Push`], and every row whose target is neither Telegram nor webhook (rows
    /// without or with an unreadable target are attempted, and failed, here).
    Push,
    /// [`Target::Telegram`].
    Telegram,
    /// [`Target::Webhook`].
    Webhook,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Telegram, Channel::Webhook];

    /// `push`, `telegram` or `webhook` (as [`Target::kind`]).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Telegram => "telegram",
            Channel::Webhook => "webhook",
        }
    }

    /// 0, 1, 2: for arrays indexed by channel.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The channel of a claimed row's target (an unreadable target counts as push).
    pub fn of(target: &Result<Target, String>) -> Channel {
        match target {
            Ok(Target::Telegram { .. }) => Channel::Telegram,
            Ok(Target::Webhook { .. }) => Channel::Webhook,
            _ => Channel::Push,
        }
    }

    /// The SQL condition on `d.target` selecting this channel's rows. The stored JSON
    /// starts with its `kind` tag ([`Target::to_json`]).
    fn condition(self) -> &'static str {
        match self {
            Channel::Telegram => "d.target LIKE '{\"kind\":\"telegram\"%'",
            Channel::Webhook => "d.target LIKE '{\"kind\":\"webhook\"%'",
            Channel::Push => {
                "(d.target IS NULL OR NOT (d.target LIKE '{\"kind\":\"telegram\"%' \
                 OR d.target LIKE '{\"kind\":\"webhook\"%'))"
            }
        }
    }
}

/// One delivery to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The `delivery_id`, stable per occurrence × script × recipient (the row's key).
    pub id: String,
    /// The occurrence that caused it.
    pub occurrence_id: String,
    /// The script.
    pub script_id: i64,
    /// Reaction name, e.g. `show-camera-sidebar`.
    pub reaction: String,
    /// User id, Telegram chat id or webhook URL (shown by `GET /scripts/{id}/deliveries`).
    pub recipient: String,
    /// Ordering key: deliveries with the same non-empty lane are attempted one at a time,
    /// in enqueue order; `""` = no ordering.
    pub lane: String,
    /// JSON text: the CONTRACT §5 push payload (body of pushes and webhooks).
    pub payload: String,
    /// How to deliver.
    pub target: Target,
}

/// A script's firing on a camera, kept as its cooldown state (table `cooldowns`): written
/// by [`OutboxWriter::enqueue_with_cooldowns`] in the same transaction as the deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The script.
    pub script_id: i64,
    /// The camera.
    pub camera_id: i64,
    /// The firing occurrence's `occurred_at`, unix ms.
    pub occurred_at_ms: i64,
    /// The firing occurrence's id (its redelivery is a duplicate, not a suppressed one).
    pub occurrence_id: String,
}

/// Every stored cooldown state, for the intake's cache at start.
pub fn load_cooldowns(conn: &Connection) -> Result<Vec<Fired>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT script_id, camera, fired_at, occurrence_id FROM cooldowns")?;
    let rows = stmt.query_map([], |r| {
        Ok(Fired {
            script_id: r.get(0)?,
            camera_id: lossy_text(r.get(1)?).parse().unwrap_or(0),
            occurred_at_ms: r.get(2)?,
            occurrence_id: lossy_text(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored cooldown state of one script on one camera: the last firing's `occurred_at`
/// (unix ms) and occurrence id (explain reads just the ones it needs).
pub fn cooldown_of(
    conn: &Connection,
    script_id: i64,
    camera_id: i64,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT fired_at, occurrence_id FROM cooldowns WHERE script_id = ?1 AND camera = ?2",
        )?
        .query_row(params![script_id, camera_id.to_string()], |r| {
            Ok((r.get(0)?, lossy_text(r.get(1)?)))
        })
        .optional()?)
}

/// Writes deliveries into the outbox over its own connection.
///
/// ```
/// use scriptd::store::outbox::{NewDelivery, OutboxWriter, Target};
/// use scriptd::store::{Store, now_ms};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::migrate(&dir.path().join("scriptd.db")).unwrap();
/// let mut writer = OutboxWriter::new(&store).unwrap();
/// let push = NewDelivery {
///     id: "occ-1:1:42".into(),
///     occurrence_id: "occ-1".into(),
///     script_id: 1,
///     reaction: "sound".into(),
///     recipient: "42".into(),
///     lane: String::new(),
///     payload: r#"{"reaction":"sound","delivery_id":"occ-1:1:42"}"#.into(),
///     target: Target::Push { user_id: 42 },
/// };
/// assert_eq!(writer.enqueue(&[push.clone()], now_ms()).unwrap(), 1);
/// // The same occurrence redelivered: nothing new.
/// assert_eq!(writer.enqueue(&[push], now_ms()).unwrap(), 0);
/// ```
pub struct OutboxWriter {
    store: Store,
    conn: Option<Conn>,
    handoff: std::sync::Arc<Handoff>,
}

impl std::fmt::Debug for OutboxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWriter").finish_non_exhaustive()
    }
}

const INSERT: &str = "INSERT OR IGNORE INTO deliveries
    (id, occurrence_id, script_id, reaction, recipient, lane, payload, state, attempts,
     next_attempt_at, created_at, updated_at, target)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8, ?9)";

impl OutboxWriter {
    /// A writer with a dedicated connection to `store`.
    pub fn new(store: &Store) -> Result<OutboxWriter, StoreError> {
        Ok(OutboxWriter {
            store: store.clone(),
            conn: Some(store.connect()?),
            handoff: store.handoff().clone(),
        })
    }

    /// Writes `deliveries` in one transaction begun IMMEDIATE; an id already in the outbox
    /// is ignored (a redelivered occurrence adds nothing). Returns the number of new rows.
    /// On error nothing is written. New rows without a lane are also handed over in memory
    /// (see the module documentation).
    ///
    /// When the database file was replaced (see [`Conn`]) the writer closes its connection
    /// and fails with [`StoreError::Replaced`] until the new file can be opened; it never
    /// commits to the old file after the replacement was noticed, so the caller retries the
    /// batch and it lands in the new file.
    pub fn enqueue(
        &mut self,
        deliveries: &[NewDelivery],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.enqueue_with_cooldowns(deliveries, &[], now_ms)
    }

    /// [`Self::enqueue`], also storing the cooldown states in `fired` (one row per script
    /// and camera, replaced) in the same transaction.
    pub fn enqueue_with_cooldowns(
        &mut self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if deliveries.is_empty() && fired.is_empty() {
            return Ok(0);
        }
        self.release_replaced_file();
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(self.store.connect()?),
        };
        let epoch = conn.epoch();
        let staleness = conn.staleness();
        let result = Self::write(conn, &self.handoff, &staleness, epoch, deliveries, fired, now_ms);
        if matches!(result, Err(StoreError::Replaced)) {
            self.conn = None;
        }
        result
    }

    /// Closes the connection if the database file was replaced (see [`Conn`]).
    pub fn release_replaced_file(&mut self) {
        if self.conn.as_ref().is_some_and(Conn::is_stale) {
            self.conn = None;
        }
    }

    fn write(
        conn: &mut Conn,
        handoff: &Handoff,
        staleness: &Staleness,
        epoch: u64,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !fired.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO cooldowns (script_id, camera, fired_at, occurrence_id)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (script_id, camera) DO UPDATE
                 SET fired_at = excluded.fired_at, occurrence_id = excluded.occurrence_id",
            )?;
            for f in fired {
                stmt.execute(params![
                    f.script_id,
                    f.camera_id.to_string(),
                    f.occurred_at_ms,
                    f.occurrence_id
                ])?;
            }
        }
        let mut added = 0;
        let mut fresh = Vec::new();
        let mut laned = false;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for (i, d) in deliveries.iter().enumerate() {
                let n = stmt.execute(params![
                    d.id,
                    d.occurrence_id,
                    d.script_id,
                    d.reaction,
                    d.recipient,
                    d.lane,
                    d.payload,
                    now_ms,
                    d.target.to_json(),
                ])?;
                added += n;
                if n == 1 {
                    if d.lane.is_empty() {
                        fresh.push((tx.last_insert_rowid(), i));
                    } else {
                        // Lanes keep their order through the query only.
                        laned = true;
                    }
                }
            }
        }
        // Commit and hand over under the hand-over's lock (see the module documentation).
        // A dispatcher carrying the pending rows of a replaced file over to the new one
        // reads them under this lock too: either this commit is before that read (and
        // carried) or it sees the replacement here and is rolled back.
        let mut queue = handoff.lock();
        if staleness.is_stale() {
            return Err(StoreError::Replaced);
        }
        tx.commit()?;
        queue.laned |= laned;
        queue.push(fresh.into_iter().map(|(rowid, i)| {
            let d = &deliveries[i];
            Claimed {
                rowid,
                epoch,
                id: d.id.clone(),
                reaction: d.reaction.clone(),
                lane: String::new(),
                attempts: 0,
                payload: d.payload.clone(),
                target: Ok(d.target.clone()),
            }
        }));
        Ok(added)
    }
}

/// Most rows waiting in a [`Handoff`]; beyond it rows are only in the database.
pub const HANDOFF_MAX: usize = 4096;

/// Freshly committed rows handed from the writers to the dispatcher in memory; shared by
/// every clone of one [`Store`] handle. See the module documentation.
#[derive(Debug, Default)]
pub struct Handoff {
    queue: Mutex<Fresh>,
}

/// The rows of a [`Handoff`], and whether rows were committed that were not handed over
/// (it was full, or they have a lane).
#[derive(Debug, Default)]
pub struct Fresh {
    rows: VecDeque<Claimed>,
    db_only: bool,
    /// Rows with a lane were committed (Telegram: only a query keeps their order).
    laned: bool,
}

impl Fresh {
    fn push(&mut self, rows: impl Iterator<Item = Claimed>) {
        for row in rows {
            if self.rows.len() >= HANDOFF_MAX {
                self.db_only = true;
                return;
            }
            self.rows.push_back(row);
        }
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Fresh> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` handed-over rows, oldest first.
    pub fn take(&self, max: usize) -> Vec<Claimed> {
        let mut q = self.lock();
        let n = max.min(q.rows.len());
        q.rows.drain(..n).collect()
    }

    /// Whether rows are waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// Whether rows were committed that were not handed over (only a query finds them).
    pub fn db_only(&self) -> bool {
        let q = self.lock();
        q.db_only || q.laned
    }

    /// Per [`Channel`] (by index): whether rows of it were committed that were not handed
    /// over. Rows with a lane are Telegram's; a full hand-over concerns every channel.
    pub fn db_only_channels(&self) -> [bool; 3] {
        let q = self.lock();
        let mut out = [q.db_only; 3];
        out[Channel::Telegram.index()] |= q.laned;
        out
    }

    /// [`Self::query`] for a query that reads only the rows of `channels`: the handed-over
    /// rows of the other channels stay for [`Self::take`].
    pub fn query_channels<T>(
        &self,
        channels: &[Channel],
        query: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut q = self.lock();
        let out = query()?;
        if Channel::ALL.iter().all(|c| channels.contains(c)) {
            q.rows.clear();
            q.db_only = false;
        } else {
            q.rows.retain(|r| !channels.contains(&Channel::of(&r.target)));
        }
        if channels.contains(&Channel::Telegram) {
            q.laned = false;
        }
        Ok(out)
    }

    /// Runs `query` (a read of the outbox) with writers held back, then forgets what was
    /// handed over: every row committed before the query is the query's to find.
    pub fn query<T>(&self, query: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut q = self.lock();
        let out = query()?;
        q.rows.clear();
        q.db_only = false;
        q.laned = false;
        Ok(out)
    }
}

/// A pending row claimed for an attempt, read without trusting its column types.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// SQLite rowid: the handle for updates (the id column may be hand-edited garbage).
    pub rowid: i64,
    /// The [`Conn::epoch`] it was read or written with: its rowid means nothing in another
    /// file (after a replacement it is updated by id).
    pub epoch: u64,
    /// The delivery id as text.
    pub id: String,
    /// Reaction name (a metric label).
    pub reaction: String,
    /// Ordering lane.
    pub lane: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The payload text.
    pub payload: String,
    /// How to deliver, or why the row cannot be delivered at all.
    pub target: Result<Target, String>,
}

fn lossy_text(v: SqlValue) -> String {
    match v {
        SqlValue::Null => String::new(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => f.to_string(),
        SqlValue::Text(s) => s,
        SqlValue::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
    }
}

/// Rows written before migration 2 have no `target`: those of the client reactions are read
/// as pushes to their recipient.
fn target_of(target: SqlValue, reaction: &str, recipient: &str) -> Result<Target, String> {
    match target {
        SqlValue::Text(t) => Target::from_json(&t),
        SqlValue::Null => match recipient.parse::<i64>() {
            Ok(user_id) if ReactionKind::of(reaction) == ReactionKind::Client => {
                Ok(Target::Push { user_id })
            }
            _ => Err("the delivery has no target (written before the outbox stored one)".into()),
        },
        _ => Err("unreadable delivery target (not text)".into()),
    }
}

/// Up to `limit` due pending rows, oldest due first. A row with a non-empty lane is
/// returned only when it is its lane's head (no older pending row in the lane), so a lane
/// waiting for a retry blocks itself and nothing else.
pub fn due(conn: &Conn, now_ms: i64, limit: usize) -> Result<Vec<Claimed>, StoreError> {
    due_where(conn, "1", now_ms, limit)
}

/// [`due`] for one [`Channel`]'s rows only, so a channel's backlog cannot hide another's
/// due rows behind the limit.
pub fn due_in(
    conn: &Conn,
    channel: Channel,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    due_where(conn, channel.condition(), now_ms, limit)
}

fn due_where(
    conn: &Conn,
    condition: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    let epoch = conn.epoch();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT d.rowid, d.id, d.reaction, d.lane, d.attempts, d.payload, d.target, d.recipient
         FROM deliveries d
         WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND {condition}
           AND (d.lane = '' OR NOT EXISTS (
                SELECT 1 FROM deliveries e
                WHERE e.state = 'pending' AND e.lane = d.lane AND e.rowid < d.rowid))
         ORDER BY d.next_attempt_at, d.rowid
         LIMIT ?2"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![now_ms, limit], |r| {
        let reaction = lossy_text(r.get(2)?);
        let recipient = lossy_text(r.get(7)?);
        let attempts = match r.get::<_, SqlValue>(4)? {
            SqlValue::Integer(i) => u32::try_from(i).unwrap_or(0),
            _ => 0,
        };
        let target = target_of(r.get(6)?, &reaction, &recipient);
        Ok(Claimed {
            rowid: r.get(0)?,
            epoch,
            id: lossy_text(r.get(1)?),
            reaction,
            lane: lossy_text(r.get(3)?),
            attempts,
            payload: lossy_text(r.get(5)?),
            target,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What one claim of the dispatcher found: the rows expired now per channel, how many rows
/// were coalesced into a Telegram summary, and the due rows per channel asked.
pub type ClaimFound = (Vec<(&'static str, usize)>, usize, Vec<Vec<Claimed>>);

/// One claim of the dispatcher: expires the old pending rows of the `asked` channels, reads
/// their due rows (up to each channel's limit) under the hand-over's lock, and coalesces
/// the Telegram rows found whose lane is not in `busy` (a lane's head in flight is not
/// rewritten under its attempt).
///
/// The writes (expiry, coalescing) run **outside** the hand-over's lock: a writer holds
/// SQLite's write lock while it waits for that lock to commit and hand over, so a write
/// under the lock would wait for the writer and the writer for it, until the busy timeout
/// broke the tie (both stalled for seconds). Under the lock only reads run, which never wait
/// for a writer (WAL). Expiry first is safe: a handed-over row of an asked channel is
/// dropped by the query, so an expired one is never started from the hand-over.
pub fn claim_rows(
    conn: &mut Conn,
    handoff: &Handoff,
    asked: &[(Channel, usize)],
    now_ms: i64,
    expire_after: &crate::settings::ExpireAfter,
    busy: &std::collections::HashSet<String>,
) -> Result<ClaimFound, StoreError> {
    let is_asked = |c: Channel| asked.iter().any(|(a, _)| *a == c);
    let only_asked = crate::settings::ExpireAfter {
        push: if is_asked(Channel::Push) { expire_after.push } else { 0 },
        telegram: if is_asked(Channel::Telegram) { expire_after.telegram } else { 0 },
        webhook: if is_asked(Channel::Webhook) { expire_after.webhook } else { 0 },
    };
    let expired = expire(conn, now_ms, &only_asked)?;
    let channels: Vec<Channel> = asked.iter().map(|(c, _)| *c).collect();
    let mut found: Vec<Vec<Claimed>> = handoff.query_channels(&channels, || {
        asked.iter().map(|(channel, limit)| due_in(&*conn, *channel, now_ms, *limit)).collect()
    })?;
    let mut coalesced = 0;
    for row in found.iter_mut().flatten().filter(|r| !busy.contains(&r.lane)) {
        coalesced += coalesce(conn, row, now_ms)?;
    }
    Ok((expired, coalesced, found))
}

/// The earliest `next_attempt_at` after `now_ms` among pending rows, if any.
pub fn next_due_after(conn: &Connection, now_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries
             WHERE state = 'pending' AND next_attempt_at > ?1",
        )?
        .query_row([now_ms], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Pending rows and the `created_at` (unix ms) of the oldest.
pub fn pending_summary(conn: &Connection) -> Result<(u64, Option<i64>), StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'")?
        .query_row([], |r| {
            let n: i64 = r.get(0)?;
            Ok((u64::try_from(n).unwrap_or(0), r.get::<_, Option<i64>>(1).ok().flatten()))
        })?)
}

/// Marks `expired` every pending row older than its channel's limit in `after` (seconds
/// since the row was written, which is when its occurrence was received and matched; 0 =
/// never), so [`due`] never returns it. Returns how many rows expired per channel
/// (`push`, `telegram`, `webhook`), for the metrics. Run it right before [`due`], in the
/// same [`Handoff::query`].
///
/// An attempt already in flight when its row expires is not stopped: if it succeeds,
/// [`record`] turns the row `sent` (it was started in time), otherwise it stays `expired`.
pub fn expire(
    conn: &Connection,
    now_ms: i64,
    after: &crate::settings::ExpireAfter,
) -> Result<Vec<(&'static str, usize)>, StoreError> {
    let mut out = Vec::new();
    for (channel, secs) in
        [("push", after.push), ("telegram", after.telegram), ("webhook", after.webhook)]
    {
        if secs == 0 {
            continue;
        }
        let cutoff =
            now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        // Rows written before the outbox stored a target are pushes (see `target_of`).
        const OF_CHANNEL: &str = "state = 'pending' AND created_at < ?1
            AND COALESCE(CASE WHEN json_valid(target) THEN json_extract(target, '$.kind') END,
                         'push') = ?2";
        // Read first: the usual answer is "none", and a read needs no write lock (another
        // writer holding it must not stop the dispatcher).
        let any: bool = conn
            .prepare_cached(&format!("SELECT EXISTS(SELECT 1 FROM deliveries WHERE {OF_CHANNEL})"))?
            .query_row(params![cutoff, channel], |r| r.get(0))?;
        if !any {
            continue;
        }
        let n = conn
            .prepare_cached(&format!(
                "UPDATE deliveries SET state = 'expired', updated_at = ?3,
                        last_error = 'expired: not delivered within ' || ?4 || ' s'
                 WHERE {OF_CHANNEL}"
            ))?
            .execute(params![cutoff, channel, now_ms, i64::try_from(secs).unwrap_or(i64::MAX)])?;
        if n > 0 {
            out.push((channel, n));
        }
    }
    Ok(out)
}

/// Telegram coalescing, run on a Telegram row about to be attempted (`head`, its lane's
/// head): when the lane (one bot and chat) holds more pending rows of the same script, they
/// end `coalesced` with `coalesced_into` = the head's delivery id, and the head's text
/// becomes a summary of itself and every row coalesced into it so far (title, count,
/// cameras, first and last time, read from the rows' payloads). One transaction: after a
/// crash either nothing changed or the head is a pending summary, so nothing is lost or
/// sent twice. `head.target` is updated, and the head's `created_at` becomes the newest
/// coalesced row's (the summary expires with its newest occurrence, see [`expire`]).
/// Returns how many rows were coalesced now.
pub fn coalesce(
    conn: &mut Connection,
    head: &mut Claimed,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let Ok(Target::Telegram { bot_token, chat_id, .. }) = &head.target else {
        return Ok(0);
    };
    if head.lane.is_empty() {
        return Ok(0);
    }
    // Read first: usually there is nothing to coalesce, and a read needs no write lock.
    let more: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM deliveries d JOIN deliveries h ON h.id = ?1
             WHERE d.state = 'pending' AND d.lane = ?2 AND d.script_id = h.script_id
               AND d.rowid > h.rowid)",
        )?
        .query_row(params![head.id, head.lane], |r| r.get(0))?;
    if !more {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let script: Option<i64> = tx
        .query_row(
            "SELECT script_id FROM deliveries WHERE id = ?1 AND state = 'pending'",
            [&head.id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(script) = script else { return Ok(0) };
    let n = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'coalesced', coalesced_into = ?1, updated_at = ?2
             WHERE state = 'pending' AND lane = ?3 AND script_id = ?4 AND id <> ?1
               AND rowid > (SELECT rowid FROM deliveries WHERE id = ?1)",
        )?
        .execute(params![head.id, now_ms, head.lane, script])?;
    if n == 0 {
        return Ok(0);
    }
    let payloads: Vec<String> = tx
        .prepare_cached(
            "SELECT payload FROM deliveries WHERE id = ?1
             UNION ALL
             SELECT payload FROM (SELECT payload FROM deliveries
                                  WHERE state = 'coalesced' AND coalesced_into = ?1 ORDER BY rowid)",
        )?
        .query_map([&head.id], |r| Ok(lossy_text(r.get(0)?)))?
        .collect::<Result<_, _>>()?;
    let text = summary_of(&payloads);
    let target = Target::Telegram {
        bot_token: bot_token.clone(),
        chat_id: chat_id.clone(),
        text,
        photo_url: None,
    };
    // The summary reports the newest occurrence: it expires with it, not with the oldest.
    tx.prepare_cached(
        "UPDATE deliveries SET target = ?2, updated_at = ?3,
                created_at = MAX(created_at, (SELECT MAX(created_at) FROM deliveries
                                              WHERE state = 'coalesced' AND coalesced_into = ?1))
         WHERE id = ?1",
    )?
    .execute(params![head.id, target.to_json(), now_ms])?;
    tx.commit()?;
    head.target = Ok(target);
    Ok(n)
}

/// The summary text of the payloads of coalesced deliveries (CONTRACT §5 push payloads).
fn summary_of(payloads: &[String]) -> String {
    let mut title = String::new();
    let mut cameras: Vec<i64> = Vec::new();
    let mut times: Vec<String> = Vec::new();
    for p in payloads {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(p) else { continue };
        if title.is_empty() {
            title =
                v.pointer("/script/title").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
        }
        if let Some(c) = v.get("camera_id").and_then(|c| c.as_i64())
            && !cameras.contains(&c)
        {
            cameras.push(c);
        }
        if let Some(t) = v.get("occurred_at").and_then(|t| t.as_str()) {
            times.push(t.to_owned());
        }
    }
    times.sort_by_key(|t| {
        chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()).unwrap_or(0)
    });
    let first = times.first().cloned().unwrap_or_default();
    let last = times.last().cloned().unwrap_or_default();
    crate::delivery::summary_text(&title, payloads.len(), &cameras, &first, &last)
}

/// What became of one attempt, as recorded on the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Delivered: `sent`, attempts + 1.
    Sent,
    /// Given up: `failed` with the reason, attempts + 1.
    Failed {
        /// `last_error`.
        reason: String,
    },
    /// A failed attempt to be repeated at `next_attempt_at`: attempts + 1.
    Retry {
        /// `last_error`.
        reason: String,
        /// Unix ms.
        next_attempt_at: i64,
    },
    /// Not attempted (a rate limit said "not now"): only `next_attempt_at` moves.
    Deferred {
        /// Unix ms.
        next_attempt_at: i64,
    },
}

/// Which row an outcome is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRef {
    /// A row of the connection's own file, by rowid.
    Rowid(i64),
    /// A row read from a file that has since been replaced, by its delivery id (its
    /// pending copy was carried over to the new file, see [`carry_over`]).
    Id(String),
}

/// Records the outcomes of many attempts in one transaction begun IMMEDIATE. Only rows
/// still pending change (an operator may have edited one meanwhile).
pub fn record(
    conn: &mut Connection,
    outcomes: &[(RowRef, Recorded)],
    now_ms: i64,
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (row, outcome) in outcomes {
        let (by, key) = match row {
            RowRef::Rowid(rowid) => ("rowid", SqlValue::Integer(*rowid)),
            RowRef::Id(id) => ("id", SqlValue::Text(id.clone())),
        };
        match outcome {
            Recorded::Sent => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'sent', attempts = attempts + 1,
                            updated_at = ?2,
                            last_error = CASE WHEN state = 'expired' THEN NULL ELSE last_error END
                     WHERE {by} = ?1 AND state IN ('pending', 'expired')"
                ))?
                .execute(params![key, now_ms])?,
            Recorded::Failed { reason } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1,
                            last_error = ?2, updated_at = ?3
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, reason, now_ms])?,
            Recorded::Retry { reason, next_attempt_at } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                            next_attempt_at = ?3, updated_at = ?4
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, reason, next_attempt_at, now_ms])?,
            Recorded::Deferred { next_attempt_at } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?3
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, next_attempt_at, now_ms])?,
        };
    }
    tx.commit()?;
    Ok(())
}

/// Every column of the `deliveries` table, in the order [`Carried`] keeps them.
const COLUMNS: &str = "id, occurrence_id, script_id, reaction, recipient, lane, payload, state, \
                       attempts, next_attempt_at, last_error, created_at, updated_at, target";

/// The pending rows of a database file that was replaced, copied verbatim (see
/// [`carry_over`]).
#[derive(Debug, Default)]
pub struct Carried {
    rows: Vec<Vec<SqlValue>>,
}

impl Carried {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the rows of a later read (a second replacement before the first was carried).
    pub fn extend(&mut self, other: Carried) {
        self.rows.extend(other.rows);
    }
}

/// Reads every pending row of the (replaced) file `conn` is on, for [`carry_over`]. Run it
/// through [`Handoff::query`]: handed-over rows are pending rows of that file too.
pub fn pending_rows(conn: &Connection) -> Result<Carried, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM deliveries WHERE state = 'pending' ORDER BY rowid"
    ))?;
    let width = stmt.column_count();
    let rows = stmt.query_map([], |r| (0..width).map(|i| r.get::<_, SqlValue>(i)).collect())?;
    Ok(Carried { rows: rows.collect::<Result<_, _>>()? })
}

/// Writes the pending rows of a replaced file into the file `conn` is on, in their order,
/// in one transaction; a delivery id the new file already has keeps the new file's row.
/// Returns how many rows were added.
pub fn carry_over(conn: &mut Connection, carried: &Carried) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut added = 0;
    {
        let mut stmt = tx.prepare(&format!(
            "INSERT OR IGNORE INTO deliveries ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?;
        for row in &carried.rows {
            added += stmt.execute(rusqlite::params_from_iter(row.iter()))?;
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Deletes up to `limit` finished (`sent`, `failed`, `expired` or `coalesced`) rows last updated before
/// `cutoff_ms`, in one short transaction. Returns how many were deleted; the caller repeats
/// while it equals `limit`.
pub fn prune(conn: &mut Connection, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE rowid IN (
            SELECT rowid FROM deliveries
            WHERE state <> 'pending' AND updated_at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_keep_secrets() {
        let targets = [
            Target::Push { user_id: 42 },
            Target::Telegram {
                bot_token: Secret::new("123:secret"),
                chat_id: "-100".into(),
                text: "hi".into(),
                photo_url: Some("https://x/y.jpg".into()),
            },
            Target::Webhook { url: "http://h/hook".into(), secret: Some(Secret::new("k")) },
            Target::Webhook { url: "http://h/hook".into(), secret: None },
        ];
        for t in targets {
            let json = t.to_json();
            assert_eq!(Target::from_json(&json).unwrap(), t, "{json}");
            assert!(!format!("{t:?}").contains("123:secret"));
        }
    }

    #[test]
    fn garbage_targets_are_errors_without_their_text() {
        let e = Target::from_json(r#"{"kind":"telegram","bot_token":"123:secret"}"#).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(Target::from_json("nonsense").is_err());
        assert!(Target::from_json(r#"{"kind":"fax"}"#).is_err());
    }

    #[test]
    fn rows_without_a_target_are_pushes_for_push_reactions_only() {
        assert_eq!(target_of(SqlValue::Null, "sound", "7"), Ok(Target::Push { user_id: 7 }));
        assert!(target_of(SqlValue::Null, "webhook", "7").is_err());
        assert!(target_of(SqlValue::Integer(3), "sound", "7").is_err());
    }

    #[test]
    fn expiry_ends_old_pending_rows_per_channel_and_a_late_success_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db")).unwrap();
        let mut writer = OutboxWriter::new(&store).unwrap();
        let row = |id: &str, target: Target| NewDelivery {
            id: id.into(),
            occurrence_id: "o".into(),
            script_id: 1,
            reaction: "r".into(),
            recipient: "x".into(),
            lane: String::new(),
            payload: "{}".into(),
            target,
        };
        let tg = Target::Telegram {
            bot_token: Secret::new("1:t"),
            chat_id: "5".into(),
            text: "t".into(),
            photo_url: None,
        };
        let hook = Target::Webhook { url: "http://127.0.0.1:1/".into(), secret: None };
        let t0 = 1_000_000;
        writer
            .enqueue(&[row("p", Target::Push { user_id: 1 }), row("t", tg), row("w", hook)], t0)
            .unwrap();
        let mut conn = store.connect().unwrap();
        let after = crate::settings::ExpireAfter { push: 300, telegram: 900, webhook: 0 };
        // 300 s old: nothing yet (strictly older than the limit expires).
        assert!(expire(&conn, t0 + 300_000, &after).unwrap().is_empty());
        assert_eq!(expire(&conn, t0 + 300_001, &after).unwrap(), vec![("push", 1)]);
        let due_ids = |c: &Conn, now| -> Vec<String> {
            due(c, now, 10).unwrap().into_iter().map(|r| r.id).collect()
        };
        assert_eq!(due_ids(&conn, t0 + 300_001), ["t", "w"]);
        // Telegram after 900 s; webhooks never.
        assert_eq!(expire(&conn, t0 + 10_000_000, &after).unwrap(), vec![("telegram", 1)]);
        assert_eq!(due_ids(&conn, t0 + 10_000_000), ["w"]);
        let state = |c: &Conn, id: &str| -> String {
            c.query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| r.get(0)).unwrap()
        };
        assert_eq!(state(&conn, "p"), "expired");
        // An attempt started before the expiry that succeeds afterwards is recorded sent.
        record(&mut conn, &[(RowRef::Id("t".into()), Recorded::Sent)], t0 + 10_000_001).unwrap();
        assert_eq!(state(&conn, "t"), "sent");
        // A failure after the expiry leaves it expired.
        record(
            &mut conn,
            &[(RowRef::Id("p".into()), Recorded::Failed { reason: "x".into() })],
            t0 + 10_000_001,
        )
        .unwrap();
        assert_eq!(state(&conn, "p"), "expired");
    }

    #[test]
    fn coalescing_replaces_a_chats_queued_messages_of_one_script_with_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db")).unwrap();
        let mut writer = OutboxWriter::new(&store).unwrap();
        let tg = |id: &str, script: i64, camera: i64, at: &str| NewDelivery {
            id: id.into(),
            occurrence_id: id.into(),
            script_id: script,
            reaction: "telegram-message".into(),
            recipient: "5".into(),
            lane: "tg:x:5".into(),
            payload: serde_json::json!({
                "script": {"id": script, "title": format!("Line {script}")},
                "camera_id": camera,
                "occurred_at": at,
            })
            .to_string(),
            target: Target::Telegram {
                bot_token: Secret::new("1:t"),
                chat_id: "5".into(),
                text: id.into(),
                photo_url: None,
            },
        };
        writer
            .enqueue(
                &[
                    tg("a", 1, 7, "2026-01-01T10:00:00Z"),
                    tg("b", 1, 8, "2026-01-01T10:00:01Z"),
                    tg("c", 2, 7, "2026-01-01T10:00:02Z"),
                    tg("d", 1, 7, "2026-01-01T10:00:03Z"),
                ],
                1,
            )
            .unwrap();
        let mut conn = store.connect().unwrap();
        let mut head = due(&conn, 10, 10).unwrap().remove(0);
        assert_eq!(head.id, "a");
        assert_eq!(coalesce(&mut conn, &mut head, 10).unwrap(), 2);
        let Ok(Target::Telegram { text, .. }) = &head.target else { panic!("not telegram") };
        assert_eq!(
            text,
            "Line 1\n3 occurrences\nCameras: 7, 8\nFirst: 2026-01-01T10:00:00Z\nLast: 2026-01-01T10:00:03Z"
        );
        let rows: Vec<(String, String, Option<String>)> = conn
            .prepare("SELECT id, state, coalesced_into FROM deliveries ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let a = Some("a".to_owned());
        assert_eq!(
            rows,
            [
                ("a".into(), "pending".into(), None),
                ("b".into(), "coalesced".into(), a.clone()),
                ("c".into(), "pending".into(), None),
                ("d".into(), "coalesced".into(), a),
            ]
        );
        // The stored head is the summary (a crash before the attempt sends the summary).
        assert_eq!(due(&conn, 10, 10).unwrap()[0].target, head.target);
        // Nothing more to coalesce: the head is unchanged.
        assert_eq!(coalesce(&mut conn, &mut head, 11).unwrap(), 0);
    }

    #[test]
    fn a_claim_never_waits_for_the_write_lock_while_holding_the_hand_over() {
        // A writer holds SQLite's write lock, then needs the hand-over's lock to commit (as
        // `OutboxWriter::write` does). A claim that has to coalesce runs meanwhile: it may
        // wait for the write lock, but not while holding the hand-over's lock.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db"))
            .unwrap()
            .with_busy_timeout(std::time::Duration::from_secs(3));
        let mut writer = OutboxWriter::new(&store).unwrap();
        let tg = |id: &str| NewDelivery {
            id: id.into(),
            occurrence_id: id.into(),
            script_id: 1,
            reaction: "telegram-message".into(),
            recipient: "5".into(),
            lane: "tg:x:5".into(),
            payload: "{}".into(),
            target: Target::Telegram {
                bot_token: Secret::new("1:t"),
                chat_id: "5".into(),
                text: id.into(),
                photo_url: None,
            },
        };
        writer.enqueue(&[tg("a"), tg("b")], now_ms_for_test()).unwrap();
        let mut holder = store.connect().unwrap();
        let write_lock = holder.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let claim = {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut conn = store.connect().unwrap();
                claim_rows(
                    &mut conn,
                    store.handoff(),
                    &[(Channel::Telegram, 10)],
                    now_ms_for_test(),
                    &crate::settings::ExpireAfter::default(),
                    &std::collections::HashSet::new(),
                )
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (got, rx) = std::sync::mpsc::channel();
        let handoff = store.handoff().clone();
        std::thread::spawn(move || {
            let _queue = handoff.lock();
            got.send(()).ok();
        });
        let committed = rx.recv_timeout(std::time::Duration::from_secs(1)).is_ok();
        write_lock.commit().unwrap();
        let claimed = claim.join().unwrap();
        assert!(committed, "the claim held the hand-over's lock while waiting to write");
        let (_, coalesced, found) = claimed.unwrap();
        assert_eq!(coalesced, 1);
        assert_eq!(found[0].len(), 1);
    }

    fn now_ms_for_test() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}
