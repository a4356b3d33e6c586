//! The PostgreSQL store through the command line, against a real server
//! (`support::postgres`): `check-config` says which backend is used and refuses a database
//! it cannot use with exit 78 naming the host (never the password); `migrate` is safe to
//! run from several hosts at once; `run` refuses a database it cannot use the same way.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::postgres::server;

/// `scriptd --config DIR ARGS` with a clean environment plus `vars`.
fn scriptd(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scriptd"));
    cmd.env_clear().arg("--config").arg(dir).args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run scriptd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn two_concurrent_migrates_of_an_empty_database_both_succeed_and_apply_the_schema_once() {
    let pg = server();
    let url = pg.database();
    let dir = tempfile::tempdir().expect("tempdir");
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scriptd"));
        cmd.env_clear()
            .arg("--config")
            .arg(dir.path())
            .arg("migrate")
            .env("SCRIPTD__DATABASE__URL", &url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn scriptd migrate")
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().expect("wait"), b.wait_with_output().expect("wait")];
    for out in &outs {
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    }
    let latest = scriptd::store::postgres::migrations::latest_version();
    let mut applied: Vec<String> = outs
        .iter()
        .map(|o| {
            let line = text(&o.stdout);
            assert!(line.contains(&format!("is up to date (schema version {latest}")), "{line}");
            line.split(", ").nth(1).unwrap_or_default().trim().to_owned()
        })
        .collect();
    applied.sort();
    assert_eq!(
        applied,
        ["0 applied now)".to_owned(), format!("{latest} applied now)")],
        "one migrated, the other waited"
    );
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert_eq!(
        pg.psql(db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM scriptd_schema"),
        (1..=latest).map(|v| v.to_string()).collect::<Vec<_>>().join(",")
    );
    assert_eq!(pg.psql(db, "SELECT count(*) FROM events"), "13");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM reactions"), "5");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM permissions"), "4");
    // Again: nothing to do, nothing duplicated, a new row gets an id after the seeded ones.
    let again = scriptd(dir.path(), &["migrate"], &[("SCRIPTD__DATABASE__URL", &url)]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("0 applied now"), "{}", text(&again.stdout));
    assert_eq!(
        pg.psql(
            db,
            "INSERT INTO events (name, description, color, analytic_type) \
                     VALUES ('x', 'x', '#000000', 'x') RETURNING id"
        ),
        "14"
    );
}

