//! The real `scriptd` binary as a test peer: a temp directory with its own config, database
//! and log, free loopback ports, the embedded broker or an external one, users and an API
//! token made with the operator CLI, and helpers to kill, stop and restart it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{free_port, within};

/// Path of the built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_scriptd")
}

/// How to start a daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// `Some(port)`: use the broker already listening there (`embedded_broker = false`);
    /// `None`: start the embedded broker on a free port.
    pub external_broker: Option<u16>,
    /// Appended to `default.toml` (sections must not repeat the ones written here: use
    /// `SCRIPTD__…` env vars in `env` for keys of those sections).
    pub extra_toml: String,
    /// Extra environment (`SCRIPTD__SECTION__KEY`).
    pub env: Vec<(String, String)>,
    /// `Some(n)`: the daemon runs with `RLIMIT_NOFILE` n (soft and hard), set before exec.
    pub nofile: Option<u64>,
    /// `Some(PEM)`: the API serves HTTPS (configured in `extra_toml` or `env`) with a
    /// certificate for `localhost` issued by this CA; requests go to `https://localhost`.
    pub tls_ca_pem: Option<String>,
    /// Run on a database of its own on the tests' PostgreSQL server instead of a SQLite
    /// file (the users and tokens are made with the same CLI commands).
    pub postgres: bool,
}

impl DaemonOptions {
    /// The defaults on SQLite (`false`) or PostgreSQL (`true`).
    pub fn on_postgres(postgres: bool) -> DaemonOptions {
        DaemonOptions { postgres, ..Default::default() }
    }
}

/// Writes a daemon test once for both stores: `async fn NAME(d) { ... }` becomes a module
/// `NAME` with the tests `sqlite` and `postgres`, each given a [`Daemon`] started with
/// [`DaemonOptions::on_postgres`].
#[macro_export]
macro_rules! on_both_daemons {
    ($($(#[$meta:meta])* async fn $name:ident($d:ident) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_mut)]
            async fn run(mut $d: $crate::support::daemon::Daemon) $body

            async fn start(postgres: bool) -> $crate::support::daemon::Daemon {
                let options = $crate::support::daemon::DaemonOptions::on_postgres(postgres);
                $crate::support::daemon::Daemon::start(options).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(start(false).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(start(true).await).await
            }
        }
    )*};
}

/// A running `scriptd run`; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub mqtt_port: u16,
    /// A token of user 1.
    pub token: String,
    /// A token of user 4 (scripts are owned by their creator, and user 4 is in another
    /// account than user 1: [`Daemon::create_script`] uses this token for scripts of 4).
    pub token_4: String,
    options: DaemonOptions,
    starts: usize,
}

fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SCRIPTD_CONFIG_DIR")
        .output()
        .expect("run scriptd");
    assert!(
        out.status.success(),
        "scriptd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Daemon {
    /// Writes the config, makes users 1 (operator), 2 (sub-user of 1), 3 (sub-user of 2)
    /// and 4 (unrelated), a token for user 1, and starts the daemon; returns once `/healthz`
    /// reports the broker connected.
    pub async fn start(options: DaemonOptions) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_port = free_port();
        let mqtt_port = options.external_broker.unwrap_or_else(free_port);
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        let url = match options.postgres {
            true => {
                let url = tokio::task::spawn_blocking(|| super::postgres::server().database())
                    .await
                    .expect("a database");
                format!("url = \"{url}\"")
            }
            false => String::new(),
        };
        let toml = format!(
            r#"timezone = "UTC"
[database]
path = "{db}"
{url}
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "scriptd-test-{api_port}"
embedded_broker = {embedded}
protocol = "{protocol}"
reconnect_min_ms = 50
[api]
bind = "127.0.0.1:{api_port}"
[log]
level = "info,scriptd=debug"
{extra}
"#,
            db = dir.path().join("scriptd.db").display(),
            embedded = options.external_broker.is_none(),
            protocol = if options.external_broker.is_none() { "3.1.1" } else { "5" },
            extra = options.extra_toml,
        );
        std::fs::write(config.join("default.toml"), toml).expect("write config");
        cli(&config, &["migrate"]);
        for (id, login, parent) in [
            (1, "op@example.com", None),
            (2, "sub@example.com", Some(1)),
            (3, "subsub@example.com", Some(2)),
            (4, "other@example.com", None),
        ] {
            let mut args = vec!["users", "add", "--login", login, "--name", login];
            let id_s = id.to_string();
            args.extend(["--id", &id_s]);
            let parent_s = parent.map(|p: i64| p.to_string());
            if let Some(p) = &parent_s {
                args.extend(["--parent", p]);
            }
            cli(&config, &args);
        }
        let token = cli(&config, &["tokens", "create", "--user", "1"]);
        let token_4 = cli(&config, &["tokens", "create", "--user", "4"]);
        let mut d =
            Daemon { child: None, dir, api_port, mqtt_port, token, token_4, options, starts: 0 };
        d.spawn().await;
        d
    }

    /// The configuration folder (for running operator commands against this daemon).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The daemon's combined log output so far (all starts).
    pub fn log(&self) -> String {
        (0..self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("daemon-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the process and waits until it is healthy.
    pub async fn spawn(&mut self) {
        let log =
            std::fs::File::create(self.dir.path().join(format!("daemon-{}.log", self.starts)))
                .expect("log file");
        self.starts += 1;
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(self.config_dir())
            .arg("run")
            .env_remove("SCRIPTD_CONFIG_DIR")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.options.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        self.child = Some(cmd.spawn().expect("spawn scriptd run"));
        let url = format!("{}/healthz", self.base());
        let client = self.client();
        let ok = within(20, "daemon healthy", async {
            loop {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(status);
                }
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if let Err(status) = ok {
            panic!("scriptd exited early ({status}):\n{}", self.log());
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the running daemon, MiB (`VmRSS`).
    pub fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (at most `secs`).
    pub async fn sigterm(&mut self, secs: u64) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        within(secs, "daemon exit after SIGTERM", async {
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// `http://127.0.0.1:{port}`, or `https://localhost:{port}` with HTTPS.
    pub fn base(&self) -> String {
        match self.options.tls_ca_pem {
            Some(_) => format!("https://localhost:{}", self.api_port),
            None => format!("http://127.0.0.1:{}", self.api_port),
        }
    }

    /// A new HTTP client (new connections) that trusts the test CA when HTTPS is on.
    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(pem) = &self.options.tls_ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("test CA");
            b = b.tls_built_in_root_certs(false).add_root_certificate(ca);
        }
        b.build().expect("HTTP client")
    }

    /// `{base}/api/v1{path}` (see [`Daemon::base`]).
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base())
    }

    /// Runs an operator command (`scriptd --config DIR args…`) against this daemon's
    /// database; asserts success and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.config_dir(), args)
    }

    /// POST /scripts with the token of user 1 (of user 4 when the body's first user is
    /// 4); returns the created script (asserts 201).
    pub async fn create_script(&self, body: &Value) -> Value {
        let token = if body["users"][0] == 4 { &self.token_4 } else { &self.token };
        let r = self
            .client()
            .post(self.url("/scripts"))
            .bearer_auth(token)
            .header("X-Client", "web")
            .json(body)
            .send()
            .await
            .expect("POST /scripts");
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert_eq!(status, 201, "create script: {v}");
        v
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client()
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// GET with the token of user 1.
    pub async fn get(&self, path: &str) -> Value {
        self.get_as(&self.token, path).await
    }

    /// GET with `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Value {
        self.client()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A script body in the seed's shape.
pub fn script(
    title: &str,
    reaction_id: i64,
    event_id: i64,
    users: &[i64],
    timetable: Value,
) -> Value {
    json!({
        "reaction_id": reaction_id,
        "event_id": event_id,
        "title": title,
        "status": "active",
        "cameras": null,
        "users": users,
        "timetable": timetable,
        "extra": {}
    })
}

/// A timetable active all day every day, in UTC (`00:00Z`–`23:59Z`, no breaks).
pub fn all_day() -> Value {
    json!({"days": [{"type": "same_every_day", "from": "00:00Z", "to": "23:59Z", "breaks": []}]})
}

/// An occurrence payload (CONTRACT §4).
pub fn occurrence(id: &str, event_id: i64, camera_id: i64, occurred_at: &str) -> Vec<u8> {
    json!({"id": id, "event_id": event_id, "camera_id": camera_id, "occurred_at": occurred_at, "data": {"plate": "A123BC"}})
        .to_string()
        .into_bytes()
}

/// Sends a request with `token` (none when empty) from `client`; returns the status, the
/// `Retry-After` header and the JSON body (or Null).
pub async fn call_from(
    client: &reqwest::Client,
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let mut rb = client.request(method, d.url(path)).header("X-Client", "ios-cctv");
    if !token.is_empty() {
        rb = rb.bearer_auth(token);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let res = rb.send().await.expect("request");
    let status = res.status().as_u16();
    let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = res.text().await.expect("body");
    (status, retry, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// [`call_from`] with a new client: the status and the JSON body.
pub async fn call(
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, _, v) = call_from(&reqwest::Client::new(), d, method, path, token, body).await;
    (status, v)
}
