//! The storage root: the only place janitor touches files, and a wall.
//!
//! Files are removed with `unlinkat` relative to a directory that was opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the root's file
//! descriptor. So a path can neither climb out of the root nor pass through a
//! symbolic link, even one planted after the path was validated; a symlink as
//! the last component is unlinked itself, never its target.

mod inspect;
mod path;
mod scan;
pub mod trash;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub use inspect::Inspection;
pub use path::{PathError, RelativePath, CATEGORIES};
pub use scan::{FileEntry, ScanItem, Scanner};

/// Files an unlink thread takes at a time: consecutive ones, so that they
/// mostly share a folder.
const STRIDE: usize = 64;

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
    /// The file (or the symlink itself) was unlinked.
    Removed,
    /// There was nothing to delete. Counts as deleted: the goal is reached.
    Missing,
    /// The file is still there; the message becomes the error item.
    Failed(String),
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
        self.remove_cached(path, &mut None)
    }

    /// [`Storage::remove`], reusing the folder opened for the previous file
    /// when it is the same one: files of a batch come folder by folder, and
    /// resolving the folder again for every file costs as much as the unlink.
    fn remove_cached(&self, path: &RelativePath, folder: &mut Option<(String, OwnedFd)>) -> Removal {
        let (parent, name) = path.split_parent();
        let dir = match folder {
            Some((open, dir)) if open == parent => &*dir,
            _ => match self.open_dir(parent) {
                Ok(dir) => &folder.insert((parent.to_owned(), dir)).1,
                // A parent that does not exist means the file does not either.
                Err(Errno::NOENT) => return Removal::Missing,
                Err(errno) => return Removal::Failed(describe(errno, "opening its folder")),
            },
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
        let total = paths.len();
        let threads = concurrency.max(1).min(total.div_ceil(STRIDE)).max(1);
        let paths = Arc::new(paths);
        // Threads take the next run of files as they come free, so a slow
        // run on one thread does not hold the others idle at the end.
        let next = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let storage = self.clone();
                let paths = Arc::clone(&paths);
                let next = Arc::clone(&next);
                tokio::task::spawn_blocking(move || {
                    let mut folder = None;
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(STRIDE, Ordering::Relaxed);
                        if start >= total {
                            return done;
                        }
                        let run = &paths[start..(start + STRIDE).min(total)];
                        let outcomes = run.iter().map(|path| match quarantine {
                            Some(job_id) => storage.quarantine(path, job_id),
                            None => storage.remove_cached(path, &mut folder),
                        });
                        done.push((start, outcomes.collect::<Vec<_>>()));
                    }
                })
            })
            .collect();
        let mut outcomes = vec![None; total];
        for handle in handles {
            // A thread that died leaves its files' fate unknown: they are
            // reported as failed below, so their rows stay and a later run
            // retries them.
            if let Ok(runs) = handle.await {
                for (start, run) in runs {
                    for (slot, outcome) in outcomes[start..].iter_mut().zip(run) {
                        *slot = Some(outcome);
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Removal::Failed("unlink thread failed".to_owned())))
            .collect()
    }

    /// A scanner over the category folders, for the orphan sweep.
    pub fn scanner(&self) -> Scanner {
        Scanner::new(self.inner.root.clone())
    }

    fn open_dir(&self, relative: &str) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            self.inner.root_fd.as_fd(),
            relative,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
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
