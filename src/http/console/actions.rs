//! The console's POSTs that change something: cancel and retry a job,
//! restore a sweep's quarantine, discard a dead letter. Each one, in this
//! order:
//!
//! 1. needs a session (else 303 to `/login`, changing nothing);
//! 2. needs the session's CSRF token in the form's `csrf` field (else 403);
//! 3. needs a session that is not read-only (else 403);
//! 4. takes from the token's `control` rate limit, as the API does;
//! 5. acts through the same functions as the API (`janitor_workers::admin`);
//!
//! and is one audit row under the token's name, whatever its outcome. A
//! done action answers 303 to the page to look at next.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::response::{IntoResponse as _, Response};
use uuid::Uuid;

use super::session::Session;
use super::{audit, forbidden, layout, refusal, see_other, Remote};
use crate::http::error::ApiError;
use crate::http::{jobs, AppState};

/// What every action shares: the request it came in, for its audit row.
struct Action<'a> {
    state: &'a AppState,
    session: &'a Session,
    path: String,
    remote: Remote,
}

impl Action<'_> {
    /// Steps 2 to 4; `Err` is the refusal, audited.
    async fn admit(&self, body: &[u8]) -> Result<(), Response> {
        if let Some(why) = refusal(self.session, body) {
            self.audit(403, None).await;
            return Err(forbidden(self.session, &why));
        }
        if let Err(retry_after) = self.state.limits.check(&self.session.name, "control") {
            self.audit(429, None).await;
            return Err(layout::error(self.session, ApiError::RateLimited { retry_after }));
        }
        Ok(())
    }

    async fn audit(&self, status: u16, job_id: Option<Uuid>) {
        audit(self.state, Some(&self.session.name), "POST", &self.path, &self.remote, status, job_id).await;
    }

    /// The answer to an action that ran: 303 on success, else the error
    /// page; audited either way.
    async fn finish(&self, outcome: Result<String, ApiError>, job_id: Option<Uuid>) -> Response {
        match outcome {
            Ok(next) => {
                self.audit(303, job_id).await;
                see_other(&next)
            }
            Err(err) => {
                self.audit(err.status().as_u16(), job_id).await;
                layout::error(self.session, err)
            }
        }
    }
}

fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let action = Action { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = action.admit(&body).await {
        return refused;
    }
    let id = job_id(&raw).ok();
    let outcome = async {
        let job_id = job_id(&raw)?;
        jobs::cancel_job(&state, job_id, &session.name).await?;
        Ok(format!("/jobs/{job_id}"))
    };
    action.finish(outcome.await, id).await
}

pub async fn retry(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let action = Action { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = action.admit(&body).await {
        return refused;
    }
    let id = job_id(&raw).ok();
    let outcome = async {
        let job_id = job_id(&raw)?;
        jobs::retry_job(&state, job_id).await?;
        Ok(format!("/jobs/{job_id}"))
    };
    action.finish(outcome.await, id).await
}

/// Puts a finished sweep's quarantine back (the API's restore, with its
/// guards), then shows the job's page with what it did.
pub async fn restore(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let action = Action { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = action.admit(&body).await {
        return refused;
    }
    let Action { path, remote, .. } = action;
    // As in the API's gate: the restore and its audit row run in a task of
    // their own, which a browser that gives up waiting does not stop.
    let run = tokio::spawn(async move {
        let action = Action { state: &state, session: &session, path, remote };
        let id = job_id(&raw).ok();
        let outcome = async {
            let job_id = job_id(&raw)?;
            let report = jobs::restore_job(&state, job_id).await?;
            Ok(format!("/jobs/{job_id}?restored={}&left={}", report.restored, report.conflicts.len()))
        };
        action.finish(outcome.await, id).await
    });
    match run.await {
        Ok(response) => response,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // Only a runtime shutting down cancels a task.
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

pub async fn discard(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    Path(entry_id): Path<String>,
    body: Bytes,
) -> Response {
    let action = Action { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = action.admit(&body).await {
        return refused;
    }
    let outcome = jobs::discard_dead(&state, &entry_id).await.map(|_| "/dead".to_owned());
    action.finish(outcome, None).await
}
