//! What a storage owner would write by hand, on identical data: the numbers
//! janitor is measured against.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;

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

/// The orphan scan by hand: `find | sort` the files, `COPY` the sorted
/// stored paths, `comm` the two lists. Returns (orphans found, time).
pub async fn orphan_scan(pool: &PgPool, root: &Path, work: &Path) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let files = work.join("files.txt");
    let rows = work.join("rows.txt");
    let find = tokio::process::Command::new("bash")
        .arg("-c")
        .arg("cd \"$1\" && find photos templates preprocessed results -type f | LC_ALL=C sort > \"$2\"")
        .arg("bash")
        .arg(root)
        .arg(&files)
        .status();
    let copy = async {
        let mut out = tokio::fs::File::create(&rows).await?;
        let mut conn = pool.acquire().await?;
        let mut stream = conn
            .copy_out_raw("COPY (SELECT storage_path FROM images ORDER BY storage_path COLLATE \"C\") TO STDOUT")
            .await?;
        while let Some(chunk) = stream.try_next().await? {
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        anyhow::Ok(())
    };
    let (found, copied) = tokio::join!(find, copy);
    anyhow::ensure!(found?.success(), "find | sort failed");
    copied?;
    let comm = tokio::process::Command::new("bash")
        .arg("-c")
        .arg("LC_ALL=C comm -23 \"$1\" \"$2\" | wc -l")
        .arg("bash")
        .arg(&files)
        .arg(&rows)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let orphans: usize = String::from_utf8_lossy(&comm.stdout).trim().parse()?;
    Ok((orphans, started.elapsed()))
}
