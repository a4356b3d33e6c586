//! The pipeline's own thread: the events connection, the intake, the dispatcher and the
//! push connection run on a single-threaded runtime of their own, apart from the API, the
//! watcher and the other periodic tasks (on the main runtime).
//!
//! An occurrence passes through five tasks (the events connection's poll loop, its
//! forwarder, the intake, the dispatcher, the push connection's poll loop). On a runtime
//! with several worker threads each hand-over between them can wake another thread, a
//! futex call and a context switch each time; on one thread a hand-over is a queue push,
//! and the thread sleeps only when every task waits for the network or a timer. At 1,000
//! occurrences per second that all fire this is about a tenth of the daemon's CPU (see
//! `docs/benchmarks.md`). The pipeline's blocking work (the outbox writes of a burst, the
//! dispatcher's queries) still runs on a blocking pool, so the thread keeps receiving
//! meanwhile; requests to the API never queue behind it.
//!
//! [`Pipeline::stop`] ends the thread once the pipeline's components have been joined;
//! dropping a [`Pipeline`] ends it too, and with it every task still on it.

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{EnterGuard, Handle};
use tokio::sync::oneshot;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pipeline {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How long [`Pipeline::stop`] waits for the thread to end (its tasks have been joined by
/// then; what is left is dropping the runtime).
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Starts the thread and its runtime.
    pub(crate) fn start() -> std::io::Result<Pipeline> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("scriptd-pipeline-blocking")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread =
            std::thread::Builder::new().name("scriptd-pipeline".into()).spawn(move || {
                // Runs the spawned tasks until told to stop (or the sender is dropped).
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Pipeline { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Spawns `task` on the pipeline's thread.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// While the guard lives, `tokio::spawn` puts tasks on the pipeline's thread (for the
    /// components that spawn their own). Never hold it across an `.await`.
    pub(crate) fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }

    /// Ends the thread after the pipeline's components were joined; tasks still on it
    /// (none, normally) are dropped.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(STOP_WAIT, joined).await.is_err() {
                tracing::warn!(after = ?STOP_WAIT, "the pipeline's thread did not end in time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_pipeline_thread_and_end_with_it() {
        let pipeline = Pipeline::start().expect("pipeline thread");
        let name = pipeline
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("scriptd-pipeline"));
        let spawned_inside = {
            let _in = pipeline.enter();
            tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
        };
        assert_eq!(spawned_inside.await.expect("task").as_deref(), Some("scriptd-pipeline"));
        // A task still waiting when the pipeline stops is dropped with the runtime.
        let forever = pipeline.spawn(std::future::pending::<()>());
        pipeline.stop().await;
        assert!(forever.await.expect_err("dropped").is_cancelled());
    }
}
