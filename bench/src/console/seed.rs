//! The history the console bench reads: job rows with the mix of a
//! deployment that has run a while, audit rows, schedule ticks and dead
//! letters. Rows are inserted with `INSERT … SELECT FROM generate_series`,
//! so the triggers keep the counters exactly as in production.

use anyhow::Context as _;
use janitor_workers::layout::{Lane, Layout};
use sqlx::PgPool;

/// Rows per statement.
const CHUNK: i64 = 100_000;

/// Job `i` was created `5 i` seconds ago (a million jobs span 58 days). Its
/// columns come from independent hashes of `i`, so that filters combine
/// as they would in life: 90% session jobs (asked for by the `app`, 1%
/// without a requester), the bulk operations by the scheduler (60%), `ops`
/// (30%), `cron` and, rarely, `alice`; 95.5% completed, 2% failed, 1.5%
/// skipped, 1% cancelled; the newest 200 queued or running. `$3` is the
/// queue's name.
const JOBS: &str = "
INSERT INTO job_results (job_id, operation, params, status, dry_run, deleted_count, deleted_bytes,
    skipped_count, error_count, attempts, lease_epoch, requested_by, queue, last_error, errors, checkpoint,
    created_at, started_at, updated_at, finished_at)
SELECT gen_random_uuid(), op, '{}'::jsonb, st, op <> 'cleanup_session' AND r4 < 20,
       CASE WHEN op = 'cleanup_session' THEN r4 % 12 ELSE r4 * 37 END,
       CASE WHEN op = 'cleanup_session' THEN (r4 % 12) * 350000 ELSE r4 * 37 * 400000 END,
       r4 % 3, (st = 'failed')::int, 1 + (r2 % 50 = 0)::int, 1 + (r2 % 50 = 0)::int,
       CASE WHEN op = 'cleanup_session' THEN (CASE WHEN r3 < 990 THEN 'app' END)
            WHEN r3 < 600 THEN 'scheduler' WHEN r3 < 900 THEN 'ops' WHEN r3 < 995 THEN 'cron' ELSE 'alice' END,
       $3, CASE WHEN st = 'failed' THEN 'storage error' END,
       CASE WHEN st = 'failed' THEN jsonb_build_array(jsonb_build_object('image_id', i, 'path',
            'photos/' || i || '.jpg', 'error', 'permission denied', 'operation', op)) ELSE '[]'::jsonb END,
       CASE WHEN st <> 'queued' THEN jsonb_build_object('batch_seconds',
            jsonb_build_array(r4 % 2, 1, 0, 0, 0, 0, 0, 0, 0, 0), 'batch_seconds_sum', 0.02) END,
       at, CASE WHEN st <> 'queued' THEN at + interval '200 ms' END, at + interval '2 s',
       CASE WHEN st NOT IN ('queued', 'running') THEN at + interval '2 s' END
FROM (
    SELECT i, at, r2, r3, r4,
           CASE WHEN i = 3 THEN 'cleanup_all' WHEN i < 200 OR r1 < 900 THEN 'cleanup_session'
                WHEN r1 < 940 THEN 'cleanup_expired_images' WHEN r1 < 960 THEN 'cleanup_old_results'
                WHEN r1 < 975 THEN 'cleanup_orphaned_files' WHEN r1 < 985 THEN 'cleanup_all'
                WHEN r1 < 993 THEN 'cleanup_trash' ELSE 'prune_records' END AS op,
           CASE WHEN i < 20 THEN 'running' WHEN i < 200 THEN 'queued'
                WHEN r2 < 955 THEN 'completed' WHEN r2 < 975 THEN 'failed' WHEN r2 < 990 THEN 'skipped'
                ELSE 'cancelled' END AS st
    FROM (
        SELECT i, now() - make_interval(secs => i * 5) AS at,
               abs(hashint8(i)::bigint) % 1000 AS r1, abs(hashint8(i * 31 + 7)::bigint) % 1000 AS r2,
               abs(hashint8(i * 17 + 3)::bigint) % 1000 AS r3, abs(hashint8(i * 13 + 5)::bigint) % 1000 AS r4
        FROM generate_series($1::bigint, $2::bigint - 1) AS i
    ) AS h
) AS j";

