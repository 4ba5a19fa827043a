//! Refused requests: no or a wrong token (401), bad input (422), too many
//! requests (429). A refusal enqueues nothing: no job row, no Redis key.

use sqlx::PgPool;

use crate::server::{accepted_job, Api, ApiConfig, CRON, OPS};

/// Asserts that nothing was enqueued: no job row and no key under the prefix.
async fn assert_nothing_enqueued(api: &Api) {
    assert_eq!(api.jobs().await, [], "no job row");
    assert_eq!(api.redis_keys().await, Vec::<String>::new(), "no Redis key under the prefix");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_missing_or_wrong_token_is_401_and_enqueues_nothing(pool: PgPool) {
    let api = Api::start(pool).await;
    let wrong = "ops-token-0123456789abcdeX";
    for (method, path) in
        [("POST", "/all"), ("POST", "/session/s1"), ("POST", "/expired?wait=true"), ("GET", "/stats"), ("GET", "/jobs")]
    {
        for token in [None, Some(wrong), Some(""), Some(&OPS.1[..OPS.1.len() - 1])] {
            let response =
                crate::client::request(api.addr, method, &format!("/api/v1/admin/cleanup{path}"), token).await;
            assert_eq!(response.status, 401, "{method} {path} with {token:?}: {}", response.text());
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert!(response.json()["error"].is_string());
        }
    }
    assert_nothing_enqueued(&api).await;
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn health_metrics_the_openapi_document_and_its_reference_page_need_no_token(pool: PgPool) {
    let api = Api::start(pool).await;
    let health = api.get_root("/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    let ready = api.get_root("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json(), serde_json::json!({"database": true, "redis": true}));
    let metrics = api.get_root("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("# TYPE janitor_queue_depth gauge"), "{}", metrics.text());
    let openapi = api.get_root("/openapi.json").await;
    assert_eq!(openapi.status, 200);
    let paths = openapi.json()["paths"].clone();
    for path in ["expired", "session/{session_id}", "old-results", "orphaned", "all", "stats", "jobs", "jobs/{job_id}"]
    {
        assert!(paths.get(format!("/api/v1/admin/cleanup/{path}")).is_some(), "{path} is documented: {paths}");
    }
    // The API reference: a page and its files, all served from the binary,
    // the page allowed to load only from this server.
    let page = api.get_root("/docs").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "{policy}");
    assert!(!page.text().contains("://"), "nothing from elsewhere: {}", page.text());
    for (file, kind) in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/init.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
    ] {
        assert!(page.text().contains(file), "the page loads {file}");
        let served = api.get_root(file).await;
        assert_eq!(served.status, 200, "{file}");
        assert!(served.header("content-type").unwrap_or_default().starts_with(kind), "{file}");
        assert!(!served.body.is_empty(), "{file}");
    }
    assert!(api.get_root("/docs/init.js").await.text().contains("\"/openapi.json\""));
    assert_nothing_enqueued(&api).await;
    assert!(api.audit_rows().await.is_empty(), "only admin requests are audited");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn bad_input_is_422_naming_the_field_and_enqueues_nothing(pool: PgPool) {
    let api = Api::start(pool).await;
    let long = "a".repeat(256);
    let cases = [
        ("/old-results?days_old=0".to_owned(), "days_old"),
        ("/old-results?days_old=-1".to_owned(), "days_old"),
        ("/old-results?days_old=36501".to_owned(), "days_old"),
        ("/old-results?days_old=abc".to_owned(), "days_old"),
        ("/all?days_old=0".to_owned(), "days_old"),
        ("/session/bad%07id".to_owned(), "session_id"),
        (format!("/session/{long}"), "session_id"),
        ("/expired?force=1".to_owned(), "force"),
        ("/session/s1?days_old=3".to_owned(), "days_old"),
        ("/orphaned?dry_run=maybe".to_owned(), "dry_run"),
        ("/expired?dry_run=1&dry_run=0".to_owned(), "dry_run"),
        ("/expired?wait=true&timeout=0".to_owned(), "timeout"),
        ("/all?wait=true&timeout=301".to_owned(), "timeout"),
        ("/orphaned?min_age=0".to_owned(), "min_age"),
        ("/orphaned?min_age=599".to_owned(), "min_age"),
        ("/orphaned?min_age=315360001".to_owned(), "min_age"),
        ("/orphaned?min_age=-1".to_owned(), "min_age"),
        ("/all?min_age=18446744073709551616".to_owned(), "min_age"),
        ("/expired?min_age=3600".to_owned(), "min_age"),
    ];
    for (path, field) in &cases {
        let response = api.post(path, Some(OPS.1)).await;
        assert_eq!(response.status, 422, "{path}: {}", response.text());
        let body = response.json();
        assert_eq!(body["field"], *field, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    assert_eq!(api.get("/stats?verbose=1", Some(OPS.1)).await.json()["field"], "verbose");
    assert_nothing_enqueued(&api).await;

    // The boundaries themselves are accepted.
    accepted_job(&api.post(&format!("/session/{}", "a".repeat(255)), Some(OPS.1)).await);
    accepted_job(&api.post("/old-results?days_old=1", Some(OPS.1)).await);
    accepted_job(&api.post("/old-results?days_old=36500", Some(OPS.1)).await);
    accepted_job(&api.post("/orphaned?min_age=600", Some(OPS.1)).await);
    accepted_job(&api.post("/all?min_age=315360000", Some(OPS.1)).await);
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_sixth_full_sweep_within_the_hour_is_429_for_that_token_only(pool: PgPool) {
    let api = Api::start(pool).await;
    // Distinct parameters, so that each is a job of its own (equal ones
    // would be deduplicated).
    for i in 0..5 {
        assert_eq!(api.post(&format!("/all?days_old={}", i + 1), Some(OPS.1)).await.status, 202, "request {i}");
    }
    let refused = api.post("/all?days_old=6", Some(OPS.1)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=720).contains(&retry_after), "one request per 12 minutes refills: {retry_after}");
    assert!(refused.json()["error"].is_string());
    // Another token has its own budget, and other classes are untouched.
    accepted_job(&api.post("/all", Some(CRON.1)).await);
    accepted_job(&api.post("/session/s1", Some(OPS.1)).await);
    assert_eq!(api.jobs().await.len(), 7, "the refused request enqueued nothing");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn rate_limits_are_configurable_per_class(pool: PgPool) {
    let config = ApiConfig { rate_limits: "session=2/m".to_owned(), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    accepted_job(&api.post("/session/a", Some(OPS.1)).await);
    accepted_job(&api.post("/session/b", Some(OPS.1)).await);
    let refused = api.post("/session/c", Some(OPS.1)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "two per minute refill one every 30 s: {retry_after}");
    // Classes without a configured limit are not limited at all.
    for i in 0..7 {
        accepted_job(&api.post(&format!("/all?days_old={}", i + 1), Some(OPS.1)).await);
    }
    assert_eq!(api.jobs().await.len(), 9);
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn failed_authentication_is_limited_per_address_and_its_repeats_are_one_audit_row(pool: PgPool) {
    let config = ApiConfig { rate_limits: "auth_failure=3/h".to_owned(), ..ApiConfig::default() };
    let mut api = Api::with(pool, config).await;
    let wrong = "ops-token-0123456789abcdeX";
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(api.post("/expired", Some(wrong)).await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    let refused = api.post("/expired", Some(OPS.1)).await;
    assert_eq!(refused.status, 429, "past its limit an address is refused before its token is looked at");
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    let outcomes = || async {
        let rows = api.audit_rows().await;
        rows.into_iter().map(|row| (row.4, row.5)).collect::<Vec<_>>()
    };
    assert_eq!(outcomes().await, [(401, "unauthorized".to_owned())], "the repeats are counted, not written");

    // The summary row is written when the window ends, or at shutdown.
    api.stop();
    type Row = (String, i32, serde_json::Value, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as("SELECT outcome, status, params, remote, detail FROM audit_log ORDER BY id")
        .fetch_all(api.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (outcome, status, params, remote, detail) = &rows[1];
    assert_eq!((outcome.as_str(), *status), ("unauthorized_repeated", 429));
    assert_eq!(params["repeats"], 10, "2 more failures and 8 refusals: {params}");
    assert_eq!((params["unauthorized"].as_u64(), params["rate_limited"].as_u64()), (Some(2), Some(8)));
    assert_eq!(remote.as_deref(), Some("127.0.0.1"));
    assert!(detail.as_deref().is_some_and(|d| d.contains("10 further failed authentications")), "{detail:?}");
    assert_nothing_enqueued(&api).await;
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn without_tokens_a_post_needs_the_request_header_that_no_cross_site_page_can_send(pool: PgPool) {
    let config = ApiConfig { tokens: None, ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    let target = "/api/v1/admin/cleanup/expired?dry_run=true";
    for (name, value) in [("Content-Type", "text/plain"), ("Origin", "http://evil.example")] {
        let response = crate::client::request_with(api.addr, "POST", target, None, &[(name, value)]).await;
        assert_eq!(response.status, 403, "a simple cross-site POST: {}", response.text());
        assert!(response.json()["error"].as_str().is_some_and(|e| e.contains("X-Janitor-Request")));
    }
    assert_nothing_enqueued(&api).await;
    assert_eq!(api.get("/stats", None).await.status, 200, "reads need no header");
    let accepted = crate::client::request_with(api.addr, "POST", target, None, &[("X-Janitor-Request", "1")]).await;
    accepted_job(&accepted);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM audit_log ORDER BY id").fetch_all(api.pool()).await.unwrap();
    assert_eq!(outcomes, ["forbidden", "forbidden", "accepted", "accepted"]);
    api.finish().await;
}
