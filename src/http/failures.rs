//! Failed authentication, per remote address: limited, and aggregated in the
//! audit log.
//!
//! Anyone who reaches the port can send requests without a valid token.
//! Each address may fail `auth_failure` times per period (a token bucket,
//! `JANITOR_RATE_LIMITS`, default 30 a minute); past that, every request
//! from it is refused with 429 *before* its token is looked at, so a guess
//! that happens to be right is refused too and brute force learns nothing.
//!
//! The audit log stays bounded: the first failure of an address in a window
//! (a minute) is written as its own row, with its path and parameters; the
//! rest of the window's failures and refusals are counted in memory and
//! written as one `unauthorized_repeated` row when the window ends (or when
//! the server stops). So one address writes at most two rows a minute, and
//! the table of addresses is bounded too: past [`MAX_SOURCES`] addresses,
//! new ones share one entry.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::limits::Limit;

/// The default: 30 failed authentications a minute per address.
pub const DEFAULT_LIMIT: Limit = Limit { count: 30, per: Duration::from_secs(60) };

/// How long the failures of an address are gathered into one audit row.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The most addresses tracked one by one.
pub const MAX_SOURCES: usize = 10_000;

/// Who a failure is charged to: an IPv4 address, or an IPv6 /64 (one host
/// commonly holds a whole /64, so charging single IPv6 addresses would be no
/// limit at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6([u16; 4]),
    /// No address (not served over TCP).
    Unknown,
    /// Every address past [`MAX_SOURCES`].
    Overflow,
}

impl Source {
    pub fn of(remote: Option<SocketAddr>) -> Self {
        Self::of_ip(remote.map(|addr| addr.ip()))
    }

    /// The source of a client address (behind a proxy, the one
    /// [`TrustedProxies`](super::proxies::TrustedProxies) found).
    pub fn of_ip(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) => Source::V4(ip),
            Some(IpAddr::V6(ip)) => {
                let s = ip.segments();
                Source::V6([s[0], s[1], s[2], s[3]])
            }
            None => Source::Unknown,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(ip) => write!(f, "{ip}"),
            Source::V6(s) => write!(f, "{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]),
            Source::Unknown => f.write_str("unknown"),
            Source::Overflow => f.write_str("other addresses"),
        }
    }
}

/// What to do with the audit row of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// The first of its window: write it as usual.
    Write,
    /// Counted; the window's summary row reports it.
    Counted,
}

/// The failures of one address in the current window, written as one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub source: Source,
    /// Failures with 401, not written one by one.
    pub unauthorized: u64,
    /// Requests refused with 429 before their token was looked at.
    pub refused: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub last_method: String,
    pub last_path: String,
}

#[derive(Debug)]
struct Tally {
    tokens: f64,
    updated: Instant,
    /// When the window opened (its first failure, written as a row).
    window: Option<Instant>,
    unauthorized: u64,
    refused: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    last_method: String,
    last_path: String,
}

#[derive(Debug)]
pub struct AuthFailures {
    limit: Limit,
    window: Duration,
    sources: Mutex<HashMap<Source, Tally>>,
}

impl AuthFailures {
    pub fn new(limit: Limit) -> Self {
        Self::with_window(limit, WINDOW)
    }

    pub fn with_window(limit: Limit, window: Duration) -> Self {
        Self { limit, window, sources: Mutex::new(HashMap::new()) }
    }

    fn rate(&self) -> f64 {
        f64::from(self.limit.count) / self.limit.per.as_secs_f64()
    }

    fn refill(&self, tally: &mut Tally, now: Instant) {
        let refill = now.duration_since(tally.updated).as_secs_f64() * self.rate();
        tally.tokens = (tally.tokens + refill).min(f64::from(self.limit.count));
        tally.updated = now;
    }

