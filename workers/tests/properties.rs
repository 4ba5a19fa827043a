//! Property tests: the storage-root wall and the batch loop's crash and
//! resume bookkeeping, checked over generated inputs instead of examples.
//!
//! - `validator_*`: whatever string [`RelativePath::parse`] accepts names a
//!   file under a category folder, lexically.
//! - `removals_never_leave_the_category_folders`: [`Storage::remove`] on any
//!   accepted path, in a root with symlinks planted towards the outside,
//!   changes nothing outside the category folders.
//! - [`batch_model`]: the batch loop of `jobs/rows.rs`, crashed at random
//!   steps and resumed from its checkpoint, ends with exact counters.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use janitor_workers::storage::{RelativePath, Storage, CATEGORIES};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

#[path = "properties/batch_model.rs"]
mod batch_model;

// ---------------------------------------------------------------------------
// The path validator.

/// Components that have broken path validators before.
fn hazard() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["..", ".", "", "/", "\\", "\0", "\n", "\u{7f}", "\u{85}", "\u{202e}", " ", "..."])
            .prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        // Either side of the 255-byte name limit, in ASCII and in two-byte chars.
        1 => (250usize..=300).prop_map(|n| "a".repeat(n)),
        1 => (125usize..=130).prop_map(|n| "é".repeat(n)),
    ]
}

/// Components a real storage path has.
fn ordinary() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._-]{1,12}",
        1 => "\\PC{1,8}",
        1 => prop::sample::select(CATEGORIES.to_vec()).prop_map(str::to_owned),
    ]
}

/// Candidate storage paths: random strings, category-prefixed random
/// strings, paths built from segments (sometimes absolute), plausible paths
/// with one hazard put in, and paths either side of the 4095-byte limit.
fn raw_path() -> impl Strategy<Value = String> {
    let category = || prop::sample::select(CATEGORIES.to_vec()).prop_map(str::to_owned);
    let segment = prop_oneof![2 => ordinary(), 1 => hazard(), 1 => category()];
    let names = || prop::collection::vec(ordinary(), 1..5);
    prop_oneof![
        any::<String>(),
        "(?s).{0,64}",
        (category(), "(?s).{0,48}").prop_map(|(c, rest)| format!("{c}/{rest}")),
        (prop::collection::vec(segment, 1..8), prop::bool::weighted(0.2)).prop_map(|(segments, absolute)| {
            let relative = segments.join("/");
            if absolute {
                format!("/{relative}")
            } else {
                relative
            }
        }),
        (category(), names(), hazard(), any::<prop::sample::Index>()).prop_map(|(c, mut names, hazard, at)| {
            names.insert(at.index(names.len() + 1), hazard);
            format!("{c}/{}", names.join("/"))
        }),
        (category(), 14usize..=17, 250usize..=255).prop_map(|(c, count, len)| {
            let names = vec!["n".repeat(len); count];
            format!("{c}/{}", names.join("/"))
        }),
    ]
}

