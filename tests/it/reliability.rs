//! Faults the daemon must survive, driving the real `scriptd` binary with real
//! peers: Mosquitto with persistence, the Bot API stub, a webhook receiver. Occurrences are
//! sequence-numbered and every one is accounted for: each ends with its delivery `sent` in
//! the outbox (received = sent, 0 pending, 0 failed), and the client app's persistent
//! subscription sees each at least once, with repeats within `delivery.max_in_flight` per
//! fault and always the same `delivery_id`.
//!
//! The slow Telegram cases are `#[ignore]`d from the default run; `.ci/run` runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::clients::{PersistentSubscriber, ReliablePublisher};
use crate::support::daemon::{Daemon, DaemonOptions, all_day, call, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::within;
use serde_json::{Value, json};

const SOUND: i64 = 4;
const WEBHOOK: i64 = 5;
const FACE: i64 = 1;
const TOPIC: &str = "vms/analytics/events/1";

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn occ(seq: usize) -> Vec<u8> {
    json!({"id": format!("seq-{seq}"), "event_id": FACE, "camera_id": 1, "occurred_at": now()})
        .to_string()
        .into_bytes()
}

/// Outbox rows by state.
fn outbox_states(d: &Daemon) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    let mut stmt =
        conn.prepare("SELECT state, COUNT(*) FROM deliveries GROUP BY state").expect("prepare");
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

async fn wait_all_sent(d: &Daemon, n: i64, secs: u64) -> BTreeMap<String, i64> {
    within(secs, "every delivery sent", async {
        loop {
            let s = outbox_states(d);
            if s.get("sent").copied().unwrap_or(0) >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn integrity_ok(d: &Daemon) {
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    let r: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(r, "ok");
}

/// (distinct occurrences, repeats) of the pushes received; panics when a repeat carried
/// another delivery id.
fn account(pushes: &[Value]) -> (usize, usize) {
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in pushes {
        ids.entry(p["occurrence_id"].as_str().unwrap_or_default())
            .or_default()
            .insert(p["delivery_id"].as_str().unwrap_or_default());
    }
    assert!(ids.values().all(|s| s.len() == 1), "a repeat carried another delivery id");
    (ids.len(), pushes.len() - ids.len())
}

async fn setup(broker: &Mosquitto, opts: DaemonOptions) -> (Daemon, PersistentSubscriber) {
    let d = Daemon::start(DaemonOptions { external_broker: Some(broker.port()), ..opts }).await;
    d.create_script(&script("all", SOUND, FACE, &[4], all_day())).await;
    let app = PersistentSubscriber::connect(
        broker.port(),
        &format!("app-{}", d.api_port),
        "vms/users/4/reactions",
    )
    .await;
    (d, app)
}

/// Mosquitto, a webhook receiver that is down (503 until `clear_statuses`), and a daemon
/// with short retry delays (plus `env`) and one webhook script (its id is returned).
async fn with_receiver_down(env: &[(&str, &str)]) -> (Mosquitto, WebhookReceiver, Daemon, i64) {
    let broker = Mosquitto::start().await;
    let hook = WebhookReceiver::start(Some("k")).await;
    for _ in 0..100_000 {
        hook.push_status(503); // the receiver is down: deliveries stay pending
    }
    let mut vars = vec![
        ("SCRIPTD__DELIVERY__BACKOFF_INITIAL_MS".to_owned(), "100".to_owned()),
        ("SCRIPTD__DELIVERY__BACKOFF_MAX_MS".to_owned(), "500".to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let opts = DaemonOptions {
        external_broker: Some(broker.port()),
        env: vars,
        ..DaemonOptions::default()
    };
    let d = Daemon::start(opts).await;
    let mut s = script("hook", WEBHOOK, FACE, &[1], all_day());
    s["extra"] = json!({"url": hook.url(), "secret": "k"});
    let id = d.create_script(&s).await["id"].as_i64().expect("script id");
    (broker, hook, d, id)
}

/// The occurrence ids of the webhooks the receiver accepted (200), repeats included.
fn delivered(hook: &WebhookReceiver) -> Vec<String> {
    hook.received()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["occurrence_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A consistent copy of the daemon's database (`VACUUM INTO`), as an operator's backup.
fn backup(d: &Daemon) -> std::path::PathBuf {
    let copy = d.dir.path().join("restored.db");
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    conn.execute("VACUUM INTO ?1", [copy.to_str().expect("utf-8 path")]).expect("copy");
    copy
}

async fn broker_up(d: &Daemon) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{}/healthz", d.api_port)).await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// 1. A graceful broker restart in the middle of a 10,000-occurrence QoS 1 burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_burst_loses_nothing() {
    const N: usize = 10_000;
    let mut broker = Mosquitto::start().await;
    let (d, app) = setup(&broker, DaemonOptions::default()).await;
    let vms = ReliablePublisher::connect(broker.port(), "vms-restart");
    for i in 0..N / 2 {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(60).await;
    broker.restart().await;
    // The broker is back; the daemon must have made a new events connection within 5 s
    // (health alone could still say "up" if the drop had not been noticed yet).
    let back = Instant::now();
    within(5, "daemon reconnected within 5 s of the broker's return", async {
        loop {
            let metrics = d.metrics().await;
            if metrics.lines().any(|l| {
                l.starts_with("scriptd_mqtt_reconnects_total{connection=\"events\"}")
                    && !l.ends_with(" 0")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let reconnect = back.elapsed();
    // The push connection reconnects on its own backoff, so health may follow a moment
    // after the events connection.
    within(5, "healthy within 5 s of the events reconnect", async {
        while !broker_up(&d).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for i in N / 2..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(60).await;
    let states = wait_all_sent(&d, N as i64, 120).await;
    assert_eq!(states.get("pending"), None, "{states:?}");
    assert_eq!(states.get("failed"), None, "{states:?}");
    let pushes = app.wait_distinct(N, 60, "every push at the app").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (distinct, repeats) = account(&app.all().await);
    assert_eq!(distinct, N, "lost pushes");
    assert!(repeats <= 100, "{repeats} repeated pushes for one broker restart");
    println!(
        "broker restart: {N} occurrences, {distinct} delivered, {repeats} repeated, reconnect {reconnect:?} ({} pushes seen)",
        pushes.len()
    );
}

/// 2. Five SIGKILLs at random points of a 10,000-occurrence burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sigkills_during_a_burst_lose_nothing() {
    const N: usize = 10_000;
    const KILLS: usize = 5;
    let broker = Mosquitto::start().await;
    let (mut d, app) = setup(&broker, DaemonOptions::default()).await;
    let vms = ReliablePublisher::connect(broker.port(), "vms-kill");
    for i in 0..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    let mut kills_at = Vec::new();
    for k in 0..KILLS {
        // Random points: after a varying share of the burst has been delivered.
        let target = (k + 1) * N / (KILLS + 2) + (rand_u32() as usize % 500);
        app.wait_distinct(target.min(N - 1), 120, "progress before a kill").await;
        d.kill9();
        kills_at.push(app.all().await.len());
        d.spawn().await;
    }
    vms.wait_acked(60).await;
    let states = wait_all_sent(&d, N as i64, 180).await;
    assert_eq!(states.get("pending"), None, "{states:?}");
    assert_eq!(states.get("failed"), None, "{states:?}");
    app.wait_distinct(N, 60, "every push at the app").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (distinct, repeats) = account(&app.all().await);
    assert_eq!(distinct, N, "lost pushes");
    assert!(repeats <= 100 * KILLS, "{repeats} repeats for {KILLS} kills");
    integrity_ok(&d);
    println!(
        "sigkill x{KILLS}: {N} occurrences, {distinct} delivered, {repeats} repeated in all (kills after {kills_at:?} pushes)"
    );
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() as u32
}

/// 3. The daemon is down while 1,000 occurrences are published (persistent session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_published_while_down_are_processed_once() {
    const N: usize = 1_000;
    let broker = Mosquitto::start().await;
    let (mut d, app) = setup(&broker, DaemonOptions::default()).await;
    // The daemon's session exists at the broker; stop the daemon cleanly.
    assert!(d.sigterm(20).await.success());
    let vms = ReliablePublisher::connect(broker.port(), "vms-down");
    for i in 0..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(30).await;
    d.spawn().await;
    let states = wait_all_sent(&d, N as i64, 60).await;
    assert_eq!(states.get("sent"), Some(&(N as i64)), "{states:?}");
    app.wait_distinct(N, 30, "every push at the app").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (distinct, repeats) = account(&app.all().await);
    assert_eq!((distinct, repeats), (N, 0), "processed exactly once");
}

/// 6. SIGTERM with 1,000 deliveries pending: exit 0 within the deadline; after the restart
/// all 1,000 are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_pending_exits_cleanly_and_delivers_after_restart() {
    const N: usize = 1_000;
    let (broker, hook, mut d, _) =
        with_receiver_down(&[("SCRIPTD__DELIVERY__SHUTDOWN_DEADLINE_SECONDS", "5")]).await;
    let vms = ReliablePublisher::connect(broker.port(), "vms-term");
    for i in 0..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(30).await;
    within(30, "1,000 deliveries pending", async {
        while outbox_states(&d).get("pending").copied().unwrap_or(0) < N as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let started = Instant::now();
    let status = d.sigterm(15).await;
    assert!(status.success(), "exit status {status}\n{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let states = outbox_states(&d);
    assert_eq!(states.values().sum::<i64>(), N as i64, "{states:?}");
    // The receiver is back.
    hook.clear_statuses();
    d.spawn().await;
    let states = wait_all_sent(&d, N as i64, 120).await;
    assert_eq!(states.get("failed"), None, "{states:?}");
    let ids: BTreeSet<String> = delivered(&hook).into_iter().collect();
    assert_eq!(ids.len(), N, "every webhook delivered after the restart");
}

/// 5. Another connection holds the write lock for 10 s: no panic, the API answers 503 with
/// Retry-After once the busy timeout passes, and the pipeline resumes with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_delays_but_loses_nothing() {
    const N: usize = 200;
    let broker = Mosquitto::start().await;
    let opts = DaemonOptions {
        env: vec![("SCRIPTD__DATABASE__BUSY_TIMEOUT_MS".into(), "2000".into())],
        ..DaemonOptions::default()
    };
    let (d, app) = setup(&broker, opts).await;
    let db = d.dir.path().join("scriptd.db");
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let holder = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(db).expect("open");
        let tx =
            conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).expect("lock");
        let _ = locked_tx.send(());
        std::thread::sleep(Duration::from_secs(10));
        tx.commit().expect("release");
    });
    within(5, "lock taken", locked_rx).await.expect("locked");
    let vms = ReliablePublisher::connect(broker.port(), "vms-lock");
    for i in 0..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    let r = reqwest::Client::new()
        .post(d.url("/scripts"))
        .bearer_auth(&d.token_4)
        .json(&script("during lock", SOUND, FACE, &[4], all_day()))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    holder.join().expect("holder");
    vms.wait_acked(30).await;
    let states = wait_all_sent(&d, N as i64, 60).await;
    assert_eq!(states.get("sent"), Some(&(N as i64)));
    app.wait_distinct(N, 30, "every push after the lock").await;
    assert!(broker_up(&d).await, "daemon healthy after the lock\n{}", d.log());
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// Deliveries by state of one script, read from the file now at the database path.
fn script_states(d: &Daemon, script_id: i64) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    let mut stmt = conn
        .prepare("SELECT state, COUNT(*) FROM deliveries WHERE script_id = ?1 GROUP BY state")
        .expect("prepare");
    stmt.query_map([script_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// 5. The database file replaced under the running daemon (`mv restored.db scriptd.db`)
/// in the middle of a burst: detected, the old file's connections closed, the new file
/// opened; nothing accepted is lost (pending rows of the old file are carried over), every
/// occurrence published after the move lands in the new file, and the scripts come from
/// the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_database_file_is_reopened_and_loses_nothing() {
    const N: usize = 1_000;
    const BEFORE_COPY: usize = 300;
    const QUIET_UNTIL: usize = 450;
    const BEFORE_MOVE: usize = 500;
    let broker = Mosquitto::start().await;
    let (d, app) = setup(&broker, DaemonOptions::default()).await;
    let all_id =
        d.get_as(&d.token_4, "/scripts").await["data"][0]["id"].as_i64().expect("script id");
    let op = PersistentSubscriber::connect(
        broker.port(),
        &format!("op-{}", d.api_port),
        "vms/users/1/reactions",
    )
    .await;
    let vms = ReliablePublisher::connect(broker.port(), "vms-replace");
    for i in 0..BEFORE_COPY {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(30).await;
    wait_all_sent(&d, BEFORE_COPY as i64, 60).await;

    // The "backup": a copy that also holds a script the running file will not have.
    let only_new =
        d.create_script(&script("only in the new file", SOUND, FACE, &[1], all_day())).await;
    let only_new_id = only_new["id"].as_i64().expect("id");
    let db = d.dir.path().join("scriptd.db");
    let restored = backup(&d);
    let r = reqwest::Client::new()
        .delete(d.url(&format!("/scripts/{only_new_id}")))
        .bearer_auth(&d.token)
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "delete: {}", r.status());
    // Let the daemon's snapshot lose the script before the burst goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in BEFORE_COPY..QUIET_UNTIL {
        vms.publish(TOPIC, occ(i)).await;
    }
    app.wait_distinct(QUIET_UNTIL, 30, "the occurrences before the move").await;
    // The move, while occurrences keep coming.
    for i in QUIET_UNTIL..BEFORE_MOVE {
        vms.publish(TOPIC, occ(i)).await;
    }
    std::fs::rename(&restored, &db).expect("replace the database file");
    for i in BEFORE_MOVE..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(60).await;

    let Ok(pushes) =
        tokio::time::timeout(Duration::from_secs(60), app.wait_distinct(N, 90, "pushes")).await
    else {
        let got = account(&app.all().await);
        let log = d.log();
        panic!(
            "not every occurrence pushed: {got:?}\n{}",
            &log[log.len().saturating_sub(20_000)..]
        );
    };
    let (distinct, repeats) = account(&pushes);
    assert_eq!(distinct, N);
    let log = d.log();
    assert!(log.contains("the database file was replaced"), "replacement not noticed\n{log}");
    assert!(log.contains("the new database file is ready"), "new file not opened\n{log}");
    // Every occurrence published after the move is in the new file, and nothing is stuck.
    let states = within(60, "the new file's deliveries all sent", async {
        loop {
            let s = script_states(&d, all_id);
            if !s.contains_key("pending") && s.get("sent").copied().unwrap_or(0) > 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(states.get("failed"), None, "{states:?}");
    let conn = rusqlite::Connection::open(&db).expect("open the new file");
    let seqs: BTreeSet<usize> = conn
        .prepare("SELECT occurrence_id FROM deliveries WHERE script_id = ?1 AND state = 'sent'")
        .expect("prepare")
        .query_map([all_id], |r| r.get::<_, String>(0))
        .expect("query")
        .filter_map(|r| r.ok()?.strip_prefix("seq-")?.parse().ok())
        .collect();
    let missing: Vec<usize> =
        (0..BEFORE_COPY).chain(BEFORE_MOVE..N).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "not in the new file: {missing:?}");
    integrity_ok(&d);

    // The scripts now come from the new file: the API lists the script only it has, then
    // (the watcher's next look, within 2 s of the move as for any outside edit) matching
    // knows it too, and it fires.
    within(10, "the API reads the new file", async {
        loop {
            let ids: Vec<i64> = d.get("/scripts").await["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["id"].as_i64()).collect())
                .unwrap_or_default();
            if ids.contains(&only_new_id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let question = json!({"event_id": FACE, "camera_id": 1});
    within(10, "matching reads the new file", async {
        loop {
            let (status, answer) =
                call(&d, reqwest::Method::POST, "/explain", &d.token, Some(&question)).await;
            let fires = answer["data"].as_array().is_some_and(|v| {
                v.iter().any(|s| s["script_id"] == only_new_id && s["fires"] == true)
            });
            if status == 200 && fires {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    vms.publish(TOPIC, occ(N)).await;
    vms.wait_acked(30).await;
    let last = format!("seq-{N}");
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let got = op.all().await;
            if got.iter().any(|p| p["occurrence_id"] == last.as_str()) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let Ok(to_op) = waited else {
        let log = d.log();
        panic!(
            "no push of {last} from the script only the new file has within 30 s; \
             the operator got {} pushes\n{}",
            op.all().await.len(),
            &log[log.len().saturating_sub(20_000)..]
        );
    };
    let early: Vec<&str> = to_op
        .iter()
        .filter_map(|p| p["occurrence_id"].as_str())
        .filter(|o| {
            o.strip_prefix("seq-").and_then(|n| n.parse::<usize>().ok()) < Some(QUIET_UNTIL)
        })
        .collect();
    assert!(
        early.is_empty(),
        "the script deleted from the old file fired before the move: {early:?}"
    );
    assert!(to_op.iter().all(|p| p["script"]["id"].as_i64() == Some(only_new_id)));
    assert!(broker_up(&d).await, "daemon healthy after the replacement\n{}", d.log());
    assert!(!d.log().contains("panicked"), "{}", d.log());
    eprintln!("replaced file: {distinct} occurrences pushed, {repeats} repeated pushes");
    for line in d.log().lines().filter(|l| {
        ["replaced", "carried", "new database file", "log file"].iter().any(|k| l.contains(k))
            && !l.contains("retrying")
    }) {
        eprintln!("  {line}");
    }
}

/// 5. The database file replaced while deliveries are pending (the webhook receiver is
/// down): the old file's pending rows are carried over to the new file and all delivered
/// once the receiver is back, recorded in the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_of_a_replaced_file_are_carried_over() {
    const N: usize = 300;
    let (broker, hook, d, hook_id) = with_receiver_down(&[]).await;
    // The "backup", taken before any delivery exists.
    let db = d.dir.path().join("scriptd.db");
    let restored = backup(&d);
    let vms = ReliablePublisher::connect(broker.port(), "vms-carry");
    for i in 0..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(30).await;
    within(30, "every delivery pending", async {
        while script_states(&d, hook_id).get("pending").copied().unwrap_or(0) < N as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    std::fs::rename(&restored, &db).expect("replace the database file");
    within(30, "the pending rows carried over", async {
        while !d.log().contains("carried over to the new one") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    hook.clear_statuses(); // the receiver is back
    let states = within(60, "every carried delivery sent", async {
        loop {
            let s = script_states(&d, hook_id);
            if s.get("sent").copied().unwrap_or(0) >= N as i64 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(states.get("sent"), Some(&(N as i64)), "{states:?}");
    assert_eq!(states.values().sum::<i64>(), N as i64, "nothing else: {states:?}");
    let ok = delivered(&hook);
    let distinct: BTreeSet<&String> = ok.iter().collect();
    assert_eq!(distinct.len(), N, "every webhook delivered");
    integrity_ok(&d);
    let log = d.log();
    let carried: Vec<&str> = log.lines().filter(|l| l.contains("carried over")).collect();
    eprintln!(
        "carried over: {N} pending, {} delivered twice; {carried:?}",
        ok.len() - distinct.len()
    );
}
