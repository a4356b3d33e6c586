//! Shared helpers for the API tests: a temporary database with users and a token, the API
//! served on 127.0.0.1 port 0, and a reqwest client. [`start_on`] runs it on SQLite (a
//! temporary file) or PostgreSQL (a database of its own on the tests' server,
//! [`super::postgres::server`]); [`on_both_stores!`](crate::on_both_stores) writes a test
//! once and runs it on both.

use std::path::PathBuf;

use reqwest::{Method, RequestBuilder, Response};
use scriptd::api::{self, AppState};
use scriptd::live::Live;
use scriptd::secret::Secret;
use scriptd::store::sql::Sql;
use scriptd::store::users::NewUser;
use scriptd::store::{Db, Store, StoreError, tokens, users};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A running API over a temporary database.
pub struct TestApi {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub store: Db,
    pub live: Live,
    /// The SQLite file (on PostgreSQL, a path where no database is).
    pub db_path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The seed's request body.
pub fn seed_body() -> Value {
    json!({
        "reaction_id": 1,
        "event_id": 1,
        "title": "script",
        "status": "active",
        "cameras": null,
        "users": [1],
        "timetable": {
            "days": [{
                "type": "same_every_day",
                "from": "00:00:00+05:00",
                "to": "23:59:00+05:00",
                "breaks": [{"from": "16:00:00+05:00", "to": "17:00:00+05:00"}]
            }]
        },
        "extra": {"chat_id": "chat_id", "bot_token": "bot_token"}
    })
}

/// A body that is active all day every day, reaction `show-camera-sidebar` (no extra).
pub fn always_body(title: &str) -> Value {
    json!({
        "reaction_id": 2,
        "event_id": 5,
        "title": title,
        "status": "active",
        "cameras": [17, 18],
        "users": [1],
        "timetable": {"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]},
        "extra": {}
    })
}

/// Which store a [`TestApi`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A new database on the tests' PostgreSQL server.
    Postgres,
}

/// Writes a test once for both stores: `async fn NAME(api) { ... }` becomes a module `NAME`
/// with the tests `sqlite` and `postgres`, each given a [`TestApi`] from [`start_on`].
#[macro_export]
macro_rules! on_both_stores {
    ($($(#[$meta:meta])* async fn $name:ident($api:ident) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($api: $crate::support::api::TestApi) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::api::start_on($crate::support::api::Backend::Sqlite).await)
                    .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::support::api::start_on($crate::support::api::Backend::Postgres).await)
                    .await
            }
        }
    )*};
}

/// The users every [`TestApi`] starts with: 3 (parent), 1 (the seed's user, child of 3,
/// permission 240), 2 (child of 1); and a token for user 1.
fn seed_users(tx: &dyn Sql) -> Result<Secret, StoreError> {
    users::add(
        tx,
        &NewUser {
            id: Some(3),
            login: "parent@mail.com".into(),
            name: "Parent".into(),
            ..Default::default()
        },
    )?;
    users::add(
        tx,
        &NewUser {
            id: Some(1),
            login: "user@mail.com".into(),
            name: "User name".into(),
            parent_id: Some(3),
            permissions: vec!["scripts.manage".into()],
        },
    )?;
    users::add(
        tx,
        &NewUser {
            id: Some(2),
            login: "sub@mail.com".into(),
            name: "Sub user".into(),
            parent_id: Some(1),
            ..Default::default()
        },
    )?;
    tokens::create(tx, 1)
}

/// Starts the API on SQLite with [`seed_users`].
pub async fn start() -> TestApi {
    start_with_busy_timeout(scriptd::store::BUSY_TIMEOUT).await
}

/// [`start`] with the API's store waiting at most `busy_timeout` for a lock.
pub async fn start_with_busy_timeout(busy_timeout: std::time::Duration) -> TestApi {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data").join("scriptd.db");
    let store = Store::migrate(&db_path).unwrap();
    let token = store.write(|tx| seed_users(tx)).unwrap();
    let live = Live::new(store.clone(), chrono_tz::UTC).unwrap();
    serve(Db::Sqlite(store.with_busy_timeout(busy_timeout)), live, token, db_path, dir).await
}

/// Starts the API on `backend` with [`seed_users`].
pub async fn start_on(backend: Backend) -> TestApi {
    if backend == Backend::Sqlite {
        return start().await;
    }
    let url = tokio::task::spawn_blocking(|| super::postgres::server().database()).await.unwrap();
    let settings = scriptd::settings::DatabaseSettings {
        url: Some(scriptd::settings::DatabaseUrl::new(url)),
        ..Default::default()
    };
    let pg = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&pg).await.expect("migrate");
    let seeded = pg.clone();
    let token =
        tokio::task::spawn_blocking(move || seeded.write(seed_users)).await.unwrap().unwrap();
    let live = Live::new_postgres(pg.clone(), chrono_tz::UTC).await.expect("snapshot");
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("no-sqlite-here.db");
    serve(Db::Postgres(pg), live, token, db_path, dir).await
}

async fn serve(
    store: Db,
    live: Live,
    token: Secret,
    db_path: PathBuf,
    dir: tempfile::TempDir,
) -> TestApi {
    let (stop, stopped) = oneshot::channel::<()>();
    let (watch_stop, watch_stopped) = oneshot::channel::<()>();
    live.spawn_watcher(scriptd::live::POLL_INTERVAL, async move {
        let _ = watch_stopped.await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(store.clone(), live.clone());
    tokio::spawn(async move {
        let _ = api::serve(listener, state, async move {
            let _ = stopped.await;
            let _ = watch_stop.send(());
        })
        .await;
    });
    TestApi {
        base: format!("http://{addr}/api/v1"),
        token: token.expose().to_owned(),
        client: reqwest::Client::new(),
        store,
        live,
        db_path,
        _dir: dir,
        stop: Some(stop),
    }
}

impl TestApi {
    /// Runs `f` in one write transaction on the test's store (on the blocking pool).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(f)).await.unwrap().unwrap()
    }

    /// A request with the bearer token and the client headers.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "application/json")
            .header("X-Client", "web")
            .header("X-UUID", "test-device")
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn send(&self, rb: RequestBuilder) -> (u16, Value) {
        let res: Response = rb.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.send(self.req(Method::POST, "/scripts").json(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(Method::GET, path)).await
    }

    /// Creates a script and returns its id.
    pub async fn create(&self, body: &Value) -> i64 {
        let (status, v) = self.post(body).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_i64().unwrap()
    }
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Sorted `errors` keys of a 422 body.
pub fn error_keys(v: &Value) -> Vec<String> {
    keys(&v["errors"])
}
