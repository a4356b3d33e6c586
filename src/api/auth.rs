//! Bearer-token authentication, the caller's account, and the client headers, checked
//! before anything else.
//!
//! A missing, malformed, unknown, revoked or expired token, or one of a disabled user, is a
//! 401 `{"message": "Unauthenticated."}`. The presented token is hashed and compared with
//! stored digests in constant time, against the database on every request (see
//! [`crate::store::tokens`]), so a revocation by the CLI counts at once. Failed attempts
//! are counted per client address ([`super::guard`], behind a trusted proxy the
//! forwarded client: [`super::client`]): past `api.auth_failures_per_minute`, 429 with
//! `Retry-After`. `X-Client` must be one of [`ALLOWED_CLIENTS`] when present (422 on the
//! `X-Client` key otherwise); it and `X-UUID` are logged with the request.
//!
//! Handlers find the caller as an `Extension<`[`Caller`]`>`: its user id, its **reach**
//! (itself and every user below it) and its permissions. Every authorization decision goes
//! through [`Caller`]: [`Caller::require_view`] / [`Caller::require_manage`] (403),
//! [`Caller::owns`] (a script outside the reach is answered as a missing one) and
//! [`Caller::reaches`] (ids in a body's `users`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::store::scripts::StoredScript;
use crate::store::{tokens, users};

/// The `X-Client` values the API accepts.
pub const ALLOWED_CLIENTS: [&str; 4] = ["ios-cctv", "android-cctv", "thick-legal", "web"];

/// The permission needed to read scripts, their deliveries and explanations.
pub const SCRIPTS_VIEW: &str = "scripts.view";
/// The permission needed to create, change, delete and snooze whole scripts (it includes
/// [`SCRIPTS_VIEW`]).
pub const SCRIPTS_MANAGE: &str = "scripts.manage";

/// The authenticated caller's user id, available to handlers as an `Extension` (see
/// [`Caller`] for authorization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// The user the token belongs to.
    pub id: i64,
}

/// The public id of the token a request was authenticated with, available to handlers as
/// an `Extension` (long-lived connections re-check it, see [`tokens::is_active`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId(pub String);

/// The authenticated caller with what it may do, available to handlers as an `Extension`;
/// read from the database for each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user the token belongs to.
    pub user_id: i64,
    /// The caller's reach: itself and every user below it, ascending.
    pub reach: Arc<[i64]>,
    /// Granted `scripts.view` (or `scripts.manage`, which includes it).
    pub view: bool,
    /// Granted `scripts.manage`.
    pub manage: bool,
}

impl Caller {
    /// A caller with this reach and these permission names.
    pub fn new(user_id: i64, mut reach: Vec<i64>, permissions: &[String]) -> Caller {
        reach.sort_unstable();
        reach.dedup();
        let manage = permissions.iter().any(|p| p == SCRIPTS_MANAGE);
        let view = manage || permissions.iter().any(|p| p == SCRIPTS_VIEW);
        Caller { user_id, reach: reach.into(), view, manage }
    }

    /// True when `user_id` is the caller or below it.
    pub fn reaches(&self, user_id: i64) -> bool {
        self.reach.binary_search(&user_id).is_ok()
    }

    /// True when a script owned by `owner_id` is the caller's to see and act on.
    pub fn reaches_owner(&self, owner_id: Option<i64>) -> bool {
        owner_id.is_some_and(|o| self.reaches(o))
    }

    /// True when the caller sees and acts on this script (its owner is in the reach).
    /// Anything else must be answered exactly like a missing script.
    pub fn owns(&self, script: &StoredScript) -> bool {
        self.reaches_owner(script.owner_id)
    }

    /// May read scripts, deliveries and explanations.
    pub fn can_view(&self) -> bool {
        self.view
    }

    /// May create, change, delete and snooze whole scripts.
    pub fn can_manage(&self) -> bool {
        self.manage
    }

    /// 403 unless [`Caller::can_view`].
    pub fn require_view(&self) -> Result<(), ApiError> {
        if self.view { Ok(()) } else { Err(ApiError::Forbidden) }
    }

    /// 403 unless [`Caller::can_manage`].
    pub fn require_manage(&self) -> Result<(), ApiError> {
        if self.manage { Ok(()) } else { Err(ApiError::Forbidden) }
    }
}

