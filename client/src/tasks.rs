//! The client's long-lived background tasks (index committers, garbage
//! sweeps): kept on trackers, stopped by one cancellation signal, and
//! waited for at shutdown — no detached spawns.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Background tasks of one client; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    /// Tasks that end by themselves (sweeps); shutdown waits for them.
    work: TaskTracker,
    /// Tasks that serve until shutdown (committers).
    loops: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` until it ends or [`Self::shutdown`] stops it.
    pub fn spawn_until_shutdown(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.loops.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Runs `fut` to its end; [`Self::shutdown`] waits for it.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.work.spawn(fut);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waits until the tasks that end by themselves have ended (at most `grace`).
    pub async fn settle(&self, grace: Duration) {
        self.work.close();
        if tokio::time::timeout(grace, self.work.wait()).await.is_err() {
            tracing::warn!("background work still running after {grace:?}");
        }
        self.work.reopen();
    }

    /// Waits up to `grace` for the work under way, then stops the loops.
    pub async fn shutdown(&self, grace: Duration) {
        self.settle(grace).await;
        self.cancel.cancel();
        self.loops.close();
        let _ = tokio::time::timeout(grace, self.loops.wait()).await;
    }
}
