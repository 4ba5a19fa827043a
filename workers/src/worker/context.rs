//! What every part of a worker shares: its settings and its context (the
//! engine, Redis, the shutdown signal). The handler, the reconciler and the
//! outage handling all take a [`WorkerContext`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::connection::RedisConnection;
use crate::engine::Engine;
use crate::layout::{Lane, Layout};
use crate::queue::QueueConfig;

/// How workers run. Defaults suit production; tests shorten the times.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub layout: Layout,
    /// Session cleanups run at once (short jobs).
    pub session_concurrency: usize,
    /// Other operations run at once (long jobs).
    pub bulk_concurrency: usize,
    /// A job whose worker has not renewed its claim for this long is rescued
    /// by another worker.
    pub lease: Duration,
    /// Deliveries of a job before it is failed and dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; it doubles with each attempt (capped at the lease).
    pub retry_base: Duration,
    /// How often the reconciler looks for lost and dead jobs.
    pub reconcile_interval: Duration,
    /// How old a queued row must be before the reconciler re-enqueues it.
    pub reconcile_grace: Duration,
    /// The longest a session's dedup key lives.
    pub dedup_ttl: Duration,
    /// After a shutdown signal, how long running jobs get to checkpoint.
    pub shutdown_timeout: Duration,
    /// How long an outage (database or Redis unavailable) may postpone a job
    /// before its deliveries start to count as attempts.
    pub outage_horizon: Duration,
    /// Recorded as the `worker` of the jobs this process runs.
    pub name: String,
    /// Written after each reconciler pass that reached Postgres and Redis
    /// (see [`crate::health`]).
    pub health_file: Option<std::path::PathBuf>,
}

impl WorkerSettings {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            session_concurrency: 8,
            bulk_concurrency: 2,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(10),
            reconcile_grace: Duration::from_secs(30),
            dedup_ttl: crate::producer::DEFAULT_DEDUP_TTL,
            shutdown_timeout: Duration::from_secs(30),
            outage_horizon: Duration::from_secs(3600),
            name: format!("{}-{}", crate::queue::config::host_name(), std::process::id()),
            health_file: None,
        }
    }

    /// The queue settings of one lane.
    pub fn queue_config(&self, lane: Lane) -> QueueConfig {
        let mut config = QueueConfig::new(self.layout.lane_prefix(lane));
        config.min_idle = self.lease;
        config.heartbeat_interval = self.lease / 4;
        config.rescue_interval = (self.lease / 2).min(Duration::from_secs(5));
        config.max_attempts = self.max_attempts;
        config.retry_delay = self.retry_base.min(self.lease);
        config.block = Duration::from_secs(2).min(self.lease / 2);
        config
    }

    /// The delay before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16) as u32);
        self.retry_base.saturating_mul(factor).min(self.lease)
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct WorkerContext {
    pub(crate) engine: Engine,
    pub(crate) redis: RedisConnection,
    pub(crate) settings: Arc<WorkerSettings>,
    pub(crate) shutdown: CancellationToken,
}
