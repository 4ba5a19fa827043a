//! The operations console over HTTP (the browser suite, `tests/console`,
//! drives it in a real browser): login and its cookie, redirects without a
//! session, CSRF on every change, read-only sessions, logout.

use sqlx::PgPool;
use uuid::Uuid;

use crate::client::{self, Response};
use crate::server::{accepted_job, Api, ApiConfig, OPS, VIEWER};

/// Logs in as a browser does: gets the form (its CSRF token and the
/// cookie that carries it), then posts it with the token.
pub(crate) async fn login(api: &Api, token: &str, headers: &[(&str, &str)]) -> Response {
    let form = client::form(api.addr, "GET", "/login", headers, "").await;
    let (csrf, cookie) = login_form_token(&form);
    let body = format!("token={}&csrf={csrf}", client::encode(token));
    let mut headers = headers.to_vec();
    headers.push(("Cookie", &cookie));
    client::form(api.addr, "POST", "/login", &headers, &body).await
}

/// The login form's CSRF field and the `Cookie` header value of its cookie.
fn login_form_token(form: &Response) -> (String, String) {
    let text = form.text();
    let csrf = text.split(r#"name="csrf" value=""#).nth(1).and_then(|rest| rest.split('"').next());
    let csrf = csrf.unwrap_or_else(|| panic!("no csrf field in {text}")).to_owned();
    let set = form.headers.iter().find(|(name, value)| name == "set-cookie" && value.starts_with("janitor_login="));
    let cookie = set.expect("the login form's cookie").1.split(';').next().unwrap().to_owned();
    (csrf, cookie)
}

/// The session cookie a response set, if any.
fn session_cookie(response: &Response) -> Option<&str> {
    response
        .headers
        .iter()
        .find(|(name, value)| name == "set-cookie" && value.starts_with("janitor_session="))
        .map(|(_, value)| value.as_str())
}

/// Logs in and returns the `Cookie` header value of the session.
pub(crate) async fn session(api: &Api, token: &str) -> String {
    let response = login(api, token, &[]).await;
    assert_eq!(response.status, 303, "{}", response.text());
    let set = response.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_owned()
}

pub(crate) async fn get(api: &Api, path: &str, cookie: &str) -> Response {
    client::form(api.addr, "GET", path, &[("Cookie", cookie)], "").await
}

pub(crate) async fn post(api: &Api, path: &str, cookie: &str, body: &str) -> Response {
    client::form(api.addr, "POST", path, &[("Cookie", cookie)], body).await
}

/// The CSRF token of a page's forms.
pub(crate) fn csrf(page: &Response) -> String {
    let text = page.text();
    let at = text.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no csrf field in {text}"));
    let rest = &text[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn status_of(api: &Api, job: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM job_results WHERE job_id = $1")
        .bind(job)
        .fetch_one(api.pool())
        .await
        .unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_good_token_logs_in_with_a_strict_cookie_and_a_wrong_one_sets_nothing(pool: PgPool) {
    let api = Api::start(pool).await;
    let form = client::form(api.addr, "GET", "/login", &[], "").await;
    assert_eq!(form.status, 200);
    assert!(form.text().contains(r#"<form id="login" method="post" action="/login">"#), "{}", form.text());
    assert_eq!(form.header("content-security-policy"), Some("default-src 'self'; frame-ancestors 'none'"));

    let wrong = login(&api, "ops-token-0123456789abcdeX", &[]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(session_cookie(&wrong), None);
    assert!(wrong.text().contains(r#"<p class="error" role="alert">"#), "{}", wrong.text());

    let good = login(&api, OPS.1, &[]).await;
    assert_eq!((good.status, good.header("location")), (303, Some("/")), "{}", good.text());
    let cookie = session_cookie(&good).unwrap();
    assert!(cookie.starts_with("janitor_session="), "{cookie}");
    for flag in ["; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let behind_tls = login(&api, OPS.1, &[("X-Forwarded-Proto", "https")]).await;
    assert!(session_cookie(&behind_tls).unwrap().ends_with("; Secure"));

    let id = cookie.split(';').next().unwrap().trim_start_matches("janitor_session=");
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id_hash FROM console_sessions").fetch_all(api.pool()).await.unwrap();
    assert_eq!(stored.len(), 2, "one row per login");
    assert!(stored.iter().all(|hash| hash.len() == 32 && hash != id.as_bytes()), "only the id's hash is stored");

    let overview = get(&api, "/", cookie.split(';').next().unwrap()).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    for part in ["<h1>Overview</h1>", r#"<section id="queues""#, r#"<section id="running""#, r#"<section id="dead""#] {
        assert!(overview.text().contains(part), "{part} in {}", overview.text());
    }
    let logins: Vec<_> =
        api.audit_rows().await.into_iter().filter(|row| row.2 == "/login").map(|r| (r.0, r.4)).collect();
    assert_eq!(logins, [(None, 401), (Some("ops".into()), 303), (Some("ops".into()), 303)], "logins are audited");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn pages_without_a_session_redirect_to_login(pool: PgPool) {
    let api = Api::start(pool).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);
    let forged = format!("janitor_session={}", "a".repeat(64));
    for cookie in ["", "janitor_session=nope", forged.as_str()] {
        for path in ["/", "/jobs", &format!("/jobs/{job}"), "/dead", "/console/running"] {
            let response = get(&api, path, cookie).await;
            assert_eq!((response.status, response.header("location")), (303, Some("/login")), "{path} {cookie:?}");
        }
        let cancel = post(&api, &format!("/jobs/{job}/cancel"), cookie, "").await;
        assert_eq!((cancel.status, cancel.header("location")), (303, Some("/login")));
    }
    assert_eq!(status_of(&api, job).await, "queued");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_cancel_needs_the_sessions_csrf_token(pool: PgPool) {
    let api = Api::start(pool).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);
    let cookie = session(&api, OPS.1).await;

    let list = get(&api, "/jobs", &cookie).await;
    assert!(list.text().contains(&format!(r#"<tr data-job-id="{job}">"#)), "{}", list.text());
    let running = get(&api, "/console/running", &cookie).await;
    assert_eq!(running.json(), serde_json::json!({ "running": [] }));
    let page = get(&api, &format!("/jobs/{job}"), &cookie).await;
    assert!(page.text().contains(r#"<dd id="status">queued</dd>"#), "{}", page.text());
    assert!(page.text().contains(&format!(r#"<form id="cancel" method="post" action="/jobs/{job}/cancel">"#)));
    assert!(!page.text().contains(r#"<form id="retry""#), "a queued job is not retried");
    let token = csrf(&page);

    let cancel = format!("/jobs/{job}/cancel");
    let other = "0".repeat(token.len());
    for body in [String::new(), format!("csrf={other}"), "csrf=".to_owned()] {
        let refused = post(&api, &cancel, &cookie, &body).await;
        assert_eq!(refused.status, 403, "{body:?}: {}", refused.text());
        assert_eq!(status_of(&api, job).await, "queued", "a refused POST changes nothing");
    }
    let done = post(&api, &cancel, &cookie, &format!("csrf={token}")).await;
    assert_eq!((done.status, done.header("location")), (303, Some(format!("/jobs/{job}").as_str())), "{}", done.text());
    assert_eq!(status_of(&api, job).await, "cancelled");
    let after = get(&api, &format!("/jobs/{job}"), &cookie).await;
    assert!(after.text().contains(r#"<form id="retry""#) && !after.text().contains(r#"<form id="cancel""#));

    let audited: Vec<_> =
        api.audit_rows().await.into_iter().filter(|row| row.2 == cancel).map(|row| (row.0, row.4, row.6)).collect();
    let ops = Some("ops".to_owned());
    assert_eq!(audited.len(), 4, "{audited:?}");
    assert_eq!(audited[3], (ops.clone(), 303, Some(job)), "{audited:?}");
    assert!(audited[..3].iter().all(|row| row.0 == ops && row.1 == 403), "{audited:?}");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_read_only_session_sees_no_cancel_form_and_cannot_cancel(pool: PgPool) {
    let config = ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);
    let cookie = session(&api, VIEWER.1).await;
    let page = get(&api, &format!("/jobs/{job}"), &cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains(r#"<dd id="status">queued</dd>"#), "{}", page.text());
    assert!(!page.text().contains(r#"id="cancel""#), "no cancel form: {}", page.text());
    assert!(page.text().contains(">viewer<"), "the token's name is shown");

    let token = csrf(&page); // The logout form's: a read-only session may log out.
    let refused = post(&api, &format!("/jobs/{job}/cancel"), &cookie, &format!("csrf={token}")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("read-only"), "{}", refused.text());
    assert_eq!(status_of(&api, job).await, "queued");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn logout_ends_the_session(pool: PgPool) {
    let api = Api::start(pool).await;
    let cookie = session(&api, OPS.1).await;
    let page = get(&api, "/", &cookie).await;
    assert!(page.text().contains(r#"<form id="logout" method="post" action="/logout">"#), "{}", page.text());
    let token = csrf(&page);

    let refused = post(&api, "/logout", &cookie, "").await;
    assert_eq!(refused.status, 403, "a logout without the CSRF token is refused");
    assert_eq!(get(&api, "/", &cookie).await.status, 200, "and the session lives on");

    let out = post(&api, "/logout", &cookie, &format!("csrf={token}")).await;
    assert_eq!((out.status, out.header("location")), (303, Some("/login")), "{}", out.text());
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let old = get(&api, "/", &cookie).await;
    assert_eq!((old.status, old.header("location")), (303, Some("/login")), "the old cookie is no session");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(api.pool()).await.unwrap();
    assert_eq!(left, 0);
    let logouts: Vec<_> = api.audit_rows().await.into_iter().filter(|row| row.2 == "/logout").map(|r| r.4).collect();
    assert_eq!(logouts, [403, 303]);
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_expired_session_is_no_session_and_is_deleted(pool: PgPool) {
    let api = Api::start(pool).await;
    let cookie = session(&api, OPS.1).await;
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(api.pool())
        .await
        .unwrap();
    let page = get(&api, "/", &cookie).await;
    assert_eq!((page.status, page.header("location")), (303, Some("/login")));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(api.pool()).await.unwrap();
    assert_eq!(left, 0, "deleted when seen");
    api.finish().await;
}

/// A session lives only while the token it was opened with is configured
/// with the same value: a leaked token given a new value under the same
/// name ends the sessions opened with the old one. (The session's row is
/// made to carry another value's hash, as a session opened before the
/// rotation would.)
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_session_of_a_token_value_no_longer_configured_ends(pool: PgPool) {
    let api = Api::start(pool).await;
    let cookie = session(&api, OPS.1).await;
    assert_eq!(get(&api, "/", &cookie).await.status, 200);
    sqlx::query("UPDATE console_sessions SET token_hash = sha256('the token value before the rotation'::bytea)")
        .execute(api.pool())
        .await
        .unwrap();
    let page = get(&api, "/", &cookie).await;
    assert_eq!((page.status, page.header("location")), (303, Some("/login")), "{}", page.text());
    api.finish().await;
}

/// A login posted without the form's CSRF token (as another site's page
/// would post it: it cannot read the form's cookie, and the browser does
/// not send it cross-site), or with another form's, is refused before the
/// token is looked at, even with a good token: no session, audited.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_login_without_its_forms_csrf_token_is_refused(pool: PgPool) {
    let api = Api::start(pool).await;
    let body = format!("token={}", client::encode(OPS.1));
    let bare = client::form(api.addr, "POST", "/login", &[], &body).await;
    assert_eq!(bare.status, 403, "{}", bare.text());
    assert_eq!(session_cookie(&bare), None);
    assert!(bare.text().contains("sent from another site"), "{}", bare.text());

    // One form's field with another form's cookie.
    let (csrf, _) = login_form_token(&client::form(api.addr, "GET", "/login", &[], "").await);
    let (_, cookie) = login_form_token(&client::form(api.addr, "GET", "/login", &[], "").await);
    let body = format!("token={}&csrf={csrf}", client::encode(OPS.1));
    let crossed = client::form(api.addr, "POST", "/login", &[("Cookie", &cookie)], &body).await;
    assert_eq!(crossed.status, 403, "{}", crossed.text());
    assert_eq!(session_cookie(&crossed), None);

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(api.pool()).await.unwrap();
    assert_eq!(stored, 0, "no session was made");
    let logins: Vec<_> =
        api.audit_rows().await.into_iter().filter(|row| row.2 == "/login").map(|r| (r.0, r.4)).collect();
    assert_eq!(logins, [(None, 403)], "the refusal is audited once (its repeat counts, as wrong tokens do)");
    let good = login(&api, OPS.1, &[]).await;
    assert_eq!(good.status, 303, "the form's own token logs in: {}", good.text());
    api.finish().await;
}
