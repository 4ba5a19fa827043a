//! Producers: how jobs get onto the queue. The CLI, the HTTP API and the
//! scheduler use [`Producer`]; other languages use the wire format (docs/OPERATIONS.md).
//!
//! Enqueueing a job:
//! 1. For a session job, take its dedup key in Redis. If another job of the
//!    same session is queued or running, return that job instead.
//! 2. Record the job in `job_results` as `queued` (with its queue prefix).
//! 3. Put it on its lane's stream, once (idempotent by job id).
//!
//! A bulk job equal to one that is queued, or running with a live lease
//! (same operation, parameters and dry run), is not recorded again: step 2
//! returns that job. An equal job whose lease has expired is superseded
//! (failed, in the transaction of the insert) and does not block the new one.
//!
//! If step 3 fails before anything reached Redis (connection refused), step
//! 2 is undone, so a failed enqueue leaves nothing behind. If its outcome is
//! unknown (a timeout: the `XADD` may have landed), or the process dies
//! between 2 and 3, the row stays queued and the worker's reconciler settles
//! it: it enqueues the job unless Redis already has it. A Redis step whose
//! connection had dropped (a restart, a failover) is tried once more first:
//! each step is idempotent for its job id.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::{RedisConnection, RedisTarget, Timeouts};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, OnceCell};
use uuid::Uuid;

use crate::dedup;
use crate::job::{JobSpec, QueuedJob};
use crate::layout::Layout;
use crate::results::{self, JobRecord, NewJob};

/// How long a session's dedup key lives at most; it is deleted when its job
/// ends, so this only bounds what a crash leaves behind.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("redis is unreachable or failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job {job_id} did not finish within {timeout:?} (it is {status})")]
    Timeout { job_id: Uuid, timeout: Duration, status: String },
    #[error("no job {0} is recorded")]
    NotFound(Uuid),
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub job_id: Uuid,
    /// True if an equal job (a session job of the same session, or a bulk
    /// job with the same parameters) was already queued or running, and
    /// this is its id.
    pub deduplicated: bool,
}

/// Puts cleanup jobs on the queue and waits for their results.
#[derive(Clone)]
pub struct Producer {
    pool: PgPool,
    redis: RedisConnection,
    layout: Layout,
    dedup_ttl: Duration,
    finished: Arc<OnceCell<broadcast::Sender<Uuid>>>,
}

impl Producer {
    /// Connects to Redis (failing fast if it is down).
    pub async fn connect(pool: PgPool, redis: impl Into<RedisTarget>, layout: Layout) -> Result<Self, ProducerError> {
        let redis = redis.into().connect(Self::redis_timeouts()).await?;
        Ok(Self { pool, redis, layout, dedup_ttl: DEFAULT_DEDUP_TTL, finished: Arc::new(OnceCell::new()) })
    }

    /// Like [`Producer::connect`], but connects on first use: for `janitor
    /// serve`, which starts (and answers `/metrics` and `/readyz`) while Redis
    /// is down, and fails only the enqueues until it is back.
    pub fn lazy(pool: PgPool, redis: impl Into<RedisTarget>, layout: Layout) -> Result<Self, ProducerError> {
        let redis = redis.into().connect_lazy(Self::redis_timeouts())?;
        Ok(Self { pool, redis, layout, dedup_ttl: DEFAULT_DEDUP_TTL, finished: Arc::new(OnceCell::new()) })
    }

    fn redis_timeouts() -> Timeouts {
        Timeouts { connect: Some(Duration::from_secs(3)), response: Some(Duration::from_secs(5)), retries: Some(2) }
    }

