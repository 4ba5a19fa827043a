//! The trash: `<root>/.janitor-trash/<job id>/`, one folder per sweep that
//! quarantined orphans (see `quarantine` for the moves of single files). It
//! is outside the category folders, so it is never scanned as storage;
//! `janitor restore` moves a job's files back, and `purge-trash` empties
//! folders older than the retention.
//!
//! Everything here goes through the wall: the trash is listed, walked,
//! measured and removed with descriptors opened beneath the root fd with
//! `RESOLVE_NO_SYMLINKS`. A symlinked `.janitor-trash` or job folder is
//! refused with a clear error, never followed.
//!
//! A purge first renames the job's folder aside (`<job id>.purging`, see
//! [`set_aside`]): the quarantine only ever writes into `<job id>/`, so a
//! run of the job that starts after the rename (a retried job) writes into
//! a new folder, never into the one being removed.

use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use rustix::fs::{AtFlags, FileType, RenameFlags};
use rustix::io::Errno;
use uuid::Uuid;

use super::{describe, tree, Folders, RelativePath, Storage, Tally, Unquarantine};

/// The trash folder, relative to the storage root.
pub const TRASH: &str = ".janitor-trash";

/// What a folder set aside for purging adds to its job id.
const SET_ASIDE: &str = ".purging";

/// A job's trash folder, relative to the storage root.
pub fn job_folder(job_id: Uuid) -> String {
    format!("{TRASH}/{job_id}")
}

/// A folder of the trash: a job's, or one a purge set aside to remove it
/// (left behind if that purge stopped before it finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrashFolder {
    pub job_id: Uuid,
    pub set_aside: bool,
}

impl TrashFolder {
    /// The job's own folder.
    pub fn of(job_id: Uuid) -> Self {
        Self { job_id, set_aside: false }
    }

    /// Its name in the trash folder.
    fn name(&self) -> String {
        if self.set_aside {
            format!("{}{SET_ASIDE}", self.job_id)
        } else {
            self.job_id.to_string()
        }
    }

    /// Its path relative to the storage root.
    pub fn path(&self) -> String {
        format!("{TRASH}/{}", self.name())
    }

