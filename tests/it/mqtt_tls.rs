//! MQTT over TLS through the real `scriptd run` against Debian's Mosquitto with a TLS
//! listener, with certificates made here by rcgen: pushes flow over mutual TLS; a missing
//! client certificate, an unknown CA, a wrong server name and an expired server certificate
//! each keep the daemon up with `broker` down and the TLS reason in `/healthz` and the log;
//! a fixed CA file is used at the next reconnect without a restart; `check-config` exits 78
//! naming an unusable file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use serde_json::Value;

use crate::support::daemon::{Daemon, DaemonOptions, all_day, binary, occurrence, script};
use crate::support::mosquitto::{Mosquitto, TlsListener};
use crate::support::{free_port, within};

/// The certificates of one test, as PEM files in `dir`: `ca.pem` (CA A), `server.pem` /
/// `server.key` (for 127.0.0.1 and localhost, by A), `client.pem` / `client.key` (by A),
/// `expired.pem` / `expired.key` (by A, expired in 2021), `other-ca.pem` (CA B) and
/// `other-server.pem` / `other-server.key` (by B).
struct Pki {
    dir: tempfile::TempDir,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut p = CertificateParams::new(names).expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, "scriptd test");
    p.extended_key_usages = vec![usage];
    if expired {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = ca("scriptd test CA A");
        let b = ca("scriptd test CA B");
        let server = ["127.0.0.1", "localhost"];
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &a.pem());
        write("other-ca.pem", &b.pem());
        for (name, issuer, names, usage, expired) in [
            ("server", &a, &server[..], ExtendedKeyUsagePurpose::ServerAuth, false),
            ("expired", &a, &server[..], ExtendedKeyUsagePurpose::ServerAuth, true),
            ("other-server", &b, &server[..], ExtendedKeyUsagePurpose::ServerAuth, false),
            ("client", &a, &[][..], ExtendedKeyUsagePurpose::ClientAuth, false),
        ] {
            let (cert, key) = leaf(issuer, names, usage, expired);
            write(&format!("{name}.pem"), &cert);
            write(&format!("{name}.key"), &key);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Mosquitto TLS listener serving `<server>.pem` / `<server>.key`, accepting client
    /// certificates of CA A.
    fn listener(&self, server: &str, require_certificate: bool) -> TlsListener {
        TlsListener {
            cafile: self.path("ca.pem"),
            certfile: self.path(&format!("{server}.pem")),
            keyfile: self.path(&format!("{server}.key")),
            require_certificate,
        }
    }
}

/// `[mqtt.tls]` for the daemon's configuration.
fn tls_toml(ca: &Path, client: bool, server_name: Option<&str>, pki: &Pki) -> String {
    let mut t = format!("[mqtt.tls]\nenabled = true\nca_file = {:?}\n", ca.display().to_string());
    if client {
        t += &format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}\n",
            pki.path("client.pem").display().to_string(),
            pki.path("client.key").display().to_string()
        );
    }
    if let Some(name) = server_name {
        t += &format!("server_name = {name:?}\n");
    }
    t
}