    pub fn with_dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle on the producer's Redis connection.
    pub(crate) fn redis(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// Enqueues one job (deduplicating session jobs).
    pub async fn enqueue(&self, spec: &JobSpec, requested_by: Option<&str>) -> Result<Enqueued, ProducerError> {
        let job_id = Uuid::new_v4();
        let mut redis = self.redis.clone();
        let dedup_key = spec.dedup_key(&self.layout);
        if let Some(key) = &dedup_key {
            if let Some(existing) = self.dedup(key, job_id).await? {
                return Ok(Enqueued { job_id: existing, deduplicated: true });
            }
        }
        if let Some(existing) = self.record(job_id, spec, requested_by).await? {
            return Ok(Enqueued { job_id: existing, deduplicated: true });
        }
        if let Err(err) = once_more(|| {
            let mut redis = self.redis.clone();
            async move { self.push(&mut redis, job_id, spec, requested_by).await }
        })
        .await
        {
            if !err.is_connection_refusal() || redis.resends() {
                // The XADD may have landed (a timeout, a dropped connection,
                // or, on a cluster, an earlier attempt of a retried command):
                // the row stays queued, and the reconciler settles it. It
                // re-enqueues the job after the grace period unless Redis
                // knows it (idempotent by job id), so it runs exactly once.
                tracing::warn!(job_id = %job_id, error = %err, "enqueue outcome unknown; the job is recorded as queued");
                return Ok(Enqueued { job_id, deduplicated: false });
            }
            // Nothing was sent: undo, so the failed enqueue leaves nothing.
            let _ = results::delete_queued(&self.pool, job_id).await;
            if let Some(key) = &dedup_key {
                let _ = dedup::release(&mut redis, key, job_id).await;
            }
            return Err(err.into());
        }
        tracing::info!(job_id = %job_id, operation = spec.job.operation(), "job enqueued");
        Ok(Enqueued { job_id, deduplicated: false })
    }

    /// Records the job as queued, unless an equal bulk job is queued or
    /// running on this queue (the unique index on unfinished bulk jobs): then
    /// returns that one.
    async fn record(
        &self,
        job_id: Uuid,
        spec: &JobSpec,
        requested_by: Option<&str>,
    ) -> Result<Option<Uuid>, ProducerError> {
        let new = NewJob { job_id, spec, requested_by, queue: self.layout.prefix() };
        // The equal job may end between the insert and the look-up: try again.
        for _ in 0..3 {
            if results::insert_queued(&self.pool, std::slice::from_ref(&new)).await? == 1 {
                return Ok(None);
            }
            if let Some(existing) = results::equal_unfinished(&self.pool, self.layout.prefix(), spec).await? {
                return Ok(Some(existing));
            }
        }
        Err(ProducerError::Database(sqlx::Error::Protocol(format!(
            "could not record job {job_id}: an equal job kept starting and ending"
        ))))
    }

    /// Enqueues many jobs at once: one insert, one pipelined round trip.
    /// No session dedup here; it is for bulk loads and benchmarks.
    pub async fn enqueue_many(
        &self,
        specs: &[JobSpec],
        requested_by: Option<&str>,
    ) -> Result<Vec<Uuid>, ProducerError> {
        let ids: Vec<Uuid> = specs.iter().map(|_| Uuid::new_v4()).collect();
        let new: Vec<NewJob<'_>> = ids
            .iter()
            .zip(specs)
            .map(|(job_id, spec)| NewJob { job_id: *job_id, spec, requested_by, queue: self.layout.prefix() })
            .collect();
        results::insert_queued(&self.pool, &new).await?;
        let script = redis::Script::new(dedup::ENQUEUE_ONCE);
        let mut pipe = redis::pipe();
        for (job_id, spec) in ids.iter().zip(specs) {
            let payload = payload(*job_id, spec, requested_by);
            pipe.invoke_script(
                script.key(self.layout.stream(spec.lane())).key(self.layout.ids()).arg(job_id.to_string()).arg(payload),
            )
            .ignore();
        }
        let (pipe, script) = (&pipe, &script);
        once_more(|| {
            let mut redis = self.redis.clone();
            async move {
                match pipe.query_async::<()>(&mut redis).await {
                    // A pipeline sends `EVALSHA` and, unlike `invoke_async`,
                    // does not load a script Redis does not have (a restarted
                    // or new server). Load it and send the pipeline again:
                    // each entry is added once whatever ran the first time,
                    // since the script skips a job id already in
                    // `{prefix}:ids`.
                    Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        script.prepare_invoke().load_async(&mut redis).await?;
                        pipe.query_async::<()>(&mut redis).await
                    }
                    reply => reply,
                }
            }
        })
        .await?;
        Ok(ids)
    }

