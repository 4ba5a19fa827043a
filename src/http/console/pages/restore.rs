//! The quarantine section of a job's page: for an orphan sweep (or `all`)
//! that has ended, whether its removed files still wait in the trash, and
//! (for a session that may act) the form that puts them back through
//! `POST /jobs/{id}/restore` (see `actions::restore`, which goes through
//! the API's own restore and its guards).
//!
//! When this `janitor serve` cannot open a storage root, the section says
//! so, and how to fix it, instead of offering a button that would fail.

use janitor_workers::storage::trash;
use janitor_workers::JobRecord;
use maud::{html, Markup};

use super::super::layout::csrf_field;
use super::super::session::Session;
use crate::http::{jobs, AppState};

/// What the page can say of a job's quarantine.
pub enum Quarantine {
    /// Not an ended sweep that deleted for real: no section.
    NotApplicable,
    /// This process cannot look at the storage root, and why.
    Unreachable(String),
    /// No trash folder (it quarantined nothing, or was restored or purged).
    Empty,
    /// Files wait in the job's trash folder.
    Present,
}

/// Looks for the job's trash folder (one `openat2` through the wall, on a
/// blocking thread), if the job is an ended sweep.
pub async fn quarantine(state: &AppState, record: &JobRecord) -> Quarantine {
    let sweep = matches!(record.operation.as_str(), "cleanup_orphaned_files" | "cleanup_all");
    if !sweep || record.dry_run || matches!(record.status.as_str(), "queued" | "running") {
        return Quarantine::NotApplicable;
    }
    let storage = match jobs::storage(state) {
        Ok(storage) => storage,
        Err(err) => return Quarantine::Unreachable(err.to_string()),
    };
    let job_id = record.job_id;
    match tokio::task::spawn_blocking(move || trash::has_folder(&storage, job_id)).await {
        Ok(Ok(true)) => Quarantine::Present,
        Ok(Ok(false)) => Quarantine::Empty,
        Ok(Err(err)) => Quarantine::Unreachable(format!("{err:#}")),
        Err(err) => Quarantine::Unreachable(err.to_string()),
    }
}

/// What a restore just did, from the query string of the page it led to
/// (`restored=N&left=M`).
pub fn outcome(query: Option<&str>) -> Option<(u64, u64)> {
    let mut restored = None;
    let mut left = 0;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "restored" => restored = value.parse().ok(),
            "left" => left = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    restored.map(|restored| (restored, left))
}

pub fn section(session: &Session, record: &JobRecord, quarantine: &Quarantine, done: Option<(u64, u64)>) -> Markup {
    if matches!(quarantine, Quarantine::NotApplicable) && done.is_none() {
        return html! {};
    }
    let folder = trash::job_folder(record.job_id);
    html! {
        section id="quarantine" aria-labelledby="quarantine-title" {
            h2 id="quarantine-title" { "Quarantine" }
            @if let Some((restored, left)) = done {
                p id="restore-result" role="status" {
                    "Restored " (restored) " files."
                    @if left > 0 {
                        " " strong.alert { (left) " stayed in the trash" }
                        " (their path is taken again, or goes through a symbolic link); "
                        code { "janitor restore " (record.job_id) } " lists them."
                    }
                }
            }
            @match quarantine {
                Quarantine::NotApplicable => {}
                Quarantine::Unreachable(why) => {
                    p.error id="restore-unavailable" { "Restoring is not available from this console: " (why) }
                }
                Quarantine::Empty => {
                    p.empty id="no-quarantine" {
                        "No quarantined files of this job are in " code { (folder) } ": it quarantined nothing, or they were restored or purged."
                    }
                }
                Quarantine::Present => {
                    p { "The orphans this sweep removed wait in " code { (folder) } " until " code { "purge-trash" } " empties it." }
                    @if session.read_only {
                        p.hint { "A read-only token cannot restore them." }
                    } @else {
                        form id="restore" method="post" action={ "/jobs/" (record.job_id) "/restore" } {
                            (csrf_field(session))
                            button type="submit" { "Restore the quarantined files" }
                        }
                    }
                }
            }
        }
    }
}
