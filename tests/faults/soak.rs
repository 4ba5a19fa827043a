//! A bounded soak: logouts arrive continuously (session jobs through the
//! producer, each with its images), while an `all` job and an orphan sweep
//! run; midway the worker running the `all` job is killed with `kill -9`
//! and a new one started. At the end no job is lost, the counts add up
//! exactly to what left the database and the storage, and the surviving
//! worker's memory stayed flat.

use std::time::{Duration, Instant};

use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use janitor_workers::{CleanupJob, DaysOld, JobSpec, SessionId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::fixtures::{quarantined_files, seed_expired, stored_files};
use crate::harness::{Env, Worker};
use crate::process::rss_kib;
use crate::support::{count_images, insert_task, TaskImages};

/// How long logouts keep coming; the worker is killed halfway.
const SOAK: Duration = Duration::from_secs(120);
const LOGOUTS_PER_SEC: u64 = 5;
/// Per session: two expired temporary images (which the `all` job may
/// also take) and two permanent ones.
const IMAGES_PER_SESSION: i32 = 4;
/// The `all` job's expired phase, long enough to span the kill.
const EXPIRED: usize = 8000;
const OLD_RESULTS: usize = 300;
/// The orphan sweep's files, backdated past the grace period.
const ORPHANS: usize = 4000;
/// Rows that must survive: fresh temporary, and expired but in use.
const FRESH: usize = 100;
const IN_USE: usize = 20;
const SIZE: i64 = 10;
const ORPHAN_SIZE: i64 = 7;
/// When the survivor's memory is first sampled (after warm-up).
const WARM_UP: Duration = Duration::from_secs(15);

const WORKER: [(&str, &str); 8] = [
    ("JANITOR_LEASE", "3s"),
    ("JANITOR_RECONCILE_INTERVAL", "1s"),
    ("JANITOR_RETRY_BASE", "200ms"),
    ("JANITOR_BATCH_SIZE", "50"),
    ("JANITOR_MAX_DELETES_PER_SEC", "100"),
    // Most files here are orphans on purpose.
    ("JANITOR_MAX_ORPHAN_RATIO", "1"),
    ("JANITOR_DB_CONNECTIONS", "10"),
    // The orphans are made old by waiting, so the grace period is short.
    ("JANITOR_MIN_GRACE", "1s"),
];

/// The orphan grace period of the soak's sweeps.
const GRACE: Duration = Duration::from_secs(1);

/// Seeds everything but the sessions; returns the number of rows that must
/// survive.
async fn seed(env: &Env) -> i64 {
    seed_expired(&env.pool, &env.store, "bulk", EXPIRED, SIZE).await;
    let orphans: Vec<String> = (0..ORPHANS).map(|i| format!("templates/orphans/{}/{i}.png", i / 200)).collect();
    for path in &orphans {
        env.store.write(path, ORPHAN_SIZE as usize);
    }
    let orphans: Vec<&str> = orphans.iter().map(String::as_str).collect();
    env.store.wait_until_older(&orphans, GRACE).await;
    for i in 0..OLD_RESULTS {
        env.store.write(&format!("results/old/{i}.png"), SIZE as usize);
    }
    sqlx::query(
        "WITH img AS (
             INSERT INTO images (filename, storage_path, category, storage_type, file_size)
             SELECT i || '.png', 'results/old/' || i || '.png', 'results', 'permanent', $2
             FROM generate_series(0, $1 - 1) AS i RETURNING id)
         INSERT INTO face_swap_tasks (result_image_id, status, completed_at)
         SELECT id, 'completed', now() - interval '40 days' FROM img",
    )
    .bind(OLD_RESULTS as i32)
    .bind(SIZE)
    .execute(&env.pool)
    .await
    .unwrap();
    for i in 0..FRESH {
        let image = crate::support::Image::fresh(&format!("photos/fresh/{i}.jpg"), SIZE);
        crate::support::insert_image(&env.pool, Some(&env.store), &image).await;
    }
    for i in 0..IN_USE {
        let image = crate::support::Image::expired(&format!("photos/in-use/{i}.jpg"), SIZE);
        let id = crate::support::insert_image(&env.pool, Some(&env.store), &image).await;
        insert_task(&env.pool, "pending", TaskImages { husband: Some(id), ..TaskImages::default() }, None).await;
    }
    (FRESH + IN_USE) as i64
}

