//! Health registry and the unauthenticated `GET /healthz`, `GET /livez` and `GET /metrics`
//! routes.
//!
//! Components report their state into a shared [`Health`]: the store ([`STORE`], probed
//! every few seconds with a read, and down while the intake's outbox writes fail: see
//! [`Health::store_write_failed`]), the events connection to the broker ([`BROKER`]), the push
//! connection ([`PUSH`]) and the dispatchers ([`DISPATCHERS`]). The same registry holds the
//! systemd watchdog's heartbeats ([`Health::watchdog`]): a component that stopped making
//! progress shows as down here, with the reason, at the moment the watchdog stops its pings.
//!
//! `/healthz` (readiness) answers 200 when every registered component is up and 503 naming
//! the ones that are not:
//!
//! ```json
//! {"status": "unavailable", "failing": ["broker"],
//!  "components": {"broker": {"state": "down",
//!                            "reason": "not connected to the MQTT broker: I/O: Connection refused (os error 111)"},
//!                 "dispatchers": {"state": "up"}, "push": {"state": "up"},
//!                 "store": {"state": "up"}}}
//! ```
//!
//! `/livez` (liveness, for restarts) answers 200 while no component is stalled, whatever
//! the broker or the database say (a restart would not bring those back), and 503 naming
//! the stalled components otherwise.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::ops::systemd::Watchdog;
use crate::store::postgres::instances::Instance;

/// Component name: the SQLite store.
pub const STORE: &str = "store";
/// Component name: the MQTT connection that receives occurrences.
pub const BROKER: &str = "broker";
/// Component name: the MQTT connection that publishes pushes.
pub const PUSH: &str = "push";
/// Component name: the delivery dispatchers.
pub const DISPATCHERS: &str = "dispatchers";
/// Component name: the HTTP API's listener; degraded while `api.max_connections` is
/// reached (registered by the API's accept loop).
pub const API: &str = "api";

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The state of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ComponentState {
    /// Working.
    Up,
    /// Working, but part of it is held back, and why (e.g. delivery targets backed off by
    /// their circuit breaker). Counts as up: `/healthz` answers 200 with status `degraded`.
    Degraded {
        /// What is held back.
        reason: String,
    },
    /// Not working, and why (for the operator; never a secret).
    Down {
        /// E.g. "connection refused", "starting".
        reason: String,
    },
}

impl ComponentState {
    /// True for [`ComponentState::Up`] and [`ComponentState::Degraded`].
    pub fn is_up(&self) -> bool {
        matches!(self, ComponentState::Up | ComponentState::Degraded { .. })
    }
}

/// The health of every registered component, and the watchdog's heartbeats. Cheap to
/// clone; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<RwLock<BTreeMap<String, ComponentState>>>,
    /// The live instances sharing the database (PostgreSQL only).
    instances: Arc<RwLock<Option<Vec<Instance>>>>,
    watchdog: Watchdog,
    store_writes: Arc<StoreWrites>,
}

/// The last outcome of the outbox writes: a read probe alone sees a full disk or a
/// read-only file as healthy.
#[derive(Debug, Default)]
struct StoreWrites {
    /// True while the last write failed (read without the lock on every write).
    failing: AtomicBool,
    /// Why it failed.
    reason: RwLock<String>,
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `ok`, `degraded` (every component up, some degraded) or `unavailable`.
    pub status: &'static str,
    /// The components that are down, when any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
    /// Every component by name.
    pub components: BTreeMap<String, ComponentState>,
    /// On PostgreSQL, the live instances sharing the database (this one included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<Instance>>,
}

