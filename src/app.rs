//! `scriptd run`: wiring the components together, and stopping them in order.
//!
//! Start-up: metrics recorder → store (migrated, catalogs seeded, WAL checkpoints in the
//! background: [`crate::store::checkpoint`]) → live snapshot and its
//! file watcher → HTTP API (`/api/v1`, `/healthz`, `/metrics`) → `READY=1` to systemd (the
//! broker is not waited for) → embedded broker (when configured) → MQTT push connection →
//! dispatcher → MQTT source → intake pipeline; plus SIGHUP reloads and the watchdog.
//!
//! Threads: the push connection, the dispatcher, the source and the intake run on the
//! pipeline's thread (`pipeline`); the API, the watcher's task, the checkpoints and the
//! periodic helpers on the main runtime; the watcher's looks on a thread of their own.
//!
//! Shutdown on SIGTERM/SIGINT: the source stops taking messages (what was received but is
//! not durable stays unacknowledged, so the broker redelivers it), the intake finishes its
//! batch, the dispatcher lets in-flight sends finish within `delivery.shutdown_deadline_seconds`
//! and leaves the rest pending in the outbox, then the push connection and the API close.
//!
//! On PostgreSQL ([`run_on`] with [`Postgres`]) the snapshot, the intake and the
//! dispatcher use that database, and the instance holds its client id in the registry
//! while it runs (see `pg`, also for what does not run there yet); `sqlite` holds what is
//! SQLite's, `tasks` the small periodic helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::dispatch::hub::PushHub;
use crate::dispatch::mqtt_push::MqttPusher;
use crate::dispatch::webhook::WebhookSender;
use crate::dispatch::worker::{Dispatcher, DispatcherConfig, DispatcherHandle, Senders};
use crate::intake::occurrence::RejectionLog;
use crate::intake::{self, Intake};
use crate::live::{self, Live};
use crate::mqtt::MqttConnectOptions;
use crate::ops::health::{self, Health};
use crate::ops::logging::LogHandle;
use crate::ops::reload::Reloader;
use crate::ops::systemd::Notifier;
use crate::ops::telemetry;
use crate::settings::Settings;
use crate::source::mqtt::{MqttSource, SourceOptions};
use crate::store::checkpoint::{self, Checkpointer};
use crate::store::outbox::Handoff;
use crate::store::postgres::PgStore;
use crate::store::postgres::outbox::{ChatPacing, PgOutbox};
use crate::store::{Db, OutboxDb, StoreError};

mod pg;
mod pipeline;
mod sqlite;
mod tasks;

use pipeline::Pipeline;
use sqlite::{open_sqlite, probe_store};
use tasks::{Every, spawn_connection_health};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database could not be opened or migrated.
    #[error("database {path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: StoreError,
    },
    /// PostgreSQL could not be read at start (the error names its endpoint).
    #[error("{0}")]
    Database(StoreError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr} (api.bind): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The embedded broker could not start.
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::mqtt::broker::BrokerError),
    /// The API's certificate or key file cannot be used.
    #[error(transparent)]
    Tls(#[from] api::tls::TlsFileError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// The HTTP client for webhooks could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Http(String),
    /// The pipeline's thread could not be started.
    #[error("cannot start the pipeline's thread: {0}")]
    Pipeline(std::io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// `mqtt.embedded_broker = true` in a build without the embedded broker.
    #[error(
        "mqtt.embedded_broker = true, but this scriptd was built without the embedded-broker feature; set mqtt.embedded_broker = false and point mqtt.host/mqtt.port at a broker"
    )]
    NoEmbeddedBroker,
}

/// The `/api/v1` routes, `/healthz` and `/metrics`, with the reaction stream, and the
/// status page at `/`.
pub fn http_router(
    state: AppState,
    hub: PushHub,
    health: Health,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    api::router_with(state, api::stream::routes(hub))
        .merge(health::routes(health, metrics))
        .merge(api::ui::routes())
}

/// How long open API requests get to finish once the daemon stops.
const API_DRAIN: Duration = Duration::from_secs(1);