/// A logout: the session's images (files first, as the app writes them),
/// then its cleanup job.
async fn logout(env: &Env, producer: &Producer, n: u64) -> Uuid {
    let session = format!("soak-{n}");
    for i in 0..IMAGES_PER_SESSION {
        env.store.write(&format!("photos/sessions/{session}/{i}.jpg"), SIZE as usize);
    }
    sqlx::query(
        "INSERT INTO images (filename, storage_path, category, storage_type, session_id, file_size, expires_at)
         SELECT i || '.jpg', 'photos/sessions/' || $1 || '/' || i || '.jpg', 'photos',
                CASE WHEN i % 2 = 0 THEN 'temporary' ELSE 'permanent' END, $1, $3,
                CASE WHEN i % 2 = 0 THEN now() - interval '1 hour' END
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(&session)
    .bind(IMAGES_PER_SESSION)
    .bind(SIZE)
    .execute(&env.pool)
    .await
    .unwrap();
    let job = CleanupJob::Session { session_id: SessionId::parse(&session).unwrap() };
    let enqueued = producer.enqueue(&JobSpec::new(job, false), Some("soak")).await.expect("enqueue a logout");
    assert!(!enqueued.deduplicated, "every session is new");
    enqueued.job_id
}

/// Which worker (by pid) runs the job now, if any.
async fn runner(pool: &PgPool, job_id: Uuid, workers: &[&Worker]) -> Option<usize> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT worker FROM job_results WHERE job_id = $1 AND status = 'running'")
            .bind(job_id)
            .fetch_optional(pool)
            .await
            .unwrap()
            .flatten();
    let name = name?;
    workers.iter().position(|w| name.ends_with(&format!("-{}", w.pid())))
}

/// What the load phase did, for the checks and the figures.
struct Load {
    /// Every job enqueued: the `all` job first, the sweep, then the logouts.
    jobs: Vec<Uuid>,
    logouts: u64,
    /// The killed worker's pid and when it was killed.
    killed: (u32, Duration),
    /// The worker that ran from start to end.
    survivor: u32,
    /// (elapsed, pid, VmRSS KiB) of the live workers, every 15 s after warm-up.
    rss: Vec<(Duration, u32, u64)>,
}

/// Logouts at [`LOGOUTS_PER_SEC`] for [`SOAK`]; halfway, the worker running
/// the `all` job (so a bulk job is certainly interrupted) is killed and a
/// new one started.
async fn drive(env: &Env, producer: &Producer, workers: &mut Vec<Worker>, mut jobs: Vec<Uuid>) -> Load {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / LOGOUTS_PER_SEC));
    let (mut logouts, mut killed, mut survivor, mut rss) = (0u64, None, None, Vec::new());
    while started.elapsed() < SOAK {
        ticks.tick().await;
        jobs.push(logout(env, producer, logouts).await);
        logouts += 1;
        let at = started.elapsed();
        if logouts % (15 * LOGOUTS_PER_SEC) == 0 || (at >= WARM_UP && rss.is_empty()) {
            rss.extend(workers.iter().map(|w| (at, w.pid(), rss_kib(w.pid()))));
        }
        if killed.is_none() && at >= SOAK / 2 {
            let refs: Vec<&Worker> = workers.iter().collect();
            let victim = runner(&env.pool, jobs[0], &refs).await.expect("the all job is running at the kill");
            let worker = workers.remove(victim);
            killed = Some((worker.pid(), at));
            survivor = Some(workers[0].pid());
            worker.kill9().await;
            workers.push(env.worker(&[], &WORKER));
        }
    }
    Load { jobs, logouts, killed: killed.unwrap(), survivor: survivor.unwrap(), rss }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_soak_with_a_killed_worker_loses_no_job_and_counts_exactly(pool: PgPool) {
    let env = Env::new(pool);
    let protected = seed(&env).await;
    let redis = redis::Client::open(env.redis_url.as_str()).unwrap();
    let producer = Producer::connect(env.pool.clone(), redis, Layout::new(&env.prefix)).await.unwrap();
    let mut workers = vec![env.worker(&[], &WORKER), env.worker(&[], &WORKER)];
    let all = CleanupJob::All { days_old: DaysOld::new(30).unwrap(), min_age_secs: GRACE.as_secs() };
    let sweep = CleanupJob::Orphaned { min_age_secs: GRACE.as_secs() };
    let mut jobs = Vec::new();
    for job in [all, sweep] {
        jobs.push(producer.enqueue(&JobSpec::new(job, false), Some("soak")).await.unwrap().job_id);
    }

    let started = Instant::now();
    let mut load = drive(&env, &producer, &mut workers, jobs).await;
    let load_ended = started.elapsed();
    let statuses = wait_for_all(&env.pool, &load.jobs, Duration::from_secs(150)).await;
    let drained = started.elapsed();
    load.rss.extend(workers.iter().map(|w| (drained, w.pid(), rss_kib(w.pid()))));
    eprintln!(
        "soak: {} jobs ({} logouts at {LOGOUTS_PER_SEC}/s, 1 all, 1 orphan sweep), {load_ended:?} of load, \
         all finished after {drained:?}; worker killed (pid, at) {:?}; statuses {statuses:?}",
        load.jobs.len(),
        load.logouts,
        load.killed
    );
    assert_eq!(statuses, vec![("completed".to_owned(), load.jobs.len() as i64)], "no job lost or failed");
    check_counts(&env, &load, protected).await;
    check_memory(&load);

    for worker in workers {
        worker.signal("TERM").await;
        assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    }
    env.cleanup_keys().await;
}

