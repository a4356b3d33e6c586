//! # The HTTP API (`/api/v1`)
//!
//! [`router`] builds the axum router; [`serve`] runs it on a listener until a shutdown
//! future resolves. Every `/api/v1` route goes through [`auth::require_token`] first (401
//! before any body is read), bodies are limited to [`MAX_BODY_BYTES`] (413), and errors
//! share one shape ([`error::ApiError`]). See `docs/api.md` for the routes and the choices
//! made where the contract is silent.

pub mod auth;
pub mod calendars;
pub mod error;
pub mod explain;
pub mod extract;
pub mod guard;
pub mod handlers;
pub mod snoozes;
pub mod stream;
pub mod ui;
pub mod week;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};

use crate::live::Live;
use crate::store::Store;

/// Largest accepted request body: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The live snapshot, rebuilt after every write.
    pub live: Live,
    /// Failed-authentication limiter and token-use throttle.
    pub guard: Arc<guard::AuthGuard>,
    /// Single-use tickets for the reaction stream (browsers' `EventSource`).
    pub tickets: Arc<stream::Tickets>,
}

impl AppState {
    /// State over a store and its live snapshot.
    pub fn new(store: Store, live: Live) -> AppState {
        AppState {
            store,
            live,
            guard: Arc::new(guard::AuthGuard::new()),
            tickets: Arc::new(stream::Tickets::default()),
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
        .merge(extra_v1)
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new().nest("/api/v1", v1).with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Like [`serve`] for a router the caller extended (extra routes, layers). Requests carry
/// the peer's address (`ConnectInfo<SocketAddr>`), which the authentication limiter counts
/// failures by.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