/// A started daemon: every component running. Stop it with [`Running::shutdown`].
pub struct Running {
    /// Stops the source and the intake first (so everything read is committed).
    stop_intake: CancellationToken,
    /// Then everything else.
    stop_rest: CancellationToken,
    intake_task: tokio::task::JoinHandle<()>,
    source: MqttSource,
    dispatcher: DispatcherHandle,
    api_task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// On PostgreSQL, the task holding this instance's client id (it lets it go at stop).
    registry_task: Option<tokio::task::JoinHandle<()>>,
    pusher: Arc<MqttPusher>,
    /// The thread the events connection, the intake, the dispatcher and the push
    /// connection run on.
    pipeline: Pipeline,
    notifier: Notifier,
    api_addr: SocketAddr,
    live: Live,
    hub: PushHub,
    #[cfg(feature = "embedded-broker")]
    _broker: Option<crate::mqtt::broker::EmbeddedBroker>,
}

/// Runs the daemon until SIGTERM or SIGINT; see the module documentation.
pub async fn run(
    settings: Settings,
    config_dir: PathBuf,
    log: Option<LogHandle>,
) -> Result<(), AppError> {
    run_on(settings, config_dir, log, None).await
}

/// The daemon's PostgreSQL database (connected and migrated) and this instance's place in
/// its registry.
#[derive(Debug)]
pub struct Postgres {
    /// The pool.
    pub store: PgStore,
    /// This instance's client id, held while the daemon runs.
    pub registration: crate::store::postgres::instances::Registration,
}

/// [`run`] on PostgreSQL when `pg` is given, on the SQLite file of `database.path`
/// otherwise.
pub async fn run_on(
    settings: Settings,
    config_dir: PathBuf,
    log: Option<LogHandle>,
    pg: Option<Postgres>,
) -> Result<(), AppError> {
    let running = start_on(settings, config_dir, log, pg).await?;
    wait_for_termination().await.map_err(AppError::Signals)?;
    running.shutdown().await;
    Ok(())
}

/// Starts every component (see the module documentation) and returns once the API listens
/// and the MQTT connections are being made.
pub async fn start(
    settings: Settings,
    config_dir: PathBuf,
    log: Option<LogHandle>,
) -> Result<Running, AppError> {
    start_on(settings, config_dir, log, None).await
}