    /// The folder a name in the trash stands for, if any.
    fn parse(name: &str) -> Option<Self> {
        match name.strip_suffix(SET_ASIDE) {
            Some(id) => id.parse().ok().map(|job_id| Self { job_id, set_aside: true }),
            None => name.parse().ok().map(Self::of),
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub restored: u64,
    /// Files left in the trash, with why (the original path is taken again,
    /// or cannot be reached through the wall).
    pub conflicts: Vec<(String, String)>,
}

/// Moves a job's quarantined files back where they were. A file whose
/// original path is taken again, or whose folder is now a symlink, stays in
/// the trash and is reported. Blocking.
pub fn restore(storage: &Storage, job_id: Uuid) -> anyhow::Result<Restored> {
    let folder = job_folder(job_id);
    let mut files: Vec<PathBuf> = Vec::new();
    // Wall: the job's folder and every folder in it are opened beneath the
    // root fd with RESOLVE_NO_SYMLINKS. A symlinked trash or job folder is
    // refused here; a symlink inside is listed and moved back as an entry.
    let walked = tree::walk(storage.root_fd(), &folder, &mut |step| {
        if step.kind != FileType::Directory {
            files.push(step.path.to_owned());
        }
        Ok(())
    });
    match walked {
        Ok(()) => {}
        Err(Errno::NOENT) => {
            bail!("no quarantined files of job {job_id} under {}", storage.root().join(&folder).display())
        }
        Err(errno) => bail!("cannot restore job {job_id}: {folder}: {}", describe(errno, "listing")),
    }
    let mut report = Restored::default();
    let mut folders = Folders::default();
    for file in files {
        let shown = file.display().to_string();
        let Some(path) = file.to_str().and_then(|raw| RelativePath::parse(raw).ok()) else {
            report.conflicts.push((shown, "not a storage path; left in the trash".to_owned()));
            continue;
        };
        match storage.unquarantine_in(&path, job_id, &mut folders) {
            Unquarantine::Restored => report.restored += 1,
            Unquarantine::Missing => report.conflicts.push((shown, "gone from the trash before it was moved".into())),
            Unquarantine::Conflict(why) | Unquarantine::Failed(why) => report.conflicts.push((shown, why)),
        }
    }
    if report.conflicts.is_empty() {
        // Only folders are left. Pruning removes empty ones and never a
        // file, so one quarantined since the walk stays in the trash.
        if let Err(errno) = tree::prune(storage.root_fd(), &folder) {
            tracing::warn!(%job_id, "cannot remove the emptied trash folder {folder}: {}", describe(errno, "removing"));
        }
    }
    Ok(report)
}

/// Whether a job has a trash folder. Blocking (one `openat2`).
pub fn has_folder(storage: &Storage, job_id: Uuid) -> anyhow::Result<bool> {
    let folder = job_folder(job_id);
    // Wall: opened beneath the root fd with RESOLVE_NO_SYMLINKS, so a
    // symlinked trash or job folder is refused here, never followed.
    match tree::open(storage.root_fd(), &folder) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(errno) => bail!("cannot look for job {job_id}'s quarantine: {folder}: {}", describe(errno, "opening")),
    }
}

/// The trash's folders (jobs' and set aside), with when each was last
/// changed. Entries whose name is not a job id (with or without the set
/// aside suffix), and files, are left alone. A symlink named as a job is
/// listed, so that measuring or purging it fails loudly.
pub fn folders(storage: &Storage) -> anyhow::Result<Vec<(TrashFolder, SystemTime)>> {
    // Wall: the trash is opened beneath the root fd with
    // RESOLVE_NO_SYMLINKS, so a symlinked `.janitor-trash` is refused here.
    let trash = match storage.open_dir(TRASH) {
        Ok(trash) => trash,
        Err(Errno::NOENT) => return Ok(Vec::new()),
        Err(errno) => bail!("cannot list the trash folder {TRASH}: {}", describe(errno, "opening")),
    };
    let entries = tree::list(trash.as_fd())
        .map_err(|errno| anyhow::anyhow!("cannot list {TRASH}: {}", describe(errno, "listing")))?;
    let mut folders = Vec::new();
    for entry in entries {
        let Some(folder) = entry.name.to_str().and_then(TrashFolder::parse) else { continue };
        if !matches!(entry.kind, FileType::Directory | FileType::Symlink) {
            continue;
        }
        let modified = match rustix::fs::statat(&trash, &entry.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => modified(&stat),
            Err(Errno::NOENT) => continue,
            Err(errno) => bail!("cannot inspect {}: {}", folder.path(), describe(errno, "inspecting")),
        };
        folders.push((folder, modified));
    }
    Ok(folders)
}

/// Files and bytes in a trash folder, not following symlinks.
pub fn measure(storage: &Storage, folder: TrashFolder) -> anyhow::Result<Tally> {
    let folder = folder.path();
    // Wall: walked with descriptors opened beneath the root fd with
    // RESOLVE_NO_SYMLINKS; a symlinked job folder is refused here.
    tree::measure(storage.root_fd(), &folder)
        .map_err(|errno| anyhow::anyhow!("{folder}: {}", describe(errno, "measuring")))
}

/// Removes a trash folder and everything in it, and returns what it held.
/// Blocking.
pub fn purge(storage: &Storage, folder: TrashFolder) -> anyhow::Result<Tally> {
    let folder = folder.path();
    // Wall: removed with `unlinkat` relative to descriptors opened beneath
    // the root fd with RESOLVE_NO_SYMLINKS: a symlinked job folder is
    // refused, and a symlink inside is unlinked, never followed.
    tree::remove(storage.root_fd(), &folder)
        .map_err(|errno| anyhow::anyhow!("{folder}: {}", describe(errno, "removing")))
}

/// Renames a job's trash folder aside for purging: `false` if it is gone.
/// From the rename on, no quarantine can add to it: quarantine resolves
/// `<job id>/` by name from the root for every batch, so a later run of the
/// job makes a new folder. Blocking.
pub fn set_aside(storage: &Storage, job_id: Uuid) -> anyhow::Result<bool> {
    let (folder, aside) = (TrashFolder::of(job_id), TrashFolder { job_id, set_aside: true });
    // Wall: the trash is opened beneath the root fd with RESOLVE_NO_SYMLINKS
    // and both names are in it. The folder is opened through the wall first
    // so that a symlink named as the job is refused and left where it is;
    // one swapped in after that is renamed as the link itself and refused
    // by the purge's walk.
    let trash = match storage.open_dir(TRASH) {
        Ok(trash) => trash,
        Err(Errno::NOENT) => return Ok(false),
        Err(errno) => bail!("{TRASH}: {}", describe(errno, "opening")),
    };
    match tree::open(&trash, folder.name()) {
        Ok(_) => {}
        Err(Errno::NOENT) => return Ok(false),
        Err(errno) => bail!("{}: {}", folder.path(), describe(errno, "opening")),
    }
    match rustix::fs::renameat_with(&trash, folder.name(), &trash, aside.name(), RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(Errno::EXIST) => {
            bail!("{}: an earlier purge left {}; this one goes once that is gone", folder.path(), aside.path())
        }
        Err(errno) => bail!("{}: {}", folder.path(), describe(errno, "setting aside")),
    }
}

fn modified(stat: &rustix::fs::Stat) -> SystemTime {
    let seconds = u64::try_from(stat.st_mtime).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(seconds, stat.st_mtime_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Storage, Uuid, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("photos")).unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage, Uuid::new_v4(), tempfile::tempdir().unwrap())
    }

    /// Writes a file in the job's trash folder, as a quarantine would.
    fn trashed(dir: &tempfile::TempDir, job: Uuid, relative: &str) -> PathBuf {
        let path = dir.path().join(job_folder(job)).join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"x").unwrap();
        path
    }

    #[test]
    fn restore_moves_a_symlink_back_as_itself_and_removes_the_emptied_folder() {
        let (dir, storage, job, outside) = setup();
        fs::write(outside.path().join("target.jpg"), b"keep").unwrap();
        trashed(&dir, job, "photos/a/x.jpg");
        symlink(outside.path().join("target.jpg"), dir.path().join(job_folder(job)).join("photos/a/l.jpg")).unwrap();
        assert!(has_folder(&storage, job).unwrap());
        let report = restore(&storage, job).unwrap();
        assert_eq!(report, Restored { restored: 2, conflicts: Vec::new() });
        assert!(!has_folder(&storage, job).unwrap(), "the folder went with its files");
        assert!(fs::symlink_metadata(dir.path().join("photos/a/l.jpg")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(outside.path().join("target.jpg")).unwrap(), b"keep");
        assert!(!dir.path().join(job_folder(job)).exists(), "the emptied trash folder is gone");
    }

    #[test]
    fn restore_leaves_what_it_cannot_move_and_keeps_its_folder() {
        let (dir, storage, job, _outside) = setup();
        trashed(&dir, job, "photos/a/x.jpg");
        trashed(&dir, job, "elsewhere/y.jpg");
        fs::create_dir_all(dir.path().join("photos/a/x.jpg")).unwrap();
        let report = restore(&storage, job).unwrap();
        let want = [
            ("elsewhere/y.jpg", "not a storage path; left in the trash"),
            ("photos/a/x.jpg", "the original path exists again; left in the trash"),
        ];
        assert_eq!(report.conflicts, want.map(|(path, why)| (path.to_owned(), why.to_owned())));
        assert!(dir.path().join(job_folder(job)).join("photos/a/x.jpg").is_file());
        let missing = restore(&storage, Uuid::new_v4()).unwrap_err().to_string();
        assert!(missing.starts_with("no quarantined files of job"), "{missing}");
    }

    #[test]
    fn folders_lists_jobs_and_purge_refuses_a_symlinked_one() {
        let (dir, storage, job, outside) = setup();
        assert_eq!(folders(&storage).unwrap(), []);
        trashed(&dir, job, "photos/a/x.jpg");
        fs::create_dir(dir.path().join(TRASH).join("not-a-job")).unwrap();
        let linked = Uuid::new_v4();
        fs::write(outside.path().join("keep.jpg"), b"keep").unwrap();
        symlink(outside.path(), dir.path().join(job_folder(linked))).unwrap();
        let mut listed: Vec<TrashFolder> = folders(&storage).unwrap().into_iter().map(|(folder, _)| folder).collect();
        listed.sort();
        let mut want = vec![TrashFolder::of(job), TrashFolder::of(linked)];
        want.sort();
        assert_eq!(listed, want);
        assert_eq!(measure(&storage, TrashFolder::of(job)).unwrap(), Tally { files: 1, bytes: 1 });
        let refused = purge(&storage, TrashFolder::of(linked)).unwrap_err().to_string();
        assert!(refused.ends_with("path goes through a symbolic link"), "{refused}");
        assert!(outside.path().join("keep.jpg").exists());
        assert_eq!(purge(&storage, TrashFolder::of(job)).unwrap(), Tally { files: 1, bytes: 1 });
        assert!(!dir.path().join(job_folder(job)).exists());
    }

    #[test]
    fn a_folder_set_aside_is_listed_as_such_and_a_later_run_writes_beside_it() {
        let (dir, storage, job, outside) = setup();
        let aside = TrashFolder { job_id: job, set_aside: true };
        assert!(!set_aside(&storage, job).unwrap(), "no folder, nothing to set aside");
        trashed(&dir, job, "photos/a/x.jpg");
        assert!(set_aside(&storage, job).unwrap());
        assert_eq!(folders(&storage).unwrap().into_iter().map(|(folder, _)| folder).collect::<Vec<_>>(), [aside]);
        // A run of the job that starts now quarantines into a new folder.
        let path = RelativePath::parse("photos/b/y.jpg").unwrap();
        fs::create_dir_all(dir.path().join("photos/b")).unwrap();
        fs::write(dir.path().join("photos/b/y.jpg"), b"y").unwrap();
        assert_eq!(storage.quarantine(&path, job), crate::storage::Removal::Removed);
        assert_eq!(measure(&storage, aside).unwrap(), Tally { files: 1, bytes: 1 });
        assert!(dir.path().join(aside.path()).join("photos/a/x.jpg").is_file());
        let earlier = set_aside(&storage, job).unwrap_err().to_string();
        assert!(earlier.contains("an earlier purge left"), "{earlier}");
        assert_eq!(purge(&storage, aside).unwrap(), Tally { files: 1, bytes: 1 });
        assert!(dir.path().join(job_folder(job)).join("photos/b/y.jpg").is_file(), "the new run's file stays");
        // A symlink named as a job is refused and left in place.
        let linked = Uuid::new_v4();
        symlink(outside.path(), dir.path().join(job_folder(linked))).unwrap();
        let refused = set_aside(&storage, linked).unwrap_err().to_string();
        assert!(refused.ends_with("path goes through a symbolic link"), "{refused}");
        assert!(fs::symlink_metadata(dir.path().join(job_folder(linked))).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_symlinked_trash_is_refused_by_every_reader() {
        let (dir, storage, job, outside) = setup();
        fs::create_dir_all(outside.path().join(format!("{job}/photos"))).unwrap();
        fs::write(outside.path().join(format!("{job}/photos/x.jpg")), b"keep").unwrap();
        symlink(outside.path(), dir.path().join(TRASH)).unwrap();
        for refused in [
            folders(&storage).map(|_| ()),
            restore(&storage, job).map(|_| ()),
            measure(&storage, TrashFolder::of(job)).map(|_| ()),
            purge(&storage, TrashFolder::of(job)).map(|_| ()),
            set_aside(&storage, job).map(|_| ()),
            has_folder(&storage, job).map(|_| ()),
        ] {
            let message = refused.unwrap_err().to_string();
            assert!(message.contains("symbolic link"), "{message}");
        }
        assert!(outside.path().join(format!("{job}/photos/x.jpg")).exists());
    }
}
