//! Operator tooling behind `scriptd scripts list|export|import`.
//!
//! Export writes the API's script objects as a JSON array. Import reads such an array (or
//! `{"data": [...]}` as `GET /scripts` returns it), takes each object's `event.id` /
//! `reaction.id` / user objects' ids where the `_id` fields are absent, validates every
//! script exactly like the API, and writes all of them in one transaction or none: an
//! object with an `id` replaces that script (or is created with that id), one without is
//! added. Scripts not in the file are left alone.
//!
//! Owners: an object's `owner_id` (an existing user) wins; else the `--owner` given to the
//! command; else a replaced script keeps its owner. A new script without either is an
//! error on `{index}.owner_id`.

use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::{Db, StoreError, scripts};
use crate::script::validation::FieldErrors;
use crate::script::view::Viewer;
use crate::script::{Lookups, validate};

/// Every script as the API shows it.
pub fn export(store: &Db, timezone: Tz) -> Result<Vec<Value>, StoreError> {
    store.read(|tx| {
        let lookups = Lookups::load(tx)?;
        let mut viewer = Viewer::new(tx, &lookups, timezone);
        scripts::all(tx)?.iter().map(|s| viewer.script_for_export(s)).collect()
    })
}

/// One line per script: id, status, event, reaction, title; `INVALID` and the reasons for
/// rows that do not validate.
pub fn list_lines(store: &Db, timezone: Tz) -> Result<Vec<String>, StoreError> {
    Ok(export(store, timezone)?
        .iter()
        .map(|s| {
            let name = |k: &str| s[k]["name"].as_str().unwrap_or("?").to_owned();
            let mut line = format!(
                "{}\t{}\t{}\t{}\t{}",
                s["id"],
                s["status"].as_str().unwrap_or("?"),
                name("event"),
                name("reaction"),
                s["title"].as_str().unwrap_or("?"),
            );
            if let Some(errors) = s.get("invalid") {
                line.push_str(&format!("\tINVALID {errors}"));
            }
            line
        })
        .collect())
}

/// An exported object back into a request body.
fn to_body(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut body = obj.clone();
    for (key, nested) in [("event_id", "event"), ("reaction_id", "reaction")] {
        if !body.contains_key(key)
            && let Some(id) = obj.get(nested).and_then(|n| n.get("id")).cloned()
        {
            body.insert(key.into(), id);
        }
    }
    if let Some(Value::Array(users)) = obj.get("users") {
        let ids = users
            .iter()
            .map(|u| match u {
                Value::Object(o) => o.get("id").cloned().unwrap_or(Value::Null),
                other => other.clone(),
            })
            .collect();
        body.insert("users".into(), Value::Array(ids));
    }
    body
}

/// Imports `document` (see the module documentation), giving scripts without an
/// `owner_id` to `default_owner`; returns the ids written. Errors are keyed
/// `{index}.{field}` (e.g. `2.timetable.days.0.from`).
pub fn import(
    store: &Db,
    timezone: Tz,
    document: &Value,
    default_owner: Option<i64>,
) -> Result<Vec<i64>, StoreError> {
    let items = match document {
        Value::Array(items) => items,
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(StoreError::Invalid(FieldErrors::single(
                    "data",
                    "expected an array of scripts or {\"data\": [...]}",
                )));
            }
        },
        _ => {
            return Err(StoreError::Invalid(FieldErrors::single(
                "document",
                "expected an array of scripts or {\"data\": [...]}",
            )));
        }
    };
    store.write(|tx| {
        let lookups = Lookups::load(tx)?;
        let ctx = lookups.context(timezone);
        let mut errors = FieldErrors::new();
        let mut valid = Vec::new();
        let mut seen = std::collections::HashSet::new();
        if let Some(owner) = default_owner
            && !lookups.users.contains(&owner)
        {
            errors.add("owner", format!("user {owner} does not exist"));
        }
        for (i, item) in items.iter().enumerate() {
            let Value::Object(obj) = item else {
                errors.add(i.to_string(), "must be a script object");
                continue;
            };
            let id = match obj.get("id") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_i64().filter(|n| *n > 0) {
                    Some(n) => Some(n),
                    None => {
                        errors.add(format!("{i}.id"), "must be a positive integer");
                        continue;
                    }
                },
            };
            if let Some(id) = id
                && !seen.insert(id)
            {
                errors.add(format!("{i}.id"), format!("script {id} appears more than once"));
                continue;
            }
            let owner = match obj.get("owner_id") {
                None | Some(Value::Null) => default_owner,
                Some(v) => match v.as_i64().filter(|n| lookups.users.contains(n)) {
                    Some(n) => Some(n),
                    None => {
                        errors.add(format!("{i}.owner_id"), "must be the id of an existing user");
                        continue;
                    }
                },
            };
            let exists = match id {
                Some(id) => scripts::get(tx, id)?.is_some(),
                None => false,
            };
            if owner.is_none() && !exists {
                errors.add(
                    format!("{i}.owner_id"),
                    "is required for a new script: give owner_id in the file or --owner ID",
                );
                continue;
            }
            match validate(&to_body(obj), &ctx) {
                Ok(v) => valid.push((id, owner, v.input)),
                Err(e) => {
                    for path in e.paths() {
                        for reason in e.get(path).unwrap_or_default() {
                            errors.add(format!("{i}.{path}"), reason.clone());
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(StoreError::Invalid(errors));
        }
        let mut ids = Vec::with_capacity(valid.len());
        for (id, owner, input) in valid {
            let written = match id {
                Some(id) if scripts::update(tx, id, &input)? => id,
                other => scripts::insert_owned(tx, other, owner, &input)?,
            };
            if let Some(owner) = owner {
                scripts::set_owner(tx, written, owner)?;
            }
            ids.push(written);
        }
        Ok(ids)
    })
}
