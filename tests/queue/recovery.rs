//! Recovery: an enqueue that cannot reach Redis leaves nothing behind, and
//! jobs that Postgres records but Redis does not carry (an enqueue cut short,
//! a Redis restart that lost everything) are re-enqueued by the reconciler.

use std::time::Duration;

use janitor_workers::layout::Lane;
use janitor_workers::results::{self, NewJob};
use sqlx::PgPool;
use uuid::Uuid;

use crate::delivery::{ids_len, seed_expired_bulk, session, status_counts, stream_state};
use crate::harness::{wait_until, Env, PrivateRedis};
use crate::support::{count_images, insert_image, Image};

/// Reconcile knobs short enough for a test.
const FAST_RECONCILE: [(&str, &str); 2] =
    [("JANITOR_RECONCILE_INTERVAL", "300ms"), ("JANITOR_RECONCILE_GRACE", "500ms")];

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_enqueue_with_redis_down_fails_and_records_nothing(pool: PgPool) {
    let env = Env::with_redis(pool, "redis://127.0.0.1:1".to_owned());
    for args in [&["enqueue", "session", "s"][..], &["enqueue", "expired"][..]] {
        let (code, stdout, stderr) = env.janitor(args).await;
        assert_ne!(code, 0, "{args:?} succeeded: {stdout}");
        assert!(stderr.contains("Redis"), "{args:?}: {stderr}");
        assert!(status_counts(&env).await.is_empty(), "{args:?} left a job_results row");
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_reconciler_enqueues_a_queued_row_that_never_reached_redis(pool: PgPool) {
    let env = Env::new(pool);
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/l.jpg", 3).session("lost")).await;
    let (lost, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    let (spec, other_spec) = (session("lost"), session("theirs"));
    let other_queue = format!("{}-other", env.prefix);
    let rows = [
        NewJob { job_id: lost, spec: &spec, requested_by: None, queue: &env.prefix },
        // Another deployment's job: this worker must leave it alone.
        NewJob { job_id: theirs, spec: &other_spec, requested_by: None, queue: &other_queue },
    ];
    results::insert_queued(&env.pool, &rows).await.unwrap();
    let worker = env.worker(&[], &[("JANITOR_RECONCILE_INTERVAL", "300ms"), ("JANITOR_RECONCILE_GRACE", "0s")]);

    let row = env.finished(lost, Duration::from_secs(20)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 1));
    assert_eq!(count_images(&env.pool).await, 0);
    assert_eq!(env.job(theirs).await.unwrap().0, "queued");
    wait_until("the queue is drained", Duration::from_secs(5), || async {
        stream_state(&env, Lane::Session).await == (0, 0) && ids_len(&env).await == 0
    })
    .await;

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn jobs_queued_before_a_redis_restart_that_lost_them_still_run(pool: PgPool) {
    let mut redis = PrivateRedis::start().await;
    let env = Env::with_redis(pool, redis.url());
    let mut jobs = Vec::new();
    for i in 0..5 {
        let id = format!("r{i}");
        let image = Image::fresh(&format!("photos/{id}.jpg"), 2).session(&id);
        insert_image(&env.pool, Some(&env.store), &image).await;
        jobs.push(env.enqueue(&["session", &id]).await);
    }
    redis.restart().await;
    assert_eq!(stream_state(&env, Lane::Session).await.0, 0, "the restart lost the stream");

    let worker = env.worker(&[], &FAST_RECONCILE);
    for job in jobs {
        let row = env.finished(job, Duration::from_secs(20)).await;
        assert_eq!((row.0.as_str(), row.1), ("completed", 1), "job {job}");
    }
    assert_eq!(count_images(&env.pool).await, 0);

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_running_worker_survives_a_redis_restart(pool: PgPool) {
    let mut redis = PrivateRedis::start().await;
    let env = Env::with_redis(pool, redis.url());
    seed_expired_bulk(&env, 300).await;
    let knobs = [
        FAST_RECONCILE[0],
        FAST_RECONCILE[1],
        ("JANITOR_BULK_CONCURRENCY", "1"),
        ("JANITOR_BATCH_SIZE", "20"),
        ("JANITOR_MAX_DELETES_PER_SEC", "100"),
    ];
    let worker = env.worker(&[], &knobs);
    // A slow bulk job holds the only bulk slot, so the next two wait on the
    // stream, where the restart loses them.
    let running = env.enqueue(&["expired"]).await;
    wait_until("the slow job is under way", Duration::from_secs(20), || async {
        env.job(running).await.is_some_and(|row| row.0 == "running" && row.1 > 0)
    })
    .await;
    let waiting = [env.enqueue(&["old-results"]).await, env.enqueue(&["old-results", "--days-old", "7"]).await];
    for job in waiting {
        assert_eq!(env.job(job).await.unwrap().0, "queued");
    }
    redis.restart().await;

    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/n.jpg", 1).session("new")).await;
    let new = env.enqueue(&["session", "new"]).await;
    let row = env.finished(new, Duration::from_secs(30)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 1));
    let row = env.finished(running, Duration::from_secs(30)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 300));
    for job in waiting {
        assert_eq!(env.finished(job, Duration::from_secs(30)).await.0, "completed");
    }

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
}

/// Redis restarted (losing everything) while a job is in the middle of its
/// batches: the worker reconnects by itself, the job finishes with exact
/// counts, and a job that was queued behind it is re-enqueued from Postgres.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_running_through_a_redis_restart_completes(pool: PgPool) {
    let mut redis = PrivateRedis::start().await;
    let env = Env::with_redis(pool, redis.url());
    crate::crash::seed_slow_job(&env, 600).await;
    let mut knobs =
        vec![("JANITOR_BULK_CONCURRENCY", "1"), ("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "200")];
    knobs.extend(FAST_RECONCILE);
    let worker = env.worker(&[], &knobs);
    let running = env.enqueue(&["expired"]).await;
    let queued = env.enqueue(&["old-results"]).await;
    wait_until("the expired job is mid-run", Duration::from_secs(20), || async {
        env.job(running).await.is_some_and(|row| row.0 == "running" && row.1 > 0)
    })
    .await;

    redis.restart().await;

    let done = env.finished(running, Duration::from_secs(60)).await;
    assert_eq!((done.0.as_str(), done.1), ("completed", 600), "counts are exact across the restart");
    assert_eq!(count_images(&env.pool).await, 0);
    assert_eq!(crate::harness::files_under(&env.store.path("photos")), 0);
    let behind = env.finished(queued, Duration::from_secs(30)).await;
    assert_eq!(behind.0, "completed", "the queued job Redis lost was re-enqueued");
    worker.signal("TERM").await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_first_enqueues_after_a_redis_restart_succeed(pool: PgPool) {
    // A new server has no scripts, and a restart forgets them and breaks the
    // producer's connection: the first enqueue after it, a logout's session
    // job or a bulk load, must not fail for either reason.
    let mut redis = PrivateRedis::start().await;
    let env = Env::with_redis(pool, redis.url());
    let producer = crate::delivery::producer(&env).await;
    let first = producer.enqueue_many(&[session("a"), session("b")], Some("test")).await.unwrap();
    assert_eq!(stream_state(&env, Lane::Session).await.0, 2, "a new server");

    redis.restart().await;
    let logout = producer.enqueue(&session("c"), Some("app")).await.expect("the first enqueue after the restart");
    assert!(!logout.deduplicated);
    assert_eq!(stream_state(&env, Lane::Session).await.0, 1, "on the stream at once, not left to the reconciler");

    redis.restart().await;
    let second = producer.enqueue_many(&[session("d"), session("e"), session("f")], Some("test")).await.unwrap();
    assert_eq!(stream_state(&env, Lane::Session).await.0, 3, "after another restart, each job once");
    assert_eq!(ids_len(&env).await, 3);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status = 'queued'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(queued as usize, first.len() + 1 + second.len());
}
