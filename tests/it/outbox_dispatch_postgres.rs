//! The dispatcher on PostgreSQL ([`Dispatcher::spawn_on`] with a [`PgOutbox`]) against a
//! real webhook receiver: retries are recorded and sent; a row claimed by an instance that
//! died is attempted once its lease (`delivery.lease_seconds`) ended, not before; and a row
//! claimed while its target had no free slot is given back rather than held for the lease.
//! Rows written by an outbox handing over ([`PgOutbox::handing_over`]) are leased to this
//! instance, reach its dispatcher without a claim, and are given back when they cannot
//! start or the dispatcher stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use scriptd::dispatch::hub::PushHub;
use scriptd::dispatch::webhook::WebhookSender;
use scriptd::dispatch::worker::{Dispatcher, DispatcherConfig, DispatcherHandle, Senders};
use scriptd::secret::Secret;
use scriptd::settings::{DatabaseSettings, DatabaseUrl, Settings};
use scriptd::store::OutboxDb;
use scriptd::store::now_ms;
use scriptd::store::outbox::backend::OutboxBackend;
use scriptd::store::outbox::{Channel, Handoff, NewDelivery, Target};
use scriptd::store::postgres::outbox::PgOutbox;
use tokio::sync::oneshot;

use crate::support::postgres::server;
use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::within;

async fn outbox() -> PgOutbox {
    let settings =
        DatabaseSettings { url: Some(DatabaseUrl::new(server().database())), ..Default::default() };
    let store = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&store).await.expect("migrate");
    PgOutbox::new(store)
}

fn webhook(i: usize, url: &str) -> NewDelivery {
    let id = format!("occ-{i}:3:{url}");
    NewDelivery {
        payload: serde_json::json!({"reaction": "webhook", "delivery_id": id}).to_string(),
        id,
        occurrence_id: format!("occ-{i}"),
        script_id: 3,
        reaction: "webhook".into(),
        recipient: url.into(),
        lane: String::new(),
        target: Target::Webhook { url: url.into(), secret: Some(Secret::new("s3cret")) },
    }
}

/// A dispatcher on `pg` with `config`, short retry delays; stopped by the sender.
fn start(pg: &PgOutbox, config: DispatcherConfig) -> (DispatcherHandle, oneshot::Sender<()>) {
    start_with(pg, config, Arc::new(Handoff::default()))
}

/// [`start`] with the hand-over `handoff`.
fn start_with(
    pg: &PgOutbox,
    config: DispatcherConfig,
    handoff: Arc<Handoff>,
) -> (DispatcherHandle, oneshot::Sender<()>) {
    let mut s = Settings::default();
    s.delivery.backoff_initial_ms = 100;
    s.delivery.backoff_max_ms = 200;
    let live = Arc::new(ArcSwap::from_pointee(s.live_part()));
    let senders = Senders {
        push: None,
        hub: PushHub::new(8),
        webhook: Arc::new(WebhookSender::new(Duration::from_secs(5)).expect("client")),
    };
    let (stop, rx) = oneshot::channel::<()>();
    let handle = Dispatcher::spawn_on(
        OutboxDb::Postgres(pg.clone()),
        handoff,
        senders,
        config,
        live,
        async move {
            let _ = rx.await;
        },
    );
    handle.notify();
    (handle, stop)
}

