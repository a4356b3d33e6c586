//! Users (the VMS accounts that receive reactions), their permissions, and the sub-user
//! walk used to expand recipients.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use super::sql::{Dialect, Row, Sql};
use super::{StoreError, now_text};
use crate::args;
use crate::script::validation::FieldErrors;

/// A permission granted to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    /// Permission id.
    pub id: i64,
    /// Inner key.
    pub name: String,
    /// Human-readable name.
    pub display_name: String,
}

/// The seed's full user object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Login (unique).
    pub login: String,
    /// Display name.
    pub name: String,
    /// The parent account, for sub-users.
    pub parent_id: Option<i64>,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_at: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub updated_at: String,
    /// How often the client polls, in seconds.
    pub online_request_interval: i64,
    /// Public id of the user's latest API token (never the token).
    pub access_token_id: Option<String>,
    /// Whether the user may change their password.
    pub can_update_password: bool,
    /// Disabled by `scriptd users disable`: its tokens are refused and it gets no pushes.
    /// Not part of the API's user object.
    #[serde(skip)]
    pub disabled: bool,
}

/// What `scriptd users add` takes.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Explicit id, or the next free one.
    pub id: Option<i64>,
    /// Login (unique).
    pub login: String,
    /// Display name.
    pub name: String,
    /// Parent account (must exist).
    pub parent_id: Option<i64>,
    /// Permission names to grant (must exist in the permissions table).
    pub permissions: Vec<String>,
}

/// Adds a user and returns its id. On PostgreSQL an explicit id also moves the `users`
/// identity sequence past the largest id, so users added later without one do not collide.
pub fn add(conn: &dyn Sql, new: &NewUser) -> Result<i64, StoreError> {
    let mut errors = FieldErrors::new();
    if new.login.trim().is_empty() {
        errors.add("login", "must not be empty");
    } else if exists_login(conn, &new.login)? {
        errors.add("login", "is already taken");
    }
    if new.name.trim().is_empty() {
        errors.add("name", "must not be empty");
    }
    if let Some(id) = new.id {
        if id <= 0 {
            errors.add("id", "must be a positive integer");
        } else if exists(conn, id)? {
            errors.add("id", "is already taken");
        }
    }
    if let Some(parent) = new.parent_id
        && !exists(conn, parent)?
    {
        errors.add("parent_id", format!("user {parent} does not exist"));
    }
    let mut permission_ids = Vec::new();
    for (i, p) in new.permissions.iter().enumerate() {
        let id = conn.query_opt("SELECT id FROM permissions WHERE name = ?1", args![p])?;
        match id {
            Some(row) => permission_ids.push(row.get::<i64>(0)?),
            None => errors.add(format!("permissions.{i}"), format!("unknown permission {p:?}")),
        }
    }
    if !errors.is_empty() {
        return Err(StoreError::Invalid(errors));
    }
    let now = now_text();
    let id = match new.id {
        // An explicit NULL id is refused by a PostgreSQL identity column: leave it out.
        None => conn.query_value::<i64>(
            "INSERT INTO users (login, name, parent_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
            args![&new.login, &new.name, new.parent_id, &now],
        )?,
        Some(id) => {
            let id = conn.query_value::<i64>(
                "INSERT INTO users (id, login, name, parent_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                args![id, &new.login, &new.name, new.parent_id, &now],
            )?;
            if conn.dialect() == Dialect::Postgres {
                super::postgres::sync::follow_explicit_ids(conn, "users")?;
            }
            id
        }
    };
    for pid in permission_ids {
        conn.execute(
            "INSERT INTO user_permissions (user_id, permission_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            args![id, pid],
        )?;
    }
    Ok(id)
}

/// True when a user with this id exists.
pub fn exists(conn: &dyn Sql, id: i64) -> Result<bool, StoreError> {
    conn.query_value::<bool>("SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)", args![id])
}

fn exists_login(conn: &dyn Sql, login: &str) -> Result<bool, StoreError> {
    conn.query_value::<bool>("SELECT EXISTS(SELECT 1 FROM users WHERE login = ?1)", args![login])
}

/// Every user id.
pub fn all_ids(conn: &dyn Sql) -> Result<HashSet<i64>, StoreError> {
    Ok(conn.query_column::<i64>("SELECT id FROM users", &[])?.into_iter().collect())
}

/// Every user's parent: `user id → parent id` (for [`descendants`]).
pub fn parents(conn: &dyn Sql) -> Result<HashMap<i64, Option<i64>>, StoreError> {
    conn.query("SELECT id, parent_id FROM users", &[])?
        .iter()
        .map(|r| Ok((r.get::<i64>(0)?, r.get::<Option<i64>>(1).ok().flatten())))
        .collect()
}

