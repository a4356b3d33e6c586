use super::*;

#[test]
fn targets_round_trip_and_keep_secrets() {
    let targets = [
        Target::Push { user_id: 42 },
        Target::Telegram {
            bot_token: Secret::new("123:secret"),
            chat_id: "-100".into(),
            text: "hi".into(),
            photo_url: Some("https://x/y.jpg".into()),
        },
        Target::Webhook { url: "http://h/hook".into(), secret: Some(Secret::new("k")) },
        Target::Webhook { url: "http://h/hook".into(), secret: None },
    ];
    for t in targets {
        let json = t.to_json();
        assert_eq!(Target::from_json(&json).unwrap(), t, "{json}");
        assert!(!format!("{t:?}").contains("123:secret"));
    }
}

#[test]
fn garbage_targets_are_errors_without_their_text() {
    let e = Target::from_json(r#"{"kind":"telegram","bot_token":"123:secret"}"#).unwrap_err();
    assert!(!e.contains("secret"), "{e}");
    assert!(Target::from_json("nonsense").is_err());
    assert!(Target::from_json(r#"{"kind":"fax"}"#).is_err());
}

#[test]
fn rows_without_a_target_are_pushes_for_push_reactions_only() {
    assert_eq!(target_of(SqlValue::Null, "sound", "7"), Ok(Target::Push { user_id: 7 }));
    assert!(target_of(SqlValue::Null, "webhook", "7").is_err());
    assert!(target_of(SqlValue::Integer(3), "sound", "7").is_err());
}

/// A Telegram target and a webhook target (to an unused loopback port).
fn telegram_and_webhook() -> (Target, Target) {
    let tg = Target::Telegram {
        bot_token: Secret::new("1:t"),
        chat_id: "5".into(),
        text: "t".into(),
        photo_url: None,
    };
    (tg, Target::Webhook { url: "http://127.0.0.1:1/".into(), secret: None })
}

#[test]
fn expiry_ends_old_pending_rows_per_channel_and_a_late_success_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db")).unwrap();
    let handoff = Arc::new(Handoff::default());
    let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    let row = |id: &str, target: Target| NewDelivery {
        id: id.into(),
        occurrence_id: "o".into(),
        script_id: 1,
        reaction: "r".into(),
        recipient: "x".into(),
        lane: String::new(),
        payload: "{}".into(),
        target,
    };
    let (tg, hook) = telegram_and_webhook();
    let t0 = 1_000_000;
    writer
        .enqueue(&[row("p", Target::Push { user_id: 1 }), row("t", tg), row("w", hook)], t0)
        .unwrap();
    let mut conn = store.connect().unwrap();
    let after = crate::settings::ExpireAfter { push: 300, telegram: 900, webhook: 0 };
    // 300 s old: nothing yet (strictly older than the limit expires).
    assert!(expire(&conn, t0 + 300_000, &after).unwrap().is_empty());
    assert_eq!(expire(&conn, t0 + 300_001, &after).unwrap(), vec![("push", 1)]);
    let due_ids = |c: &Conn, now| -> Vec<String> {
        due(c, now, 10).unwrap().into_iter().map(|r| r.id).collect()
    };
    assert_eq!(due_ids(&conn, t0 + 300_001), ["t", "w"]);
    // Telegram after 900 s; webhooks never.
    assert_eq!(expire(&conn, t0 + 10_000_000, &after).unwrap(), vec![("telegram", 1)]);
    assert_eq!(due_ids(&conn, t0 + 10_000_000), ["w"]);
    let state = |c: &Conn, id: &str| -> String {
        c.query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    assert_eq!(state(&conn, "p"), "expired");
    // An attempt started before the expiry that succeeds afterwards is recorded sent.
    record(&mut conn, &[(RowRef::Id("t".into()), Recorded::Sent)], t0 + 10_000_001).unwrap();
    assert_eq!(state(&conn, "t"), "sent");
    // A failure after the expiry leaves it expired.
    record(
        &mut conn,
        &[(RowRef::Id("p".into()), Recorded::Failed { reason: "x".into() })],
        t0 + 10_000_001,
    )
    .unwrap();
    assert_eq!(state(&conn, "p"), "expired");
}

#[test]
fn coalescing_replaces_a_chats_queued_messages_of_one_script_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db")).unwrap();
    let handoff = Arc::new(Handoff::default());
    let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    let tg = |id: &str, script: i64, camera: i64, at: &str| NewDelivery {
        id: id.into(),
        occurrence_id: id.into(),
        script_id: script,
        reaction: "telegram-message".into(),
        recipient: "5".into(),
        lane: "tg:x:5".into(),
        payload: serde_json::json!({
            "script": {"id": script, "title": format!("Line {script}")},
            "camera_id": camera,
            "occurred_at": at,
        })
        .to_string(),
        target: Target::Telegram {
            bot_token: Secret::new("1:t"),
            chat_id: "5".into(),
            text: id.into(),
            photo_url: None,
        },
    };
    writer
        .enqueue(
            &[
                tg("a", 1, 7, "2026-01-01T10:00:00Z"),
                tg("b", 1, 8, "2026-01-01T10:00:01Z"),
                tg("c", 2, 7, "2026-01-01T10:00:02Z"),
                tg("d", 1, 7, "2026-01-01T10:00:03Z"),
            ],
            1,
        )
        .unwrap();
    let mut conn = store.connect().unwrap();
    let mut head = due(&conn, 10, 10).unwrap().remove(0);
    assert_eq!(head.id, "a");
    assert_eq!(coalesce(&mut conn, &mut head, 10).unwrap(), 2);
    let Ok(Target::Telegram { text, .. }) = &head.target else { panic!("not telegram") };
    assert_eq!(
        text,
        "Line 1\n3 occurrences\nCameras: 7, 8\nFirst: 2026-01-01T10:00:00Z\nLast: 2026-01-01T10:00:03Z"
    );
    let rows: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT id, state, coalesced_into FROM deliveries ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let a = Some("a".to_owned());
    assert_eq!(
        rows,
        [
            ("a".into(), "pending".into(), None),
            ("b".into(), "coalesced".into(), a.clone()),
            ("c".into(), "pending".into(), None),
            ("d".into(), "coalesced".into(), a),
        ]
    );
    // The stored head is the summary (a crash before the attempt sends the summary).
    assert_eq!(due(&conn, 10, 10).unwrap()[0].target, head.target);
    // Nothing more to coalesce: the head is unchanged.
    assert_eq!(coalesce(&mut conn, &mut head, 11).unwrap(), 0);
}

#[test]
fn a_claim_never_waits_for_the_write_lock_while_holding_the_hand_over() {
    // A writer holds SQLite's write lock, then needs the hand-over's lock to commit (as
    // `OutboxWriter::write` does). A claim that has to coalesce runs meanwhile: it may
    // wait for the write lock, but not while holding the hand-over's lock.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db"))
        .unwrap()
        .with_busy_timeout(std::time::Duration::from_secs(3));
    let handoff = Arc::new(Handoff::default());
    let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    let tg = |id: &str| NewDelivery {
        id: id.into(),
        occurrence_id: id.into(),
        script_id: 1,
        reaction: "telegram-message".into(),
        recipient: "5".into(),
        lane: "tg:x:5".into(),
        payload: "{}".into(),
        target: Target::Telegram {
            bot_token: Secret::new("1:t"),
            chat_id: "5".into(),
            text: id.into(),
            photo_url: None,
        },
    };
    writer.enqueue(&[tg("a"), tg("b")], now_ms_for_test()).unwrap();
    let mut holder = store.connect().unwrap();
    let write_lock = holder.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let claim = {
        let store = store.clone();
        let handoff = handoff.clone();
        std::thread::spawn(move || {
            let mut conn = store.connect().unwrap();
            claim_rows(
                &mut conn,
                &handoff,
                &[(Channel::Telegram, 10)],
                now_ms_for_test(),
                &crate::settings::ExpireAfter::default(),
                &std::collections::HashSet::new(),
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (got, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _queue = handoff.lock();
        got.send(()).ok();
    });
    let committed = rx.recv_timeout(std::time::Duration::from_secs(1)).is_ok();
    write_lock.commit().unwrap();
    let claimed = claim.join().unwrap();
    assert!(committed, "the claim held the hand-over's lock while waiting to write");
    let (_, coalesced, found) = claimed.unwrap();
    assert_eq!(coalesced, 1);
    assert_eq!(found[0].len(), 1);
}

fn now_ms_for_test() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[test]
fn a_write_without_waiting_is_made_only_when_nothing_can_make_it_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::migrate(&path).unwrap().with_busy_timeout(std::time::Duration::from_secs(3));
    let handoff = Arc::new(Handoff::default());
    let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    let now = now_ms_for_test();
    let pending = || {
        let conn = store.connect().unwrap();
        due(&conn, i64::MAX, 100).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>()
    };

    // Nothing in the way: written and handed over.
    let done = writer.try_enqueue_without_waiting(&[NewDelivery::test_push("a")], &[], now);
    assert_eq!(done.unwrap().unwrap(), 1);
    assert_eq!(handoff.take(10).len(), 1);

    // Another writer holds the lock: not made, nothing written, nothing handed over.
    let (locked, is_locked) = std::sync::mpsc::channel();
    let (go, release) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut conn = store.connect().unwrap();
            let lock = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
            locked.send(()).unwrap();
            release.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            lock.commit().unwrap();
        })
    };
    is_locked.recv().unwrap();
    let started = std::time::Instant::now();
    assert!(writer.try_enqueue_without_waiting(&[NewDelivery::test_push("b")], &[], now).is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "it waited for the lock");
    assert!(handoff.is_empty());
    // The usual write still waits for the lock (the busy timeout was restored).
    go.send(()).unwrap();
    assert_eq!(writer.enqueue(&[NewDelivery::test_push("b")], now).unwrap(), 1);
    holder.join().unwrap();
    assert_eq!(pending(), ["a", "b"]);

    // `synchronous = full` (a commit waits for the disk): never made.
    let full = Store::migrate(&path).unwrap().with_synchronous(crate::store::Synchronous::Full);
    let mut writer = OutboxWriter::new(&full, Arc::new(Handoff::default())).unwrap();
    assert!(writer.try_enqueue_without_waiting(&[NewDelivery::test_push("c")], &[], now).is_none());
    assert_eq!(pending(), ["a", "b"]);
}

#[test]
fn a_write_without_waiting_sees_a_replaced_file_found_by_another_holder_or_by_itself() {
    let replace = |path: &std::path::Path| {
        let other = path.with_file_name("other.db");
        Store::migrate(&other).unwrap();
        std::fs::rename(&other, path).unwrap();
    };
    let now = now_ms_for_test();

    // Another holder (the dispatcher's link) found the replacement: the next write is
    // rolled back at once, without waiting for its own look at the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::migrate(&path).unwrap();
    let handoff = Arc::new(Handoff::default());
    let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    let other_holder = store.connect().unwrap();
    let done = writer.try_enqueue_without_waiting(&[NewDelivery::test_push("a")], &[], now);
    assert_eq!(done.unwrap().unwrap(), 1, "the first write looks at the file and writes");
    assert_eq!(handoff.take(10).len(), 1);
    replace(&path);
    assert!(other_holder.is_stale());
    let done = writer.try_enqueue_without_waiting(&[NewDelivery::test_push("b")], &[], now);
    assert!(matches!(done, Some(Err(StoreError::Replaced))), "{done:?}");
    assert!(handoff.is_empty(), "a rolled-back write hands nothing over");
    let old: Vec<String> =
        due(&other_holder, i64::MAX, 100).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(old, ["a"], "nothing was committed to the old file after it was known");

    // Nobody else looks: the writer's own look, at most FILE_CHECK_EVERY later, finds it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::migrate(&path).unwrap();
    let mut writer = OutboxWriter::new(&store, Arc::new(Handoff::default())).unwrap();
    let done = writer.try_enqueue_without_waiting(&[NewDelivery::test_push("a")], &[], now);
    assert_eq!(done.unwrap().unwrap(), 1);
    replace(&path);
    std::thread::sleep(crate::store::FILE_CHECK_EVERY + std::time::Duration::from_millis(20));
    let done = writer.try_enqueue_without_waiting(&[NewDelivery::test_push("b")], &[], now);
    assert!(matches!(done, Some(Err(StoreError::Replaced))), "{done:?}");
}

#[test]
fn each_channel_is_claimed_from_its_own_index_of_due_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db")).unwrap();
    let conn = store.connect().unwrap();
    let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> String {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("; ")
    };
    for channel in Channel::ALL {
        let claim = plan(&claim::due_sql(channel.condition()), &[&1]);
        let index = format!("deliveries_due_{}", channel.name());
        // Read in the index's order: no pass over other channels' rows, no sort.
        assert!(claim.contains(&format!("SEARCH d USING INDEX {index} ")), "{claim}");
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");
    }
    let next = plan(&claim::next_due_sql(), &[&1]);
    for channel in Channel::ALL {
        let index = format!("SEARCH d USING INDEX deliveries_due_{} ", channel.name());
        assert!(next.contains(&index), "{next}");
    }

    // Each channel's index holds its rows, a row without a target in push's.
    let (tg, hook) = telegram_and_webhook();
    let mut writer = OutboxWriter::new(&store, Arc::new(Handoff::default())).unwrap();
    let rows: Vec<NewDelivery> = [("p", Target::Push { user_id: 1 }), ("t", tg), ("w", hook)]
        .into_iter()
        .map(|(id, target)| NewDelivery { id: id.into(), target, ..NewDelivery::test_push(id) })
        .collect();
    writer.enqueue(&rows, 5).unwrap();
    conn.execute(
        "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane, payload,
           state, attempts, next_attempt_at, created_at, updated_at, target)
         VALUES ('old', 'o', 1, 'sound', '1', '', '{}', 'pending', 0, 9, 9, 9, NULL)",
        [],
    )
    .unwrap();
    for channel in Channel::ALL {
        let ids: Vec<String> = conn
            .prepare(&format!(
                "SELECT d.id FROM deliveries d INDEXED BY deliveries_due_{}
                 WHERE d.state = 'pending' AND {} ORDER BY d.next_attempt_at",
                channel.name(),
                channel.condition()
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let by_claim: Vec<String> =
            due_in(&conn, channel, 100, 10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, by_claim, "{}", channel.name());
        let expected: &[&str] = match channel {
            Channel::Push => &["p", "old"],
            Channel::Telegram => &["t"],
            Channel::Webhook => &["w"],
        };
        assert_eq!(ids, expected, "{}", channel.name());
    }
    assert_eq!(next_due_after(&conn, 5).unwrap(), Some(9));
    assert_eq!(next_due_after(&conn, 9).unwrap(), None);
}

#[test]
fn a_claim_is_not_prepared_again_when_its_limit_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("t.db")).unwrap();
    let mut writer = OutboxWriter::new(&store, Arc::new(Handoff::default())).unwrap();
    let rows: Vec<NewDelivery> = (0..5).map(|i| NewDelivery::test_push(&i.to_string())).collect();
    writer.enqueue(&rows, 5).unwrap();
    let conn = store.connect().unwrap();
    // The dispatcher asks for its free slots, a different number on nearly every claim.
    for limit in [1, 3, 2, 5, 4] {
        assert_eq!(due_in(&conn, Channel::Push, 10, limit).unwrap().len(), limit);
    }
    // The claim's own statement, from the connection's cache: run by all five claims (a
    // claim that prepared its own statement, or put the limit into the SQL text, would
    // leave a fresh one here, never run), and never prepared again.
    let stmt = conn.prepare_cached(&claim::due_sql(Channel::Push.condition())).unwrap();
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 5, "the claims' statement");
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
}
