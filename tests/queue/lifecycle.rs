//! A job's life at production scale: a job that lost its worker and its
//! stream entry is recovered, an enqueue whose reply was lost still runs
//! once, dead consumers leave the group, equal bulk jobs are one job, and an
//! operator can cancel, retry and discard.

use std::time::{Duration, Instant};

use janitor_workers::layout::{Lane, Layout};
use janitor_workers::producer;
use janitor_workers::results::{self, NewJob};
use redis::AsyncCommands as _;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::delivery::{seed_expired_bulk, status_counts};
use crate::harness::{wait_for_job, wait_until, Env, PrivateRedis};
use crate::support::count_images;

/// A slow bulk job: a tenth of a second per batch of 20.
const SLOW: [(&str, &str); 3] =
    [("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "200"), ("JANITOR_BULK_CONCURRENCY", "1")];

/// A short lease and a quick reconciler.
const QUICK: [(&str, &str); 3] =
    [("JANITOR_LEASE", "2s"), ("JANITOR_RECONCILE_INTERVAL", "300ms"), ("JANITOR_RECONCILE_GRACE", "500ms")];

fn knobs(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    [&SLOW[..], &QUICK[..], extra].concat()
}

/// The review's stuck job: its worker died, and Redis no longer carries it
/// (its entry was lost, and the ids hash names an entry that is gone, as a
/// duplicate delivery acknowledged after a Redis restart leaves it). Its
/// row would stay `running` for ever; its lease expires instead, and the
/// reconciler re-enqueues it within the lease plus an interval, to resume.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_that_lost_its_worker_and_its_entry_is_recovered(pool: PgPool) {
    a_job_that_lost_its_worker_and_its_entry_is_recovered_on(Env::new(pool)).await;
}

/// The scenario of [`a_job_that_lost_its_worker_and_its_entry_is_recovered`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_job_that_lost_its_worker_and_its_entry_is_recovered_on(env: Env) {
    seed_expired_bulk(&env, 400).await;
    let first = env.worker(&[], &knobs(&[]));
    let job = env.enqueue(&["expired"]).await;
    wait_for_job(&env.pool, job, "the job is under way", Duration::from_secs(20), |row| row.1 > 0).await;
    first.kill9().await;
    let layout = Layout::new(&env.prefix);
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("DEL").arg(layout.stream(Lane::Bulk)).query_async(&mut redis).await.unwrap();
    let _: i64 = redis.hset(layout.ids(), job.to_string(), "1-1").await.unwrap();

    let killed = Instant::now();
    let second = env.worker(&[], &knobs(&[]));
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 400), "resumed with exact counts");
    assert_eq!(count_images(&env.pool).await, 0);
    eprintln!("recovered and finished {:.1?} after the kill", killed.elapsed());
    second.signal("TERM").await;
    env.cleanup_keys().await;
}

/// An upgrade from the keys before the hash tag (`janitor:session:jobs`
/// became `{janitor}:session:jobs`): a job the old producer queued has its
/// row, so the new worker's reconciler re-enqueues it under the new keys,
/// and it runs once; a raw `XADD` an application still sends to the old
/// stream is moved onto the new one and runs (docs/OPERATIONS.md, "Moving
/// an existing deployment").
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_queued_under_the_old_untagged_keys_runs_after_the_upgrade(pool: PgPool) {
    let env = Env::new(pool);
    for i in 0..3 {
        let image = crate::support::Image::fresh(&format!("photos/up/{i}.jpg"), 10).session("up");
        crate::support::insert_image(&env.pool, Some(&env.store), &image).await;
    }
    // What the old producer did: the row, then the entry and its id under
    // the old, untagged keys.
    let (job_id, spec) = (Uuid::new_v4(), crate::delivery::session("up"));
    let new = NewJob { job_id, spec: &spec, requested_by: None, queue: &env.prefix };
    results::insert_queued(&env.pool, &[new]).await.unwrap();
    let (old_stream, old_ids) = (format!("{}:session:jobs", env.prefix), format!("{}:ids", env.prefix));
    let mut redis = env.redis().await;
    let entry: String = redis.xadd(&old_stream, "*", &[("job", producer::payload(job_id, &spec, None))]).await.unwrap();
    let _: i64 = redis.hset(&old_ids, job_id.to_string(), &entry).await.unwrap();
    // And what an application not yet pointed at the new key adds there:
    // a raw XADD, with no row for the reconciler to find.
    let image = crate::support::Image::fresh("photos/up/raw.jpg", 10).session("raw");
    crate::support::insert_image(&env.pool, Some(&env.store), &image).await;
    let raw = serde_json::json!({"op": "session", "session_id": "raw"}).to_string();
    let _: String = redis.xadd(&old_stream, "*", &[("job", raw)]).await.unwrap();

    let worker = env.worker(&[], &QUICK);
    let row = env.finished(job_id, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 3), "{row:?}");
    wait_until("the raw entry was moved and ran", Duration::from_secs(30), || async {
        status_counts(&env).await.get("completed") == Some(&2)
    })
    .await;
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 2, "two jobs, each run once");
    assert_eq!(count_images(&env.pool).await, 0);
    let left: usize = redis.xlen(&old_stream).await.unwrap();
    assert_eq!(left, 0, "the old stream was emptied");
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    let _: i64 = redis.del(&[&old_stream, &old_ids]).await.unwrap();
    env.cleanup_keys().await;
}

