//! "Plan a cleanup" over HTTP: a dry run from the form, its outcome page
//! (numbers, sample paths, in-use items), the confirmation, the same job
//! for real; bad input refused on the form with nothing enqueued; read-only
//! tokens look and cannot act. The browser suite (`tests/console/plan.rs`)
//! drives the same flow in Chromium.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::client;
use crate::console::{csrf, get, post, session};
use crate::harness::wait_until;
use crate::server::{Api, ApiConfig, OPS, VIEWER};
use crate::support::{insert_image, insert_task, Image, TaskImages};

/// The job id in a 303's `Location: {prefix}{id}`.
fn redirected_job(response: &client::Response, prefix: &str) -> Uuid {
    assert_eq!(response.status, 303, "{}", response.text());
    let location = response.header("location").expect("a location");
    location.strip_prefix(prefix).unwrap_or_else(|| panic!("{location} is not under {prefix}")).parse().unwrap()
}

/// (operation, params, dry_run, status, requested_by) of a job's row.
async fn row(api: &Api, job: Uuid) -> (String, Value, bool, String, Option<String>) {
    sqlx::query_as("SELECT operation, params, dry_run, status, requested_by FROM job_results WHERE job_id = $1")
        .bind(job)
        .fetch_one(api.pool())
        .await
        .unwrap()
}

/// Waits until the plan's status endpoint (what the page's script polls)
/// says the dry run has finished.
async fn until_finished(api: &Api, cookie: &str, plan: Uuid) {
    wait_until("the dry run has finished", Duration::from_secs(60), || async {
        get(api, &format!("/plan/{plan}/status"), cookie).await.json()["finished"] == true
    })
    .await;
}

