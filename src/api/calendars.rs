//! `/api/v1/calendars`: holiday calendars, owned like scripts (CONTRACT §12, §8).
//!
//! Reading needs `scripts.view`, changing `scripts.manage` (403 otherwise); a calendar whose
//! owner is outside the caller's reach is answered exactly like a missing one (404
//! `{"message": "Calendar not found."}`). Every write rebuilds the live snapshot before the
//! answer goes out, so the next occurrence sees the change. Deleting a calendar that a
//! script lists is a 409 naming the scripts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::blocking;
use super::handlers::{json_object, reload_after_write};
use crate::script::calendar::{MAX_DATES, validate_calendar};
use crate::script::validation::FieldErrors;
use crate::store::calendars::{self, StoredCalendar};
use crate::store::{StoreError, scripts};
use crate::timetable::ical::import_dates;

/// The fields a body may set.
const FIELDS: [&str; 3] = ["name", "timezone", "dates"];

fn calendar_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or(ApiError::NotFound("Calendar"))
}

/// The calendar `id` when the caller may see it.
fn owned(
    conn: &dyn crate::store::sql::Sql,
    caller: &Caller,
    id: i64,
) -> Result<Option<StoredCalendar>, StoreError> {
    Ok(calendars::get(conn, id)?.filter(|c| caller.reaches_owner(c.owner_id)))
}

/// `POST /calendars`: 201 with the calendar.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_manage()?;
    let body = json_object(&headers, body)?;
    let input = validate_calendar(&body, state.live.timezone())?;
    let store = state.store.clone();
    let view = blocking(move || {
        Ok(store.write(|tx| {
            let id = calendars::insert(tx, &input, Some(caller.user_id))?;
            calendars::get(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("calendar {id}")))
        })?)
    })
    .await?;
    reload_after_write(&state).await;
    Ok((StatusCode::CREATED, Json(view.to_json())).into_response())
}

/// `GET /calendars`: `{"data": [...]}`, the calendars in the caller's reach by id.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.require_view()?;
    let store = state.store.clone();
    let data = blocking(move || {
        let all = store.read(|tx| calendars::all(tx))?;
        Ok(all
            .iter()
            .filter(|c| caller.reaches_owner(c.owner_id))
            .map(StoredCalendar::to_json)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({ "data": data })))
}

/// `GET /calendars/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_view()?;
    let id = calendar_id(&id)?;
    let store = state.store.clone();
    let found = blocking(move || Ok(store.read(|tx| owned(tx, &caller, id))?)).await?;
    found.map(|c| Json(c.to_json())).ok_or(ApiError::NotFound("Calendar"))
}

/// `PUT /calendars/{id}` replaces the fields (a missing `timezone` takes the setting);
/// `PATCH` changes only those given.
pub async fn update(
    method: Method,
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_manage()?;
    let id = calendar_id(&id)?;
    let mut body = json_object(&headers, body)?;
    let (store, tz) = (state.store.clone(), state.live.timezone());
    let view = blocking(move || {
        store.write(|tx| {
            let Some(current) = owned(tx, &caller, id)? else {
                return Ok(Err(ApiError::NotFound("Calendar")));
            };
            if method == Method::PATCH {
                let mut merged = match current.to_json() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged.retain(|k, _| FIELDS.contains(&k.as_str()));
                for key in FIELDS {
                    if let Some(v) = body.remove(key) {
                        merged.insert(key.to_owned(), v);
                    }
                }
                body = merged;
            }
            let input = validate_calendar(&body, tz).map_err(StoreError::Invalid)?;
            calendars::update(tx, id, &input)?;
            Ok(calendars::get(tx, id)?.ok_or(ApiError::NotFound("Calendar")))
        })?
    })
    .await?;
    reload_after_write(&state).await;
    Ok(Json(view.to_json()))
}

/// `DELETE /calendars/{id}`: 204, or 409 naming the scripts that use it.
pub async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_manage()?;
    let id = calendar_id(&id)?;
    let store = state.store.clone();
    let answer = blocking(move || {
        Ok(store.write(|tx| {
            if owned(tx, &caller, id)?.is_none() {
                return Ok(Err(ApiError::NotFound("Calendar")));
            }
            let users = calendars::scripts_using(tx, id)?;
            if users.is_empty() {
                calendars::delete(tx, id)?;
                return Ok(Ok(None));
            }
            // Scripts outside the caller's reach are counted, not named.
            let mut named = Vec::new();
            for sid in &users {
                if scripts::get(tx, *sid)?.is_some_and(|s| caller.owns(&s)) {
                    named.push(*sid);
                }
            }
            Ok(Ok(Some((named, users.len()))))
        })?)
    })
    .await??;
    match answer {
        None => {
            reload_after_write(&state).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Some((named, total)) => {
            let list = named.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            let others = total - named.len();
            let mut message = format!("The calendar is used by scripts {list}");
            if named.is_empty() {
                message = format!("The calendar is used by {others} scripts outside your reach");
            } else if others > 0 {
                message.push_str(&format!(" and {others} scripts outside your reach"));
            }
            message.push_str("; remove it from their timetable.holidays.calendars first.");
            let body = json!({"message": message, "scripts": named});
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
    }
}

/// `POST /calendars/{id}/import` with an iCalendar file (`Content-Type: text/calendar`):
/// the calendar with `"added"`, the number of dates added.
pub async fn import(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_manage()?;
    let id = calendar_id(&id)?;
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::TooLarge),
        Err(r) => {
            return Err(ApiError::field(
                "body",
                format!("The request body could not be read: {r}."),
            ));
        }
    };
    let mime = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    if mime.split(';').next().unwrap_or("").trim() != "text/calendar" {
        return Err(ApiError::field(
            "body",
            "The request body must be an iCalendar file (Content-Type: text/calendar).",
        ));
    }
    let store = state.store.clone();
    let answer = blocking(move || {
        let text =
            std::str::from_utf8(&body).map_err(|_| ApiError::field("file", "is not UTF-8 text"))?;
        let today = chrono::Utc::now().date_naive();
        let dates = import_dates(text, today)?;
        Ok(store.write(|tx| {
            if owned(tx, &caller, id)?.is_none() {
                return Ok(Err(ApiError::NotFound("Calendar")));
            }
            let Some((cal, added)) = calendars::add_dates(tx, id, &dates)? else {
                return Ok(Err(ApiError::NotFound("Calendar")));
            };
            if cal.input.dates.len() > MAX_DATES {
                return Err(StoreError::Invalid(FieldErrors::single(
                    "file",
                    format!(
                        "would give the calendar {} dates; at most {MAX_DATES} are kept",
                        cal.input.dates.len()
                    ),
                )));
            }
            Ok(Ok((cal, added)))
        })?)
    })
    .await??;
    reload_after_write(&state).await;
    let (cal, added) = answer;
    let mut view = cal.to_json();
    if let Value::Object(m) = &mut view {
        m.insert("added".into(), added.into());
    }
    Ok(Json(view))
}