#[test]
fn check_config_names_the_backend_and_masks_the_password() {
    let pg = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = scriptd(dir.path(), &["check-config"], &[]);
    assert!(sqlite.status.success(), "{}", text(&sqlite.stderr));
    assert!(text(&sqlite.stdout).contains("# backend: sqlite data/scriptd.db"));

    pg.create_role("app_ok", "r1ght-pa55");
    let url = pg.database().replace("postgres@", "app_ok:r1ght-pa55@");
    let out = scriptd(dir.path(), &["check-config"], &[("SCRIPTD__DATABASE__URL", &url)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let host = format!("127.0.0.1:{}", pg.port());
    assert!(stdout.contains("# backend: postgresql postgresql://app_ok:********@"), "{stdout}");
    assert!(stdout.contains(&format!("connected to app_ok@{host}/")), "{stdout}");
    assert!(stdout.contains("url = \"postgresql://app_ok:********@"), "{stdout}");
    assert!(!stdout.contains("r1ght-pa55") && !text(&out.stderr).contains("r1ght-pa55"));

    // The password from database.password or a file instead of the URL.
    let bare = url.replace(":r1ght-pa55@", "@");
    let out = scriptd(
        dir.path(),
        &["check-config"],
        &[("SCRIPTD__DATABASE__URL", &bare), ("SCRIPTD__DATABASE__PASSWORD", "r1ght-pa55")],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("password = \"********\""), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("r1ght-pa55"));
    // `migrate` with the role of the URL (`run` migrates the same way; it runs in
    // `pipeline_postgres`).
    let run = scriptd(dir.path(), &["migrate"], &[("SCRIPTD__DATABASE__URL", &url)]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert_eq!(
        pg.psql(db, "SELECT count(*) FROM scriptd_schema"),
        scriptd::store::postgres::migrations::latest_version().to_string()
    );

    // The operator commands work on PostgreSQL, and never touch a SQLite file.
    let sqlite = dir.path().join("site.db").display().to_string();
    let vars = [("SCRIPTD__DATABASE__URL", url.as_str()), ("SCRIPTD__DATABASE__PATH", &sqlite)];
    let out = scriptd(dir.path(), &["users", "add", "--login", "ops@x", "--name", "Ops"], &vars);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = text(&out.stdout).trim().to_owned();
    for (args, expect) in [
        (&["users", "list"][..], "ops@x"),
        (&["tokens", "list"], "public_id"),
        (&["scripts", "list"], ""),
        (&["snooze", "list"], ""),
        (&["calendars", "list"], ""),
    ] {
        let out = scriptd(dir.path(), args, &vars);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(expect), "{args:?}: {}", text(&out.stdout));
    }
    let out = scriptd(dir.path(), &["tokens", "create", "--user", &user], &vars);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("site.db").exists(), "no SQLite file was made");

    let file = dir.path().join("db-password");
    std::fs::write(&file, "r1ght-pa55\n").expect("write");
    let file = file.display().to_string();
    let out = scriptd(
        dir.path(),
        &["check-config"],
        &[("SCRIPTD__DATABASE__URL", &bare), ("SCRIPTD__DATABASE__PASSWORD_FILE", &file)],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

#[test]
fn a_wrong_password_host_or_database_fails_check_config_and_run_with_78_naming_the_host() {
    let pg = server();
    pg.create_role("app_bad", "the-right-one");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = pg.database();
    let host = format!("127.0.0.1:{}", pg.port());
    let closed = crate::support::free_port();
    let cases = [
        (
            good.replace("postgres@", "app_bad:wr0ng-pa55@"),
            host.clone(),
            "password authentication failed",
        ),
        (
            good.replace(&pg.port().to_string(), &closed.to_string()),
            format!("127.0.0.1:{closed}"),
            "connect",
        ),
        (pg.url("no_such_db"), host.clone(), "does not exist"),
    ];
    for (url, host, why) in &cases {
        for args in [&["check-config"][..], &["run"][..], &["migrate"][..]] {
            let out = scriptd(dir.path(), args, &[("SCRIPTD__DATABASE__URL", url)]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{args:?} {url}: {stderr}");
            assert!(stderr.contains(host.as_str()), "{args:?} names the host: {stderr}");
            assert!(stderr.contains(why), "{args:?} {why:?}: {stderr}");
            assert!(!stderr.contains("wr0ng-pa55") && !text(&out.stdout).contains("wr0ng-pa55"));
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}

#[test]
fn bad_database_settings_fail_check_config_with_78_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("SCRIPTD__DATABASE__URL", "mysql://a@h/d")], "database.url"),
        (&[("SCRIPTD__DATABASE__URL", "postgresql://a@h/d?sslmode=verify-ca")], "sslmode"),
        (
            &[("SCRIPTD__DATABASE__URL", "postgresql://a@h/d?sslmode=verify-full")],
            "database.ca_file",
        ),
        (
            &[
                ("SCRIPTD__DATABASE__URL", "postgresql://a:s3cr3t-x@h/d"),
                ("SCRIPTD__DATABASE__PASSWORD", "s3cr3t-y"),
            ],
            "database.password",
        ),
        (
            &[
                ("SCRIPTD__DATABASE__URL", "postgresql://a@h/d"),
                ("SCRIPTD__DATABASE__PASSWORD_FILE", "/nonexistent/pw"),
            ],
            "database.password_file",
        ),
        (&[("SCRIPTD__DATABASE__PASSWORD", "s3cr3t-z")], "needs database.url"),
    ];
    for (vars, key) in cases {
        let out = scriptd(dir.path(), &["check-config"], vars);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{vars:?}: {stderr}");
        assert!(stderr.contains(key), "{vars:?} names {key}: {stderr}");
        assert!(!stderr.contains("s3cr3t"), "{stderr}");
    }
}

#[test]
fn store_copy_moves_every_kind_of_row_once_and_refuses_a_non_empty_target() {
    let pg = server();
    let url = pg.database();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.db");
    scriptd::store::Store::migrate(&path).expect("migrate SQLite");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        r#"UPDATE events SET description = 'Edited by the operator' WHERE id = 1;
           INSERT INTO users (id, login, name, parent_id, disabled) VALUES
             (1, 'root', 'Root', NULL, 0), (3, 'child', 'Child', 5, 1), (5, 'sub', 'Sub', 1, 0);
           INSERT INTO user_permissions VALUES (1, 240), (5, 241);
           INSERT INTO api_tokens (id, public_id, user_id, token_sha256, expires_at)
             VALUES (1, 'pub1', 5, X'00ff10', '2030-01-01 00:00:00');
           INSERT INTO scripts (id, title, event_id, reaction_id, status, cameras, timetable,
                                extra, owner_id)
             VALUES (7, 'Gate', 1, 2, 'active', '[1,2]', '{"days":[]}', '{"b":1,"a":2}', 1);
           INSERT INTO calendars (id, name, timezone, dates, owner_id) VALUES
             (3, 'Holidays', 'Europe/Berlin',
              '[{"from":"2026-12-25","to":"2026-12-26","title":"Christmas"}]', 1);
           INSERT INTO script_users VALUES (7, 5, 0), (7, 3, 1);
           INSERT INTO deleted_scripts (id, owner_id) VALUES (4, 1);
           INSERT INTO snoozes (id, script_id, scope, user_id, camera_id, starts_at, until)
             VALUES (2, 7, 'me', 5, '17', 1, 2);
           INSERT INTO cooldowns VALUES (7, '17', 1000, 'occ-1');
           INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane,
               payload, state, attempts, next_attempt_at, created_at, updated_at, target)
             VALUES
             ('d-push', 'o', 7, 'sound', '5', '', '{}', 'pending', 2, 10, 1, 1,
              '{"kind":"push","user_id":5}'),
             ('d-tg', 'o', 7, 'telegram-message', '9', 'tg:1:9', '{}', 'pending', 0, 10, 1, 1,
              '{"kind":"telegram","bot_token":"1:t","chat_id":"9","text":"t"}'),
             ('d-sent', 'o', 7, 'sound', '5', '', '{}', 'sent', 1, 10, 1, 1,
              '{"kind":"push","user_id":5}');"#,
    )
    .expect("rows");
    drop(conn);
    let from = path.display().to_string();
    let copy = || scriptd(dir.path(), &["store", "copy", "--from", &from, "--to", &url], &[]);
    let out = copy();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for line in [
        "events: 13",
        "users: 3",
        "user_permissions: 2",
        "api_tokens: 1",
        "scripts: 1",
        "calendars: 1",
        "script_users: 2",
        "deleted_scripts: 1",
        "snoozes: 1",
        "cooldowns: 1",
        "deliveries: 2",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line} in {stdout}");
    }
    let q = |sql: &str| pg.psql(&db, sql);
    assert_eq!(q("SELECT description FROM events WHERE id = 1"), "Edited by the operator");
    assert_eq!(
        q(
            "SELECT string_agg(id || ':' || coalesce(parent_id::text, '-') || ':' || disabled, ',' ORDER BY id) FROM users"
        ),
        "1:-:false,3:5:true,5:1:false"
    );
    assert_eq!(
        q("SELECT encode(token_sha256, 'hex') || ' ' || expires_at FROM api_tokens"),
        "00ff10 2030-01-01 00:00:00"
    );
    assert_eq!(
        q("SELECT extra || cameras || owner_id FROM scripts WHERE id = 7"),
        r#"{"b":1,"a":2}[1,2]1"#
    );
    assert_eq!(
        q(
            "SELECT string_agg(id || ':' || channel || ':' || attempts, ',' ORDER BY seq) FROM deliveries"
        ),
        "d-push:push:2,d-tg:telegram:0"
    );
    assert_eq!(
        q("SELECT name || ' ' || timezone || ' ' || owner_id || ' ' || dates FROM calendars"),
        r#"Holidays Europe/Berlin 1 [{"from":"2026-12-25","to":"2026-12-26","title":"Christmas"}]"#
    );
    assert_eq!(q("SELECT camera_id || until FROM snoozes"), "172");
    assert_eq!(q("SELECT fired_at || occurrence_id FROM cooldowns"), "1000occ-1");
    // New rows get ids after the copied ones.
    assert_eq!(q("INSERT INTO users (login, name) VALUES ('new', 'New') RETURNING id"), "6");
    assert_eq!(q("DELETE FROM users WHERE id = 6 RETURNING id"), "6");

    // Read back through the API on PostgreSQL, with a token made there by the CLI.
    let vars = [("SCRIPTD__DATABASE__URL", url.as_str())];
    let out = scriptd(dir.path(), &["tokens", "create", "--user", "1"], &vars);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(read_back_through_the_api(&url, &token));

    let again = copy();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("not empty"), "{}", text(&again.stderr));
    assert_eq!(q("SELECT count(*) FROM users"), "3", "nothing written");
    assert_eq!(q("SELECT count(*) FROM deliveries"), "2");
}