/// One audit row for every ten jobs, one every 50 seconds.
const AUDIT: &str = "
INSERT INTO audit_log (at, actor, method, path, params, status, outcome, job_id, remote)
SELECT now() - make_interval(secs => i * 50), (ARRAY['ops', 'cron', 'viewer', NULL])[1 + i % 4],
       (ARRAY['POST', 'GET'])[1 + i % 2], '/api/v1/admin/cleanup/session/s-' || i, '{}'::jsonb,
       (ARRAY[202, 200, 401, 429])[1 + i % 4], (ARRAY['accepted', 'accepted', 'unauthorized', 'rate_limited'])[1 + i % 4],
       NULL, '10.0.0.' || (i % 250) || ':4711'
FROM generate_series($1::bigint, $2::bigint - 1) AS i";

/// A tick a day for the last 60 days of each default schedule.
const TICKS: &str = "
INSERT INTO schedule_ticks (queue, schedule, scheduled_at, job_id, outcome, recorded_by)
SELECT $1, s.name, date_trunc('day', now()) - make_interval(days => d), gen_random_uuid(), 'enqueued', 'bench'
FROM unnest($2::text[]) AS s(name), generate_series(1, 60) AS d";

/// Seeds `jobs` job rows, a tenth as many audit rows and the ticks, in the
/// queue `queue`; then vacuums and analyses, as a database that has lived
/// with these rows would be.
pub async fn rows(pool: &PgPool, jobs: i64, queue: &str) -> anyhow::Result<()> {
    let mut from = 0;
    while from < jobs {
        let to = (from + CHUNK).min(jobs);
        sqlx::query(JOBS).bind(from).bind(to).bind(queue).execute(pool).await.context("seed job_results")?;
        from = to;
    }
    let audits = jobs / 10;
    let mut from = 0;
    while from < audits {
        let to = (from + CHUNK).min(audits);
        sqlx::query(AUDIT).bind(from).bind(to).execute(pool).await.context("seed audit_log")?;
        from = to;
    }
    let schedules: Vec<String> =
        janitor_workers::schedule::Schedule::defaults().into_iter().map(|schedule| schedule.name).collect();
    sqlx::query(TICKS).bind(queue).bind(&schedules).execute(pool).await.context("seed schedule_ticks")?;
    sqlx::raw_sql("VACUUM ANALYZE job_results, job_counters, audit_log, schedule_ticks").execute(pool).await?;
    Ok(())
}

/// `per_lane` dead letters in each lane, of failed job rows, as the
/// worker writes them: the message, the reason and the attempts.
pub async fn dead_letters(pool: &PgPool, redis: &redis::Client, layout: &Layout, per_lane: i64) -> anyhow::Result<()> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    for (lane, operation, message) in [
        (Lane::Session, "cleanup_session", r#""op":"session","session_id":"bench""#),
        (Lane::Bulk, "cleanup_expired_images", r#""op":"expired""#),
    ] {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT job_id FROM job_results WHERE status = 'failed' AND operation = $1
             ORDER BY created_at DESC LIMIT $2",
        )
        .bind(operation)
        .bind(per_lane)
        .fetch_all(pool)
        .await?;
        for id in ids {
            let job = format!(r#"{{"job_id":"{id}",{message}}}"#);
            redis::cmd("XADD")
                .arg(layout.dead(lane))
                .arg("*")
                .arg(&[("job", job.as_str()), ("reason", "storage error after 5 attempts"), ("attempts", "5")])
                .query_async::<String>(&mut conn)
                .await?;
        }
    }
    Ok(())
}
