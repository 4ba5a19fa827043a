//! A look at files before their rows are deleted.
//!
//! A row batch deletes its rows first and unlinks their files only after the
//! commit (see `jobs/rows`). So that a file which plainly cannot be unlinked
//! keeps its row (and is retried once someone fixes it), each file is
//! inspected through the same wall as the unlink before its row is claimed:
//! its folder is opened beneath the root without following symlinks, the
//! folder must be writable, and the entry must not be a directory. What the
//! inspection cannot foresee (an immutable file, an I/O error, a change in
//! between) fails at the unlink instead and becomes an error item then.

use std::os::fd::OwnedFd;

use rustix::fs::{Access, AtFlags, FileType};
use rustix::io::Errno;

use super::scan::{stat_at, FileStat};
use super::{describe, tree, RelativePath, Storage};

/// What the inspection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A file (or a symlink, which is unlinked itself) that can be unlinked.
    Present,
    /// Nothing at the path: the row can go, there is no file to unlink.
    Missing,
    /// The file cannot be unlinked; the message becomes the error item.
    Unremovable(String),
}

/// The folder opened for the previous file, and whether it is writable.
type Folder = Option<(String, Result<OwnedFd, String>)>;

impl Storage {
    /// Inspects many files on one blocking thread (a `statat` each, and one
    /// folder open per folder: far cheaper than the unlinks they precede).
    pub async fn inspect_many(&self, paths: Vec<RelativePath>) -> Vec<Inspection> {
        let storage = self.clone();
        let inspected = tokio::task::spawn_blocking(move || {
            let mut folder = None;
            paths.iter().map(|path| storage.inspect_cached(path, &mut folder)).collect::<Vec<_>>()
        });
        inspected.await.unwrap_or_else(|_| Vec::new())
    }

    /// The `lstat` of many files through the wall, on one blocking thread:
    /// `Ok(None)` for a file that is not there.
    pub async fn stat_many(&self, paths: Vec<RelativePath>) -> Vec<Result<Option<FileStat>, String>> {
        let storage = self.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let mut folder = tree::Cached::default();
            let mut stat = |path: &RelativePath| {
                let (parent, name) = path.split_parent();
                // Wall: the folder is resolved beneath the root fd with
                // RESOLVE_NO_SYMLINKS; the stat is of the name in it.
                let dir = match folder.get(parent, || storage.open_dir(parent)) {
                    Ok(dir) => dir,
                    Err(Errno::NOENT) => return Ok(None),
                    Err(errno) => return Err(describe(errno, "opening its folder")),
                };
                match stat_at(dir, name) {
                    Ok(found) => Ok(Some(found)),
                    Err(Errno::NOENT) => Ok(None),
                    Err(errno) => Err(describe(errno, "inspecting")),
                }
            };
            paths.iter().map(&mut stat).collect::<Vec<_>>()
        });
        stats.await.unwrap_or_default()
    }

    /// Whether `relative` is a real folder beneath the root (a symlink, a
    /// file or nothing is not), with the reason when it is not.
    pub fn folder_usable(&self, relative: &str) -> Result<(), String> {
        self.open_dir(relative).map(drop).map_err(|errno| match errno {
            Errno::NOENT => "it does not exist".to_owned(),
            Errno::LOOP => "it is a symbolic link, which is never followed".to_owned(),
            Errno::NOTDIR => "it is not a directory".to_owned(),
            errno => describe(errno, "opening it"),
        })
    }

    fn inspect_cached(&self, path: &RelativePath, folder: &mut Folder) -> Inspection {
        let (parent, name) = path.split_parent();
        let dir = match folder {
            Some((open, dir)) if open == parent => dir,
            _ => match self.open_dir(parent) {
                Ok(dir) => {
                    // Write and search permission on the folder is what an
                    // unlink needs; a read-only mount fails here (EROFS).
                    let writable =
                        match rustix::fs::accessat(&dir, ".", Access::WRITE_OK | Access::EXEC_OK, AtFlags::empty()) {
                            Ok(()) => Ok(dir),
                            Err(errno) => Err(describe(errno, "checking its folder")),
                        };
                    &folder.insert((parent.to_owned(), writable)).1
                }
                Err(Errno::NOENT) => return Inspection::Missing,
                Err(errno) => return Inspection::Unremovable(describe(errno, "opening its folder")),
            },
        };
        let dir = match dir {
            Ok(dir) => dir,
            Err(message) => return Inspection::Unremovable(message.clone()),
        };
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                Inspection::Unremovable(describe(Errno::ISDIR, "inspecting"))
            }
            Ok(_) => Inspection::Present,
            Err(Errno::NOENT) => Inspection::Missing,
            Err(errno) => Inspection::Unremovable(describe(errno, "inspecting")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[tokio::test]
    async fn tells_present_missing_and_unremovable_apart() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("photos/a/dir.jpg")).unwrap();
        fs::write(dir.path().join("photos/a/x.jpg"), b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos/link")).unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let paths = ["photos/a/x.jpg", "photos/a/gone.jpg", "photos/a/dir.jpg", "photos/link/y.jpg", "photos/no/z.jpg"];
        let found = storage.inspect_many(paths.iter().map(|p| RelativePath::parse(p).unwrap()).collect()).await;
        assert_eq!(
            found,
            [
                Inspection::Present,
                Inspection::Missing,
                Inspection::Unremovable("is a directory".into()),
                Inspection::Unremovable("path goes through a symbolic link".into()),
                Inspection::Missing,
            ]
        );
    }
}