/// Joins `raw` onto `root` the way `Path::join` does (an absolute `raw`
/// replaces the root) and resolves `.` and `..` lexically.
fn lexical_join(root: &Path, raw: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in root.join(raw).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn check_accepted(raw: &str, path: &RelativePath) -> Result<(), TestCaseError> {
    prop_assert_eq!(path.as_str(), raw);
    prop_assert!(!raw.starts_with('/'), "absolute");
    prop_assert!(!raw.contains('\0') && !raw.contains('\\'), "NUL or backslash");
    prop_assert!(!raw.chars().any(char::is_control), "control character");
    prop_assert!(raw.len() <= 4095, "path of {} bytes", raw.len());
    let components: Vec<&str> = raw.split('/').collect();
    prop_assert!(components.len() >= 2, "a bare category folder");
    prop_assert!(CATEGORIES.contains(&components[0]), "first component {:?}", components[0]);
    for name in &components {
        prop_assert!(!matches!(*name, "" | "." | ".."), "component {:?}", name);
        prop_assert!(name.len() <= 255, "component of {} bytes", name.len());
    }
    let root = Path::new("/srv/janitor/storage");
    let category = root.join(components[0]);
    let joined = lexical_join(root, raw);
    prop_assert!(
        joined.starts_with(&category) && joined != category,
        "{} escapes {}",
        joined.display(),
        category.display()
    );
    let (parent, name) = path.split_parent();
    prop_assert!(!parent.is_empty() && !name.is_empty() && !name.contains('/'));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn validator_accepts_only_paths_under_a_category(raw in raw_path()) {
        if let Ok(path) = RelativePath::parse(&raw) {
            check_accepted(&raw, &path)?;
        }
    }
}

/// The property above is only as good as its inputs: they must land on both
/// sides of the check often enough.
#[test]
fn validator_inputs_cover_both_outcomes() {
    let mut runner = TestRunner::deterministic();
    let strategy = raw_path();
    let accepted =
        (0..2000).filter(|_| RelativePath::parse(&strategy.new_tree(&mut runner).unwrap().current()).is_ok()).count();
    assert!((200..=1800).contains(&accepted), "{accepted} of 2000 accepted");
}

// ---------------------------------------------------------------------------
// Removals in a real directory.

/// A storage root at `base/root` with traps: a symlinked folder and a
/// symlinked file pointing outside the root, a link back up to the root, and
/// files outside the category folders that must survive.
struct Trap {
    base: tempfile::TempDir,
    storage: Storage,
}

impl Trap {
    fn new() -> Self {
        use std::os::unix::fs::symlink;
        let base = tempfile::tempdir().unwrap();
        let (b, root) = (base.path(), base.path().join("root"));
        for dir in ["outside", "root/photos/a", "root/results", "root/.janitor-trash"] {
            std::fs::create_dir_all(b.join(dir)).unwrap();
        }
        for file in ["outside/victim.jpg", "victim.jpg", "root/keep.txt", "root/.janitor-trash/victim.jpg"] {
            std::fs::write(b.join(file), b"keep").unwrap();
        }
        std::fs::write(root.join("photos/a/x.jpg"), b"x").unwrap();
        symlink(b.join("outside"), root.join("photos/link")).unwrap();
        symlink(b.join("outside/victim.jpg"), root.join("photos/victim.jpg")).unwrap();
        symlink("..", root.join("results/up")).unwrap();
        let storage = Storage::open(&root).unwrap();
        Self { base, storage }
    }

    /// Everything outside the category folders (links not followed).
    fn outside_categories(&self) -> BTreeSet<PathBuf> {
        let root = self.base.path().join("root");
        walkdir::WalkDir::new(self.base.path())
            .into_iter()
            .map(|entry| entry.unwrap().into_path())
            .filter(|path| !CATEGORIES.iter().any(|c| path.starts_with(root.join(c))))
            .collect()
    }
}

/// Paths aimed at the traps: mostly a category folder, then names that
/// lead through the planted links.
fn trap_path() -> impl Strategy<Value = String> {
    let first = prop_oneof![
        6 => prop::sample::select(vec!["photos", "results", "templates"]),
        1 => prop::sample::select(vec!["", "..", "root", "outside", ".janitor-trash"]),
    ];
    let name = prop_oneof![
        3 => prop::sample::select(vec!["link", "up", "victim.jpg", "keep.txt"]),
        2 => prop::sample::select(vec!["..", ".", "", "a", "x.jpg", "outside", "root", ".janitor-trash", "photos"]),
    ];
    (first, prop::collection::vec(name, 1..4)).prop_map(|(first, names)| format!("{first}/{}", names.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn removals_never_leave_the_category_folders(raws in prop::collection::vec(trap_path(), 1..24)) {
        let trap = Trap::new();
        let before = trap.outside_categories();
        for raw in &raws {
            if let Ok(path) = RelativePath::parse(raw) {
                trap.storage.remove(&path);
            }
        }
        prop_assert_eq!(trap.outside_categories(), before);
    }
}
