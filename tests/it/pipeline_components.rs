//! The pipeline's components wired as the daemon wires them (`app.rs`), over a real broker
//! and a temporary database: an analytics publisher sends an occurrence, the MQTT source
//! hands it to the daemon's intake loop (`intake::run`), which writes the delivery to the
//! outbox and only then acknowledges the message; the dispatcher publishes the push to the
//! user's topic and a client app receives it. A rejected payload is counted by the intake's
//! `RejectionLog` and acknowledged by the same loop (its outcome, "drop", is final).
//!
//! The order is observed on the daemon's own counters: while another connection holds the
//! database, the source writes no PUBACK for the occurrence and nothing is pushed.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::api::{self, always_body};
use crate::support::mosquitto::Mosquitto;
use crate::support::{TestClient, within};
use arc_swap::ArcSwap;
use chrono::{FixedOffset, SecondsFormat, Utc};
use scriptd::dispatch::hub::PushHub;
use scriptd::dispatch::mqtt_push::MqttPusher;
use scriptd::dispatch::webhook::WebhookSender;
use scriptd::dispatch::worker::{Dispatcher, DispatcherConfig, Senders};
use scriptd::intake::Intake;
use scriptd::intake::occurrence::{Reason, RejectionLog};
use scriptd::mqtt::MqttConnectOptions;
use scriptd::settings::Settings;
use scriptd::source::mqtt::{MqttSource, SourceOptions};
use scriptd::store::outbox::Handoff;
use tokio::sync::oneshot;

async fn occurrence_to_push(port: u16) {
    let api = api::start().await;
    let script = api.create(&always_body("Gate")).await;
    let live_settings = Arc::new(ArcSwap::from_pointee(Settings::default().live_part()));

    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd");
    connect.backoff_min = Duration::from_millis(50);
    let pusher = Arc::new(MqttPusher::spawn(
        &connect,
        "scriptd-push",
        "vms/users",
        Duration::from_secs(5),
        std::future::pending(),
    ));
    let handoff = Arc::new(Handoff::default());
    let senders = Senders {
        push: Some(pusher.clone()),
        hub: PushHub::default(),
        webhook: Arc::new(WebhookSender::new(Duration::from_secs(5)).unwrap()),
    };
    let dispatcher = Dispatcher::spawn(
        api.store.sqlite().unwrap().clone(),
        handoff.clone(),
        senders,
        DispatcherConfig::new(10, Duration::from_secs(1)),
        live_settings.clone(),
        std::future::pending(),
    );
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (source, rx) =
        MqttSource::spawn(SourceOptions::new(connect.clone(), "vms/analytics/events/#"), async {
            let _ = stop_rx.await;
        });
    let rejections = Arc::new(RejectionLog::default());
    let intake = Intake::new(
        api.store.sqlite().unwrap().clone(),
        handoff,
        api.live.clone(),
        live_settings,
        rejections.clone(),
    )
    .unwrap();
    let wake = dispatcher.clone();
    let replaced = Arc::new(tokio::sync::Notify::new());
    let intake_task =
        tokio::spawn(scriptd::intake::run(intake, rx, move || wake.notify(), || {}, replaced));
    let mut sub = source.subscribed();
    within(10, "source subscribed", sub.wait_for(|s| *s)).await.unwrap();
    let mut up = pusher.connected();
    within(10, "pusher connected", up.wait_for(|c| *c)).await.unwrap();

    let mut app = TestClient::connect(port, "client-app-1").await;
    app.subscribe("vms/users/1/reactions").await;
    let analytics = TestClient::connect(port, "analytics").await;

    // A rejected payload: counted by the intake, acknowledged by its loop.
    analytics.publish("vms/analytics/events/17", "not json").await;
    within(10, "the rejection is counted and acknowledged", async {
        while rejections.counted()[&Reason::NotJson] != 1 || source.acks_written() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // While another connection holds the database the occurrence cannot be made durable:
    // no PUBACK and no push until it is.
    let mut other = api.store.sqlite().unwrap().connect().unwrap();
    let held = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let occurred_at = Utc::now()
        .with_timezone(&FixedOffset::east_opt(5 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    let body = format!(
        r#"{{"id":"occ-1","event_id":5,"camera_id":17,"occurred_at":"{occurred_at}","data":{{"plate":"A123BC"}}}}"#
    );
    analytics.publish("vms/analytics/events/17", body.as_str()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(source.acks_written(), 1, "acknowledged before the delivery was written");
    let early = tokio::time::timeout(Duration::from_millis(200), app.next(1)).await;
    assert!(early.is_err(), "pushed before the delivery was written");
    drop(held);

    let got = app.next(10).await;
    let v: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(v["delivery_id"], format!("occ-1:{script}:1"));
    assert_eq!(v["occurred_at"], occurred_at.as_str());
    assert_eq!(v["data"]["plate"], "A123BC");
    within(10, "the occurrence is acknowledged", async {
        while source.acks_written() != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(rejections.counted().values().sum::<u64>(), 1, "only the bad payload is rejected");

    let _ = stop.send(());
    within(10, "source stops", source.join()).await;
    intake_task.abort();
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_occurrence_to_push() {
    let port = support::free_port();
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).unwrap();
    occurrence_to_push(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_occurrence_to_push() {
    let m = Mosquitto::start().await;
    occurrence_to_push(m.port()).await;
}
