//! Folders beneath the storage root, reached only through the wall.
//!
//! Every function here takes a folder descriptor that was itself opened
//! through the wall (the root's, or one these functions returned) and
//! resolves names relative to it with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`. So nothing here can climb
//! out of the root or pass through a symbolic link, even one planted between
//! two calls: a symlink met on the way is refused with `ELOOP`, never
//! followed. A symlink that is itself the entry being listed, measured or
//! removed is handled as the link, never as its target.
//!
//! Folder descriptors are `O_PATH` handles: they serve the `*at` calls and
//! cannot read anything. Listing a folder opens it again for reading, through
//! the wall as well, because `getdents` needs a real open.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::path::Arg;

/// How every path beneath the root is resolved: never above the folder it
/// starts from, never through a symlink or a `/proc` magic link.
const WALL: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// One entry of a folder, as its listing gives it (the type of a symlink is
/// `Symlink`, whatever it points to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: FileType,
}

/// Files (anything but a folder, symlinks included) and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

/// One entry met by [`walk`].
pub struct Step<'a> {
    /// The walled folder holding the entry: `*at` calls act relative to it.
    pub dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
    /// The entry's path relative to the folder the walk started from.
    pub path: &'a Path,
    pub kind: FileType,
}

/// Opens a folder beneath `base` as an `O_PATH` handle.
pub fn open<Fd: AsFd, P: Arg>(base: Fd, relative: P) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(base, relative, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), WALL)
}

/// Opens a folder beneath `base` for reading (listing it, and `*at` calls
/// relative to it), through the wall like [`open`].
pub fn open_readable<Fd: AsFd, P: Arg>(base: Fd, relative: P) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(base, relative, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), WALL)
}

/// Opens a folder beneath `base`, creating the missing ones component by
/// component. `relative` is `/`-separated with no empty, `.` or `..` part.
pub fn create(base: BorrowedFd<'_>, relative: &str) -> Result<OwnedFd, Errno> {
    // Most folders exist already: one resolution of the whole path.
    match open(base, relative) {
        Err(Errno::NOENT) => {}
        opened => return opened,
    }
    // `.` of `base` is `base` itself: the walk down starts from there.
    let mut dir = open(base, ".")?;
    for name in relative.split('/') {
        dir = match open(&dir, name) {
            // Wall: the folder is made by one name in a walled parent, then
            // opened through the wall. That open is what proves an entry
            // already there (EEXIST, a race with another thread) is a real
            // folder: a symlink fails with ELOOP, a file with ENOTDIR.
            Err(Errno::NOENT) => match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => open(&dir, name)?,
                Err(errno) => return Err(errno),
            },
            opened => opened?,
        };
    }
    Ok(dir)
}

/// The entries of a walled folder, sorted by name, without `.` and `..`.
pub fn list(dir: BorrowedFd<'_>) -> Result<Vec<Entry>, Errno> {
    // Wall: `.` of a walled folder is that folder; opened for reading
    // because `getdents` refuses an `O_PATH` handle.
    let listing =
        rustix::fs::openat2(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), WALL)?;
    let mut entries = Vec::new();
    for entry in Dir::new(listing)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            // Some file systems leave the type out of the listing: ask,
            // without following a symlink. One gone since is skipped.
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                Err(Errno::NOENT) => continue,
                Err(errno) => return Err(errno),
            },
            kind => kind,
        };
        entries.push(Entry { name: name.to_owned(), kind });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Visits everything beneath the folder `relative` (beneath `base`), depth
