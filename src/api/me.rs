//! `GET /api/v1/me`: whose token this is. The caller's own user object (login, name,
//! permissions, as in CONTRACT's seed) plus its reach (itself and every user below it), for
//! the status page's header and for any client that wants to show who is signed in. Needs
//! no permission beyond a valid token, like the catalogs.

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::blocking;
use crate::store::users;

/// `{"data": {...user, "reach": [ids]}}`. The user was read for this request's
/// authentication; if it vanished since, the token no longer names anyone: 401.
pub async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let id = caller.user_id;
    let user = blocking(move || Ok(store.read(|tx| users::get(tx, id))?)).await?;
    let user = user.ok_or(ApiError::Unauthenticated)?;
    let mut data = serde_json::to_value(&user)
        .map_err(|e| ApiError::Internal(format!("user {id} as JSON: {e}")))?;
    if let Value::Object(map) = &mut data {
        map.insert("reach".into(), json!(caller.reach.to_vec()));
    }
    Ok(Json(json!({ "data": data })))
}