/// Connects with `url` (and `ca_file`) and says whether the session is encrypted.
async fn encrypted(url: &str, ca_file: Option<std::path::PathBuf>) -> Result<bool, String> {
    use scriptd::settings::{DatabaseSettings, DatabaseUrl};
    let settings =
        DatabaseSettings { url: Some(DatabaseUrl::new(url)), ca_file, ..Default::default() };
    let store =
        scriptd::store::postgres::connect_settings(&settings).await.map_err(|e| e.to_string())?;
    let conn = store.get().await.map_err(|e| e.to_string())?;
    let row = conn
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_does_what_it_says_and_certificates_are_checked_against_the_ca_file() {
    let pg = server();
    let url = pg.database();
    let base = url.split('?').next().unwrap().to_owned();
    let with = |mode: &str| format!("{base}?sslmode={mode}");
    let (ca, other) = (Some(pg.ca_file()), Some(pg.other_ca_file()));
    assert_eq!(encrypted(&with("disable"), None).await, Ok(false));
    assert_eq!(encrypted(&with("prefer"), None).await, Ok(true), "the server offers TLS");
    assert_eq!(encrypted(&with("require"), None).await, Ok(true));
    assert_eq!(encrypted(&with("require"), ca.clone()).await, Ok(true));
    assert_eq!(encrypted(&with("verify-full"), ca.clone()).await, Ok(true));
    for mode in ["require", "verify-full"] {
        let e = encrypted(&with(mode), other.clone()).await.unwrap_err();
        assert!(e.contains("certificate") && e.contains(&pg.port().to_string()), "{mode}: {e}");
    }
    // The same through check-config: exit 78, naming the host.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = pg.other_ca_file().display().to_string();
    let out = scriptd(
        dir.path(),
        &["check-config"],
        &[("SCRIPTD__DATABASE__URL", &with("verify-full")), ("SCRIPTD__DATABASE__CA_FILE", &other)],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{}", pg.port())), "{stderr}");
}

#[test]
fn each_channels_claim_reads_its_own_due_index_also_in_a_generic_plan() {
    use scriptd::store::outbox::Channel;
    use scriptd::store::postgres::outbox::claim_sql;
    let pg = server();
    let url = pg.database();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = scriptd(dir.path(), &["migrate"], &[("SCRIPTD__DATABASE__URL", &url)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 20,000 finished rows and 30 pending ones per channel.
    pg.psql(
        &db,
        "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane,
           channel, payload, state, next_attempt_at, created_at, updated_at)
         SELECT 'r' || i, 'o', 1, 'sound', '1', '', (ARRAY['push','telegram','webhook'])[1 + i % 3],
                '{}', CASE WHEN i <= 20000 THEN 'sent' ELSE 'pending' END, i, i, i
         FROM generate_series(1, 20090) i;
         ANALYZE deliveries;",
    );
    for channel in Channel::ALL {
        // The plan a statement gets after its first executions: parameters unknown.
        let plan = pg.psql(
            &db,
            &format!(
                "SET plan_cache_mode = force_generic_plan;
                 PREPARE c(int8, int8, int8) AS {};
                 EXPLAIN (COSTS OFF) EXECUTE c(100000, 10, 0);",
                claim_sql(channel)
            ),
        );
        let index = format!("deliveries_due_{}", channel.name());
        assert!(plan.contains(&index), "{index} in {plan}");
        assert!(!plan.contains("Seq Scan on deliveries d"), "{plan}");
    }
}

#[tokio::test]
async fn while_postgresql_is_down_the_outbox_fails_naming_the_host_and_recovers_when_it_returns() {
    use scriptd::settings::{DatabaseSettings, DatabaseUrl};
    use scriptd::store::outbox::backend::OutboxBackend;
    use scriptd::store::outbox::{Channel, NewDelivery, Target};
    use scriptd::store::postgres::outbox::PgOutbox;
    // A server of its own: this test stops it.
    let pg = crate::support::postgres::PgServer::start();
    let settings =
        DatabaseSettings { url: Some(DatabaseUrl::new(pg.database())), ..Default::default() };
    let store = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&store).await.expect("migrate");
    let outbox = PgOutbox::new(store);
    let push = |id: &str| NewDelivery {
        id: id.into(),
        occurrence_id: id.into(),
        script_id: 1,
        reaction: "sound".into(),
        recipient: "42".into(),
        lane: String::new(),
        payload: "{}".into(),
        target: Target::Push { user_id: 42 },
    };
    assert_eq!(outbox.enqueue(&[push("before")], &[], 1).await.unwrap(), 1);

    pg.halt();
    let host = format!("127.0.0.1:{}", pg.port());
    let e = outbox.enqueue(&[push("during")], &[], 2).await.unwrap_err().to_string();
    assert!(e.contains(&host), "{e}");
    let e = outbox.claim(Channel::Push, 10, 10, Duration::from_secs(30)).await.unwrap_err();
    assert!(e.to_string().contains(&host), "{e}");

    pg.restart();
    // The pool opens new connections by itself; the row written before the outage is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let added = loop {
        match outbox.enqueue(&[push("during")], &[], 3).await {
            Ok(n) => break n,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery in 10 s: {e}"),
        }
    };
    assert_eq!(added, 1);
    let claimed = outbox.claim(Channel::Push, 10, 10, Duration::from_secs(30)).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["before", "during"]);
}

