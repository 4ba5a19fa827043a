//! Bad input is refused by the command line itself: exit code 2, a message
//! that names the problem, and no side effects at all (no job recorded, no
//! row or file removed), even when there is something to clean.

use sqlx::PgPool;

use crate::binary::{count_jobs, Janitor};
use crate::support::{count_images, insert_image, insert_task, Image, Store, TaskImages};

/// Seeds one of everything a cleanup could remove, runs `args`, and checks
/// that the run was refused with `message` and touched nothing.
async fn assert_refused(pool: &PgPool, args: &[&str], message: &str) {
    // A test may check several refusals: each starts from the same seed.
    sqlx::raw_sql("DELETE FROM face_swap_tasks; DELETE FROM images").execute(pool).await.unwrap();
    let store = Store::new();
    insert_image(pool, Some(&store), &Image::expired("photos/expired.jpg", 10).session("s1")).await;
    let result = insert_image(pool, Some(&store), &Image::permanent("results/old.jpg", 10)).await;
    let images = TaskImages { result: Some(result), ..TaskImages::default() };
    insert_task(pool, "completed", images, Some(400)).await;
    store.write_old("photos/orphan.jpg", 10);

    let output = Janitor::new(pool, &store).run(args).await.expect_code(2);

    assert!(output.stderr.contains(message), "stderr should contain {message:?}:\n{}", output.stderr);
    assert!(output.stdout.is_empty(), "nothing on stdout: {}", output.stdout);
    assert_eq!(count_jobs(pool).await, 0, "no job was recorded");
    assert_eq!(count_images(pool).await, 2, "no row was deleted");
    for path in ["photos/expired.jpg", "results/old.jpg", "photos/orphan.jpg"] {
        assert!(store.exists(path), "{path} was not deleted");
    }
}

const DAYS_OLD_RANGE: &str = "days_old must be an integer from 1 to 36500";

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn empty_session_id_is_refused(pool: PgPool) {
    assert_refused(&pool, &["run", "session", ""], "session id must not be empty").await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn zero_days_old_is_refused(pool: PgPool) {
    assert_refused(&pool, &["run", "old-results", "--days-old", "0"], DAYS_OLD_RANGE).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn negative_days_old_is_refused(pool: PgPool) {
    let message = format!("{DAYS_OLD_RANGE}, got -5");
    assert_refused(&pool, &["run", "old-results", "--days-old", "-5"], &message).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn non_numeric_days_old_is_refused(pool: PgPool) {
    let message = format!("{DAYS_OLD_RANGE}, got \"abc\"");
    assert_refused(&pool, &["run", "old-results", "--days-old", "abc"], &message).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn days_old_past_a_hundred_years_is_refused(pool: PgPool) {
    let message = format!("{DAYS_OLD_RANGE}, got 36501");
    assert_refused(&pool, &["run", "old-results", "--days-old", "36501"], &message).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn zero_days_old_is_refused_for_all(pool: PgPool) {
    assert_refused(&pool, &["run", "all", "--days-old", "0"], DAYS_OLD_RANGE).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn unparseable_min_age_is_refused(pool: PgPool) {
    let args = ["run", "orphaned", "--min-age", "bogus"];
    assert_refused(&pool, &args, "invalid duration \"bogus\"").await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_grace_period_below_the_minimum_is_refused(pool: PgPool) {
    for args in [
        &["run", "orphaned", "--min-age", "0s"][..],
        &["run", "all", "--min-age", "9m"],
        &["enqueue", "orphaned", "--min-age", "1m"],
        &["run", "orphaned", "--min-age", "30m", "--min-grace", "1h"],
    ] {
        assert_refused(&pool, args, "is shorter than the minimum grace period").await;
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn huge_or_zero_durations_are_refused(pool: PgPool) {
    let cases: [(&[&str], &str); 5] = [
        (&["run", "orphaned", "--min-age", "3651d"], "min_age must be at most 3650 days"),
        (&["run", "all", "--min-age", "100000000y"], "--min-age"),
        (&["enqueue", "orphaned", "--min-age", "9999999999999s"], "min_age must be at most 3650 days"),
        (&["run", "purge-trash", "--retention", "0s"], "retention must be from 1 hour to 3650 days"),
        (&["run", "purge-trash", "--retention", "3651d"], "retention must be from 1 hour to 3650 days"),
    ];
    for (args, message) in cases {
        assert_refused(&pool, args, message).await;
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn unknown_operation_is_refused(pool: PgPool) {
    assert_refused(&pool, &["run", "explode"], "unrecognized subcommand 'explode'").await;
}