/// first, a folder's entries before the folder itself so that a visitor can
/// remove a folder it has just emptied. Symlinks are visited, never entered.
pub fn walk<F>(base: BorrowedFd<'_>, relative: &str, visit: &mut F) -> Result<(), Errno>
where
    F: FnMut(Step<'_>) -> Result<(), Errno>,
{
    let dir = open(base, relative)?;
    walk_in(dir.as_fd(), &mut PathBuf::new(), visit)
}

fn walk_in<F>(dir: BorrowedFd<'_>, path: &mut PathBuf, visit: &mut F) -> Result<(), Errno>
where
    F: FnMut(Step<'_>) -> Result<(), Errno>,
{
    for entry in list(dir)? {
        path.push(&entry.name);
        if entry.kind == FileType::Directory {
            // Wall: the child is opened by its one name relative to its
            // walled parent with RESOLVE_NO_SYMLINKS, so a folder swapped
            // for a symlink since the listing is refused here, not entered.
            let child = open(dir, entry.name.as_os_str())?;
            walk_in(child.as_fd(), path, visit)?;
        }
        visit(Step { dir, name: &entry.name, path, kind: entry.kind })?;
        path.pop();
    }
    Ok(())
}

/// What the folder `relative` holds, without following symlinks.
pub fn measure(base: BorrowedFd<'_>, relative: &str) -> Result<Tally, Errno> {
    let mut tally = Tally::default();
    walk(base, relative, &mut |step| tally.count(&step))?;
    Ok(tally)
}

/// Removes the folder `relative` and everything in it, and returns what it
/// held. std's `remove_dir_all` takes a path; this never leaves the walled
/// descriptors.
pub fn remove(base: BorrowedFd<'_>, relative: &str) -> Result<Tally, Errno> {
    let mut tally = Tally::default();
    walk(base, relative, &mut |step| {
        tally.count(&step)?;
        // Wall: unlinked by its one name in a walled folder, so a symlink
        // is removed itself and whatever it points to is never touched.
        let flags = if step.kind == FileType::Directory { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(step.dir, step.name, flags)
    })?;
    remove_folder(base, relative)?;
    Ok(tally)
}

/// Removes the empty folders beneath and including `relative`. Files stay,
/// and so do the folders that still hold them.
pub fn prune(base: BorrowedFd<'_>, relative: &str) -> Result<(), Errno> {
    walk(base, relative, &mut |step| match step.kind {
        // Wall: a folder removed by its one name in a walled parent.
        FileType::Directory => kept_if_not_empty(rustix::fs::unlinkat(step.dir, step.name, AtFlags::REMOVEDIR)),
        _ => Ok(()),
    })?;
    kept_if_not_empty(remove_folder(base, relative))
}

/// Removes the (empty) folder `relative` itself, from its walled parent.
fn remove_folder(base: BorrowedFd<'_>, relative: &str) -> Result<(), Errno> {
    let (parent, name) = relative.rsplit_once('/').unwrap_or((".", relative));
    let parent = open(base, parent)?;
    rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)
}

fn kept_if_not_empty(removed: Result<(), Errno>) -> Result<(), Errno> {
    match removed {
        Err(Errno::NOTEMPTY) => Ok(()),
        other => other,
    }
}

impl Tally {
    /// Counts a file met by a walk (a folder is not counted).
    fn count(&mut self, step: &Step<'_>) -> Result<(), Errno> {
        if step.kind != FileType::Directory {
            let stat = rustix::fs::statat(step.dir, step.name, AtFlags::SYMLINK_NOFOLLOW)?;
            self.files += 1;
            self.bytes += u64::try_from(stat.st_size).unwrap_or(0);
        }
        Ok(())
    }
}

/// The folder opened last, kept for the next file in the same folder: files
/// of a batch come folder by folder, and resolving the folder again for every
/// file costs as much as acting on the file.
#[derive(Debug, Default)]
pub struct Cached(Option<(String, OwnedFd)>);

impl Cached {
    /// The folder cached under `key`, or the one `open` gives (then cached).
    pub fn get(&mut self, key: &str, open: impl FnOnce() -> Result<OwnedFd, Errno>) -> Result<BorrowedFd<'_>, Errno> {
        let (_, dir) = match self.0.take() {
            Some((cached, dir)) if cached == key => self.0.insert((cached, dir)),
            _ => self.0.insert((key.to_owned(), open()?)),
        };
        // `AsFd` is implemented for `&mut OwnedFd` as well: naming the type
        // makes the handle borrow the cache, not the local reference.
        Ok(OwnedFd::as_fd(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A root with a folder outside it that holds a file to keep.
    fn setup() -> (tempfile::TempDir, OwnedFd, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(root.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep.jpg"), b"keep").unwrap();
        (root, fd, outside)
    }

    #[test]
    fn create_makes_missing_folders_and_refuses_symlinks_and_files() {
        let (root, fd, outside) = setup();
        create(fd.as_fd(), "a/b/c").unwrap();
        assert!(root.path().join("a/b/c").is_dir());
        create(fd.as_fd(), "a/b/c").unwrap();
        symlink(outside.path(), root.path().join("a/link")).unwrap();
        assert_eq!(create(fd.as_fd(), "a/link/d").unwrap_err(), Errno::LOOP);
        assert_eq!(create(fd.as_fd(), "a/link").unwrap_err(), Errno::LOOP);
        assert!(!outside.path().join("d").exists(), "nothing made outside the root");
        fs::write(root.path().join("a/file"), b"x").unwrap();
        assert_eq!(create(fd.as_fd(), "a/file/d").unwrap_err(), Errno::NOTDIR);
    }

    #[test]
    fn walk_lists_symlinks_as_entries_and_never_enters_them() {
        let (root, fd, outside) = setup();
        fs::create_dir_all(root.path().join("t/b")).unwrap();
        fs::write(root.path().join("t/b/x.jpg"), b"xyz").unwrap();
        symlink(outside.path(), root.path().join("t/a")).unwrap();
        let mut seen = Vec::new();
        walk(fd.as_fd(), "t", &mut |step| {
            seen.push((step.path.display().to_string(), step.kind));
            Ok(())
        })
        .unwrap();
        let want = [("a", FileType::Symlink), ("b/x.jpg", FileType::RegularFile), ("b", FileType::Directory)];
        assert_eq!(seen, want.map(|(path, kind)| (path.to_owned(), kind)));
        assert_eq!(measure(fd.as_fd(), "t").unwrap().files, 2);
    }

    #[test]
    fn remove_unlinks_symlinks_themselves_and_refuses_a_symlinked_start() {
        let (root, fd, outside) = setup();
        fs::create_dir_all(root.path().join("t/b")).unwrap();
        fs::write(root.path().join("t/b/x.jpg"), b"xyz").unwrap();
        symlink(outside.path(), root.path().join("t/b/link")).unwrap();
        symlink(outside.path(), root.path().join("linked")).unwrap();
        assert_eq!(remove(fd.as_fd(), "linked").unwrap_err(), Errno::LOOP);
        assert_eq!(remove(fd.as_fd(), "t").unwrap().files, 2);
        assert!(!root.path().join("t").exists());
        assert!(outside.path().join("keep.jpg").exists(), "nothing outside the root was removed");
    }

    #[test]
    fn prune_removes_only_empty_folders() {
        let (root, fd, _outside) = setup();
        fs::create_dir_all(root.path().join("t/empty/deeper")).unwrap();
        fs::create_dir_all(root.path().join("t/full")).unwrap();
        fs::write(root.path().join("t/full/x.jpg"), b"x").unwrap();
        prune(fd.as_fd(), "t").unwrap();
        assert!(!root.path().join("t/empty").exists());
        assert!(root.path().join("t/full/x.jpg").exists());
        fs::remove_file(root.path().join("t/full/x.jpg")).unwrap();
        prune(fd.as_fd(), "t").unwrap();
        assert!(!root.path().join("t").exists());
    }
}
