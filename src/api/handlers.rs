//! Route handlers: scripts CRUD, catalogs, deliveries.
//!
//! Each handler does its database work in one blocking task: writes in one write
//! transaction (see [`crate::store::Db::write`]) that validates against the catalogs and users it reads, so a check and the
//! write it guards cannot be separated by another writer. After a write the live snapshot
//! is rebuilt before the answer goes out.
//!
//! Authorization ([`Caller`]): the permission first (403), then ownership: a script whose
//! owner is outside the caller's reach is answered exactly like a missing one (404), and
//! the `users` of a body must lie in the reach (422 on `users.N`, the same answer as for a
//! user that does not exist, so ids of other accounts are not revealed).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ManageScript, Tx, ViewScript, blocking, on_owned_script};
use crate::script::validation::FieldErrors;
use crate::script::view::Viewer;
use crate::script::{Lookups, validate};
use crate::store::sql::Sql;
use crate::store::{StoreError, catalog, deliveries, scripts};

/// Default and largest page sizes of `GET /scripts`.
pub const PER_PAGE_DEFAULT: u64 = 15;
/// Largest `per_page`; larger values are clamped.
pub const PER_PAGE_MAX: u64 = 100;
/// Default and largest `limit` of `GET /scripts/{id}/deliveries`.
pub const DELIVERIES_DEFAULT: u32 = 50;
/// Largest `limit`; larger values are clamped.
pub const DELIVERIES_MAX: u32 = 500;

/// The fields a body may set; everything else is ignored.
const FIELDS: [&str; 8] =
    ["title", "event_id", "reaction_id", "status", "cameras", "users", "timetable", "extra"];

/// The request body as a JSON object, or a 422 that says why not (413 when too large).
pub(super) fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::TooLarge);
        }
        Err(rejection) => {
            return Err(ApiError::field(
                "body",
                format!("The request body could not be read: {rejection}."),
            ));
        }
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or("").trim().to_owned();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::field(
                "body",
                format!(
                    "The request body must be JSON (Content-Type: application/json), not {mime:?}."
                ),
            ));
        }
    }
    match crate::script::validation::parse_json_strict(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field("body", "The request body must be a JSON object.")),
        Err(e) => Err(ApiError::field("body", format!("The request body is not valid JSON: {e}."))),
    }
}

/// A positive integer query parameter, or a 422 on its key.
fn positive(query: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, ApiError> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => {
            v.trim().parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::field(key, format!("The {key} must be a positive integer."))
            })
        }
    }
}

/// The catalogs, and as "existing users" and calendars only those in the caller's reach
/// (a calendar elsewhere is answered like a missing one on `timetable.holidays.calendars.N`).
fn lookups_for(conn: &dyn Sql, caller: &Caller) -> Result<Lookups, StoreError> {
    let mut lookups = Lookups::load(conn)?;
    lookups.users.retain(|u| caller.reaches(*u));
    let owners = crate::store::calendars::owners(conn)?;
    lookups.calendars.retain(|id, _| caller.reaches_owner(owners.get(id).copied().flatten()));
    Ok(lookups)
}

/// Rebuilds the live snapshot after an API write (scripts, calendars), so the next
/// occurrence sees it; on failure the watcher picks the change up on its next look.
pub(super) async fn reload_after_write(state: &AppState) {
    if let Err(e) = state.live.reload().await {
        tracing::error!(error = %e, "reloading scripts after an API write failed; the watcher will retry");
    }
}

