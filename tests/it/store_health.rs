//! `/healthz` sees a failing store: with the database on a small tmpfs that the test fills,
//! the intake's outbox writes fail ("database or disk is full") and `store` is down with
//! that reason and 503 while they do; once space is freed the retried write succeeds and
//! `store` is up again. Needs root (to mount the tmpfs): the test fails, never skips,
//! when it cannot set up the fault.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::mqtt_tls::Bare;
use crate::support::daemon::{all_day, occurrence, script};
use crate::support::{TestClient, free_port};

/// A tmpfs of `size` mounted on a temp dir; unmounted (lazily) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(crate::support::tools::require("mount"))
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount (Debian package mount)");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs to make the store's writes fail, and cannot mount \
             one (it needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new(crate::support::tools::require("umount"))
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> PathBuf {
    let filler = path.join("filler");
    let mut f = std::fs::File::create(&filler).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&block).and_then(|()| f.flush()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("cannot fill the tmpfs: {e}"),
        }
    }
    // The last partial block too.
    for _ in 0..64 {
        if f.write_all(&[0u8; 1024]).is_err() {
            break;
        }
    }
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_down_while_outbox_writes_fail_and_up_once_they_succeed() {
    let disk = Tmpfs::mount("8m");
    let db = disk.path().join("scriptd.db");
    let mqtt_port = free_port();
    let mut d = Bare::with_config(|_, api_port| {
        format!(
            "[database]\npath = {db:?}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
             client_id = \"scriptd-store-{api_port}\"\nembedded_broker = true\n\
             protocol = \"3.1.1\"\n[api]\nbind = \"127.0.0.1:{api_port}\"\n\
             [events]\nmax_age_seconds = 0\n",
            db = db.display().to_string()
        )
    });
    d.wait_component("store", "up", "").await;
    d.wait_component("broker", "up", "").await;
    d.cli(&["users", "add", "--login", "op@example.com", "--name", "op", "--id", "1"]);
    let token = d.cli(&["tokens", "create", "--user", "1"]);
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/v1/scripts", d.api_port()))
        .bearer_auth(&token)
        .header("X-Client", "web")
        .json(&script("full disk", 2, 1, &[1], all_day()))
        .send()
        .await
        .expect("POST /scripts");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let vms = TestClient::connect(mqtt_port, "vms-store-health").await;

    let filler = fill(disk.path());
    // Occurrences keep arriving; each matches the script, so each batch writes the outbox.
    let publisher = {
        let vms = vms.client.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let payload = occurrence(&format!("full-{i}"), 1, 5, "2026-11-27T10:00:00Z");
                let _ = vms
                    .publish("vms/analytics/events/5", rumqttc::QoS::AtLeastOnce, false, payload)
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (code, body) = d.wait_component("store", "down", "database or disk is full").await;
    assert_eq!(code, 503, "{body}");
    assert!(body["failing"].as_array().unwrap().iter().any(|f| f == "store"), "{body}");
    assert!(d.log().contains("cannot write the outbox"), "{}", d.log());
    // Still down a while later: the read probe (which succeeds) does not hide it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, _) = d.wait_component("store", "down", "database or disk is full").await;
    assert_eq!(code, 503);

    std::fs::remove_file(&filler).expect("free the space");
    let (code, body) = d.wait_component("store", "up", "").await;
    assert_eq!(code, 200, "{body}");
    assert!(d.log().contains("writes to the store succeed again"), "{}", d.log());
    publisher.abort();
    drop(d);
}
