//! Errors surfaced at the queue boundary.
//!
//! Transient Redis failures inside the worker loop never reach apalis: the
//! fetcher retries them with backoff, because an error from `poll_next` ends
//! the worker. These variants are what producers and operators see.

/// Errors from enqueueing, configuring or settling jobs.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A Redis command failed (connection, timeout or server error).
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),

    /// The job payload could not be serialised to JSON.
    #[error("could not encode job payload: {0}")]
    Encode(#[from] serde_json::Error),

    /// A setting is out of range; the message names the setting.
    #[error("invalid queue config: {0}")]
    InvalidConfig(String),
}

/// A handler's answer when it stopped early for a shutdown: the entry goes
/// back to the group at once, for any live worker to continue from the job's
/// checkpoint, and the delivery does not count as an attempt.
#[derive(Debug, thiserror::Error)]
#[error("handed back: {0}")]
pub struct HandBack(pub String);

/// A handler's answer when another consumer took its job over (its lease
/// expired): the entry is no longer ours, so it is left untouched.
#[derive(Debug, thiserror::Error)]
#[error("lease lost: {0}")]
pub struct Relinquish(pub String);

/// A handler's answer when its job could not run for a reason outside the
/// job (the database or Redis unreachable or restarting, no connection free):
/// the entry is retried after `delay`, and the delivery does not count as an
/// attempt.
#[derive(Debug, thiserror::Error)]
#[error("postponed: {reason}")]
pub struct Postpone {
    pub reason: String,
    pub delay: std::time::Duration,
}
