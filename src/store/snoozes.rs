//! Snoozes: silencing one script's deliveries for a while without disabling it.
//!
//! A snooze of scope [`Scope::Me`] silences the pushes to the user who created it (their
//! sub-users and the script's other users still get theirs); [`Scope::Script`] silences
//! every delivery of the script (pushes, Telegram, webhooks). With a `camera_id` only that
//! camera's occurrences are silenced. A snooze covers the occurrences whose `occurred_at`
//! lies in `[starts_at, until)`: an occurrence reported late is judged by when it happened,
//! not by when it arrived, and one that happened before the snooze was made is not
//! silenced by it.
//!
//! The table carries its own change counter (`snoozes_version`, bumped by triggers), so a
//! reader can keep a [`SnoozeSet`] in memory and reload it only when the counter moves,
//! without touching the script index. Expired rows are removed by [`purge_expired`].

use serde::Serialize;

use super::StoreError;
use super::sql::{Row, Sql};
use crate::args;

/// Whose deliveries a snooze silences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The pushes to the user who made the snooze.
    Me,
    /// Every delivery of the script.
    Script,
}

impl Scope {
    /// The stored and API spelling: `me` or `script`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Me => "me",
            Scope::Script => "script",
        }
    }

    /// Parses the API spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "me" => Some(Scope::Me),
            "script" => Some(Scope::Script),
            _ => None,
        }
    }
}

/// What a snooze holds; the store assigns the id ([`Snooze`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnooze {
    /// The snoozed script.
    pub script_id: i64,
    /// Whose deliveries it silences.
    pub scope: Scope,
    /// The user who made it; for [`Scope::Me`] the silenced user.
    pub user_id: i64,
    /// Only this camera's occurrences, when set.
    pub camera_id: Option<String>,
    /// First `occurred_at` covered, unix ms (when the snooze was made).
    pub starts_at: i64,
    /// First `occurred_at` no longer covered, unix ms.
    pub until: i64,
}

impl NewSnooze {
    /// True when this snooze silences the delivery to `recipient` (a user id for pushes,
    /// `None` for Telegram and webhooks) of an occurrence on `camera` at `at_ms`.
    pub fn silences(&self, recipient: Option<i64>, camera: &str, at_ms: i64) -> bool {
        if at_ms < self.starts_at || at_ms >= self.until {
            return false;
        }
        if self.camera_id.as_deref().is_some_and(|c| c != camera) {
            return false;
        }
        match self.scope {
            Scope::Script => true,
            Scope::Me => recipient == Some(self.user_id),
        }
    }
}

/// One stored snooze: its row id (`snooze_id` in the API) and what it holds, whose fields
/// it shows directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snooze {
    /// Row id.
    pub id: i64,
    /// The snooze itself.
    pub spec: NewSnooze,
}

impl std::ops::Deref for Snooze {
    type Target = NewSnooze;

    fn deref(&self) -> &NewSnooze {
        &self.spec
    }
}

fn row(r: &Row) -> Result<Snooze, StoreError> {
    let scope: String = r.get(2)?;
    Ok(Snooze {
        id: r.get(0)?,
        spec: NewSnooze {
            script_id: r.get(1)?,
            // The CHECK constraint allows only the two spellings.
            scope: Scope::parse(&scope).unwrap_or(Scope::Script),
            user_id: r.get(3)?,
            camera_id: r.get(4)?,
            starts_at: r.get(5)?,
            until: r.get(6)?,
        },
    })
}

const COLUMNS: &str = "id, script_id, scope, user_id, camera_id, starts_at, until";

/// Stores a snooze and returns it with its id.
pub fn create(conn: &dyn Sql, new: &NewSnooze) -> Result<Snooze, StoreError> {
    let id = conn.query_value::<i64>(
        "INSERT INTO snoozes (script_id, scope, user_id, camera_id, starts_at, until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        args![
            new.script_id,
            new.scope.as_str(),
            new.user_id,
            &new.camera_id,
            new.starts_at,
            new.until
        ],
    )?;
    Ok(Snooze { id, spec: new.clone() })
}

