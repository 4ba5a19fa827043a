//! A health file for process supervisors (a container's healthcheck): a
//! long-running process writes the time to it after each pass of its main
//! loop that reached its dependencies. A supervisor that finds it older
//! than a few passes knows the process is stuck, paused or cut off, which a
//! query of its own against the database cannot tell.

use std::path::Path;

/// Writes the current time (RFC 3339) to `path`, if there is one, by
/// writing a temporary file beside it and renaming it over `path`, so a
/// healthcheck never reads a half-written file. A failure is logged, never
/// fatal: the file is for the supervisor's benefit.
pub async fn touch(path: Option<&Path>) {
    let Some(path) = path else { return };
    if let Err(err) = replace(path, chrono::Utc::now().to_rfc3339().as_bytes()).await {
        tracing::warn!(path = %path.display(), error = %err, "could not write the health file");
    }
}

/// Replaces the contents of `path` atomically (write beside it, rename).
async fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    tokio::fs::write(&temporary, contents).await?;
    tokio::fs::rename(&temporary, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn touch_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.health");
        std::fs::write(&file, "an older, longer line that a truncating write could leave half of").unwrap();
        touch(Some(&file)).await;
        let written = std::fs::read_to_string(&file).unwrap();
        chrono::DateTime::parse_from_rfc3339(&written).expect("the file holds only the time");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("worker.health")]);
    }
}
