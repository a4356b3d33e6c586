//! One set of store cases (users, tokens, scripts, calendars, snoozes, deliveries: what the
//! API, explain and the commands read and write), run against both stores through
//! [`Db`]: SQLite (a temporary file) and PostgreSQL (a database of its own on the tests'
//! real server, `support::postgres`). `store_conformance::sqlite::<case>` and
//! `store_conformance::postgres::<case>`; the cases are where the two databases differ
//! (identities after explicit ids, booleans, JSON inside text columns, upserts).

use chrono::NaiveDate;
use scriptd::script::ScriptInput;
use scriptd::settings::{DatabaseSettings, DatabaseUrl};
use scriptd::store::calendars::{self, CalendarInput};
use scriptd::store::scripts::{self, Filter};
use scriptd::store::snoozes::{self, NewSnooze, Scope};
use scriptd::store::sql::Sql;
use scriptd::store::users::{self, NewUser};
use scriptd::store::{Db, Store, StoreError, deliveries, tokens};
use scriptd::timetable::holidays::DateRange;
use serde_json::json;

use crate::support::postgres::server;

/// A migrated SQLite store in `dir`.
fn sqlite(dir: &tempfile::TempDir) -> Db {
    Db::Sqlite(Store::migrate(&dir.path().join("scriptd.db")).expect("migrate"))
}

/// A migrated PostgreSQL database of its own.
async fn postgres() -> Db {
    let url = tokio::task::spawn_blocking(|| server().database()).await.expect("server");
    let settings = DatabaseSettings { url: Some(DatabaseUrl::new(url)), ..Default::default() };
    let pg = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&pg).await.expect("migrate");
    Db::Postgres(pg)
}

/// Runs `f` in one write transaction on the blocking pool.
async fn write<T: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&dyn Sql) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.write(f)).await.expect("blocking task")
}

fn user(id: Option<i64>, login: &str, parent_id: Option<i64>) -> NewUser {
    NewUser {
        id,
        login: login.into(),
        name: login.into(),
        parent_id,
        permissions: vec!["scripts.view".into(), "scripts.manage".into()],
    }
}

fn script(title: &str, cameras: Option<Vec<i64>>, users: Vec<i64>) -> ScriptInput {
    ScriptInput {
        title: title.into(),
        event_id: 1,
        reaction_id: 2,
        enabled: true,
        cameras,
        users,
        timetable: json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59",
                                    "breaks": []}], "intervals": [],
                          "holidays": {"calendars": [7]}}),
        extra: serde_json::Map::new(),
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    super::$case(super::sqlite(&dir)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    users_with_and_without_ids_and_their_errors,
    tokens_authenticate_until_revoked_or_the_user_is_disabled,
    scripts_round_trip_and_filter_by_owner_camera_title_and_status,
    deleted_scripts_remember_their_owner,
    calendars_and_the_scripts_that_name_them,
    snoozes_are_listed_deleted_and_versioned,
    deliveries_of_a_script_and_an_occurrence,
);

async fn users_with_and_without_ids_and_their_errors(db: Db) {
    let ids = write(&db, |tx| {
        let a = users::add(tx, &user(Some(10), "a@x", None))?;
        // After an explicit id, a user without one gets a free id (not 1, 2 ... colliding).
        let b = users::add(tx, &user(None, "b@x", Some(10)))?;
        let c = users::add(tx, &user(None, "c@x", Some(b)))?;
        Ok((a, b, c))
    })
    .await
    .expect("add users");
    assert_eq!(ids.0, 10);
    assert!(ids.1 > 10 && ids.2 > ids.1, "{ids:?}");
    let err =
        write(&db, |tx| users::add(tx, &user(Some(10), "a@x", Some(99)))).await.expect_err("taken");
    let StoreError::Invalid(errors) = err else { panic!("{err}") };
    let mut paths: Vec<&str> = errors.paths().collect();
    paths.sort_unstable();
    assert_eq!(paths, ["id", "login", "parent_id"], "{errors}");
    let (reach, perms, listed, got) = write(&db, move |tx| {
        Ok((
            users::reach(tx, 10)?,
            users::permission_names(tx, ids.1)?,
            users::list(tx)?,
            users::get(tx, ids.2)?,
        ))
    })
    .await
    .expect("read users");
    let mut reach = reach;
    reach.sort_unstable();
    assert_eq!(reach, [10, ids.1, ids.2]);
    let mut perms = perms;
    perms.sort();
    assert_eq!(perms, ["scripts.manage", "scripts.view"]);
    assert_eq!(listed.iter().map(|u| u.login.as_str()).collect::<Vec<_>>(), ["a@x", "b@x", "c@x"]);
    let got = got.expect("user c");
    assert_eq!((got.parent_id, got.disabled), (Some(ids.1), false));
}

