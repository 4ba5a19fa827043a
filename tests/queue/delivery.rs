//! Delivery: a large backlog drains and leaves Redis empty, a duplicate or
//! raw `XADD` is harmless, bad messages are dead-lettered without stopping
//! the worker, and a session cleanup never waits behind a long job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use janitor_workers::layout::{Lane, Layout};
use janitor_workers::producer::{self, Producer};
use janitor_workers::results::{self, NewJob};
use janitor_workers::{CleanupJob, JobSpec, SessionId};
use redis::AsyncCommands as _;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{wait_until, Env};
use crate::support::{count_images, insert_image, Image};

const BACKLOG: usize = 100_000;

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_backlog_of_100k_session_jobs_drains_and_leaves_redis_empty(pool: PgPool) {
    let env = Env::new(pool);
    let specs: Vec<JobSpec> = (0..BACKLOG).map(|i| session(&format!("b{i}"))).collect();
    let producer = producer(&env).await;
    for chunk in specs.chunks(25_000) {
        producer.enqueue_many(chunk, Some("test")).await.unwrap();
    }
    assert_eq!(stream_state(&env, Lane::Session).await, (BACKLOG, 0));

    let started = Instant::now();
    let knobs = [("JANITOR_CONCURRENCY", "32")];
    let workers = [env.worker(&[], &knobs), env.worker(&[], &knobs)];
    // A liveness bound, not a speed goal (that is the queue bench's): the
    // drain must keep moving (see `wait_for_no_unfinished_jobs`) and end
    // within 15 minutes on a loaded 2-core machine with a debug build.
    wait_for_no_unfinished_jobs(&env, Duration::from_secs(900)).await;
    let elapsed = started.elapsed();
    eprintln!(
        "drained {BACKLOG} session jobs with 2 workers x 32 in {elapsed:.1?}: {:.0} jobs/s",
        BACKLOG as f64 / elapsed.as_secs_f64()
    );

    assert_eq!(status_counts(&env).await, HashMap::from([("completed".to_owned(), BACKLOG as i64)]));
    // Under load a lease can lapse while its job still runs; the reconciler
    // then re-enqueues it, and that duplicate entry is acknowledged (the
    // job is finished) when it is delivered: within a lease (30 s) and a
    // reconcile interval (10 s), with the rescue pass's own delay.
    wait_until("both streams are empty", Duration::from_secs(60), || async {
        stream_state(&env, Lane::Session).await == (0, 0) && stream_state(&env, Lane::Bulk).await == (0, 0)
    })
    .await;
    wait_until("Redis forgot every job", Duration::from_secs(30), || async {
        ids_len(&env).await == 0 && keys(&env, "dedup:*").await.is_empty()
    })
    .await;
    for worker in workers {
        worker.signal("TERM").await;
        assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    }
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_delivered_twice_deletes_once_and_counts_once(pool: PgPool) {
    deliver_twice(Env::new(pool), &[]).await;
}

/// The same, when the delivery that loses the race has used its last
/// attempt: losing the lease to the other delivery is not a failure of the
/// job, so it must neither fail the job nor dead-letter anything.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_duplicate_that_loses_the_lease_on_its_last_attempt_does_not_fail_the_job(pool: PgPool) {
    deliver_twice(Env::new(pool), &[("JANITOR_MAX_ATTEMPTS", "1")]).await;
}