/// The snoozes of one script that have not expired at `now_ms`, oldest first.
pub fn list_for_script(
    conn: &dyn Sql,
    script_id: i64,
    now_ms: i64,
) -> Result<Vec<Snooze>, StoreError> {
    conn.query(
        &format!("SELECT {COLUMNS} FROM snoozes WHERE script_id = ?1 AND until > ?2 ORDER BY id"),
        args![script_id, now_ms],
    )?
    .iter()
    .map(row)
    .collect()
}

/// Every snooze not expired at `now_ms`, by script then id (the daemon's cache, the CLI).
pub fn list_active(conn: &dyn Sql, now_ms: i64) -> Result<Vec<Snooze>, StoreError> {
    conn.query(
        &format!("SELECT {COLUMNS} FROM snoozes WHERE until > ?1 ORDER BY script_id, id"),
        args![now_ms],
    )?
    .iter()
    .map(row)
    .collect()
}

/// Deletes one snooze of one script; [`StoreError::NotFound`] when there is none.
pub fn delete(conn: &dyn Sql, script_id: i64, snooze_id: i64) -> Result<(), StoreError> {
    let n = conn.execute(
        "DELETE FROM snoozes WHERE id = ?1 AND script_id = ?2",
        args![snooze_id, script_id],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("snooze {snooze_id}")));
    }
    Ok(())
}

/// Deletes the snoozes that ended before `before_ms`; returns how many went.
pub fn purge_expired(conn: &dyn Sql, before_ms: i64) -> Result<usize, StoreError> {
    let n = conn.execute("DELETE FROM snoozes WHERE until <= ?1", args![before_ms])?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The change counter: differs after any insert, update or delete of a snooze.
pub fn version(conn: &dyn Sql) -> Result<i64, StoreError> {
    match conn.query_opt("SELECT version FROM snoozes_version WHERE id = 1", &[])? {
        Some(r) => r.get(0),
        None => Ok(0),
    }
}

/// The active snoozes in memory, grouped by script, for the intake and explain.
#[derive(Debug, Clone, Default)]
pub struct SnoozeSet {
    /// `snoozes_version` these were read at.
    pub version: i64,
    by_script: std::collections::HashMap<i64, Vec<Snooze>>,
}

impl SnoozeSet {
    /// Groups snoozes read at `version`.
    pub fn new(version: i64, snoozes: Vec<Snooze>) -> SnoozeSet {
        let mut by_script: std::collections::HashMap<i64, Vec<Snooze>> = Default::default();
        for s in snoozes {
            by_script.entry(s.script_id).or_default().push(s);
        }
        SnoozeSet { version, by_script }
    }

    /// Reads the active snoozes and the counter in one transaction's view.
    pub fn load(conn: &dyn Sql, now_ms: i64) -> Result<SnoozeSet, StoreError> {
        let version = version(conn)?;
        Ok(SnoozeSet::new(version, list_active(conn, now_ms)?))
    }

    /// The latest `until` among the snoozes silencing this delivery, or `None` when it is
    /// not snoozed. `recipient` is the user id of a push, `None` for Telegram and webhooks.
    pub fn snoozed_until(
        &self,
        script_id: i64,
        recipient: Option<i64>,
        camera: &str,
        at_ms: i64,
    ) -> Option<i64> {
        self.by_script
            .get(&script_id)?
            .iter()
            .filter(|s| s.silences(recipient, camera, at_ms))
            .map(|s| s.until)
            .max()
    }

    /// True when no snooze is held.
    pub fn is_empty(&self) -> bool {
        self.by_script.is_empty()
    }
}

/// Whether one recipient of a matched script gets a delivery, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientDecision {
    /// A delivery is made.
    Delivers,
    /// The recipient's account is disabled.
    UserDisabled,
    /// A snooze silences it until this instant (unix ms).
    SnoozedUntil(i64),
}