async fn tokens_authenticate_until_revoked_or_the_user_is_disabled(db: Db) {
    let (one, two) = write(&db, |tx| {
        users::add(tx, &user(Some(1), "one@x", None))?;
        Ok((tokens::create(tx, 1)?, tokens::create(tx, 1)?))
    })
    .await
    .expect("tokens");
    let (one, two) = (one.expose().to_owned(), two.expose().to_owned());
    let t = one.clone();
    let found = write(&db, move |tx| tokens::authenticate(tx, &t)).await.expect("check");
    assert_eq!(found, Some(1));
    let t = one.clone();
    let wrong = format!("{}x", &t[..t.len() - 1]);
    assert_eq!(write(&db, move |tx| tokens::authenticate(tx, &wrong)).await.expect("check"), None);
    let public = one.split('.').next().expect("public id").to_owned();
    let p = public.clone();
    write(&db, move |tx| {
        tokens::touch(tx, &p)?;
        tokens::revoke(tx, &p)
    })
    .await
    .expect("revoke");
    let (revoked, other, list) = write(&db, move |tx| {
        Ok((
            tokens::authenticate(tx, &one)?,
            tokens::authenticate(tx, &two)?,
            tokens::list(tx, Some(1))?,
        ))
    })
    .await
    .expect("check");
    assert_eq!((revoked, other), (None, Some(1)));
    let info = list.iter().find(|t| t.public_id == public).expect("listed");
    assert!(info.revoked_at.is_some() && info.last_used_at.is_some(), "{info:?}");
    let t2 = list.iter().find(|t| t.public_id != public).expect("second").public_id.clone();
    let after = write(&db, move |tx| {
        users::disable(tx, 1)?;
        tokens::is_active(tx, &t2)
    })
    .await
    .expect("disable");
    assert!(!after, "a disabled user's token stays active");
    let expired = write(&db, |tx| {
        let s = tokens::create_expiring(tx, 1, Some(std::time::Duration::from_secs(3600)))?;
        Ok(s.expose().to_owned())
    })
    .await
    .expect("expiring");
    assert!(expired.contains('.'));
}

async fn scripts_round_trip_and_filter_by_owner_camera_title_and_status(db: Db) {
    let ids = write(&db, |tx| {
        users::add(tx, &user(Some(1), "one@x", None))?;
        users::add(tx, &user(Some(2), "two@x", None))?;
        let a = scripts::insert_owned(
            tx,
            None,
            Some(1),
            &script("Gate North", Some(vec![17, 18]), vec![1]),
        )?;
        let mut off = script("gate south", None, vec![1]);
        off.enabled = false;
        let b = scripts::insert_owned(tx, Some(40), Some(1), &off)?;
        let c = scripts::insert_owned(tx, None, Some(2), &script("Yard", Some(vec![5]), vec![2]))?;
        // A camera filter hand-edited into something that is not JSON.
        tx.execute("UPDATE scripts SET cameras = 'not json' WHERE id = ?1", scriptd::args![c])?;
        Ok((a, b, c))
    })
    .await
    .expect("insert");
    assert_eq!(ids.1, 40);
    assert!(ids.2 > 40, "an id after an explicit one: {ids:?}");
    let page = |owners: Vec<i64>, filter: Filter| {
        let db = db.clone();
        async move {
            write(&db, move |tx| scripts::page_owned_by(tx, &owners, &filter, 0, 10))
                .await
                .expect("page")
        }
    };
    let ids_of = |(rows, total): (Vec<scripts::StoredScript>, u64)| {
        (rows.iter().map(|s| s.id).collect::<Vec<_>>(), total)
    };
    assert_eq!(ids_of(page(vec![1], Filter::default()).await), (vec![ids.0, 40], 2));
    assert_eq!(ids_of(page(vec![1, 2], Filter::default()).await), (vec![ids.0, 40, ids.2], 3));
    let camera = |c| Filter { camera_id: Some(c), ..Default::default() };
    assert_eq!(ids_of(page(vec![1, 2], camera(18)).await), (vec![ids.0, 40], 2));
    assert_eq!(ids_of(page(vec![1, 2], camera(99)).await), (vec![40], 1));
    let title = Filter { title: Some("GATE".into()), ..Default::default() };
    assert_eq!(ids_of(page(vec![1, 2], title).await), (vec![ids.0, 40], 2));
    let disabled = Filter { enabled: Some(false), ..Default::default() };
    assert_eq!(ids_of(page(vec![1, 2], disabled).await), (vec![40], 1));
    let event = Filter { event_id: Some(1), reaction_id: Some(3), ..Default::default() };
    assert_eq!(ids_of(page(vec![1, 2], event).await), (vec![], 0));

    let (got, broken, updated, all) = write(&db, move |tx| {
        let got = scripts::get(tx, ids.0)?;
        let broken = scripts::get(tx, ids.2)?;
        let mut changed = script("Gate North 2", None, vec![1, 2]);
        changed.enabled = false;
        let updated = scripts::update(tx, ids.0, &changed)? && !scripts::update(tx, 999, &changed)?;
        Ok((got, broken, updated, scripts::all(tx)?))
    })
    .await
    .expect("get");
    let got = got.expect("script a");
    assert_eq!(got.owner_id, Some(1));
    assert_eq!(got.body["cameras"], json!([17, 18]));
    assert_eq!(got.body["users"], json!([1]));
    assert_eq!(got.body["event_id"], json!(1));
    assert_eq!(got.body["status"], json!("active"));
    assert_eq!(got.body["timetable"]["holidays"]["calendars"], json!([7]));
    assert_eq!(got.created_at.len(), "2026-01-01 00:00:00".len(), "{}", got.created_at);
    let broken = broken.expect("script c");
    assert_eq!(broken.decode_errors.paths().collect::<Vec<_>>(), ["cameras"]);
    assert!(updated);
    let a = all.iter().find(|s| s.id == ids.0).expect("a");
    assert_eq!(
        (a.body["title"].clone(), a.body["users"].clone()),
        (json!("Gate North 2"), json!([1, 2]))
    );
    assert_eq!(a.body["cameras"], json!(null));
}

