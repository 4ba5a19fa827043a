//! The queue's keys: dead letters trimmed by age, the ids hash losing only
//! finished or forgotten jobs, and the scheduler's prune, carried out by a
//! worker.

use std::time::Duration;

use sqlx::PgPool;

use crate::harness::{wait_until, Env};
use crate::seed::{self, counts, pruned};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dead_letters_older_than_the_retention_are_trimmed(pool: PgPool) {
    let env = Env::new(pool);
    let mut young = Vec::new();
    // Oldest first: stream ids only grow.
    for days in [300.0, 250.0, 200.0, 190.0, 181.0] {
        seed::dead_letter(&env, "session", days).await;
    }
    for days in [179.0, 30.0, 0.0] {
        young.push(seed::dead_letter(&env, "session", days).await);
    }
    seed::dead_letter(&env, "bulk", 181.0).await;
    let young_bulk = seed::dead_letter(&env, "bulk", 179.0).await;

    // Pages of two: five old entries take three.
    let result = seed::prune(&env, &["--batch-size", "2"], 0).await;

    assert_eq!(pruned(&result), counts(&[("dead_letters_session", 5), ("dead_letters_bulk", 1)]));
    assert_eq!(seed::dead_letters(&env, "session").await, young);
    assert_eq!(seed::dead_letters(&env, "bulk").await, [young_bulk]);

    let shorter = seed::prune(&env, &["--keep-dead-letters", "10d"], 0).await;
    assert_eq!(pruned(&shorter), counts(&[("dead_letters_session", 2), ("dead_letters_bulk", 1)]));
    assert_eq!(seed::dead_letters(&env, "session").await, young[2..]);
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_ids_hash_loses_only_finished_or_forgotten_jobs(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    let queued = seed::job(pool, "cleanup_session", "queued", None).await.to_string();
    let running = seed::job(pool, "cleanup_all", "running", None).await.to_string();
    let completed = seed::job(pool, "cleanup_session", "completed", Some(0.01)).await.to_string();
    let failed = seed::job(pool, "cleanup_expired_images", "failed", Some(0.01)).await.to_string();
    let forgotten = uuid::Uuid::new_v4().to_string();
    for id in [&queued, &running, &completed, &failed, &forgotten] {
        seed::queue_id(&env, id).await;
    }
    seed::queue_id(&env, "not-a-job-id").await;
    // Enough finished ones that the hash is scanned in several pages.
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, finished_at)
         SELECT gen_random_uuid(), 'cleanup_session', 'completed', now() FROM generate_series(1, 300)",
    )
    .execute(pool)
    .await
    .unwrap();
    let many: Vec<String> = sqlx::query_scalar(
        "SELECT job_id::text FROM job_results WHERE finished_at IS NOT NULL AND job_id::text NOT IN ($1, $2)",
    )
    .bind(&completed)
    .bind(&failed)
    .fetch_all(pool)
    .await
    .unwrap();
    for id in &many {
        seed::queue_id(&env, id).await;
    }

    let result = seed::prune(&env, &["--batch-size", "50"], 0).await;

    assert_eq!(pruned(&result), counts(&[("queue_ids", 304)]));
    let mut live = vec![queued, running];
    live.sort();
    assert_eq!(seed::queue_ids(&env).await, live);
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_scheduler_enqueues_a_prune_that_a_worker_carries_out(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    let old = seed::job(pool, "cleanup_session", "completed", Some(2.0)).await;
    let young = seed::job(pool, "cleanup_session", "completed", Some(0.5)).await;
    seed::queue_id(&env, &old.to_string()).await;
    seed::dead_letter(&env, "bulk", 200.0).await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[[schedule]]\nname = \"test-prune\"\ncron = \"* * * * * *\"\noperation = \"prune\"\n",
    )
    .unwrap();
    let config_path = config.path().to_str().unwrap();

    // The scheduler's settings decide the retentions the job carries.
    let scheduler = env.spawn(&["scheduler", "--config", config_path], &[("JANITOR_KEEP_SESSION_JOBS", "1d")]);
    let worker = env.worker(&[], &[]);
    wait_until("a scheduled prune has completed", Duration::from_secs(60), || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_results WHERE operation = 'prune_records' AND status = 'completed'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        done > 0
    })
    .await;
    scheduler.kill9().await;
    worker.kill9().await;

    assert!(!seed::job_exists(pool, old).await, "the scheduler's JANITOR_KEEP_SESSION_JOBS=1d applies");
    assert!(seed::job_exists(pool, young).await);
    assert!(seed::queue_ids(&env).await.iter().all(|id| *id != old.to_string()), "its ids entry went too");
    assert!(seed::dead_letters(&env, "bulk").await.is_empty(), "the worker reached the queue's Redis");
    let (requested_by, params): (Option<String>, serde_json::Value) = sqlx::query_as(
        "SELECT requested_by, params FROM job_results WHERE operation = 'prune_records' AND status = 'completed' LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(requested_by.as_deref(), Some("scheduler:test-prune"));
    assert_eq!(params["keep_session_jobs_secs"], 86_400);
    env.cleanup_keys().await;
}
