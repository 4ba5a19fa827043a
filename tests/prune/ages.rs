//! Old records of each kind go, young ones stay, and nothing of an
//! unfinished job is touched; the retentions come from the settings; a dry
//! run only counts.

use std::time::Duration;

use sqlx::PgPool;

use crate::harness::Env;
use crate::seed::{self, counts, pruned};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn old_records_of_each_kind_go_and_young_ones_stay(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    // job_results: completed session jobs 7 days, other completed and
    // skipped jobs 90 days, failed ones 180 days.
    let old_session = seed::job(pool, "cleanup_session", "completed", Some(8.0)).await;
    let young_session = seed::job(pool, "cleanup_session", "completed", Some(6.0)).await;
    let failed_session = seed::job(pool, "cleanup_session", "failed", Some(8.0)).await;
    let old_expired = seed::job(pool, "cleanup_expired_images", "completed", Some(91.0)).await;
    let young_expired = seed::job(pool, "cleanup_expired_images", "completed", Some(89.0)).await;
    let old_skipped = seed::job(pool, "cleanup_all", "skipped", Some(91.0)).await;
    let young_skipped = seed::job(pool, "cleanup_all", "skipped", Some(89.0)).await;
    let old_failed = seed::job(pool, "cleanup_orphaned_files", "failed", Some(181.0)).await;
    let young_failed = seed::job(pool, "cleanup_orphaned_files", "failed", Some(179.0)).await;
    // audit_log: 180 days.
    let _old_audit = seed::audit(pool, 181.0).await;
    let young_audit = seed::audit(pool, 179.0).await;
    // schedule_ticks: 30 days, but each schedule's newest tick and newest run
    // stay, whatever their age.
    seed::tick(pool, "nightly", 45, "enqueued").await;
    seed::tick(pool, "nightly", 40, "skipped").await;
    seed::tick(pool, "nightly", 29, "enqueued").await;
    seed::tick(pool, "nightly", 1, "skipped").await;
    seed::tick(pool, "yearly", 300, "enqueued").await;
    seed::tick(pool, "rare", 300, "enqueued").await;
    seed::tick(pool, "rare", 250, "skipped").await;
    seed::tick(pool, "rare", 200, "skipped").await;
    // Orphan candidates go with their job once it has finished (or has no row).
    let swept = seed::job(pool, "cleanup_orphaned_files", "completed", Some(0.01)).await;
    seed::candidates(pool, swept, 3).await;
    let forgotten = uuid::Uuid::new_v4();
    seed::candidates(pool, forgotten, 2).await;

    let result = seed::prune(&env, &[], 0).await;

    assert_eq!(
        pruned(&result),
        counts(&[
            ("job_results_session", 1),
            ("job_results_completed", 2),
            ("job_results_failed", 1),
            ("audit_log", 1),
            ("schedule_ticks", 3),
            ("orphan_candidates", 5),
        ])
    );
    assert_eq!(result["status"], "completed");
    assert_eq!(result["deleted_count"], 13);
    for gone in [old_session, old_expired, old_skipped, old_failed] {
        assert!(!seed::job_exists(pool, gone).await, "{gone} is old and should be gone");
    }
    for kept in [young_session, failed_session, young_expired, young_skipped, young_failed, swept] {
        assert!(seed::job_exists(pool, kept).await, "{kept} is young and should stay");
    }
    assert_eq!(seed::audit_ids(pool).await, [young_audit]);
    let ticks: Vec<(&str, i32)> = vec![("nightly", 29), ("nightly", 1), ("rare", 300), ("rare", 200), ("yearly", 300)];
    let left = seed::ticks(pool).await;
    assert_eq!(left.iter().map(|(s, d)| (s.as_str(), *d)).collect::<Vec<_>>(), ticks);
    assert_eq!((seed::count_candidates(pool, swept).await, seed::count_candidates(pool, forgotten).await), (0, 0));

    // A second run finds nothing left.
    let again = seed::prune(&env, &[], 0).await;
    assert_eq!(pruned(&again), counts(&[]));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn nothing_of_an_unfinished_job_is_ever_touched(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    // Created, updated and (for the odd one) even "finished" long ago, but
    // queued, running, or without an end time.
    let queued = seed::job(pool, "cleanup_session", "queued", None).await;
    let running = seed::job(pool, "cleanup_all", "running", None).await;
    let odd = seed::job(pool, "cleanup_session", "running", Some(400.0)).await;
    let unended = seed::job(pool, "cleanup_expired_images", "failed", None).await;
    let jobs = [queued, running, odd, unended];
    for (n, job_id) in jobs.iter().enumerate() {
        seed::candidates(pool, *job_id, 2).await;
        let path = format!("photos/u/{n}.jpg");
        env.store.write(&path, 4);
        seed::intent(pool, *job_id, 0, &[&path]).await;
        seed::queue_id(&env, &job_id.to_string()).await;
    }

    let shortest = ["--keep-session-jobs", "1h", "--keep-jobs", "1h", "--keep-failed-jobs", "1h"];
    let result = seed::prune(&env, &shortest, 0).await;

    assert_eq!(pruned(&result), counts(&[]));
    for (n, job_id) in jobs.iter().enumerate() {
        assert!(seed::job_exists(pool, *job_id).await, "job {n} must stay");
        assert_eq!(seed::count_candidates(pool, *job_id).await, 2, "job {n}'s candidates must stay");
        assert_eq!(seed::intent_batches(pool, *job_id).await, [0], "job {n}'s intent must stay");
        assert!(env.store.exists(&format!("photos/u/{n}.jpg")), "job {n}'s file must stay");
    }
    let mut ids: Vec<String> = jobs.iter().map(ToString::to_string).collect();
    ids.sort();
    assert_eq!(seed::queue_ids(&env).await, ids);
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_retentions_come_from_flags_and_the_environment(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    let session = seed::job(pool, "cleanup_session", "completed", Some(2.0)).await;
    seed::audit(pool, 3.0).await;
    let expired = seed::job(pool, "cleanup_expired_images", "completed", Some(2.0)).await;

    // Out of range (under an hour): refused before anything runs.
    let (code, _, stderr) = env.janitor(&["prune", "--keep-session-jobs", "30m"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--keep-session-jobs"), "{stderr}");
    assert!(seed::job_exists(pool, session).await);

    // The environment sets one, a flag another.
    let run = env.spawn(&["prune", "--keep-audit-log", "2d"], &[("JANITOR_KEEP_SESSION_JOBS", "1d")]);
    assert_eq!(run.exit_code(Duration::from_secs(60)).await, Some(0));
    assert!(!seed::job_exists(pool, session).await, "a 2-day-old session job goes with JANITOR_KEEP_SESSION_JOBS=1d");
    assert!(seed::audit_ids(pool).await.is_empty(), "a 3-day-old audit row goes with --keep-audit-log 2d");
    assert!(seed::job_exists(pool, expired).await, "other jobs keep their default of 90 days");
    let params: serde_json::Value =
        sqlx::query_scalar("SELECT params FROM job_results WHERE operation = 'prune_records'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (params["keep_session_jobs_secs"].as_u64(), params["keep_audit_log_secs"].as_u64()),
        (Some(86_400), Some(172_800))
    );
    assert_eq!(params["keep_jobs_secs"].as_u64(), Some(90 * 86_400));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_dry_run_counts_and_changes_nothing(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    seed::job(pool, "cleanup_session", "completed", Some(8.0)).await;
    seed::job(pool, "cleanup_session", "completed", Some(1.0)).await;
    seed::job(pool, "cleanup_all", "skipped", Some(100.0)).await;
    seed::audit(pool, 200.0).await;
    seed::tick(pool, "nightly", 45, "enqueued").await;
    seed::tick(pool, "nightly", 1, "enqueued").await;
    let failed = seed::job(pool, "cleanup_session", "failed", Some(1.0)).await;
    seed::candidates(pool, failed, 4).await;
    env.store.write("photos/d/left.jpg", 3);
    seed::intent(pool, failed, 0, &["photos/d/left.jpg"]).await;
    seed::dead_letter(&env, "session", 200.0).await;
    seed::dead_letter(&env, "bulk", 190.0).await;
    seed::dead_letter(&env, "bulk", 1.0).await;
    seed::queue_id(&env, &failed.to_string()).await;
    let before = snapshot(&env).await;

    let dry = seed::prune(&env, &["--dry-run"], 0).await;

    assert_eq!(dry["dry_run"], true);
    let expected = counts(&[
        ("unlink_intents", 1),
        ("orphan_candidates", 4),
        ("job_results_session", 1),
        ("job_results_completed", 1),
        ("audit_log", 1),
        ("schedule_ticks", 1),
        ("dead_letters_session", 1),
        ("dead_letters_bulk", 1),
        ("queue_ids", 1),
    ]);
    assert_eq!(pruned(&dry), expected);
    assert_eq!(snapshot(&env).await, before, "a dry run changes nothing");
    assert!(env.store.exists("photos/d/left.jpg"));

    // What it counted is what a real run removes.
    let real = seed::prune(&env, &[], 0).await;
    assert_eq!(pruned(&real), expected);
    assert!(!env.store.exists("photos/d/left.jpg"));
    env.cleanup_keys().await;
}

/// Everything a prune could remove, as one comparable value. The prune
/// jobs' own rows are left out: a dry run records itself, as every job does.
async fn snapshot(env: &Env) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT 'jobs:' || (SELECT string_agg(job_id::text || status, ',' ORDER BY job_id) FROM job_results
                            WHERE operation <> 'prune_records')
            || ' audit:' || (SELECT count(*) FROM audit_log)
            || ' ticks:' || (SELECT count(*) FROM schedule_ticks)
            || ' candidates:' || (SELECT count(*) FROM janitor_orphan_candidates)
            || ' intents:' || (SELECT count(*) FROM janitor_unlink_intents)",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let mut state = tables;
    state.push(format!("session dead: {:?}", seed::dead_letters(env, "session").await));
    state.push(format!("bulk dead: {:?}", seed::dead_letters(env, "bulk").await));
    state.push(format!("ids: {:?}", seed::queue_ids(env).await));
    state
}