/// [`start`] on PostgreSQL when `pg` is given; see [`run_on`].
pub async fn start_on(
    settings: Settings,
    config_dir: PathBuf,
    log: Option<LogHandle>,
    pg: Option<Postgres>,
) -> Result<Running, AppError> {
    let metrics = telemetry::install()?;
    let notifier = Notifier::from_env();
    let health = Health::with_standard_components();
    let stop_intake = CancellationToken::new();
    let stop_rest = CancellationToken::new();
    tokio::spawn(telemetry::run_upkeep(
        metrics.clone(),
        Duration::from_secs(5),
        stop_rest.clone().cancelled_owned(),
    ));

    // Store and scripts.
    let db = settings.database.path.clone();
    let store_err = |source| AppError::Store { path: db.clone(), source };
    let timezone = settings.timezone.tz();
    let mut registry_task = None;
    let pg = pg.map(|Postgres { store, registration }| {
        registry_task = Some(tokio::spawn(pg::keep_registered(
            store.clone(),
            registration,
            health.clone(),
            stop_rest.clone().cancelled_owned(),
        )));
        store
    });
    let (store, outbox_db, live) = match pg {
        None => {
            let (store, live) = open_sqlite(&settings).await.map_err(store_err)?;
            (Db::Sqlite(store.clone()), OutboxDb::Sqlite(store), live)
        }
        Some(pg) => {
            let live =
                Live::new_postgres(pg.clone(), timezone).await.map_err(AppError::Database)?;
            let pacing = ChatPacing::from_settings(&settings.telegram);
            let outbox = OutboxDb::Postgres(PgOutbox::new(pg.clone()).with_chat_pacing(pacing));
            (Db::Postgres(pg), outbox, live)
        }
    };
    health.set_up(health::STORE);
    let live_settings = Arc::new(ArcSwap::from_pointee(settings.live_part()));

    // HTTP API: ready before the broker is.
    let hub = PushHub::default();
    let listener = tokio::net::TcpListener::bind(settings.api.bind)
        .await
        .map_err(|source| AppError::Listen { addr: settings.api.bind, source })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| AppError::Listen { addr: settings.api.bind, source })?;
    let router = http_router(
        AppState::with_settings(store.clone(), live.clone(), &settings.api),
        hub.clone(),
        health.clone(),
        metrics.clone(),
    );
    let serve_options = api::serve::ServeOptions::from_settings(
        &settings.api,
        &health,
        stop_rest.clone().cancelled_owned(),
    )?;
    let https = serve_options.tls.is_some();
    let api_task = tokio::spawn(api::serve::serve(
        listener,
        router,
        serve_options,
        stop_rest.clone().cancelled_owned(),
    ));
    let database = match &outbox_db {
        OutboxDb::Sqlite(_) => db.display().to_string(),
        OutboxDb::Postgres(pg) => format!("postgresql {}", pg.store().endpoint()),
    };
    tracing::info!(addr = %api_addr, https, %database, "API listening");
    api::limits::log_descriptor_budget(&settings);
    notifier.ready_with_status("running; mqtt connecting");

    // MQTT.
    #[cfg(feature = "embedded-broker")]
    let broker = if settings.mqtt.embedded_broker {
        let b = crate::mqtt::broker::start_embedded(&settings.mqtt.host, settings.mqtt.port)?;
        tracing::info!(addr = %b.local_addr(), "embedded MQTT broker started");
        Some(b)
    } else {
        None
    };
    #[cfg(not(feature = "embedded-broker"))]
    if settings.mqtt.embedded_broker {
        return Err(AppError::NoEmbeddedBroker);
    }
    let mut connect =
        MqttConnectOptions::new(&settings.mqtt.host, settings.mqtt.port, &settings.mqtt.client_id);
    connect.username = settings.mqtt.username.clone();
    connect.password = settings.mqtt.password.clone();
    connect.keep_alive = settings.mqtt.keep_alive();
    (connect.backoff_min, connect.backoff_max) = settings.mqtt.reconnect_backoff();
    connect.inflight = settings.mqtt.inflight;
    connect.tls = settings.mqtt.tls_files();
    connect.protocol = match settings.mqtt.protocol {
        crate::settings::MqttProtocol::V5 => crate::mqtt::link::Protocol::V5,
        crate::settings::MqttProtocol::V311 => crate::mqtt::link::Protocol::V311,
    };

    // One registry: a component the watchdog sees stalled is down in /healthz too.
    let watchdog = health.watchdog().clone();
    let beat_for = |name: &str| {
        // A component silent for 30 s is hung: the watchdog pings stop and systemd restarts us.
        watchdog.register(name, Duration::from_secs(30))
    };
    let pipeline = Pipeline::start().map_err(AppError::Pipeline)?;
    let pusher = {
        let _on_pipeline = pipeline.enter();
        MqttPusher::spawn(
            &connect,
            &format!("{}-push", settings.mqtt.client_id),
            &settings.mqtt.push_topic_prefix,
            Duration::from_secs(10),
            stop_rest.clone().cancelled_owned(),
        )
    };
    let pusher = Arc::new(pusher);
    // Rows the intake commits reach the dispatcher in memory through this hand-over (the
    // database stays the truth; see `store::outbox`).
    let handoff = Arc::new(Handoff::default());
    // On PostgreSQL the reaction streams are fed from the broker, which carries every
    // instance's pushes (see `dispatch::push_feed`); the dispatcher's own hub then has no
    // listener.
    let dispatch_hub = match &store {
        Db::Sqlite(_) => hub.clone(),
        Db::Postgres(_) => {
            crate::dispatch::push_feed::spawn(
                connect.clone(),
                format!("{}-feed", settings.mqtt.client_id),
                &settings.mqtt.push_topic_prefix,
                hub.clone(),
                stop_rest.clone(),
            );
            PushHub::default()
        }
    };
    let on_pipeline = pipeline.enter();
    let dispatcher = Dispatcher::spawn_on(
        outbox_db.clone(),
        handoff.clone(),
        Senders {
            push: Some(pusher.clone()),
            hub: dispatch_hub,
            webhook: Arc::new(
                WebhookSender::new(Duration::from_secs(settings.webhook.timeout_seconds))
                    .map_err(|e| AppError::Http(e.reason().to_owned()))?,
            ),
        },
        DispatcherConfig {
            progress: Some(beat_for(health::DISPATCHERS)),
            health: Some(health.clone()),
            // On SQLite outside writes wake it through the watcher (below); on PostgreSQL
            // rows left by another instance (a lease that ended) are found by this query.
            poll_interval: match &outbox_db {
                OutboxDb::Sqlite(_) => DISPATCH_POLL,
                OutboxDb::Postgres(_) => PG_DISPATCH_POLL,
            },
            ..DispatcherConfig::from_settings(&settings.delivery)
        },
        live_settings.clone(),
        stop_intake.clone().cancelled_owned(),
    );
    health.set_up(health::DISPATCHERS);

    let mut source_options = SourceOptions::new(connect, &settings.mqtt.events_topic);
    source_options.max_payload_bytes = settings.events.max_payload_bytes;
    source_options.channel_capacity = intake::BATCH_MAX * 4;
    // The poll loop turns at least once per keep-alive (a ping) even when idle, and on every
    // reconnect attempt, so a broker outage is not a hang; a stuck loop is.
    source_options.progress = Some(
        watchdog.register(health::BROKER, settings.mqtt.keep_alive() * 2 + Duration::from_secs(10)),
    );
    let (source, incoming) =
        MqttSource::spawn(source_options, stop_intake.clone().cancelled_owned());
    drop(on_pipeline);
    // Connection states → health (and the events connection → systemd status).
    spawn_connection_health(
        source.connected(),
        source.down_reason(),
        health::BROKER,
        &health,
        Some(notifier.clone()),
        stop_rest.clone().cancelled_owned(),
    );
    spawn_connection_health(
        pusher.connected(),
        pusher.down_reason(),
        health::PUSH,
        &health,
        None,
        stop_rest.clone().cancelled_owned(),
    );
    let checkpoint_wake = Arc::new(Notify::new());
    match &outbox_db {
        OutboxDb::Sqlite(store) => {
            tokio::spawn(checkpoint::run_after_writes(
                Checkpointer::new(store.clone()),
                checkpoint::CHECKPOINT_PERIOD,
                checkpoint_wake.clone(),
                stop_rest.clone().cancelled_owned(),
            ));
            tokio::spawn(probe_store(
                store.clone(),
                health.clone(),
                STORE_PROBE_PERIOD,
                stop_rest.clone().cancelled_owned(),
            ));
        }
        OutboxDb::Postgres(pg) => {
            tokio::spawn(pg::probe(
                pg.store().clone(),
                health.clone(),
                STORE_PROBE_PERIOD,
                stop_rest.clone().cancelled_owned(),
            ));
        }
    }
    // On PostgreSQL the intake writes its rows without a lane leased to this instance and
    // hands them over like on SQLite (see `store::postgres::outbox`).
    let intake_db = match outbox_db {
        OutboxDb::Postgres(pg) => {
            OutboxDb::Postgres(pg.handing_over(handoff.clone(), settings.delivery.lease()))
        }
        sqlite => sqlite,
    };
    let intake = Intake::new_on(
        intake_db,
        handoff,
        live.clone(),
        live_settings.clone(),
        Arc::new(RejectionLog::default()),
    )
    .await
    .map_err(|e| match &store {
        Db::Sqlite(_) => store_err(e),
        Db::Postgres(_) => AppError::Database(e),
    })?
    .with_health(health.clone());
    let intake_progress = beat_for(INTAKE);
    let intake_replaced = Arc::new(Notify::new());
    let (wake, written) = (dispatcher.clone(), checkpoint_wake.clone());
    let intake_task = pipeline.spawn(intake::run(
        intake,
        incoming,
        move || {
            wake.handed_over();
            written.notify_one();
        },
        move || intake_progress.beat(),
        intake_replaced.clone(),
    ));
    // The watcher's looks stand in for the other components' polls: a commit by another
    // connection or program (rows nobody handed over, log pages to copy) and a replaced
    // file (connections to let go) wake whoever has to act.
    let wake = dispatcher.clone();
    live.spawn_watcher_with(
        live::POLL_INTERVAL,
        move |seen| {
            wake.notify();
            checkpoint_wake.notify_one();
            if seen == live::Seen::Replaced {
                intake_replaced.notify_one();
            }
        },
        stop_rest.clone().cancelled_owned(),
    );

    if let Some(interval) = crate::ops::systemd::watchdog_enabled() {
        tokio::spawn(watchdog.run(notifier.clone(), interval, stop_rest.clone().cancelled_owned()));
    }
    let reloader =
        Reloader::new(config_dir, settings.clone(), live_settings.clone(), log, notifier.clone());
    let reload_stop = stop_rest.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(e) = reloader.run_on_sighup(reload_stop).await {
            tracing::error!(error = %e, "cannot handle SIGHUP; reloads need a restart");
        }
    });

    Ok(Running {
        stop_intake,
        stop_rest,
        intake_task,
        source,
        dispatcher,
        api_task,
        registry_task,
        pusher,
        pipeline,
        notifier,
        api_addr,
        live,
        hub,
        #[cfg(feature = "embedded-broker")]
        _broker: broker,
    })
}

