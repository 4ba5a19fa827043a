//! Exactly once per tick, catch-up, overlap and bad configuration.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;

use crate::harness::{wait_until, Env};
use crate::support::seed_expired;
use crate::{db_now, scheduler, ticks, Config};

async fn job_rows(pool: &PgPool) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("SELECT job_id, status FROM job_results WHERE requested_by = 'scheduler:tick'")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn three_schedulers_give_each_tick_one_job(pool: PgPool) {
    let env = Env::new(pool);
    let config = Config::every(2, "expired");
    let worker = env.worker(&[], &[]);
    let schedulers: Vec<_> = (0..3).map(|_| scheduler(&env, &config, &[])).collect();
    wait_until("four ticks have run", Duration::from_secs(30), || async {
        job_rows(&env.pool).await.iter().filter(|(_, s)| s == "completed").count() >= 4
    })
    .await;
    for scheduler in schedulers {
        scheduler.signal("TERM").await;
        assert_eq!(scheduler.exit_code(Duration::from_secs(10)).await, Some(0));
    }
    worker.signal("TERM").await;

    let ticks = ticks(&env.pool).await;
    let jobs = job_rows(&env.pool).await;
    let distinct: HashSet<_> = ticks.iter().map(|t| t.0).collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick was recorded twice");
    assert_eq!(jobs.len(), ticks.len(), "one job row per tick: {ticks:?}");
    let tick_jobs: HashSet<_> = ticks.iter().map(|t| t.1).collect();
    assert!(jobs.iter().all(|(id, _)| tick_jobs.contains(id)));
    let gaps: Vec<_> = ticks.windows(2).map(|w| (w[1].0 - w[0].0).num_seconds()).collect();
    assert!(gaps.iter().all(|g| *g == 2), "no tick was missed: {gaps:?}");

    // `janitor schedules` shows the next fire time and the last run.
    let (code, stdout, stderr) = env.janitor(&["--config", config.path.to_str().unwrap(), "schedules", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let last = ticks.iter().rev().find(|t| t.2 == "enqueued").unwrap();
    assert_eq!(listed[0]["name"], "tick");
    assert_eq!(listed[0]["last_run"]["job_id"], last.1.to_string());
    assert!(listed[0]["next_fire"].is_string());
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_scheduler_killed_just_before_a_tick_changes_nothing(pool: PgPool) {
    let env = Env::new(pool);
    let config = Config::every(3, "expired");
    let worker = env.worker(&[], &[]);
    let mut schedulers: Vec<_> = (0..3).map(|_| scheduler(&env, &config, &[])).collect();
    wait_until("a first tick", Duration::from_secs(20), || async { !ticks(&env.pool).await.is_empty() }).await;
    let first = ticks(&env.pool).await[0].0;
    let next = first + chrono::Duration::seconds(3);
    // Just before the next tick, one replica dies without a word.
    wait_until("just before the next tick", Duration::from_secs(10), || async {
        db_now(&env.pool).await >= next - chrono::Duration::milliseconds(200)
    })
    .await;
    schedulers.pop().unwrap().kill9().await;
    wait_until("the next tick's job completes", Duration::from_secs(20), || async {
        let ticks = ticks(&env.pool).await;
        let Some(tick) = ticks.iter().find(|t| t.0 == next) else {
            return false;
        };
        env.job(tick.1).await.is_some_and(|row| row.0 == "completed")
    })
    .await;
    let at_next: Vec<_> = ticks(&env.pool).await.into_iter().filter(|t| t.0 == next).collect();
    assert_eq!(at_next.len(), 1);
    assert_eq!(at_next[0].2, "enqueued");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE job_id = $1")
        .bind(at_next[0].1)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    for scheduler in schedulers {
        scheduler.signal("TERM").await;
    }
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn missed_ticks_run_once_when_a_scheduler_comes_back(pool: PgPool) {
    let env = Env::new(pool);
    let config = Config::every(1, "expired");
    let worker = env.worker(&[], &[]);
    let first = scheduler(&env, &config, &[]);
    wait_until("a first tick", Duration::from_secs(10), || async { !ticks(&env.pool).await.is_empty() }).await;
    first.kill9().await;
    let last_seen = ticks(&env.pool).await.last().unwrap().0;
    // The jobs of the ticks seen so far end first: one still queued when the
    // scheduler comes back (a worker slow to start on a loaded machine)
    // would make the catch-up an overlap, which is another test's case.
    wait_until("the seen ticks' jobs ended", Duration::from_secs(30), || async {
        job_rows(&env.pool).await.iter().all(|(_, status)| status != "queued" && status != "running")
    })
    .await;
    // Every scheduler is down across several ticks.
    wait_until("three ticks pass unseen", Duration::from_secs(10), || async {
        db_now(&env.pool).await >= last_seen + chrono::Duration::milliseconds(3500)
    })
    .await;
    let back_at = db_now(&env.pool).await;
    let back = scheduler(&env, &config, &[]);
    wait_until("the missed ticks are recorded", Duration::from_secs(10), || async {
        ticks(&env.pool).await.iter().any(|t| t.0 > back_at)
    })
    .await;
    back.signal("TERM").await;
    worker.signal("TERM").await;

    // The ticks after the last one seen: the missed ones, coalesced, then
    // the catch-up (the newest tick due when the scheduler came back), then
    // the back scheduler's ordinary ticks.
    let recorded = ticks(&env.pool).await;
    let after: Vec<_> = recorded.iter().filter(|t| t.0 > last_seen).collect();
    let catch_up = after.iter().position(|t| t.2 == "enqueued").expect("the catch-up runs");
    assert!(catch_up >= 2, "at least three missed ticks are recorded, the catch-up last: {after:?}");
    assert!(
        after[..catch_up]
            .iter()
            .all(|t| t.2 == "skipped" && t.3.as_deref().is_some_and(|r| r.starts_with("coalesced"))),
        "the older missed ticks are coalesced into the catch-up: {after:?}"
    );
    assert!(after[catch_up + 1..].iter().all(|t| t.0 > back_at), "the catch-up is the newest missed tick: {after:?}");
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn ticks_older_than_the_window_are_recorded_as_skipped(pool: PgPool) {
    let env = Env::new(pool);
    let config = Config::every(1, "expired");
    let first = scheduler(&env, &config, &[("JANITOR_CATCH_UP", "500ms")]);
    wait_until("a first tick", Duration::from_secs(10), || async { !ticks(&env.pool).await.is_empty() }).await;
    first.kill9().await;
    let last_seen = ticks(&env.pool).await.last().unwrap().0;
    wait_until("two ticks pass unseen", Duration::from_secs(10), || async {
        db_now(&env.pool).await >= last_seen + chrono::Duration::milliseconds(2600)
    })
    .await;
    let back = scheduler(&env, &config, &[("JANITOR_CATCH_UP", "500ms")]);
    wait_until("the missed ticks are recorded", Duration::from_secs(10), || async {
        ticks(&env.pool).await.iter().any(|t| t.0 >= last_seen + chrono::Duration::seconds(2))
    })
    .await;
    back.signal("TERM").await;

    let skipped: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, last_error FROM job_results WHERE job_id IN
             (SELECT job_id FROM schedule_ticks WHERE scheduled_at IN ($1, $2))",
    )
    .bind(last_seen + chrono::Duration::seconds(1))
    .bind(last_seen + chrono::Duration::seconds(2))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(skipped.len(), 2, "missed ticks have result rows");
    assert!(skipped
        .iter()
        .all(|(status, reason)| status == "skipped" && reason.as_deref().is_some_and(|r| r.starts_with("missed"))));
    let (code, stdout, _) = env.janitor(&["results", "--status", "skipped", "--json"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("missed"), "janitor results shows them");
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_tick_during_a_running_job_of_the_same_operation_is_skipped(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, 600, 1).await;
    let pacing = [("JANITOR_BATCH_SIZE", "20"), ("JANITOR_MAX_DELETES_PER_SEC", "100")];
    let worker = env.worker(&[], &pacing);
    let config = Config::every(1, "expired");
    let scheduler = scheduler(&env, &config, &[]);
    wait_until("a tick is skipped for overlap", Duration::from_secs(20), || async {
        ticks(&env.pool).await.iter().any(|t| t.3.as_deref().is_some_and(|r| r.starts_with("overlap")))
    })
    .await;
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status IN ('queued', 'running')")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(running, 1, "never two copies at once");
    scheduler.signal("TERM").await;
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

/// A job whose worker died (its lease ran out, and Redis names an entry
/// that no longer exists, as after a duplicate delivery was acknowledged)
/// does not block its schedule, even before any reconciler has looked at
/// it: no worker runs at first, and the first tick is enqueued, superseding
/// the stale job (failed, naming the tick's job). Then a worker runs the
/// tick's job, and the stale one stays failed: it is not re-enqueued.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_whose_worker_died_does_not_block_its_schedule(pool: PgPool) {
    let env = Env::new(pool);
    let stale = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, params, status, queue, attempts, lease_epoch, entry_id,
                                  started_at, updated_at, lease_expires_at)
         VALUES ($1, 'cleanup_expired_images', '{}', 'running', $2, 1, 1, '1-1',
                 now() - interval '2 minutes', now() - interval '2 minutes', now() - interval '1 minute')",
    )
    .bind(stale)
    .bind(&env.prefix)
    .execute(&env.pool)
    .await
    .unwrap();
    let ids = janitor_workers::layout::Layout::new(&env.prefix).ids();
    let _: i64 = redis::AsyncCommands::hset(&mut env.redis().await, ids, stale.to_string(), "1-1").await.unwrap();

    let config = Config::every(1, "expired");
    let scheduler = scheduler(&env, &config, &[]);
    wait_until("a tick is recorded", Duration::from_secs(20), || async { !ticks(&env.pool).await.is_empty() }).await;
    let first = ticks(&env.pool).await.remove(0);
    assert_eq!((first.2.as_str(), &first.3), ("enqueued", &None), "the stale job did not block the tick: {first:?}");
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM job_results WHERE job_id = $1")
            .bind(stale)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(reason.as_deref().unwrap_or_default().contains(&format!("superseded by the equal job {}", first.1)));

    let worker = env.worker(&[], &[("JANITOR_LEASE", "2s"), ("JANITOR_RECONCILE_INTERVAL", "300ms")]);
    let row =
        crate::harness::wait_for_job(&env.pool, first.1, "the tick's job completes", Duration::from_secs(40), |row| {
            row.0 == "completed"
        })
        .await;
    assert_eq!(row.0, "completed");
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM job_results WHERE job_id = $1")
            .bind(stale)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("failed", 1), "the superseded job was not run again");
    scheduler.signal("TERM").await;
    worker.signal("TERM").await;
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_bad_configuration_stops_start_up_and_enqueues_nothing(pool: PgPool) {
    let env = Env::new(pool);
    let cases = [
        ("[[schedule]]\nname = \"x\"\ncron = \"every night\"\noperation = \"all\"\n", "invalid cron expression"),
        ("[[schedule]]\nname = \"x\"\ncron = \"0 0 2 * * *\"\noperation = \"nuke\"\n", "unknown operation"),
        (
            "[[schedule]]\nname = \"x\"\ncron = \"0 0 2 * * *\"\noperation = \"all\"\ntimezone = \"Nowhere\"\n",
            "unknown timezone",
        ),
        (
            "[[schedule]]\nname = \"x\"\ncron = \"0 0 2 * * *\"\noperation = \"all\"\ncolour = \"red\"\n",
            "unknown field",
        ),
    ];
    for (text, message) in cases {
        let config = Config::new(text);
        let (code, _, stderr) = env.janitor(&["--config", config.path.to_str().unwrap(), "scheduler"]).await;
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(message), "{text}: {stderr}");
    }
    let recorded: i64 =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM job_results) + (SELECT count(*) FROM schedule_ticks)")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(recorded, 0);
    let mut redis = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{}*", env.prefix)).query_async(&mut redis).await.unwrap();
    assert!(keys.is_empty(), "nothing enqueued: {keys:?}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn two_deployments_sharing_a_database_each_run_every_tick_on_their_own_queue(pool: PgPool) {
    // Two queues (Redis prefixes), one database: each deployment's schedule
    // of the same name ticks on its own queue.
    let (one, two) = (Env::new(pool.clone()), Env::new(pool));
    let config = Config::every(2, "expired");
    let running: Vec<_> =
        [&one, &two].into_iter().flat_map(|env| [env.worker(&[], &[]), scheduler(env, &config, &[])]).collect();
    let completed = |queue: String| {
        let pool = one.pool.clone();
        async move {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM job_results WHERE queue = $1 AND status = 'completed'
                   AND requested_by = 'scheduler:tick'",
            )
            .bind(queue)
            .fetch_one(&pool)
            .await
            .unwrap();
            done
        }
    };
    wait_until("each queue has run three ticks", Duration::from_secs(40), || async {
        completed(one.prefix.clone()).await >= 3 && completed(two.prefix.clone()).await >= 3
    })
    .await;
    for process in running {
        process.signal("TERM").await;
        assert_eq!(process.exit_code(Duration::from_secs(10)).await, Some(0));
    }

    type Tick = (String, chrono::DateTime<chrono::Utc>, uuid::Uuid, String);
    let ticks: Vec<Tick> =
        sqlx::query_as("SELECT queue, scheduled_at, job_id, outcome FROM schedule_ticks ORDER BY scheduled_at, queue")
            .fetch_all(&one.pool)
            .await
            .unwrap();
    let on = |queue: &str| ticks.iter().filter(|t| t.0 == queue).map(|t| t.1).collect::<HashSet<_>>();
    let (mine, theirs) = (on(&one.prefix), on(&two.prefix));
    assert!(mine.len() >= 3 && theirs.len() >= 3, "{ticks:#?}");
    assert!(mine.intersection(&theirs).count() >= 2, "both queues record the same ticks: {ticks:#?}");
    let ids: HashSet<_> = ticks.iter().map(|t| t.2).collect();
    assert_eq!(ids.len(), ticks.len(), "each queue's tick has its own job id");
    let jobs: Vec<(uuid::Uuid, Option<String>)> =
        sqlx::query_as("SELECT job_id, queue FROM job_results WHERE requested_by = 'scheduler:tick'")
            .fetch_all(&one.pool)
            .await
            .unwrap();
    for (queue, _, job_id, _) in &ticks {
        let job = jobs.iter().find(|j| j.0 == *job_id).expect("every tick has its job row");
        assert_eq!(job.1.as_deref(), Some(queue.as_str()), "a tick's job runs on the tick's queue");
    }
    one.cleanup_keys().await;
    two.cleanup_keys().await;
}
