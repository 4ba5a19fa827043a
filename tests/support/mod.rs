//! Helpers shared by the test suites: a temporary storage root, and seeding
//! of image rows, files and tasks. Every test gets its own database (from
//! `#[sqlx::test]`) and its own storage root, so tests never see each other.
#![allow(dead_code)] // Each suite uses a different subset.

use std::fs;
use std::path::{Path, PathBuf};

use janitor_workers::storage::CATEGORIES;
use sqlx::PgPool;
use tempfile::TempDir;

/// A storage root with the four category folders, removed on drop.
pub struct Store {
    dir: TempDir,
}

impl Store {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temporary storage root");
        for category in CATEGORIES {
            fs::create_dir(dir.path().join(category)).unwrap();
        }
        Self { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes a file of `size` bytes, creating its folders.
    pub fn write(&self, relative: &str, size: usize) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![b'x'; size]).unwrap();
    }

    /// Writes a file and backdates its modification time, as `cp -p` or
    /// rsync would. Its status-change time stays now: no program can set
    /// it, so the orphan grace period still sees a new file (see
    /// [`Store::wait_until_older`]).
    pub fn write_old(&self, relative: &str, size: usize) {
        self.write(relative, size);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
        fs::File::options().write(true).open(self.path(relative)).unwrap().set_modified(old).unwrap();
    }

    /// Waits until each file's last change (the newer of its mtime and
    /// ctime, what the orphan grace period measures) lies more than `age`
    /// in the past.
    pub async fn wait_until_older(&self, relative: &[&str], age: std::time::Duration) {
        use std::os::unix::fs::MetadataExt as _;
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let deadline = std::time::Instant::now() + age + Duration::from_secs(10);
        loop {
            let newest = relative
                .iter()
                .map(|path| {
                    let meta = fs::symlink_metadata(self.path(path)).unwrap();
                    let changed = UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
                    meta.modified().unwrap().max(changed)
                })
                .max()
                .unwrap_or(UNIX_EPOCH);
            if SystemTime::now().duration_since(newest).is_ok_and(|elapsed| elapsed > age) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "files did not get older than {age:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn exists(&self, relative: &str) -> bool {
        fs::symlink_metadata(self.path(relative)).is_ok()
    }
}

/// An image row to seed.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: String,
    pub storage_type: &'static str,
    pub session_id: Option<String>,
    pub size: i64,
    /// Hours from now; negative is in the past.
    pub expires_in_hours: Option<i64>,
}

impl Image {
    pub fn expired(path: &str, size: i64) -> Self {
        Self { path: path.to_owned(), storage_type: "temporary", session_id: None, size, expires_in_hours: Some(-1) }
    }

    pub fn fresh(path: &str, size: i64) -> Self {
        Self { expires_in_hours: Some(24), ..Self::expired(path, size) }
    }

    pub fn permanent(path: &str, size: i64) -> Self {
        Self { storage_type: "permanent", expires_in_hours: None, ..Self::expired(path, size) }
    }

    pub fn session(mut self, session_id: &str) -> Self {
        self.session_id = Some(session_id.to_owned());
        self
    }
}

/// Inserts the row, and writes its file when `store` is given. Returns the id.
pub async fn insert_image(pool: &PgPool, store: Option<&Store>, image: &Image) -> i64 {
    if let Some(store) = store {
        store.write(&image.path, image.size as usize);
    }
    let category = image.path.split('/').next().unwrap_or("photos").to_owned();
    sqlx::query_scalar(
        "INSERT INTO images (filename, storage_path, category, storage_type, session_id, file_size, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(hours => $7::int))
         RETURNING id",
    )
    .bind(image.path.rsplit('/').next().unwrap())
    .bind(&image.path)
    .bind(category)
    .bind(image.storage_type)
    .bind(&image.session_id)
    .bind(image.size)
    .bind(image.expires_in_hours.map(|h| h as i32))
    .fetch_one(pool)
    .await
    .expect("insert image")
}

/// Inserts `count` expired temporary images with files, in nested folders.
pub async fn seed_expired(pool: &PgPool, store: &Store, count: usize, size: i64) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let image = Image::expired(&format!("photos/{}/{i}.jpg", i / 100), size);
        ids.push(insert_image(pool, Some(store), &image).await);
    }
    ids
}

/// Seeds `count` expired temporary images of `size` bytes under
/// `photos/<folder>/`, with their files, in one statement (row-by-row
/// inserts would take most of a process-level test).
pub async fn seed_expired_in(pool: &PgPool, store: &Store, folder: &str, count: usize, size: i64) {
    for i in 0..count {
        store.write(&format!("photos/{folder}/{}/{i}.jpg", i / 100), size as usize);
    }
    sqlx::query(
        "INSERT INTO images (filename, storage_path, category, storage_type, file_size, expires_at)
         SELECT i || '.jpg', 'photos/' || $3 || '/' || (i / 100) || '/' || i || '.jpg', 'photos', 'temporary', $2,
                now() - interval '1 hour'
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(count as i32)
    .bind(size)
    .bind(folder)
    .execute(pool)
    .await
    .expect("seed expired images");
}

/// The four image columns of a task.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskImages {
    pub husband: Option<i64>,
    pub wife: Option<i64>,
    pub template: Option<i64>,
    pub result: Option<i64>,
}

/// Inserts a task; `completed_days_ago` sets `completed_at`.
pub async fn insert_task(pool: &PgPool, status: &str, images: TaskImages, completed_days_ago: Option<i64>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO face_swap_tasks (husband_photo_id, wife_photo_id, template_id, result_image_id, status, completed_at)
         VALUES ($1, $2, $3, $4, $5, now() - make_interval(days => $6::int))
         RETURNING id",
    )
    .bind(images.husband)
    .bind(images.wife)
    .bind(images.template)
    .bind(images.result)
    .bind(status)
    .bind(completed_days_ago.map(|d| d as i32))
    .fetch_one(pool)
    .await
    .expect("insert task")
}

pub async fn image_exists(pool: &PgPool, id: i64) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM images WHERE id = $1)").bind(id).fetch_one(pool).await.unwrap()
}

pub async fn count_images(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM images").fetch_one(pool).await.unwrap()
}

/// The database URL of a `#[sqlx::test]` pool, for running the binary
/// against the same database.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
    url.set_path(options.get_database().expect("test pool names its database"));
    url.to_string()
}