/// Puts one session job (3 images) on the stream twice under the same job
/// id, then starts a worker: one read hands it both entries, which run side
/// by side.
pub(crate) async fn deliver_twice(env: Env, knobs: &[(&str, &str)]) {
    for i in 0..3 {
        let image = Image::fresh(&format!("photos/dup/{i}.jpg"), 10).session("dup");
        insert_image(&env.pool, Some(&env.store), &image).await;
    }
    let (job_id, spec) = (Uuid::new_v4(), session("dup"));
    let new = NewJob { job_id, spec: &spec, requested_by: None, queue: &env.prefix };
    results::insert_queued(&env.pool, &[new]).await.unwrap();
    let payload = producer::payload(job_id, &spec, None);
    for _ in 0..2 {
        xadd(&env, &[("job", &payload)]).await;
    }
    let worker = env.worker(&[], &[&[("JANITOR_CONCURRENCY", "8")], knobs].concat());

    env.finished(job_id, Duration::from_secs(20)).await;
    wait_until("both deliveries are acknowledged", Duration::from_secs(45), || async {
        stream_state(&env, Lane::Session).await == (0, 0)
    })
    .await;
    assert_eq!(
        (count_images(&env.pool).await, crate::harness::files_under(env.store.root())),
        (0, 0),
        "rows and files left"
    );
    let (status, deleted, attempts, _, error) = env.job(job_id).await.unwrap();
    assert_eq!((status.as_str(), error), ("completed", None));
    assert_eq!(deleted, 3, "deleted_count is the rows actually deleted");
    assert!((1..=2).contains(&attempts), "attempts = {attempts}");
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 1, "one row");
    assert_eq!(dead_letters(&env, Lane::Session).await, vec![]);

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn equal_session_jobs_are_deduplicated_until_the_first_ends(pool: PgPool) {
    equal_session_jobs_are_deduplicated_until_the_first_ends_on(Env::new(pool)).await;
}

/// The scenario of [`equal_session_jobs_are_deduplicated_until_the_first_ends`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn equal_session_jobs_are_deduplicated_until_the_first_ends_on(env: Env) {
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/s.jpg", 5).session("S")).await;
    let mut replies = Vec::new();
    for _ in 0..20 {
        let (code, stdout, stderr) = env.janitor(&["enqueue", "session", "S", "--json"]).await;
        assert_eq!(code, 0, "{stderr}");
        replies.push(serde_json::from_str::<Value>(&stdout).unwrap());
    }
    let first = replies[0]["job_id"].clone();
    assert_eq!(replies[0]["deduplicated"], false);
    for reply in &replies[1..] {
        assert_eq!((&reply["job_id"], &reply["deduplicated"]), (&first, &Value::Bool(true)));
    }
    let first: Uuid = first.as_str().unwrap().parse().unwrap();
    let worker = env.worker(&[], &[]);

    let row = env.finished(first, Duration::from_secs(20)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 1));
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 1, "one row for S");

    let again = env.enqueue(&["session", "S"]).await;
    assert_ne!(again, first, "a finished job does not absorb new requests");
    let row = env.finished(again, Duration::from_secs(20)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 0));
    wait_until("Redis holds nothing for S", Duration::from_secs(5), || async {
        keys(&env, "dedup:live:S").await.is_empty() && ids_len(&env).await == 0
    })
    .await;

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_raw_xadd_without_a_job_id_runs(pool: PgPool) {
    a_raw_xadd_without_a_job_id_runs_on(Env::new(pool)).await;
}