    /// Whether a request from `source` may be looked at; on refusal, the
    /// seconds until it may, and whether the refusal gets its own audit row.
    pub fn admit(&self, source: Source, method: &str, path: &str) -> Result<(), (u64, Audit)> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let key = match () {
            () if sources.contains_key(&source) => source,
            () if sources.len() >= MAX_SOURCES => Source::Overflow,
            () => return Ok(()), // No failure on record.
        };
        let Some(tally) = sources.get_mut(&key) else {
            return Ok(());
        };
        self.refill(tally, now);
        if tally.tokens >= 1.0 {
            return Ok(());
        }
        let retry = ((1.0 - tally.tokens) / self.rate()).ceil().max(1.0) as u64;
        Err((retry, self.note(tally, now, method, path, |t| t.refused += 1)))
    }

    /// Charges a failed authentication to `source`.
    pub fn failed(&self, source: Source, method: &str, path: &str) -> Audit {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let key = if sources.contains_key(&source) || sources.len() < MAX_SOURCES { source } else { Source::Overflow };
        let tally = sources.entry(key).or_insert_with(|| Tally {
            tokens: f64::from(self.limit.count),
            updated: now,
            window: None,
            unauthorized: 0,
            refused: 0,
            first: None,
            last: None,
            last_method: String::new(),
            last_path: String::new(),
        });
        self.refill(tally, now);
        tally.tokens = (tally.tokens - 1.0).max(0.0);
        self.note(tally, now, method, path, |t| t.unauthorized += 1)
    }

    fn note(&self, tally: &mut Tally, now: Instant, method: &str, path: &str, count: impl FnOnce(&mut Tally)) -> Audit {
        match tally.window {
            Some(opened) if now.duration_since(opened) < self.window => {
                count(tally);
                let at = Utc::now();
                tally.first.get_or_insert(at);
                tally.last = Some(at);
                method.clone_into(&mut tally.last_method);
                path.clone_into(&mut tally.last_path);
                Audit::Counted
            }
            // The summary of an ended window is taken by `drain` before a
            // new window opens, so nothing counted is lost.
            Some(_) if tally.unauthorized + tally.refused > 0 => {
                count(tally);
                Audit::Counted
            }
            _ => {
                tally.window = Some(now);
                Audit::Write
            }
        }
    }

    /// The summaries of the windows that ended (all of them when `all`),
    /// and forgets addresses that have nothing pending and a full bucket.
    pub fn drain(&self, all: bool) -> Vec<Summary> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        sources.retain(|source, tally| {
            let ended = tally.window.is_none_or(|opened| now.duration_since(opened) >= self.window);
            if !(ended || all) {
                return true;
            }
            if tally.unauthorized + tally.refused > 0 {
                out.push(Summary {
                    source: *source,
                    unauthorized: tally.unauthorized,
                    refused: tally.refused,
                    first: tally.first.unwrap_or_else(Utc::now),
                    last: tally.last.unwrap_or_else(Utc::now),
                    last_method: std::mem::take(&mut tally.last_method),
                    last_path: std::mem::take(&mut tally.last_path),
                });
            }
            (tally.unauthorized, tally.refused, tally.first, tally.last) = (0, 0, None, None);
            tally.window = None;
            self.refill(tally, now);
            tally.tokens < f64::from(self.limit.count)
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 4000))
    }

    #[test]
    fn an_address_past_its_limit_is_refused_and_its_repeats_are_counted_not_written() {
        let failures = AuthFailures::new(Limit { count: 3, per: Duration::from_secs(3600) });
        let (a, b) = (Source::of(addr("10.0.0.1")), Source::of(addr("10.0.0.2")));
        assert_eq!(failures.admit(a, "POST", "/x"), Ok(()));
        assert_eq!(failures.failed(a, "POST", "/x"), Audit::Write, "the first failure is written");
        assert_eq!(failures.failed(a, "POST", "/x"), Audit::Counted);
        assert_eq!(failures.failed(a, "GET", "/y"), Audit::Counted);
        let (retry, audit) = failures.admit(a, "GET", "/z").unwrap_err();
        assert!((1..=1200).contains(&retry), "{retry}");
        assert_eq!(audit, Audit::Counted);
        assert_eq!(failures.admit(b, "POST", "/x"), Ok(()), "each address has its own bucket");
        assert_eq!(failures.drain(false), [], "the window has not ended");
        let summary = failures.drain(true);
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert_eq!((summary[0].unauthorized, summary[0].refused), (2, 1));
        assert_eq!((summary[0].last_method.as_str(), summary[0].last_path.as_str()), ("GET", "/z"));
        assert!(failures.admit(a, "GET", "/z").is_err(), "draining does not refill the bucket");
    }

    #[test]
    fn ipv6_addresses_are_charged_per_64_and_the_table_is_bounded() {
        let one = Source::of(addr("2001:db8:1:2::1"));
        assert_eq!(one, Source::of(addr("2001:db8:1:2:ffff::9")));
        assert_ne!(one, Source::of(addr("2001:db8:1:3::1")));
        assert_eq!(Source::of(addr("::ffff:10.0.0.1")), Source::of(addr("10.0.0.1")));
        let failures = AuthFailures::new(Limit { count: 1, per: Duration::from_secs(3600) });
        for i in 0..MAX_SOURCES + 5 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            failures.failed(Source::V4(ip), "GET", "/");
        }
        let sources = failures.sources.lock().unwrap();
        assert_eq!(sources.len(), MAX_SOURCES + 1, "past the bound, new addresses share one entry");
        assert!(sources.contains_key(&Source::Overflow));
    }
}