/// The one rule for "does this recipient of a matched script get a delivery": a disabled
/// user gets nothing, then snoozes apply. `user_disabled` is false for Telegram and
/// webhook recipients.
pub fn decide(
    snoozes: &SnoozeSet,
    script_id: i64,
    recipient: Option<i64>,
    user_disabled: bool,
    camera: &str,
    at_ms: i64,
) -> RecipientDecision {
    if user_disabled {
        return RecipientDecision::UserDisabled;
    }
    match snoozes.snoozed_until(script_id, recipient, camera, at_ms) {
        Some(until) => RecipientDecision::SnoozedUntil(until),
        None => RecipientDecision::Delivers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        super::super::migrations::in_memory()
    }

    fn new(scope: Scope, user: i64, camera: Option<&str>, until: i64) -> NewSnooze {
        NewSnooze {
            script_id: 7,
            scope,
            user_id: user,
            camera_id: camera.map(str::to_owned),
            starts_at: 1_000,
            until,
        }
    }

    #[test]
    fn scope_me_silences_only_its_user_and_camera_limits() {
        let conn = db();
        create(&conn, &new(Scope::Me, 1, Some("cam-a"), 5_000)).unwrap();
        let set = SnoozeSet::load(&conn, 0).unwrap();
        assert_eq!(set.snoozed_until(7, Some(1), "cam-a", 2_000), Some(5_000));
        assert_eq!(set.snoozed_until(7, Some(2), "cam-a", 2_000), None);
        assert_eq!(set.snoozed_until(7, None, "cam-a", 2_000), None);
        assert_eq!(set.snoozed_until(7, Some(1), "cam-b", 2_000), None);
        assert_eq!(set.snoozed_until(8, Some(1), "cam-a", 2_000), None);
        // By occurred_at: before the snooze was made, and at its end, not covered.
        assert_eq!(set.snoozed_until(7, Some(1), "cam-a", 999), None);
        assert_eq!(set.snoozed_until(7, Some(1), "cam-a", 5_000), None);
    }

    #[test]
    fn scope_script_silences_everyone_and_decide_puts_disabled_first() {
        let conn = db();
        create(&conn, &new(Scope::Script, 1, None, 5_000)).unwrap();
        let set = SnoozeSet::load(&conn, 0).unwrap();
        assert_eq!(
            decide(&set, 7, Some(2), false, "x", 2_000),
            RecipientDecision::SnoozedUntil(5_000)
        );
        assert_eq!(
            decide(&set, 7, None, false, "x", 2_000),
            RecipientDecision::SnoozedUntil(5_000)
        );
        assert_eq!(decide(&set, 7, Some(2), true, "x", 2_000), RecipientDecision::UserDisabled);
        assert_eq!(decide(&set, 7, Some(2), false, "x", 6_000), RecipientDecision::Delivers);
    }

    #[test]
    fn version_moves_on_change_delete_and_purge() {
        let conn = db();
        let v0 = version(&conn).unwrap();
        let a = create(&conn, &new(Scope::Me, 1, None, 5_000)).unwrap();
        create(&conn, &new(Scope::Me, 1, None, 9_000)).unwrap();
        let v1 = version(&conn).unwrap();
        assert_ne!(v0, v1);
        assert_eq!(list_for_script(&conn, 7, 6_000).unwrap().len(), 1);
        assert_eq!(purge_expired(&conn, 6_000).unwrap(), 1);
        assert!(matches!(delete(&conn, 7, a.id), Err(StoreError::NotFound(_))));
        let b = list_active(&conn, 0).unwrap();
        assert!(matches!(delete(&conn, 8, b[0].id), Err(StoreError::NotFound(_))));
        delete(&conn, 7, b[0].id).unwrap();
        assert_ne!(version(&conn).unwrap(), v1);
        assert!(SnoozeSet::load(&conn, 0).unwrap().is_empty());
    }
}
