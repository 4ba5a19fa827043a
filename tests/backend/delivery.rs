//! Happy path, rescue of abandoned entries, and lease heartbeats.

use std::time::{Duration, Instant};

use crate::support::{wait_until, Job, Probe, RunningWorker, TestQueue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_processed_exactly_once() {
    let tq = TestQueue::new(|_| {}).await;
    let mut ids = std::collections::HashMap::new();
    for _ in 0..40 {
        let job = Job::new("ok");
        ids.insert(job.job_id, tq.queue.enqueue(&job).await.unwrap());
    }
    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 4);
    wait_until("40 jobs finish", Duration::from_secs(10), || async { probe.finished() == 40 }).await;
    worker.stop().await;

    assert!(probe.per_job().values().all(|&n| n == 1), "a job ran twice: {:?}", probe.per_job());
    for run in probe.runs() {
        // TaskId is the stream entry id; attempt is the 1-based delivery count.
        assert_eq!(run.task_id, ids[&run.job_id]);
        assert_eq!(run.delivery.entry_id, run.task_id);
        assert_eq!(run.attempt, 1);
    }
    assert_eq!(tq.stream_len().await, 0, "acknowledged entries are deleted");
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0);
    assert!(tq.consumers().await.is_empty(), "consumer left the group on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_dead_consumer_are_rescued() {
    let tq = TestQueue::new(|_| {}).await;
    let jobs: Vec<Job> = (0..3).map(|_| Job::new("ok")).collect();
    for job in &jobs {
        tq.queue.enqueue(job).await.unwrap();
    }
    // A consumer that reads and then "crashes": it never acknowledges.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&tq.queue.config().group)
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&tq.queue.keys().stream)
        .arg(">")
        .query_async(&mut tq.conn().await)
        .await
        .unwrap();
    let read_at = Instant::now();

    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("rescued jobs finish", Duration::from_secs(10), || async { probe.finished() == 3 }).await;
    let rescued_after = read_at.elapsed();
    worker.stop().await;

    assert!(rescued_after >= Duration::from_secs(1), "rescued before the lease expired");
    for job in &jobs {
        let runs = probe.runs_of(job);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].attempt, 2, "the ghost's delivery counts as attempt 1");
    }
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0);
    assert_eq!(tq.consumers().await, vec![("ghost".to_owned(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_long_job_from_being_rescued() {
    let tq = TestQueue::new(|_| {}).await;
    // Runs for three leases; without heartbeats the other worker would rescue it.
    let job = Job::sleeping(3_000);
    tq.queue.enqueue(&job).await.unwrap();
    let probe = Probe::default();
    let first = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("job starts", Duration::from_secs(5), || async { !probe.runs().is_empty() }).await;
    let second = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("job finishes", Duration::from_secs(10), || async { probe.finished() == 1 }).await;
    first.stop().await;
    second.stop().await;

    let runs = probe.runs_of(&job);
    assert_eq!(runs.len(), 1, "the running job was stolen: {runs:?}");
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_redis_errors() {
    let tq = TestQueue::new(|_| {}).await;
    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 2);
    let before = Job::new("ok");
    tq.queue.enqueue(&before).await.unwrap();
    wait_until("first job runs", Duration::from_secs(5), || async { probe.finished() == 1 }).await;

    // Destroying the group fails the blocked read (UNBLOCKED) and the next ones
    // (NOGROUP). An error escaping `poll_next` would kill the worker; instead
    // the fetch loop backs off and recreates the group.
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&tq.queue.keys().stream)
        .arg(&tq.queue.config().group)
        .query_async(&mut tq.conn().await)
        .await
        .unwrap();
    let after = Job::new("ok");
    tq.queue.enqueue(&after).await.unwrap();
    wait_until("job after the error runs", Duration::from_secs(10), || async { probe.finished() == 2 }).await;
    worker.stop().await;
    assert_eq!(probe.runs_of(&after).len(), 1);
}
