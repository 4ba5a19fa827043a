//! Failed, aborted, panicking and undecodable jobs.

use std::time::Duration;

use redis::AsyncCommands;

use crate::support::{wait_until, Job, Probe, RunningWorker, TestQueue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_is_retried_then_dead_lettered() {
    let tq = TestQueue::new(|_| {}).await; // max_attempts = 3
    let failing = Job::new("fail");
    let entry_id = tq.queue.enqueue(&failing).await.unwrap();
    let fine = Job::new("ok");
    tq.queue.enqueue(&fine).await.unwrap();

    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("job is dead-lettered", Duration::from_secs(10), || async {
        tq.queue.dead_letters(10).await.unwrap().len() == 1
    })
    .await;
    worker.stop().await;

    let attempts: Vec<usize> = probe.runs_of(&failing).iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(probe.runs_of(&fine).len(), 1);
    let dead = &tq.queue.dead_letters(10).await.unwrap()[0];
    assert_eq!(dead.source_id, entry_id);
    assert_eq!(dead.attempts, 3);
    assert!(dead.reason.contains("failed 3 times") && dead.reason.contains("simulated failure"), "{}", dead.reason);
    assert_eq!(serde_json::from_str::<Job>(&dead.job).unwrap(), failing);
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0);
    assert_eq!(tq.stream_len().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_panicking_jobs_are_dead_lettered_at_once() {
    let tq = TestQueue::new(|_| {}).await;
    let aborting = Job::new("abort");
    let panicking = Job::new("panic");
    tq.queue.enqueue(&aborting).await.unwrap();
    tq.queue.enqueue(&panicking).await.unwrap();

    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("both are dead-lettered", Duration::from_secs(10), || async {
        tq.queue.dead_letters(10).await.unwrap().len() == 2
    })
    .await;
    worker.stop().await;

    assert_eq!(probe.runs_of(&aborting).len(), 1, "AbortError is never retried");
    assert_eq!(probe.runs_of(&panicking).len(), 1, "catch_panic turns a panic into AbortError");
    for dead in tq.queue.dead_letters(10).await.unwrap() {
        assert!(dead.reason.starts_with("aborted on attempt 1"), "{}", dead.reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_dead_lettered_and_work_goes_on() {
    let tq = TestQueue::new(|_| {}).await;
    let stream = tq.queue.keys().stream.clone();
    let mut conn = tq.conn().await;
    let _: String = conn.xadd(&stream, "*", &[("job", "{not json")]).await.unwrap();
    let _: String = conn.xadd(&stream, "*", &[("other", "x")]).await.unwrap();
    let _: String = conn.xadd(&stream, "*", &[("job", r#"{"job_id":"nope"}"#)]).await.unwrap();
    let good = Job::new("ok");
    tq.queue.enqueue(&good).await.unwrap();

    let probe = Probe::default();
    let worker = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("good job runs and bad ones are dead", Duration::from_secs(10), || async {
        probe.finished() == 1 && tq.queue.dead_letters(10).await.unwrap().len() == 3
    })
    .await;
    worker.stop().await;

    let reasons: Vec<String> = tq.queue.dead_letters(10).await.unwrap().into_iter().map(|d| d.reason).collect();
    assert!(reasons[0].starts_with("job payload is not valid"), "{reasons:?}");
    assert_eq!(reasons[1], "entry has no `job` field");
    assert!(reasons[2].starts_with("job payload is not valid"), "{reasons:?}");
    assert_eq!(probe.runs_of(&good).len(), 1);
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0);
}