/// The copied rows as the API on PostgreSQL shows them to user 1 (`token`).
async fn read_back_through_the_api(url: &str, token: &str) {
    let settings = scriptd::settings::DatabaseSettings {
        url: Some(scriptd::settings::DatabaseUrl::new(url)),
        ..Default::default()
    };
    let pg = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    let live = scriptd::live::Live::new_postgres(pg.clone(), chrono_tz::UTC).await.expect("live");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
    let state = scriptd::api::AppState::new(scriptd::store::Db::Postgres(pg), live);
    tokio::spawn(scriptd::api::serve(listener, state, std::future::pending()));
    let get = |path: &str| {
        let request = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .header("X-Client", "web");
        async move {
            let res = request.send().await.expect("GET");
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (status, script) = get("/scripts/7").await;
    assert_eq!(status, 200, "{script}");
    assert_eq!(script["title"], "Gate");
    assert_eq!(script["cameras"], serde_json::json!([1, 2]));
    assert_eq!(
        script["users"].as_array().map(|u| u.iter().map(|x| x["id"].clone()).collect::<Vec<_>>()),
        Some(vec![serde_json::json!(5), serde_json::json!(3)]),
        "{script}"
    );
    let (status, calendar) = get("/calendars/3").await;
    assert_eq!((status, &calendar["name"]), (200, &serde_json::json!("Holidays")), "{calendar}");
    let (status, deliveries) = get("/scripts/7/deliveries").await;
    assert_eq!(status, 200, "{deliveries}");
    let mut ids: Vec<&str> = deliveries["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["d-push", "d-tg"], "{deliveries}");
    let (status, listed) = get("/scripts").await;
    assert_eq!((status, &listed["meta"]["total"]), (200, &serde_json::json!(1)), "{listed}");
}
