//! LISTEN for invalidation notices and turn them into wake-ups of this node's coordinator.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

/// The NOTIFY channel.
pub const CHANNEL: &str = "secureflows_invalidation";

/// Spawns the listener; `notify` fires on every notice and after every reconnection (so that the
/// coordinator re-reads the table for anything missed while disconnected).
pub fn spawn(pool: PgPool, notify: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        notify.notify_one();
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(_)) => notify.notify_one(),
                                Ok(None) => {
                                    // Connection lost and re-established by sqlx; re-read the table.
                                    notify.notify_one();
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "invalidation listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect the invalidation listener"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