impl Running {
    /// The address the API listens on (useful with `api.bind = "127.0.0.1:0"`).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The live scripts.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Delivery counters of the dispatcher.
    pub fn dispatch_stats(&self) -> crate::dispatch::worker::DispatchStats {
        self.dispatcher.stats()
    }

    /// Stops in order: no new occurrences; the intake finishes its batch; in-flight
    /// deliveries finish within the deadline, the rest stays pending; then the push
    /// connection and the API close.
    pub async fn shutdown(self) {
        tracing::info!("stopping: no new occurrences; finishing in-flight deliveries");
        self.notifier.stopping();
        self.stop_intake.cancel();
        let _ = self.intake_task.await;
        self.source.join().await;
        self.dispatcher.join().await;
        // Open reaction streams end first: the API's graceful shutdown waits for them.
        self.hub.close();
        self.stop_rest.cancel();
        let mut api_task = self.api_task;
        if tokio::time::timeout(API_DRAIN, &mut api_task).await.is_err() {
            tracing::warn!(after = ?API_DRAIN, "API requests still open at shutdown; closing them");
            api_task.abort();
        }
        if let Ok(pusher) = Arc::try_unwrap(self.pusher) {
            pusher.join().await;
        }
        self.pipeline.stop().await;
        if let Some(task) = self.registry_task {
            // Bounded: a database that does not answer leaves the row to age out.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        tracing::info!("stopped");
    }
}

/// Name of the intake in the health registry (shown only when it stalls).
const INTAKE: &str = "intake";
/// How often the store is probed for `/healthz` (a new connection and one read each time).
const STORE_PROBE_PERIOD: Duration = Duration::from_secs(5);
/// The dispatcher's safety-net query (rows in the outbox that nobody handed over) when the
/// watcher saw no commit: at least once per watchdog window (30 s) it turns anyway.
const DISPATCH_POLL: Duration = Duration::from_secs(10);
/// The dispatcher's query on PostgreSQL, where the rows of an instance that died become due
/// again when their lease ends, with no local commit to wake anyone.
const PG_DISPATCH_POLL: Duration = Duration::from_secs(1);

async fn wait_for_termination() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
