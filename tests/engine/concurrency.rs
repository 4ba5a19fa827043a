//! Cleanup racing the application and itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use janitor_workers::CleanupJob;
use sqlx::PgPool;

use crate::harness::{engine, run, spec};
use crate::support::{count_images, seed_expired, Store};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn concurrent_runs_share_the_work_without_double_deleting(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 300, 1).await;
    let engine = engine(&pool, &store, 10);
    let job = spec(CleanupJob::Expired);
    let (a, b, c) = tokio::join!(run(&engine, &job), run(&engine, &job), run(&engine, &job));

    assert_eq!(a.deleted_count + b.deleted_count + c.deleted_count, 300);
    assert_eq!(a.error_count + b.error_count + c.error_count, 0);
    assert_eq!(count_images(&pool).await, 0);
}

/// The application creates pending tasks on other connections while the
/// cleanup deletes the images they reference. Afterwards no pending task
/// references a deleted image: every insert either committed first (and the
/// image was skipped) or failed cleanly on the foreign key.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn tasks_created_during_cleanup_keep_their_images(pool: PgPool) {
    let store = Store::new();
    let ids = seed_expired(&pool, &store, 600, 1).await;
    let done = Arc::new(AtomicBool::new(false));
    // Four app connections, each walking all images in its own order, so
    // inserts keep landing on the rows the cleanup is working on.
    let apps: Vec<_> = (0..4)
        .map(|lane| {
            let order: Vec<i64> = ids.iter().copied().skip(lane).step_by(4).rev().collect();
            tokio::spawn(create_tasks(pool.clone(), order, Arc::clone(&done)))
        })
        .collect();
    let record = run(&engine(&pool, &store, 20), &spec(CleanupJob::Expired)).await;
    done.store(true, Ordering::SeqCst);
    let mut created = 0;
    for app in apps {
        created += app.await.unwrap();
    }

    assert!(created > 0, "the race must actually create tasks");
    let broken: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT t.id, t.husband_photo_id FROM face_swap_tasks t
         LEFT JOIN images i ON i.id = t.husband_photo_id
         WHERE t.status = 'pending' AND (t.husband_photo_id IS NULL OR t.template_id IS NULL OR i.id IS NULL)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(broken.is_empty(), "pending tasks lost their images: {broken:?}");
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT i.storage_path FROM face_swap_tasks t JOIN images i ON i.id = t.husband_photo_id WHERE t.status = 'pending'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(paths.len() as i64, created);
    for path in paths {
        assert!(store.exists(&path), "file of an in-use image was deleted: {path}");
    }
    assert_eq!(count_images(&pool).await, 600 - record.deleted_count);
}

/// Inserts a pending task per image until told to stop; returns how many
/// committed. A foreign-key refusal (the image was deleted first) is fine.
async fn create_tasks(pool: PgPool, ids: Vec<i64>, done: Arc<AtomicBool>) -> i64 {
    let mut created = 0;
    for id in ids {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let insert = sqlx::query(
            "INSERT INTO face_swap_tasks (husband_photo_id, template_id, status) VALUES ($1, $1, 'pending')",
        )
        .bind(id)
        .execute(&pool)
        .await;
        match insert {
            Ok(_) => created += 1,
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("23503") => {}
            Err(err) => panic!("unexpected insert error: {err}"),
        }
    }
    created
}

/// A job keeps up to four batches in flight (claiming, waiting, unlinking,
/// committing), each in its own transaction. With a single connection the
/// stages take turns instead of waiting on each other for ever.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_on_a_one_connection_pool_completes(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 57, 1).await;
    let options = pool.connect_options().as_ref().clone();
    let single = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let record = run(&engine(&single, &store, 5), &spec(CleanupJob::Expired)).await;

    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 57));
    assert_eq!(count_images(&pool).await, 0);
    assert!((0..57).all(|i| !store.exists(&format!("photos/{}/{i}.jpg", i / 100))));
}
