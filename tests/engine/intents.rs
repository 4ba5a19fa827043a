//! Files go after their rows: a batch commits its row deletions with the
//! list of their files, then unlinks them. A run that stopped in between
//! leaves that list, and the next run of the job unlinks those files first.

use std::sync::Arc;

use janitor_workers::{CleanupJob, RunControl, RunOutcome, SessionId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{dry, engine, run_as, run_until, spec};
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
    // More rows than a batch: the first batch does not end the job.
    seed_expired(&pool, &store, 13, 10).await;
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

/// What the test's own trigger saw: the transaction that deleted images.
async fn record_deleting_transactions(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE deleting_xacts (x xid);
         CREATE FUNCTION note_deleting_xact() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO deleting_xacts VALUES (pg_current_xact_id()::xid); RETURN NULL; END $$;
         CREATE TRIGGER note_deleting_xact AFTER DELETE ON images
             FOR EACH STATEMENT EXECUTE FUNCTION note_deleting_xact();",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_that_fits_in_one_batch_ends_in_that_batchs_transaction(pool: PgPool) {
    let store = Store::new();
    for name in ["a", "b", "c"] {
        insert_image(&pool, Some(&store), &Image::fresh(&format!("photos/s/{name}.jpg"), 10).session("s")).await;
    }
    record_deleting_transactions(&pool).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen("janitor_job_finished").await.unwrap();
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let record =
        run_as(&engine, job_id, &spec(CleanupJob::Session { session_id: SessionId::parse("s").unwrap() })).await;
    assert_eq!(notices(&pool, &mut listener, job_id).await, 1, "listeners are told of the end once");

    assert_eq!((record.status.as_str(), record.deleted_count, record.error_count), ("completed", 3, 0));
    for name in ["a", "b", "c"] {
        assert!(!store.exists(&format!("photos/s/{name}.jpg")));
    }
    // One commit deleted the rows and ended the job: the row's version is
    // the deleting transaction's (nothing wrote the row after it).
    let (deletions, same): (i64, bool) = sqlx::query_as(
        "SELECT count(*), bool_and(d.x = r.xmin) FROM deleting_xacts d, job_results r WHERE r.job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deletions, 1, "one batch deleted the rows");
    assert!(same, "the batch that deleted the rows also ended the job");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the last batch's intent is settled once its files are unlinked");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_the_last_batch_could_not_unlink_is_recorded_in_the_ended_job(pool: PgPool) {
    let store = Store::new();
    for name in ["a", "b"] {
        insert_image(&pool, Some(&store), &Image::fresh(&format!("photos/s/{name}.jpg"), 10).session("s")).await;
    }
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    // Between the commit that ended the job and the unlinks, a folder takes
    // the place of one file: unlinking it fails (even for root).
    let folder = store.path("photos/s/b.jpg");
    let control = RunControl {
        worker: "test".into(),
        on_batch: Some(Arc::new(move |_| {
            std::fs::remove_file(&folder).unwrap();
            std::fs::create_dir_all(folder.join("inside")).unwrap();
        })),
        ..RunControl::default()
    };
    let job = spec(CleanupJob::Session { session_id: SessionId::parse("s").unwrap() });
    let RunOutcome::Finished(record) = engine.run(job_id, &job, &control).await.unwrap() else {
        panic!("the job ends");
    };

    assert_eq!((record.status.as_str(), record.deleted_count, record.error_count), ("completed", 2, 1));
    assert_eq!(record.errors[0]["path"], "photos/s/b.jpg");
    let result = record.result.as_ref().unwrap();
    assert_eq!(result["error_count"], 1, "{result}");
    assert_eq!(result["errors"][0]["path"], "photos/s/b.jpg", "{result}");
    let stored: (String, i64, serde_json::Value) =
        sqlx::query_as("SELECT status, error_count, result FROM job_results WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((stored.0.as_str(), stored.1), ("completed", 1));
    assert_eq!(&stored.2, result, "the stored result is the one returned");
    assert!(!store.exists("photos/s/a.jpg"));
    assert!(store.exists("photos/s/b.jpg/inside"), "a folder is never removed");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the failure is recorded and its intent settled");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_redelivery_of_a_job_killed_after_its_ending_batch_unlinks_what_that_batch_left(pool: PgPool) {
    let store = Store::new();
    for name in ["a", "b", "c"] {
        insert_image(&pool, Some(&store), &Image::fresh(&format!("photos/s/{name}.jpg"), 10).session("s")).await;
    }
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let job = spec(CleanupJob::Session { session_id: SessionId::parse("s").unwrap() });
    // The run dies right after the commit that deleted the rows and ended
    // the job, before any unlink: as a kill -9 there would.
    let control = RunControl {
        worker: "test-killed".into(),
        on_batch: Some(Arc::new(|_| panic!("killed after the commit"))),
        ..RunControl::default()
    };
    let died = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(engine.run(job_id, &job, &control))).await;
    assert!(died.is_err(), "the run died");
    let (status, deleted): (String, i64) =
        sqlx::query_as("SELECT status, deleted_count FROM job_results WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), deleted), ("completed", 3), "the job ended with its batch");
    assert_eq!(count_images(&pool).await, 0);
    let listed: Vec<String> =
        sqlx::query_scalar("SELECT unnest(paths) FROM janitor_unlink_intents WHERE job_id = $1 ORDER BY 1")
            .bind(job_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(listed, ["photos/s/a.jpg", "photos/s/b.jpg", "photos/s/c.jpg"], "its files are listed, not lost");
    assert!(store.exists("photos/s/a.jpg"), "and not yet unlinked");
    // Since then an upload reused one path, and a folder took another's.
    insert_image(&pool, None, &Image::permanent("photos/s/a.jpg", 10)).await;
    std::fs::remove_file(store.path("photos/s/b.jpg")).unwrap();
    std::fs::create_dir_all(store.path("photos/s/b.jpg/inside")).unwrap();

    let again = run_as(&engine, job_id, &job).await;
    assert_eq!((again.status.as_str(), again.deleted_count), ("completed", 3), "the job is not run again");
    assert!(store.exists("photos/s/a.jpg"), "a path a row refers to again is left alone");
    assert!(!store.exists("photos/s/c.jpg"), "the listed file is unlinked");
    assert_eq!(again.error_count, 1, "{:?}", again.errors);
    assert_eq!(again.errors[0]["path"], "photos/s/b.jpg");
    assert_eq!(again.result.as_ref().unwrap()["error_count"], 1, "the result is rebuilt");
    let stored: i64 = sqlx::query_scalar("SELECT error_count FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the failure is the job's error item");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_unlink_intents").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the intent is settled");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_dry_run_that_ends_in_its_batch_tells_the_listeners_once(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::fresh("photos/s/a.jpg", 10).session("s")).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen("janitor_job_finished").await.unwrap();
    let engine = engine(&pool, &store, 10);
    let job_id = Uuid::new_v4();
    let record =
        run_as(&engine, job_id, &dry(CleanupJob::Session { session_id: SessionId::parse("s").unwrap() })).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1));
    assert!(store.exists("photos/s/a.jpg"));
    assert_eq!(notices(&pool, &mut listener, job_id).await, 1, "listeners are told of the end once");
}

/// How many end notices of `job_id` the listener has had: notices arrive in
/// commit order, so a notice sent now comes after every one of the job's.
async fn notices(pool: &PgPool, listener: &mut sqlx::postgres::PgListener, job_id: Uuid) -> usize {
    sqlx::query("SELECT pg_notify('janitor_job_finished', 'end of test')").execute(pool).await.unwrap();
    let mut told = 0;
    loop {
        let notice = listener.recv().await.unwrap();
        match notice.payload() {
            "end of test" => return told,
            id => {
                assert_eq!(id, job_id.to_string());
                told += 1;
            }
        }
    }
}
