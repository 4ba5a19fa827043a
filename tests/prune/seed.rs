//! Records of every kind janitor keeps, at chosen ages, and what is left of
//! them.

use janitor_workers::layout::{Lane, Layout};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::Env;

/// A job row of `operation` with `status`, finished `days` ago (`None`: no
/// `finished_at`, as a queued or running job has), created long before.
pub async fn job(pool: &PgPool, operation: &str, status: &str, finished_days_ago: Option<f64>) -> Uuid {
    let job_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, finished_at, created_at, updated_at)
         VALUES ($1, $2, $3, now() - make_interval(secs => $4 * 86400), now() - interval '400 days',
                 now() - interval '400 days')",
    )
    .bind(job_id)
    .bind(operation)
    .bind(status)
    .bind(finished_days_ago)
    .execute(pool)
    .await
    .expect("insert job row");
    job_id
}

pub async fn job_exists(pool: &PgPool, job_id: Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job_results WHERE job_id = $1)")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// An audit log row `days` old; returns its id.
pub async fn audit(pool: &PgPool, days: f64) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO audit_log (at, method, path, status, outcome)
         VALUES (now() - make_interval(secs => $1 * 86400), 'POST', '/api/v1/admin/cleanup/expired', 202, 'accepted')
         RETURNING id",
    )
    .bind(days)
    .fetch_one(pool)
    .await
    .expect("insert audit row")
}

pub async fn audit_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id").fetch_all(pool).await.unwrap()
}

/// A tick of `schedule` (on the queue `janitor`), scheduled `days` ago,
/// `enqueued` or `skipped`.
pub async fn tick(pool: &PgPool, schedule: &str, days: i32, outcome: &str) {
    sqlx::query(
        "INSERT INTO schedule_ticks (queue, schedule, scheduled_at, job_id, outcome)
         VALUES ('janitor', $1, date_trunc('second', now()) - make_interval(days => $2), gen_random_uuid(), $3)",
    )
    .bind(schedule)
    .bind(days)
    .bind(outcome)
    .execute(pool)
    .await
    .expect("insert tick");
}

/// The ticks left, as (schedule, whole days ago), oldest first.
pub async fn ticks(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT schedule, round(extract(epoch FROM now() - scheduled_at) / 86400)::int FROM schedule_ticks
         ORDER BY schedule, scheduled_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Orphan candidates spilled by `job_id`.
pub async fn candidates(pool: &PgPool, job_id: Uuid, count: i32) {
    sqlx::query(
        "INSERT INTO janitor_orphan_candidates (job_id, path, size)
         SELECT $1, 'photos/c/' || i || '.jpg', 10 FROM generate_series(1, $2) AS i",
    )
    .bind(job_id)
    .bind(count)
    .execute(pool)
    .await
    .expect("insert candidates");
}

pub async fn count_candidates(pool: &PgPool, job_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM janitor_orphan_candidates WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// An unlink intent of `job_id`: files whose rows that job deleted.
pub async fn intent(pool: &PgPool, job_id: Uuid, batch: i64, paths: &[&str]) {
    let ids: Vec<i64> = (1..=paths.len() as i64).collect();
    sqlx::query("INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ($1, $2, $3, $4)")
        .bind(job_id)
        .bind(batch)
        .bind(&ids)
        .bind(paths)
        .execute(pool)
        .await
        .expect("insert intent");
}

pub async fn intent_batches(pool: &PgPool, job_id: Uuid) -> Vec<i64> {
    sqlx::query_scalar("SELECT batch FROM janitor_unlink_intents WHERE job_id = $1 ORDER BY batch")
        .bind(job_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The dead-letter stream of the lane named `lane`.
fn dead_key(env: &Env, lane: &str) -> String {
    let lane = Lane::ALL.into_iter().find(|l| l.name() == lane).expect("a lane's name");
    Layout::new(&env.prefix).dead(lane)
}

/// Adds a dead letter to `lane`'s dead-letter stream, dead-lettered `days`
/// ago (the entry id's milliseconds). Entries must be added oldest first.
pub async fn dead_letter(env: &Env, lane: &str, days: f64) -> String {
    let ms = chrono::Utc::now().timestamp_millis() - (days * 86_400_000.0) as i64;
    let mut redis = env.redis().await;
    redis::cmd("XADD")
        .arg(dead_key(env, lane))
        .arg(format!("{ms}-*"))
        .arg("job")
        .arg(r#"{"op":"expired"}"#)
        .arg("reason")
        .arg("test")
        .query_async(&mut redis)
        .await
        .expect("xadd dead letter")
}

pub async fn dead_letters(env: &Env, lane: &str) -> Vec<String> {
    let mut redis = env.redis().await;
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(dead_key(env, lane)).arg("-").arg("+").query_async(&mut redis).await.unwrap();
    reply.ids.into_iter().map(|entry| entry.id).collect()
}

/// Records `job` in the queue's ids hash, as enqueueing does.
pub async fn queue_id(env: &Env, job: &str) {
    let mut redis = env.redis().await;
    let () = redis::cmd("HSET")
        .arg(Layout::new(&env.prefix).ids())
        .arg(job)
        .arg("1700000000000-0")
        .query_async(&mut redis)
        .await
        .unwrap();
}

pub async fn queue_ids(env: &Env) -> Vec<String> {
    let mut redis = env.redis().await;
    let mut ids: Vec<String> =
        redis::cmd("HKEYS").arg(Layout::new(&env.prefix).ids()).query_async(&mut redis).await.unwrap();
    ids.sort();
    ids
}

/// Runs `janitor prune <args> --json`, expects `code`, returns the result.
pub async fn prune(env: &Env, args: &[&str], code: i32) -> Value {
    let (exit, stdout, stderr) = env.janitor(&[&["prune", "--json"], args].concat()).await;
    assert_eq!(exit, code, "janitor prune exited {exit}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}"))
}

/// The counts per kind of a prune result, as `(kind, count)` with the
/// zeroes left out.
pub fn pruned(result: &Value) -> Vec<(String, i64)> {
    let counts = result["pruned"].as_object().unwrap_or_else(|| panic!("no counts per kind in {result}"));
    let mut counts: Vec<(String, i64)> =
        counts.iter().map(|(kind, n)| (kind.clone(), n.as_i64().unwrap())).filter(|(_, n)| *n != 0).collect();
    counts.sort();
    counts
}

/// `[(kind, count)]` for comparing with [`pruned`].
pub fn counts(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut counts: Vec<(String, i64)> = expected.iter().map(|(kind, n)| ((*kind).to_owned(), *n)).collect();
    counts.sort();
    counts
}
