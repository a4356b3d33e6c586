//! What the routes under `/scripts/{id}` share: the caller's permission and the script id
//! ([`ScriptRoute`]), and one transaction on the script when it is the caller's
//! ([`on_owned_script`]).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::store::sql::Sql;
use crate::store::{StoreError, scripts};

/// A route under `/scripts/{id}`: the caller, checked for `scripts.manage` when `MANAGE`
/// and for `scripts.view` otherwise (403), then the id from the path (anything but a
/// positive integer is 404, like a missing script), in that order.
#[derive(Debug, Clone)]
pub struct ScriptRoute<const MANAGE: bool> {
    /// The authenticated caller.
    pub caller: Caller,
    /// The script id.
    pub id: i64,
}

/// A route that reads a script (`scripts.view`).
pub type ViewScript = ScriptRoute<false>;
/// A route that changes a script (`scripts.manage`).
pub type ManageScript = ScriptRoute<true>;

impl<S: Send + Sync, const MANAGE: bool> FromRequestParts<S> for ScriptRoute<MANAGE> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthenticated)?;
        if MANAGE {
            caller.require_manage()?;
        } else {
            caller.require_view()?;
        }
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("Script"))?;
        let id = script_id(params.get("id").map_or("", String::as_str))?;
        Ok(ScriptRoute { caller, id })
    }
}

/// A script id from the path; anything that is not a positive integer is simply not found.
pub(super) fn script_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or(ApiError::NotFound("Script"))
}

/// Which transaction [`on_owned_script`] runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tx {
    /// Only reads.
    Read,
    /// A write transaction: the check and the write it guards cannot be separated by
    /// another writer.
    Write,
}

/// Runs `f` in one transaction on the blocking pool with the stored script when it is the
/// caller's; 404 (`Script`) when it is missing or outside the caller's reach. `f` answers
/// with an API error of its own where it has one (a 403 on a snooze, a 404 on another
/// resource); a database error rolls the transaction back.
pub(super) async fn on_owned_script<T: Send + 'static, const M: bool>(
    state: &AppState,
    route: ScriptRoute<M>,
    tx: Tx,
    f: impl FnOnce(&dyn Sql, &Caller, scripts::StoredScript) -> Result<Result<T, ApiError>, StoreError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    blocking(move || {
        let ScriptRoute { caller, id } = route;
        let run = |conn: &dyn Sql| match owned_script(conn, &caller, id)? {
            Some(script) => f(conn, &caller, script),
            None => Ok(Err(ApiError::NotFound("Script"))),
        };
        match tx {
            Tx::Read => store.read(run),
            Tx::Write => store.write(run),
        }?
    })
    .await
}

/// Runs `f` on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// The script `id` when the caller may see it; `None` when it is missing or not theirs.
pub(super) fn owned_script(
    conn: &dyn Sql,
    caller: &Caller,
    id: i64,
) -> Result<Option<scripts::StoredScript>, StoreError> {
    Ok(scripts::get(conn, id)?.filter(|s| caller.owns(s)))
}
