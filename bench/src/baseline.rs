//! What a storage owner would write by hand, on identical data: the numbers
//! janitor is measured against.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Expired cleanup by hand: one `DELETE … RETURNING` (sparing images that
/// active tasks use, as janitor does), then the returned files unlinked by
/// `threads` threads. Returns (deleted, time, of which the `DELETE`).
pub async fn expired(pool: &PgPool, root: &Path, threads: usize) -> anyhow::Result<(usize, Duration, Duration)> {
    let started = Instant::now();
    let paths: Vec<String> = sqlx::query_scalar(
        "DELETE FROM images WHERE storage_type = 'temporary' AND expires_at < now()
           AND id NOT IN (SELECT x FROM face_swap_tasks t,
                          unnest(ARRAY[t.husband_photo_id, t.wife_photo_id, t.template_id, t.result_image_id]) x
                          WHERE t.status IN ('pending', 'processing') AND x IS NOT NULL)
         RETURNING storage_path",
    )
    .fetch_all(pool)
    .await?;
    let deleting = started.elapsed();
    let root = root.to_owned();
    let count = paths.len();
    tokio::task::spawn_blocking(move || unlink_all(&root, &paths, threads)).await??;
    Ok((count, started.elapsed(), deleting))
}

fn unlink_all(root: &Path, paths: &[String], threads: usize) -> std::io::Result<()> {
    let chunk = paths.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    for path in part {
                        match std::fs::remove_file(root.join(path)) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("unlink thread"))
    })
}

/// The orphan sweep as a storage owner types it: one bash line. `find |
/// sort` the files and `COPY` the stored paths in the same byte order,
/// `comm -23` the two lists, and `rm` what only the disk has, 8 at a time.
/// `ROOT` and `DATABASE_URL` come from the environment.
pub const ORPHAN_SWEEP: &str = r#"cd "$ROOT" && LC_ALL=C comm -23 <(find photos templates preprocessed results -type f | LC_ALL=C sort) <(psql "$DATABASE_URL" -XAqc 'COPY (SELECT storage_path FROM images ORDER BY storage_path COLLATE "C") TO STDOUT') | xargs -d '\n' -r -P8 -n1000 rm -f --"#;

/// Its dry run: the same line, counting instead of removing.
pub const ORPHAN_SCAN: &str = r#"cd "$ROOT" && LC_ALL=C comm -23 <(find photos templates preprocessed results -type f | LC_ALL=C sort) <(psql "$DATABASE_URL" -XAqc 'COPY (SELECT storage_path FROM images ORDER BY storage_path COLLATE "C") TO STDOUT') | wc -l"#;

/// Runs one of the lines above with `bash -c`, exactly as printed, and
/// returns its output and time.
pub async fn shell(line: &str, root: &Path, database_url: &str) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(line)
        .env("ROOT", root)
        .env("DATABASE_URL", database_url)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let took = started.elapsed();
    anyhow::ensure!(output.status.success(), "the baseline's line failed ({}): {line}", output.status);
    Ok((String::from_utf8_lossy(&output.stdout).trim().to_owned(), took))
}

/// Reads the whole tree and the `images` table and its path index, so that
/// every timed run (janitor's and the baseline's) starts with a warm page
/// cache: the state a second run of either is in.
pub async fn warm(root: &Path, database_url: &str) -> anyhow::Result<()> {
    let line = r#"cd "$ROOT" && find photos templates preprocessed results -type f > /dev/null && psql "$DATABASE_URL" -XAqc 'COPY (SELECT storage_path FROM images ORDER BY storage_path COLLATE "C") TO STDOUT' > /dev/null"#;
    shell(line, root, database_url).await.map(drop)
}

/// Files under the root's category folders (untimed bookkeeping).
pub async fn count_files(root: &Path, database_url: &str) -> anyhow::Result<usize> {
    let line = r#"cd "$ROOT" && find photos templates preprocessed results -type f | wc -l"#;
    Ok(shell(line, root, database_url).await?.0.parse()?)
}

/// Session cleanup by hand: for each session, one transaction that deletes
/// its images (sparing those active tasks use), unlinks their files and
/// records a result row; `concurrency` sessions at a time. Returns the
/// jobs per second and the per-job latencies. The in-use check probes the
/// task indexes per image (`NOT EXISTS`): the `NOT IN` of the expired
/// baseline hashes every active task's images once per statement, which
/// is right for one big `DELETE` but cost 26 ms a session at a million
/// images (20,000 active tasks) and made the baseline, not janitor, slow.
pub async fn sessions(
    pool: &PgPool,
    root: &Path,
    sessions: &[String],
    concurrency: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    use futures::StreamExt as _;
    let started = Instant::now();
    let latencies: Vec<anyhow::Result<Duration>> = futures::stream::iter(sessions)
        .map(|session| async move {
            let began = Instant::now();
            let mut tx = pool.begin().await?;
            let paths: Vec<String> = sqlx::query_scalar(
                "DELETE FROM images i WHERE session_id = $1
                   AND NOT EXISTS (SELECT 1 FROM face_swap_tasks t
                                   WHERE t.status IN ('pending', 'processing')
                                     AND i.id IN (t.husband_photo_id, t.wife_photo_id, t.template_id, t.result_image_id))
                 RETURNING storage_path",
            )
            .bind(session)
            .fetch_all(&mut *tx)
            .await?;
            for path in &paths {
                match tokio::fs::remove_file(root.join(path)).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            sqlx::query(
                "INSERT INTO job_results (job_id, operation, status, deleted_count, finished_at)
                 VALUES (gen_random_uuid(), 'cleanup_session', 'completed', $1, now())",
            )
            .bind(paths.len() as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(began.elapsed())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let latencies = latencies.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((crate::rate(sessions.len(), started.elapsed()), latencies))
}
