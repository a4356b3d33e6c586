//! `GET /scripts/{id}/week?start=DATE`: the script's active stretches for seven local days
//! as the engine computes them ([`crate::index::week`]), for the status page's week grid.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use chrono::{Datelike, NaiveDate, Utc};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Tx, ViewScript, blocking, on_owned_script};
use crate::script::{Lookups, validate};

/// `{"data": {"script_id", "timezone", "start", "days": [...]}}`; `start` defaults to the
/// Monday of the current week in the configured zone. A stored script that does not
/// validate is 422 with its field errors.
pub async fn week(
    State(state): State<AppState>,
    route: ViewScript,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = route.id;
    let tz = state.live.timezone();
    let start = match query.get("start") {
        None => {
            let today = Utc::now().with_timezone(&tz).date_naive();
            today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()))
        }
        Some(s) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| ApiError::field("start", "The start must be a date (YYYY-MM-DD)."))?,
    };
    let timetable = on_owned_script(&state, route, Tx::Read, move |tx, _, row| {
        let lookups = Lookups::load(tx)?;
        let mut errors = row.decode_errors.clone();
        Ok(match validate(&row.body, &lookups.context(tz)) {
            Ok(v) if errors.is_empty() => Ok(v.timetable),
            Ok(_) => Err(ApiError::Validation(errors)),
            Err(e) => {
                errors.merge(e);
                Err(ApiError::Validation(errors))
            }
        })
    })
    .await?;
    let days = blocking(move || Ok(crate::index::week::week(timetable, tz, start))).await?;
    let days: Vec<Value> = days.iter().map(|d| crate::index::week::day_json(d, tz)).collect();
    Ok(Json(json!({
        "data": {"script_id": id, "timezone": tz.name(), "start": start.to_string(), "days": days}
    })))
}
