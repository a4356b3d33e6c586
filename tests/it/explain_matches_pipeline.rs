//! Property: explain says a recipient gets a delivery exactly when the intake makes one.
//!
//! Random scripts (events, reactions of every kind, camera filters, statuses, users with
//! sub-users, timetables of every shape, cooldowns), random snoozes (scope `me` and
//! `script`, per camera or not) and disabled users; then a stream of random occurrences.
//! Before each occurrence, explain is asked (from the database and the live snapshot, as
//! the API does); then the occurrence goes through the real intake (`Intake::write_batch`,
//! which commits its deliveries and cooldown state). The (script, recipient) pairs explain
//! marks as delivered must equal the outbox rows made, and a script fires exactly when the
//! intake made a decision past its timetable and cooldown.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};

use crate::support::timetables::{ZONES, instant, timetable};
use scriptd::intake::Intake;
use scriptd::intake::explain::{self, Question, State};
use scriptd::intake::occurrence::RejectionLog;
use scriptd::live::Live;
use scriptd::script::{Lookups, validate};
use scriptd::settings::Settings;
use scriptd::store::outbox::Handoff;
use scriptd::store::snoozes::{self, NewSnooze, Scope};
use scriptd::store::users::{self, NewUser};
use scriptd::store::{Store, deliveries, scripts};

/// Users: 1 ← 2 ← 3 (sub-users), and 4 on its own.
const USERS: [(i64, Option<i64>); 4] = [(1, None), (2, Some(1)), (3, Some(2)), (4, None)];
const REACTIONS: [i64; 5] = [1, 2, 3, 4, 5]; // telegram, sidebar, show-camera, sound, webhook

#[derive(Debug, Clone)]
struct ScriptSpec {
    event: i64,
    reaction: i64,
    cameras: Option<Vec<i64>>,
    enabled: bool,
    users: Vec<i64>,
    timetable: Value,
    cooldown: u32,
}

#[derive(Debug, Clone)]
struct SnoozeSpec {
    script: usize,
    scope_me: bool,
    user: i64,
    camera: Option<i64>,
    /// Minutes after the first occurrence it ends.
    until_minutes: i64,
}

#[derive(Debug, Clone)]
struct Case {
    zone: usize,
    scripts: Vec<ScriptSpec>,
    snoozes: Vec<SnoozeSpec>,
    disabled: Vec<i64>,
    start: i64,
    /// (event, camera, seconds after the previous one)
    occurrences: Vec<(i64, i64, i64)>,
}

