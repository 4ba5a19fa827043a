//! Quarantine, file by file: an orphan is moved (not unlinked) to
//! `<root>/.janitor-trash/<job id>/<its path>`, and can be moved back or
//! purged there. A rename on the same file system: instant, and reversible.
//!
//! Both ends of every move are names in folders opened through the wall, and
//! every move is `renameat2(RENAME_NOREPLACE)`: it fails rather than replace
//! what is already at the target, atomically, so neither an earlier
//! quarantined file nor a file uploaded since the move is ever overwritten.

use rustix::fs::{AtFlags, FileType, RenameFlags};
use rustix::io::Errno;
use uuid::Uuid;

use super::scan::{stat_at, FileIdentity};
use super::trash::TRASH;
use super::{describe, pool, tree, Folders, RelativePath, Removal, Storage};

/// What happened to one quarantined file that was to be moved back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unquarantine {
    /// Moved back to its original path.
    Restored,
    /// Not in the trash: never moved there, or already moved back.
    Missing,
    /// The original path is taken again; the file stays in the trash.
    Conflict(String),
    /// The file stays in the trash; the message says why.
    Failed(String),
}

/// Why a candidate was not moved: another file took its name after it was
/// judged an orphan.
const REPLACED: &str = "another file took its path since it was judged an orphan; left in place";

/// The trash folder, relative to the root, of a job's files from `parent`.
fn trash_folder(job_id: Uuid, parent: &str) -> String {
    format!("{TRASH}/{job_id}/{parent}")
}

impl Storage {
    /// Moves one file into the job's trash folder, without following
    /// symlinks (a symlink is moved itself) and without replacing a file
    /// already there. Blocking.
    pub fn quarantine(&self, path: &RelativePath, job_id: Uuid) -> Removal {
        self.quarantine_in(path, job_id, &mut Folders::default())
    }

    /// Moves one quarantined file back to its path, creating missing folders
    /// through the wall, and never replacing what is there now. Blocking.
    pub fn unquarantine(&self, path: &RelativePath, job_id: Uuid) -> Unquarantine {
        self.unquarantine_in(path, job_id, &mut Folders::default())
    }

    /// Unlinks one quarantined file in the job's trash folder. Blocking.
    pub fn purge_quarantined(&self, path: &RelativePath, job_id: Uuid) -> Removal {
        let (parent, name) = path.split_parent();
        self.unlink_in(&trash_folder(job_id, parent), name, &mut tree::Cached::default())
    }

