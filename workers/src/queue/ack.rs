//! Settling finished tasks: acknowledge, schedule a retry, or dead-letter.
//!
//! [`StreamAcker`] is installed by the backend as `AcknowledgeLayer<StreamAcker>`,
//! which apalis places *outside* the user's layers, so it sees each task's final
//! outcome after timeouts, panics caught by `catch_panic`, and in-process retries.

use std::{sync::Arc, time::Duration};

use apalis_core::{
    error::{AbortError, BoxDynError, RetryAfterError},
    task::ExecutionContext,
    worker::ext::ack::Acknowledge,
};
use futures::{future::BoxFuture, FutureExt};
use tracing::{debug, error, warn};

use super::{
    config::{HANDOFF_CONSUMER, HANDOFF_IDLE},
    consumer::Consumer,
    error::{HandBack, Postpone, QueueError, Relinquish},
    queue::StreamQueue,
    scripts::{self, DeadLetterArgs, Release},
    wire::Delivery,
};

/// What a finished task asks the queue to do with its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Success: `XACK` (and `XDEL`).
    Done,
    /// `AbortError` (also what `catch_panic` returns): never retry.
    Abort(String),
    /// Any other error: retry after `delay`, unless attempts are exhausted.
    Retry { delay: Duration, error: String },
    /// [`HandBack`]: stopped for a shutdown; give the entry back at once.
    HandBack,
    /// [`Relinquish`]: another consumer owns the entry now; touch nothing.
    Relinquish,
    /// [`Postpone`]: infrastructure trouble; retry after `delay` without
    /// counting an attempt.
    Postpone { delay: Duration, reason: String },
}

impl Outcome {
    fn classify<Res>(res: &Result<Res, BoxDynError>, default_delay: Duration) -> Self {
        let Err(e) = res else { return Self::Done };
        if e.downcast_ref::<AbortError>().is_some() {
            return Self::Abort(e.to_string());
        }
        if e.downcast_ref::<HandBack>().is_some() {
            return Self::HandBack;
        }
        if e.downcast_ref::<Relinquish>().is_some() {
            return Self::Relinquish;
        }
        if let Some(postpone) = e.downcast_ref::<Postpone>() {
            return Self::Postpone { delay: postpone.delay, reason: postpone.reason.clone() };
        }
        let delay = e.downcast_ref::<RetryAfterError>().map_or(default_delay, RetryAfterError::get_duration);
        Self::Retry { delay, error: e.to_string() }
    }
}

/// Acknowledges stream entries when their tasks finish.
#[derive(Clone, Debug)]
pub struct StreamAcker {
    queue: StreamQueue,
    consumer: Arc<Consumer>,
}

impl StreamAcker {
    pub(crate) fn new(queue: StreamQueue, consumer: Arc<Consumer>) -> Self {
        Self { queue, consumer }
    }