async fn deleted_scripts_remember_their_owner(db: Db) {
    let (first, again, gone, reused) = write(&db, |tx| {
        users::add(tx, &user(Some(1), "one@x", None))?;
        users::add(tx, &user(Some(2), "two@x", None))?;
        let id = scripts::insert_owned(tx, None, Some(1), &script("s", None, vec![1]))?;
        assert!(scripts::delete(tx, id)?);
        let first = scripts::deleted_owner(tx, id)?;
        // Deleted twice (an id reused by an import, then deleted again): the latest owner.
        scripts::insert_owned(tx, Some(id), Some(2), &script("s", None, vec![2]))?;
        let reused = scripts::deleted_owner(tx, id)?;
        assert!(scripts::delete(tx, id)?);
        let again = scripts::deleted_owner(tx, id)?;
        Ok((first, again, scripts::delete(tx, id)?, reused))
    })
    .await
    .expect("delete");
    assert_eq!((first, again, gone, reused), (Some(1), Some(2), false, None));
}

async fn calendars_and_the_scripts_that_name_them(db: Db) {
    let date = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).expect("date");
    let input = CalendarInput {
        name: "Holidays".into(),
        timezone: "UTC".into(),
        dates: vec![DateRange { from: date(24), to: date(26), title: Some("Christmas".into()) }],
    };
    let (cal, using, added, owners) = write(&db, move |tx| {
        users::add(tx, &user(Some(1), "one@x", None))?;
        let cal = calendars::insert(tx, &input, Some(1))?;
        let mut names = script("uses it", None, vec![1]);
        names.timetable["holidays"]["calendars"] = json!([cal]);
        let s = scripts::insert_owned(tx, None, Some(1), &names)?;
        // Names it as text, or with a broken timetable: not counted.
        let mut text = script("text id", None, vec![1]);
        text.timetable["holidays"]["calendars"] = json!([cal.to_string()]);
        let t = scripts::insert_owned(tx, None, Some(1), &text)?;
        tx.execute("UPDATE scripts SET timetable = '{' WHERE id = ?1", scriptd::args![t])?;
        let more = [DateRange { from: date(31), to: date(31), title: None }];
        let added = calendars::add_dates(tx, cal, &more)?.map(|(c, n)| (c.input.dates.len(), n));
        Ok((cal, (s, calendars::scripts_using(tx, cal)?), added, calendars::owners(tx)?))
    })
    .await
    .expect("calendars");
    assert_eq!(using.1, vec![using.0]);
    assert_eq!(added, Some((2, 1)));
    assert_eq!(owners.get(&cal), Some(&Some(1)));
    let (got, dates, deleted) = write(&db, move |tx| {
        let got = calendars::get(tx, cal)?;
        let dates = calendars::all_dates(tx)?;
        Ok((
            got,
            dates.contains_key(&cal),
            calendars::delete(tx, cal)? && calendars::get(tx, cal)?.is_none(),
        ))
    })
    .await
    .expect("read");
    let got = got.expect("calendar");
    assert_eq!(got.input.name, "Holidays");
    assert_eq!(got.input.dates[0].title.as_deref(), Some("Christmas"));
    assert!(dates && deleted);
}