/// The token in `Authorization: Bearer <token>`, or `None` when missing or malformed.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.bytes().any(|b| b.is_ascii_whitespace())
    {
        return None;
    }
    Some(token.to_owned())
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The `ticket` query parameter of `GET /reactions/stream` (see
/// [`super::stream::Tickets`]); nothing on any other route.
fn stream_ticket(req: &Request) -> Option<&str> {
    if req.method() != axum::http::Method::GET || req.uri().path() != "/reactions/stream" {
        return None;
    }
    req.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("ticket="))
}

/// Checks a bearer token: the caller and the token's id, or `None` when it is refused.
/// Records the token's use (at most once a minute per token, off the request path).
async fn check_token(
    state: &AppState,
    token: String,
) -> Result<Option<(Caller, TokenId)>, ApiError> {
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
        store.read(|tx| {
            let Some(auth) = tokens::check(tx, &token)? else { return Ok(None) };
            let reach = users::reach(tx, auth.user_id)?;
            let permissions = users::permission_names(tx, auth.user_id)?;
            let caller = Caller::new(auth.user_id, reach, &permissions);
            Ok(Some((auth, caller)))
        })
    })
    .await??;
    let Some((auth, caller)) = found else { return Ok(None) };
    if state.guard.should_touch(&auth.public_id) {
        // Off the request path: a locked database delays this write, not the answer.
        let store = state.store.clone();
        let id = auth.public_id.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.write(|tx| tokens::touch(tx, &id)) {
                tracing::debug!(error = %e, "cannot record a token's last use");
            }
        });
    }
    Ok(Some((caller, TokenId(auth.public_id))))
}

/// Middleware for every `/api/v1` route: 429 while the client address is blocked, 401
/// unless the token is valid (counted as a failure), then the `X-Client` check, then the
/// handler with [`Caller`] and [`AuthUser`]; logs the request with its client headers.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = state.proxies.client_of(&req);
    if let Some(retry) = state.guard.blocked(ip) {
        return ApiError::TooManyAttempts(retry).into_response();
    }
    let refused = |state: &AppState| match state.guard.failed(ip) {
        Some(retry) => {
            // Once per block (a flood past the limiter's capacity is not logged per request).
            if state.guard.blocked(ip).is_some() {
                tracing::warn!(client = %ip, "too many failed authentications; address blocked");
            }
            ApiError::TooManyAttempts(retry).into_response()
        }
        None => ApiError::Unauthenticated.into_response(),
    };
    let (caller, token_id) = match bearer(req.headers()) {
        Some(token) => match check_token(&state, token).await {
            Ok(Some(found)) => found,
            Ok(None) => return refused(&state),
            Err(e) => return e.into_response(),
        },
        // `EventSource` cannot send the header: the stream takes a single-use ticket.
        None => match stream_ticket(&req).and_then(|t| state.tickets.redeem(t)) {
            Some(found) => found,
            None => return refused(&state),
        },
    };
    let user = AuthUser { id: caller.user_id };
    let x_client = header_text(req.headers(), "x-client");
    let x_uuid = header_text(req.headers(), "x-uuid");
    if req
        .headers()
        .get_all("x-client")
        .iter()
        .any(|v| !ALLOWED_CLIENTS.iter().any(|allowed| allowed.as_bytes() == v.as_bytes()))
    {
        return ApiError::field(
            "X-Client",
            format!("The X-Client header must be one of: {}.", ALLOWED_CLIENTS.join(", ")),
        )
        .into_response();
    }
    let method = req.method().clone();
    // Under `nest("/api/v1", ..)` the request's URI has the prefix stripped; log the path
    // the client asked for.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_owned(), |uri| uri.path().to_owned());
    req.extensions_mut().insert(user);
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(token_id);
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let x_client = x_client.as_deref().unwrap_or("-");
    let x_uuid = x_uuid.as_deref().unwrap_or("-");
    tracing::info!(
        %method, path, status, user_id = user.id, client = %ip, x_client, x_uuid, "api request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn bearer_accepts_only_one_clean_token() {
        assert_eq!(bearer(&headers("Bearer abc.def")).as_deref(), Some("abc.def"));
        assert_eq!(bearer(&headers("bearer abc.def")).as_deref(), Some("abc.def"));
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&headers("Bearer  abc")), None);
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