/// An `XADD` that times out but lands: the producer cannot know, so it
/// keeps the job's row queued; the job then runs exactly once.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_enqueue_whose_reply_was_lost_keeps_its_row_and_runs_once(pool: PgPool) {
    let redis = PrivateRedis::start().await;
    let env = Env::with_redis(pool, redis.url());
    seed_expired_bulk(&env, 30).await;
    // Writes wait for seven seconds: longer than the producer's five.
    let mut admin = env.redis().await;
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("WRITE").query_async(&mut admin).await.unwrap();
    let (code, stdout, stderr) = env.janitor(&["enqueue", "expired", "--json"]).await;
    assert_eq!(code, 0, "the outcome is unknown, not failed: {stderr}");
    let job: Uuid = serde_json::from_str::<Value>(&stdout).unwrap()["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.job(job).await.map(|row| row.0), Some("queued".to_owned()), "the row stays for the reconciler");

    let worker = env.worker(&[], &QUICK);
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 30));
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 1, "one job, run once");
    worker.signal("TERM").await;
}

/// Consumers that were killed leave the group once their entries have been
/// rescued, so the group does not grow with every crash.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dead_consumers_leave_the_group(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 200).await;
    let doomed = [env.worker(&[], &knobs(&[])), env.worker(&[], &knobs(&[]))];
    let job = env.enqueue(&["expired"]).await;
    wait_for_job(&env.pool, job, "the job is under way", Duration::from_secs(20), |row| row.1 > 0).await;
    // The consumer that runs the job (a consumer joins the group when it
    // first receives something).
    let dead = consumers(&env).await;
    assert!(!dead.is_empty());
    for worker in doomed {
        worker.kill9().await;
    }
    let survivor = env.worker(&[], &knobs(&[]));
    assert_eq!(env.finished(job, Duration::from_secs(60)).await.0, "completed");
    wait_until("the dead consumers are gone", Duration::from_secs(60), || async {
        let now = consumers(&env).await;
        dead.iter().all(|name| !now.contains(name))
    })
    .await;
    survivor.signal("TERM").await;
    env.cleanup_keys().await;
}

/// The consumers of both lanes' groups.
async fn consumers(env: &Env) -> Vec<String> {
    let layout = Layout::new(&env.prefix);
    let mut redis = env.redis().await;
    let mut names = Vec::new();
    for lane in [Lane::Session, Lane::Bulk] {
        let reply: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
            redis.xinfo_consumers(layout.stream(lane), "workers").await;
        names.extend(
            reply.map(|r| r.consumers.into_iter().map(|c| format!("{}:{}", lane.name(), c.name))).into_iter().flatten(),
        );
    }
    names
}

