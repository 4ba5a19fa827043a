//! A bounded pool of blocking threads for file work in bulk: unlinking,
//! quarantining, moving back and purging many files share it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Items a thread takes at a time: consecutive ones, so that files mostly
/// share a folder with the one before them.
const STRIDE: usize = 64;

/// Runs `work` on every item with up to `concurrency` blocking threads, and
/// returns the outcomes in input order. Each thread keeps a `State` of its own
/// (the folders it opened last) from one item to the next. An item whose
/// thread died gets the outcome `lost`. The threads carry the caller's span.
pub async fn run<Item, Outcome, State, Work>(
    items: Vec<Item>,
    concurrency: usize,
    lost: Outcome,
    work: Work,
) -> Vec<Outcome>
where
    Item: Send + Sync + 'static,
    Outcome: Clone + Send + 'static,
    State: Default,
    Work: Fn(&Item, &mut State) -> Outcome + Send + Sync + 'static,
{
    let total = items.len();
    if total == 0 {
        return Vec::new();
    }
    let threads = concurrency.max(1).min(total.div_ceil(STRIDE));
    let (items, work) = (Arc::new(items), Arc::new(work));
    // Threads take the next run of items as they come free, so a slow run
    // on one thread does not hold the others idle at the end.
    let next = Arc::new(AtomicUsize::new(0));
    let span = tracing::Span::current();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (items, work, next, span) = (Arc::clone(&items), Arc::clone(&work), Arc::clone(&next), span.clone());
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let mut state = State::default();
                let mut done = Vec::new();
                loop {
                    let start = next.fetch_add(STRIDE, Ordering::Relaxed);
                    if start >= total {
                        return done;
                    }
                    let run = &items[start..(start + STRIDE).min(total)];
                    done.push((start, run.iter().map(|item| work(item, &mut state)).collect::<Vec<_>>()));
                }
            })
        })
        .collect();
    let mut outcomes = vec![None; total];
    for handle in handles {
        // A thread that died leaves its items' fate unknown: they get `lost`
        // below, so their rows stay and a later run retries them.
        if let Ok(runs) = handle.await {
            for (start, run) in runs {
                for (slot, outcome) in outcomes[start..].iter_mut().zip(run) {
                    *slot = Some(outcome);
                }
            }
        }
    }
    outcomes.into_iter().map(|outcome| outcome.unwrap_or_else(|| lost.clone())).collect()
}
