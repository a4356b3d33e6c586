//! The parts of `scriptd run` that differ on PostgreSQL: the API (`/api/v1`, its reaction
//! stream and the status page) reads and writes SQLite only so far, so on PostgreSQL it
//! answers every request with 503 and a JSON message saying so, while `/healthz`,
//! `/livez` and `/metrics` work; and the store's health comes from a probe of the
//! database.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Every;
use crate::ops::health::{self, Health};
use crate::ops::telemetry;
use crate::store::postgres::PgStore;
use crate::store::postgres::instances::{self, RegisterError, Registration};

/// What the API answers on PostgreSQL.
pub(super) const API_UNAVAILABLE: &str = "The API does not run on PostgreSQL yet: scripts, \
     users and tokens are read from the database, but are changed with `scriptd store copy` \
     or SQL (see docs/postgresql.md).";

/// Says at start what does not run on PostgreSQL.
pub(super) fn warn_api_unavailable(pg: &PgStore) {
    tracing::warn!(
        database = pg.endpoint(),
        "running on PostgreSQL: occurrences are matched and delivered, but the API (/api/v1) \
         and the status page answer 503 (they use SQLite only so far); /healthz and /metrics work"
    );
}

/// `/healthz`, `/livez` and `/metrics`; 503 with [`API_UNAVAILABLE`] for everything else.
pub(super) fn http_router(
    health: Health,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    health::routes(health, metrics).fallback(unavailable)
}

async fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "message": API_UNAVAILABLE })))
        .into_response()
}

/// Runs `SELECT 1` every `period` and reports the store up, or down with the error (the
/// server stopped, unreachable, refusing connections), until `stop`.
pub(super) async fn probe(
    pg: PgStore,
    health: Health,
    period: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut every = Every::new(period, stop);
    while every.next().await {
        match tokio::time::timeout(period.max(Duration::from_secs(1)) * 2, pg.ping()).await {
            Ok(Ok(())) => health.set_up(health::STORE),
            Ok(Err(e)) => health.set_down(health::STORE, format!("database: {e}")),
            Err(_) => health.set_down(
                health::STORE,
                format!("database: PostgreSQL at {} did not answer", pg.endpoint()),
            ),
        }
    }
}

/// Holds this instance's client id while the daemon runs (see
/// [`crate::store::postgres::instances`]): a heartbeat every few seconds, the live
/// instances into `/healthz` and the gauge, a new registration when the lock's connection
/// was lost (the server restarted), and the row deleted and the id given up at `stop`.
pub(super) async fn keep_registered(
    pg: PgStore,
    registration: Registration,
    health: Health,
    stop: impl std::future::Future<Output = ()>,
) {
    let identity = registration.identity().clone();
    let mut held = Some(registration);
    let mut refused = false;
    let mut every = Every::new(instances::HEARTBEAT_EVERY, stop);
    while every.next().await {
        match held.as_ref() {
            Some(r) if !r.is_closed() => {
                if let Err(e) = r.heartbeat().await {
                    tracing::debug!(error = %e, "instance heartbeat failed");
                }
            }
            _ => match instances::register(&pg, identity.clone()).await {
                Ok(r) => {
                    if held.is_some() || refused {
                        tracing::info!(client_id = %identity.client_id, "instance registered again");
                    }
                    (held, refused) = (Some(r), false);
                }
                Err(e @ RegisterError::Held { .. }) => {
                    if !refused {
                        tracing::error!(error = %e, "lost this instance's client id to another instance");
                    }
                    (held, refused) = (None, true);
                }
                Err(RegisterError::Store(e)) => {
                    tracing::debug!(error = %e, "instance registration failed; retrying");
                    held = None;
                }
            },
        }
        match instances::live(&pg).await {
            Ok(list) => {
                metrics::gauge!(telemetry::INSTANCES_LIVE).set(list.len() as f64);
                health.set_instances(list);
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the live instances"),
        }
    }
    if let Some(r) = held
        && let Err(e) = r.release().await
    {
        tracing::warn!(error = %e, "cannot remove this instance from the registry");
    }
}
