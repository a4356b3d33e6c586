use super::*;

/// Runs a stream of (id, occurred_at ms) through the decision, as the intake does,
/// starting from `state`; returns the ids that fired.
fn fire(state: &mut Option<(i64, String)>, stream: &[(String, i64)], cooldown: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (id, at) in stream {
        if in_cooldown(state.as_ref(), *at, id, cooldown) {
            continue;
        }
        *state = Some((*at, id.clone()));
        out.push(id.clone());
    }
    out
}

#[test]
fn cooldown_fires_once_per_window_and_a_replay_fires_the_same_ids() {
    // Every 0.5 s for 25 s, cooldown 10 s: fires at 0, 10 and 20 s.
    let stream: Vec<(String, i64)> = (0..50).map(|i| (format!("o{i}"), i * 500)).collect();
    let mut state = None;
    let first = fire(&mut state, &stream, 10);
    assert_eq!(first, ["o0", "o20", "o40"]);
    // Replayed after a restart (state kept): the same ids fire again, which the outbox
    // ignores as duplicates, so nothing new is sent.
    assert_eq!(fire(&mut state, &stream, 10), first);
    // A restart mid-stream keeps the state: the rest fires as before.
    let mut state = None;
    let head = fire(&mut state, &stream[..25], 10);
    let tail = fire(&mut state, &stream[25..], 10);
    assert_eq!([head, tail].concat(), first);
    // No cooldown: nothing is silenced.
    assert_eq!(fire(&mut None, &stream, 0).len(), 50);
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
    use crate::store::users::{self, NewUser};
    use crate::store::{Store, scripts};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db"))
        .unwrap()
        .with_busy_timeout(Duration::from_millis(20));
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
                "cameras": null, "users": [1], "extra": {"cooldown_seconds": 60},
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
    let settings =
        Arc::new(ArcSwap::from_pointee(crate::settings::Settings::default().live_part()));
    let mut intake = Intake::new(
        store.clone(),
        Arc::new(Handoff::default()),
        live,
        settings,
        Arc::new(RejectionLog::default()),
    )
    .unwrap();
    let now = Utc::now();
    let payload = serde_json::json!({"id": "o1", "event_id": 1, "camera_id": 7,
                                     "occurred_at": now.to_rfc3339()})
    .to_string();
    let batch = [("vms/analytics/events/7", payload.as_bytes())];

    // Another writer holds the database: the batch is not written.
    let mut other = store.connect().unwrap();
    let held = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
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
