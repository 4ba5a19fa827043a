//! Steering jobs over HTTP: cancel, retry, restore, dead letters. The same
//! actions as `janitor cancel|retry|restore|dead|discard`, behind the same
//! token, audit and rate limits (class `control` for the changes, `read`
//! for the list).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use janitor_workers::admin::{self, RestoreRefusal};
use janitor_workers::results::Cancelled;
use janitor_workers::storage::trash::Restored;
use janitor_workers::storage::Storage;
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use super::params::Params;
use super::schemas::{Accepted, DeadLetters, Discarded, ErrorBody, JobStatus, RestoreReport};
use super::{Actor, AppState, JobCreated};

fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("job_id", "must be a UUID"))
}

fn limit(state: &AppState, actor: &Actor, class: &str) -> Result<(), ApiError> {
    state.limits.check(&actor.0, class).map_err(|retry_after| ApiError::RateLimited { retry_after })
}

fn unavailable(err: janitor_workers::producer::ProducerError) -> ApiError {
    ApiError::Unavailable(err.to_string())
}

/// Cancels a job, for the API and the console alike: `true` if it was
/// queued and is cancelled now, `false` if it stops at its next batch.
pub(crate) async fn cancel_job(state: &AppState, job_id: Uuid, by: &str) -> Result<bool, ApiError> {
    match admin::cancel(&state.producer, job_id, by).await.map_err(unavailable)? {
        Cancelled::Now(_) => Ok(true),
        Cancelled::Requested => Ok(false),
        Cancelled::AlreadyEnded(status) => Err(ApiError::Conflict(format!("job {job_id} already ended as {status}"))),
        Cancelled::NotFound => Err(ApiError::NotFound),
    }
}

/// Queues a failed or cancelled job again, for the API and the console.
pub(crate) async fn retry_job(state: &AppState, job_id: Uuid) -> Result<(), ApiError> {
    match admin::retry(&state.producer, job_id).await.map_err(unavailable)? {
        Ok(()) => Ok(()),
        Err(why) if why.starts_with("no job") => Err(ApiError::NotFound),
        Err(why) => Err(ApiError::Conflict(why)),
    }
}

/// The storage root of this process, opened, or why restores cannot run
/// here (the API and the console say it as it is).
pub(crate) fn storage(state: &AppState) -> Result<Storage, ApiError> {
    let Some(root) = &state.storage_root else {
        return Err(ApiError::Unavailable(
            "this janitor serve has no storage root; restore with `janitor restore <job id>` where the storage is, \
             or start serve with JANITOR_STORAGE_ROOT"
                .to_owned(),
        ));
    };
    Storage::open(root).map_err(|err| {
        ApiError::Unavailable(format!(
            "{err:#}; restoring needs the workers' storage root: start janitor serve with JANITOR_STORAGE_ROOT set to it"
        ))
    })
}

/// Puts a finished sweep's quarantine back, for the API and the console,
/// with the CLI's guards (see `admin::restore`).
pub(crate) async fn restore_job(state: &AppState, job_id: Uuid) -> Result<Restored, ApiError> {
    let storage = storage(state)?;
    match admin::restore(&state.pool, &storage, job_id).await? {
        Ok(report) => Ok(report),
        Err(refusal @ RestoreRefusal::NotFound(..)) => {
            tracing::debug!(%job_id, "{refusal}");
            Err(ApiError::NotFound)
        }
        Err(refusal) => Err(ApiError::Conflict(refusal.to_string())),
    }
}

/// Removes the dead letters of an entry id or a job id, for the API and
/// the console: how many went.
pub(crate) async fn discard_dead(state: &AppState, target: &str) -> Result<usize, ApiError> {
    match admin::discard(&state.producer, target).await.map_err(unavailable)? {
        0 => Err(ApiError::NotFound),
        removed => Ok(removed),
    }
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 200, description = "cancelled (it was queued)", body = JobStatus), (status = 202, description = "it stops at its next batch", body = JobStatus),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "it already ended", body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let job_id = job_id(&raw)?;
    limit(&state, &actor, "control")?;
    let (status, code) = if cancel_job(&state, job_id, &actor.0).await? {
        ("cancelled", StatusCode::OK)
    } else {
        ("cancelling", StatusCode::ACCEPTED)
    };
    let mut response = (code, Json(json!({"job_id": job_id, "status": status}))).into_response();
    response.extensions_mut().insert(JobCreated(job_id));
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/jobs/{job_id}/retry", tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 202, description = "queued again, to resume from its checkpoint", body = Accepted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "not failed or cancelled", body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let job_id = job_id(&raw)?;
    limit(&state, &actor, "control")?;
    retry_job(&state, job_id).await?;
    let mut response = super::cleanup::accepted(job_id, "queued", false);
    response.extensions_mut().insert(JobCreated(job_id));
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/jobs/{job_id}/restore", tag = "jobs",
    params(("job_id" = Uuid, Path, description = "an orphan sweep (or `all`) that quarantined files")),
    responses((status = 200, description = "moved back; files that could not go back are listed", body = RestoreReport),
              (status = 401, body = ErrorBody), (status = 403, description = "a read-only token", body = ErrorBody),
              (status = 404, description = "no such job and no quarantine of it", body = ErrorBody),
              (status = 409, description = "still queued or running, not a sweep, or nothing quarantined", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, description = "this process has no usable storage root", body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let job_id = job_id(&raw)?;
    limit(&state, &actor, "control")?;
    let outcome = restore_job(&state, job_id).await;
    // The audit row names the job whatever the outcome.
    let mut response = match outcome {
        Ok(report) => {
            let body = json!({"job_id": job_id, "restored": report.restored, "conflicts": report.conflicts});
            Json(body).into_response()
        }
        Err(err) => err.into_response(),
    };
    response.extensions_mut().insert(JobCreated(job_id));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/admin/cleanup/dead", tag = "jobs",
    responses((status = 200, description = "the dead letters of both lanes", body = DeadLetters), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn dead(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    limit(&state, &actor, "read")?;
    let dead = admin::dead_letters(&state.producer).await.map_err(unavailable)?;
    Ok(Json(json!({ "dead_letters": dead })).into_response())
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/dead/{target}/discard", tag = "jobs",
    params(("target" = String, Path, description = "a dead letter's entry id, or a job id")),
    responses((status = 200, body = Discarded), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn discard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    limit(&state, &actor, "control")?;
    let removed = discard_dead(&state, &target).await?;
    Ok(Json(json!({ "discarded": removed })).into_response())
}
