//! Queue settings and the Redis key layout they imply.

use std::time::Duration;

use super::error::QueueError;

/// Settings shared by producers and consumers of one queue.
///
/// Every key lives under `prefix`, so several queues (or test runs) can share
/// one Redis without touching each other's data.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Key prefix, e.g. `janitor:prod`. Keys are `{janitor:prod}:jobs` and
    /// `{janitor:prod}:dead` (see [`hash_tagged`]).
    pub prefix: String,
    /// Consumer group name. All workers of one queue must use the same group.
    pub group: String,
    /// The lease: an entry whose owner has not refreshed it for this long is
    /// considered abandoned and may be rescued by any consumer.
    pub min_idle: Duration,
    /// Deliveries allowed before an entry goes to the dead-letter stream.
    pub max_attempts: u32,
    /// Longest a single `XREADGROUP … BLOCK` waits. Bounds shutdown latency.
    pub block: Duration,
    /// How often to look for abandoned entries with `XAUTOCLAIM`.
    pub rescue_interval: Duration,
    /// How often running jobs refresh their lease. Must be well under `min_idle`.
    pub heartbeat_interval: Duration,
    /// Delay before a failed job becomes eligible for another attempt.
    pub retry_delay: Duration,
    /// Delete entries (`XDEL`) once acknowledged, keeping the stream bounded.
    pub delete_on_ack: bool,
    /// Approximate cap on the dead-letter stream (`XADD … MAXLEN ~`).
    pub dead_max_len: usize,
    /// Response timeout for ordinary (non-blocking) commands.
    pub command_timeout: Duration,
}

impl QueueConfig {
    /// Production defaults under the given prefix.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            group: "workers".to_owned(),
            min_idle: Duration::from_secs(30),
            max_attempts: 5,
            block: Duration::from_secs(2),
            rescue_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            retry_delay: Duration::from_secs(5),
            delete_on_ack: true,
            dead_max_len: 100_000,
            command_timeout: Duration::from_secs(5),
        }
    }

    /// Rejects settings that would break the lease protocol.
    pub fn validate(&self) -> Result<(), QueueError> {
        let fail = |msg: &str| Err(QueueError::InvalidConfig(msg.to_owned()));
        if self.prefix.is_empty() || self.group.is_empty() {
            return fail("prefix and group must not be empty");
        }
        if self.max_attempts == 0 {
            return fail("max_attempts must be at least 1");
        }
        if self.block.as_millis() == 0 {
            // `BLOCK 0` means "wait forever" to Redis, which would hang shutdown.
            return fail("block must be at least 1 ms");
        }
        // Two heartbeats must fit in one lease so a single late tick never
        // lets another consumer steal a running job.
        if self.heartbeat_interval * 2 >= self.min_idle {
            return fail("heartbeat_interval must be less than half of min_idle");
        }
        if self.retry_delay > self.min_idle {
            return fail("retry_delay must not exceed min_idle");
        }
        Ok(())
    }

    /// The Redis keys derived from `prefix`.
    pub fn keys(&self) -> Keys {
        // One hash tag for both, so the scripts that move an entry from one
        // to the other stay in one Redis Cluster slot.
        let base = hash_tagged(&self.prefix);
        Keys { stream: format!("{base}:jobs"), dead: format!("{base}:dead") }
    }
}

/// Redis keys used by one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The job stream: `{prefix}:jobs`.
    pub stream: String,
    /// The dead-letter stream: `{prefix}:dead`.
    pub dead: String,
}

/// Name of the consumer that receives entries handed back at shutdown.
///
/// It never reads; entries parked here carry a large idle time so the next
/// `XAUTOCLAIM` of any live consumer picks them up at once.
pub const HANDOFF_CONSUMER: &str = "handoff";

/// Idle time given to handed-back entries: far past any sane `min_idle`, so the
/// next `XAUTOCLAIM` of any consumer takes them.
pub(crate) const HANDOFF_IDLE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A consumer name unique to this backend instance: `host-pid-random`.
///
/// Uniqueness matters because a consumer's pending entries are its leases; two
/// processes sharing a name would acknowledge and heartbeat each other's jobs.
pub fn unique_consumer_name() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}-{}", host_name(), std::process::id(), &random[..8])
}

/// This machine's host name (`HOSTNAME`, or the kernel's), or `host`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// Whether `key` holds a Redis Cluster hash tag: a `{` followed, later, by
/// a `}` with at least one character between them. Only the first `{` and
/// the first `}` after it count, as in Redis.
pub fn has_hash_tag(key: &str) -> bool {
    key.find('{').and_then(|open| key[open + 1..].find('}')).is_some_and(|length| length > 0)
}

/// `prefix` as the start of cluster-safe keys: itself if it holds a hash
/// tag, otherwise wrapped in one (`janitor` → `{janitor}`). Every key that
/// starts with the result hashes to the same slot.
pub fn hash_tagged(prefix: &str) -> String {
    if has_hash_tag(prefix) {
        prefix.to_owned()
    } else {
        format!("{{{prefix}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QueueConfig::new("janitor:test").validate().unwrap();
    }

    #[test]
    fn heartbeat_must_fit_twice_in_lease() {
        let mut config = QueueConfig::new("p");
        config.heartbeat_interval = Duration::from_secs(15);
        assert!(config.validate().is_err());
    }

    #[test]
    fn keys_follow_prefix() {
        let keys = QueueConfig::new("janitor:t1").keys();
        assert_eq!(keys.stream, "{janitor:t1}:jobs");
        assert_eq!(keys.dead, "{janitor:t1}:dead");
        let keys = QueueConfig::new("{janitor}:session").keys();
        assert_eq!(keys.stream, "{janitor}:session:jobs");
    }

    #[test]
    fn consumer_names_are_unique() {
        assert_ne!(unique_consumer_name(), unique_consumer_name());
    }
}
