//! Infrastructure: an unreachable database fails with exit code 1 and a
//! message naming it (never its password), and `janitor migrate` creates a
//! missing database and is safe to repeat.

use sqlx::PgPool;

use crate::binary::Janitor;
use crate::support::Store;

/// A closed port on this machine, with a password that must never be shown.
const UNREACHABLE: &str = "postgres://janitor:s3cret-pw@127.0.0.1:1/janitor";

/// These tests need no database of their own: the point is that the binary
/// cannot reach one.
#[tokio::test]
async fn run_against_an_unreachable_database_fails_without_leaking_the_password() {
    let store = Store::new();
    let output = Janitor::at(UNREACHABLE, store.root()).run(&["run", "expired", "--json"]).await.expect_code(1);

    assert!(output.stderr.contains("cannot connect to the database"), "stderr names the database:\n{}", output.stderr);
    assert!(output.stderr.contains("127.0.0.1:1"), "{}", output.stderr);
    assert!(!output.all().contains("s3cret-pw"), "password leaked:\n{}", output.all());
    assert!(output.stdout.is_empty(), "no result is printed: {}", output.stdout);
}

#[tokio::test]
async fn migrate_against_an_unreachable_server_fails_without_leaking_the_password() {
    let store = Store::new();
    let output = Janitor::at(UNREACHABLE, store.root()).run(&["migrate"]).await.expect_code(1);

    assert!(output.stderr.contains("cannot connect to the database"), "stderr names the database:\n{}", output.stderr);
    assert!(!output.all().contains("s3cret-pw"), "password leaked:\n{}", output.all());
}

/// The URL of a database named `name` on the test server.
fn url_for(name: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
    url.set_path(name);
    url.to_string()
}

async fn database_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `pool` is only used to look at (and finally drop) the database that
/// `janitor migrate` creates.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn migrate_creates_a_missing_database_and_can_run_twice(pool: PgPool) {
    let name = format!("janitor_cli_migrate_{}", uuid::Uuid::new_v4().simple());
    let url = url_for(&name);
    assert!(!database_exists(&pool, &name).await);

    // The checks run in their own task, so that a failing assertion still
    // lets the database be dropped below before the panic is passed on.
    let checks = tokio::spawn({
        let (pool, name, url) = (pool.clone(), name.clone(), url.clone());
        async move { check_migrate(&pool, &name, &url).await }
    });
    let outcome = checks.await;

    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&pool)
        .await
        .expect("drop the migrated database");
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn check_migrate(pool: &PgPool, name: &str, url: &str) {
    let store = Store::new();
    let janitor = Janitor::at(url, store.root());
    let first = janitor.run(&["migrate"]).await.expect_code(0);
    assert!(first.stderr.contains("created database"), "{}", first.stderr);
    assert!(database_exists(pool, name).await, "migrate created {name}");

    let second = janitor.run(&["migrate"]).await.expect_code(0);
    assert!(!second.stderr.contains("created database"), "{}", second.stderr);

    let migrated = PgPool::connect(url).await.expect("connect to the new database");
    for table in ["job_results", "images", "face_swap_tasks"] {
        let present: bool =
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(&migrated).await.unwrap();
        assert!(present, "{table} exists after migrate");
    }
    migrated.close().await;
}

/// A database that `#[sqlx::test]` already migrated is left as it is.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn migrate_on_a_migrated_database_is_a_no_op(pool: PgPool) {
    let store = Store::new();
    let output = Janitor::new(&pool, &store).run(&["migrate"]).await.expect_code(0);
    assert!(output.stderr.contains("migrations applied"), "{}", output.stderr);
    assert!(!output.stderr.contains("created database"), "{}", output.stderr);
}
