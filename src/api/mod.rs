//! # The HTTP API (`/api/v1`)
//!
//! [`router`] builds the axum router; [`serve`] runs it on a listener until a shutdown
//! future resolves (the accept loop, its timeouts and its connection cap are in
//! [`serve`](mod@serve), HTTPS in [`tls`], the client address behind proxies in [`client`]). Every `/api/v1` route goes through [`auth::require_token`] first (401
//! before any body is read), bodies are limited to [`MAX_BODY_BYTES`] (413), and errors
//! share one shape ([`error::ApiError`]). See `docs/api.md` for the routes and the choices
//! made where the contract is silent.

pub mod auth;
pub mod calendars;
pub mod client;
pub mod error;
pub mod explain;
pub mod extract;
pub mod guard;
pub mod handlers;
pub mod limits;
pub mod me;
pub mod serve;
pub mod snoozes;
pub mod stream;
pub mod tls;
pub mod ui;
pub mod week;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};

use crate::live::Live;
use crate::settings::ApiSettings;
use crate::store::Db;

/// Largest accepted request body: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database (SQLite or PostgreSQL).
    pub store: Db,
    /// The live snapshot, rebuilt after every write.
    pub live: Live,
    /// Failed-authentication limiter and token-use throttle.
    pub guard: Arc<guard::AuthGuard>,
    /// Single-use tickets for the reaction stream (browsers' `EventSource`).
    pub tickets: Arc<stream::Tickets>,
    /// Open reaction streams, in total and per token (`api.max_streams*`).
    pub streams: Arc<stream::StreamSlots>,
    /// Proxies whose `X-Forwarded-For` is believed (`api.trusted_proxies`).
    pub proxies: Arc<client::TrustedProxies>,
    /// Deadline of a request other than a reaction stream (`api.request_timeout_seconds`).
    pub request_timeout: Duration,
}

impl AppState {
    /// State over a store and its live snapshot, with the `[api]` defaults.
    pub fn new(store: impl Into<Db>, live: Live) -> AppState {
        AppState::with_settings(store, live, &ApiSettings::default())
    }

    /// State over a store and its live snapshot with the limits of `api`.
    pub fn with_settings(store: impl Into<Db>, live: Live, api: &ApiSettings) -> AppState {
        AppState {
            store: store.into(),
            live,
            guard: Arc::new(guard::AuthGuard::with_limits(
                api.auth_failures_per_minute,
                api.auth_block(),
            )),
            tickets: Arc::new(stream::Tickets::default()),
            streams: Arc::new(stream::StreamSlots::new(
                api.max_streams as usize,
                api.max_streams_per_token as usize,
            )),
            proxies: Arc::new(client::TrustedProxies::new(api.trusted_proxies.clone())),
            request_timeout: api.request_timeout(),
        }
    }
}

/// The router with every `/api/v1` route of CONTRACT §6 (except the reaction stream).
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra_v1` routes mounted under `/api/v1` behind the same
/// authentication (e.g. `/reactions/stream`; handlers find the caller in the
/// [`auth::AuthUser`] extension). Routes outside `/api/v1` (`/healthz`, `/metrics`) are
/// merged into the returned router by the caller.
pub fn router_with(state: AppState, extra_v1: Router<AppState>) -> Router {
    use handlers as h;
    let v1 = Router::new()
        .route("/scripts", get(h::list).post(h::create))
        .route("/scripts/{id}", get(h::show).put(h::update).patch(h::update).delete(h::destroy))
        .route("/scripts/{id}/deliveries", get(h::script_deliveries))
        .route("/events", get(h::events))
        .route("/reactions", get(h::reactions))
        .route("/scripts/{id}/snoozes", get(snoozes::list).post(snoozes::create))
        .route("/scripts/{id}/snoozes/{snooze_id}", delete(snoozes::destroy))
        .route("/explain", post(explain::explain))
        .route("/occurrences/{id}", get(explain::occurrence))
        .route("/scripts/{id}/week", get(week::week))
        .route("/calendars", get(calendars::list).post(calendars::create))
        .route(
            "/calendars/{id}",
            get(calendars::show)
                .put(calendars::update)
                .patch(calendars::update)
                .delete(calendars::destroy),
        )
        .route("/calendars/{id}/import", post(calendars::import))
        .route("/me", get(me::me))
        // Streams (in `extra_v1`) are long-lived by design: only the other routes time out.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.request_timeout,
        ))
        .merge(extra_v1)
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new().nest("/api/v1", v1).with_state(state)
}

/// Serves [`router`] on `listener` with the default [`serve::ServeOptions`] until
/// `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Like [`serve`] for a router the caller extended (extra routes, layers). Requests carry
/// the peer's address (`ConnectInfo<SocketAddr>`), which the authentication limiter counts
/// failures by (see [`client`] behind a proxy).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve::serve(listener, router, serve::ServeOptions::default(), shutdown).await
}
