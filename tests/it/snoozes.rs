//! Snoozes against the real daemon: scope `me` silences only the caller's pushes (its
//! sub-users still get theirs), `camera_id` limits it to one camera, `DELETE` resumes
//! delivery at once, and another account's script is 404.
//!
//! The daemon's users (see `support::daemon`): account A is 1 (root), 2 (sub-user of 1)
//! and 3 (sub-user of 2); account B is 4.

use std::time::{Duration, Instant};

use crate::support::TestClient;
use crate::support::daemon::{Daemon, call, script};
use reqwest::Method;
use serde_json::json;

const SIDEBAR: i64 = 2;
const FACE: i64 = 1;

fn occurrence(id: &str, camera: i64) -> Vec<u8> {
    json!({"id": id, "event_id": FACE, "camera_id": camera, "occurred_at": chrono::Utc::now().to_rfc3339()})
        .to_string()
        .into_bytes()
}

/// The push recipients the daemon planned for `occurrence_id` (`GET /occurrences/{id}`,
/// which reads either store), ascending; waits up to 10 s for at least one.
async fn recipients(d: &Daemon, occurrence_id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/occurrences/{occurrence_id}");
        let (_, v) = call(d, Method::GET, &path, &d.token, None).await;
        let mut rows: Vec<String> = v["data"]["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["recipient"].as_str().map(str::to_owned))
            .collect();
        rows.sort();
        if !rows.is_empty() || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::on_both_daemons! {
    async fn a_me_snooze_silences_only_the_caller_on_its_camera_until_deleted(d) {
        let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
        let id = d.create_script(&script("sidebar", SIDEBAR, FACE, &[1], all_day)).await["id"]
            .as_i64()
            .expect("script id");
        let vms = TestClient::connect(d.mqtt_port, "vms-snooze").await;
        vms.publish("vms/analytics/events/3", occurrence("before", 3)).await;
        assert_eq!(recipients(&d, "before").await, ["1", "2", "3"]);

        let path = format!("/scripts/{id}/snoozes");
        let body = json!({"scope": "me", "camera_id": 3, "minutes": 30});
        let (status, other) = call(&d, Method::POST, &path, &d.token_4, Some(&body)).await;
        assert_eq!(status, 404, "another account's script: {other}");
        let (status, made) = call(&d, Method::POST, &path, &d.token, Some(&body)).await;
        assert_eq!(status, 201, "{made}");
        let snooze_id = made["data"]["id"].as_i64().expect("snooze id");
        let (_, listed) = call(&d, Method::GET, &path, &d.token, None).await;
        assert_eq!(listed["data"][0]["scope"], "me", "{listed}");
        assert_eq!(listed["data"][0]["camera_id"], 3, "{listed}");
        let cli = d.cli(&["snooze", "list"]);
        assert!(
            cli.contains(&format!("snooze {snooze_id}: script {id} scope me by user 1 camera 3 until")),
            "{cli}"
        );

        // Live within a second of the change.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        vms.publish("vms/analytics/events/3", occurrence("snoozed", 3)).await;
        assert_eq!(
            recipients(&d, "snoozed").await,
            ["2", "3"],
            "the caller's sub-users still get pushes"
        );
        vms.publish("vms/analytics/events/3", occurrence("other-camera", 5)).await;
        assert_eq!(
            recipients(&d, "other-camera").await,
            ["1", "2", "3"],
            "camera_id limits the snooze"
        );
        let metrics = d.metrics().await;
        assert!(
            metrics.contains("scriptd_occurrences_suppressed_total{reason=\"snooze\"} 1"),
            "{metrics}"
        );

        let (status, _) =
            call(&d, Method::DELETE, &format!("{path}/{snooze_id}"), &d.token, None).await;
        assert_eq!(status, 204);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        vms.publish("vms/analytics/events/3", occurrence("resumed", 3)).await;
        assert_eq!(recipients(&d, "resumed").await, ["1", "2", "3"], "DELETE resumes delivery");
        let (status, _) =
            call(&d, Method::DELETE, &format!("{path}/{snooze_id}"), &d.token, None).await;
        assert_eq!(status, 404);
    }
}
