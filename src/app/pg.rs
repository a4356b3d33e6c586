//! The parts of `scriptd run` that differ on PostgreSQL: the store's health comes from a
//! probe of the database, and the instance holds its client id in the registry.

use std::time::Duration;

use super::Every;
use crate::ops::health::{self, Health};
use crate::ops::telemetry;
use crate::store::postgres::PgStore;
use crate::store::postgres::instances::{self, RegisterError, Registration};

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
