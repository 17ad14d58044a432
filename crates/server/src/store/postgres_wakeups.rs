//! Wake-ups on PostgreSQL: `wake(topic)` is a NOTIFY on one channel with the topic's name as
//! its payload (never data: a notification is lost when no one listens), and one LISTEN
//! connection per store turns notifications from every node, this one included, into
//! `Wake::Changed`. A lost listening connection loses what was sent meanwhile, so once it is
//! listening again the task sends `Wake::Resync` (re-read the tables). The task ends when the
//! store is dropped or its pool closes.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::StoreResult;
use super::cluster::{Topic, WAKE_BUFFER, Wake};

/// The one channel every node listens on.
const CHANNEL: &str = "postern_wake";

/// Waits between attempts to listen again after the connection failed: short first (a
/// restarted PostgreSQL is back in seconds), then at most this, so that a long outage costs a
/// connection attempt every few seconds, not a storm.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The store's side of its wake-ups: where they are sent, and the listener task's stop.
pub struct PgWakes {
    pool: PgPool,
    sender: broadcast::Sender<Wake>,
    stop: CancellationToken,
}

impl PgWakes {
    /// Listens on `pool`'s database before returning, so that a wake-up sent once the store
    /// is open reaches this store's receivers.
    pub async fn start(pool: &PgPool) -> StoreResult<Self> {
        let listener = listen(pool).await?;
        let sender = broadcast::channel(WAKE_BUFFER).0;
        let stop = CancellationToken::new();
        tokio::spawn(relay(pool.clone(), listener, sender.clone(), stop.clone()));
        Ok(Self {
            pool: pool.clone(),
            sender,
            stop,
        })
    }

    /// NOTIFY in the background: waking is best effort (a lost one is made up for by the
    /// receivers' poll) and must not hold up the writer that wakes.
    pub fn wake(&self, topic: Topic) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        runtime.spawn(async move {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(topic.as_str())
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                tracing::debug!(%error, topic = topic.as_str(), "wake-up not sent");
            }
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.sender.subscribe()
    }
}

impl Drop for PgWakes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications until stopped; after a lost connection, listens again (retrying
/// with backoff) and then sends `Resync`.
async fn relay(
    pool: PgPool,
    mut listener: PgListener,
    sender: broadcast::Sender<Wake>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                if let Some(topic) = Topic::parse(notification.payload()) {
                    // No receivers is fine.
                    let _ = sender.send(Wake::Changed(topic));
                }
            }
            // The connection was lost and sqlx has listened again on a new one.
            Ok(None) => {
                tracing::warn!("wake-up listener reconnected; nodes re-read what changed");
                let _ = sender.send(Wake::Resync);
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "wake-up listener lost its connection; listening again");
                let Some(again) = listen_again(&pool, &stop).await else {
                    return;
                };
                listener = again;
                let _ = sender.send(Wake::Resync);
            }
        }
    }
}

/// A new listener, retried until it listens; `None` when stopped (or the pool closed) first.
async fn listen_again(pool: &PgPool, stop: &CancellationToken) -> Option<PgListener> {
    let mut wait = RETRY_FIRST;
    loop {
        match listen(pool).await {
            Ok(listener) => return Some(listener),
            Err(sqlx::Error::PoolClosed) => return None,
            Err(error) => tracing::debug!(%error, "wake-up listener: not yet"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}
