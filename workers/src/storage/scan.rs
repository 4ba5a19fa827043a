//! The orphan sweep's walk over the category folders: through the wall, in
//! byte order, resumable.
//!
//! - **The wall.** Every folder is opened by one name relative to its
//!   already-walled parent (`openat2` with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS`), starting from the root's descriptor. A symlink is
//!   listed as an entry and never entered; a folder swapped for a symlink
//!   between its listing and its opening is refused at the opening.
//! - **Byte order.** Entries come in the byte order of their full paths,
//!   the order of `COLLATE "C"`, so that the sweep can merge the walk with
//!   the stored paths read from an index. Within a folder, names are sorted
//!   with a folder's name compared as if it ended in `/` (so `a.jpg` comes
//!   before the folder `a`, whose paths all start with `a/`).
//! - **Resume.** Entries up to and including a checkpoint path are skipped;
//!   a folder whose whole content lies before it is not even listed.
//! - **No stat** unless asked: the listing gives each entry's type, and only
//!   the sweep's candidates are stat'ed ([`Found::stat`]).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Dir, FileType};
use rustix::io::Errno;

use super::{describe, tree, CATEGORIES};

/// One file (or symlink, never followed) found by the walk.
#[derive(Debug)]
pub struct Found {
    /// Relative to the storage root, `/`-separated.
    pub path: String,
    /// The walled folder that holds it, shared with its siblings.
    folder: Rc<OwnedFd>,
    name_at: usize,
}

/// A file's size and age, from its own `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// The newer of its modification and status-change times. The status
    /// change time cannot be set by a program: a file copied in with
    /// `cp -p`, rsync or tar keeps an old mtime but gets a new ctime.
    pub changed: SystemTime,
    pub is_dir: bool,
    pub identity: FileIdentity,
}

/// Which file a name held when it was looked at: its device, its inode and
/// its modification time. A rename keeps all three; a file written in its
/// place (an upload, `cp -p`) has another inode, and one rewritten in place
/// another modification time. (The status-change time is no use here: a
/// rename changes it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FileIdentity {
    #[allow(clippy::unnecessary_cast)] // The field types differ between targets.
    pub(super) fn of(stat: &rustix::fs::Stat) -> Self {
        let mtime_ns = (stat.st_mtime as i64).saturating_mul(1_000_000_000).saturating_add(stat.st_mtime_nsec as i64);
        Self { dev: stat.st_dev as u64, ino: stat.st_ino as u64, mtime_ns }
    }
}

/// What the walk yields, in path order.
#[derive(Debug)]
pub enum ScanItem {
    File(Found),
    /// Something the walk could not read or name; it becomes an error item
    /// and is never deleted.
    Error {
        path: String,
        error: String,
    },
}

impl ScanItem {
    pub fn path(&self) -> &str {
        match self {
            ScanItem::File(found) => &found.path,
            ScanItem::Error { path, .. } => path,
        }
    }
}

impl Found {
    pub fn name(&self) -> &str {
        &self.path[self.name_at..]
    }

    /// The file's own `lstat`, relative to its walled folder; `None` if it
    /// is gone since the listing.
    pub fn stat(&self) -> Result<Option<FileStat>, String> {
        match stat_at(self.folder.as_fd(), self.name()) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(describe(errno, "inspecting")),
        }
    }
}

/// `lstat` of `name` in a walled folder.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &str) -> Result<FileStat, Errno> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let time = |secs: i64, nanos: u64| {
        let nanos = Duration::from_nanos(nanos);
        match u64::try_from(secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + nanos,
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    #[allow(clippy::unnecessary_cast)] // The field types differ between targets.
    let (modified, changed) =
        (time(stat.st_mtime as i64, stat.st_mtime_nsec as u64), time(stat.st_ctime as i64, stat.st_ctime_nsec as u64));
    Ok(FileStat {
        size: stat.st_size as u64,
        changed: modified.max(changed),
        is_dir: FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
        identity: FileIdentity::of(&stat),
    })
}

/// The walk: an iterator over the category folders' entries. Blocking: run
/// it on a blocking thread.
pub struct Walk<'a> {
    root: BorrowedFd<'a>,
    after: Option<String>,
    categories: VecDeque<&'static str>,
    stack: Vec<Level>,
}

