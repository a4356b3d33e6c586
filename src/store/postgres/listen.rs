//! `LISTEN` on a connection of its own (a pooled connection's notifications are not
//! delivered to its user): [`PgStore::listen`] gives a [`Listener`] whose
//! [`Listener::recv`] yields the channel of each notification, and `None` once the
//! connection is lost.

use tokio::sync::mpsc;

use super::PgStore;
use crate::store::StoreError;

/// A connection listening on some channels; see the module documentation.
pub struct Listener {
    /// Kept: the connection closes when its client is dropped.
    _client: tokio_postgres::Client,
    rx: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// The channel of the next notification; `None` when the connection is lost.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Opens a connection outside the pool and `LISTEN`s on `channels` (identifiers
    /// written by the caller, not user input). Needs a tokio runtime.
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener, StoreError> {
        let (client, mut connection) =
            self.direct.0.connect(self.direct.1.clone()).await.map_err(|e| self.error(&e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n.channel().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
        client.batch_execute(&sql).await.map_err(|e| self.error(&e))?;
        Ok(Listener { _client: client, rx, task })
    }
}
