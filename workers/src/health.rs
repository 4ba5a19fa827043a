//! A health file for process supervisors (a container's healthcheck): a
//! long-running process writes the time to it after each pass of its main
//! loop that reached its dependencies. A supervisor that finds it older
//! than a few passes knows the process is stuck, paused or cut off, which a
//! query of its own against the database cannot tell.

use std::path::Path;

/// Writes the current time (RFC 3339) to `path`, if there is one. A failure
/// is logged, never fatal: the file is for the supervisor's benefit.
pub async fn touch(path: Option<&Path>) {
    let Some(path) = path else { return };
    if let Err(err) = tokio::fs::write(path, chrono::Utc::now().to_rfc3339()).await {
        tracing::warn!(path = %path.display(), error = %err, "could not write the health file");
    }
}
