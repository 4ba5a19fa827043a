//! Files go after their rows: a batch commits its row deletions with the
//! list of their files, then unlinks them. A run that stopped in between
//! leaves that list, and the next run of the job unlinks those files first.

use janitor_workers::CleanupJob;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{engine, run_as, run_until, spec};
use crate::support::{count_images, insert_image, seed_expired, Image, Store};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn files_whose_rows_a_stopped_run_deleted_are_unlinked_by_the_next_run(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 25, 10).await;
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::Expired);
    run_until(&engine, job_id, &job, 1).await;
    // What a run that died right after committing a batch leaves: the rows
    // are gone and their files are listed, not yet unlinked.
    let done: i64 = sqlx::query_scalar("SELECT deleted_count FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let victims: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, storage_path FROM images ORDER BY id LIMIT 5").fetch_all(&pool).await.unwrap();
    let (ids, paths): (Vec<i64>, Vec<String>) = victims.into_iter().unzip();
    sqlx::query("DELETE FROM images WHERE id = ANY($1)").bind(&ids).execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ($1, 1000, $2, $3)")
        .bind(job_id)
        .bind(&ids)
        .bind(&paths)
        .execute(&pool)
        .await
        .unwrap();
    // An upload has since reused one of those paths: its file stays.
    insert_image(&pool, None, &Image::permanent(&paths[0], 10)).await;

    let record = run_as(&engine, job_id, &job).await;
    assert_eq!(record.error_count, 0, "{:?}", record.errors);
    assert_eq!(
        record.deleted_count,
        25 - 5,
        "the listed rows were counted by the run that deleted them ({done} before)"
    );
    assert!(store.exists(&paths[0]), "a path a row refers to again is left alone");
    for path in &paths[1..] {
        assert!(!store.exists(path), "{path} was listed and is unlinked");
    }
    assert_eq!(count_images(&pool).await, 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "every intent is settled");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_listed_file_that_cannot_be_unlinked_is_an_error_item_and_its_intent_is_settled(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 3, 10).await;
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::Expired);
    run_until(&engine, job_id, &job, 1).await;
    // A run that died after committing a batch listed a path where a
    // folder now stands: unlinking it fails (even for root).
    std::fs::create_dir_all(store.path("photos/now-a-folder.jpg/inside")).unwrap();
    sqlx::query("INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ($1, 1000, $2, $3)")
        .bind(job_id)
        .bind(vec![999_999_i64])
        .bind(vec!["photos/now-a-folder.jpg".to_owned()])
        .execute(&pool)
        .await
        .unwrap();

    let record = run_as(&engine, job_id, &job).await;
    assert_eq!(record.error_count, 1, "{:?}", record.errors);
    assert_eq!(record.errors[0]["path"], "photos/now-a-folder.jpg");
    let error = record.errors[0]["error"].as_str().unwrap();
    assert!(error.contains("could not be unlinked"), "{error}");
    assert!(store.exists("photos/now-a-folder.jpg/inside"), "a folder is never removed");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the failure is recorded and its intent settled");
}
