//! Restoring a finished orphan sweep's quarantine, through the API
//! (`POST /api/v1/admin/cleanup/jobs/{id}/restore`) and the console's
//! button: the guards (ended, a sweep, a quarantine there), read-only
//! tokens, CSRF, the audit rows, and a server without a storage root.

use sqlx::PgPool;
use uuid::Uuid;

use super::job;
use crate::console::{csrf, get, post, session};
use crate::server::{Api, ApiConfig, BASE, OPS, VIEWER};

const ORPHAN: &str = "photos/a/orphan.jpg";

fn trashed(job: Uuid) -> String {
    format!(".janitor-trash/{job}/{ORPHAN}")
}

/// A real orphan sweep (`janitor run orphaned`) that quarantines one file.
async fn sweep(api: &Api) -> Uuid {
    let store = &api.env.store;
    store.write(ORPHAN, 3);
    store.wait_until_older(&[ORPHAN], std::time::Duration::from_secs(1)).await;
    let args = ["run", "orphaned", "--max-orphan-ratio", "1", "--min-age", "1s", "--min-grace", "1s", "--json"];
    let (code, stdout, stderr) = api.env.janitor(&args).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let job: Uuid =
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["job_id"].as_str().unwrap().parse().unwrap();
    assert!(store.exists(&trashed(job)) && !store.exists(ORPHAN), "the sweep quarantined the orphan");
    job
}

/// A sweep's row in `status`, with a quarantined file, without running it.
async fn recorded_sweep(api: &Api, status: &str) -> Uuid {
    let id = job(api.pool(), "cleanup_orphaned_files", false, &format!("status = '{status}', deleted_count = 1")).await;
    api.env.store.write(&trashed(id), 3);
    id
}

