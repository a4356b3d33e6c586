//! One set of outbox cases, run against both backends of [`OutboxBackend`]: SQLite (a
//! temporary file) and PostgreSQL (a database of its own on the tests' real server,
//! `support::postgres`). Each case is a generic function; `conformance!` instantiates it
//! once per backend (`outbox_conformance::sqlite::<case>`,
//! `outbox_conformance::postgres::<case>`).

use std::time::Duration;

use scriptd::secret::Secret;
use scriptd::settings::{DatabaseSettings, DatabaseUrl, ExpireAfter};
use scriptd::store::Store;
use scriptd::store::outbox::backend::OutboxBackend;
use scriptd::store::outbox::{Channel, Claimed, Fired, NewDelivery, Recorded, RowRef, Target};
use scriptd::store::postgres::outbox::{ChatPacing, PgOutbox};
use scriptd::store::sqlite::SqliteOutbox;

use crate::support::postgres::server;

const LEASE: Duration = Duration::from_secs(30);
const T0: i64 = 1_000_000;

fn row(id: &str, target: Target) -> NewDelivery {
    let lane = match &target {
        Target::Telegram { chat_id, .. } => format!("tg:1:{chat_id}"),
        _ => String::new(),
    };
    NewDelivery {
        id: id.into(),
        occurrence_id: id.into(),
        script_id: 1,
        reaction: "sound".into(),
        recipient: "42".into(),
        lane,
        payload: format!(r#"{{"delivery_id":"{id}"}}"#),
        target,
    }
}

fn push(id: &str) -> NewDelivery {
    row(id, Target::Push { user_id: 42 })
}

fn telegram(id: &str, script: i64, camera: i64) -> NewDelivery {
    let mut d = row(
        id,
        Target::Telegram {
            bot_token: Secret::new("1:t"),
            chat_id: "5".into(),
            text: format!("message {id}"),
            photo_url: None,
        },
    );
    d.script_id = script;
    d.reaction = "telegram-message".into();
    d.payload = serde_json::json!({
        "script": {"id": script, "title": format!("Line {script}")},
        "camera_id": camera,
        "occurred_at": format!("2026-12-01T10:00:0{camera}Z"),
    })
    .to_string();
    d
}

fn webhook(id: &str) -> NewDelivery {
    row(id, Target::Webhook { url: "http://127.0.0.1:1/".into(), secret: None })
}

fn ids(rows: &[Claimed]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

async fn state<B: OutboxBackend>(b: &B, id: &str) -> (String, Option<String>) {
    b.state_of(id).await.unwrap().unwrap_or_else(|| panic!("no row {id}"))
}

async fn insert_is_idempotent<B: OutboxBackend>(b: &B) {
    assert_eq!(b.enqueue(&[push("a"), push("b")], &[], T0).await.unwrap(), 2);
    assert_eq!(b.enqueue(&[push("a"), push("c")], &[], T0).await.unwrap(), 1, "a is known");
    assert_eq!(b.enqueue(&[], &[], T0).await.unwrap(), 0);
    let got = b.claim(Channel::Push, T0, 10, LEASE).await.unwrap();
    assert_eq!(ids(&got), ["a", "b", "c"]);
    assert!(got.iter().all(|r| r.attempts == 0 && r.target == Ok(Target::Push { user_id: 42 })));
}

async fn claims_go_by_due_time_then_enqueue_order_per_channel<B: OutboxBackend>(b: &B) {
    b.enqueue(&[push("late")], &[], T0 + 100).await.unwrap();
    b.enqueue(&[push("early"), webhook("w")], &[], T0).await.unwrap();
    b.enqueue(&[push("late2")], &[], T0 + 100).await.unwrap();
    assert!(b.claim(Channel::Push, T0 - 1, 10, LEASE).await.unwrap().is_empty(), "none due");
    let first = b.claim(Channel::Push, T0 + 100, 2, LEASE).await.unwrap();
    assert_eq!(ids(&first), ["early", "late"], "due time, then enqueue order; the limit holds");
    let rest = b.claim(Channel::Push, T0 + 100, 10, LEASE).await.unwrap();
    assert_eq!(ids(&rest), ["late2"], "claimed rows are leased, not claimed again");
    let hooks = b.claim(Channel::Webhook, T0 + 100, 10, LEASE).await.unwrap();
    assert_eq!(ids(&hooks), ["w"]);
    assert!(b.claim(Channel::Telegram, T0 + 100, 10, LEASE).await.unwrap().is_empty());
}

async fn a_lane_leaves_in_order_one_at_a_time<B: OutboxBackend>(b: &B) {
    b.enqueue(&[telegram("t1", 1, 1), telegram("t2", 2, 2)], &[], T0).await.unwrap();
    let head = b.claim(Channel::Telegram, T0, 10, LEASE).await.unwrap();
    assert_eq!(ids(&head), ["t1"], "only the lane's head");
    // Even once t1's lease ends, t2 waits for t1's outcome.
    let again = b.claim(Channel::Telegram, T0 + 30_000, 10, LEASE).await.unwrap();
    assert_eq!(ids(&again), ["t1"]);
    b.record(&[(RowRef::Rowid(again[0].rowid), Recorded::Sent)], T0 + 30_001).await.unwrap();
    let next = b.claim(Channel::Telegram, T0 + 30_001, 10, LEASE).await.unwrap();
    assert_eq!(ids(&next), ["t2"]);
}

async fn a_lease_that_ends_makes_the_row_due_again<B: OutboxBackend>(b: &B) {
    b.enqueue(&[push("a")], &[], T0).await.unwrap();
    assert_eq!(ids(&b.claim(Channel::Push, T0, 10, LEASE).await.unwrap()), ["a"]);
    assert!(b.claim(Channel::Push, T0 + 29_999, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(b.next_due_after(T0).await.unwrap(), Some(T0 + 30_000), "due at the lease's end");
    let again = b.claim(Channel::Push, T0 + 30_000, 10, LEASE).await.unwrap();
    assert_eq!(ids(&again), ["a"], "the claimer died: the row is attempted again");
    assert_eq!(again[0].attempts, 0, "a claim is not an attempt");
}

async fn outcomes_are_recorded_in_groups<B: OutboxBackend>(b: &B) {
    b.enqueue(&[push("s"), push("f"), push("r"), push("d")], &[], T0).await.unwrap();
    let got = b.claim(Channel::Push, T0, 10, LEASE).await.unwrap();
    let by = |id: &str| RowRef::Rowid(got.iter().find(|r| r.id == id).unwrap().rowid);
    b.record(
        &[
            (by("s"), Recorded::Sent),
            (RowRef::Id("f".into()), Recorded::Failed { reason: "403 Forbidden".into() }),
            (by("r"), Recorded::Retry { reason: "timeout".into(), next_attempt_at: T0 + 5_000 }),
            (by("d"), Recorded::Deferred { next_attempt_at: T0 + 1_000 }),
        ],
        T0 + 10,
    )
    .await
    .unwrap();
    assert_eq!(state(b, "s").await.0, "sent");
    assert_eq!(state(b, "f").await, ("failed".into(), Some("403 Forbidden".into())));
    assert_eq!(state(b, "r").await, ("pending".into(), Some("timeout".into())));
    assert_eq!(b.next_due_after(T0 + 10).await.unwrap(), Some(T0 + 1_000));
    let d = b.claim(Channel::Push, T0 + 1_000, 10, LEASE).await.unwrap();
    assert_eq!((ids(&d), d[0].attempts), (vec!["d"], 0), "deferred: not an attempt");
    let r = b.claim(Channel::Push, T0 + 5_000, 10, LEASE).await.unwrap();
    assert_eq!((ids(&r), r[0].attempts), (vec!["r"], 1), "retried: one attempt made");
    // A finished row is not changed by a late outcome.
    b.record(&[(RowRef::Id("s".into()), Recorded::Failed { reason: "x".into() })], T0 + 6_000)
        .await
        .unwrap();
    assert_eq!(state(b, "s").await.0, "sent");
}

async fn expiry_ends_old_pending_rows_per_channel<B: OutboxBackend>(b: &B) {
    let tg = telegram("t", 1, 1);
    b.enqueue(&[push("p"), tg, webhook("w")], &[], T0).await.unwrap();
    let after = ExpireAfter { push: 300, telegram: 900, webhook: 0 };
    assert!(b.expire(T0 + 300_000, &after).await.unwrap().is_empty(), "not older yet");
    assert_eq!(b.expire(T0 + 300_001, &after).await.unwrap(), [("push", 1)]);
    assert_eq!(
        state(b, "p").await,
        ("expired".into(), Some("expired: not delivered within 300 s".into()))
    );
    assert!(b.claim(Channel::Push, T0 + 300_001, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(b.expire(T0 + 10_000_000, &after).await.unwrap(), [("telegram", 1)]);
    assert_eq!(ids(&b.claim(Channel::Webhook, T0 + 10_000_000, 10, LEASE).await.unwrap()), ["w"]);
    // An attempt started in time that succeeds late counts; a late failure does not.
    b.record(&[(RowRef::Id("t".into()), Recorded::Sent)], T0 + 10_000_001).await.unwrap();
    assert_eq!(state(b, "t").await, ("sent".into(), None));
    b.record(&[(RowRef::Id("p".into()), Recorded::Failed { reason: "x".into() })], T0 + 1)
        .await
        .unwrap();
    assert_eq!(state(b, "p").await.0, "expired");
}

async fn coalescing_replaces_a_chats_queue_of_one_script_with_a_summary<B: OutboxBackend>(b: &B) {
    let rows = [telegram("h", 7, 1), telegram("x", 7, 2), telegram("o", 8, 3), telegram("y", 7, 3)];
    b.enqueue(&rows, &[], T0).await.unwrap();
    b.enqueue(&[telegram("z", 7, 4)], &[], T0 + 50).await.unwrap();
    let mut head = b.claim(Channel::Telegram, T0, 10, LEASE).await.unwrap();
    assert_eq!(ids(&head), ["h"]);
    assert_eq!(b.coalesce(&mut head[0], T0 + 60).await.unwrap(), 3);
    for id in ["x", "y", "z"] {
        assert_eq!(state(b, id).await, ("coalesced".into(), Some("h".into())), "{id}");
    }
    assert_eq!(state(b, "o").await.0, "pending", "another script's row stays");
    let Ok(Target::Telegram { text, .. }) = &head[0].target else { panic!("{head:?}") };
    assert!(text.starts_with("Line 7\n4 occurrences\nCameras: 1, 2, 3, 4\n"), "{text}");
    assert!(text.ends_with("Last: 2026-12-01T10:00:04Z"), "{text}");
    // Nothing more to coalesce; the summary is sent, then the other script's row is head.
    assert_eq!(b.coalesce(&mut head[0], T0 + 61).await.unwrap(), 0);
    b.record(&[(RowRef::Rowid(head[0].rowid), Recorded::Sent)], T0 + 70).await.unwrap();
    assert_eq!(ids(&b.claim(Channel::Telegram, T0 + 70, 10, LEASE).await.unwrap()), ["o"]);
    // The summary expires with its newest occurrence (created at T0 + 50).
    assert_eq!(
        b.expire(T0 + 900_001, &ExpireAfter { push: 0, telegram: 900, webhook: 0 }).await.unwrap(),
        [("telegram", 1)],
        "only o: h is sent"
    );
}

async fn cooldown_state_is_written_with_the_deliveries<B: OutboxBackend>(b: &B) {
    let fired = |at: i64, occ: &str| Fired {
        script_id: 3,
        camera_id: 17,
        occurred_at_ms: at,
        occurrence_id: occ.into(),
        cooldown_ms: 0,
    };
    assert_eq!(b.enqueue(&[push("a")], &[fired(T0, "a")], T0).await.unwrap(), 1);
    assert_eq!(b.load_cooldowns().await.unwrap(), [fired(T0, "a")]);
    b.enqueue(&[], &[fired(T0 + 9, "b")], T0).await.unwrap();
    assert_eq!(b.load_cooldowns().await.unwrap(), [fired(T0 + 9, "b")], "one row, replaced");
}

async fn finished_rows_are_pruned_pending_ones_kept<B: OutboxBackend>(b: &B) {
    b.enqueue(&[push("a"), push("b"), push("c")], &[], T0).await.unwrap();
    b.record(
        &[(RowRef::Id("a".into()), Recorded::Sent), (RowRef::Id("b".into()), Recorded::Sent)],
        T0 + 10,
    )
    .await
    .unwrap();
    assert_eq!(b.prune(T0 + 10, 10).await.unwrap(), 0, "updated at the cutoff: kept");
    assert_eq!(b.prune(T0 + 11, 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(b.prune(T0 + 11, 10).await.unwrap(), 1);
    assert!(b.state_of("a").await.unwrap().is_none() && b.state_of("b").await.unwrap().is_none());
    assert_eq!(state(b, "c").await.0, "pending");
}

async fn concurrent_claims_never_take_the_same_row<B: OutboxBackend>(b: &B) {
    let rows: Vec<NewDelivery> = (0..200).map(|i| push(&format!("r{i:03}"))).collect();
    b.enqueue(&rows, &[], T0).await.unwrap();
    // Four claimers at once (on PostgreSQL each on a connection of its own).
    let claimer = || async {
        let mut mine = Vec::new();
        loop {
            let got = b.claim(Channel::Push, T0, 7, LEASE).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|r| r.id));
        }
    };
    let all = futures_util::future::join_all((0..4).map(|_| claimer())).await;
    let mut ids: Vec<String> = all.into_iter().flatten().collect();
    let claimed = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((claimed, ids.len()), (200, 200), "every row claimed exactly once");
}

/// A fresh SQLite outbox (and the folder that holds it).
fn sqlite() -> (SqliteOutbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::migrate(&dir.path().join("scriptd.db")).expect("migrate");
    (SqliteOutbox::new(&store).expect("outbox"), dir)
}

/// A fresh PostgreSQL outbox in a database of its own.
async fn postgres() -> PgOutbox {
    let url = server().database();
    let settings = DatabaseSettings { url: Some(DatabaseUrl::new(url)), ..Default::default() };
    let store = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&store).await.expect("migrate");
    // The queue's semantics, without the shared Telegram pacing (its own test is in
    // `store_instances`): the local limiter paces SQLite's sends, not its claims.
    PgOutbox::new(store).with_chat_pacing(ChatPacing { chat_ms: 0, group_ms: 0 })
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (outbox, _dir) = super::sqlite();
                    super::$case(&outbox).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let outbox = super::postgres().await;
                    super::$case(&outbox).await;
                }
            )*
        }
    };
}

conformance!(
    insert_is_idempotent,
    claims_go_by_due_time_then_enqueue_order_per_channel,
    a_lane_leaves_in_order_one_at_a_time,
    a_lease_that_ends_makes_the_row_due_again,
    outcomes_are_recorded_in_groups,
    expiry_ends_old_pending_rows_per_channel,
    coalescing_replaces_a_chats_queue_of_one_script_with_a_summary,
    cooldown_state_is_written_with_the_deliveries,
    finished_rows_are_pruned_pending_ones_kept,
    concurrent_claims_never_take_the_same_row,
);
