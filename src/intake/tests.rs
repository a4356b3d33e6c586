use super::*;

/// A store with user 1 and one always-active script for event 1 with `cooldown` seconds,
/// and its live snapshot.
fn store_with_cooldown(dir: &std::path::Path, cooldown: u32) -> (crate::store::Store, Live) {
    use crate::store::users::{self, NewUser};
    use crate::store::{Store, scripts};
    let store =
        Store::migrate(&dir.join("t.db")).unwrap().with_busy_timeout(Duration::from_millis(20));
    store
        .write(|tx| {
            let user = NewUser {
                id: Some(1),
                login: "u1".into(),
                name: "u1".into(),
                parent_id: None,
                permissions: vec![],
            };
            users::add(tx, &user)?;
            let lookups = crate::script::Lookups::load(tx)?;
            let body = serde_json::json!({
                "title": "door", "event_id": 1, "reaction_id": 2, "status": "active",
                "cameras": null, "users": [1], "extra": {"cooldown_seconds": cooldown},
                "timetable": {"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]},
            });
            let valid = crate::script::validate(
                body.as_object().unwrap(),
                &lookups.context(chrono_tz::UTC),
            )
            .unwrap();
            scripts::insert_owned(tx, None, Some(1), &valid.input)
        })
        .unwrap();
    let live = Live::new(store.clone(), chrono_tz::UTC).unwrap();
    live.reload_blocking().unwrap();
    (store, live)
}

/// The daemon's intake over `store` (it loads the stored cooldown states, as at start).
fn intake(store: &crate::store::Store, live: &Live) -> Intake {
    let settings =
        Arc::new(ArcSwap::from_pointee(crate::settings::Settings::default().live_part()));
    Intake::new(
        store.clone(),
        Arc::new(Handoff::default()),
        live.clone(),
        settings,
        Arc::new(RejectionLog::default()),
    )
    .unwrap()
}

/// Sends a stream of (id, ms after `base`) on camera 7 through the intake, one message a
/// batch as the broker hands them over; returns the ids that planned a delivery.
async fn fire(intake: &mut Intake, stream: &[(String, i64)], base: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    for (id, at) in stream {
        let occurred = base + chrono::Duration::milliseconds(*at);
        let payload = serde_json::json!({"id": id, "event_id": 1, "camera_id": 7,
                                         "occurred_at": occurred.to_rfc3339()})
        .to_string();
        let batch = [("vms/analytics/events/7", payload.as_bytes())];
        let (outcomes, _) =
            intake.write_batch(&batch, base + chrono::Duration::seconds(30)).await.unwrap();
        match outcomes[..] {
            [Outcome::Matched { scripts: 1, deliveries: 1 }] => out.push(id.clone()),
            [Outcome::Matched { scripts: 1, deliveries: 0 }] => {}
            ref other => panic!("{id}: {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn cooldown_fires_once_per_window_and_a_replay_fires_the_same_ids() {
    // Every 0.5 s for 25 s, cooldown 10 s: fires at 0, 10 and 20 s.
    let stream: Vec<(String, i64)> = (0..50).map(|i| (format!("o{i}"), i * 500)).collect();
    let base = Utc::now() - chrono::Duration::seconds(30);
    let dir = tempfile::tempdir().unwrap();
    let (store, live) = store_with_cooldown(dir.path(), 10);
    let first = fire(&mut intake(&store, &live), &stream, base).await;
    assert_eq!(first, ["o0", "o20", "o40"]);
    // Replayed after a restart (the state is read back from the store): the same ids fire
    // again, which the outbox ignores as duplicates, so nothing new is sent.
    assert_eq!(fire(&mut intake(&store, &live), &stream, base).await, first);
    // A restart mid-stream keeps the state: the rest fires as before.
    let dir = tempfile::tempdir().unwrap();
    let (store, live) = store_with_cooldown(dir.path(), 10);
    let head = fire(&mut intake(&store, &live), &stream[..25], base).await;
    let tail = fire(&mut intake(&store, &live), &stream[25..], base).await;
    assert_eq!([head, tail].concat(), first);
    // No cooldown: nothing is silenced.
    let dir = tempfile::tempdir().unwrap();
    let (store, live) = store_with_cooldown(dir.path(), 0);
    assert_eq!(fire(&mut intake(&store, &live), &stream, base).await.len(), 50);
}

#[test]
fn the_firing_occurrence_redelivered_is_not_silenced() {
    let last = (1_000, "a".to_owned());
    assert!(!in_cooldown(Some(&last), 1_000, "a", 10));
    assert!(in_cooldown(Some(&last), 1_000, "b", 10));
    assert!(in_cooldown(Some(&last), 10_999, "b", 10));
    assert!(!in_cooldown(Some(&last), 11_000, "b", 10));
    assert!(!in_cooldown(None, 1_000, "b", 10));
}

#[tokio::test]
async fn a_failed_batch_write_leaves_no_cooldown_state_and_its_retry_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, live) = store_with_cooldown(dir.path(), 60);
    let mut intake = intake(&store, &live);
    let now = Utc::now();
    let payload = serde_json::json!({"id": "o1", "event_id": 1, "camera_id": 7,
                                     "occurred_at": now.to_rfc3339()})
    .to_string();
    let batch = [("vms/analytics/events/7", payload.as_bytes())];

    // Another writer holds the database: the batch is not written.
    let mut other = store.connect().unwrap();
    let held = other.hold_write_lock().unwrap();
    assert!(intake.write_batch(&batch, now).await.is_err());
    drop(held);
    // Its retry writes the delivery and the firing's cooldown state.
    let (_, added) = intake.write_batch(&batch, now).await.unwrap();
    assert_eq!(added, 1);
    let stored = crate::store::outbox::load_cooldowns(&store.connect().unwrap()).unwrap();
    let stored: Vec<(i64, String)> =
        stored.into_iter().map(|f| (f.camera_id, f.occurrence_id)).collect();
    assert_eq!(stored, [(7, "o1".to_owned())]);
}
