//! `GET /healthz` and `GET /metrics` over real HTTP on 127.0.0.1.

use scriptd::ops::health::{self, Health};
use scriptd::ops::telemetry;

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn local_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    telemetry::builder().expect("builder").build_recorder()
}

#[tokio::test]
async fn healthz_is_200_when_everything_is_up_and_503_naming_the_failing_part() {
    let recorder = local_recorder();
    let health = Health::with_standard_components();
    let base = serve(health::routes(health.clone(), recorder.handle())).await;
    let client = reqwest::Client::new();

    let res = client.get(format!("{base}/healthz")).send().await.expect("request");
    assert_eq!(res.status(), 503, "components are starting");

    health.set_up(health::STORE);
    health.set_up(health::BROKER);
    health.set_up(health::DISPATCHERS);
    let res = client.get(format!("{base}/healthz")).send().await.expect("request");
    assert_eq!(res.status(), 503, "the push connection is not up yet");
    health.set_up(health::PUSH);
    let res = client.get(format!("{base}/healthz")).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "status": "ok",
            "components": {
                "broker": {"state": "up"},
                "dispatchers": {"state": "up"},
                "push": {"state": "up"},
                "store": {"state": "up"}
            }
        })
    );

    health.set_down(health::BROKER, "connection refused");
    let res = client.get(format!("{base}/healthz")).send().await.expect("request");
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failing"], serde_json::json!(["broker"]));
    assert_eq!(
        body["components"]["broker"],
        serde_json::json!({"state": "down", "reason": "connection refused"})
    );
}

/// One registry for health and the watchdog: a component that stops beating is down in
/// `/healthz` with the reason, and `/livez` (restart me) fails only then, not when the
/// broker is merely unreachable.
#[tokio::test]
async fn a_stalled_component_is_down_in_healthz_and_livez_fails() {
    let recorder = local_recorder();
    let health = Health::with_standard_components();
    for c in [health::STORE, health::BROKER, health::PUSH, health::DISPATCHERS] {
        health.set_up(c);
    }
    let beat =
        health.watchdog().register(health::DISPATCHERS, std::time::Duration::from_millis(200));
    let base = serve(health::routes(health.clone(), recorder.handle())).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let res = client.get(format!("{base}{path}")).send().await.expect("request");
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.expect("json"))
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/livez").await, (200, serde_json::json!({"status": "alive"})));

    health.set_down(health::BROKER, "not connected to the MQTT broker");
    assert_eq!(get("/healthz").await.0, 503);
    assert_eq!(get("/livez").await.0, 200, "an unreachable broker is no reason to restart");
    health.set_up(health::BROKER);

    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, body) = get("/healthz").await;
    assert_eq!(status, 503);
    assert_eq!(body["failing"], serde_json::json!(["dispatchers"]));
    let reason = body["components"]["dispatchers"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("stalled: no progress for"), "{body}");
    assert_eq!(
        get("/livez").await,
        (503, serde_json::json!({"status": "stalled", "stalled": ["dispatchers"]}))
    );

    beat.beat();
    assert_eq!(get("/healthz").await.0, 200, "up again once it beats");
    assert_eq!(get("/livez").await.0, 200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_help_lines_labels_and_buckets() {
    let recorder = local_recorder();
    metrics::with_local_recorder(&recorder, || {
        telemetry::describe();
        metrics::counter!(telemetry::OCCURRENCES_RECEIVED).increment(3);
        metrics::counter!(telemetry::OCCURRENCES_REJECTED, telemetry::LABEL_REASON => "unknown_event")
            .increment(1);
        metrics::counter!(
            telemetry::DELIVERIES,
            telemetry::LABEL_REACTION => "telegram-message",
            telemetry::LABEL_OUTCOME => telemetry::OUTCOME_DELIVERED
        )
        .increment(2);
        metrics::gauge!(telemetry::MQTT_CONNECTED, telemetry::LABEL_CONNECTION => "events")
            .set(1.0);
        metrics::histogram!(telemetry::MATCH_DURATION).record(0.000_003);
        metrics::histogram!(telemetry::INDEX_REBUILD).record(0.2);
    });
    let base = serve(health::routes(Health::new(), recorder.handle())).await;
    let res = reqwest::get(format!("{base}/metrics")).await.expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some(health::PROMETHEUS_CONTENT_TYPE)
    );
    let text = res.text().await.expect("body");
    for line in [
        "# HELP scriptd_occurrences_received_total Occurrences received over MQTT.",
        "# TYPE scriptd_occurrences_received_total counter",
        "scriptd_occurrences_received_total 3",
        "scriptd_occurrences_rejected_total{reason=\"unknown_event\"} 1",
        "scriptd_deliveries_total{reaction=\"telegram-message\",outcome=\"delivered\"} 2",
        "scriptd_mqtt_connected{connection=\"events\"} 1",
        "scriptd_mqtt_connected{connection=\"push\"} 0",
        "scriptd_mqtt_reconnects_total{connection=\"events\"} 0",
        "scriptd_mqtt_reconnects_total{connection=\"push\"} 0",
        "# TYPE scriptd_match_duration_seconds histogram",
        "scriptd_match_duration_seconds_bucket{le=\"0.000005\"} 1",
        "scriptd_index_rebuild_seconds_count 1",
        "scriptd_build_info{version=",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Unlabelled series exist from the start.
    for name in [
        telemetry::OCCURRENCES_MATCHED,
        telemetry::OCCURRENCES_STALE,
        telemetry::OUTBOX_DEPTH,
        telemetry::OUTBOX_OLDEST_PENDING,
        telemetry::SCRIPTS_LOADED,
        telemetry::SCRIPTS_INVALID,
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
        assert!(text.contains(&format!("\n{name} 0")), "no zero sample for {name}:\n{text}");
    }
    // The MQTT series exist only per connection: an unlabelled one would sit at 0 forever
    // and fire the documented `scriptd_mqtt_connected == 0` alert.
    for name in [telemetry::MQTT_CONNECTED, telemetry::MQTT_RECONNECTS] {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
        assert!(!text.contains(&format!("\n{name} ")), "an unlabelled {name} series:\n{text}");
    }
}

#[test]
fn install_is_idempotent() {
    let first = telemetry::install().expect("install");
    let second = telemetry::install().expect("second install returns the same handle");
    metrics::counter!(telemetry::OCCURRENCES_STALE).increment(1);
    assert!(first.render().contains("scriptd_occurrences_stale_total 1"));
    assert!(second.render().contains("scriptd_occurrences_stale_total 1"));
}
