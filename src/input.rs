//! Parsers of input from the command line, the environment and the config
//! file: each returns the value or a message that names the problem, which
//! clap prints before it exits with code 2.

use std::time::Duration;

use janitor_workers::{DaysOld, SessionId};

pub(crate) fn parse_session_id(raw: &str) -> Result<SessionId, String> {
    SessionId::parse(raw).map_err(|e| e.to_string())
}

pub(crate) fn parse_days_old(raw: &str) -> Result<DaysOld, String> {
    let days: i64 = raw.parse().map_err(|_| format!("days_old must be an integer from 1 to 36500, got {raw:?}"))?;
    DaysOld::new(days).map_err(|e| e.to_string())
}

pub(crate) fn parse_positive(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        zero if zero.is_zero() => Err("must be longer than zero".to_owned()),
        duration => Ok(duration),
    }
}

/// A queue name (`JANITOR_QUEUE`): printable, without spaces, and one
/// that makes a non-empty hash tag, so every key of the queue is in one
/// Redis Cluster slot (`""` or `"}x"` would tag nothing).
pub(crate) fn parse_queue_name(raw: &str) -> Result<String, String> {
    let printable = !raw.is_empty() && raw.len() <= 100 && raw.chars().all(|c| c.is_ascii_graphic());
    if !printable || !janitor_workers::queue::has_hash_tag(&janitor_workers::queue::hash_tagged(raw)) {
        return Err(format!(
            "the queue name must be 1 to 100 printable ASCII characters without spaces that form a hash tag, got {raw:?}"
        ));
    }
    Ok(raw.to_owned())
}

/// The lease must leave room for heartbeats (a quarter of it) of at least
/// a few hundred milliseconds.
pub(crate) fn parse_lease(raw: &str) -> Result<Duration, String> {
    let lease = parse_duration(raw)?;
    if lease < Duration::from_secs(1) || lease > Duration::from_secs(3600) {
        return Err(format!("lease must be from 1s to 1h, got {raw:?}"));
    }
    Ok(lease)
}

/// An orphan grace period: a duration of at most 3650 days (the floor is
/// the `--min-grace` setting, checked where the settings are known).
pub(crate) fn parse_grace(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    janitor_workers::job::check_min_age(duration.as_secs()).map_err(|e| e.to_string())?;
    Ok(duration)
}

pub(crate) fn parse_retention(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    janitor_workers::job::check_retention(duration.as_secs()).map_err(|e| e.to_string())?;
    Ok(duration)
}

/// A duration: `30m`, `1h`, `2d`, or a bare number of seconds (`60`), as the
/// HTTP API's `timeout=` and `min_age=` take them.
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map(Duration::from_secs).map_err(|_| format!("invalid duration {raw:?} (too large)"));
    }
    humantime::parse_duration(raw).map_err(|e| format!("invalid duration {raw:?} ({e}); use e.g. 60, 30m, 1h, 2d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_make_a_hash_tag() {
        for good in ["janitor", "janitor:eu", "{janitor}:eu", "a-b_c.1"] {
            assert_eq!(parse_queue_name(good).as_deref(), Ok(good));
        }
        for bad in ["", "}x", "has space", "tab\t", "é"] {
            assert!(parse_queue_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("99999999999999999999999").unwrap_err().contains("too large"));
        assert!(parse_duration("-5").is_err());
        assert_eq!(parse_positive("0"), Err("must be longer than zero".to_owned()));
    }
}
