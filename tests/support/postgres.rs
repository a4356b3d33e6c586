//! A real PostgreSQL server for the tests: Debian's `postgresql` package
//! (`/usr/lib/postgresql/*/bin`), initialised into a temporary folder and listening on
//! 127.0.0.1 on a free port.
//!
//! One server per test process ([`server`], started on first use) with `fsync = off`; each
//! test gets its own database ([`PgServer::database`], a fast `CREATE DATABASE ...
//! TEMPLATE` copy of an empty one). PostgreSQL refuses to run as root: when the tests run
//! as root, `initdb` and `postgres` run as the `postgres` user (`runuser -u postgres --`)
//! and the folder is handed to it. The server is stopped by its PID (SIGINT, a fast
//! shutdown) when the test process exits, and the folder is removed. A test that stops the
//! server ([`PgServer::halt`], [`PgServer::restart`]) starts one of its own
//! ([`PgServer::start`]), stopped when dropped.
//!
//! A missing server binary fails the test with a message naming the Debian package
//! `postgresql`: these tests are never skipped silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::free_port;

/// The running server.
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    next_db: AtomicUsize,
}

/// The test process's server, started by the first caller.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| {
        let server = PgServer::start();
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop_at_exit) };
        server
    })
}

static SERVER: OnceLock<PgServer> = OnceLock::new();

/// The folder of the newest installed PostgreSQL's binaries (that of its `initdb`; a missing
/// server fails naming the Debian package, from `scripts/test-packages`).
fn find_bin() -> PathBuf {
    let initdb = super::tools::require("initdb");
    match initdb.parent() {
        Some(bin) => bin.to_path_buf(),
        None => panic!("{} has no folder", initdb.display()),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args...`, as the `postgres` user when running as root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new(super::tools::require("runuser"));
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `openssl ARGS` in `dir`; a missing `openssl` names its Debian package.
fn openssl(dir: &Path, args: &[&str]) {
    let openssl = super::tools::require("openssl");
    let out = Command::new(&openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", openssl.display()));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA, a server certificate it signed for 127.0.0.1 and localhost (TLS is on, so
/// the tests can use every `sslmode`), and a second, unrelated CA.
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "scriptd test CA"), ("other-ca", "another CA")] {
        let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={cn}"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        openssl(dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    // PostgreSQL refuses a key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod server.key");
}

impl PgServer {
    /// A server of the caller's own (most tests share [`server`]'s), stopped when dropped:
    /// for tests that stop and restart it.
    pub fn start() -> PgServer {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("scriptd-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL")
            .keep();
        let data = dir.join("data");
        make_certificates(&dir);
        if is_root() {
            let status = Command::new(super::tools::require("chown"))
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {} to postgres failed", dir.display());
        }
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            port: free_port(),
            bin,
            dir,
            child: Mutex::new(None),
            next_db: AtomicUsize::new(0),
        };
        server.spawn();
        server.psql("postgres", "CREATE DATABASE scriptd_template");
        server
    }

    /// Starts `postgres` on the data folder and waits until it accepts connections.
    fn spawn(&self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("postgres.log"))
            .expect("postgres.log");
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-c", "listen_addresses=127.0.0.1", "-c", &format!("port={}", self.port)])
            .args(["-c", &format!("unix_socket_directories={}", dir.display())])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(["-c", "ssl=on"])
            .args(["-c", &format!("ssl_cert_file={}", dir.join("server.crt").display())])
            .args(["-c", &format!("ssl_key_file={}", dir.join("server.key").display())])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        self.wait_ready();
    }

    /// Starts it again after [`Self::halt`], on the same port with the same data.
    pub fn restart(&self) {
        self.spawn();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(child) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited with {status} before it was ready: {}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres not ready in 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The CA that signed the server's certificate (for `127.0.0.1` and `localhost`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA that signed nothing the server has.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` with `psql` in database `db` as the superuser `postgres`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .args(["-d", db, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database of its own for one test; its URL (user `postgres`, no
    /// password, `sslmode=disable`).
    pub fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE scriptd_template"));
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{name}?sslmode=disable", self.port)
    }

    /// Adds a login role with a password (for the authentication tests).
    pub fn create_role(&self, name: &str, password: &str) {
        self.psql("postgres", &format!("CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'"));
        let hba = self.dir.join("data/pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        if !text.starts_with("host all all 127.0.0.1/32 scram") {
            // Password checks for every role but the superuser the tests use.
            let rule = "host all postgres 127.0.0.1/32 trust\n\
                        host all all 127.0.0.1/32 scram-sha-256\n";
            std::fs::write(&hba, format!("{rule}{text}")).expect("write pg_hba.conf");
            self.psql("postgres", "SELECT pg_reload_conf()");
        }
    }
}

impl PgServer {
    /// Stops the server, keeping its data for [`Self::restart`]: SIGINT (a fast shutdown)
    /// to the postmaster's PID, read from `postmaster.pid` (as root the child is `runuser`,
    /// not the server), then waits for it.
    pub fn halt(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        match pid {
            // SAFETY: kill(2) with a PID read from the server's own pid file.
            Some(pid) => unsafe {
                libc::kill(pid, libc::SIGINT);
            },
            None => {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// Stops the server and removes its folder.
    fn stop(&self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Statics are never dropped: the server is stopped by an exit hook instead.
extern "C" fn stop_at_exit() {
    if let Some(server) = SERVER.get() {
        server.stop();
    }
}
