//! `get_stats`: what could be cleaned right now, answered directly (no job).
//!
//! Three aggregate queries, each one pass over an index or the images table;
//! no file is touched.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::progress::megabytes;

pub const OPERATION: &str = "get_stats";

/// Seed-compatible: `expired_images`, `temporary_images`,
/// `old_task_results_30d` and `last_checked` are as the original returned
/// them; the rest is added.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub operation: &'static str,
    pub expired_images: i64,
    pub expired_images_bytes: i64,
    /// Expired images that a pending or processing task still uses.
    pub expired_images_in_use: i64,
    pub temporary_images: i64,
    pub temporary_images_bytes: i64,
    pub old_task_results_30d: i64,
    pub old_task_results_30d_bytes: i64,
    pub total_images: i64,
    pub total_images_bytes: i64,
    /// Bytes the expired and 30-day result cleanups would free.
    pub reclaimable_bytes: i64,
    pub reclaimable_mb: f64,
    pub last_checked: DateTime<Utc>,
}

const IMAGES: &str = "SELECT
    count(*) FILTER (WHERE storage_type = 'temporary' AND expires_at < now()),
    coalesce(sum(file_size) FILTER (WHERE storage_type = 'temporary' AND expires_at < now()), 0)::bigint,
    count(*) FILTER (WHERE storage_type = 'temporary'),
    coalesce(sum(file_size) FILTER (WHERE storage_type = 'temporary'), 0)::bigint,
    count(*),
    coalesce(sum(file_size), 0)::bigint,
    now()
    FROM images";

const OLD_RESULTS: &str = "SELECT count(*), coalesce(sum(i.file_size), 0)::bigint
    FROM images i
    WHERE i.id IN (SELECT result_image_id FROM face_swap_tasks
                   WHERE status IN ('completed', 'failed') AND result_image_id IS NOT NULL
                     AND completed_at < now() - interval '30 days')";

const EXPIRED_IN_USE: &str = "SELECT count(DISTINCT i.id)
    FROM face_swap_tasks t
    CROSS JOIN LATERAL unnest(ARRAY[t.husband_photo_id, t.wife_photo_id, t.template_id, t.result_image_id]) AS used(id)
    JOIN images i ON i.id = used.id
    WHERE t.status IN ('pending', 'processing')
      AND i.storage_type = 'temporary' AND i.expires_at < now()";

pub async fn collect(pool: &PgPool) -> sqlx::Result<Stats> {
    // Three independent passes, run at once on three connections.
    let images = sqlx::query_as::<_, (i64, i64, i64, i64, i64, i64, DateTime<Utc>)>(IMAGES).fetch_one(pool);
    let old_results = sqlx::query_as::<_, (i64, i64)>(OLD_RESULTS).fetch_one(pool);
    let in_use = sqlx::query_scalar::<_, i64>(EXPIRED_IN_USE).fetch_one(pool);
    let (images, (old_results, old_results_bytes), in_use) = tokio::try_join!(images, old_results, in_use)?;
    let (expired, expired_bytes, temporary, temporary_bytes, total, total_bytes, now) = images;
    let reclaimable = expired_bytes + old_results_bytes;
    Ok(Stats {
        operation: OPERATION,
        expired_images: expired,
        expired_images_bytes: expired_bytes,
        expired_images_in_use: in_use,
        temporary_images: temporary,
        temporary_images_bytes: temporary_bytes,
        old_task_results_30d: old_results,
        old_task_results_30d_bytes: old_results_bytes,
        total_images: total,
        total_images_bytes: total_bytes,
        reclaimable_bytes: reclaimable,
        reclaimable_mb: megabytes(reclaimable),
        last_checked: now,
    })
}