    /// Of `paths`, whether this job's trash folder holds each one, as the
    /// file it was (its identity, when one is known): what a run that
    /// stopped after moving it left there. On one blocking thread.
    pub async fn quarantined_many(&self, paths: Vec<(RelativePath, Option<FileIdentity>)>, job_id: Uuid) -> Vec<bool> {
        let storage = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut folder = tree::Cached::default();
            let mut held = |(path, identity): &(RelativePath, Option<FileIdentity>)| {
                let (parent, name) = path.split_parent();
                let trash = trash_folder(job_id, parent);
                // Wall: the trash folder is resolved beneath the root fd with
                // RESOLVE_NO_SYMLINKS; the stat is of the name in it.
                let Ok(dir) = folder.get(&trash, || storage.open_dir(&trash)) else { return false };
                stat_at(dir, name).is_ok_and(|stat| identity.is_none_or(|identity| identity == stat.identity))
            };
            paths.iter().map(&mut held).collect::<Vec<_>>()
        });
        found.await.unwrap_or_default()
    }

    /// [`Storage::unquarantine`] for many files, on up to `concurrency`
    /// blocking threads; outcomes in input order.
    pub async fn unquarantine_many(
        &self,
        paths: Vec<RelativePath>,
        concurrency: usize,
        job_id: Uuid,
    ) -> Vec<Unquarantine> {
        let storage = self.clone();
        let lost = Unquarantine::Failed("restore thread failed".to_owned());
        pool::run(paths, concurrency, lost, move |path, folders: &mut Folders| {
            storage.unquarantine_in(path, job_id, folders)
        })
        .await
    }

    /// Removes the job's trash folders that are empty (after
    /// `--no-quarantine` purged their files). Files stay, with their folders.
    pub fn prune_trash(&self, job_id: Uuid) -> Result<(), String> {
        // Wall: every folder is removed by one name in a walled parent.
        match tree::prune(self.root_fd(), &super::trash::job_folder(job_id)) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(describe(errno, "pruning the trash")),
        }
    }

    /// [`Storage::purge_quarantined`] for many files, on up to `concurrency`
    /// blocking threads; outcomes in input order.
    pub async fn purge_quarantined_many(
        &self,
        paths: Vec<RelativePath>,
        concurrency: usize,
        job_id: Uuid,
    ) -> Vec<Removal> {
        let storage = self.clone();
        let lost = Removal::Failed("purge thread failed".to_owned());
        pool::run(paths, concurrency, lost, move |path, cached: &mut tree::Cached| {
            let (parent, name) = path.split_parent();
            storage.unlink_in(&trash_folder(job_id, parent), name, cached)
        })
        .await
    }

    /// Moves many files into the job's trash, each only if it is still the
    /// file that was judged (`identity`, when known: see
    /// [`FileIdentity`]); on up to `concurrency` blocking threads, outcomes
    /// in input order. A file that another took the place of is left where
    /// it is, as an error item.
    pub async fn quarantine_many(
        &self,
        files: Vec<(RelativePath, Option<FileIdentity>)>,
        concurrency: usize,
        job_id: Uuid,
    ) -> Vec<Removal> {
        let storage = self.clone();
        let lost = Removal::Failed("quarantine thread failed".to_owned());
        pool::run(files, concurrency, lost, move |(path, identity), folders: &mut Folders| {
            storage.quarantine_checked(path, job_id, *identity, folders)
        })
        .await
    }

    /// [`Storage::quarantine`], reusing `folders` (of this job) from the
    /// previous file.
    pub(super) fn quarantine_in(&self, path: &RelativePath, job_id: Uuid, folders: &mut Folders) -> Removal {
        self.quarantine_checked(path, job_id, None, folders)
    }

    /// [`Storage::quarantine_in`], moving the file only if it is `judged`
    /// (when given).
    fn quarantine_checked(
        &self,
        path: &RelativePath,
        job_id: Uuid,
        judged: Option<FileIdentity>,
        folders: &mut Folders,
    ) -> Removal {
        let (parent, name) = path.split_parent();
        // Wall: the file's folder is resolved beneath the root fd with
        // RESOLVE_NO_SYMLINKS: a symlinked category folder is refused here.
        let source = match folders.source.get(parent, || self.open_dir(parent)) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Removal::Missing,
            Err(errno) => return Removal::Failed(describe(errno, "opening its folder")),
        };
        match rustix::fs::statat(source, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Removal::Failed("is a directory".to_owned())
            }
            Ok(stat) if judged.is_some_and(|judged| judged != FileIdentity::of(&stat)) => {
                return Removal::Failed(REPLACED.to_owned())
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Removal::Missing,
            Err(errno) => return Removal::Failed(describe(errno, "inspecting")),
        }
        // Wall: the trash folder is created and opened component by
        // component beneath the root fd with RESOLVE_NO_SYMLINKS, so a
        // symlinked `.janitor-trash` or job folder is refused here, before
        // anything moves.
        let target = match folders.target.get(parent, || tree::create(self.root_fd(), &trash_folder(job_id, parent))) {
            Ok(dir) => dir,
            Err(errno) => {
                return Removal::Failed(format!("cannot open the trash folder: {}", describe(errno, "creating")))
            }
        };
        // Wall: both ends are names in walled folders, and RENAME_NOREPLACE
        // fails the move rather than replace a file already in the trash.
        // The wall covers where things go, not what is at the name: no lock
        // covers the directory check above and this rename, and no flag of
        // `renameat2` refuses a directory. A directory made at this name in
        // between would be moved whole (still beneath the root, replacing
        // nothing, and restorable).
        match rustix::fs::renameat_with(source, name, target, name, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Removal::Missing,
            Err(Errno::EXIST) => {
                return Removal::Failed(format!(
                    "already in the trash: {} exists; nothing was moved or overwritten",
                    trash_folder(job_id, path.as_str())
                ))
            }
            Err(errno) => return Removal::Failed(describe(errno, "moving to the trash")),
        }
        // The identity check above and the rename are not under one lock
        // either: a file written at this name in between was moved instead
        // of the judged one. The rename kept the moved file's identity, so
        // it is looked at again where it landed, and put back if it is not
        // the file that was judged (RENAME_NOREPLACE: never over a file
        // that took the name since).
        let Some(judged) = judged else { return Removal::Removed };
        match rustix::fs::statat(target, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileIdentity::of(&stat) == judged => Removal::Removed,
            Ok(_) => match rustix::fs::renameat_with(target, name, source, name, RenameFlags::NOREPLACE) {
                Ok(()) => Removal::Failed(REPLACED.to_owned()),
                Err(errno) => Removal::Failed(format!(
                    "{REPLACED}, but it was moved to the trash before that was seen and could not be moved back \
                     ({}); it is at {}",
                    describe(errno, "moving back"),
                    trash_folder(job_id, path.as_str())
                )),
            },
            Err(errno) => Removal::Failed(format!(
                "moved to the trash, but could not be checked there ({}); it is at {}",
                describe(errno, "inspecting"),
                trash_folder(job_id, path.as_str())
            )),
        }
    }

    /// [`Storage::unquarantine`], reusing `folders` (of this job) from the
    /// previous file.
    pub(super) fn unquarantine_in(&self, path: &RelativePath, job_id: Uuid, folders: &mut Folders) -> Unquarantine {
        let (parent, name) = path.split_parent();
        // Wall: the trash folder is resolved beneath the root fd with
        // RESOLVE_NO_SYMLINKS: a symlinked trash or job folder is refused.
        let source = match folders.source.get(parent, || self.open_dir(&trash_folder(job_id, parent))) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Unquarantine::Missing,
            Err(errno) => return Unquarantine::Failed(describe(errno, "opening its trash folder")),
        };
        // Checked first so that a file not in the trash creates no folders.
        match rustix::fs::statat(source, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {}
            Err(Errno::NOENT) => return Unquarantine::Missing,
            Err(errno) => return Unquarantine::Failed(describe(errno, "inspecting")),
        }
        // Wall: the original folder is created component by component
        // beneath the root fd with RESOLVE_NO_SYMLINKS, so a category folder
        // that became a symlink is refused here and nothing lands outside.
        let target = match folders.target.get(parent, || tree::create(self.root_fd(), parent)) {
            Ok(dir) => dir,
            Err(errno) => return Unquarantine::Failed(describe(errno, "creating its folder")),
        };
        // Wall: both ends are names in walled folders. RENAME_NOREPLACE is
        // atomic: a file at the original path now is never replaced, with
        // no window between a check and the rename.
        match rustix::fs::renameat_with(source, name, target, name, RenameFlags::NOREPLACE) {
            Ok(()) => Unquarantine::Restored,
            Err(Errno::NOENT) => Unquarantine::Missing,
            Err(Errno::EXIST) => Unquarantine::Conflict("the original path exists again; left in the trash".to_owned()),
            Err(errno) => Unquarantine::Failed(describe(errno, "moving back")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A root with `photos/a/x.jpg`, a job, and a folder outside the root.
    fn setup() -> (tempfile::TempDir, Storage, Uuid, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("photos/a")).unwrap();
        fs::write(dir.path().join("photos/a/x.jpg"), b"x").unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage, Uuid::new_v4(), tempfile::tempdir().unwrap())
    }

    fn rel(raw: &str) -> RelativePath {
        RelativePath::parse(raw).unwrap()
    }

    fn is_empty(dir: &std::path::Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn a_symlinked_trash_moves_nothing() {
        let (dir, storage, job, outside) = setup();
        symlink(outside.path(), dir.path().join(TRASH)).unwrap();
        let outcome = storage.quarantine(&rel("photos/a/x.jpg"), job);
        assert_eq!(outcome, Removal::Failed("cannot open the trash folder: path goes through a symbolic link".into()));
        assert!(dir.path().join("photos/a/x.jpg").exists());
        assert!(is_empty(outside.path()), "nothing landed outside the root");
    }

    #[test]
    fn unquarantine_restores_and_never_replaces() {
        let (dir, storage, job, _outside) = setup();
        let path = rel("photos/a/x.jpg");
        assert_eq!(storage.unquarantine(&path, job), Unquarantine::Missing, "nothing in the trash yet");
        assert_eq!(storage.quarantine(&path, job), Removal::Removed);
        fs::write(dir.path().join("photos/a/x.jpg"), b"newer").unwrap();
        assert_eq!(
            storage.unquarantine(&path, job),
            Unquarantine::Conflict("the original path exists again; left in the trash".into())
        );
        assert_eq!(fs::read(dir.path().join("photos/a/x.jpg")).unwrap(), b"newer");
        assert_eq!(fs::read(dir.path().join(format!("{TRASH}/{job}/photos/a/x.jpg"))).unwrap(), b"x");
        // Once the newer file is gone, the folders are made again as needed.
        fs::remove_dir_all(dir.path().join("photos/a")).unwrap();
        assert_eq!(storage.unquarantine(&path, job), Unquarantine::Restored);
        assert_eq!(fs::read(dir.path().join("photos/a/x.jpg")).unwrap(), b"x");
    }

    #[test]
    fn unquarantine_refuses_a_symlinked_folder_on_either_side() {
        let (dir, storage, job, outside) = setup();
        let path = rel("photos/a/x.jpg");
        assert_eq!(storage.quarantine(&path, job), Removal::Removed);
        fs::remove_dir(dir.path().join("photos/a")).unwrap();
        symlink(outside.path(), dir.path().join("photos/a")).unwrap();
        let refused = Unquarantine::Failed("path goes through a symbolic link".into());
        assert_eq!(storage.unquarantine(&path, job), refused);
        assert!(is_empty(outside.path()), "nothing landed outside the root");
        // The trash's job folder a symlink: nothing is taken in from outside.
        let other = Uuid::new_v4();
        fs::create_dir_all(outside.path().join("photos/b")).unwrap();
        fs::write(outside.path().join("photos/b/y.jpg"), b"y").unwrap();
        symlink(outside.path(), dir.path().join(format!("{TRASH}/{other}"))).unwrap();
        assert_eq!(storage.unquarantine(&rel("photos/b/y.jpg"), other), refused);
        assert!(outside.path().join("photos/b/y.jpg").exists());
    }

    #[test]
    fn purge_quarantined_unlinks_only_in_the_trash() {
        let (dir, storage, job, outside) = setup();
        let path = rel("photos/a/x.jpg");
        assert_eq!(storage.purge_quarantined(&path, job), Removal::Missing);
        assert_eq!(storage.quarantine(&path, job), Removal::Removed);
        assert_eq!(storage.purge_quarantined(&path, job), Removal::Removed);
        assert!(!dir.path().join(format!("{TRASH}/{job}/photos/a/x.jpg")).exists());
        let other = Uuid::new_v4();
        fs::create_dir_all(outside.path().join("photos/a")).unwrap();
        fs::write(outside.path().join("photos/a/x.jpg"), b"keep").unwrap();
        symlink(outside.path(), dir.path().join(format!("{TRASH}/{other}"))).unwrap();
        assert_eq!(
            storage.purge_quarantined(&path, other),
            Removal::Failed("path goes through a symbolic link".into())
        );
        assert!(outside.path().join("photos/a/x.jpg").exists());
    }

    #[tokio::test]
    async fn the_parallel_variants_keep_input_order() {
        let (dir, storage, job, _outside) = setup();
        let paths: Vec<_> = (0..150).map(|i| rel(&format!("photos/a/{i}.jpg"))).collect();
        for path in paths.iter().step_by(2) {
            fs::write(dir.path().join(path.as_str()), b"x").unwrap();
        }
        let moved = storage.dispose_many(paths.clone(), 3, Some(job)).await;
        let restored = storage.unquarantine_many(paths.clone(), 3, job).await;
        assert_eq!(storage.dispose_many(paths.clone(), 3, Some(job)).await, moved);
        let purged = storage.purge_quarantined_many(paths, 3, job).await;
        for (i, outcomes) in moved.iter().zip(&restored).zip(&purged).enumerate() {
            let want = if i % 2 == 0 {
                ((&Removal::Removed, &Unquarantine::Restored), &Removal::Removed)
            } else {
                ((&Removal::Missing, &Unquarantine::Missing), &Removal::Missing)
            };
            assert_eq!(outcomes, want, "file {i}");
        }
    }
}
