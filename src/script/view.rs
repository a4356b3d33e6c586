//! The canonical JSON view of a stored script (the seed's response object), shared by the API
//! and by `scripts export`.

use std::collections::HashMap;

use crate::store::sql::Sql;
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::script::validation::FieldErrors;
use crate::script::{Lookups, normalize_timetable, status_text, validate};
use crate::store::users::{self, User};
use crate::store::{StoreError, scripts::StoredScript};

/// Keys of `extra` that hold secrets.
pub const SECRET_KEYS: [&str; 2] = ["bot_token", "secret"];

/// Builds script objects, caching users across a page.
pub struct Viewer<'a> {
    conn: &'a dyn Sql,
    lookups: &'a Lookups,
    timezone: Tz,
    users: HashMap<i64, Option<User>>,
    /// The API caller; `None` for operator tooling, which sees everything.
    caller: Option<i64>,
}

impl<'a> Viewer<'a> {
    /// A viewer reading users through `conn`.
    pub fn new(conn: &'a dyn Sql, lookups: &'a Lookups, timezone: Tz) -> Self {
        Viewer { conn, lookups, timezone, users: HashMap::new(), caller: None }
    }

    /// Objects as `caller` may see them: the secrets in `extra` (a Telegram `bot_token`, a
    /// webhook `secret`) only when the caller is one of the script's users or above one of
    /// them in the parent chain; masked as `********` otherwise.
    pub fn for_caller(mut self, caller: i64) -> Self {
        self.caller = Some(caller);
        self
    }

    fn parent_of(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
        if !self.users.contains_key(&id) {
            let user = users::get(self.conn, id)?;
            self.users.insert(id, user);
        }
        Ok(self.users.get(&id).and_then(Option::as_ref).and_then(|u| u.parent_id))
    }

    /// True when the caller is one of `listed` or an ancestor of one (cycle-safe).
    fn may_see_secrets(&mut self, listed: &[i64]) -> Result<bool, StoreError> {
        let Some(caller) = self.caller else { return Ok(true) };
        for &user in listed {
            let mut current = Some(user);
            for _ in 0..64 {
                match current {
                    Some(id) if id == caller => return Ok(true),
                    Some(id) => current = self.parent_of(id)?,
                    None => break,
                }
            }
        }
        Ok(false)
    }

    fn user(&mut self, id: i64) -> Result<Option<Value>, StoreError> {
        if !self.users.contains_key(&id) {
            let user = users::get(self.conn, id)?;
            self.users.insert(id, user);
        }
        Ok(self.users.get(&id).and_then(Option::as_ref).map(|u| json!(u)))
    }

    /// The seed's script object, key for key: id, title, schedule, timetable, status,
    /// created_at, updated_at, users, event, reaction, extra; plus `cameras` (as stored:
    /// `null` or the list) and `owner_id`, and `invalid` with the field errors only when
    /// the stored row does not validate.
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
        let listed: Vec<i64> = match body.get("users") {
            Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_i64).collect(),
            _ => Vec::new(),
        };
        for &id in &listed {
            if let Some(u) = self.user(id)? {
                user_objects.push(u);
            }
        }
        let mut extra = get("extra");
        if !self.may_see_secrets(&listed)?
            && let Value::Object(e) = &mut extra
        {
            for key in SECRET_KEYS {
                if let Some(v @ Value::String(_)) = e.get_mut(key) {
                    *v = Value::String(crate::secret::MASK.to_owned());
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
        out.insert("extra".into(), extra);
        out.insert("cameras".into(), get("cameras"));
        out.insert("owner_id".into(), s.owner_id.map_or(Value::Null, Value::from));
        let errors = self.errors(s);
        if !errors.is_empty() {
            out.insert("invalid".into(), json!(errors));
        }
        Ok(Value::Object(out))
    }

    /// The shape of `scripts export` files: [`Viewer::script`], which carries everything
    /// an import needs (`cameras`, `owner_id`).
    pub fn script_for_export(&mut self, s: &StoredScript) -> Result<Value, StoreError> {
        self.script(s)
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
