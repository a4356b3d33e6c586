//! The pipeline's components chained by hand, the way the daemon wires them (minus the
//! database and the index): an analytics publisher sends an occurrence, the source hands
//! it over, it is decoded, a push payload is built and published to the user's topic, a
//! client app receives it, and only then is the occurrence acknowledged. A rejected
//! payload is counted and acknowledged too (its outcome, "drop", is final).

use crate::support;

use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::{TestClient, within};
use chrono::Utc;
use scriptd::delivery::{PushParts, delivery_id, push_payload};
use scriptd::dispatch::mqtt_push::MqttPusher;
use scriptd::intake::occurrence::{EventRef, Reason, RejectionLog, decode};
use scriptd::mqtt::MqttConnectOptions;
use scriptd::source::mqtt::{MqttSource, SourceOptions};
use tokio::sync::oneshot;

async fn occurrence_to_push(port: u16) {
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd");
    connect.backoff_min = Duration::from_millis(50);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (source, mut rx) =
        MqttSource::spawn(SourceOptions::new(connect.clone(), "vms/analytics/events/#"), async {
            let _ = stop_rx.await;
        });
    let pusher = MqttPusher::spawn(
        &connect,
        "scriptd-push",
        "vms/users",
        Duration::from_secs(5),
        std::future::pending(),
    );
    let mut sub = source.subscribed();
    within(10, "source subscribed", sub.wait_for(|s| *s)).await.unwrap();
    let mut up = pusher.connected();
    within(10, "pusher connected", up.wait_for(|c| *c)).await.unwrap();

    let mut app = TestClient::connect(port, "client-app-42").await;
    app.subscribe("vms/users/42/reactions").await;
    let analytics = TestClient::connect(port, "analytics").await;
    analytics.publish("vms/analytics/events/17", "not json").await;
    analytics
        .publish(
            "vms/analytics/events/17",
            r#"{"id":"occ-1","event_id":1,"camera_id":17,"occurred_at":"2026-11-27T16:30:05+05:00","data":{"plate":"A123BC"}}"#,
        )
        .await;

    let rejections = RejectionLog::default();
    let bad = within(10, "first message", rx.recv()).await.unwrap();
    let rejected = decode(&bad.topic, &bad.payload, Utc::now()).unwrap_err();
    assert_eq!(rejected.reason, Reason::NotJson);
    rejections.record(&bad.topic, &rejected);
    bad.ack.ack().await.unwrap();

    let m = within(10, "second message", rx.recv()).await.unwrap();
    let occ = decode(&m.topic, &m.payload, Utc::now()).unwrap();
    assert_eq!(occ.event, EventRef::Id(1));
    let did = delivery_id(&occ.id, 5, 42);
    let occurred_at = occ.occurred_at_rfc3339();
    let payload: serde_json::Value = serde_json::from_str(&push_payload(&PushParts {
        reaction: "show-camera-sidebar",
        delivery_id: &did,
        script_id: 5,
        script_title: "Gate",
        event_id: 1,
        event_name: "line_crossing",
        event_description: "Line crossing",
        event_color: "#07D4F0",
        occurred_at: &occurred_at,
        occurrence_id: &occ.id,
        camera_id: occ.camera_id,
        data: occ.data.as_ref(),
        data_truncated: false,
        snapshot_url: occ.snapshot_url.as_deref(),
    }))
    .unwrap();
    within(10, "push", pusher.push(42, &payload)).await.unwrap();
    // The outcome is durable (here: the broker has the push): acknowledge.
    within(5, "ack", m.ack.ack()).await.unwrap();

    let got = app.next(10).await;
    let v: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(v["delivery_id"], "occ-1:5:42");
    assert_eq!(v["occurred_at"], "2026-11-27T16:30:05+05:00");
    assert_eq!(v["data"]["plate"], "A123BC");

    let _ = stop.send(());
    within(10, "source stops", source.join()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_occurrence_to_push() {
    let port = support::free_port();
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).unwrap();
    occurrence_to_push(port).await;
}

#[tokio::test]
async fn mosquitto_occurrence_to_push() {
    let m = Mosquitto::start().await;
    occurrence_to_push(m.port()).await;
}
