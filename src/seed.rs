//! A realistic store, made fast (for the benchmarks and `janitor demo`):
//! rows by `COPY`, files by parallel threads, folders of at most 1000 files. The same `images` count always gives the
//! same layout, so a baseline can run on an identical, freshly seeded copy.
//!
//! Of `n` images: 80% temporary and expired (2% of all in use by pending or
//! processing tasks), 8% temporary and fresh in sessions of 10, 6% templates,
//! 6% results of tasks that finished 40 days ago. Plus 5% orphan files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

/// Bytes per seeded file (small: the benchmark is about counts, not bytes).
pub const FILE_SIZE: usize = 256;
const PER_FOLDER: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Expired,
    Session,
    Template,
    Result,
}

/// What image `i` of `n` is.
pub fn kind(i: usize, n: usize) -> Kind {
    match i * 100 / n.max(1) {
        0..=79 => Kind::Expired,
        80..=87 => Kind::Session,
        88..=93 => Kind::Template,
        _ => Kind::Result,
    }
}

pub fn path(i: usize, kind: Kind) -> String {
    let category = match kind {
        Kind::Expired if i % 4 == 0 => "preprocessed",
        Kind::Expired | Kind::Session => "photos",
        Kind::Template => "templates",
        Kind::Result => "results",
    };
    format!("{category}/{:05}/{i}.jpg", i / PER_FOLDER)
}

pub fn orphan_path(j: usize) -> String {
    let category = if j % 2 == 0 { "photos" } else { "results" };
    format!("{category}/o{:05}/{j}.jpg", j / PER_FOLDER)
}

/// Seeds `n` images (rows and files), their tasks, and `n / 20` orphans.
pub async fn seed(pool: &PgPool, root: &Path, n: usize, threads: usize) -> anyhow::Result<()> {
    let files: Vec<String> = (0..n).map(|i| path(i, kind(i, n))).chain((0..n / 20).map(orphan_path)).collect();
    let root_owned = root.to_owned();
    let writer = tokio::task::spawn_blocking(move || write_files(&root_owned, &files, threads));
    copy_images(pool, n).await?;
    copy_tasks(pool, n).await?;
    writer.await??;
    // As a live table would be: vacuumed and analyzed. It also keeps
    // autovacuum from starting on the fresh rows in the middle of a run.
    sqlx::query("VACUUM (ANALYZE) images, face_swap_tasks").execute(pool).await?;
    Ok(())
}

fn write_files(root: &Path, files: &[String], threads: usize) -> anyhow::Result<()> {
    for category in janitor_workers::storage::CATEGORIES {
        std::fs::create_dir_all(root.join(category))?;
    }
    let chunk = files.len().div_ceil(threads.max(1)).max(1);
    let content = vec![b'x'; FILE_SIZE];
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let content = &content;
                scope.spawn(move || -> std::io::Result<()> {
                    for relative in part {
                        let path: PathBuf = root.join(relative);
                        match std::fs::write(&path, content) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                std::fs::create_dir_all(path.parent().expect("has a folder"))?;
                                std::fs::write(&path, content)?;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("writer thread")?;
        }
        Ok(())
    })
}

async fn copy_images(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let mut data = Vec::with_capacity(n * 96);
    for i in 0..n {
        let kind = kind(i, n);
        let (storage_type, session, expires) = match kind {
            Kind::Expired => ("temporary", String::from("\\N"), "2000-01-01 00:00:00+00"),
            Kind::Session => ("temporary", format!("bench-{}", i / 10), "2999-01-01 00:00:00+00"),
            Kind::Template | Kind::Result => ("permanent", String::from("\\N"), "\\N"),
        };
        let path = path(i, kind);
        let category = path.split('/').next().unwrap_or("photos");
        writeln!(data, "{}\t{i}.jpg\t{path}\t{category}\t{storage_type}\t{session}\t{FILE_SIZE}\t{expires}", i + 1)?;
    }
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY images (id, filename, storage_path, category, storage_type, session_id, file_size, expires_at) FROM STDIN")
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    sqlx::query("SELECT setval(pg_get_serial_sequence('images', 'id'), $1)")
        .bind(n as i64 + 1)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Results' tasks (finished 40 days ago), and the active tasks that use 2%
/// of all images (taken from the expired ones).
async fn copy_tasks(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let mut data = Vec::new();
    for i in (0..n).filter(|i| kind(*i, n) == Kind::Result) {
        writeln!(data, "\\N\t{}\tcompleted\t2000-01-01 00:00:00+00", i + 1)?;
    }
    for i in (0..n).filter(|i| kind(*i, n) == Kind::Expired && i % 40 == 0) {
        let status = if i % 80 == 0 { "pending" } else { "processing" };
        writeln!(data, "{}\t\\N\t{status}\t\\N", i + 1)?;
    }
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY face_swap_tasks (husband_photo_id, result_image_id, status, completed_at) FROM STDIN")
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// Expected numbers for a store of `n`.
pub fn expected(n: usize) -> (usize, usize) {
    let expired = (0..n).filter(|i| kind(*i, n) == Kind::Expired).count();
    let in_use = (0..n).filter(|i| kind(*i, n) == Kind::Expired && i % 40 == 0).count();
    (expired - in_use, in_use)
}
