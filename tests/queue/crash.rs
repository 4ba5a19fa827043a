//! Workers that die or fail: a worker killed with `kill -9` in the middle of
//! a job (a new worker, or one already running, finishes it), a job that
//! fails on every attempt (a poison pill), and a job that kills its worker
//! on every attempt. Attempts stay bounded, the worker process survives what
//! it can survive, and every count is checked against what is really left in
//! `images` and on disk.

use std::time::Duration;

use janitor_workers::layout::Lane;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{files_under, wait_for_job, wait_until, Env, JobRow};
use crate::support::{count_images, insert_image, Image};

/// Expired images seeded for a slow job: at [`SLOW`]'s pace (20 a batch,
/// 200 a second) a whole run takes about five seconds.
pub(super) const SEEDED: usize = 1000;
/// Bytes per seeded file.
pub(super) const SIZE: i64 = 10;
/// Rows per batch in [`SLOW`]: a crash between a batch's commit and its
/// unlinks leaves at most this many files behind as unlink intents.
const BATCH: usize = 20;

/// Small batches and a deletion rate, so a job runs long enough to interrupt.
pub(super) const SLOW: [(&str, &str); 2] = [("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "200")];

/// [`SLOW`] plus a short lease (a dead worker's job is rescued after 2 s)
/// and a quick reconciler, and `extra` settings.
fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("JANITOR_LEASE", "2s"), ("JANITOR_RECONCILE_INTERVAL", "500ms")];
    all.extend(SLOW);
    all.extend_from_slice(extra);
    all
}

/// Seeds `count` expired temporary images of [`SIZE`] bytes, with their files.
pub(super) async fn seed_slow_job(env: &Env, count: usize) {
    crate::support::seed_expired_in(&env.pool, &env.store, "slow", count, SIZE).await;
    assert_eq!(count_images(&env.pool).await, count as i64);
}

/// Whether a `worker` column names the process `pid` (`<host>-<pid>`).
pub(super) fn run_by(row: &JobRow, pid: u32) -> bool {
    row.3.as_deref().is_some_and(|worker| worker.ends_with(&format!("-{pid}")))
}

/// The job's `deleted_bytes`: with `deleted_count`, what shows that nothing
/// was counted twice.
pub(super) async fn deleted_bytes(env: &Env, job_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT deleted_bytes FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Checks that every file is accounted for after crashes: each remaining
/// row still has its file, and each file without a row is recorded in
/// `janitor_unlink_intents` (at most `max_pending` of them).
async fn assert_files_tracked(env: &Env, max_pending: usize) {
    use std::collections::BTreeSet;
    let root = env.store.root();
    let files: BTreeSet<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    let rows: BTreeSet<String> =
        sqlx::query_scalar("SELECT storage_path FROM images").fetch_all(&env.pool).await.unwrap().into_iter().collect();
    let intents: BTreeSet<String> = sqlx::query_scalar("SELECT unnest(paths) FROM janitor_unlink_intents")
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<&String> = rows.difference(&files).take(5).collect();
    assert!(lost.is_empty(), "rows whose file is gone: {lost:?}");
    let untracked: Vec<&String> = files.difference(&rows).filter(|f| !intents.contains(*f)).take(5).collect();
    assert!(untracked.is_empty(), "files with neither a row nor an unlink intent: {untracked:?}");
    let pending = files.difference(&rows).count();
    assert!(pending <= max_pending, "{pending} files wait on unlink intents, more than {max_pending}");
}

/// The entries of a stream, each as its field/value pairs.
async fn stream_entries(env: &Env, key: &str) -> Vec<Vec<(String, String)>> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut env.redis().await).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            entry.map.keys().map(|field| (field.clone(), entry.get::<String>(field).unwrap_or_default())).collect()
        })
        .collect()
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> &'a str {
    entry.iter().find(|(field, _)| field == name).map_or("", |(_, value)| value.as_str())
}

/// Entries of the bulk stream that some consumer still holds.
async fn bulk_pending(env: &Env) -> i64 {
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(env.layout().stream(Lane::Bulk))
        .arg("workers")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    reply.count() as i64
}