    /// Applies `outcome`, retrying transient Redis errors a few times.
    ///
    /// If every try fails the entry simply stays pending: once its lease
    /// expires another consumer rescues and reruns it (at-least-once).
    async fn settle(self, delivery: Delivery, outcome: Outcome) -> Result<(), QueueError> {
        // Stop heartbeating first, so a late heartbeat cannot undo the idle
        // time set by a retry release.
        self.consumer.finish(&delivery.entry_id);
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.apply(&delivery, &outcome).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 3 => {
                    warn!(entry_id = %delivery.entry_id, error = %e, "settling failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tries += 1;
                }
                Err(e) => {
                    error!(entry_id = %delivery.entry_id, error = %e, "could not settle entry; it will be rescued after min_idle");
                    return Err(e);
                }
            }
        }
    }

    async fn apply(&self, delivery: &Delivery, outcome: &Outcome) -> Result<(), QueueError> {
        let config = self.queue.config();
        let keys = self.queue.keys();
        let mut conn = self.queue.connection();
        let id = delivery.entry_id.as_str();
        let attempts = delivery.delivery_count;
        let reason = match outcome {
            Outcome::Done => {
                scripts::ack(&mut conn, keys, &config.group, id, config.delete_on_ack).await?;
                debug!(entry_id = id, "acknowledged");
                return Ok(());
            }
            Outcome::Relinquish => {
                debug!(entry_id = id, "lease lost; leaving the entry to its new owner");
                return Ok(());
            }
            Outcome::HandBack => {
                let how = Release { to: HANDOFF_CONSUMER, idle: HANDOFF_IDLE, count_delta: -1 };
                scripts::release(&mut conn, keys, &config.group, &self.consumer.name, how, &[id.to_owned()]).await?;
                debug!(entry_id = id, "handed back an interrupted job");
                return Ok(());
            }
            Outcome::Postpone { delay, reason } => {
                // As a retry, but the delivery is taken back off the count:
                // an outage delays a job, it never uses up its attempts.
                let delay = (*delay).min(config.min_idle);
                let how = Release { to: &self.consumer.name, idle: config.min_idle - delay, count_delta: -1 };
                scripts::release(&mut conn, keys, &config.group, &self.consumer.name, how, &[id.to_owned()]).await?;
                warn!(entry_id = id, retry_in = ?delay, %reason, "job postponed; not counted as an attempt");
                return Ok(());
            }
            Outcome::Abort(error) => format!("aborted on attempt {attempts}: {error}"),
            Outcome::Retry { error, .. } if attempts >= u64::from(config.max_attempts) => {
                format!("failed {attempts} times, last error: {error}")
            }
            Outcome::Retry { delay, error } => {
                // Keep the entry pending but backdate its idle time, so any
                // consumer's next `XAUTOCLAIM` picks it up after `delay`.
                let delay = (*delay).min(config.min_idle);
                let how = Release { to: &self.consumer.name, idle: config.min_idle - delay, count_delta: 0 };
                scripts::release(&mut conn, keys, &config.group, &self.consumer.name, how, &[id.to_owned()]).await?;
                warn!(entry_id = id, attempt = attempts, retry_in = ?delay, error = %error, "job failed; will retry");
                return Ok(());
            }
        };
        let args = DeadLetterArgs {
            entry_id: id,
            reason: &reason,
            attempts,
            delete: config.delete_on_ack,
            max_len: config.dead_max_len,
        };
        if scripts::dead_letter(&mut conn, keys, &config.group, &self.consumer.name, args).await? {
            warn!(entry_id = id, %reason, "moved entry {id} to the dead-letter stream");
        } else {
            warn!(entry_id = id, "entry {id} was rescued by another consumer; not dead-lettering it");
        }
        Ok(())
    }
}

impl<Res> Acknowledge<Res> for StreamAcker {
    type Error = QueueError;
    type Future = BoxFuture<'static, Result<(), QueueError>>;

    fn ack(&mut self, res: &Result<Res, BoxDynError>, ctx: &ExecutionContext) -> Self::Future {
        let outcome = Outcome::classify(res, self.queue.config().retry_delay);
        let Some(delivery) = ctx.data().get::<Delivery>().cloned() else {
            // Not a task from this backend; nothing to settle.
            return futures::future::ready(Ok(())).boxed();
        };
        self.clone().settle(delivery, outcome).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(5);

    #[test]
    fn ok_is_done() {
        assert_eq!(Outcome::classify(&Ok::<(), BoxDynError>(()), DELAY), Outcome::Done);
    }

    #[test]
    fn abort_is_not_retried() {
        let res: Result<(), BoxDynError> = Err(Box::new(AbortError::new("bad input")));
        assert!(matches!(Outcome::classify(&res, DELAY), Outcome::Abort(_)));
    }

    #[test]
    fn retry_after_sets_the_delay() {
        let err = RetryAfterError::new("busy", Duration::from_secs(1));
        let res: Result<(), BoxDynError> = Err(Box::new(err));
        let Outcome::Retry { delay, .. } = Outcome::classify(&res, DELAY) else {
            panic!("expected a retry");
        };
        assert_eq!(delay, Duration::from_secs(1));
    }

    #[test]
    fn postpone_keeps_its_delay_and_reason() {
        let err = Postpone { reason: "database down".into(), delay: Duration::from_secs(3) };
        let res: Result<(), BoxDynError> = Err(Box::new(err));
        assert_eq!(
            Outcome::classify(&res, DELAY),
            Outcome::Postpone { delay: Duration::from_secs(3), reason: "database down".into() }
        );
    }

    #[test]
    fn other_errors_use_the_default_delay() {
        let res: Result<(), BoxDynError> = Err("boom".into());
        let Outcome::Retry { delay, .. } = Outcome::classify(&res, DELAY) else {
            panic!("expected a retry");
        };
        assert_eq!(delay, DELAY);
    }
}