impl HealthReport {
    /// True when every component is up.
    pub fn is_ok(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Health {
    /// A registry with no components (always healthy until some register).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with [`STORE`], [`BROKER`], [`PUSH`] and [`DISPATCHERS`], each down with
    /// reason "starting" until it reports.
    pub fn with_standard_components() -> Self {
        let h = Self::new();
        for name in [STORE, BROKER, PUSH, DISPATCHERS] {
            h.set_down(name, "starting");
        }
        h
    }

    /// Sets a component's state (registering it on first use).
    pub fn set(&self, component: &str, state: ComponentState) {
        let mut map = self.components.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(component.to_string(), state);
    }

    /// Marks a component up.
    pub fn set_up(&self, component: &str) {
        self.set(component, ComponentState::Up);
    }

    /// Marks a component degraded (up, with a reason).
    pub fn set_degraded(&self, component: &str, reason: impl Into<String>) {
        self.set(component, ComponentState::Degraded { reason: reason.into() });
    }

    /// Marks a component down with a reason.
    pub fn set_down(&self, component: &str, reason: impl Into<String>) {
        self.set(component, ComponentState::Down { reason: reason.into() });
    }

    /// Sets the live instances `/healthz` lists.
    pub fn set_instances(&self, instances: Vec<Instance>) {
        *self.instances.write().unwrap_or_else(PoisonError::into_inner) = Some(instances);
    }

    /// Records that a write to the store failed (disk full, read-only file, database
    /// unreachable): [`STORE`] is down with `reason` until [`Health::store_write_succeeded`].
    pub fn store_write_failed(&self, reason: impl Into<String>) {
        let reason = reason.into();
        *self.store_writes.reason.write().unwrap_or_else(PoisonError::into_inner) = reason;
        self.store_writes.failing.store(true, Ordering::Release);
    }

    /// Records that a write to the store succeeded; the first after failures is logged.
    pub fn store_write_succeeded(&self) {
        if self.store_writes.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("writes to the store succeed again");
        }
    }

    /// The watchdog whose heartbeats this registry shows: components register with
    /// [`Watchdog::register`] under their health name, and one that stalls is reported down
    /// (reason `stalled: no progress for N s`) until it beats again.
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// The current state of every component (a stalled one is down whatever it reported).
    pub fn report(&self) -> HealthReport {
        let mut components = self.components.read().unwrap_or_else(PoisonError::into_inner).clone();
        if self.store_writes.failing.load(Ordering::Acquire)
            && components.get(STORE).is_none_or(ComponentState::is_up)
        {
            let why = self.store_writes.reason.read().unwrap_or_else(PoisonError::into_inner);
            components.insert(
                STORE.to_owned(),
                ComponentState::Down { reason: format!("writes fail: {why}") },
            );
        }
        for (name, silent) in self.watchdog.stalled_for() {
            components.insert(
                name,
                ComponentState::Down {
                    reason: format!("stalled: no progress for {} s", silent.as_secs()),
                },
            );
        }
        let failing: Vec<String> =
            components.iter().filter(|(_, s)| !s.is_up()).map(|(n, _)| n.clone()).collect();
        let degraded = components.values().any(|s| matches!(s, ComponentState::Degraded { .. }));
        let status = match (failing.is_empty(), degraded) {
            (false, _) => "unavailable",
            (true, true) => "degraded",
            (true, false) => "ok",
        };
        let instances = self.instances.read().unwrap_or_else(PoisonError::into_inner).clone();
        HealthReport { status, failing, components, instances }
    }
}

#[derive(Clone)]
struct RouteState {
    health: Health,
    metrics: PrometheusHandle,
}

/// `GET /healthz`, `GET /livez` and `GET /metrics`, without authentication; merge into
/// the API router.
pub fn routes(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(render_metrics))
        .with_state(RouteState { health, metrics })
}

async fn healthz(State(state): State<RouteState>) -> Response {
    let report = state.health.report();
    let code = if report.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(report)).into_response()
}

/// The body of `GET /livez`.
#[derive(Debug, Serialize)]
struct LiveReport {
    /// `alive` or `stalled`.
    status: &'static str,
    /// The stalled components, when any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stalled: Vec<String>,
}

async fn livez(State(state): State<RouteState>) -> Response {
    let stalled: Vec<String> =
        state.health.watchdog.stalled_for().into_iter().map(|(name, _)| name).collect();
    if stalled.is_empty() {
        (StatusCode::OK, axum::Json(LiveReport { status: "alive", stalled })).into_response()
    } else {
        let body = LiveReport { status: "stalled", stalled };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn render_metrics(State(state): State<RouteState>) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_write_takes_the_store_down_until_a_write_succeeds() {
        let h = Health::with_standard_components();
        for name in [STORE, BROKER, PUSH, DISPATCHERS] {
            h.set_up(name);
        }
        assert!(h.report().is_ok());
        h.store_write_failed("database or disk is full");
        let r = h.report();
        assert_eq!(r.failing, vec![STORE.to_owned()]);
        assert_eq!(
            r.components[STORE],
            ComponentState::Down { reason: "writes fail: database or disk is full".into() }
        );
        // The read probe still succeeds: the write failure wins.
        h.set_up(STORE);
        assert!(!h.report().is_ok());
        h.store_write_succeeded();
        assert!(h.report().is_ok());
    }

    #[test]
    fn a_failing_read_probe_keeps_its_own_reason() {
        let h = Health::new();
        h.set_down(STORE, "database: unable to open database file");
        h.store_write_failed("disk I/O error");
        let r = h.report();
        assert_eq!(
            r.components[STORE],
            ComponentState::Down { reason: "database: unable to open database file".into() }
        );
    }
}