fn script_spec() -> impl Strategy<Value = ScriptSpec> {
    (
        1i64..3,
        prop::sample::select(REACTIONS.to_vec()),
        prop::option::weighted(0.5, prop::collection::btree_set(1i64..4, 1..3)),
        prop::bool::weighted(0.85),
        prop::collection::btree_set(1i64..5, 1..3),
        // Mostly all day, so occurrences fire often; otherwise a random timetable.
        prop_oneof![
            2 => Just(json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59", "breaks": []}]})),
            3 => timetable(),
        ],
        prop::sample::select(vec![0u32, 0, 30, 600]),
    )
        .prop_map(|(event, reaction, cameras, enabled, users, timetable, cooldown)| ScriptSpec {
            event,
            reaction,
            cameras: cameras.map(|c| c.into_iter().collect()),
            enabled,
            users: users.into_iter().collect(),
            timetable,
            cooldown,
        })
}

fn snooze_spec() -> impl Strategy<Value = SnoozeSpec> {
    (0usize..6, any::<bool>(), 1i64..5, prop::option::weighted(0.4, 1i64..4), 1i64..120).prop_map(
        |(script, scope_me, user, camera, until_minutes)| SnoozeSpec {
            script,
            scope_me,
            user,
            camera,
            until_minutes,
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..ZONES.len(),
        prop::collection::vec(script_spec(), 1..6),
        prop::collection::vec(snooze_spec(), 0..3),
        prop::collection::btree_set(1i64..5, 0..2),
        instant(),
        prop::collection::vec(
            (1i64..3, 1i64..4, prop::sample::select(vec![0i64, 1, 10, 45, 300, 900, 3600])),
            1..10,
        ),
    )
        .prop_map(|(zone, scripts, snoozes, disabled, start, occurrences)| Case {
            zone,
            scripts,
            snoozes,
            disabled: disabled.into_iter().collect(),
            start,
            occurrences,
        })
}

fn body(s: &ScriptSpec, n: usize) -> Map<String, Value> {
    let mut extra = Map::new();
    match s.reaction {
        1 => {
            extra.insert("bot_token".into(), json!("123:abc"));
            extra.insert("chat_id".into(), json!(format!("{}", 100 + n)));
        }
        5 => {
            extra.insert("url".into(), json!(format!("http://127.0.0.1:9/hook/{n}")));
        }
        _ => {}
    }
    if s.cooldown > 0 {
        extra.insert("cooldown_seconds".into(), json!(s.cooldown));
    }
    let v = json!({
        "title": format!("script {n}"),
        "event_id": s.event,
        "reaction_id": s.reaction,
        "status": if s.enabled { "active" } else { "disabled" },
        "cameras": s.cameras,
        "users": s.users,
        "timetable": s.timetable,
        "extra": extra,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// What a run exercised; asserted so the generators cannot drift into trivial cases.
#[derive(Debug, Default)]
struct Coverage {
    occurrences: usize,
    firing: usize,
    delivered: usize,
    cooldown: usize,
    snoozed: usize,
    disabled_user: usize,
    outside: usize,
}

fn run_case(c: &Case, cov: &mut Coverage) -> Result<(), TestCaseError> {
    let tz = ZONES[c.zone];
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let store =
        Store::migrate(&dir.path().join("t.db")).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let start_ms = c.start * 1000;
    let ids: Vec<i64> = store
        .write(|tx| {
            for (id, parent) in USERS {
                users::add(
                    tx,
                    &NewUser {
                        id: Some(id),
                        login: format!("u{id}"),
                        name: format!("u{id}"),
                        parent_id: parent,
                        permissions: vec!["scripts.manage".into()],
                    },
                )?;
            }
            let lookups = Lookups::load(tx)?;
            let ctx = lookups.context(tz);
            let mut ids = Vec::new();
            for (n, s) in c.scripts.iter().enumerate() {
                // Random timetables may be invalid (a break rounding onto an edge): skipped.
                if let Ok(v) = validate(&body(s, n), &ctx) {
                    ids.push(scripts::insert_owned(tx, None, Some(1), &v.input)?);
                }
            }
            for sn in &c.snoozes {
                let Some(&script_id) = ids.get(sn.script % ids.len().max(1)) else { continue };
                snoozes::create(
                    tx,
                    &NewSnooze {
                        script_id,
                        scope: if sn.scope_me { Scope::Me } else { Scope::Script },
                        user_id: sn.user,
                        camera_id: sn.camera.map(|c| c.to_string()),
                        starts_at: start_ms - 86_400_000,
                        until: start_ms + sn.until_minutes * 60_000,
                    },
                )?;
            }
            for u in &c.disabled {
                users::disable(tx, *u)?;
            }
            Ok(ids)
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assume!(!ids.is_empty());
    let live = Live::new(store.clone(), tz).map_err(|e| TestCaseError::fail(e.to_string()))?;
    live.reload_blocking().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let settings = Arc::new(ArcSwap::from_pointee(Settings::default().live_part()));
    let mut intake = Intake::new(
        store.clone(),
        Arc::new(Handoff::default()),
        live.clone(),
        settings,
        Arc::new(RejectionLog::default()),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;

    let mut t = c.start;
    for (i, &(event, camera, gap)) in c.occurrences.iter().enumerate() {
        t += gap;
        let at = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        let occ_id = format!("o{i}");
        let q = Question {
            event_id: event,
            camera_id: camera,
            at,
            occurrence_id: Some(occ_id.clone()),
        };
        let snap = live.load();
        let verdicts = store
            .read(|tx| {
                let state = State::load(tx, at.timestamp_millis())?;
                explain::explain(tx, &snap, tz, &state, &q, |_| true)
            })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut said: BTreeSet<(i64, String)> = BTreeSet::new();
        for v in &verdicts {
            if v.fires {
                cov.firing += 1;
                prop_assert!(
                    v.reason.starts_with("active in window timetable.days.")
                        || v.reason.starts_with("in interval timetable.intervals."),
                    "{:?}",
                    v
                );
            } else {
                prop_assert!(v.recipients.is_empty(), "{:?}", v);
                cov.cooldown += usize::from(v.reason.starts_with("cooldown until "));
                cov.outside += usize::from(
                    v.reason.starts_with("outside") || v.reason.starts_with("in break"),
                );
            }
            for r in &v.recipients {
                cov.snoozed += usize::from(r.reason.starts_with("snoozed until "));
                cov.disabled_user += usize::from(r.reason == "user disabled");
                if r.delivers {
                    let key = match &r.who {
                        explain::Who::User(u) => u.to_string(),
                        explain::Who::Chat(c) => c.clone(),
                        explain::Who::Url(u) => u.clone(),
                    };
                    said.insert((v.script_id, key));
                }
            }
        }
        let payload = json!({"id": occ_id, "event_id": event, "camera_id": camera,
                             "occurred_at": at.to_rfc3339()})
        .to_string();
        let now = at + chrono::Duration::seconds(1);
        rt.block_on(intake.write_batch(&[("vms/analytics/events/1", payload.as_bytes())], now))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let made: BTreeSet<(i64, String)> = store
            .read(|tx| deliveries::of_occurrence(tx, &occ_id))
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter()
            .map(|d| (d.script_id, d.view.recipient))
            .collect();
        prop_assert_eq!(&said, &made, "occurrence {} ({:?}): explain {:?}", i, q, verdicts);
        cov.occurrences += 1;
        cov.delivered += made.len();
    }
    Ok(())
}

#[test]
fn explain_delivers_exactly_what_the_intake_delivers() {
    let config = crate::support::proptest_config(128, file!());
    let coverage = RefCell::new(Coverage::default());
    let result = TestRunner::new(config).run(&case(), |c| run_case(&c, &mut coverage.borrow_mut()));
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    println!("{c:?}");
    assert!(c.occurrences > 100, "{c:?}");
    assert!(c.firing > 20 && c.delivered > 20, "{c:?}");
    assert!(c.cooldown > 0, "no cooldown was exercised: {c:?}");
    assert!(c.snoozed > 0, "no snooze was exercised: {c:?}");
    assert!(c.disabled_user > 0, "no disabled user was exercised: {c:?}");
    assert!(c.outside > 0, "no inactive timetable was exercised: {c:?}");
}
