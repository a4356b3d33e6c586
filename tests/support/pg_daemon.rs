//! `scriptd run` on PostgreSQL as a child process of the test: its own temporary config
//! folder and log, a free API port, an external broker.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::binary;
use super::free_port;

/// The daemon process; killed when dropped.
pub struct Run {
    child: Child,
    dir: tempfile::TempDir,
    /// The API's port.
    pub api_port: u16,
}

impl Run {
    /// `scriptd run` on the database at `url` and the broker at `mqtt_port`, with the
    /// client id `scriptd-pg-{api port}`.
    pub fn start(url: &str, mqtt_port: u16) -> Run {
        Run::start_as(url, mqtt_port, None)
    }

    /// [`Run::start`] with the client id `client_id` when given.
    pub fn start_as(url: &str, mqtt_port: u16, client_id: Option<&str>) -> Run {
        Run::start_with(url, mqtt_port, client_id, &[])
    }

    /// [`Run::start_as`] with more settings as environment variables (`SCRIPTD__...`).
    pub fn start_with(
        url: &str,
        mqtt_port: u16,
        client_id: Option<&str>,
        env: &[(&str, &str)],
    ) -> Run {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_port = free_port();
        let client_id = client_id.map_or_else(|| format!("scriptd-pg-{api_port}"), str::to_owned);
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(
            config.join("default.toml"),
            format!(
                r#"timezone = "UTC"
[database]
url = "{url}"
path = "{sqlite}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"
embedded_broker = false
reconnect_min_ms = 50
[api]
bind = "127.0.0.1:{api_port}"
[log]
level = "info,scriptd=debug"
"#,
                sqlite = dir.path().join("unused.db").display(),
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_remove("SCRIPTD_CONFIG_DIR")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn scriptd run");
        Run { child, dir, api_port }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:{api port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// `/healthz` (status code and body) once `component` is `state`.
    pub async fn wait_component(
        &mut self,
        component: &str,
        state: &str,
        secs: u64,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("scriptd exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(self.url("/healthz")).await {
                let code = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if body["components"][component]["state"] == state {
                    return (code, body);
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{component} never {state} in {secs} s; last /healthz {last}\nlog:\n{}", self.log());
    }
}

impl Run {
    /// Waits up to `secs` for the process to exit; its status code (`None`: still running
    /// or killed by a signal).
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, as systemd's stop, then waits up to 20 s for the exit.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.wait_exit(20)
    }

    /// SIGKILL, as a crash: the process ends without any goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One always-active script (`id`) of `event_id` that pushes a sound (reaction 4) to user
/// `user_id` (created when missing), written with SQL into database `db`.
pub fn seed_push_script(
    pg: &super::postgres::PgServer,
    db: &str,
    id: i64,
    event_id: i64,
    user_id: i64,
) {
    seed_script_with_extra(pg, db, id, event_id, user_id, "{}");
}

/// [`seed_push_script`] with the script's `extra` (JSON), e.g. a cooldown.
pub fn seed_script_with_extra(
    pg: &super::postgres::PgServer,
    db: &str,
    id: i64,
    event_id: i64,
    user_id: i64,
    extra: &str,
) {
    pg.psql(
        db,
        &format!(
            "INSERT INTO users (id, login, name) VALUES ({user_id}, 'u{user_id}@example.com', 'U')
               ON CONFLICT (id) DO NOTHING;
             INSERT INTO scripts (id, title, event_id, reaction_id, status, cameras, timetable,
                                  extra, owner_id)
             VALUES ({id}, 'script {id}', {event_id}, 4, 'active', NULL, '{}', '{extra}', {user_id});
             INSERT INTO script_users (script_id, user_id, position) VALUES ({id}, {user_id}, 0);",
            super::daemon::all_day()
        ),
    );
}

/// `scriptd migrate` against `url` (a scratch config folder).
pub fn migrate(url: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(binary())
        .env_clear()
        .arg("--config")
        .arg(dir.path())
        .arg("migrate")
        .env("SCRIPTD__DATABASE__URL", url)
        .output()
        .expect("run scriptd migrate");
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
}

/// The database name of a test database URL.
pub fn db_name(url: &str) -> &str {
    url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or_default()
}

/// `scriptd ARGS` against the database at `url` (a scratch config folder); its stdout,
/// success asserted.
pub fn cli(url: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(binary())
        .env_clear()
        .arg("--config")
        .arg(dir.path())
        .args(args)
        .env("SCRIPTD__DATABASE__URL", url)
        .output()
        .expect("run scriptd");
    assert!(out.status.success(), "scriptd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