async fn snoozes_are_listed_deleted_and_versioned(db: Db) {
    let now = 1_800_000_000_000_i64;
    let snooze = move |script_id, until| NewSnooze {
        script_id,
        scope: Scope::Me,
        user_id: 1,
        camera_id: Some("17".into()),
        starts_at: now - 1000,
        until,
    };
    let (before, made, after, listed, active) = write(&db, move |tx| {
        users::add(tx, &user(Some(1), "one@x", None))?;
        let s = scripts::insert_owned(tx, None, Some(1), &script("s", None, vec![1]))?;
        let before = snoozes::version(tx)?;
        let made = snoozes::create(tx, &snooze(s, now + 60_000))?;
        snoozes::create(tx, &snooze(s, now - 10))?;
        let after = snoozes::version(tx)?;
        Ok((
            before,
            made,
            after,
            snoozes::list_for_script(tx, s, now)?,
            snoozes::list_active(tx, now)?,
        ))
    })
    .await
    .expect("snoozes");
    assert!(after > before, "{before} -> {after}");
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [made.id]);
    assert_eq!(active.len(), 1);
    assert_eq!(listed[0].camera_id.as_deref(), Some("17"));
    let (script_id, snooze_id) = (made.script_id, made.id);
    let (purged, left) = write(&db, move |tx| {
        snoozes::delete(tx, script_id, snooze_id)?;
        Ok((snoozes::purge_expired(tx, now)?, snoozes::list_active(tx, now)?))
    })
    .await
    .expect("delete");
    assert_eq!((purged, left.len()), (1, 0));
    let missing = write(&db, move |tx| snoozes::delete(tx, script_id, snooze_id)).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
}

async fn deliveries_of_a_script_and_an_occurrence(db: Db) {
    // Rows as the outbox writes them, one statement for both stores' columns.
    let insert = |id: &str, script: i64, at: i64| {
        let (id, occurrence) = (id.to_owned(), id.split(':').next().unwrap_or_default().to_owned());
        move |tx: &dyn Sql| {
            let channel = if tx.dialect() == scriptd::store::sql::Dialect::Postgres {
                ", channel"
            } else {
                ""
            };
            let value = if channel.is_empty() { "" } else { ", 'push'" };
            tx.execute(
                &format!(
                    "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane,
                                             payload, target, state, attempts, next_attempt_at,
                                             created_at, updated_at{channel})
                     VALUES (?1, ?2, ?3, 'sound', '1', '', '{{\"p\":1}}', NULL, 'sent', 1, ?4, ?4, ?4{value})"
                ),
                scriptd::args![id, occurrence, script, at],
            )?;
            Ok(())
        }
    };
    for (id, script, at) in [("o1:7:1", 7, 100), ("o1:8:1", 8, 101), ("o2:7:1", 7, 102)] {
        write(&db, insert(id, script, at)).await.expect("insert delivery");
    }
    let (recent, of_o1, any7, any9) = write(&db, |tx| {
        Ok((
            deliveries::recent(tx, 7, 10)?,
            deliveries::of_occurrence(tx, "o1")?,
            deliveries::any_for(tx, 7)?,
            deliveries::any_for(tx, 9)?,
        ))
    })
    .await
    .expect("read deliveries");
    let recent: Vec<String> = recent.iter().map(|d| d.id.clone()).collect();
    assert_eq!(recent, ["o2:7:1", "o1:7:1"]);
    let of_o1: Vec<(i64, String)> =
        of_o1.iter().map(|d| (d.script_id, d.payload.clone())).collect();
    assert_eq!(of_o1, [(7, r#"{"p":1}"#.to_owned()), (8, r#"{"p":1}"#.to_owned())]);
    assert!(any7 && !any9);
}
