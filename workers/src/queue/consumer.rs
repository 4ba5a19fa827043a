//! Per-backend consumer state and the heartbeat that keeps its leases alive.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tracing::{debug, warn};

use super::{config::unique_consumer_name, queue::StreamQueue, scripts};

/// One consumer of the group: its name and the entries it is running.
///
/// Shared by the backend (which hands tasks out), the acknowledger (which
/// settles them) and the heartbeat (which refreshes their leases).
#[derive(Debug)]
pub(crate) struct Consumer {
    /// `host-pid-random`, unique per backend instance.
    pub(crate) name: String,
    /// Entry ids handed to the worker and not yet settled.
    in_flight: Mutex<HashSet<String>>,
    /// Set when the worker starts shutting down; the fetch loop stops at the
    /// next opportunity instead of issuing another blocking read.
    closing: AtomicBool,
}

impl Consumer {
    pub(crate) fn new() -> Self {
        Self { name: unique_consumer_name(), in_flight: Mutex::new(HashSet::new()), closing: AtomicBool::new(false) }
    }

    /// A poisoned lock only means a panic elsewhere; the set itself is still sound.
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn start(&self, entry_id: &str) {
        self.lock().insert(entry_id.to_owned());
    }

    pub(crate) fn finish(&self, entry_id: &str) {
        self.lock().remove(entry_id);
    }

    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    fn running_ids(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// Spawns the heartbeat: every `heartbeat_interval`, refresh the lease of each
/// running entry this consumer still owns, so no other consumer rescues a job
/// that is merely slow. The caller aborts the task when the backend closes.
pub(crate) fn spawn_heartbeat(queue: StreamQueue, consumer: Arc<Consumer>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(queue.config().heartbeat_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut conn = queue.connection();
        loop {
            tick.tick().await;
            let ids = consumer.running_ids();
            if ids.is_empty() {
                continue;
            }
            let group = &queue.config().group;
            match scripts::heartbeat(&mut conn, queue.keys(), group, &consumer.name, &ids).await {
                Ok(lost) => {
                    debug!(consumer = %consumer.name, refreshed = ids.len() - lost.len(), "heartbeat");
                    for id in lost {
                        // The job keeps running here; its result is still acknowledged,
                        // but another consumer may run it too (at-least-once).
                        warn!(entry_id = %id, "lease lost: entry {id} is now owned by another consumer");
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat failed; will retry next tick"),
            }
        }
    })
}
