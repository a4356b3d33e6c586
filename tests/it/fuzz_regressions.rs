//! Inputs found by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the API abuse test,
//! replayed through the same checks as the targets, so a fixed crash stays fixed without
//! needing cargo-fuzz or a nightly compiler.
//!
//! Each file under `tests/fuzz-regressions/<target>/` is one input exactly as libFuzzer
//! wrote it (the first byte of `parse_timetable` and `validate_script` inputs picks the
//! zone). The checks are the targets' own (`fuzz/checks.rs`).

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use checks::{TIMETABLE_ZONES, check_decode, check_timetable, check_validate};
use chrono::Utc;
use serde_json::Value;

use scriptd::intake::occurrence::decode;
use scriptd::script::{ValidationContext, validate};
use scriptd::timetable::{ParseContext, parse_timetable};

/// The inputs kept for `target`, with their file names. A missing or empty folder fails the
/// test: a replay of nothing would pass whatever the checks say.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!("{}: {e} (the kept inputs are part of the repository)", dir.display())
    });
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("directory entry"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{}: no kept inputs", dir.display());
    out
}

#[test]
fn decode_occurrence_regressions() {
    for (name, data) in inputs("decode_occurrence") {
        eprintln!("decode_occurrence/{name}");
        check_decode(&data);
        // Every kept payload was once accepted by mistake: each must stay rejected.
        assert!(decode("t", &data, Utc::now()).is_err(), "decode_occurrence/{name} is accepted");
    }
}

#[test]
fn parse_timetable_regressions() {
    for (name, data) in inputs("parse_timetable") {
        eprintln!("parse_timetable/{name}");
        // `check_timetable` checks only what parses: each kept input must still parse, or
        // the replay would check nothing.
        let (&zone, json) = data.split_first().expect("a zone byte and a timetable");
        let value: Value = serde_json::from_slice(json).expect("a kept input is JSON");
        let ctx =
            ParseContext { timezone: TIMETABLE_ZONES[usize::from(zone) % TIMETABLE_ZONES.len()] };
        if let Err(e) = parse_timetable(&value, &ctx) {
            panic!(
                "parse_timetable/{name} no longer parses ({e:?}): the replay would check nothing"
            );
        }
        check_timetable(&data);
    }
}

#[test]
fn validate_script_regressions() {
    for (name, data) in inputs("validate_script") {
        eprintln!("validate_script/{name}");
        // Every kept body was once accepted by mistake: each must stay refused.
        assert!(!check_validate(&data), "validate_script/{name} is accepted");
    }
}

/// From the API abuse test: a title of NUL and BEL characters was accepted (201).
#[test]
fn title_with_control_characters_is_refused() {
    let mut data = vec![0u8];
    data.extend_from_slice(
        br#"{"reaction_id":2,"event_id":1,"title":"\u0000\u0007","status":"active","users":[1],"timetable":{"days":[{"type":"same_every_day","from":"08:00","to":"10:00"}]}}"#,
    );
    assert!(!check_validate(&data));
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&data[1..]) else {
        panic!("test body")
    };
    let (events, reactions, users) = (HashMap::new(), HashMap::new(), HashSet::new());
    let calendars = HashMap::new();
    let ctx = ValidationContext {
        timezone: chrono_tz::UTC,
        events: &events,
        reactions: &reactions,
        users: &users,
        calendars: &calendars,
    };
    let e = validate(&body, &ctx).unwrap_err();
    assert_eq!(
        e.get("title"),
        Some(&["The title must not contain control characters.".to_owned()][..])
    );
}

/// Found while checking the decoder by hand after the first fuzz runs: a `snapshot_url`
/// with surrounding spaces, a newline, a tab or a NUL was accepted and forwarded as written.
#[test]
fn snapshot_url_with_whitespace_or_control_characters_is_refused() {
    let now = Utc::now();
    for p in [
        r#"{"event_id":1,"camera_id":1,"snapshot_url":" https://x/y.jpg "}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"https://ex\nample.com/a.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"https://x/\u0000.jpg"}"#,
    ] {
        check_decode(p.as_bytes());
        let r = decode("t", p.as_bytes(), now).expect_err(p);
        assert_eq!(r.reason.as_str(), "bad_snapshot_url", "{p}");
    }
}

/// Same for a webhook's `extra.url` through script validation.
#[test]
fn webhook_url_with_whitespace_or_control_characters_is_refused() {
    // JSON escapes: a newline and a NUL inside the string.
    for url in [r" https://hooks.example/a", r"https://hooks.ex\nample/a", r"https://h/\u0000"] {
        let body = format!(
            r#"{{"reaction_id":5,"event_id":1,"title":"t","status":"active","users":[1],"timetable":{{"days":[{{"type":"same_every_day","from":"08:00","to":"10:00"}}]}},"extra":{{"url":"{url}"}}}}"#
        );
        let mut data = vec![0u8];
        data.extend_from_slice(body.as_bytes());
        assert!(!check_validate(&data), "{url:?} accepted");
    }
    let ok = br#"{"reaction_id":5,"event_id":1,"title":"t","status":"active","users":[1],"timetable":{"days":[{"type":"same_every_day","from":"08:00","to":"10:00"}]},"extra":{"url":"https://hooks.example/a"}}"#;
    assert!(check_validate(&[[0u8].as_slice(), ok].concat()));
}

/// The fuzz seeds themselves run through the checks, so the harness is exercised even
/// before any crash was kept.
#[test]
fn fuzz_seeds_pass_the_checks() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, check) in [
        ("decode_occurrence", check_decode as fn(&[u8])),
        ("parse_timetable", check_timetable),
        ("validate_script", |d: &[u8]| {
            check_validate(d);
        }),
    ] {
        let dir = seeds.join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            check(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }
}

/// Replays a whole fuzz corpus through the checks (debug build, overflow checks on) and
/// prints how many inputs got past parsing: `FUZZ_CORPUS=fuzz/corpus/parse_timetable
/// FUZZ_TARGET=parse_timetable cargo test --test it fuzz_regressions -- --ignored --nocapture`.
#[test]
#[ignore = "needs a corpus from fuzz/run.sh"]
fn replay_corpus() {
    let (Ok(dir), Ok(target)) = (std::env::var("FUZZ_CORPUS"), std::env::var("FUZZ_TARGET")) else {
        panic!("set FUZZ_CORPUS and FUZZ_TARGET")
    };
    let (mut total, mut accepted) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        total += 1;
        let ok = match target.as_str() {
            "decode_occurrence" => {
                check_decode(&data);
                decode("t", &data, Utc::now()).is_ok()
            }
            "parse_timetable" => {
                check_timetable(&data);
                data.split_first().is_some_and(|(z, json)| {
                    serde_json::from_slice::<Value>(json).is_ok_and(|v| {
                        let tz = TIMETABLE_ZONES[usize::from(*z) % 6];
                        parse_timetable(&v, &ParseContext { timezone: tz }).is_ok()
                    })
                })
            }
            "validate_script" => check_validate(&data),
            other => panic!("unknown target {other}"),
        };
        accepted += usize::from(ok);
    }
    println!("{target}: {total} corpus inputs, {accepted} accepted");
}
