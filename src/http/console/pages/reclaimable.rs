//! "Reclaimable now" on the overview: what `stats` says could be cleaned.
//!
//! `stats` makes three aggregate passes over `images` (0.3 s at a million
//! images), too slow for a page that must render in well under 100 ms. So
//! the overview shows the last figures computed, with their time, and when
//! they are older than [`FRESH`] it starts one computation in the
//! background (never two at once, however many viewers) and does not wait
//! for it: the next view shows the new figures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use janitor_workers::jobs::stats::{self, Stats};
use maud::{html, Markup};
use sqlx::PgPool;

use super::super::layout;

/// How old the figures may be before a view starts a new computation.
const FRESH: Duration = Duration::from_secs(60);

/// The figures last computed, shared by every view of this process.
#[derive(Debug, Default)]
pub struct Reclaimable {
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    stats: Option<Stats>,
    computed: Option<Instant>,
    refreshing: bool,
    error: Option<String>,
}

impl Reclaimable {
    /// The figures as they are now (none before the first computation
    /// ended), after starting a computation if they are stale and none runs.
    fn current(self: &Arc<Self>, pool: &PgPool) -> (Option<Stats>, Option<String>) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = cache.computed.is_none_or(|at| at.elapsed() >= FRESH);
        if stale && !cache.refreshing {
            cache.refreshing = true;
            let (this, pool) = (Arc::clone(self), pool.clone());
            tokio::spawn(async move {
                let outcome = stats::collect(&pool).await;
                let mut cache = this.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match outcome {
                    Ok(stats) => (cache.stats, cache.error) = (Some(stats), None),
                    Err(err) => {
                        tracing::warn!(error = %err, "console: cannot compute the reclaimable figures");
                        cache.error = Some(err.to_string());
                    }
                }
                cache.computed = Some(Instant::now());
                cache.refreshing = false;
            });
        }
        (cache.stats.clone(), cache.error.clone())
    }
}

/// The overview's section.
pub fn section(reclaimable: &Arc<Reclaimable>, pool: &PgPool) -> Markup {
    let (stats, error) = reclaimable.current(pool);
    html! {
        section id="reclaimable" aria-labelledby="reclaimable-title" {
            h2 id="reclaimable-title" { "Reclaimable now" }
            @match &stats {
                Some(stats) => {
                    p {
                        strong data-bytes=(stats.reclaimable_bytes) { (format!("{:.1} MB", stats.reclaimable_mb)) }
                        " in " (stats.expired_images) " expired images and "
                        (stats.old_task_results_30d) " results older than 30 days; "
                        (stats.expired_images_in_use) " expired images are in use and stay."
                    }
                    p.note { "As of " (layout::time(stats.last_checked)) " (figures are at most a minute old)." }
                }
                None => p.note { "Being computed; reload in a moment." }
            }
            @if let Some(error) = &error {
                p.error role="alert" { "The last computation failed: " (error) }
            }
        }
    }
}
