//! Knowing when watch caches have finished their first list, for any number of waiters.
//!
//! kube's `Store::wait_until_ready` is backed by a single oneshot channel, which wakes only the
//! task that polled it last: with several waiters (concurrent reconciles, the readiness probe,
//! the controller itself waiting on its own store) some are never woken. So the stores are
//! waited on once, by one task, and the news fans out through a watch channel.

use std::future::Future;

use tokio::sync::watch;

/// Whether the caches have synced; cheap to clone, any number of waiters.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Spawns the one task that awaits `ready` (the stores' `wait_until_ready`, joined).
    pub fn spawn<F>(ready: F) -> Synced
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            ready.await;
            let _ = tx.send(true);
        });
        Synced(rx)
    }

    /// Waits until the caches have synced. Instant once they have.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // Err only if the task ended without sending, i.e. the runtime is shutting down.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_waiter_is_woken() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let synced = Synced::spawn(async move {
            let _ = rx.await;
        });
        assert!(!synced.is_synced());
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
        }
        assert!(synced.is_synced());
    }
}