fn plan_body(csrf: &str, fields: &str) -> String {
    format!("csrf={csrf}&{fields}")
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_plan_is_a_dry_run_then_the_same_job_for_real(pool: PgPool) {
    let api = Api::start(pool).await;
    let store = &api.env.store;
    let used = insert_image(api.pool(), Some(store), &Image::expired("photos/in-use.jpg", 9)).await;
    insert_task(api.pool(), "pending", TaskImages { husband: Some(used), ..TaskImages::default() }, None).await;
    for i in 0..3 {
        insert_image(api.pool(), Some(store), &Image::expired(&format!("photos/p/{i}.jpg"), 1000 + i)).await;
    }
    let _worker = api.env.worker(&[], &[]);
    let cookie = session(&api, OPS.1).await;
    let form = get(&api, "/plan", &cookie).await;
    assert_eq!(form.status, 200, "{}", form.text());
    assert!(form.text().contains(r#"<form id="plan" method="post" action="/plan">"#), "{}", form.text());
    let token = csrf(&form);

    let planned =
        post(&api, "/plan", &cookie, &plan_body(&token, "operation=expired&days_old=30&min_age=1h&limit=")).await;
    let plan = redirected_job(&planned, "/plan/");
    let (operation, _, dry_run, _, by) = row(&api, plan).await;
    assert_eq!((operation.as_str(), dry_run, by.as_deref()), ("cleanup_expired_images", true, Some("ops")));
    until_finished(&api, &cookie, plan).await;

    let page = get(&api, &format!("/plan/{plan}"), &cookie).await.text();
    assert!(page.contains(r#"<dd id="would-delete">3 images</dd>"#), "{page}");
    assert!(page.contains(r#"<dd id="would-free">2.9 KiB (3003 bytes)</dd>"#), "{page}");
    assert!(page.contains(r#"<dd id="skipped">1</dd>"#), "{page}");
    for i in 0..3 {
        assert!(page.contains(&format!("<code>photos/p/{i}.jpg</code>")), "sample path {i}: {page}");
    }
    assert!(page.contains("<code>photos/in-use.jpg</code></td><td>in use by a pending task</td>"), "{page}");
    assert!(store.exists("photos/p/0.jpg"), "a plan deletes nothing");
    // The API reads the same sample from the row's result.
    let result = api.get(&format!("/jobs/{plan}"), Some(OPS.1)).await.json();
    assert_eq!(result["sample"]["would_delete"].as_array().map(Vec::len), Some(3), "{result}");
    assert_eq!(result["sample"]["skipped"][0]["path"], "photos/in-use.jpg", "{result}");

    let confirm = get(&api, &format!("/plan/{plan}/confirm"), &cookie).await;
    let text = confirm.text();
    assert!(
        text.contains("This will delete <strong>3 images</strong>, <strong>2.9 KiB (3003 bytes)</strong>"),
        "{text}"
    );
    assert!(text.contains(&format!(r#"<form id="run" method="post" action="/plan/{plan}/run">"#)), "{text}");
    // The confirmation says how old the numbers are.
    let ended: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT finished_at FROM job_results WHERE job_id = $1")
            .bind(plan)
            .fetch_one(api.pool())
            .await
            .unwrap();
    let stamp = ended.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    assert!(text.contains("the dry run's numbers, from ") && text.contains(&format!(" ago ({stamp})")), "{text}");
    let run = format!("/plan/{plan}/run");
    assert_eq!(post(&api, &run, &cookie, "").await.status, 403, "a run without the CSRF token is refused");
    assert_eq!(api.jobs().await.len(), 1, "and enqueues nothing");
    let real = redirected_job(&post(&api, &run, &cookie, &format!("csrf={}", csrf(&confirm))).await, "/jobs/");
    let (operation, params, dry_run, _, by) = row(&api, real).await;
    assert_eq!((operation.as_str(), dry_run, by.as_deref()), ("cleanup_expired_images", false, Some("ops")));
    assert_eq!(params, row(&api, plan).await.1, "the same parameters");
    let done = api.env.finished(real, Duration::from_secs(60)).await;
    assert_eq!((done.0.as_str(), done.1), ("completed", 3), "the plan's count: {done:?}");
    assert!(!store.exists("photos/p/0.jpg") && store.exists("photos/in-use.jpg"));

    let audited: Vec<_> = api
        .audit_rows()
        .await
        .into_iter()
        .filter(|row| row.2.starts_with("/plan"))
        .map(|row| (row.0.unwrap_or_default(), row.2, row.4, row.6))
        .collect();
    let ops = "ops".to_owned();
    assert_eq!(
        audited,
        [
            (ops.clone(), "/plan".into(), 303, Some(plan)),
            (ops.clone(), run.clone(), 403, None),
            (ops, run, 303, Some(real))
        ]
    );
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn bad_input_is_refused_on_the_form_and_nothing_is_enqueued(pool: PgPool) {
    let api = Api::start(pool).await;
    let cookie = session(&api, OPS.1).await;
    let token = csrf(&get(&api, "/plan", &cookie).await);
    let cases = [
        ("operation=session&session_id=", "session_id"),
        ("operation=session&session_id=a%0Ab", "session_id"),
        ("operation=old-results&days_old=-5", "days_old"),
        ("operation=old-results&days_old=99999999999", "days_old"),
        ("operation=all&days_old=30&min_age=1s", "min_age"),
        ("operation=expired&limit=-1", "limit"),
        ("operation=drop-everything", "operation"),
    ];
    for (fields, field) in cases {
        let refused = post(&api, "/plan", &cookie, &plan_body(&token, fields)).await;
        let text = refused.text();
        assert_eq!(refused.status, 422, "{fields}: {text}");
        assert!(
            text.contains(&format!(r#"<p class="error" id="plan-error" role="alert">{field}: "#)),
            "{fields}: {text}"
        );
        assert!(text.contains(r#"<form id="plan""#), "the form is shown again: {text}");
    }
    // What was typed is kept.
    let kept = post(&api, "/plan", &cookie, &plan_body(&token, "operation=old-results&days_old=-5")).await.text();
    assert!(kept.contains(r#"name="days_old" type="number" value="-5""#), "{kept}");
    assert!(kept.contains(r#"aria-invalid="true""#), "{kept}");
    assert!(api.jobs().await.is_empty(), "nothing was enqueued");
    assert!(api.redis_keys().await.is_empty(), "nothing reached Redis: {:?}", api.redis_keys().await);
    let refusals = api.audit_rows().await.into_iter().filter(|row| row.2 == "/plan" && row.4 == 422).count();
    assert_eq!(refusals, cases.len() + 1, "each refusal is an audit row");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_read_only_token_sees_plans_but_cannot_make_or_run_them(pool: PgPool) {
    let config = ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    insert_image(api.pool(), Some(&api.env.store), &Image::expired("photos/a.jpg", 5)).await;
    // A completed dry run, made in process by the command line.
    let (code, stdout, stderr) = api.env.janitor(&["run", "expired", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let plan: Uuid = serde_json::from_str::<Value>(&stdout).unwrap()["job_id"].as_str().unwrap().parse().unwrap();

    let viewer = session(&api, VIEWER.1).await;
    let form = get(&api, "/plan", &viewer).await.text();
    assert!(form.contains("<fieldset disabled>") && !form.contains(r#"<button type="submit">Plan it"#), "{form}");
    let token = csrf(&get(&api, "/plan", &viewer).await); // The logout form's.
    let refused = post(&api, "/plan", &viewer, &plan_body(&token, "operation=expired")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("read-only"));
    let page = get(&api, &format!("/plan/{plan}"), &viewer).await.text();
    assert!(
        page.contains(r#"<dd id="would-delete">1 image</dd>"#) && page.contains("<code>photos/a.jpg</code>"),
        "{page}"
    );
    assert!(!page.contains("run-for-real"), "{page}");
    let confirm = get(&api, &format!("/plan/{plan}/confirm"), &viewer).await.text();
    assert!(confirm.contains("This will delete") && !confirm.contains(r#"id="run""#), "{confirm}");
    let run = post(&api, &format!("/plan/{plan}/run"), &viewer, &format!("csrf={token}")).await;
    assert_eq!(run.status, 403, "{}", run.text());
    assert_eq!(api.jobs().await.len(), 1, "only the dry run");
    assert!(api.env.store.exists("photos/a.jpg"));

    // An operator cannot run what is not a completed dry run.
    let ops = session(&api, OPS.1).await;
    let ops_token = csrf(&get(&api, "/plan", &ops).await);
    let queued =
        redirected_job(&post(&api, "/plan", &ops, &plan_body(&ops_token, "operation=expired")).await, "/plan/");
    let early = post(&api, &format!("/plan/{queued}/run"), &ops, &format!("csrf={ops_token}")).await;
    assert_eq!(early.status, 409, "no worker runs, so the plan is still queued: {}", early.text());
    let real = api.post("/expired", Some(OPS.1)).await.json()["job_id"].as_str().unwrap().to_owned();
    let page = get(&api, &format!("/plan/{real}"), &ops).await;
    assert_eq!(page.header("location"), Some(format!("/jobs/{real}").as_str()), "a real job has its own page");
    let not_a_plan = post(&api, &format!("/plan/{real}/run"), &ops, &format!("csrf={ops_token}")).await;
    assert_eq!(not_a_plan.status, 409, "{}", not_a_plan.text());
    assert_eq!(api.jobs().await.len(), 3, "the dry run, the queued plan and the API's job; no more");
    assert_eq!(client::form(api.addr, "GET", "/plan", &[], "").await.header("location"), Some("/login"));
    api.finish().await;
}
