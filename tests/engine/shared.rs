//! A file that another row refers to is never unlinked by a row operation,
//! under any spelling of its path: the row is skipped and both stay.

use janitor_workers::{CleanupJob, Engine, EngineSettings};
use sqlx::PgPool;

use crate::harness::{run, spec};
use crate::support::{image_exists, insert_image, Image, Store};

/// The application's table without the unique constraint on `storage_path`
/// (janitor's migrations never add one to an existing table).
async fn without_unique_paths(pool: &PgPool) {
    sqlx::query("ALTER TABLE images DROP CONSTRAINT images_storage_path_key").execute(pool).await.unwrap();
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_another_remaining_row_refers_to_is_kept(pool: PgPool) {
    without_unique_paths(&pool).await;
    let store = Store::new();
    let expired = insert_image(&pool, Some(&store), &Image::expired("photos/shared.jpg", 4)).await;
    let permanent = insert_image(&pool, None, &Image::permanent("photos/shared.jpg", 4)).await;
    // Another spelling of the same file, which row operations refuse to act
    // on but which still refers to it.
    let spelled = insert_image(&pool, Some(&store), &Image::expired("photos/spelled.jpg", 4)).await;
    insert_image(&pool, None, &Image::permanent("/photos/spelled.jpg", 4)).await;
    let nfd = insert_image(&pool, Some(&store), &Image::expired("photos/caf\u{e9}.jpg", 4)).await;
    insert_image(&pool, None, &Image::permanent("photos/cafe\u{301}.jpg", 4)).await;
    // Two expired rows of one file, both going: the file goes too.
    let pair = [
        insert_image(&pool, Some(&store), &Image::expired("photos/pair.jpg", 4)).await,
        insert_image(&pool, None, &Image::expired("photos/pair.jpg", 4)).await,
    ];
    let engine = Engine::new(pool.clone(), store.root(), EngineSettings::default());
    let record = run(&engine, &spec(CleanupJob::Expired)).await;

    assert_eq!((record.deleted_count, record.skipped_count), (2, 3), "{:?}", record.result);
    for (id, path) in [(expired, "photos/shared.jpg"), (spelled, "photos/spelled.jpg"), (nfd, "photos/caf\u{e9}.jpg")] {
        assert!(image_exists(&pool, id).await, "the row of {path} was skipped");
        assert!(store.exists(path), "{path} is still referenced");
    }
    assert!(image_exists(&pool, permanent).await);
    assert!(!store.exists("photos/pair.jpg"), "no remaining row refers to the pair's file");
    for id in pair {
        assert!(!image_exists(&pool, id).await);
    }
}
