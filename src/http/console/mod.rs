//! The operations console: server-rendered HTML pages (maud) on the API's
//! port, for people in a browser. The JSON API stays the interface for
//! programs; the console reads through the same stores and acts through the
//! same functions (`janitor_workers::admin`), under the same tokens.
//!
//! - [`session`]: the session cookie, its table, CSRF tokens.
//! - [`login`]: `/login`, `/logout`.
//! - [`pages`]: the overview (`/`, and `/console/running` that its script
//!   polls), the jobs (`/jobs`, `/jobs/{id}`), the dead letters (`/dead`).
//! - [`actions`]: the POSTs that change something: cancel, retry, discard,
//!   restore a sweep's quarantine.
//! - Read-only pages: `/schedules` (`pages/schedules.rs`), `/audit`
//!   (`pages/audit.rs`); the overview's activity chart (`pages/activity.rs`,
//!   from the `job_activity` ring) and a job's batch histogram
//!   (`pages/chart.rs`, inline SVG); a job's restore form
//!   (`pages/restore.rs`).
//! - "Plan a cleanup": its pages in `pages/plan.rs` (`/plan`, `/plan/{id}`
//!   with `/plan/{id}/status` that its script polls, `/plan/{id}/confirm`),
//!   its POSTs (a dry run, then the same for real) in [`planning`].
//! - [`layout`]: the frame every page shares.
//!
//! Every page and asset is answered with `Content-Security-Policy:
//! default-src 'self'; frame-ancestors 'none'`: no inline script runs, and
//! no other site may frame the console. The CSS and the script are compiled
//! into the binary; nothing is loaded from elsewhere.
//!
//! Pages stay cheap with any number of jobs: lists are keyset pages of at
//! most 50 rows on `job_results`' indexes, totals come from `job_counters`
//! (kept by triggers), queue figures from O(1) Redis commands, and the
//! dead-letter page reads at most 100 letters a lane. The activity chart
//! reads at most 24 x 32 rows of `job_activity`, the schedules two primary
//! key reads per schedule, and an audit page at most 50 rows (a filtered
//! one looks through at most 5,000 entries before it hands over a link).
//! The reclaimable bytes are the figures `stats` last computed, at most a
//! minute old, refreshed in the background (`pages/reclaimable.rs`).

mod actions;
mod layout;
mod login;
mod pages;
mod planning;
pub mod session;

pub use pages::reclaimable::Reclaimable;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use uuid::Uuid;

use self::session::Session;
use super::audit::{self as trail, Entry};
use super::AppState;

/// The console's routes (merged into the API's router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/", get(pages::overview::page))
        .route("/console/running", get(pages::overview::running))
        .route("/jobs", get(pages::jobs::list))
        .route("/jobs/{job_id}", get(pages::jobs::detail))
        .route("/jobs/{job_id}/cancel", post(actions::cancel))
        .route("/jobs/{job_id}/retry", post(actions::retry))
        .route("/jobs/{job_id}/restore", post(actions::restore))
        .route("/schedules", get(pages::schedules::page))
        .route("/audit", get(pages::audit::page))
        .route("/dead", get(pages::dead::list))
        .route("/dead/{entry_id}/discard", post(actions::discard))
        .route("/plan", get(pages::plan::new).post(planning::plan))
        .route("/plan/{job_id}", get(pages::plan::show))
        .route("/plan/{job_id}/status", get(pages::plan::status))
        .route("/plan/{job_id}/confirm", get(pages::plan::confirm))
        .route("/plan/{job_id}/run", post(planning::run))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(headers))
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

async fn css() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], JS).into_response()
}

/// The headers of every console response: the content policy, and no
/// caching of pages (they carry the session's CSRF token and live figures).
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The remote address, when served over TCP: the peer's, and what an audit
/// row records of it (the client's, behind a trusted proxy).
pub struct Remote {
    pub peer: Option<SocketAddr>,
    audited: Option<String>,
}

impl FromRequestParts<AppState> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Ok(Self { peer, audited: state.proxies.audit_address(peer, &parts.headers) })
    }
}

/// Why a console POST may change nothing, if it may not: its form lacks
/// the session's CSRF token, or the session's token is read-only. Every
/// action and the planning forms ask this first, so the two rules live here
/// once.
fn refusal(session: &session::Session, body: &[u8]) -> Option<String> {
    if !session.check_csrf(form_field(body, "csrf").as_deref()) {
        Some("the form's CSRF token is missing or wrong; reload the page and try again".to_owned())
    } else if session.read_only {
        Some(format!("token {:?} is read-only: it may look, not act", session.name))
    } else {
        None
    }
}

/// One field of a form-encoded body, whatever the request's content type
/// says (a body that is no form has no field).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// Writes the audit row of a console request, like the API's gate does.
async fn audit(
    state: &AppState,
    actor: Option<&str>,
    method: &str,
    path: &str,
    remote: &Remote,
    status: u16,
    job_id: Option<Uuid>,
) {
    let entry = Entry {
        actor: actor.map(str::to_owned),
        method: method.to_owned(),
        path: path.to_owned(),
        params: serde_json::json!({ "via": "console" }),
        remote: remote.audited.clone(),
    };
    trail::record(&state.pool, &entry, status, job_id).await;
}

/// The 403 page.
fn forbidden(session: &Session, why: &str) -> Response {
    layout::error(session, super::error::ApiError::Forbidden(why.to_owned()))
}

/// 303 to a page.
fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, location.to_owned())]).into_response()
}