/// (actor, status, job id) of the audit rows of a path.
async fn audited(api: &Api, path: &str) -> Vec<(Option<String>, i32, Option<Uuid>)> {
    api.audit_rows().await.into_iter().filter(|row| row.2 == path).map(|row| (row.0, row.4, row.6)).collect()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_api_restores_an_ended_sweeps_quarantine_behind_its_guards(pool: PgPool) {
    let api = Api::with(pool, ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() }).await;
    let swept = sweep(&api).await;
    let restore = |job: Uuid| format!("/jobs/{job}/restore");
    let refused = api.post(&restore(swept), Some(VIEWER.1)).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("read-only"));

    let running = recorded_sweep(&api, "running").await;
    let refused = api.post(&restore(running), Some(OPS.1)).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    let error = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("is still running") && error.contains("cancel it first"), "{error}");
    assert!(api.env.store.exists(&trashed(running)), "a refusal moves nothing");
    let expired = job(api.pool(), "cleanup_expired_images", false, "status = 'completed'").await;
    let refused = api.post(&restore(expired), Some(OPS.1)).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("quarantines nothing"));
    assert_eq!(api.post(&restore(Uuid::new_v4()), Some(OPS.1)).await.status, 404);
    assert_eq!(api.post("/jobs/not-a-uuid/restore", Some(OPS.1)).await.status, 422);
    assert!(api.env.store.exists(&trashed(swept)), "still in the trash");

    let done = api.post(&restore(swept), Some(OPS.1)).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json(), serde_json::json!({ "job_id": swept, "restored": 1, "conflicts": [] }));
    assert!(api.env.store.exists(ORPHAN) && !api.env.store.exists(&format!(".janitor-trash/{swept}")));
    let again = api.post(&restore(swept), Some(OPS.1)).await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.json()["error"].as_str().unwrap().contains("has no quarantined files"), "{}", again.text());

    let path = format!("{BASE}/jobs/{swept}/restore");
    let (viewer, ops) = (Some("viewer".to_owned()), Some("ops".to_owned()));
    assert_eq!(
        audited(&api, &path).await,
        [(viewer, 403, None), (ops.clone(), 200, Some(swept)), (ops, 409, Some(swept))]
    );
    let spec = api.get_root("/openapi.json").await.json();
    let documented = &spec["paths"][format!("{BASE}/jobs/{{job_id}}/restore")]["post"]["responses"];
    assert!(documented["200"].is_object() && documented["409"].is_object(), "{documented}");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_console_restores_with_its_csrf_token_and_never_for_a_read_only_token(pool: PgPool) {
    let api = Api::with(pool, ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() }).await;
    let swept = recorded_sweep(&api, "completed").await;
    let (page_path, action) = (format!("/jobs/{swept}"), format!("/jobs/{swept}/restore"));

    let viewer = session(&api, VIEWER.1).await;
    let page = get(&api, &page_path, &viewer).await;
    assert!(page.text().contains("A read-only token cannot restore them."), "{}", page.text());
    assert!(!page.text().contains(r#"<form id="restore""#), "{}", page.text());
    let refused = post(&api, &action, &viewer, &format!("csrf={}", csrf(&page))).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("read-only"), "{}", refused.text());

    let ops_session = session(&api, OPS.1).await;
    let page = get(&api, &page_path, &ops_session).await;
    let form = format!(r#"<form id="restore" method="post" action="{action}">"#);
    assert!(page.text().contains(&form), "{}", page.text());
    for body in [String::new(), format!("csrf={}", "0".repeat(64))] {
        let refused = post(&api, &action, &ops_session, &body).await;
        assert_eq!(refused.status, 403, "{body:?}: {}", refused.text());
        assert!(refused.text().contains("CSRF"), "{}", refused.text());
    }
    assert!(api.env.store.exists(&trashed(swept)), "nothing refused moved anything");

    let done = post(&api, &action, &ops_session, &format!("csrf={}", csrf(&page))).await;
    let next = format!("/jobs/{swept}?restored=1&left=0");
    assert_eq!((done.status, done.header("location")), (303, Some(next.as_str())), "{}", done.text());
    assert!(api.env.store.exists(ORPHAN) && !api.env.store.exists(&trashed(swept)));
    let after = get(&api, &next, &ops_session).await.text();
    assert!(after.contains("Restored 1 files.") && after.contains(r#"id="no-quarantine""#), "{after}");
    assert!(!after.contains(&form), "nothing is left to restore: {after}");

    let (viewer, ops) = (Some("viewer".to_owned()), Some("ops".to_owned()));
    let rows = audited(&api, &action).await;
    assert_eq!(
        rows,
        [(viewer, 403, None), (ops.clone(), 403, None), (ops.clone(), 403, None), (ops, 303, Some(swept))]
    );
    // A sweep that has not ended offers no restore.
    let running = recorded_sweep(&api, "running").await;
    let page = get(&api, &format!("/jobs/{running}"), &ops_session).await;
    assert!(!page.text().contains(r#"id="quarantine""#), "{}", page.text());
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn without_a_storage_root_restoring_explains_itself(pool: PgPool) {
    let api = Api::with(pool, ApiConfig { storage_root: false, ..ApiConfig::default() }).await;
    let swept = recorded_sweep(&api, "completed").await;
    let refused = api.post(&format!("/jobs/{swept}/restore"), Some(OPS.1)).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let error = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("no storage root") && error.contains("JANITOR_STORAGE_ROOT"), "{error}");

    let cookie = session(&api, OPS.1).await;
    let page = get(&api, &format!("/jobs/{swept}"), &cookie).await.text();
    assert!(page.contains(r#"<p class="error" id="restore-unavailable">"#), "{page}");
    assert!(page.contains("JANITOR_STORAGE_ROOT") && !page.contains(r#"<form id="restore""#), "{page}");
    assert!(api.env.store.exists(&trashed(swept)), "nothing moved");
    api.finish().await;
}

/// A client that hangs up in the middle of a long restore does not stop it
/// (the files go on moving on a blocking thread), and the audit row of what
/// was done is still written: the request runs in a task of its own.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_restore_whose_client_hung_up_is_still_audited(pool: PgPool) {
    use tokio::io::AsyncWriteExt as _;
    let api = Api::with(pool, ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() }).await;
    let id = job(api.pool(), "cleanup_orphaned_files", false, "status = 'completed', deleted_count = 1").await;
    // Enough files that the restore outlasts the hang-up.
    let files = 20_000;
    for i in 0..files {
        api.env.store.write(&format!(".janitor-trash/{id}/photos/{:03}/{i}.jpg", i / 1000), 1);
    }
    let mut conn = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let request = format!(
        "POST {BASE}/jobs/{id}/restore HTTP/1.1\r\nHost: janitor\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
        OPS.1
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // Hang up once the restore has begun: the first file is back.
    let first = "photos/000/0.jpg";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !api.env.store.exists(first) {
        assert!(std::time::Instant::now() < deadline, "the restore never began");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    drop(conn);
    assert!(!api.env.store.exists(&format!("photos/019/{}.jpg", files - 1)), "hung up before the restore ended");

    let path = format!("{BASE}/jobs/{id}/restore");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while audited(&api, &path).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no audit row for the restore");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(audited(&api, &path).await, [(Some("ops".to_owned()), 200, Some(id))]);
    assert!(api.env.store.exists(&format!("photos/019/{}.jpg", files - 1)), "the restore finished");
    api.finish().await;
}
