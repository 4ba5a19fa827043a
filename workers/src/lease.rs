//! The lease of a running job, kept fresh in Postgres while the job runs.
//!
//! A job is `running` only while its lease is fresh (`lease_expires_at`):
//! [`Heartbeat`] renews it every quarter of its length (at most every two
//! seconds), in every phase, whatever the phase is doing (a long walk writes
//! nothing else). If the renewal finds the epoch changed (another worker
//! took the job over) or an operator asked to cancel the job, it cancels the
//! run's token: the job stops at its next batch boundary, and the engine
//! reads why from [`Heartbeat::stopped_by`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::results::{self, Lease, Renewal, StoreError};

/// Why the heartbeat stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An operator asked to cancel the job.
    Cancelled,
    /// Another worker took the job over.
    LeaseLost,
}

/// Renews a job's lease until dropped.
pub(crate) struct Heartbeat {
    stop: CancellationToken,
    reason: Arc<Mutex<Option<Stop>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts renewing `lease`. `stop` is the run's token: a child of the
    /// caller's, so a shutdown still reaches the run through it.
    pub(crate) fn start(pool: PgPool, lease: Lease, stop: CancellationToken) -> Self {
        let reason = Arc::new(Mutex::new(None));
        let every = (lease.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let task = tokio::spawn(beat(pool, lease, every, stop.clone(), Arc::clone(&reason)));
        Self { stop, reason, task }
    }

    /// The token the run must watch.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Why the run was stopped by the heartbeat, if it was.
    pub(crate) fn stopped_by(&self) -> Option<Stop> {
        *self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn beat(pool: PgPool, lease: Lease, every: Duration, stop: CancellationToken, reason: Arc<Mutex<Option<Stop>>>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let why = match results::renew(&pool, lease).await {
            Ok(Renewal::Renewed) => continue,
            Ok(Renewal::CancelRequested) => Stop::Cancelled,
            Err(StoreError::LeaseLost(_)) => Stop::LeaseLost,
            Err(err) => {
                // The database is unreachable: the batch under way will fail
                // too, and the job is retried; keep trying meanwhile.
                tracing::warn!(error = %err, "could not renew the job's lease");
                continue;
            }
        };
        tracing::info!(?why, "stopping the job at its next batch boundary");
        *reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        stop.cancel();
        return;
    }
}
