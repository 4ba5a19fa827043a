//! The storage root: the only place janitor touches files, and a wall.
//!
//! Everything under the root is resolved relative to the root's file
//! descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` (`tree` holds those primitives). So a path can
//! neither climb out of the root nor pass through a symbolic link, even one
//! planted after the path was validated; a symlink as the last component is
//! unlinked or moved itself, never its target. That holds for unlinking,
//! for the quarantine's moves (`quarantine`) and for the trash ([`trash`]).
//!
//! ## Layout
//! - `path`: [`RelativePath`], the lexical half of the wall.
//! - `tree`: open, create, list, walk and remove folders beneath the root.
//! - `pool`: the blocking threads that act on many files at once.
//! - `quarantine`: moving one file into the trash, back, or purging it.
//! - [`trash`]: a job's whole trash folder: restore, list, measure, purge.
//! - `scan`: the orphan sweep's walk of the category folders.

mod inspect;
mod path;
mod pool;
mod quarantine;
mod scan;
pub mod trash;
mod tree;

use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

pub use inspect::Inspection;
pub use path::{PathError, RelativePath, CATEGORIES};
pub use quarantine::Unquarantine;
pub use scan::{FileIdentity, FileStat, Found, ScanItem, Walk};
pub use tree::Tally;

/// A handle on the storage root, cheap to clone and share with blocking
/// threads.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// An `O_PATH` descriptor of the root, opened once: every resolution is
    /// relative to it, so a later rename of the root's path changes nothing.
    root_fd: OwnedFd,
}

/// What happened to one file that was to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The file (or the symlink itself) was unlinked, or moved to the trash.
    Removed,
    /// There was nothing to delete. Counts as deleted: the goal is reached.
    Missing,
    /// The file is still there; the message becomes the error item.
    Failed(String),
}

/// The folders one thread opened last, for one operation of one job: where
/// files come from and where they go. Kept from file to file because files
/// of a batch come folder by folder.
#[derive(Debug, Default)]
struct Folders {
    source: tree::Cached,
    target: tree::Cached,
}

impl Storage {
    /// Opens the storage root. It must exist and be a directory: a missing
    /// root would make every file look "already deleted".
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        let root_fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("cannot open storage root {}", root.display()))?;
        Ok(Self { inner: Arc::new(Inner { root: root.to_owned(), root_fd }) })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Deletes one file without following symlinks and without leaving the
    /// root. Blocking: call it from a blocking thread.
    pub fn remove(&self, path: &RelativePath) -> Removal {
        let (parent, name) = path.split_parent();
        self.unlink_in(parent, name, &mut tree::Cached::default())
    }

    /// Unlinks `name` in the folder `folder` (relative to the root), reusing
    /// the folder opened for the previous file when it is the same one.
    fn unlink_in(&self, folder: &str, name: &str, cached: &mut tree::Cached) -> Removal {
        // Wall: the folder is resolved beneath the root fd with
        // RESOLVE_NO_SYMLINKS, so a symlinked folder is refused here, and
        // the unlink acts on the name in that folder, never a link's target.
        let dir = match cached.get(folder, || self.open_dir(folder)) {
            Ok(dir) => dir,
            // A folder that does not exist means the file does not either.
            Err(Errno::NOENT) => return Removal::Missing,
            Err(errno) => return Removal::Failed(describe(errno, "opening its folder")),
        };
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => Removal::Removed,
            Err(Errno::NOENT) => Removal::Missing,
            Err(errno) => Removal::Failed(describe(errno, "unlinking")),
        }
    }

    /// Deletes many files with up to `concurrency` blocking threads, and
    /// returns the outcomes in input order.
    pub async fn remove_many(&self, paths: Vec<RelativePath>, concurrency: usize) -> Vec<Removal> {
        self.dispose_many(paths, concurrency, None).await
    }

    /// Like [`Storage::remove_many`], but moving the files into the job's
    /// trash folder when `quarantine` names a job.
    pub async fn dispose_many(
        &self,
        paths: Vec<RelativePath>,
        concurrency: usize,
        quarantine: Option<uuid::Uuid>,
    ) -> Vec<Removal> {
        let storage = self.clone();
        let lost = Removal::Failed("unlink thread failed".to_owned());
        pool::run(paths, concurrency, lost, move |path, folders: &mut Folders| match quarantine {
            Some(job_id) => storage.quarantine_in(path, job_id, folders),
            None => {
                let (parent, name) = path.split_parent();
                storage.unlink_in(parent, name, &mut folders.source)
            }
        })
        .await
    }

    /// The root's descriptor: the start of every resolution.
    fn root_fd(&self) -> BorrowedFd<'_> {
        self.inner.root_fd.as_fd()
    }

    /// Opens an existing folder beneath the root, through the wall.
    fn open_dir(&self, relative: &str) -> Result<OwnedFd, Errno> {
        tree::open(self.root_fd(), relative)
    }
}