    /// Waits until the job has finished, and the files it deleted are
    /// unlinked, and returns its record. A job ends in its last batch's
    /// transaction and unlinks that batch's files after it (`jobs::rows`),
    /// so its row says `completed` a moment before its counts are final.
    /// At the timeout, a finished job whose files are still listed (its run
    /// stopped before the unlinks; its redelivery or prune carries them out)
    /// is returned as it stands.
    pub async fn wait(&self, job_id: Uuid, timeout: Duration) -> Result<JobRecord, ProducerError> {
        // Subscribe before looking, so a finish between the two is not missed.
        let mut finished = self.finished().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (record, unlinking) =
                results::get_settling(&self.pool, job_id).await?.ok_or(ProducerError::NotFound(job_id))?;
            if record.is_finished() && !unlinking {
                return Ok(record);
            }
            // Re-check when this job is announced, when notices were lost,
            // and every second regardless (a notice can be missed while the
            // listener reconnects).
            let tick = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    () = &mut tick => break,
                    notice = finished.recv() => match notice {
                        Ok(id) if id != job_id => continue,
                        _ => break,
                    },
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let record = results::get(&self.pool, job_id).await?.ok_or(ProducerError::NotFound(job_id))?;
                if record.is_finished() {
                    return Ok(record);
                }
                return Err(ProducerError::Timeout { job_id, timeout, status: record.status });
            }
        }
    }

    /// Finish notices (`janitor_job_finished`), from one listener connection
    /// shared by every wait of this producer.
    async fn finished(&self) -> Result<broadcast::Receiver<Uuid>, ProducerError> {
        let sender = self
            .finished
            .get_or_try_init(|| async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen("janitor_job_finished").await?;
                let (sender, _) = broadcast::channel(4096);
                // The task holds the sender weakly, so it ends once the
                // producer is gone, and it ends when the pool is closed.
                let notices = sender.downgrade();
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    loop {
                        let notice = listener.recv().await;
                        let Some(notices) = notices.upgrade() else { break };
                        match notice {
                            Ok(notice) => {
                                if let Ok(job_id) = notice.payload().parse() {
                                    let _ = notices.send(job_id);
                                }
                            }
                            Err(_) if pool.is_closed() => break,
                            Err(err) => {
                                tracing::warn!(error = %err, "finish listener failed; reconnecting");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                Ok::<_, sqlx::Error>(sender)
            })
            .await?;
        Ok(sender.subscribe())
    }

    /// Takes the session's dedup key for `job_id`, or returns the job that
    /// holds it if that job is still queued or running.
    async fn dedup(&self, key: &str, job_id: Uuid) -> Result<Option<Uuid>, ProducerError> {
        let ttl = self.dedup_ttl;
        let mut holder = once_more(|| {
            let mut redis = self.redis.clone();
            async move { dedup::claim(&mut redis, key, job_id, ttl).await }
        })
        .await?;
        while holder.job_id != job_id {
            if dedup::holds(&self.pool, &holder).await? {
                return Ok(Some(holder.job_id));
            }
            // The holder ended (or its producer died before recording it).
            let stale = &holder;
            holder = once_more(|| {
                let mut redis = self.redis.clone();
                async move { dedup::replace(&mut redis, key, stale, job_id, ttl).await }
            })
            .await?;
        }
        Ok(None)
    }

    /// Puts a job whose `queued` row is already recorded on its stream
    /// (idempotent: a job already on a stream is not added again).
    pub async fn push_recorded(
        &self,
        job_id: Uuid,
        spec: &JobSpec,
        requested_by: Option<&str>,
    ) -> Result<(), ProducerError> {
        let mut redis = self.redis.clone();
        Ok(self.push(&mut redis, job_id, spec, requested_by).await?)
    }

    async fn push(
        &self,
        redis: &mut RedisConnection,
        job_id: Uuid,
        spec: &JobSpec,
        requested_by: Option<&str>,
    ) -> redis::RedisResult<()> {
        let stream = self.layout.stream(spec.lane());
        let payload = payload(job_id, spec, requested_by);
        dedup::enqueue_once(redis, &stream, &self.layout.ids(), job_id, &payload).await?;
        Ok(())
    }
}

/// Runs a Redis step, and once more if its connection had dropped: after a
/// Redis restart or failover the connection manager reconnects only for the
/// next command, so without this the first enqueue after a restart fails
/// (and a logout's cleanup with it, if the app does not retry). Every step
/// passed here is idempotent for its job id (a dedup claim or replacement by
/// the same job, an enqueue of a job id Redis may already hold), so a first
/// try that landed before the drop does no harm.
///
/// If both fail, the error returned is the one that says whether anything
/// may have landed: the second if the first was refused (nothing sent), the
/// first otherwise (sent, outcome unknown).
async fn once_more<T, F, Fut>(mut step: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    match step().await {
        Err(first) if first.is_connection_dropped() => match step().await {
            Err(second) if first.is_connection_refusal() => Err(second),
            Err(_) => Err(first),
            done => done,
        },
        done => done,
    }
}

/// The wire payload of a job.
pub fn payload(job_id: Uuid, spec: &JobSpec, requested_by: Option<&str>) -> String {
    let message = QueuedJob { job_id: Some(job_id), spec: spec.clone(), requested_by: requested_by.map(str::to_owned) };
    serde_json::to_string(&message).expect("a job serializes")
}