/// One folder being walked: its entries still to visit.
struct Level {
    folder: Rc<OwnedFd>,
    /// The folder's path and a `/`.
    prefix: String,
    entries: std::vec::IntoIter<(String, bool)>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(root: BorrowedFd<'a>, after: Option<&str>) -> Self {
        let mut categories = CATEGORIES;
        categories.sort_unstable();
        Self { root, after: after.map(str::to_owned), categories: categories.into(), stack: Vec::new() }
    }

    /// Whether everything under the folder `prefix` (ending in `/`) lies at
    /// or before the checkpoint, so the folder need not be listed.
    fn done_before(&self, prefix: &str) -> bool {
        self.after.as_deref().is_some_and(|after| prefix < after && !after.starts_with(prefix))
    }

    /// Opens and lists a folder through the wall, as a new level.
    fn enter(&mut self, parent: BorrowedFd<'_>, name: &str, prefix: String) -> Result<(), String> {
        // Wall: one name, relative to a walled parent, RESOLVE_NO_SYMLINKS.
        let folder = tree::open_readable(parent, name).map_err(|errno| describe(errno, "opening the folder"))?;
        let mut entries = Vec::new();
        let listing = Dir::read_from(&folder).map_err(|errno| describe(errno, "listing the folder"))?;
        for entry in listing {
            let entry = entry.map_err(|errno| describe(errno, "listing the folder"))?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => match rustix::fs::statat(&folder, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
                    Err(_) => false,
                },
                _ => false,
            };
            // A name that is not UTF-8 is kept as it is, lossily: no row can
            // refer to it, and the sweep reports it instead of touching it.
            entries.push((String::from_utf8(raw.to_vec()).unwrap_or_else(|_| invalid(raw)), is_dir));
        }
        // A folder sorts as its name and a `/`: the order of full paths.
        entries.sort_unstable_by(|(a, a_dir), (b, b_dir)| path_order(a.as_bytes(), *a_dir, b.as_bytes(), *b_dir));
        self.stack.push(Level { folder: Rc::new(folder), prefix, entries: entries.into_iter() });
        Ok(())
    }
}

/// The order of two names of one folder as parts of full paths: a folder's
/// name compares as if it ended in `/`. The common prefix is compared as
/// bytes; only the short rest goes byte by byte.
fn path_order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> std::cmp::Ordering {
    let common = a.len().min(b.len());
    a[..common].cmp(&b[..common]).then_with(|| {
        let slash = |dir: bool| if dir { &b"/"[..] } else { &[] };
        let a = a[common..].iter().chain(slash(a_dir));
        let b = b[common..].iter().chain(slash(b_dir));
        a.cmp(b)
    })
}

/// Marks a name that is not UTF-8 so that it can never equal a stored path.
fn invalid(raw: &[u8]) -> String {
    format!("\u{0}{}", String::from_utf8_lossy(raw))
}

impl Iterator for Walk<'_> {
    type Item = ScanItem;

    fn next(&mut self) -> Option<ScanItem> {
        loop {
            let Some(level) = self.stack.last_mut() else {
                let category = self.categories.pop_front()?;
                let prefix = format!("{category}/");
                if self.done_before(&prefix) {
                    continue;
                }
                if let Err(error) = self.enter(self.root, category, prefix) {
                    let error = format!("category folder unusable: {error}");
                    return Some(ScanItem::Error { path: category.to_owned(), error });
                }
                continue;
            };
            let Some((name, is_dir)) = level.entries.next() else {
                self.stack.pop();
                continue;
            };
            let path = format!("{}{name}", level.prefix);
            if let Some(lossy) = name.strip_prefix('\u{0}') {
                let shown = format!("{}{lossy}", level.prefix);
                let error = "name is not valid UTF-8, so no row can refer to it; left alone".to_owned();
                return Some(ScanItem::Error { path: shown, error });
            }
            if is_dir {
                let parent = Rc::clone(&level.folder);
                let prefix = format!("{path}/");
                if self.done_before(&prefix) {
                    continue;
                }
                if let Err(error) = self.enter(parent.as_fd(), &name, prefix) {
                    return Some(ScanItem::Error { path, error: format!("cannot read during scan: {error}") });
                }
                continue;
            }
            let (name_at, folder) = (level.prefix.len(), Rc::clone(&level.folder));
            if self.after.as_deref().is_some_and(|after| path.as_str() <= after) {
                continue;
            }
            return Some(ScanItem::File(Found { path, folder, name_at }));
        }
    }
}