async fn wait_state(pg: &PgOutbox, id: &str, state: &str, secs: u64) {
    within(secs, &format!("{id} {state}"), async {
        loop {
            if let Ok(Some((s, _))) = pg.state_of(id).await
                && s == state
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Four webhook slots, one per target, leased for `lease`, polling every 200 ms.
fn one_webhook_slot_per_target(lease: Duration) -> DispatcherConfig {
    let mut config = DispatcherConfig::new(4, Duration::from_secs(2));
    config.limits.per_target = [4, 4, 1];
    config.lease = lease;
    config.poll_interval = Duration::from_millis(200);
    config
}

/// Every one of `rows` ends `sent`, and the receiver got each once.
async fn each_sent_once(pg: &PgOutbox, rows: &[NewDelivery], hook: &WebhookReceiver) {
    for row in rows {
        wait_state(pg, &row.id, "sent", 60).await;
    }
    assert_eq!(hook.received().len(), rows.len(), "each row attempted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_and_recorded_sent() {
    let pg = outbox().await;
    let hook = WebhookReceiver::start(Some("s3cret")).await;
    hook.push_status(503);
    let row = webhook(1, &hook.url());
    pg.enqueue(std::slice::from_ref(&row), &[], now_ms()).await.expect("enqueue");
    let (handle, stop) = start(&pg, DispatcherConfig::new(8, Duration::from_secs(2)));
    wait_state(&pg, &row.id, "sent", 20).await;
    let got: Vec<u16> = hook.received().iter().map(|r| r.status).collect();
    assert_eq!(got, [503, 200]);
    assert_eq!(handle.stats().retried, 1);
    let _ = stop.send(());
    within(10, "dispatcher join", handle.join()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_claimed_by_an_instance_that_died_waits_for_the_end_of_its_lease() {
    let pg = outbox().await;
    let hook = WebhookReceiver::start(Some("s3cret")).await;
    let row = webhook(1, &hook.url());
    pg.enqueue(std::slice::from_ref(&row), &[], now_ms()).await.expect("enqueue");
    // Another instance claims it with a 5 s lease and dies before any attempt.
    let claimed_at = Instant::now();
    let claimed = pg.claim(Channel::Webhook, now_ms(), 10, Duration::from_secs(5)).await;
    assert_eq!(claimed.expect("claim").len(), 1);
    let mut config = DispatcherConfig::new(8, Duration::from_secs(2));
    config.lease = Duration::from_secs(5);
    config.poll_interval = Duration::from_millis(200);
    let (handle, stop) = start(&pg, config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(hook.received().is_empty(), "attempted while another instance held the lease");
    hook.wait_for(1, Duration::from_secs(15)).await;
    assert!(claimed_at.elapsed() >= Duration::from_secs(5), "attempted before the lease ended");
    wait_state(&pg, &row.id, "sent", 10).await;
    let _ = stop.send(());
    within(10, "dispatcher join", handle.join()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_busy_target_are_given_back_not_held_for_the_lease() {
    let pg = outbox().await;
    let hook = WebhookReceiver::start(Some("s3cret")).await;
    let rows: Vec<NewDelivery> = (0..4).map(|i| webhook(i, &hook.url())).collect();
    pg.enqueue(&rows, &[], now_ms()).await.expect("enqueue");
    // Four slots for webhooks, one per target: three of the four rows claimed at once find
    // their target busy. With a lease of an hour, only giving them back lets them go.
    let config = one_webhook_slot_per_target(Duration::from_secs(3600));
    let (handle, stop) = start(&pg, config);
    each_sent_once(&pg, &rows, &hook).await;
    let _ = stop.send(());
    within(10, "dispatcher join", handle.join()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_handed_over_are_leased_to_this_instance_and_sent_without_a_claim() {
    let pg = outbox().await;
    let hook = WebhookReceiver::start(Some("s3cret")).await;
    let handoff = Arc::new(Handoff::default());
    let lease = Duration::from_secs(3600);
    let writer = pg.clone().handing_over(handoff.clone(), lease);
    let rows: Vec<NewDelivery> = (0..4).map(|i| webhook(i, &hook.url())).collect();
    assert_eq!(writer.enqueue(&rows, &[], now_ms()).await.expect("enqueue"), 4);
    // Leased for an hour: no claim (of another instance, or this one's) returns them.
    let claimed = pg.claim(Channel::Webhook, now_ms(), 10, lease).await.expect("claim");
    assert!(claimed.is_empty(), "a claim returned rows leased to the writer: {claimed:?}");
    assert!(!handoff.is_empty(), "the rows are handed over");
    // One slot per target: the first row starts, the three others are given back (due
    // now) and claimed; with the hour-long lease nothing else could send them.
    let config = one_webhook_slot_per_target(lease);
    let (handle, stop) = start_with(&pg, config, handoff);
    each_sent_once(&pg, &rows, &hook).await;
    let _ = stop.send(());
    within(10, "dispatcher join", handle.join()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_handed_over_and_not_started_are_given_back_at_shutdown() {
    let pg = outbox().await;
    let handoff = Arc::new(Handoff::default());
    let lease = Duration::from_secs(3600);
    let writer = pg.clone().handing_over(handoff.clone(), lease);
    let url = "http://127.0.0.1:9/never";
    let rows: Vec<NewDelivery> = (0..3).map(|i| webhook(i, url)).collect();
    writer.enqueue(&rows, &[], now_ms()).await.expect("enqueue");
    // Stopped before its first turn: the handed-over rows are given back, not left leased.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let _ = stop_tx.send(());
    let mut s = Settings::default();
    s.delivery.backoff_initial_ms = 100;
    let live = Arc::new(ArcSwap::from_pointee(s.live_part()));
    let senders = Senders {
        push: None,
        hub: PushHub::new(8),
        webhook: Arc::new(WebhookSender::new(Duration::from_secs(5)).expect("client")),
    };
    let mut config = DispatcherConfig::new(8, Duration::from_secs(2));
    config.lease = lease;
    let handle = Dispatcher::spawn_on(
        OutboxDb::Postgres(pg.clone()),
        handoff.clone(),
        senders,
        config,
        live,
        async move {
            let _ = stop_rx.await;
        },
    );
    within(10, "dispatcher join", handle.join()).await;
    let claimed = pg.claim(Channel::Webhook, now_ms(), 10, lease).await.expect("claim");
    let mut ids: Vec<String> = claimed.into_iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(ids, rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    // A stopped dispatcher takes no more rows: later ones are written due.
    let late = webhook(9, url);
    writer.enqueue(std::slice::from_ref(&late), &[], now_ms()).await.expect("enqueue");
    assert!(handoff.is_empty(), "nothing is handed over to a stopped dispatcher");
    let claimed = pg.claim(Channel::Webhook, now_ms(), 10, lease).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, late.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_row_waiting_for_a_slot_is_given_back_before_its_lease_ends() {
    let pg = outbox().await;
    // A peer that accepts and never answers: the first attempt holds the target's only
    // slot for the webhook timeout (5 s).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let handoff = Arc::new(Handoff::default());
    let lease = Duration::from_secs(2);
    let writer = pg.clone().handing_over(handoff.clone(), lease);
    let rows: Vec<NewDelivery> = (0..2).map(|i| webhook(i, &url)).collect();
    let written_at = now_ms();
    writer.enqueue(&rows, &[], written_at).await.expect("enqueue");
    let lease_end = written_at + 2000;
    let config = one_webhook_slot_per_target(lease);
    let (handle, stop) = start_with(&pg, config, handoff);
    // Past half the lease (1 s), the waiting row is given back: its `next_attempt_at` is
    // no longer the lease's end set by the writer, which would let another instance
    // attempt it while this one still holds it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let conn = pg.store().get().await.expect("connection");
    let next: i64 = conn
        .query_one("SELECT next_attempt_at FROM deliveries WHERE id = $1", &[&rows[1].id])
        .await
        .expect("row")
        .get(0);
    assert_ne!(next, lease_end, "the waiting row still had the writer's lease");
    let _ = stop.send(());
    within(15, "dispatcher join", handle.join()).await;
}
