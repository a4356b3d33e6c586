//! `scriptd bench pipeline` end to end on tiny numbers, with the embedded broker: the
//! daemon runs as a child process and every expected push arrives exactly once, on SQLite,
//! on PostgreSQL (`--database-url`) and with several daemons on a shared subscription
//! (`--instances`, through Mosquitto).

use std::process::Command;

/// `scriptd bench pipeline --json ARGS`: its report, once it succeeded.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(["bench", "pipeline", "--json"])
        .args(args)
        .output()
        .expect("run scriptd bench pipeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn bench_pipeline_reports_every_push_once() {
    let report =
        bench(&["--broker", "embedded", "--scripts", "200", "--events", "2000", "--qos", "1"]);
    for key in [
        "occurrences_per_s",
        "pushes_per_s",
        "lost",
        "duplicates",
        "ceiling_per_s",
        "ratio_to_ceiling",
        "daemon_cpu_s",
        "daemon_rss_mb",
    ] {
        assert!(report[key].is_number(), "{key} missing in {report}");
    }
    for key in ["p50", "p90", "p99", "max"] {
        assert!(report["latency_ms"][key].is_number(), "latency_ms.{key} missing in {report}");
    }
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(report["expected_pushes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["occurrences_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["ceiling_per_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn bench_pipeline_rejects_a_malformed_broker() {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(["bench", "pipeline", "--broker", "nowhere"])
        .output()
        .expect("run scriptd");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bench_pipeline_runs_the_daemon_on_postgresql_with_database_url() {
    let pg = crate::support::postgres::server();
    let url = pg.database();
    let db = url.rsplit('/').next().and_then(|t| t.split('?').next()).expect("db name");
    let report = bench(
        &["--broker", "embedded", "--scripts", "200", "--events", "1000"]
            .into_iter()
            .chain(["--qos", "1", "--no-ceiling", "--database-url", &url])
            .collect::<Vec<_>>(),
    );
    let store = report["store"].as_str().unwrap_or_default();
    assert!(store.starts_with("postgresql postgres@127.0.0.1:"), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    let expected = report["expected_pushes"].as_u64().expect("expected_pushes");
    assert!(expected > 0, "{report}");
    // The deliveries went through PostgreSQL's outbox (the warm-up's too).
    let sent: u64 = pg
        .psql(db, "SELECT count(*) FROM deliveries WHERE state = 'sent'")
        .parse()
        .expect("a count");
    assert!(sent >= expected, "{sent} sent rows for {expected} expected pushes");

    // The database now holds the run's rows: a second run is refused, naming the table.
    let again = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(["bench", "pipeline", "--broker", "embedded", "--scripts", "10"])
        .args(["--events", "10", "--no-ceiling", "--database-url", &url])
        .output()
        .expect("run scriptd bench pipeline");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{stderr}");
    assert!(stderr.contains("--database-url") && stderr.contains("not empty"), "{stderr}");
}

/// Two daemons on a shared subscription and one PostgreSQL database: every push once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pipeline_runs_several_instances_on_a_shared_subscription() {
    let pg = crate::support::postgres::server();
    let url = pg.database();
    let broker = crate::support::mosquitto::Mosquitto::start().await;
    let at = format!("127.0.0.1:{}", broker.port());
    let report = bench(
        &["--broker", &at, "--scripts", "200", "--events", "2000", "--qos", "1"]
            .into_iter()
            .chain(["--no-ceiling", "--instances", "2", "--database-url", &url])
            .collect::<Vec<_>>(),
    );
    assert_eq!(report["instances"], 2, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(report["expected_pushes"].as_u64().is_some_and(|n| n > 0), "{report}");

    // Several instances need the shared database.
    let alone = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(["bench", "pipeline", "--broker", "embedded", "--instances", "2"])
        .output()
        .expect("run scriptd bench pipeline");
    assert!(!alone.status.success());
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--database-url"));
}
