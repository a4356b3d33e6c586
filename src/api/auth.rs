//! Bearer-token authentication and the client headers, checked before anything else.
//!
//! A missing, malformed or unknown token is a 401 `{"message": "Unauthenticated."}`. The
//! presented token is hashed and compared with stored digests in constant time (see
//! [`crate::store::tokens`]). `X-Client` must be one of [`ALLOWED_CLIENTS`] when present
//! (422 on the `X-Client` key otherwise); it and `X-UUID` are logged with the request.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::store::tokens;

/// The `X-Client` values the API accepts.
pub const ALLOWED_CLIENTS: [&str; 4] = ["ios-cctv", "android-cctv", "thick-legal", "web"];

/// The authenticated caller, available to handlers as an `Extension`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// The user the token belongs to.
    pub id: i64,
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

/// Middleware for every `/api/v1` route: 401 unless the token is known, then the
/// `X-Client` check, then the handler; logs the request with its client headers.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return ApiError::Unauthenticated.into_response();
    };
    let store = state.store.clone();
    let user = match tokio::task::spawn_blocking(move || {
        let conn = store.connect()?;
        tokens::authenticate(&conn, &token)
    })
    .await
    {
        Ok(Ok(Some(id))) => AuthUser { id },
        Ok(Ok(None)) => return ApiError::Unauthenticated.into_response(),
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
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
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let x_client = x_client.as_deref().unwrap_or("-");
    let x_uuid = x_uuid.as_deref().unwrap_or("-");
    tracing::info!(%method, path, status, user_id = user.id, x_client, x_uuid, "api request");
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
