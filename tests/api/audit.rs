//! The audit trail: every admin request, accepted or refused, is one
//! `audit_log` row (repeated failed authentications from one address are
//! one row a window), and `janitor audit` lists them.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::server::{accepted_job, Api, ApiConfig, AuditRow, BASE, OPS};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn every_request_accepted_or_refused_has_an_audit_row(pool: PgPool) {
    let config = ApiConfig { rate_limits: "session=1/m".to_owned(), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    let old_results = accepted_job(&api.post("/old-results?days_old=7&dry_run=true", Some(OPS.1)).await);
    let session = accepted_job(&api.post("/session/s1", Some(OPS.1)).await);
    assert_eq!(api.post("/session/s2", Some(OPS.1)).await.status, 429);
    assert_eq!(api.post("/expired", None).await.status, 401);
    assert_eq!(api.post("/expired", Some("not-a-token-at-all-xyz")).await.status, 401);
    assert_eq!(api.post("/old-results?days_old=0", Some(OPS.1)).await.status, 422);
    assert_eq!(api.post("/expired?force=1", Some(OPS.1)).await.status, 422);
    assert_eq!(api.post("/session/a%07b", Some(OPS.1)).await.status, 422);
    assert_eq!(api.get(&format!("/jobs/{session}"), Some(OPS.1)).await.status, 200);
    assert_eq!(api.get(&format!("/jobs/{}", Uuid::nil()), Some(OPS.1)).await.status, 404);

    let ops = Some("ops".to_owned());
    let path = |p: &str| format!("{BASE}{p}");
    let expected: Vec<AuditRow> = vec![
        (
            ops.clone(),
            "POST".into(),
            path("/old-results"),
            json!({"days_old": "7", "dry_run": "true"}),
            202,
            "accepted".into(),
            Some(old_results),
        ),
        (ops.clone(), "POST".into(), path("/session/s1"), json!({}), 202, "accepted".into(), Some(session)),
        (ops.clone(), "POST".into(), path("/session/s2"), json!({}), 429, "rate_limited".into(), None),
        // The second failure from the same address is counted for the
        // window's summary row (see `failed_authentication_is_limited...`).
        (None, "POST".into(), path("/expired"), json!({}), 401, "unauthorized".into(), None),
        (ops.clone(), "POST".into(), path("/old-results"), json!({"days_old": "0"}), 422, "invalid".into(), None),
        (ops.clone(), "POST".into(), path("/expired"), json!({"raw_query": "force=1"}), 422, "invalid".into(), None),
        (ops.clone(), "POST".into(), path("/session/a%07b"), json!({}), 422, "invalid".into(), None),
        (ops.clone(), "GET".into(), path(&format!("/jobs/{session}")), json!({}), 200, "accepted".into(), None),
        (ops.clone(), "GET".into(), path(&format!("/jobs/{}", Uuid::nil())), json!({}), 404, "not_found".into(), None),
    ];
    let rows = api.audit_rows().await;
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, expected) in rows.iter().zip(&expected) {
        assert_eq!(row, expected);
    }
    let remotes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT remote FROM audit_log").fetch_all(api.pool()).await.unwrap();
    assert!(remotes.iter().all(|r| r.as_deref().is_some_and(|r| r.starts_with("127.0.0.1:"))), "{remotes:?}");

    // `janitor audit` shows the same rows, newest first.
    let (code, stdout, stderr) = api.env.janitor(&["audit", "--since", "1h", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<Value> = serde_json::from_str(&stdout).expect("janitor audit --json prints an array");
    assert_eq!(listed.len(), expected.len(), "{stdout}");
    for (listed, expected) in listed.iter().zip(expected.iter().rev()) {
        assert_eq!(listed["actor"].as_str(), expected.0.as_deref(), "{listed}");
        assert_eq!((listed["method"].as_str(), listed["path"].as_str()), (Some(&*expected.1), Some(&*expected.2)));
        assert_eq!((&listed["params"], listed["status"].as_i64()), (&expected.3, Some(i64::from(expected.4))));
        assert_eq!(listed["outcome"].as_str(), Some(&*expected.5));
        assert_eq!(listed["job_id"].as_str().map(|id| id.parse::<Uuid>().unwrap()), expected.6);
        assert!(listed["at"].is_string());
    }
    api.finish().await;
}
