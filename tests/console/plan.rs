//! "Plan a cleanup" in a real browser: plan a dry run, watch its page turn
//! into the outcome by itself (numbers, sample paths, the in-use item it
//! skipped), confirm, run it for real, and see the real job complete with
//! the plan's counts.

use std::time::Duration;

use fantoccini::Locator;
use sqlx::PgPool;
use uuid::Uuid;

use crate::browser::Browser;
use crate::console::{Console, OPS};
use crate::harness::Env;
use crate::support::{insert_image, insert_task, Image, TaskImages};

/// How many images the plan would delete, and their sizes.
const FREE: i64 = 8;
const SIZE: i64 = 180_000;

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_operator_plans_a_dry_run_and_runs_it_for_real(pool: PgPool) {
    let env = Env::new(pool);
    for i in 0..FREE {
        let path = format!("photos/2026-05/upload-{i:03}.jpg");
        insert_image(&env.pool, Some(&env.store), &Image::expired(&path, SIZE + i)).await;
    }
    let used = insert_image(&env.pool, Some(&env.store), &Image::expired("photos/2026-05/in-use.jpg", SIZE)).await;
    insert_task(&env.pool, "pending", TaskImages { husband: Some(used), ..TaskImages::default() }, None).await;
    let console = Console::start(&env).await;

    let browser = Browser::start().await;
    console.log_in(&browser, OPS.1).await;
    browser.client.find(Locator::LinkText("Plan a cleanup")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("main h1", |text| text == "Plan a cleanup").await;
    browser.find("form#plan input[name=operation][value=expired]").await.click().await.unwrap();
    browser.find("form#plan button[type=submit]").await.click().await.unwrap();
    browser.wait_for_text("main h1", |text| text == "Plan: cleanup_expired_images").await;
    // No worker yet: the page waits for the dry run, and shows its outcome
    // by itself once a worker has run it (the test never reloads it).
    assert_eq!(browser.text("#plan-status").await, "queued");
    let plan: Uuid = browser.path().await.trim_start_matches("/plan/").parse().expect("the plan's page");
    let _worker = env.worker(&[], &[]);
    let would_delete = browser.wait_for_text("#would-delete", |text| !text.is_empty()).await;
    assert_eq!(would_delete, format!("{FREE} images"));
    assert_eq!(browser.text("#skipped").await, "1");
    assert!(browser.text("#would-free").await.ends_with(&format!("({} bytes)", FREE * SIZE + FREE * (FREE - 1) / 2)));
    let paths = browser.client.find_all(Locator::Css("#sample-paths tbody tr")).await.unwrap();
    assert_eq!(paths.len() as i64, FREE, "every path, while under the sample's cap");
    assert!(browser.text("#sample-paths").await.contains("photos/2026-05/upload-000.jpg"));
    let skipped = browser.text("#skipped-items tbody").await;
    assert!(skipped.contains("photos/2026-05/in-use.jpg") && skipped.contains("in use by a pending task"), "{skipped}");
    assert!(env.store.exists("photos/2026-05/upload-000.jpg"), "a plan deletes nothing");
    browser.screenshot("console-plan").await;

    browser.find("form#run-for-real button").await.click().await.unwrap();
    browser.wait_for_text("main h1", |text| text == "Run it for real?").await;
    let numbers = browser.text("#confirm-numbers").await;
    assert!(numbers.starts_with(&format!("This will delete {FREE} images, ")), "{numbers}");
    browser.find("form#run button").await.click().await.unwrap();
    browser.wait_for_text("main h1", |text| text.starts_with("Job ")).await;
    let real: Uuid = browser.path().await.trim_start_matches("/jobs/").parse().expect("the real job's page");
    assert_ne!(real, plan);
    let done = env.finished(real, Duration::from_secs(60)).await;
    assert_eq!((done.0.as_str(), done.1), ("completed", FREE), "{done:?}");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#status").await, "completed");
    assert_eq!(browser.text("#deleted").await, FREE.to_string(), "the plan's count");
    assert!(browser.text("main").await.contains("cleanup_expired_images"));
    assert!(!env.store.exists("photos/2026-05/upload-000.jpg") && env.store.exists("photos/2026-05/in-use.jpg"));
    let audited: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT path, job_id FROM audit_log WHERE actor = $1 AND path LIKE '/plan%' ORDER BY id")
            .bind(OPS.0)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(audited, [("/plan".to_owned(), Some(plan)), (format!("/plan/{plan}/run"), Some(real))]);
    browser.close().await;
    env.cleanup_keys().await;
}
