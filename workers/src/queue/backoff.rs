//! Capped exponential backoff for retrying transient Redis errors.
//!
//! No jitter: each backend retries on its own schedule, and the cap keeps a
//! Redis outage from turning into a tight reconnect loop.

use std::time::Duration;

/// Capped exponential backoff for transient Redis errors.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }

    pub(crate) fn step(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.step(), Duration::from_millis(100));
        assert_eq!(backoff.step(), Duration::from_millis(200));
        for _ in 0..10 {
            backoff.step();
        }
        assert_eq!(backoff.step(), Backoff::MAX);
        backoff.reset();
        assert_eq!(backoff.step(), Backoff::MIN);
    }
}
