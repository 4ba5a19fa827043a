//! Migrations: reversible, and they never touch the application's own tables.

use janitor_workers::MIGRATOR;
use sqlx::PgPool;

async fn table_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrations_go_down_and_up_again(pool: PgPool) {
    MIGRATOR.run(&pool).await.unwrap();
    assert!(table_exists(&pool, "job_results").await);
    MIGRATOR.undo(&pool, 0).await.unwrap();
    for table in ["job_results", "images", "face_swap_tasks"] {
        assert!(!table_exists(&pool, table).await, "{table} should be gone");
    }
    MIGRATOR.run(&pool).await.unwrap();
    assert!(table_exists(&pool, "images").await);
}

#[sqlx::test(migrations = false)]
async fn the_apps_own_tables_are_left_alone(pool: PgPool) {
    // The application made its tables first, with a column of its own.
    sqlx::raw_sql(
        "CREATE TABLE images (id bigserial PRIMARY KEY, filename text NOT NULL,
             storage_path text NOT NULL UNIQUE, category text NOT NULL, storage_type text NOT NULL,
             session_id text, file_size bigint NOT NULL DEFAULT 0, expires_at timestamptz,
             created_at timestamptz NOT NULL DEFAULT now(), owner_note text);
         INSERT INTO images (filename, storage_path, category, storage_type) VALUES ('a', 'photos/a', 'photos', 'permanent');",
    )
    .execute(&pool)
    .await
    .unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let has_note: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'images' AND column_name = 'owner_note')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(has_note, "the app's table must not be replaced");
    MIGRATOR.undo(&pool, 0).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM images").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1, "reverting must not drop the app's table");
    assert!(!table_exists(&pool, "janitor_images_session").await);
}
