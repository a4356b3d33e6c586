//! Log capture: [`Buffer`], a `MakeWriter` into memory for a subscriber scoped to one thread
//! (`tracing::subscriber::with_default`), and [`capture_global`] for a test that must see
//! every thread's events (the API's `spawn_blocking` work, the live watcher).
//!
//! The suite is one process, and a global subscriber can be set only once and never
//! removed. So [`capture_global`] installs it once, with a level that is `OFF` except while
//! a [`GlobalLogs`] guard lives: the other tests do not pay for formatting every event
//! into memory, and two captures never overlap.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// A `MakeWriter` (and `io::Write`) into a shared buffer.
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// What was written so far, as text.
    pub fn text(&self) -> String {
        self.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process's global subscriber: the default text format, without colours, into `buf`,
/// at `level`.
struct Global {
    buf: Buffer,
    level: reload::Handle<LevelFilter, Registry>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every event of the process at TRACE level, from [`capture_global`] until dropped.
pub struct GlobalLogs {
    buf: Buffer,
    _one: MutexGuard<'static, ()>,
}

/// Starts capturing every event of the process, on any thread, at TRACE level (waiting for
/// another capture to end first). Events of tests running at the same time are in it too.
pub fn capture_global() -> GlobalLogs {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let global = GLOBAL.get_or_init(|| {
        let buf = Buffer::default();
        let (level, handle) = reload::Layer::new(LevelFilter::TRACE);
        tracing_subscriber::registry()
            .with(level)
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(buf.clone()))
            .init();
        Global { buf, level: handle }
    });
    global.buf.clear();
    global.level.reload(LevelFilter::TRACE).expect("set the global log level");
    GlobalLogs { buf: global.buf.clone(), _one: one }
}

impl GlobalLogs {
    /// What was logged since the capture started.
    pub fn text(&self) -> String {
        self.buf.text()
    }
}

impl Drop for GlobalLogs {
    fn drop(&mut self) {
        if let Some(global) = GLOBAL.get() {
            let _ = global.level.reload(LevelFilter::OFF);
        }
        self.buf.clear();
    }
}