/// `POST /scripts`: 201 with the created script.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_manage()?;
    let body = json_object(&headers, body)?;
    let (store, tz) = (state.store.clone(), state.live.timezone());
    let view = blocking(move || {
        Ok(store.write(|tx| {
            let lookups = lookups_for(tx, &caller)?;
            let valid = validate(&body, &lookups.context(tz)).map_err(StoreError::Invalid)?;
            let id = scripts::insert_owned(tx, None, Some(caller.user_id), &valid.input)?;
            let stored = scripts::get(tx, id)?
                .ok_or_else(|| StoreError::NotFound(format!("script {id}")))?;
            Viewer::new(tx, &lookups, tz).for_caller(caller.user_id).script(&stored)
        })?)
    })
    .await?;
    reload_after_write(&state).await;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /scripts?page=&per_page=&status=&event_id=&reaction_id=&camera_id=&q=`:
/// `{"data": [...], "meta": {...}}`; the filters narrow the list, the count and `last_page`.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_view()?;
    let mut errors = FieldErrors::new();
    let page = positive(&query, "page", 1).map_err(|e| merge_into(&mut errors, e)).unwrap_or(1);
    let per_page = positive(&query, "per_page", PER_PAGE_DEFAULT)
        .map_err(|e| merge_into(&mut errors, e))
        .unwrap_or(PER_PAGE_DEFAULT)
        .min(PER_PAGE_MAX);
    let filter = filter(&query, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (store, tz) = (state.store.clone(), state.live.timezone());
    let body = blocking(move || {
        Ok(store.read(|tx| {
            let lookups = Lookups::load(tx)?;
            let offset = (page - 1).saturating_mul(per_page);
            let (rows, total) =
                scripts::page_owned_by(tx, &caller.reach, &filter, offset, per_page)?;
            let mut viewer = Viewer::new(tx, &lookups, tz).for_caller(caller.user_id);
            let data = rows.iter().map(|s| viewer.script(s)).collect::<Result<Vec<_>, _>>()?;
            let last_page = total.div_ceil(per_page).max(1);
            Ok(json!({
                "data": data,
                "meta": {"current_page": page, "per_page": per_page, "total": total, "last_page": last_page}
            }))
        })?)
    })
    .await?;
    Ok(Json(body))
}

/// The list filters of `GET /scripts`: `status` (`active`/`disabled`), `event_id`,
/// `reaction_id`, `camera_id` (positive integers) and `q` (text in the title); each bad
/// one is added to `errors` under its key.
fn filter(query: &HashMap<String, String>, errors: &mut FieldErrors) -> scripts::Filter {
    let mut id = |key: &str| {
        let v = query.get(key)?;
        let id = v.trim().parse::<i64>().ok().filter(|n| *n >= 1);
        if id.is_none() {
            errors.add(key, format!("The {} must be a positive integer.", key.replace('_', " ")));
        }
        id
    };
    let (event_id, reaction_id, camera_id) = (id("event_id"), id("reaction_id"), id("camera_id"));
    let enabled = match query.get("status").map(|s| s.trim()) {
        None => None,
        Some("active") => Some(true),
        Some("disabled") => Some(false),
        Some(_) => {
            errors.add("status", "The status must be active or disabled.");
            None
        }
    };
    let title = query.get("q").map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
    scripts::Filter { enabled, event_id, reaction_id, camera_id, title }
}

fn merge_into(errors: &mut FieldErrors, e: ApiError) {
    if let ApiError::Validation(fe) = e {
        errors.merge(fe);
    }
}

/// `GET /scripts/{id}`.
pub async fn show(
    State(state): State<AppState>,
    route: ViewScript,
) -> Result<Json<Value>, ApiError> {
    let tz = state.live.timezone();
    let view = on_owned_script(&state, route, Tx::Read, move |tx, caller, script| {
        let lookups = Lookups::load(tx)?;
        Viewer::new(tx, &lookups, tz).for_caller(caller.user_id).script(&script).map(Ok)
    })
    .await?;
    Ok(Json(view))
}

/// `PUT /scripts/{id}` replaces every field and is validated like `POST`; `PATCH`
/// changes only the fields given, and the merged script must be valid.
pub async fn update(
    method: Method,
    State(state): State<AppState>,
    route: ManageScript,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut body = json_object(&headers, body)?;
    let patch = method == Method::PATCH;
    write_script(state, route, move |current| {
        if patch {
            let mut merged = current.clone();
            for key in FIELDS {
                if let Some(v) = body.remove(key) {
                    merged.insert(key.to_owned(), v);
                }
            }
            body = merged;
        } else if !body.contains_key("cameras")
            && let Some(c) = current.get("cameras")
        {
            // A PUT without `cameras` keeps the stored filter (clients written against the
            // seed's object, which has no `cameras`, must not widen a script to every
            // camera by accident); `"cameras": null` clears it.
            body.insert("cameras".to_owned(), c.clone());
        }
        keep_masked_secrets(&mut body, current);
        body
    })
    .await
}

/// A secret sent back as the mask a caller was shown keeps its stored value.
fn keep_masked_secrets(body: &mut Map<String, Value>, current: &Map<String, Value>) {
    let (Some(Value::Object(extra)), Some(Value::Object(stored))) =
        (body.get_mut("extra"), current.get("extra"))
    else {
        return;
    };
    for key in crate::script::view::SECRET_KEYS {
        if extra.get(key).and_then(Value::as_str) == Some(crate::secret::MASK)
            && let Some(v) = stored.get(key)
        {
            extra.insert(key.to_owned(), v.clone());
        }
    }
}

/// Writes the body `new_body` makes of the stored one, validated, and answers with the
/// script as stored.
async fn write_script(
    state: AppState,
    route: ManageScript,
    new_body: impl FnOnce(&Map<String, Value>) -> Map<String, Value> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let tz = state.live.timezone();
    let view = on_owned_script(&state, route, Tx::Write, move |tx, caller, current| {
        let id = current.id;
        let body = new_body(&current.body);
        // A PATCH that leaves an undecodable column alone still has to fix it.
        let mut unfixed = FieldErrors::new();
        for path in current.decode_errors.paths() {
            if body.get(path) == current.body.get(path) {
                for reason in current.decode_errors.get(path).unwrap_or_default() {
                    unfixed.add(path, reason.clone());
                }
            }
        }
        if !unfixed.is_empty() {
            return Err(StoreError::Invalid(unfixed));
        }
        let mut lookups = lookups_for(tx, caller)?;
        if let Some(owner) = current.owner_id.filter(|&o| o != caller.user_id) {
            // The script lists calendars in its owner's reach, not the caller's.
            let reach =
                crate::store::users::descendants(&crate::store::users::parents(tx)?, &[owner]);
            let owners = crate::store::calendars::owners(tx)?;
            lookups.calendars.retain(|cid, _| {
                owners.get(cid).copied().flatten().is_some_and(|o| reach.contains(&o))
            });
        }
        let valid = validate(&body, &lookups.context(tz)).map_err(StoreError::Invalid)?;
        scripts::update(tx, id, &valid.input)?;
        let stored =
            scripts::get(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("script {id}")))?;
        Viewer::new(tx, &lookups, tz).for_caller(caller.user_id).script(&stored).map(Ok)
    })
    .await?;
    reload_after_write(&state).await;
    Ok(Json(view))
}

/// `DELETE /scripts/{id}`: 204.
pub async fn destroy(
    State(state): State<AppState>,
    route: ManageScript,
) -> Result<StatusCode, ApiError> {
    on_owned_script(&state, route, Tx::Write, |tx, _, script| {
        scripts::delete(tx, script.id).map(Ok)
    })
    .await?;
    reload_after_write(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /events`: `{"data": [...]}`.