/// The scenario of [`a_raw_xadd_without_a_job_id_runs`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_raw_xadd_without_a_job_id_runs_on(env: Env) {
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/abc.jpg", 4).session("abc")).await;
    let worker = env.worker(&[], &[]);
    let entry = xadd(&env, &[("job", r#"{"op":"session","session_id":"abc"}"#)]).await;

    let job_id = Layout::new(&env.prefix).derived_job_id(&entry);
    let row = env.finished(job_id, Duration::from_secs(20)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 1));
    let (operation, params): (String, Value) =
        sqlx::query_as("SELECT operation, params FROM job_results WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((operation.as_str(), &params["session_id"]), ("cleanup_session", &Value::from("abc")));
    assert_eq!(count_images(&env.pool).await, 0);
    assert!(!env.store.exists("photos/abc.jpg"));

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn bad_messages_are_dead_lettered_and_the_worker_goes_on(pool: PgPool) {
    bad_messages_are_dead_lettered_and_the_worker_goes_on_on(Env::new(pool)).await;
}

/// The scenario of [`bad_messages_are_dead_lettered_and_the_worker_goes_on`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn bad_messages_are_dead_lettered_and_the_worker_goes_on_on(env: Env) {
    let worker = env.worker(&[], &[]);
    let bad: [(&[(&str, &str)], &str); 4] = [
        (&[("job", "{not json")], "job payload is not valid"),
        (&[("job", r#"{"op":"explode"}"#)], "explode"),
        (&[("job", r#"{"op":"session"}"#)], "session_id"),
        (&[("payload", r#"{"op":"session","session_id":"x"}"#)], "no `job` field"),
    ];
    let mut expected = HashMap::new();
    for (fields, reason) in bad {
        expected.insert(xadd(&env, fields).await, reason);
    }
    let good = env.enqueue(&["session", "good"]).await;

    let row = env.finished(good, Duration::from_secs(20)).await;
    assert_eq!(row.0, "completed");
    wait_until("four dead letters", Duration::from_secs(10), || async {
        dead_letters(&env, Lane::Session).await.len() == 4
    })
    .await;
    for (source, reason) in dead_letters(&env, Lane::Session).await {
        let wanted = expected[&source];
        assert!(reason.contains(wanted), "{source}: {reason:?} should mention {wanted:?}");
    }
    assert_eq!(stream_state(&env, Lane::Session).await, (0, 0));
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 1, "bad messages leave no rows");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

/// Durations out of range (a grace period of centuries, a retention of
/// zero) are bad input on the queue too: dead-lettered with the reason,
/// never run, never a panic in time arithmetic.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn out_of_range_durations_are_dead_lettered(pool: PgPool) {
    let env = Env::new(pool);
    let worker = env.worker(&[], &[]);
    let bulk = Layout::new(&env.prefix).stream(Lane::Bulk);
    let bad = [
        (r#"{"op":"orphaned","min_age_secs":18446744073709551615}"#, "min_age must be at most 3650 days"),
        (r#"{"op":"all","min_age_secs":400000000}"#, "min_age must be at most 3650 days"),
        (r#"{"op":"orphaned","min_age_secs":-5}"#, "expected u64"),
        (r#"{"op":"purge-trash","retention_secs":0}"#, "retention must be from 1 hour"),
    ];
    let mut expected = HashMap::new();
    for (job, reason) in bad {
        let id: String = env.redis().await.xadd(&bulk, "*", &[("job", job)]).await.unwrap();
        expected.insert(id, reason);
    }
    wait_until("four dead letters", Duration::from_secs(20), || async {
        dead_letters(&env, Lane::Bulk).await.len() == 4
    })
    .await;
    for (source, reason) in dead_letters(&env, Lane::Bulk).await {
        let wanted = expected[&source];
        assert!(reason.contains(wanted), "{source}: {reason:?} should mention {wanted:?}");
    }
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 0, "bad messages leave no rows");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_session_cleanup_starts_at_once_behind_a_long_job(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 2000).await;
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/q.jpg", 1).session("quick")).await;
    let worker = env.worker(
        &[],
        &[("JANITOR_BULK_CONCURRENCY", "1"), ("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "200")],
    );
    let long = env.enqueue(&["expired"]).await;
    wait_until("the long job is under way", Duration::from_secs(20), || async {
        env.job(long).await.is_some_and(|row| row.0 == "running" && row.1 > 0)
    })
    .await;

    let producer = producer(&env).await;
    let started = Instant::now();
    let quick = producer.enqueue(&session("quick"), Some("test")).await.unwrap().job_id;
    let row = env.finished(quick, Duration::from_secs(20)).await;
    let latency = started.elapsed();
    eprintln!("session cleanup behind a long job: enqueue -> completed in {latency:.0?}");
    assert_eq!((row.0.as_str(), row.1), ("completed", 1));
    assert_eq!(env.job(long).await.unwrap().0, "running", "the long job is still going");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

// Helpers shared with `recovery.rs`.

pub(crate) fn session(id: &str) -> JobSpec {
    JobSpec { job: CleanupJob::Session { session_id: SessionId::parse(id).unwrap() }, dry_run: false, limit: None }
}

pub(crate) async fn producer(env: &Env) -> Producer {
    let client = janitor_workers::RedisTarget::open(&env.redis_url, env.cluster).unwrap();
    Producer::connect(env.pool.clone(), client, Layout::new(&env.prefix)).await.expect("the producer connects")
}

/// `XADD` of raw fields to the session stream, as any client could; returns
/// the entry id.
pub(crate) async fn xadd(env: &Env, fields: &[(&str, &str)]) -> String {
    let stream = Layout::new(&env.prefix).stream(Lane::Session);
    env.redis().await.xadd(stream, "*", fields).await.unwrap()
}

/// (XLEN, entries pending in the `workers` group) of a lane's stream.
pub(crate) async fn stream_state(env: &Env, lane: Lane) -> (usize, usize) {
    let stream = Layout::new(&env.prefix).stream(lane);
    let mut redis = env.redis().await;
    let len: usize = redis.xlen(&stream).await.unwrap();
    let pending: redis::RedisResult<redis::streams::StreamPendingReply> = redis.xpending(&stream, "workers").await;
    // No group yet (nobody read the stream) means nothing is pending.
    (len, pending.map_or(0, |reply| reply.count()))
}

/// (source entry id, reason) of each dead letter of a lane.
pub(crate) async fn dead_letters(env: &Env, lane: Lane) -> Vec<(String, String)> {
    let dead = Layout::new(&env.prefix).dead(lane);
    let reply: redis::streams::StreamRangeReply = env.redis().await.xrange_all(dead).await.unwrap();
    reply.ids.iter().map(|e| (e.get("source_id").unwrap_or_default(), e.get("reason").unwrap_or_default())).collect()
}

pub(crate) async fn ids_len(env: &Env) -> usize {
    env.redis().await.hlen(Layout::new(&env.prefix).ids()).await.unwrap()
}

/// This test's keys matching `{prefix}:{pattern}` (the prefix hash-tagged;
/// a test's prefix holds no glob characters).
pub(crate) async fn keys(env: &Env, pattern: &str) -> Vec<String> {
    env.redis().await.keys(format!("{{{}}}:{pattern}", env.prefix)).await.unwrap()
}

pub(crate) async fn status_counts(env: &Env) -> HashMap<String, i64> {
    sqlx::query_as("SELECT status, count(*) FROM job_results GROUP BY status")
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Expired temporary images with 1-byte files, inserted in one statement.
pub(crate) async fn seed_expired_bulk(env: &Env, count: usize) {
    crate::support::seed_expired_in(&env.pool, &env.store, "bulk", count, 1).await;
}

/// Waits until no job is queued or running, polling the partial index once a
/// second (a count every 25 ms would compete with the workers on 2 cores).
/// Fails if the count stops going down for 30 s or `timeout` passes.
async fn wait_for_no_unfinished_jobs(env: &Env, timeout: Duration) {
    let started = Instant::now();
    let (mut last, mut last_change) = (i64::MAX, Instant::now());
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status IN ('queued', 'running')")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        if left < last {
            (last, last_change) = (left, Instant::now());
        }
        assert!(last_change.elapsed() < Duration::from_secs(30), "no progress for 30 s: {left} jobs unfinished");
        assert!(started.elapsed() < timeout, "{left} jobs still unfinished after {timeout:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn waiting_ends_once_the_files_of_an_ended_job_are_unlinked(pool: PgPool) {
    let env = Env::new(pool);
    let producer = producer(&env).await;
    // A job that ended in its last batch's transaction, whose files are
    // still listed: its run is unlinking them (or stopped before it did).
    let job_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, params, dry_run, status, deleted_count, finished_at)
         VALUES ($1, 'cleanup_session', '{\"session_id\": \"s\"}', false, 'completed', 1, now())",
    )
    .bind(job_id)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ($1, 0, '{1}', '{photos/a.jpg}')",
    )
    .bind(job_id)
    .execute(&env.pool)
    .await
    .unwrap();

    // Until they are unlinked, a wait runs to its timeout, and then says
    // what the row says.
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let record = producer.wait(job_id, timeout).await.unwrap();
    assert!(started.elapsed() >= timeout, "returned after {:?}, with the files still listed", started.elapsed());
    assert_eq!(record.status, "completed");

    // Once they are, and the listeners are told, it returns at once.
    let waiting = tokio::spawn({
        let producer = producer.clone();
        async move { producer.wait(job_id, Duration::from_secs(60)).await }
    });
    sqlx::query(
        "WITH settled AS (DELETE FROM janitor_unlink_intents WHERE job_id = $1)
         SELECT pg_notify('janitor_job_finished', $1::text)",
    )
    .bind(job_id)
    .execute(&env.pool)
    .await
    .unwrap();
    let record = waiting.await.unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1));
    env.cleanup_keys().await;
}
