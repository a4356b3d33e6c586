//! `scriptd bench pipeline` end to end on tiny numbers, with the embedded broker: the
//! daemon runs as a child process and every expected push arrives exactly once.

use std::process::Command;

#[test]
fn bench_pipeline_reports_every_push_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(["bench", "pipeline", "--broker", "embedded", "--scripts", "200"])
        .args(["--events", "2000", "--qos", "1", "--json"])
        .output()
        .expect("run scriptd bench pipeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
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
