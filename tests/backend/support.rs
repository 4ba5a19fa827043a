//! Shared helpers: an isolated queue per test, a recording handler, and a
//! worker runner under apalis's `Monitor`.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use apalis::prelude::*;
use janitor_workers::queue::{Delivery, QueueConfig, StreamQueue};
use serde::{Deserialize, Serialize};
use tokio::{sync::oneshot, task::JoinHandle};

/// The shared Redis (`REDIS_URL`, default 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Logs go to stderr when `TEST_LOG` is set, e.g. `TEST_LOG=janitor_workers=debug`.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// A cleanup job as the service will carry it, plus test-only knobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub job_id: uuid::Uuid,
    /// `ok`, `fail`, `abort`, `panic` or `sleep`.
    pub op: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub sleep_ms: u64,
}

impl Job {
    pub fn new(op: &str) -> Self {
        Self {
            job_id: uuid::Uuid::new_v4(),
            op: op.to_owned(),
            session_id: Some("abc".into()),
            dry_run: false,
            sleep_ms: 0,
        }
    }

    pub fn sleeping(ms: u64) -> Self {
        Self { sleep_ms: ms, ..Self::new("sleep") }
    }
}

/// One handler invocation as seen from inside the handler.
#[derive(Debug, Clone)]
pub struct Run {
    pub job_id: uuid::Uuid,
    pub task_id: String,
    pub attempt: usize,
    pub delivery: Delivery,
    pub finished: bool,
}

/// Records every handler run; shared with the handler through `Data<Probe>`.
#[derive(Debug, Clone, Default)]
pub struct Probe(Arc<Mutex<Vec<Run>>>);

impl Probe {
    pub fn runs(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    pub fn runs_of(&self, job: &Job) -> Vec<Run> {
        self.runs().into_iter().filter(|r| r.job_id == job.job_id).collect()
    }

    pub fn finished(&self) -> usize {
        self.runs().iter().filter(|r| r.finished).count()
    }

    pub fn per_job(&self) -> HashMap<uuid::Uuid, usize> {
        let mut counts = HashMap::new();
        for run in self.runs() {
            *counts.entry(run.job_id).or_default() += 1;
        }
        counts
    }
}

/// The handler: arguments first, then any extractors apalis can provide.
pub async fn handle(
    job: Job,
    task_id: TaskId,
    attempt: Attempt,
    delivery: Data<Delivery>,
    probe: Data<Probe>,
) -> Result<(), BoxDynError> {
    let index = {
        let mut runs = probe.0 .0.lock().unwrap();
        runs.push(Run {
            job_id: job.job_id,
            task_id: task_id.to_string(),
            attempt: attempt.current(),
            delivery: (*delivery).clone(),
            finished: false,
        });
        runs.len() - 1
    };
    let result: Result<(), BoxDynError> = match job.op.as_str() {
        "fail" => Err("simulated failure".into()),
        "abort" => Err(AbortError::new("job can never succeed").into()),
        "panic" => panic!("simulated panic"),
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
            Ok(())
        }
        _ => Ok(()),
    };
    probe.0 .0.lock().unwrap()[index].finished = true;
    result
}

/// Settings scaled down so leases, retries and rescues happen within a test.
pub fn fast_config(prefix: &str) -> QueueConfig {
    QueueConfig {
        min_idle: Duration::from_secs(1),
        max_attempts: 3,
        block: Duration::from_millis(200),
        rescue_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(200),
        retry_delay: Duration::from_millis(100),
        ..QueueConfig::new(prefix)
    }
}

/// A queue under a random prefix; its keys are deleted on drop.
pub struct TestQueue {
    pub queue: StreamQueue,
    pub client: redis::Client,
}

impl TestQueue {
    pub async fn new(tweak: impl FnOnce(&mut QueueConfig)) -> Self {
        init_tracing();
        let prefix = format!("janitor:test:{}", uuid::Uuid::new_v4().simple());
        let mut config = fast_config(&prefix);
        tweak(&mut config);
        let client = redis::Client::open(redis_url()).expect("valid redis url");
        let queue = StreamQueue::connect(client.clone(), config).await.expect("redis reachable");
        Self { queue, client }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client.get_multiplexed_async_connection().await.unwrap()
    }

    pub async fn stream_len(&self) -> usize {
        redis::cmd("XLEN").arg(&self.queue.keys().stream).query_async(&mut self.conn().await).await.unwrap()
    }

    /// `(name, pending)` for every consumer in the group.
    pub async fn consumers(&self) -> Vec<(String, usize)> {
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.queue.keys().stream)
            .arg(&self.queue.config().group)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        reply.consumers.into_iter().map(|c| (c.name, c.pending)).collect()
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        // Only this test's keys: the Redis instance is shared.
        let keys = self.queue.keys();
        if let Ok(mut conn) = self.client.get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys.stream).arg(&keys.dead).query(&mut conn);
        }
    }
}

/// A worker running under a `Monitor` until [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: oneshot::Sender<()>,
    join: JoinHandle<Result<(), MonitorError>>,
}

impl RunningWorker {
    /// Starts one worker with `concurrency` slots and the usual production layers.
    pub fn start(queue: &StreamQueue, probe: &Probe, concurrency: usize) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (queue, probe) = (queue.clone(), probe.clone());
        let name = format!("cleanup-{}", uuid::Uuid::new_v4().simple());
        let monitor = Monitor::new().register(move |_| {
            WorkerBuilder::new(name.clone())
                .backend(queue.backend::<Job>(concurrency))
                .concurrency(concurrency)
                .catch_panic()
                .timeout(Duration::from_secs(30))
                .data(probe.clone())
                .build(handle)
        });
        let join = tokio::spawn(monitor.run_with_signal(async move {
            let _ = stopped.await;
            Ok(())
        }));
        Self { stop, join }
    }

    /// Signals shutdown and waits for the monitor to finish draining.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(15), self.join)
            .await
            .expect("worker stops within 15 s")
            .expect("monitor task did not panic");
        result.expect("monitor exits cleanly");
    }
}

/// Polls `condition` every 50 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