/// What the jobs counted is exactly what left the database and the storage.
async fn check_counts(env: &Env, load: &Load, protected: i64) {
    let (deleted, bytes): (i64, i64) = sqlx::query_as(
        "SELECT sum(deleted_count)::bigint, sum(deleted_bytes)::bigint FROM job_results WHERE job_id = ANY($1)",
    )
    .bind(&load.jobs)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let all: (String, i64, i64, i32) =
        sqlx::query_as("SELECT status, deleted_count, error_count, attempts FROM job_results WHERE job_id = $1")
            .bind(load.jobs[0])
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let rows = (EXPIRED + OLD_RESULTS) as i64 + load.logouts as i64 * i64::from(IMAGES_PER_SESSION);
    let quarantined = quarantined_files(&env.store);
    eprintln!(
        "soak: all job (status, deleted, errors, attempts) {all:?}; deleted {deleted} ({rows} rows + {ORPHANS} \
         orphans), {bytes} bytes; {quarantined} orphans quarantined"
    );
    assert!(all.3 >= 2, "the all job was resumed after the kill: {all:?}");
    assert_eq!(deleted, rows + ORPHANS as i64, "counts add up exactly");
    assert_eq!(bytes, rows * SIZE + ORPHANS as i64 * ORPHAN_SIZE, "bytes add up exactly");
    assert_eq!(count_images(&env.pool).await, protected, "exactly the protected rows stay");
    assert_eq!(stored_files(&env.store), protected as usize, "exactly the protected rows' files stay");
    assert!(quarantined == 0 || quarantined == ORPHANS, "orphans quarantined once each: {quarantined}");
}

/// The surviving worker's resident memory stayed flat after warm-up.
fn check_memory(load: &Load) {
    eprintln!("soak: RSS samples (elapsed, pid, KiB) {:?}", load.rss);
    let samples: Vec<u64> =
        load.rss.iter().filter(|(_, pid, _)| *pid == load.survivor).map(|(_, _, kib)| *kib).collect();
    assert!(samples.len() >= 3, "{:?}", load.rss);
    let (warm, end) = (samples[0], *samples.last().unwrap());
    assert!((end as f64) < 1.5 * warm as f64, "the survivor's memory grew from {warm} KiB to {end} KiB");
}

/// Waits until every job has a final row; returns the count per status.
async fn wait_for_all(pool: &PgPool, jobs: &[Uuid], timeout: Duration) -> Vec<(String, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM job_results WHERE job_id = ANY($1) GROUP BY status ORDER BY status",
        )
        .bind(jobs)
        .fetch_all(pool)
        .await
        .unwrap();
        let unfinished = statuses.iter().any(|(status, _)| status == "queued" || status == "running");
        if !unfinished && statuses.iter().map(|(_, n)| n).sum::<i64>() == jobs.len() as i64 {
            return statuses;
        }
        assert!(Instant::now() < deadline, "jobs still unfinished after {timeout:?}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