/// A TLS MQTT client for the test's own side (the app and the analytics server), using the
/// daemon's own TLS configuration code with CA A and the client certificate.
async fn tls_client(
    pki: &Pki,
    port: u16,
    id: &str,
) -> (rumqttc::AsyncClient, tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let files = scriptd::mqtt::tls::TlsFiles {
        ca_file: Some(pki.path("ca.pem")),
        client_cert_file: Some(pki.path("client.pem")),
        client_key_file: Some(pki.path("client.key")),
        server_name: "localhost".into(),
    };
    let config = files.client_config().expect("test client TLS config");
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut conn_tx = Some(conn_tx);
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(t) = conn_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    within(10, "test client CONNACK over TLS", conn_rx).await.expect("connected");
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_flow_over_mutual_tls_through_scriptd_run() {
    let pki = Pki::new();
    let broker = Mosquitto::start_tls(&pki.listener("server", true)).await;
    // The broker is reached as 127.0.0.1: the IP address is the name checked.
    let d = Daemon::start(DaemonOptions {
        external_broker: Some(broker.port()),
        extra_toml: tls_toml(&pki.path("ca.pem"), true, None, &pki),
        env: vec![("SCRIPTD__EVENTS__MAX_AGE_SECONDS".into(), "0".into())],
        ..DaemonOptions::default()
    })
    .await;
    d.create_script(&script("tls", 2, 1, &[1], all_day())).await;
    let (app, mut pushes) = tls_client(&pki, broker.port(), "app-tls").await;
    app.subscribe("vms/users/+/reactions", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
    let (vms, _) = tls_client(&pki, broker.port(), "vms-tls").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the SUBACK
    vms.publish(
        "vms/analytics/events/5",
        rumqttc::QoS::AtLeastOnce,
        false,
        occurrence("tls-1", 1, 5, "2026-11-27T10:00:00Z"),
    )
    .await
    .expect("publish");
    // User 1 and its sub-users 2 and 3.
    let mut topics = Vec::new();
    for _ in 0..3 {
        let p = within(15, "the pushes over TLS", pushes.recv()).await.expect("push");
        let v: Value = serde_json::from_slice(&p.payload).expect("JSON push");
        assert_eq!(v["occurrence_id"], "tls-1", "{v}");
        topics.push(p.topic);
    }
    topics.sort();
    assert_eq!(topics, ["vms/users/1/reactions", "vms/users/2/reactions", "vms/users/3/reactions"]);
    assert!(d.log().contains("MQTT connected"), "{}", d.log());
}

/// `scriptd run` started by the test with its own configuration, not waiting for health
/// (these daemons are meant to stay unhealthy for a while).
pub(crate) struct Bare {
    child: Child,
    dir: tempfile::TempDir,
    api_port: u16,
}

impl Bare {
    /// A daemon on the external broker at 127.0.0.1:`mqtt_port`, `extra_toml` appended.
    fn start(mqtt_port: u16, extra_toml: &str) -> Bare {
        Bare::with_config(|dir, api_port| {
            format!(
                "[database]\npath = {db:?}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
                 client_id = \"scriptd-tls-{api_port}\"\nembedded_broker = false\n\
                 reconnect_min_ms = 50\nreconnect_max_ms = 500\n\
                 [api]\nbind = \"127.0.0.1:{api_port}\"\n{extra_toml}",
                db = dir.join("scriptd.db").display().to_string()
            )
        })
    }

    /// Writes `config(temp dir, API port)` as `default.toml` and starts the daemon.
    pub(crate) fn with_config(config: impl FnOnce(&Path, u16) -> String) -> Bare {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_port = free_port();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/default.toml"), config(dir.path(), api_port))
            .unwrap();
        let child = Bare::spawn(dir.path(), 0);
        Bare { child, dir, api_port }
    }

    /// Runs an operator command against this daemon's configuration; its standard output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("--config")
            .arg(self.dir.path().join("config"))
            .args(args)
            .env_remove("SCRIPTD_CONFIG_DIR")
            .output()
            .expect("run scriptd");
        assert!(out.status.success(), "scriptd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The API port.
    pub(crate) fn api_port(&self) -> u16 {
        self.api_port
    }

    fn spawn(dir: &Path, n: usize) -> Child {
        let log = std::fs::File::create(dir.join(format!("daemon-{n}.log"))).unwrap();
        Command::new(binary())
            .arg("--config")
            .arg(dir.join("config"))
            .arg("run")
            .env_remove("SCRIPTD_CONFIG_DIR")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn scriptd run")
    }

    /// Stops it and starts it again with `default.toml` as it is now.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Bare::spawn(self.dir.path(), 1);
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config/default.toml")
    }

    pub(crate) fn log(&self) -> String {
        (0..2)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("daemon-{n}.log"))))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// [`Bare::wait_component`] for the broker.
    async fn wait_broker(&mut self, state: &str, why: &str) -> (u16, Value) {
        self.wait_component("broker", state, why).await
    }

    /// Waits until `/healthz` shows `component` in `state` with a reason containing `why`
    /// (any reason when empty); returns the status code and the body. Fails if the process
    /// exits meanwhile.
    pub(crate) async fn wait_component(
        &mut self,
        component: &str,
        state: &str,
        why: &str,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/healthz", self.api_port);
        let mut last = (0, Value::Null);
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("scriptd exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(&url).await {
                let code = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let broker = &body["components"][component];
                let reason = broker["reason"].as_str().unwrap_or_default();
                if broker["state"] == state && reason.contains(why) {
                    return (code, body);
                }
                last = (code, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{component} never {state} with {why:?} in /healthz; last: {} {}\nlog:\n{}",
            last.0,
            last.1,
            self.log()
        );
    }

    /// Waits until the broker is down with `why`, and checks the answer is a 503, the
    /// reason is also in the log, and the daemon keeps running and retrying.
    async fn assert_down_with(&mut self, why: &str) {
        let (code, body) = self.wait_broker("down", why).await;
        assert_eq!(code, 503, "{body}");
        eprintln!("/healthz: {body}");
        assert!(body["failing"].as_array().unwrap().iter().any(|f| f == "broker"), "{body}");
        let log = self.log();
        assert!(log.contains(why) && log.contains("MQTT broker unreachable"), "{log}");
        // Still retrying a little later (with its backoff), still alive.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (code, _) = self.wait_broker("down", why).await;
        assert_eq!(code, 503);
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_keeps_the_daemon_up_and_a_fixed_ca_file_is_used_at_the_next_attempt() {
    let pki = Pki::new();
    let broker = Mosquitto::start_tls(&pki.listener("server", false)).await;
    let ca_file = pki.path("daemon-ca.pem");
    std::fs::copy(pki.path("other-ca.pem"), &ca_file).unwrap();
    let mut d = Bare::start(broker.port(), &tls_toml(&ca_file, false, None, &pki));
    d.assert_down_with("UnknownIssuer").await;
    // The push connection reports the same.
    let (_, body) = d.wait_broker("down", "UnknownIssuer").await;
    assert_eq!(body["components"]["push"]["state"], "down", "{body}");
    // Fixing the file is enough: it is read again before every connection attempt.
    std::fs::copy(pki.path("ca.pem"), &ca_file).unwrap();
    d.wait_broker("up", "").await;
    d.wait_component("push", "up", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_keeps_the_daemon_up_until_the_name_is_fixed_and_it_restarts() {
    let pki = Pki::new();
    let broker = Mosquitto::start_tls(&pki.listener("server", false)).await;
    let ca = pki.path("ca.pem");
    let mut d = Bare::start(broker.port(), &tls_toml(&ca, false, Some("mqtt.example.org"), &pki));
    d.assert_down_with("not valid for name").await;
    // `mqtt.tls.server_name` is a restart key.
    let fixed = std::fs::read_to_string(d.config())
        .unwrap()
        .replace("server_name = \"mqtt.example.org\"", "server_name = \"localhost\"");
    std::fs::write(d.config(), fixed).unwrap();
    d.restart();
    let (code, _) = d.wait_broker("up", "").await;
    assert_eq!(code, 200, "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_keeps_the_daemon_up_until_the_broker_renews_it() {
    let pki = Pki::new();
    let listener = pki.listener("server", false);
    // The broker's files start as the expired certificate.
    let served = TlsListener {
        certfile: pki.path("served.pem"),
        keyfile: pki.path("served.key"),
        ..listener
    };
    std::fs::copy(pki.path("expired.pem"), &served.certfile).unwrap();
    std::fs::copy(pki.path("expired.key"), &served.keyfile).unwrap();
    let mut broker = Mosquitto::start_tls(&served).await;
    let mut d = Bare::start(broker.port(), &tls_toml(&pki.path("ca.pem"), false, None, &pki));
    d.assert_down_with("certificate expired").await;
    std::fs::copy(pki.path("server.pem"), &served.certfile).unwrap();
    std::fs::copy(pki.path("server.key"), &served.keyfile).unwrap();
    broker.restart().await;
    d.wait_broker("up", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_client_certificate_is_refused_and_reported() {
    let pki = Pki::new();
    let broker = Mosquitto::start_tls(&pki.listener("server", true)).await;
    let mut d = Bare::start(broker.port(), &tls_toml(&pki.path("ca.pem"), false, None, &pki));
    d.assert_down_with("CertificateRequired").await;
    // With the client certificate configured (a restart key), it connects.
    let mut config = std::fs::read_to_string(d.config()).unwrap();
    config += &format!(
        "client_cert_file = {:?}\nclient_key_file = {:?}\n",
        pki.path("client.pem").display().to_string(),
        pki.path("client.key").display().to_string()
    );
    std::fs::write(d.config(), config).unwrap();
    d.restart();
    d.wait_broker("up", "").await;
}

/// `scriptd check-config` with `extra` appended to a minimal configuration.
fn check_config(extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        format!("[mqtt]\nembedded_broker = false\nusername = \"scriptd\"\n{extra}"),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(dir.path())
        .arg("check-config")
        .env_remove("SCRIPTD_CONFIG_DIR")
        .output()
        .expect("run check-config");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn check_config_exits_78_naming_an_unreadable_or_unparsable_tls_or_password_file() {
    let pki = Pki::new();
    let missing = pki.path("nowhere.pem");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let ca = pki.path("ca.pem");
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    for (extra, key, file) in [
        (
            format!("[mqtt.tls]\nenabled = true\nca_file = {}\n", q(&missing)),
            "mqtt.tls.ca_file",
            &missing,
        ),
        (
            format!("[mqtt.tls]\nenabled = true\nca_file = {}\n", q(&garbage)),
            "mqtt.tls.ca_file",
            &garbage,
        ),
        (
            format!(
                "[mqtt.tls]\nenabled = true\nca_file = {}\nclient_cert_file = {}\nclient_key_file = {}\n",
                q(&ca),
                q(&pki.path("client.pem")),
                q(&garbage)
            ),
            "mqtt.tls.client_key_file",
            &garbage,
        ),
        (format!("password_file = {}\n", q(&missing)), "mqtt.password_file", &missing),
    ] {
        let (code, text) = check_config(&extra);
        assert_eq!(code, Some(78), "{extra}\n{text}");
        assert!(text.contains(key) && text.contains(&file.display().to_string()), "{text}");
    }
    // Both the password and its file: refused; the file alone: read and masked.
    let pw = pki.path("mqtt-password");
    std::fs::write(&pw, "pa55-from-file\n").unwrap();
    let (code, text) = check_config(&format!("password = \"x\"\npassword_file = {}\n", q(&pw)));
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("not both"), "{text}");
    let (code, text) = check_config(&format!(
        "password_file = {}\n[mqtt.tls]\nenabled = true\nca_file = {}\n",
        q(&pw),
        q(&ca)
    ));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("pa55-from-file") && text.contains("password = \"********\""), "{text}");
}
