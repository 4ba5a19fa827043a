//! Quarantine: orphans are moved, not unlinked, into
//! `<root>/.janitor-trash/<job id>/<their path>` (a rename on the same file
//! system: instant, and reversible with `janitor restore <job id>`). The
//! trash is outside the category folders, so it is never scanned as
//! storage; `purge-trash` empties folders older than the retention.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use uuid::Uuid;

use super::{describe, RelativePath, Removal, Storage};

/// The trash folder, relative to the storage root.
pub const TRASH: &str = ".janitor-trash";

impl Storage {
    /// Moves one file into the job's trash folder, without following
    /// symlinks (a symlink is moved itself). Blocking.
    pub fn quarantine(&self, path: &RelativePath, job_id: Uuid) -> Removal {
        let (parent, name) = path.split_parent();
        let source = match self.open_dir(parent) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Removal::Missing,
            Err(errno) => return Removal::Failed(describe(errno, "opening its folder")),
        };
        match rustix::fs::statat(&source, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory => {
                return Removal::Failed("is a directory".to_owned())
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Removal::Missing,
            Err(errno) => return Removal::Failed(describe(errno, "inspecting")),
        }
        let folder = self.root().join(TRASH).join(job_id.to_string()).join(parent);
        if let Err(err) = std::fs::create_dir_all(&folder) {
            return Removal::Failed(format!("cannot create the trash folder: {err}"));
        }
        let target = match rustix::fs::open(&folder, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        {
            Ok(dir) => dir,
            Err(errno) => return Removal::Failed(describe(errno, "opening the trash folder")),
        };
        match rustix::fs::renameat(&source, name, target.as_fd(), name) {
            Ok(()) => Removal::Removed,
            Err(Errno::NOENT) => Removal::Missing,
            Err(errno) => Removal::Failed(describe(errno, "moving to the trash")),
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub restored: u64,
    /// Files left in the trash, with why (the original path is taken again).
    pub conflicts: Vec<(String, String)>,
}

/// Moves a job's quarantined files back where they were. A file whose
/// original path exists again stays in the trash and is reported.
pub fn restore(root: &Path, job_id: Uuid) -> anyhow::Result<Restored> {
    let folder = root.join(TRASH).join(job_id.to_string());
    anyhow::ensure!(folder.is_dir(), "no quarantined files of job {job_id} under {}", folder.display());
    let mut report = Restored::default();
    for entry in walkdir::WalkDir::new(&folder).follow_links(false).sort_by_file_name() {
        let entry = entry?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry.path().strip_prefix(&folder)?.to_owned();
        let original = root.join(&relative);
        let shown = relative.display().to_string();
        if std::fs::symlink_metadata(&original).is_ok() {
            report.conflicts.push((shown, "the original path exists again; left in the trash".into()));
            continue;
        }
        if let Some(parent) = original.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::rename(entry.path(), &original) {
            Ok(()) => report.restored += 1,
            Err(err) => report.conflicts.push((shown, err.to_string())),
        }
    }
    if report.conflicts.is_empty() {
        let _ = std::fs::remove_dir_all(&folder);
    }
    Ok(report)
}

/// The trash folders of jobs, with when each was last changed.
pub fn folders(root: &Path) -> std::io::Result<Vec<(Uuid, PathBuf, SystemTime)>> {
    let trash = root.join(TRASH);
    let entries = match std::fs::read_dir(&trash) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(job_id) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else { continue };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            folders.push((job_id, entry.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
    }
    Ok(folders)
}

/// Files and bytes under a folder (not following symlinks).
pub fn measure(folder: &Path) -> (u64, u64) {
    walkdir::WalkDir::new(folder)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .fold((0, 0), |(files, bytes), e| (files + 1, bytes + e.metadata().map(|m| m.len()).unwrap_or(0)))
}