impl super::Storage {
    /// Walks every category folder, yielding the entries after `after` (a
    /// path relative to the root) in byte order. Blocking.
    pub fn walk(&self, after: Option<&str>) -> Walk<'_> {
        Walk::new(self.root_fd(), after)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Storage;
    use super::*;
    use std::fs;

    fn paths(items: impl Iterator<Item = ScanItem>) -> Vec<String> {
        items.map(|item| item.path().to_owned()).collect()
    }

    #[test]
    fn walks_in_byte_order_and_resumes_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        for category in CATEGORIES {
            fs::create_dir(dir.path().join(category)).unwrap();
        }
        let files =
            ["photos/a/x.jpg", "photos/a.jpg", "photos/a0.jpg", "photos/b.jpg", "results/r.png", "templates/t.png"];
        for file in files {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"x").unwrap();
        }
        fs::write(dir.path().join("stray.jpg"), b"x").unwrap();
        let storage = Storage::open(dir.path()).unwrap();

        let all = paths(storage.walk(None));
        let mut sorted = files.map(str::to_owned).to_vec();
        sorted.sort();
        assert_eq!(all, sorted, "byte order, as COLLATE \"C\" sorts");
        for (i, checkpoint) in all.iter().enumerate() {
            assert_eq!(paths(storage.walk(Some(checkpoint))), all[i + 1..], "after {checkpoint}");
        }
    }

    #[test]
    fn a_folder_sorts_as_its_name_and_a_slash() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let cases = [
            (("a.jpg", false), ("a", true), Less),
            (("a", true), ("a0.jpg", false), Less),
            (("a", true), ("a-b", false), Greater),
            (("a", false), ("a", true), Less),
            (("a", true), ("a", true), Equal),
            (("ab", false), ("a", true), Greater),
            (("b", false), ("a", true), Greater),
        ];
        for ((a, a_dir), (b, b_dir), want) in cases {
            let slash = |name: &str, dir: bool| format!("{name}{}", if dir { "/" } else { "" });
            assert_eq!(slash(a, a_dir).cmp(&slash(b, b_dir)), want, "the cases themselves: {a} {b}");
            assert_eq!(path_order(a.as_bytes(), a_dir, b.as_bytes(), b_dir), want, "{a} {b}");
        }
    }

    #[test]
    fn never_descends_into_symlinked_folders() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.jpg"), b"x").unwrap();
        fs::create_dir(dir.path().join("photos")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos/link")).unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let items: Vec<_> = storage.walk(None).collect();
        let files: Vec<_> = items
            .iter()
            .filter_map(|item| match item {
                ScanItem::File(found) => Some(found.path.as_str()),
                ScanItem::Error { .. } => None,
            })
            .collect();
        // The link itself is an entry; nothing behind it is.
        assert_eq!(files, ["photos/link"]);
    }

    #[test]
    fn a_symlinked_category_folder_is_an_error_not_a_walk() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos")).unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let items: Vec<_> = storage.walk(None).collect();
        assert!(matches!(&items[0], ScanItem::Error { path, .. } if path == "photos"), "{items:?}");
        assert!(items.iter().all(|item| !item.path().contains("secret")));
    }

    #[test]
    fn stat_takes_the_newer_of_mtime_and_ctime() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("photos")).unwrap();
        fs::write(dir.path().join("photos/old.jpg"), b"xyz").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
        fs::File::options()
            .write(true)
            .open(dir.path().join("photos/old.jpg"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let Some(ScanItem::File(found)) = storage.walk(None).next() else { panic!("one file") };
        let stat = found.stat().unwrap().unwrap();
        assert_eq!(stat.size, 3);
        assert!(stat.changed > SystemTime::now() - Duration::from_secs(60), "the ctime is now, as after cp -p");
    }
}
