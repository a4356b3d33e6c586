//! Response objects: a stored script as the seed's JSON object.

use std::collections::HashMap;

use chrono_tz::Tz;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::script::{Lookups, normalize_timetable, status_text, validate};
use crate::store::users::{self, User};
use crate::store::{StoreError, scripts::StoredScript};
use crate::validation::FieldErrors;

/// Builds script objects, caching users across a page.
pub struct Viewer<'a> {
    conn: &'a Connection,
    lookups: &'a Lookups,
    timezone: Tz,
    users: HashMap<i64, Option<User>>,
}

impl<'a> Viewer<'a> {
    /// A viewer reading users through `conn`.
    pub fn new(conn: &'a Connection, lookups: &'a Lookups, timezone: Tz) -> Self {
        Viewer { conn, lookups, timezone, users: HashMap::new() }
    }

    fn user(&mut self, id: i64) -> Result<Option<Value>, StoreError> {
        if !self.users.contains_key(&id) {
            let user = users::get(self.conn, id)?;
            self.users.insert(id, user);
        }
        Ok(self.users.get(&id).and_then(Option::as_ref).map(|u| json!(u)))
    }

    /// The seed's script object, key for key: id, title, schedule, timetable, status,
    /// created_at, updated_at, users, event, reaction, extra; plus `invalid` with the field
    /// errors only when the stored row does not validate.
    pub fn script(&mut self, s: &StoredScript) -> Result<Value, StoreError> {
        let body = &s.body;
        let get = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        let status = match body.get("status") {
            Some(Value::Bool(b)) => status_text(*b).into(),
            Some(Value::String(t)) if t == "active" || t == "disabled" => t.clone().into(),
            other => other.cloned().unwrap_or(Value::Null),
        };
        let timetable = match body.get("timetable") {
            Some(Value::Object(t)) => normalize_timetable(t),
            other => other.cloned().unwrap_or(Value::Null),
        };
        let mut user_objects = Vec::new();
        if let Some(Value::Array(ids)) = body.get("users") {
            for id in ids.iter().filter_map(Value::as_i64) {
                if let Some(u) = self.user(id)? {
                    user_objects.push(u);
                }
            }
        }
        let event = body
            .get("event_id")
            .and_then(Value::as_i64)
            .and_then(|id| self.lookups.events.get(&id))
            .map_or(Value::Null, |e| json!(e));
        let reaction = body
            .get("reaction_id")
            .and_then(Value::as_i64)
            .and_then(|id| self.lookups.reactions.get(&id))
            .map_or(Value::Null, |r| json!(r));
        let mut out = Map::new();
        out.insert("id".into(), s.id.into());
        out.insert("title".into(), get("title"));
        out.insert("schedule".into(), json!([]));
        out.insert("timetable".into(), timetable);
        out.insert("status".into(), status);
        out.insert("created_at".into(), s.created_at.clone().into());
        out.insert("updated_at".into(), s.updated_at.clone().into());
        out.insert("users".into(), Value::Array(user_objects));
        out.insert("event".into(), event);
        out.insert("reaction".into(), reaction);
        out.insert("extra".into(), get("extra"));
        let errors = self.errors(s);
        if !errors.is_empty() {
            out.insert("invalid".into(), json!(errors));
        }
        Ok(Value::Object(out))
    }

    /// [`Viewer::script`] plus `cameras`: the shape of `scripts export` files, which must
    /// carry everything an import needs.
    pub fn script_for_export(&mut self, s: &StoredScript) -> Result<Value, StoreError> {
        let mut v = self.script(s)?;
        if let Value::Object(out) = &mut v {
            out.insert("cameras".into(), s.body.get("cameras").cloned().unwrap_or(Value::Null));
        }
        Ok(v)
    }

    fn errors(&self, s: &StoredScript) -> FieldErrors {
        if !s.decode_errors.is_empty() {
            return s.decode_errors.clone();
        }
        match validate(&s.body, &self.lookups.context(self.timezone)) {
            Ok(_) => FieldErrors::new(),
            Err(e) => e,
        }
    }
}
