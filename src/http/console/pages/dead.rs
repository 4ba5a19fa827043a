//! `GET /dead`: the newest dead letters of both lanes, with their reason,
//! and (for a session that may act) forms to retry their job or discard
//! them. At most [`PER_LANE`] a lane: one bounded `XREVRANGE` each.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use janitor_workers::admin;
use maud::html;

use super::super::layout::{self, csrf_field};
use super::super::session::Session;
use crate::http::error::ApiError;
use crate::http::AppState;

/// The most dead letters shown per lane.
const PER_LANE: usize = 100;

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    let dead = match admin::newest_dead_letters(&state.producer, PER_LANE).await {
        Ok(dead) => dead,
        Err(err) => return layout::error(&session, ApiError::Unavailable(err.to_string())),
    };
    let act = !session.read_only;
    let main = html! {
        h1 { "Dead letters" }
        p { "Jobs that failed every delivery. Retrying runs the job again from its checkpoint; discarding forgets the letter." }
        div.scroll {
            table id="dead" {
                thead { tr {
                    th scope="col" { "Reason" } th scope="col" { "Job" } th scope="col" { "Operation" }
                    th scope="col" { "Lane" } th scope="col" { "Attempts" } th scope="col" { "Dead since" }
                    @if act { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for entry in &dead {
                        tr data-entry-id=(entry.entry_id) {
                            td.reason { (entry.reason) }
                            td { @match entry.job_id {
                                Some(id) => { a href={ "/jobs/" (id) } { code { (id) } } }
                                None => { "—" }
                            } }
                            td { (entry.operation.as_deref().unwrap_or("—")) }
                            td { (entry.lane) }
                            td.num { (entry.attempts) }
                            td { (entry.dead_at) }
                            @if act { td.actions {
                                @if let Some(id) = entry.job_id {
                                    form.retry method="post" action={ "/jobs/" (id) "/retry" } {
                                        (csrf_field(&session))
                                        button type="submit" { "Retry" }
                                    }
                                }
                                form.discard method="post" action={ "/dead/" (entry.entry_id) "/discard" } {
                                    (csrf_field(&session))
                                    button.danger type="submit" { "Discard" }
                                }
                            } }
                        }
                    }
                }
            }
        }
        @if dead.is_empty() { p.empty { "No dead letters." } }
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Dead letters", main))
}
