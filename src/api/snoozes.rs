//! `POST/GET /scripts/{id}/snoozes` and `DELETE /scripts/{id}/snoozes/{snooze_id}`.
//!
//! A snooze is made on a script the caller can see (another account's script is 404).
//! Scope `me` silences the caller's own pushes and needs `scripts.view`; scope `script`
//! silences every delivery of the script and needs `scripts.manage`. The body gives either
//! `until` (RFC 3339, in the future) or `minutes` (1 to 10080); `camera_id` (a positive
//! integer) limits it to one camera. The intake picks a change up within a second.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Tx, ViewScript, on_owned_script};
use super::handlers::json_object;
use crate::script::validation::FieldErrors;
use crate::store::now_ms;
use crate::store::snoozes::{self, NewSnooze, Scope, Snooze};

/// The longest snooze `minutes` accepts: one week.
pub const MAX_MINUTES: i64 = 7 * 24 * 60;

fn view(s: &Snooze) -> Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    json!({
        "id": s.id,
        "script_id": s.script_id,
        "scope": s.scope.as_str(),
        "user_id": s.user_id,
        "camera_id": s.camera_id.as_deref().and_then(|c| c.parse::<i64>().ok()),
        "starts_at": time(s.starts_at),
        "until": time(s.until),
    })
}

/// Reads `scope`, `camera_id` and `until`/`minutes`; 422 naming each bad key.
fn parse(body: &Map<String, Value>, now: i64) -> Result<(Scope, Option<String>, i64), ApiError> {
    let mut errors = FieldErrors::new();
    let scope = match body.get("scope") {
        None => Some(Scope::Me),
        Some(Value::String(s)) => Scope::parse(s),
        Some(_) => None,
    };
    if scope.is_none() {
        errors.add("scope", "The scope must be me or script.");
    }
    let camera = match body.get("camera_id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|c| *c > 0) {
            Some(c) => Some(c.to_string()),
            None => {
                errors.add("camera_id", "The camera id must be a positive integer.");
                None
            }
        },
    };
    let until = match (body.get("until"), body.get("minutes")) {
        (Some(_), Some(_)) => {
            errors.add("until", "Give until or minutes, not both.");
            None
        }
        (None, None) => {
            errors.add("minutes", "The minutes or until field is required.");
            None
        }
        (None, Some(m)) => match m.as_i64().filter(|m| (1..=MAX_MINUTES).contains(m)) {
            Some(m) => Some(now + m * 60_000),
            None => {
                errors.add(
                    "minutes",
                    format!("The minutes must be an integer from 1 to {MAX_MINUTES}."),
                );
                None
            }
        },
        (Some(u), None) => {
            let t = u.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            match t.map(|t| t.timestamp_millis()) {
                Some(t) if t > now && t <= now + MAX_MINUTES * 60_000 => Some(t),
                _ => {
                    errors.add("until", "The until must be an RFC 3339 time within the next week.");
                    None
                }
            }
        }
    };
    match (scope, until) {
        (Some(scope), Some(until)) if errors.is_empty() => Ok((scope, camera, until)),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// `POST /scripts/{id}/snoozes`: 201 with the snooze.
pub async fn create(
    State(state): State<AppState>,
    route: ViewScript,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_object(&headers, body)?;
    let now = now_ms();
    let snooze = on_owned_script(&state, route, Tx::Write, move |tx, caller, script| {
        let (scope, camera_id, until) = match parse(&body, now) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if scope == Scope::Script && !caller.manage {
            return Ok(Err(ApiError::Forbidden));
        }
        let new = NewSnooze {
            script_id: script.id,
            scope,
            user_id: caller.user_id,
            camera_id,
            starts_at: now,
            until,
        };
        snoozes::create(tx, &new).map(Ok)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "data": view(&snooze) }))).into_response())
}

/// `GET /scripts/{id}/snoozes`: the script's snoozes that have not ended.
pub async fn list(
    State(state): State<AppState>,
    route: ViewScript,
) -> Result<Json<Value>, ApiError> {
    let list = on_owned_script(&state, route, Tx::Read, |tx, _, script| {
        snoozes::list_for_script(tx, script.id, now_ms()).map(Ok)
    })
    .await?;
    Ok(Json(json!({ "data": list.iter().map(view).collect::<Vec<_>>() })))
}

/// `DELETE /scripts/{id}/snoozes/{snooze_id}`: 204. A `me` snooze may be removed by its
/// maker; a `script` snooze, or another user's, needs `scripts.manage`.
pub async fn destroy(
    State(state): State<AppState>,
    route: ViewScript,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let snooze_id = params
        .get("snooze_id")
        .and_then(|raw| raw.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or(ApiError::NotFound("Snooze"))?;
    on_owned_script(&state, route, Tx::Write, move |tx, caller, script| {
        let all = snoozes::list_for_script(tx, script.id, i64::MIN)?;
        let Some(s) = all.iter().find(|s| s.id == snooze_id) else {
            return Ok(Err(ApiError::NotFound("Snooze")));
        };
        let own = s.scope == Scope::Me && s.user_id == caller.user_id;
        if !own && !caller.manage {
            return Ok(Err(ApiError::Forbidden));
        }
        snoozes::delete(tx, script.id, snooze_id).map(Ok)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
