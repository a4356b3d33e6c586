//! `POST /explain` and `GET /occurrences/{id}` (CONTRACT §10): why an occurrence fires a
//! script or not, and what was delivered for a real one. Both need `scripts.view` and show
//! only scripts (and their deliveries) whose owner is in the caller's reach. The decisions
//! are [`crate::intake::explain`]'s, which asks the intake's own index and rules.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::blocking;
use super::handlers::json_object;
use crate::intake::explain::{self, Question, ScriptVerdict};
use crate::live::Snapshot;
use crate::script::validation::FieldErrors;
use crate::store::{deliveries, scripts};

/// Reads `event_id` or `event`, `camera_id` and `occurred_at` (default: now); 422 naming
/// each bad key. An event id or name not in the catalog is a 422 on `event_id`/`event`.
pub fn question(
    body: &Map<String, Value>,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> Result<Question, FieldErrors> {
    let mut errors = FieldErrors::new();
    let event_id = match (body.get("event_id"), body.get("event")) {
        (Some(v), _) if !v.is_null() => match v.as_i64().filter(|id| *id > 0) {
            Some(id) if snap.events.contains_key(&id) => Some(id),
            Some(_) => {
                errors.add("event_id", "The selected event id is invalid.");
                None
            }
            None => {
                errors.add("event_id", "The event id must be a positive integer.");
                None
            }
        },
        (_, Some(Value::String(name))) => {
            let found = snap.events.values().find(|e| e.name == *name).map(|e| e.id);
            if found.is_none() {
                errors.add("event", "The selected event is invalid.");
            }
            found
        }
        (_, Some(v)) if !v.is_null() => {
            errors.add("event", "The event must be an event name (a string).");
            None
        }
        _ => {
            errors.add("event_id", "The event id field is required when event is not present.");
            None
        }
    };
    let camera_id = match body.get("camera_id") {
        None | Some(Value::Null) => {
            errors.add("camera_id", "The camera id field is required.");
            None
        }
        Some(v) => {
            let id = v.as_i64().filter(|id| *id > 0);
            if id.is_none() {
                errors.add("camera_id", "The camera id must be a positive integer.");
            }
            id
        }
    };
    let at = match body.get("occurred_at") {
        None | Some(Value::Null) => Some(now),
        Some(v) => {
            let t = v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
            if t.is_none() {
                errors.add("occurred_at", "The occurred at must be an RFC 3339 date and time.");
            }
            t.map(|t| t.with_timezone(&Utc))
        }
    };
    match (event_id, camera_id, at) {
        (Some(event_id), Some(camera_id), Some(at)) if errors.is_empty() => {
            Ok(Question { event_id, camera_id, at, occurrence_id: None })
        }
        _ => Err(errors),
    }
}

fn meta(q: &Question) -> Value {
    json!({
        "event_id": q.event_id,
        "camera_id": q.camera_id,
        "occurred_at": q.at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

fn verdicts_json(v: &[ScriptVerdict]) -> Vec<Value> {
    v.iter().map(ScriptVerdict::to_json).collect()
}

/// `POST /explain`: `{"data": [verdict per script], "meta": {event_id, camera_id,
/// occurred_at}}`.
pub async fn explain(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_view()?;
    let body = json_object(&headers, body)?;
    let snap = state.live.load();
    let q = question(&body, &snap, Utc::now()).map_err(ApiError::Validation)?;
    let (store, tz) = (state.store.clone(), state.live.timezone());
    let meta = meta(&q);
    let verdicts = blocking(move || {
        Ok(store.read(|tx| {
            let st = explain::State::load(tx, q.at.timestamp_millis())?;
            explain::explain(tx, &snap, tz, &st, &q, |owner| caller.reaches_owner(owner))
        })?)
    })
    .await?;
    Ok(Json(json!({ "data": verdicts_json(&verdicts), "meta": meta })))
}

/// `GET /occurrences/{id}`: the deliveries made for the occurrence (of scripts in the
/// caller's reach) and the explanation at its `occurred_at`; 404 when none is known.
pub async fn occurrence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_view()?;
    let snap = state.live.load();
    let (store, tz) = (state.store.clone(), state.live.timezone());
    let body = blocking(move || {
        let found = store.read(|tx| {
            let mut made = Vec::new();
            for d in deliveries::of_occurrence(tx, &id)? {
                let owner = match scripts::get(tx, d.script_id)? {
                    Some(s) => s.owner_id,
                    None => scripts::deleted_owner(tx, d.script_id)?,
                };
                if caller.reaches_owner(owner) {
                    made.push(d);
                }
            }
            // The occurrence's fields are in every push payload made for it.
            let Some(first) = made.iter().find_map(|d| {
                let p: Value = serde_json::from_str(&d.payload).ok()?;
                let at = DateTime::parse_from_rfc3339(p.get("occurred_at")?.as_str()?).ok()?;
                Some(Question {
                    event_id: p.pointer("/event/id")?.as_i64()?,
                    camera_id: p.get("camera_id")?.as_i64()?,
                    at: at.with_timezone(&Utc),
                    occurrence_id: Some(id.clone()),
                })
            }) else {
                return Ok(None);
            };
            let st = explain::State::load(tx, first.at.timestamp_millis())?;
            let verdicts =
                explain::explain(tx, &snap, tz, &st, &first, |owner| caller.reaches_owner(owner))?;
            let deliveries: Vec<Value> = made
                .iter()
                .map(|d| {
                    let mut v = serde_json::to_value(&d.view).unwrap_or(Value::Null);
                    v["script_id"] = json!(d.script_id);
                    v
                })
                .collect();
            let mut data = meta(&first);
            data["occurrence_id"] = json!(id);
            data["deliveries"] = Value::Array(deliveries);
            data["explanation"] = Value::Array(verdicts_json(&verdicts));
            Ok(Some(data))
        })?;
        found.ok_or(ApiError::NotFound("Occurrence"))
    })
    .await?;
    Ok(Json(json!({ "data": body })))
}
