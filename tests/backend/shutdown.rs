//! Graceful shutdown: drain running jobs, hand back unstarted ones, leave the group.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use futures::future::poll_fn;
use redis::streams::StreamPendingCountReply;

use crate::support::{wait_until, Job, Probe, RunningWorker, TestQueue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_running_jobs_and_leaves_the_rest_ready() {
    // A long lease: anything stranded would not be rescued within this test.
    let tq = TestQueue::new(|c| {
        c.min_idle = Duration::from_secs(60);
        c.heartbeat_interval = Duration::from_secs(5);
    })
    .await;
    for _ in 0..6 {
        tq.queue.enqueue(&Job::sleeping(700)).await.unwrap();
    }
    let probe = Probe::default();
    let first = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("two jobs start", Duration::from_secs(5), || async { probe.runs().len() == 2 }).await;
    first.stop().await;

    assert_eq!(probe.runs().len(), 2, "no new job starts after the signal");
    assert_eq!(probe.finished(), 2, "running jobs finish before the worker exits");
    assert_eq!(tq.queue.pending_count().await.unwrap(), 0, "nothing stranded");
    assert!(tq.consumers().await.is_empty(), "consumer left the group");

    let started = Instant::now();
    let second = RunningWorker::start(&tq.queue, &probe, 4);
    wait_until("the rest run", Duration::from_secs(10), || async { probe.finished() == 6 }).await;
    second.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(probe.runs().iter().all(|r| r.attempt == 1));
}

/// Drives the backend by hand to shut down with fetched-but-unstarted entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstarted_entries_are_handed_back_on_close() {
    let tq = TestQueue::new(|c| c.min_idle = Duration::from_secs(60)).await;
    for _ in 0..3 {
        tq.queue.enqueue(&Job::new("ok")).await.unwrap();
    }
    let mut backend = tq.queue.backend::<Job>(3);
    let me = backend.consumer_name().to_owned();
    let worker = WorkerContext::new("manual");
    // One fetch of three free slots; the worker takes the first task only.
    let first = poll_fn(|cx| backend.poll_next(cx, &worker)).await.unwrap().unwrap();
    poll_fn(|cx| backend.poll_close(cx, &worker)).await.unwrap();

    let pending: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&tq.queue.keys().stream)
        .arg(&tq.queue.config().group)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut tq.conn().await)
        .await
        .unwrap();
    let owners: Vec<(&str, usize)> = pending.ids.iter().map(|p| (p.consumer.as_str(), p.times_delivered)).collect();
    let first_id = first.task_id().unwrap().to_string();
    assert!(pending.ids.iter().any(|p| p.id == first_id && p.consumer == me), "{owners:?}");
    // The two never started: parked on `handoff`, delivery count rolled back.
    let handed: Vec<_> = owners.iter().filter(|(c, _)| *c == "handoff").collect();
    assert_eq!(handed.len(), 2, "{owners:?}");
    assert!(handed.iter().all(|(_, n)| *n == 0), "{owners:?}");

    // A live worker picks them up at once, as first attempts.
    let probe = Probe::default();
    let running = RunningWorker::start(&tq.queue, &probe, 2);
    wait_until("handed-back jobs run", Duration::from_secs(5), || async { probe.finished() == 2 }).await;
    running.stop().await;
    assert!(probe.runs().iter().all(|r| r.attempt == 1), "{:?}", probe.runs());
}
