//! Batches that resume: a job stopped after any committed batch continues
//! from its checkpoint, and its final counts equal what was really deleted.
//! (A stop between a batch's commit and its unlinks is in `intents`.)

use janitor_workers::results::{self, Start, StoreError};
use janitor_workers::{CleanupJob, DaysOld, RunOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{engine, run_as, run_until, spec};
use crate::support::{count_images, insert_image, insert_task, seed_expired, Image, Store, TaskImages};

async fn status_and_count(pool: &PgPool, job_id: Uuid) -> (String, i64) {
    sqlx::query_as("SELECT status, deleted_count FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_stopped_job_resumes_from_its_checkpoint_with_exact_counts(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 55, 10).await;
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::Expired);

    assert!(matches!(run_until(&engine, job_id, &job, 2).await, RunOutcome::Interrupted));
    // The stop lands after the second commit; the batches already unlinked
    // (one waiting to commit, one under way in the pipeline) are committed
    // too, then the job stops.
    let (status, deleted) = status_and_count(&pool, job_id).await;
    assert_eq!(status, "running");
    assert!((20..=40).contains(&deleted), "stopped after {deleted}");
    assert_eq!(count_images(&pool).await, 55 - deleted, "the recorded count is what is gone");
    let intents: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(intents, 0, "a stopped job records the unlinks it carried out; none is left for the rerun");

    let record = run_as(&engine, job_id, &job).await;
    assert_eq!((record.deleted_count, record.deleted_bytes), (55, 550));
    assert_eq!(record.attempts, 2);
    assert_eq!(count_images(&pool).await, 0);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_resumed_job_deletes_rows_whose_files_are_already_gone_and_counts_them(pool: PgPool) {
    let store = Store::new();
    let ids = seed_expired(&pool, &store, 30, 10).await;
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::Expired);
    run_until(&engine, job_id, &job, 1).await;
    // Between the runs, the files of the next batch's rows vanish. Janitor
    // itself never leaves a row without its file (rows are deleted, with
    // their files listed as an unlink intent, in one transaction, and the
    // files go after the commit); an operator's `rm`, or a database restored
    // from before the files were removed, does. A missing file is not an
    // error: the row goes, and its size counts.
    let paths: Vec<String> =
        sqlx::query_scalar("SELECT storage_path FROM images WHERE id = ANY($1) ORDER BY id LIMIT 10")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    for path in &paths {
        std::fs::remove_file(store.path(path)).unwrap();
    }

    let record = run_as(&engine, job_id, &job).await;
    assert_eq!((record.deleted_count, record.deleted_bytes, record.error_count), (30, 300, 0));
    assert_eq!(count_images(&pool).await, 0);
    let left = walkdir::WalkDir::new(store.path("photos"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(left, 0, "no deleted row's file remains");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn all_resumes_in_the_phase_it_stopped_in(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 20, 1).await;
    for i in 0..20 {
        let image = insert_image(&pool, Some(&store), &Image::permanent(&format!("results/{i}.jpg"), 2)).await;
        insert_task(&pool, "completed", TaskImages { result: Some(image), ..TaskImages::default() }, Some(60)).await;
        store.write_old(&format!("templates/orphans/{i}.png"), 3);
    }
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::All { days_old: DaysOld::new(30).unwrap(), min_age_secs: 0 });
    // Two batches finish the expired phase; the third is old results' first.
    run_until(&engine, job_id, &job, 3).await;
    let (status, deleted) = status_and_count(&pool, job_id).await;
    assert_eq!(status, "running");
    assert!((30..=40).contains(&deleted), "stopped in the old results phase after {deleted}");

    let record = run_as(&engine, job_id, &job).await;
    let result = record.result.unwrap();
    assert_eq!(result["expired_images"]["deleted_count"], 20);
    assert_eq!(result["old_task_results"]["deleted_size_bytes"], 40);
    assert_eq!(result["orphaned_files"]["deleted_count"], 20);
    assert_eq!(result["totals"]["deleted_count"], 60);
}

/// The sweep walks the store in batches (three here: 10, 10 and 5 files),
/// then deletes in batches. A stop in either part resumes where it was.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_orphan_sweep_resumes_its_walk_and_its_deletions(pool: PgPool) {
    let store = Store::new();
    for i in 0..25 {
        store.write(&format!("photos/{}/{i:02}.jpg", i % 3), 4);
    }
    let engine = engine(&pool, &store, 10);
    let job = spec(CleanupJob::Orphaned { min_age_secs: 0 });

    let walking = Uuid::new_v4();
    run_until(&engine, walking, &job, 1).await;
    let checkpoint: serde_json::Value = sqlx::query_scalar("SELECT checkpoint FROM job_results WHERE job_id = $1")
        .bind(walking)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(checkpoint["walk"]["files"], 10, "stopped after the first walk batch: {checkpoint}");
    assert!(checkpoint.get("census").is_none(), "an unfinished walk has no census");
    assert_eq!(status_and_count(&pool, walking).await, ("running".into(), 0), "nothing deleted while walking");
    let record = run_as(&engine, walking, &job).await;
    assert_eq!((record.deleted_count, record.deleted_bytes), (25, 100));
    assert_eq!(record.result.unwrap()["files_scanned"], 25, "the walk went on from its checkpoint");

    for i in 0..25 {
        store.write(&format!("templates/{}/{i:02}.png", i % 3), 4);
    }
    let deleting = Uuid::new_v4();
    run_until(&engine, deleting, &job, 4).await;
    assert_eq!(status_and_count(&pool, deleting).await, ("running".into(), 10), "three walk batches, one deletion");
    let record = run_as(&engine, deleting, &job).await;
    assert_eq!((record.deleted_count, record.deleted_bytes), (25, 100));
    assert_eq!(record.result.unwrap()["files_scanned"], 25);
}

/// A run saved a batch of orphans and died before it moved them; while it
/// was dead (its sweep lock free), something else took three of them (here
/// they are simply gone, as if another sweep had them in its own trash).
/// The rerun counts only what it finds in its own trash.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_resumed_orphan_batch_counts_only_the_files_in_its_own_trash(pool: PgPool) {
    let store = Store::new();
    for i in 0..25 {
        store.write(&format!("photos/{}/{i:02}.jpg", i % 3), 4);
    }
    let engine = engine(&pool, &store, 10);
    let job = spec(CleanupJob::Orphaned { min_age_secs: 0 });
    let job_id = Uuid::new_v4();
    // Three walk batches, then one batch of ten moved and counted.
    run_until(&engine, job_id, &job, 4).await;
    assert_eq!(status_and_count(&pool, job_id).await, ("running".into(), 10));
    let next: Vec<String> = sqlx::query_scalar(
        "SELECT path FROM janitor_orphan_candidates WHERE job_id = $1 ORDER BY path COLLATE \"C\" OFFSET 10 LIMIT 3",
    )
    .bind(job_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let pending = serde_json::json!({
        "files": next.iter().map(|path| serde_json::json!([path, 4])).collect::<Vec<_>>(),
        "cursor": next.last().unwrap(),
        "scanned": 0,
    });
    sqlx::query("UPDATE job_results SET checkpoint = jsonb_set(checkpoint, '{pending}', $2) WHERE job_id = $1")
        .bind(job_id)
        .bind(&pending)
        .execute(&pool)
        .await
        .unwrap();
    for path in &next {
        std::fs::remove_file(store.path(path)).unwrap();
    }

    let record = run_as(&engine, job_id, &job).await;
    let trashed = walkdir::WalkDir::new(store.path(&format!(".janitor-trash/{job_id}")))
        .into_iter()
        .filter(|entry| entry.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(trashed, 22, "the files of the batches this job moved");
    assert_eq!(record.deleted_count, 22, "the job counts what it moved, not what others took");
    assert_eq!(record.deleted_bytes, 88);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_finished_job_run_again_does_nothing(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 3, 1).await;
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let first = run_as(&engine, job_id, &spec(CleanupJob::Expired)).await;
    seed_expired(&pool, &store, 2, 1).await;

    let again = run_as(&engine, job_id, &spec(CleanupJob::Expired)).await;
    assert_eq!((again.deleted_count, again.attempts), (first.deleted_count, 1));
    assert_eq!(count_images(&pool).await, 2, "a duplicate delivery deletes nothing more");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_superseded_lease_cannot_commit(pool: PgPool) {
    let job = spec(CleanupJob::Expired);
    let job_id = Uuid::new_v4();
    let Start::Run(old, _, _) = results::start(&pool, job_id, &job, "a", None).await.unwrap() else {
        panic!("fresh job")
    };
    let Start::Run(new, _, now) = results::start(&pool, job_id, &job, "b", None).await.unwrap() else {
        panic!("running job")
    };
    assert!(new.epoch > old.epoch);

    let progress = janitor_workers::progress::Progress::new(now, 1, 10);
    let mut conn = pool.acquire().await.unwrap();
    let stale = results::save_progress(&mut conn, old, &progress).await;
    assert!(matches!(stale, Err(StoreError::LeaseLost(id)) if id == job_id));
    results::save_progress(&mut conn, new, &progress).await.unwrap();
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_id_cannot_be_reused_for_another_operation(pool: PgPool) {
    let store = Store::new();
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    run_as(&engine, job_id, &spec(CleanupJob::Expired)).await;
    let other = spec(CleanupJob::Orphaned { min_age_secs: 1 });
    let err = engine.run(job_id, &other, &Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("already recorded"), "{err}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_second_entry_of_a_live_job_is_a_duplicate_but_a_rescue_takes_over(pool: PgPool) {
    let job = spec(CleanupJob::Expired);
    let job_id = Uuid::new_v4();
    let lease = std::time::Duration::from_secs(30);
    let first = results::Claim { entry_id: "1-0", lease, queue: None };
    let Start::Run(held, _, _) = results::start(&pool, job_id, &job, "a", Some(&first)).await.unwrap() else {
        panic!("fresh job")
    };
    // Another entry of the same job, while the holder is alive: refused.
    let other = results::Claim { entry_id: "2-0", lease, queue: None };
    let busy = results::start(&pool, job_id, &job, "b", Some(&other)).await.unwrap();
    assert!(matches!(busy, Start::Busy(_)));
    // The same entry, rescued after the lease: takes over.
    let Start::Run(rescued, _, _) = results::start(&pool, job_id, &job, "c", Some(&first)).await.unwrap() else {
        panic!("a rescue of the same entry takes over")
    };
    assert!(rescued.epoch > held.epoch);
    // Any entry, once the holder let its lease expire.
    sqlx::query("UPDATE job_results SET lease_expires_at = now() - interval '1 second' WHERE job_id = $1")
        .bind(job_id)
        .execute(&pool)
        .await
        .unwrap();
    let stale = results::start(&pool, job_id, &job, "b", Some(&other)).await.unwrap();
    assert!(matches!(stale, Start::Run(..)));
}