/// The reach of `user_id`: the user and every user below it (`parent_id` chains, any
/// depth), ascending. Cycles in hand-edited data end the walk; an unknown id reaches only
/// itself.
pub fn reach(conn: &dyn Sql, user_id: i64) -> Result<Vec<i64>, StoreError> {
    // The cast types the seed row as an id on PostgreSQL (an untyped parameter alone
    // would be text there).
    conn.query_column::<i64>(
        "WITH RECURSIVE reach(id) AS (
           SELECT CAST(?1 AS BIGINT)
           UNION SELECT u.id FROM users u JOIN reach r ON u.parent_id = r.id)
         SELECT id FROM reach ORDER BY id",
        args![user_id],
    )
}

/// The names of the permissions granted to `user_id`.
pub fn permission_names(conn: &dyn Sql, user_id: i64) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .query(
            "SELECT p.name FROM user_permissions up JOIN permissions p ON p.id = up.permission_id
             WHERE up.user_id = ?1 ORDER BY p.id",
            args![user_id],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect())
}

/// The ids of the disabled users.
pub fn disabled_ids(conn: &dyn Sql) -> Result<HashSet<i64>, StoreError> {
    Ok(conn.query_column::<i64>("SELECT id FROM users WHERE disabled", &[])?.into_iter().collect())
}

/// Disables a user: its tokens are refused from now on and it gets no more pushes (the
/// running daemon notices within a second). [`StoreError::NotFound`] when there is none.
pub fn disable(conn: &dyn Sql, id: i64) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE users SET disabled = TRUE, updated_at = ?2 WHERE id = ?1",
        args![id, now_text()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {id}")));
    }
    Ok(())
}

/// Every user with permissions, by id (`scriptd users list`).
pub fn list(conn: &dyn Sql) -> Result<Vec<User>, StoreError> {
    let ids = conn.query_column::<i64>("SELECT id FROM users ORDER BY id", &[])?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(u) = get(conn, id)? {
            out.push(u);
        }
    }
    Ok(out)
}

/// One user with permissions, or `None`.
pub fn get(conn: &dyn Sql, id: i64) -> Result<Option<User>, StoreError> {
    let row = conn.query_opt(
        "SELECT id, login, name, parent_id, created_at, updated_at, online_request_interval,
                access_token_id, can_update_password, disabled
         FROM users WHERE id = ?1",
        args![id],
    )?;
    let Some(r) = row else { return Ok(None) };
    let mut user = user_of(&r)?;
    user.permissions = conn
        .query(
            "SELECT p.id, p.name, p.display_name FROM user_permissions up
             JOIN permissions p ON p.id = up.permission_id WHERE up.user_id = ?1 ORDER BY p.id",
            args![id],
        )?
        .iter()
        .map(|r| Ok(Permission { id: r.get(0)?, name: r.text(1), display_name: r.text(2) }))
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(user))
}

/// A row of [`get`]'s user query, without permissions; tolerant of hand-edited columns.
fn user_of(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.get(0)?,
        login: r.text(1),
        name: r.text(2),
        parent_id: r.get::<Option<i64>>(3).ok().flatten(),
        permissions: Vec::new(),
        created_at: r.text(4),
        updated_at: r.text(5),
        online_request_interval: r.get::<i64>(6).unwrap_or(100),
        access_token_id: r.get::<Option<String>>(7).ok().flatten(),
        can_update_password: r.truthy(8),
        disabled: r.truthy(9),
    })
}

/// The given users and every sub-user below them (`parent_id` chains, any depth),
/// breadth-first, each user once, in first-seen order. Ids absent from `parents` are kept
/// (they are the caller's); cycles in hand-edited data end the walk instead of looping.
pub fn descendants(parents: &HashMap<i64, Option<i64>>, user_ids: &[i64]) -> Vec<i64> {
    let mut children: HashMap<i64, Vec<i64>> = HashMap::new();
    for (&id, &parent) in parents {
        if let Some(p) = parent {
            children.entry(p).or_default().push(id);
        }
    }
    for list in children.values_mut() {
        list.sort_unstable();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut queue: VecDeque<i64> = user_ids.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        out.push(id);
        if let Some(kids) = children.get(&id) {
            queue.extend(kids.iter().copied().filter(|k| !seen.contains(k)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(pairs: &[(i64, Option<i64>)]) -> HashMap<i64, Option<i64>> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn descendants_walk_breadth_first_each_once() {
        let p = tree(&[(1, None), (2, Some(1)), (3, Some(1)), (4, Some(2)), (5, None)]);
        assert_eq!(descendants(&p, &[1]), vec![1, 2, 3, 4]);
        assert_eq!(descendants(&p, &[2, 1]), vec![2, 1, 4, 3]);
        assert_eq!(descendants(&p, &[5]), vec![5]);
    }

    #[test]
    fn descendants_survive_cycles() {
        let p = tree(&[(1, Some(3)), (2, Some(1)), (3, Some(2)), (4, Some(4))]);
        assert_eq!(descendants(&p, &[1]), vec![1, 2, 3]);
        assert_eq!(descendants(&p, &[4]), vec![4]);
    }
}