/// Asserts a completed slow job deleted exactly what was seeded, once.
async fn assert_all_cleaned(env: &Env, job_id: Uuid, row: &JobRow) {
    assert_eq!(row.0, "completed", "{row:?}");
    assert_eq!(row.1, SEEDED as i64, "deleted_count counts every row once");
    assert_eq!(deleted_bytes(env, job_id).await, SEEDED as i64 * SIZE);
    assert_eq!(count_images(&env.pool).await, 0, "image rows left");
    assert_eq!(files_under(env.store.root()), 0, "files left");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_whose_worker_is_killed_is_finished_by_a_new_worker(pool: PgPool) {
    a_job_whose_worker_is_killed_is_finished_by_a_new_worker_on(Env::new(pool)).await;
}

/// The scenario of [`a_job_whose_worker_is_killed_is_finished_by_a_new_worker`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_job_whose_worker_is_killed_is_finished_by_a_new_worker_on(env: Env) {
    seed_slow_job(&env, SEEDED).await;
    let a = env.worker(&[], &settings(&[]));
    let job_id = env.enqueue(&["expired"]).await;
    let mid = wait_for_job(&env.pool, job_id, "worker A has deleted some rows", Duration::from_secs(15), |r| {
        r.0 == "running" && r.1 > 0
    })
    .await;
    assert!(run_by(&mid, a.pid()), "{mid:?}");

    a.kill9().await;
    let killed = env.job(job_id).await.unwrap();
    assert_eq!(killed.0, "running", "{killed:?}");
    assert!(killed.1 < SEEDED as i64, "A was killed mid-job: {killed:?}");
    let b = env.worker(&[], &settings(&[]));

    let row = env.finished(job_id, Duration::from_secs(30)).await;
    assert_all_cleaned(&env, job_id, &row).await;
    assert!(row.2 >= 2, "the rerun is a new attempt: {row:?}");
    assert!(run_by(&row, b.pid()), "B finished it: {row:?}");
    assert_eq!(bulk_pending(&env).await, 0, "the entry was acknowledged");

    b.signal("TERM").await;
    assert_eq!(b.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_running_worker_rescues_the_job_of_a_killed_one(pool: PgPool) {
    a_running_worker_rescues_the_job_of_a_killed_one_on(Env::new(pool)).await;
}

/// The scenario of [`a_running_worker_rescues_the_job_of_a_killed_one`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_running_worker_rescues_the_job_of_a_killed_one_on(env: Env) {
    seed_slow_job(&env, SEEDED).await;
    let first = env.worker(&[], &settings(&[]));
    let second = env.worker(&[], &settings(&[]));
    let job_id = env.enqueue(&["expired"]).await;
    let mid = wait_for_job(&env.pool, job_id, "a worker has deleted some rows", Duration::from_secs(15), |r| {
        r.0 == "running" && r.1 > 0
    })
    .await;
    let (victim, survivor) = if run_by(&mid, first.pid()) {
        (first, second)
    } else {
        assert!(run_by(&mid, second.pid()), "{mid:?}");
        (second, first)
    };

    victim.kill9().await;
    // No new worker: the survivor's rescue pass must find the dead lease.
    let row = env.finished(job_id, Duration::from_secs(30)).await;
    assert_all_cleaned(&env, job_id, &row).await;
    assert!(row.2 >= 2, "{row:?}");
    assert!(run_by(&row, survivor.pid()), "the survivor finished it: {row:?}");

    survivor.signal("TERM").await;
    assert_eq!(survivor.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

/// Makes every delete of an image under `photos/poison/` fail.
async fn install_poison(pool: &PgPool) {
    sqlx::query(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.storage_path LIKE 'photos/poison/%' THEN
                 RAISE EXCEPTION 'poison: % may not be deleted', OLD.storage_path;
             END IF;
             RETURN OLD;
         END $$",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER poison BEFORE DELETE ON images FOR EACH ROW EXECUTE FUNCTION poison()")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_that_fails_every_time_is_failed_and_dead_lettered_after_max_attempts(pool: PgPool) {
    a_job_that_fails_every_time_is_failed_and_dead_lettered_after_max_attempts_on(Env::new(pool)).await;
}

/// The scenario of [`a_job_that_fails_every_time_is_failed_and_dead_lettered_after_max_attempts`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_job_that_fails_every_time_is_failed_and_dead_lettered_after_max_attempts_on(env: Env) {
    for i in 0..5 {
        let image = Image::expired(&format!("photos/poison/{i}.jpg"), SIZE);
        insert_image(&env.pool, Some(&env.store), &image).await;
    }
    install_poison(&env.pool).await;
    let worker = env.worker(
        &[],
        &[
            ("JANITOR_LEASE", "2s"),
            ("JANITOR_MAX_ATTEMPTS", "3"),
            ("JANITOR_RETRY_BASE", "100ms"),
            ("JANITOR_RECONCILE_INTERVAL", "500ms"),
        ],
    );

    let job_id = env.enqueue(&["expired"]).await;
    let row = env.finished(job_id, Duration::from_secs(30)).await;
    assert_eq!(row.0, "failed", "{row:?}");
    assert_eq!(row.2, 3, "exactly max_attempts attempts: {row:?}");
    let last_error = row.4.clone().unwrap_or_default();
    assert!(last_error.contains("poison"), "{last_error}");
    assert_eq!(row.1, 0, "no batch ever committed: {row:?}");
    // Every delete rolled back, and no file was touched: files are unlinked
    // only after their batch commits.
    assert_eq!(count_images(&env.pool).await, 5);
    assert_eq!(files_under(env.store.root()), 5);

    let dead_key = env.layout().dead(Lane::Bulk);
    // The row is failed before the entry is dead-lettered (the handler
    // records the failure, then the queue settles the entry).
    crate::harness::wait_until("the entry is dead-lettered", Duration::from_secs(10), || async {
        !stream_entries(&env, &dead_key).await.is_empty()
    })
    .await;
    let dead = stream_entries(&env, &dead_key).await;
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let reason = field(&dead[0], "reason");
    assert!(reason.contains("poison"), "the dead letter says why: {dead:?}");
    assert!(field(&dead[0], "job").contains(&job_id.to_string()), "{dead:?}");
    assert_eq!(bulk_pending(&env).await, 0, "nothing left pending");

    // The worker survived its poison pill and still runs jobs.
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/s2/a.jpg", 7).session("s2")).await;
    let next = env.enqueue(&["session", "s2"]).await;
    let next_row = env.finished(next, Duration::from_secs(15)).await;
    assert_eq!((next_row.0.as_str(), next_row.1), ("completed", 1), "{next_row:?}");
    assert!(!env.store.exists("photos/s2/a.jpg"));
    let again = env.job(job_id).await.unwrap();
    assert_eq!((again.0.as_str(), again.2), ("failed", 3), "never run again: {again:?}");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_that_kills_its_worker_every_time_is_dead_lettered_and_failed(pool: PgPool) {
    a_job_that_kills_its_worker_every_time_is_dead_lettered_and_failed_on(Env::new(pool)).await;
}

/// The scenario of [`a_job_that_kills_its_worker_every_time_is_dead_lettered_and_failed`], on `env`'s Redis (one server or a cluster).
pub(crate) async fn a_job_that_kills_its_worker_every_time_is_dead_lettered_and_failed_on(env: Env) {
    seed_slow_job(&env, SEEDED).await;
    let crashy = settings(&[("JANITOR_MAX_ATTEMPTS", "2")]);
    let mut worker = env.worker(&[], &crashy);
    let job_id = env.enqueue(&["expired"]).await;

    for attempt in 1..=2 {
        let row =
            wait_for_job(&env.pool, job_id, &format!("attempt {attempt} has started"), Duration::from_secs(20), |r| {
                r.0 == "running" && r.2 >= attempt
            })
            .await;
        assert_eq!(row.2, attempt, "{row:?}");
        assert!(run_by(&row, worker.pid()), "{row:?}");
        // The job "crashes" its worker as soon as it starts.
        worker.kill9().await;
        worker = env.worker(&[], &crashy);
    }

    // The third worker must not run it a third time: it dead-letters the
    // entry, and its reconciler fails the row.
    let row = env.finished(job_id, Duration::from_secs(30)).await;
    assert_eq!(row.0, "failed", "{row:?}");
    assert_eq!(row.2, 2, "attempts are bounded by max_attempts: {row:?}");
    // Two paths may end it, and both are right: the third worker's rescue
    // dead-letters the entry (and the reconciler fails the row from the
    // dead letter), or the reconciler finds the lease expired first and
    // fails the row itself. Either way it never runs a third time.
    let last_error = row.4.clone().unwrap_or_default();
    let dead = stream_entries(&env, &env.layout().dead(Lane::Bulk)).await;
    if last_error.starts_with("dead-lettered") {
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(!field(&dead[0], "reason").is_empty(), "{dead:?}");
    } else {
        assert_eq!(last_error, "lost its worker on each of its 2 attempts", "{row:?}");
        assert!(dead.len() <= 1, "{dead:?}");
    }
    wait_until("nothing is left pending", Duration::from_secs(30), || async { bulk_pending(&env).await == 0 }).await;

    // What committed is exact. A crash can land between a batch's commit
    // (rows deleted, files recorded as unlink intents) and its unlinks, so
    // files may outlive their rows, but only as recorded intents (the prune
    // job unlinks them); no row ever loses its file.
    let rows_left = count_images(&env.pool).await;
    assert_eq!(rows_left, SEEDED as i64 - row.1, "{row:?}");
    assert_files_tracked(&env, 2 * BATCH).await;

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}