pub async fn events(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let list = blocking(move || Ok(store.read(|tx| catalog::events(tx))?)).await?;
    Ok(Json(json!({ "data": list })))
}

/// `GET /reactions`: `{"data": [...]}`.
pub async fn reactions(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let list = blocking(move || Ok(store.read(|tx| catalog::reactions(tx))?)).await?;
    Ok(Json(json!({ "data": list })))
}

/// `GET /scripts/{id}/deliveries?limit=`: the most recent deliveries, newest first. A
/// deleted script's deliveries are still shown to the account that owned it; 404 when the
/// script is not the caller's (or neither it nor any delivery of it exists).
pub async fn script_deliveries(
    State(state): State<AppState>,
    ViewScript { caller, id }: ViewScript,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = positive(&query, "limit", u64::from(DELIVERIES_DEFAULT))?
        .min(u64::from(DELIVERIES_MAX)) as u32;
    let store = state.store.clone();
    let list = blocking(move || {
        let found = store.read(|tx| {
            let visible = match scripts::get(tx, id)? {
                Some(s) => caller.owns(&s),
                None => {
                    caller.reaches_owner(scripts::deleted_owner(tx, id)?)
                        && deliveries::any_for(tx, id)?
                }
            };
            if !visible {
                return Ok(None);
            }
            deliveries::recent(tx, id, limit).map(Some)
        })?;
        found.ok_or(ApiError::NotFound("Script"))
    })
    .await?;
    Ok(Json(json!({ "data": list })))
}

/// Any other path under `/api/v1`.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("Route")
}