/// Two equal bulk jobs never pile up, whoever enqueues them: the second
/// enqueue returns the first job, and a raw `XADD` of an equal job does not
/// run beside it.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn equal_bulk_jobs_are_one_job(pool: PgPool) {
    let env = Env::new(pool);
    let enqueue = |args: Vec<&'static str>| {
        let env = &env;
        async move {
            let (code, stdout, stderr) = env.janitor(&[&["enqueue"][..], &args, &["--json"]].concat()).await;
            assert_eq!(code, 0, "{stderr}");
            serde_json::from_str::<Value>(&stdout).unwrap()
        }
    };
    // The first one is slow, so that the raw duplicate arrives while it runs.
    seed_expired_bulk(&env, 400).await;
    let first = enqueue(vec!["all", "--days-old", "9"]).await;
    let again = enqueue(vec!["all", "--days-old", "9"]).await;
    assert_eq!(first["deduplicated"], false);
    assert_eq!((&again["job_id"], &again["deduplicated"]), (&first["job_id"], &Value::Bool(true)));
    let other = enqueue(vec!["all", "--days-old", "10"]).await;
    assert_ne!(other["job_id"], first["job_id"], "other parameters are another job");
    let dry = enqueue(vec!["all", "--days-old", "9", "--dry-run"]).await;
    assert_ne!(dry["job_id"], first["job_id"], "a dry run is another job");
    // A raw XADD of the same job, as an application could send.
    let bulk = Layout::new(&env.prefix).stream(Lane::Bulk);
    let _: String = env.redis().await.xadd(&bulk, "*", &[("job", r#"{"op":"all","days_old":9}"#)]).await.unwrap();

    let worker = env.worker(
        &[],
        &[
            &QUICK[..],
            &[("JANITOR_BULK_CONCURRENCY", "4"), ("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "200")],
        ]
        .concat(),
    );
    let first: Uuid = first["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.finished(first, Duration::from_secs(60)).await.0, "completed");
    wait_until("the queue is drained", Duration::from_secs(30), || async {
        status_counts(&env).await.keys().all(|status| status == "completed")
    })
    .await;
    let counts = status_counts(&env).await;
    assert_eq!(counts.get("completed"), Some(&3), "three distinct jobs ran, the raw duplicate did not: {counts:?}");
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// The dedup of equal bulk jobs counts only live leases. An equal job
/// running with a live lease is what a second enqueue returns; once its
/// lease has expired (its worker died unnoticed) it no longer blocks: the
/// enqueue supersedes it (failed, naming the new job) and records a new job,
/// which runs, while the superseded one is neither run nor re-enqueued.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_equal_bulk_job_deduplicates_only_while_its_lease_is_live(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 30).await;
    let stale = env.enqueue(&["expired"]).await;
    // No worker runs: make it look taken by one whose lease is live.
    let lease = |seconds: i32| {
        sqlx::query(
            "UPDATE job_results SET status = 'running', attempts = 1, lease_epoch = 1, worker = 'gone',
                 started_at = now(), lease_expires_at = now() + make_interval(secs => $2)
             WHERE job_id = $1",
        )
        .bind(stale)
        .bind(f64::from(seconds))
        .execute(&env.pool)
    };
    lease(60).await.unwrap();
    let (code, stdout, stderr) = env.janitor(&["enqueue", "expired", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let live: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((&live["job_id"], &live["deduplicated"]), (&Value::from(stale.to_string()), &Value::Bool(true)));

    lease(-1).await.unwrap();
    let (code, stdout, stderr) = env.janitor(&["enqueue", "expired", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let fresh: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(fresh["deduplicated"], false, "an expired lease does not deduplicate: {fresh}");
    let fresh: Uuid = fresh["job_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(fresh, stale);
    let row = env.job(stale).await.unwrap();
    assert_eq!(row.0, "failed", "{row:?}");
    let reason = row.4.unwrap_or_default();
    assert!(reason.contains(&format!("superseded by the equal job {fresh}")), "{reason}");

    // The superseded job's stream entry is still there: its delivery finds
    // it ended, and no reconciler brings it back.
    let worker = env.worker(&[], &QUICK);
    let row = env.finished(fresh, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 30));
    wait_until("both entries are consumed", Duration::from_secs(20), || async {
        crate::delivery::stream_state(&env, Lane::Bulk).await == (0, 0)
    })
    .await;
    assert_eq!(env.job(stale).await.unwrap(), ("failed".to_owned(), 0, 1, Some("gone".to_owned()), Some(reason)));
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// A `janitor run` killed mid-run (kill -9) has no queue to deliver it
/// again. Once its lease has expired, a worker's reconciler fails its row,
/// saying how to resume it, and `janitor run --job-id` resumes it from its
/// checkpoint to exact totals.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_killed_janitor_run_is_failed_after_its_lease_and_resumes(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 400).await;
    let job = Uuid::new_v4();
    let id = job.to_string();
    let paced = [("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "40")];
    let run = env.spawn(&["run", "expired", "--job-id", &id], &paced);
    wait_for_job(&env.pool, job, "the run is under way", Duration::from_secs(20), |row| row.1 > 0).await;
    run.kill9().await;
    let killed = env.job(job).await.unwrap();
    assert_eq!(killed.0, "running", "killed mid-run: {killed:?}");
    assert!(killed.1 < 400);

    // `janitor run`'s lease is 30 s; the worker's own settings do not change it.
    let worker = env.worker(&[], &QUICK);
    let row =
        wait_for_job(&env.pool, job, "the reconciler failed it", Duration::from_secs(90), |row| row.0 == "failed")
            .await;
    let reason = row.4.clone().unwrap_or_default();
    assert!(reason.contains("ended without finishing"), "{reason}");
    assert!(reason.contains(&format!("janitor run <same operation> --job-id {job}")), "{reason}");
    let result: Option<Value> = sqlx::query_scalar("SELECT result FROM job_results WHERE job_id = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(result.unwrap()["status"], "failed", "the result is stored with the final status");
    worker.signal("TERM").await;

    let (code, stdout, stderr) = env.janitor(&["run", "expired", "--job-id", &id, "--json"]).await;
    assert_eq!(code, 0, "the resumed run completes: {stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((&result["status"], &result["deleted_count"]), (&Value::from("completed"), &Value::from(400)));
    let (deleted, bytes): (i64, i64) =
        sqlx::query_as("SELECT deleted_count, deleted_bytes FROM job_results WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((deleted, bytes), (400, 400), "exact totals across the two runs");
    assert_eq!(count_images(&env.pool).await, 0);
    assert_eq!(crate::harness::files_under(env.store.root()), 0);
    env.cleanup_keys().await;
}

/// A retry starts a job's attempts over. A job that used up its attempts
/// is retried, then loses its worker and its stream entry: the reconciler
/// re-enqueues it (it is on its first attempt again), instead of failing
/// it as having lost its worker on every attempt, and it finishes exactly.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_retried_job_starts_its_attempts_over(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 400).await;
    refuse_deletes(&env.pool).await;
    let failing = [("JANITOR_MAX_ATTEMPTS", "2"), ("JANITOR_RETRY_BASE", "100ms")];
    let first = env.worker(&[], &knobs(&failing));
    let job = env.enqueue(&["expired"]).await;
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.2), ("failed", 2), "it used up its attempts: {row:?}");

    sqlx::raw_sql("DROP TRIGGER refuse ON images").execute(&env.pool).await.unwrap();
    let (code, _, stderr) = env.janitor(&["retry", &job.to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    let row = wait_for_job(&env.pool, job, "the retry is under way", Duration::from_secs(20), |row| {
        row.0 == "running" && row.1 > 0
    })
    .await;
    assert_eq!(row.2, 1, "the retry is its first attempt: {row:?}");
    first.kill9().await;
    let layout = Layout::new(&env.prefix);
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("DEL").arg(layout.stream(Lane::Bulk)).query_async(&mut redis).await.unwrap();
    let _: i64 = redis.hset(layout.ids(), job.to_string(), "1-1").await.unwrap();

    let second = env.worker(&[], &knobs(&failing));
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1, row.2), ("completed", 400, 2), "re-enqueued and resumed: {row:?}");
    assert_eq!(count_images(&env.pool).await, 0);
    second.signal("TERM").await;
    env.cleanup_keys().await;
}

/// `janitor cancel` on a queued job: it is cancelled at once and never
/// starts, even when a worker reads its entry.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_cancelled_queued_job_never_starts(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 10).await;
    let job = env.enqueue(&["expired"]).await;
    let (code, stdout, stderr) = env.janitor(&["cancel", &job.to_string(), "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["status"], "cancelled");

    let worker = env.worker(&[], &QUICK);
    wait_until("the entry is consumed", Duration::from_secs(20), || async {
        crate::delivery::stream_state(&env, Lane::Bulk).await == (0, 0)
    })
    .await;
    let (status, started): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status, started_at FROM job_results WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "cancelled");
    assert!(started.is_none(), "it never started");
    assert_eq!(count_images(&env.pool).await, 10, "nothing was deleted");
    let (code, _, stderr) = env.janitor(&["cancel", &job.to_string()]).await;
    assert_eq!(code, 1, "an ended job cannot be cancelled: {stderr}");
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// `janitor cancel` on a running job stops it at its next batch boundary,
/// as `cancelled`, with exact counts and its checkpoint; `janitor retry`
/// runs it again under the same id, and the totals stay exact.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_cancelled_running_job_stops_exactly_and_a_retry_finishes_it(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 600).await;
    let worker = env.worker(&[], &knobs(&[]));
    let job = env.enqueue(&["expired"]).await;
    wait_for_job(&env.pool, job, "the job is under way", Duration::from_secs(20), |row| row.1 > 0).await;
    let (code, stdout, stderr) = env.janitor(&["cancel", &job.to_string(), "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["status"], "cancelling");
    let row =
        wait_for_job(&env.pool, job, "the job is cancelled", Duration::from_secs(20), |row| row.0 == "cancelled").await;
    let left = count_images(&env.pool).await;
    assert!(left > 0, "it stopped before the end");
    assert_eq!(row.1, 600 - left, "the count is exactly what was deleted");

    let (code, _, stderr) = env.janitor(&["retry", &job.to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 600), "the totals stay exact across the two runs");
    assert_eq!(count_images(&env.pool).await, 0);
    let (code, _, stderr) = env.janitor(&["retry", &job.to_string()]).await;
    assert_eq!(code, 1, "a completed job is not retried: {stderr}");
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// A job that fails every attempt is failed and dead-lettered; `janitor
/// dead` lists it with its reason, `janitor retry` runs it again from its
/// checkpoint (and drops its dead letter), `janitor discard` removes any
/// other.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dead_letters_are_listed_retried_and_discarded(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 50).await;
    refuse_deletes(&env.pool).await;
    let failing = [("JANITOR_MAX_ATTEMPTS", "2"), ("JANITOR_RETRY_BASE", "100ms")];
    let worker = env.worker(&[], &[&QUICK[..], &failing[..]].concat());
    let job = env.enqueue(&["expired"]).await;
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!(row.0, "failed");
    let bad = crate::delivery::xadd(&env, &[("job", "{not json")]).await;
    let dead = wait_dead(&env, 2).await;
    let entry = dead.iter().find(|d| d["job_id"] == job.to_string()).expect("the failed job is a dead letter");
    assert!(entry["reason"].as_str().unwrap().contains("refused by the test"), "{entry}");
    assert_eq!(entry["operation"], "cleanup_expired_images");

    sqlx::raw_sql("DROP TRIGGER refuse ON images").execute(&env.pool).await.unwrap();
    let (code, _, stderr) = env.janitor(&["retry", &job.to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    let row = env.finished(job, Duration::from_secs(60)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", 50));
    let dead = wait_dead(&env, 1).await;
    assert_eq!(dead[0]["lane"], "session", "the retried job's dead letter is gone: {dead:?}");
    let entry = dead[0]["entry_id"].as_str().unwrap().to_owned();
    assert!(dead[0]["reason"].as_str().unwrap().contains("not valid"), "{:?} (source {bad})", dead[0]);
    let (code, stdout, stderr) = env.janitor(&["discard", &entry]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("discarded 1"), "{stdout}");
    assert!(wait_dead(&env, 0).await.is_empty());
    let (code, _, _) = env.janitor(&["discard", &entry]).await;
    assert_eq!(code, 1, "nothing left to discard");
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// `janitor dead --json` once it lists `count` dead letters.
async fn wait_dead(env: &Env, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, stdout, stderr) = env.janitor(&["dead", "--json"]).await;
        assert_eq!(code, 0, "{stderr}");
        let dead: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        if dead.len() == count {
            return dead;
        }
        assert!(Instant::now() < deadline, "expected {count} dead letters: {dead:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Session dedup counts only jobs with a live lease: a session job whose
/// worker died (lease expired) does not swallow the next logout of its
/// session.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_session_job_whose_worker_died_does_not_hold_its_session(pool: PgPool) {
    let env = Env::new(pool);
    let stale = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, params, status, queue, attempts, lease_epoch, lease_expires_at)
         VALUES ($1, 'cleanup_session', '{\"session_id\": \"s\"}', 'running', $2, 1, 1, now() - interval '1 minute')",
    )
    .bind(stale)
    .bind(&env.prefix)
    .execute(&env.pool)
    .await
    .unwrap();
    let key = env.layout().session_dedup("s", false);
    let held = format!("{stale} {}", chrono::Utc::now().timestamp_millis());
    let _: () = env.redis().await.set(&key, held).await.unwrap();

    let (code, stdout, stderr) = env.janitor(&["enqueue", "session", "s", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let reply: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["deduplicated"], false, "a dead job does not hold the session: {reply}");
    assert_ne!(reply["job_id"], stale.to_string());
    env.cleanup_keys().await;
}

/// A phase that writes nothing for longer than the lease keeps its job: the
/// expired job's first read of `images` waits on a lock held for more than
/// three leases, and meanwhile the heartbeat keeps the lease fresh, so the
/// row stays `running` on its first start (no reconciler or redelivery takes
/// it over). Once the lock is gone the job completes once, with exact counts.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_heartbeat_keeps_the_lease_of_a_phase_that_writes_nothing(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired_bulk(&env, 5).await;
    // Taken before the job exists, so that its pager's first SELECT waits.
    let mut lock = env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE images IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let worker = env.worker(&[], &QUICK);
    let job = env.enqueue(&["expired"]).await;
    wait_for_job(&env.pool, job, "the job is running", Duration::from_secs(20), |row| row.0 == "running").await;
    wait_until("the job's read of images waits on the lock", Duration::from_secs(20), || async {
        waiting_on_images(&env.pool).await > 0
    })
    .await;

    let renewals = watch_the_lease(&env.pool, job, 3).await;
    assert!(waiting_on_images(&env.pool).await > 0, "the phase was blocked all along");
    lock.rollback().await.unwrap();

    let row = env.finished(job, Duration::from_secs(30)).await;
    assert_eq!((row.0.as_str(), row.1, row.2), ("completed", 5, 1), "completed once, exactly: {row:?}");
    let epoch: i64 = sqlx::query_scalar("SELECT lease_epoch FROM job_results WHERE job_id = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(epoch, renewals.epoch, "no second start");
    assert_eq!(status_counts(&env).await.values().sum::<i64>(), 1, "one job");
    assert_eq!(count_images(&env.pool).await, 0);
    assert_eq!(crate::harness::files_under(env.store.root()), 0, "the files are gone");
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// A running job's lease, as the test reads it.
#[derive(Debug, sqlx::FromRow)]
struct LeaseRow {
    status: String,
    attempts: i32,
    deleted_count: i64,
    epoch: i64,
    expires_at: chrono::DateTime<chrono::Utc>,
    /// Whether the lease is still in the future by the database's clock.
    fresh: bool,
}

async fn lease_of(pool: &PgPool, job: Uuid) -> LeaseRow {
    sqlx::query_as(
        "SELECT status, attempts, deleted_count, lease_epoch AS epoch, lease_expires_at AS expires_at,
                coalesce(lease_expires_at > now(), false) AS fresh
         FROM job_results WHERE job_id = $1",
    )
    .bind(job)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Polls the lease of a job blocked in its phase until its expiry has moved
/// `leases` lease lengths past its first value (so the job has been blocked
/// that long). At every poll the job must be on its first start, `running`,
/// with nothing deleted and a fresh lease. Returns the last row.
async fn watch_the_lease(pool: &PgPool, job: Uuid, leases: u32) -> LeaseRow {
    let lease = Duration::from_secs(2); // QUICK's JANITOR_LEASE
    let first = lease_of(pool, job).await;
    let target = first.expires_at + lease * leases;
    let deadline = Instant::now() + lease * (leases + 5);
    let (mut last, mut advances) = (first.expires_at, 0);
    loop {
        let now = lease_of(pool, job).await;
        let first_start = (now.status.as_str(), now.attempts, now.deleted_count, now.epoch);
        assert_eq!(first_start, ("running", 1, 0, first.epoch), "still on its first start, blocked: {now:?}");
        assert!(now.fresh, "the lease went stale after {advances} renewals: {now:?}");
        assert!(now.expires_at >= last, "the lease never moves back: {now:?}");
        advances += usize::from(now.expires_at > last);
        last = now.expires_at;
        if now.expires_at >= target {
            assert!(advances >= leases as usize, "renewed step by step, {advances} times");
            eprintln!("the lease was renewed {advances} times while the phase was blocked");
            return now;
        }
        assert!(Instant::now() < deadline, "the lease stopped moving at {last} (target {target}): {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lock requests on `images` in this database that are waiting.
async fn waiting_on_images(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE relation = 'images'::regclass AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Makes every delete of an image fail, so that a job fails on its own.
async fn refuse_deletes(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'deletes are refused by the test'; END $$;
         CREATE TRIGGER refuse BEFORE DELETE ON images FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(pool)
    .await
    .unwrap();
}
