//! What the live snapshot is built from, read from PostgreSQL: the catalogs, the users,
//! the holiday calendars and every script with its users, in one consistent view, plus
//! the `scripts_version` counter the view was read at. The rows are decoded by the same
//! code as SQLite's ([`scripts::from_columns`], [`calendars::decode_dates`]) and validated
//! by the snapshot build, which both stores share.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::PgStore;
use crate::script::Lookups;
use crate::store::StoreError;
use crate::store::calendars::{self, CalendarInput, StoredCalendar};
use crate::store::catalog::{Event, Reaction};
use crate::store::scripts::{self, StoredScript};

/// The rows of one snapshot; see the module documentation.
#[derive(Debug)]
pub struct SnapshotRows {
    /// The catalogs, user ids and calendars.
    pub lookups: Lookups,
    /// Every user's parent.
    pub parents: HashMap<i64, Option<i64>>,
    /// Disabled users.
    pub disabled: HashSet<i64>,
    /// Every script by id, its users attached.
    pub scripts: Vec<StoredScript>,
    /// `scripts_version` in the same view.
    pub version: i64,
}

/// The `scripts_version` counter now.
pub async fn scripts_version(store: &PgStore) -> Result<i64, StoreError> {
    let conn = store.get().await?;
    let row = conn
        .query_opt("SELECT version FROM scripts_version WHERE id = 1", &[])
        .await
        .map_err(|e| store.error(&e))?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Reads [`SnapshotRows`] in one `REPEATABLE READ` read-only transaction.
pub async fn read(store: &PgStore) -> Result<SnapshotRows, StoreError> {
    let mut conn = store.get().await?;
    let err = |e: tokio_postgres::Error| store.error(&e);
    let (tx, version) = store.begin_view(&mut conn, "scripts_version").await?;
    let events = tx
        .query("SELECT id, name, description, color, analytic_type FROM events ORDER BY id", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            let e = Event {
                id: r.get(0),
                name: r.get(1),
                description: r.get(2),
                color: r.get(3),
                analytic_type: r.get(4),
            };
            (e.id, e)
        })
        .collect();
    let reactions = tx
        .query("SELECT id, name, description, is_default FROM reactions ORDER BY id", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            let name: String = r.get(1);
            let reaction = Reaction {
                id: r.get(0),
                kind: crate::delivery::ReactionKind::of(&name),
                name,
                description: r.get(2),
                is_default: r.get(3),
            };
            (reaction.id, reaction)
        })
        .collect();
    let user_rows =
        tx.query("SELECT id, parent_id, disabled FROM users", &[]).await.map_err(err)?;
    let mut users = HashSet::new();
    let mut parents = HashMap::new();
    let mut disabled = HashSet::new();
    for r in &user_rows {
        let id: i64 = r.get(0);
        users.insert(id);
        parents.insert(id, r.get::<_, Option<i64>>(1));
        if r.get::<_, bool>(2) {
            disabled.insert(id);
        }
    }
    let calendars = tx
        .query(
            "SELECT id, name, timezone, dates, owner_id, created_at, updated_at FROM calendars
             ORDER BY id",
            &[],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let dates: String = r.get(3);
            let calendar = StoredCalendar {
                id,
                input: CalendarInput {
                    name: r.get(1),
                    timezone: r.get(2),
                    dates: calendars::decode_dates(id, &dates),
                },
                owner_id: r.get(4),
                created_at: r.get(5),
                updated_at: r.get(6),
            };
            (id, Arc::new(calendar.dates()))
        })
        .collect();
    let mut script_users: HashMap<i64, Vec<Value>> = HashMap::new();
    for r in tx
        .query(
            "SELECT script_id, user_id FROM script_users ORDER BY script_id, position, user_id",
            &[],
        )
        .await
        .map_err(err)?
    {
        script_users.entry(r.get(0)).or_default().push(Value::from(r.get::<_, i64>(1)));
    }
    let scripts = tx
        .query(
            "SELECT id, title, event_id, reaction_id, status, cameras, timetable, extra,
                    created_at, updated_at, owner_id
             FROM scripts ORDER BY id",
            &[],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let text = |i: usize| r.get::<_, Option<String>>(i).map_or(Value::Null, Value::from);
            let mut s = scripts::from_columns(
                id,
                [
                    text(1),
                    Value::from(r.get::<_, i64>(2)),
                    Value::from(r.get::<_, i64>(3)),
                    text(4),
                    text(5),
                    text(6),
                    text(7),
                ],
                r.get(8),
                r.get(9),
                r.get(10),
            );
            let users = script_users.remove(&id).unwrap_or_default();
            s.body.insert("users".into(), Value::Array(users));
            s
        })
        .collect();
    tx.commit().await.map_err(err)?;
    Ok(SnapshotRows {
        lookups: Lookups { events, reactions, users, calendars },
        parents,
        disabled,
        scripts,
        version,
    })
}
