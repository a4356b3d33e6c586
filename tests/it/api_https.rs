//! HTTPS for the API (`api.tls.*`) with certificates made by the test (rcgen): a real TLS
//! client trusting only the test CA; renewal on SIGHUP without dropping the listener or
//! open connections; a bad renewal refused; `check-config` naming a bad file (exit 78).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::daemon::{Daemon, DaemonOptions, binary};
use crate::support::within;

/// A test CA that issues server certificates for `localhost` and 127.0.0.1.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "scriptd test CA");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// Writes a server certificate named `cn` (chain PEM) and its key into `dir`.
    pub fn issue(&self, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let (cert_file, key_file) = (dir.join("api.crt"), dir.join("api.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        std::fs::write(dir.join("api.spki"), spki_pin(&key)).expect("write pin");
        (cert_file, key_file)
    }
}

/// Chromium's pin of a key: base64 of the SHA-256 of its SubjectPublicKeyInfo (for
/// `--ignore-certificate-errors-spki-list`, which accepts that one key and nothing else).
fn spki_pin(key: &KeyPair) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(key)))
}

/// The pin of the key [`TestCa::issue`] last wrote into `dir`.
pub fn pin_in(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("api.spki")).expect("read pin")
}

/// Daemon options serving HTTPS with `cert_file` and `key_file`.
pub fn https_options(ca: &TestCa, cert_file: &Path, key_file: &Path) -> DaemonOptions {
    DaemonOptions {
        env: vec![
            ("SCRIPTD__API__TLS__CERT_FILE".into(), cert_file.display().to_string()),
            ("SCRIPTD__API__TLS__KEY_FILE".into(), key_file.display().to_string()),
        ],
        tls_ca_pem: Some(ca.pem.clone()),
        ..DaemonOptions::default()
    }
}

/// The DER of the server certificate the connection behind `response` was made with.
fn peer_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info on an HTTPS response")
        .to_vec()
}

fn tls_client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"))
        .tls_info(true)
        .build()
        .expect("client")
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem_file).expect("certificate PEM").to_vec()
}

#[tokio::test]
async fn the_api_answers_over_https_and_a_renewed_certificate_applies_on_sighup() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert_file, key_file) = ca.issue(certs.path(), "first");
    let first = der_of(&cert_file);
    let d = Daemon::start(https_options(&ca, &cert_file, &key_file)).await;

    // A client that trusts only the test CA: the API and the status page answer.
    let keep = tls_client(&ca);
    let r = keep.get(d.url("/scripts")).bearer_auth(&d.token).send().await.expect("HTTPS");
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), first);
    let page = keep.get(format!("{}/", d.base())).send().await.expect("status page");
    assert_eq!(page.status(), 200);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", d.api_port))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // Renew and reload: new connections get the new certificate, the kept-alive one
    // still works (with the certificate it was made with).
    let (cert_file, _) = ca.issue(certs.path(), "second");
    let second = der_of(&cert_file);
    assert_ne!(first, second);
    sighup(&d);
    within(10, "the renewed certificate on a new connection", async {
        loop {
            let r = tls_client(&ca).get(format!("{}/healthz", d.base())).send().await;
            if let Ok(r) = r
                && peer_cert(&r) == second
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let r = keep.get(d.url("/scripts")).bearer_auth(&d.token).send().await.expect("kept alive");
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), first, "the open connection was kept (made with the first)");

    // A bad renewal is refused, logged, and the running certificate stays.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    sighup(&d);
    within(10, "the refused reload logged", async {
        while !d.log().contains("API certificate reload refused") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let r = tls_client(&ca).get(format!("{}/healthz", d.base())).send().await.expect("HTTPS");
    assert_eq!(peer_cert(&r), second);
    assert!(d.log().contains(&cert_file.display().to_string()), "the log names the file");
}

fn sighup(d: &Daemon) {
    let pid = d.pid().expect("running");
    let ok = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
    assert!(ok.success());
}

fn check_config(env: &[(&str, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("default.toml"), "[api]\nbind = \"127.0.0.1:8080\"\n")
        .expect("config");
    let mut cmd = Command::new(binary());
    cmd.arg("--config").arg(dir.path()).arg("check-config").env_remove("SCRIPTD_CONFIG_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run check-config");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_names_a_missing_or_bad_certificate_file_with_exit_78() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert_file, key_file) = ca.issue(certs.path(), "cfg");
    let cert = ("SCRIPTD__API__TLS__CERT_FILE", cert_file.display().to_string());
    let key = ("SCRIPTD__API__TLS__KEY_FILE", key_file.display().to_string());

    let (code, text) = check_config(&[cert.clone(), key.clone()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("cert_file = \"{}\"", cert_file.display())), "{text}");

    let missing = certs.path().join("missing.crt");
    let (code, text) = check_config(&[
        ("SCRIPTD__API__TLS__CERT_FILE", missing.display().to_string()),
        key.clone(),
    ]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("api.tls.cert_file") && text.contains("missing.crt"), "{text}");

    let junk = certs.path().join("junk.key");
    std::fs::write(&junk, "hello").expect("write");
    let (code, text) =
        check_config(&[cert.clone(), ("SCRIPTD__API__TLS__KEY_FILE", junk.display().to_string())]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("api.tls.key_file") && text.contains("junk.key"), "{text}");

    // Another certificate's key.
    let other = tempfile::tempdir().expect("temp dir");
    let (_, other_key) = ca.issue(other.path(), "other");
    let (code, text) = check_config(&[
        cert.clone(),
        ("SCRIPTD__API__TLS__KEY_FILE", other_key.display().to_string()),
    ]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("does not match"), "{text}");

    let (code, text) = check_config(&[cert]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("api.tls.key_file"), "{text}");
}