fn describe(errno: Errno, doing: &str) -> String {
    match errno {
        Errno::ISDIR => "is a directory".to_owned(),
        Errno::LOOP => "path goes through a symbolic link".to_owned(),
        Errno::NOTDIR => "a parent in the path is not a directory".to_owned(),
        Errno::XDEV => "path resolves outside the storage root".to_owned(),
        Errno::ACCESS | Errno::PERM => "permission denied".to_owned(),
        other => format!("{doing} failed: {}", io::Error::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("photos/a")).unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    }

    fn rel(raw: &str) -> RelativePath {
        RelativePath::parse(raw).unwrap()
    }

    #[test]
    fn removes_files_and_reports_missing_ones() {
        let (dir, storage) = root();
        fs::write(dir.path().join("photos/a/x.jpg"), b"x").unwrap();
        assert_eq!(storage.remove(&rel("photos/a/x.jpg")), Removal::Removed);
        assert!(!dir.path().join("photos/a/x.jpg").exists());
        assert_eq!(storage.remove(&rel("photos/a/x.jpg")), Removal::Missing);
        assert_eq!(storage.remove(&rel("photos/nope/x.jpg")), Removal::Missing);
    }

    #[test]
    fn refuses_directories_and_symlinked_parents() {
        let (dir, storage) = root();
        fs::create_dir(dir.path().join("photos/a/dir.jpg")).unwrap();
        assert_eq!(storage.remove(&rel("photos/a/dir.jpg")), Removal::Failed("is a directory".into()));
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x.jpg"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos/link")).unwrap();
        assert_eq!(
            storage.remove(&rel("photos/link/x.jpg")),
            Removal::Failed("path goes through a symbolic link".into())
        );
        assert!(outside.path().join("x.jpg").exists());
    }

    #[test]
    fn unlinks_a_symlink_itself_never_its_target() {
        let (dir, storage) = root();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target.jpg");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("photos/a/l.jpg")).unwrap();
        assert_eq!(storage.remove(&rel("photos/a/l.jpg")), Removal::Removed);
        assert!(target.exists());
        assert!(fs::symlink_metadata(dir.path().join("photos/a/l.jpg")).is_err());
    }

    #[tokio::test]
    async fn a_reused_folder_never_lets_a_symlinked_one_through() {
        let (dir, storage) = root();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x.jpg"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos/link")).unwrap();
        fs::write(dir.path().join("photos/a/1.jpg"), b"x").unwrap();
        fs::write(dir.path().join("photos/a/2.jpg"), b"x").unwrap();
        let paths = ["photos/a/1.jpg", "photos/link/x.jpg", "photos/a/2.jpg", "photos/gone/3.jpg"];
        // One thread: the folder of one file is reused for the next.
        let outcomes = storage.remove_many(paths.iter().map(|p| rel(p)).collect(), 1).await;
        assert_eq!(
            outcomes,
            [
                Removal::Removed,
                Removal::Failed("path goes through a symbolic link".into()),
                Removal::Removed,
                Removal::Missing
            ]
        );
        assert!(outside.path().join("x.jpg").exists());
    }

    #[tokio::test]
    async fn remove_many_keeps_input_order() {
        let (dir, storage) = root();
        let mut paths = Vec::new();
        for i in 0..10 {
            if i % 3 != 0 {
                fs::write(dir.path().join(format!("photos/a/{i}.jpg")), b"x").unwrap();
            }
            paths.push(rel(&format!("photos/a/{i}.jpg")));
        }
        let outcomes = storage.remove_many(paths, 4).await;
        for (i, outcome) in outcomes.iter().enumerate() {
            let want = if i % 3 == 0 { Removal::Missing } else { Removal::Removed };
            assert_eq!(outcome, &want, "file {i}");
        }
    }
}
