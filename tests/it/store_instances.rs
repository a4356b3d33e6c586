//! The instance registry on a real PostgreSQL (`support::postgres`): one client id is held
//! by one live connection at a time, the holder is named, a crashed holder (its connection
//! ended without a goodbye) gives the id up at once, and the live list follows the
//! heartbeats.

use std::time::Duration;

use scriptd::settings::{DatabaseSettings, DatabaseUrl};
use scriptd::store::postgres::instances::{Identity, RegisterError, live, lock_key, register};
use scriptd::store::postgres::{PgStore, connect_settings, migrations};

use crate::support::postgres::server;

async fn store(url: &str) -> PgStore {
    let settings =
        DatabaseSettings { url: Some(DatabaseUrl::new(url.to_owned())), ..Default::default() };
    let store = connect_settings(&settings).await.expect("connect");
    migrations::migrate(&store).await.expect("migrate");
    store
}

fn identity(client_id: &str, host: &str, pid: i64) -> Identity {
    Identity { client_id: client_id.into(), host: host.into(), pid, version: "test".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_id_one_live_holder_and_a_crashed_holder_gives_it_up_at_once() {
    let url = server().database();
    // Two "hosts": two pools, as two processes would have.
    let (a, b) = (store(&url).await, store(&url).await);

    let held = register(&a, identity("scriptd-1", "vms-a", 101)).await.expect("first");
    match register(&b, identity("scriptd-1", "vms-b", 202)).await {
        Err(RegisterError::Held { client_id, holder }) => {
            assert_eq!(client_id, "scriptd-1");
            let holder = holder.expect("the holder's row");
            assert_eq!((holder.host.as_str(), holder.pid), ("vms-a", 101));
            let text = RegisterError::Held { client_id, holder: Some(holder) }.to_string();
            assert!(text.contains("on host vms-a"), "{text}");
        }
        other => panic!("a second holder of one client id: {other:?}"),
    }
    // Another client id is no conflict.
    let other = register(&b, identity("scriptd-2", "vms-b", 202)).await.expect("other id");
    let ids: Vec<String> = live(&b).await.expect("live").into_iter().map(|i| i.client_id).collect();
    assert_eq!(ids, ["scriptd-1", "scriptd-2"]);

    // The holder's process dies: its connection is terminated without a release (as when
    // the kernel closes a killed process's socket). The id is free again at once.
    let terminated = server().psql(
        url.rsplit('/').next().and_then(|d| d.split('?').next()).expect("db name"),
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
             WHERE locktype = 'advisory' AND granted
               AND ((classid::bigint << 32) | objid::bigint) = {}",
            lock_key("scriptd-1")
        ),
    );
    assert_eq!(terminated, "1", "the holder's lock connection");
    let mut retaken = None;
    for _ in 0..50 {
        match register(&b, identity("scriptd-1", "vms-b", 203)).await {
            Ok(r) => {
                retaken = Some(r);
                break;
            }
            Err(RegisterError::Held { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let retaken = retaken.expect("the id is free once its holder's connection ended");
    assert!(held.is_closed() || held.heartbeat().await.is_err(), "the old holder lost its lock");
    let now: Vec<(String, String, i64)> =
        live(&b).await.expect("live").into_iter().map(|i| (i.client_id, i.host, i.pid)).collect();
    assert_eq!(
        now,
        [("scriptd-1".into(), "vms-b".into(), 203), ("scriptd-2".into(), "vms-b".into(), 202)]
    );

    // A graceful stop deletes the row and frees the id; a silent one ages out of the list.
    retaken.release().await.expect("release");
    register(&a, identity("scriptd-1", "vms-a", 104))
        .await
        .expect("free after release")
        .heartbeat()
        .await
        .expect("beat");
    other.heartbeat().await.expect("beat");
    server().psql(
        url.rsplit('/').next().and_then(|d| d.split('?').next()).expect("db name"),
        "UPDATE scriptd_instances SET heartbeat_at = now() - interval '11 seconds'
         WHERE client_id = 'scriptd-2'",
    );
    let ids: Vec<String> = live(&a).await.expect("live").into_iter().map(|i| i.client_id).collect();
    assert_eq!(ids, ["scriptd-1"], "a heartbeat older than 10 s is not live");
}

/// Cooldown across instances: two instances (two pools) fire one script on one camera for
/// 40 different occurrences of the same moment at once. Exactly one firing stands, in the
/// stored state and in the deliveries; the others leave no row. (An occurrence older than
/// the one that fired is not "after" it and fires, on one instance as on several.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_firings_of_one_script_on_one_camera_make_one_firing() {
    use scriptd::store::outbox::backend::OutboxBackend;
    use scriptd::store::outbox::{Fired, NewDelivery, Target};
    use scriptd::store::postgres::outbox::PgOutbox;

    let url = server().database();
    let (a, b) = (PgOutbox::new(store(&url).await), PgOutbox::new(store(&url).await));
    let t0: i64 = 1_800_000_000_000;
    let firing = |i: i64, at: i64| {
        let occ = format!("occ-{i}");
        let delivery = NewDelivery {
            id: format!("{occ}:7:42"),
            occurrence_id: occ.clone(),
            script_id: 7,
            reaction: "sound".into(),
            recipient: "42".into(),
            lane: String::new(),
            payload: "{}".into(),
            target: Target::Push { user_id: 42 },
        };
        let fired = Fired {
            script_id: 7,
            camera_id: 17,
            occurred_at_ms: at,
            occurrence_id: occ,
            cooldown_ms: 60_000,
        };
        (delivery, fired)
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let outbox = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (d, f) = firing(i, t0);
        tasks.spawn(async move { outbox.enqueue(&[d], &[f], t0).await.expect("enqueue") });
    }
    let added: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(added, 1, "one delivery for one firing");
    let states = a.load_cooldowns().await.expect("cooldowns");
    assert_eq!(states.len(), 1, "{states:?}");
    let db = url.rsplit('/').next().and_then(|d| d.split('?').next()).expect("db name");
    let rows = server().psql(db, "SELECT occurrence_id FROM deliveries");
    assert_eq!(rows, states[0].occurrence_id, "the delivery is the stored firing's");

    // Past the cooldown a firing stands again; a redelivery of the standing one too.
    let (d, f) = firing(100, t0 + 59_999);
    assert_eq!(b.enqueue(&[d], &[f], t0).await.expect("enqueue"), 0, "within the cooldown");
    let (d, f) = firing(60_000, t0 + 60_000);
    assert_eq!(b.enqueue(&[d], &[f], t0).await.expect("enqueue"), 1, "past the cooldown");
    let (d, f) = firing(60_000, t0 + 60_000);
    assert_eq!(a.enqueue(&[d], &[f], t0).await.expect("enqueue"), 0, "a duplicate id");
    assert_eq!(a.cooldown_states(&[(7, 17)]).await.expect("state")[0].occurrence_id, "occ-60000");
}

/// Telegram pacing across instances: a chat's next message is not claimed, by any
/// instance, until the chat's last sent message is a pacing interval old (1 s for a chat,
/// 3 s for a group by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chats_next_message_waits_for_the_pacing_interval_on_every_instance() {
    use scriptd::secret::Secret;
    use scriptd::store::outbox::backend::OutboxBackend;
    use scriptd::store::outbox::{Channel, NewDelivery, Recorded, RowRef, Target};
    use scriptd::store::postgres::outbox::PgOutbox;

    let url = server().database();
    let (a, b) = (PgOutbox::new(store(&url).await), PgOutbox::new(store(&url).await));
    let message = |id: &str, chat: &str, script: i64| NewDelivery {
        id: id.into(),
        occurrence_id: format!("occ-{id}"),
        script_id: script,
        reaction: "telegram-message".into(),
        recipient: chat.into(),
        lane: format!("tg:0123456789abcdef:{chat}"),
        payload: "{}".into(),
        target: Target::Telegram {
            bot_token: Secret::new("1:t"),
            chat_id: chat.into(),
            text: id.into(),
            photo_url: None,
        },
    };
    let t0: i64 = 1_800_000_000_000;
    let lease = Duration::from_secs(30);
    for (chat, interval) in [("555", 1_000), ("-100777", 3_000)] {
        let first = format!("{chat}-1");
        let second = format!("{chat}-2");
        a.enqueue(&[message(&first, chat, 1), message(&second, chat, 2)], &[], t0)
            .await
            .expect("enqueue");
        let head = a.claim(Channel::Telegram, t0, 10, lease).await.expect("claim");
        assert_eq!(head.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [first.as_str()]);
        a.record(&[(RowRef::Rowid(head[0].rowid), Recorded::Sent)], t0 + 100).await.expect("sent");
        // The other instance, and this one, find nothing of the chat due within the interval.
        for (outbox, at) in [(&b, t0 + 200), (&a, t0 + interval), (&b, t0 + 100 + interval - 1)] {
            let got = outbox.claim(Channel::Telegram, at, 10, lease).await.expect("claim");
            assert!(
                got.is_empty(),
                "{chat} at +{} ms: {:?}",
                at - t0,
                got.iter().map(|c| &c.id).collect::<Vec<_>>()
            );
        }
        let next = b.claim(Channel::Telegram, t0 + 101 + interval, 10, lease).await.expect("claim");
        assert_eq!(next.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
        b.record(&[(RowRef::Rowid(next[0].rowid), Recorded::Sent)], t0 + 200 + interval)
            .await
            .expect("sent");
    }
}
