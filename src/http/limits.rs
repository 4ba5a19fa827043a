//! Rate limits per token and endpoint class: token buckets, in memory (per
//! `janitor serve` process). `JANITOR_RATE_LIMITS` overrides the defaults,
//! e.g. `all=5/h,orphaned=5/h,session=600/m`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many requests per period a class allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug)]
pub struct RateLimiter {
    limits: HashMap<String, Limit>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The defaults: the heavy sweeps are rare by nature; logouts are frequent;
/// `control` is cancel, retry and discard; `auth_failure` is per remote
/// address, not per token (see [`super::failures`]).
pub const DEFAULT_LIMITS: &str = "all=5/h,orphaned=5/h,expired=60/h,old-results=60/h,session=6000/m,read=6000/m,\
                                  control=600/h,auth_failure=30/m";

impl RateLimiter {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut limits = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (class, rate) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("rate limit {entry:?} is not class=count/period"))?;
            let (count, period) = rate
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("rate limit {entry:?} is not class=count/period"))?;
            let per = match period.trim() {
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                "d" => Duration::from_secs(86_400),
                other => anyhow::bail!("rate limit period {other:?} is not s, m, h or d"),
            };
            let count: u32 = count.trim().parse()?;
            anyhow::ensure!(count > 0, "rate limit {entry:?} allows nothing");
            limits.insert(class.trim().to_owned(), Limit { count, per });
        }
        Ok(Self { limits, buckets: Mutex::new(HashMap::new()) })
    }

    /// The limit of a class, if it has one.
    pub fn limit(&self, class: &str) -> Option<Limit> {
        self.limits.get(class).copied()
    }

    /// Takes one request from the token's bucket for `class`; on refusal,
    /// returns how many seconds until one is available.
    pub fn check(&self, token: &str, class: &str) -> Result<(), u64> {
        let Some(limit) = self.limits.get(class).copied() else {
            return Ok(());
        };
        let rate = f64::from(limit.count) / limit.per.as_secs_f64();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry((token.to_owned(), class.to_owned()))
            .or_insert(Bucket { tokens: f64::from(limit.count), updated: now });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(limit.count));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_limit_per_token() {
        let limiter = RateLimiter::parse("all=2/h").unwrap();
        assert_eq!(limiter.check("a", "all"), Ok(()));
        assert_eq!(limiter.check("a", "all"), Ok(()));
        let retry = limiter.check("a", "all").unwrap_err();
        assert!((1..=1800).contains(&retry), "{retry}");
        assert_eq!(limiter.check("b", "all"), Ok(()), "each token has its own bucket");
        assert_eq!(limiter.check("a", "session"), Ok(()), "classes without a limit pass");
        assert!(RateLimiter::parse("all=5/w").is_err());
        assert!(RateLimiter::parse(DEFAULT_LIMITS).is_ok());
    }
}
