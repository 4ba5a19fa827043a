//! Validated input: what a job is made of, each checked where it is built
//! or decoded (`SessionId::parse`, `DaysOld::new`, the duration checks), so
//! that a job that exists is a valid job, however it arrived. The job
//! payload (`job`), the retention settings (`retention`) and the command
//! line all build on these.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Default retention for `old-results` and `all`.
pub const DEFAULT_DAYS_OLD: u32 = 30;

/// The longest duration a job takes (a grace period, a retention): ten
/// years. Longer ones are typos, and overflow time arithmetic.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// The shortest trash retention: an hour, so that a sweep's quarantine stays
/// reversible for a while after it ends.
pub const MIN_RETENTION_SECS: u64 = 3600;

/// Checks an orphan grace period (the floor of the sweep's setting
/// `min_grace` is checked where the settings are known).
pub fn check_min_age(secs: u64) -> Result<u64, InputError> {
    if secs <= MAX_DURATION_SECS {
        Ok(secs)
    } else {
        Err(InputError::MinAgeOutOfRange(secs))
    }
}

/// Checks a trash retention.
pub fn check_retention(secs: u64) -> Result<u64, InputError> {
    if (MIN_RETENTION_SECS..=MAX_DURATION_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(InputError::RetentionOutOfRange(secs))
    }
}

/// Why a job's input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("session id must not be empty")]
    EmptySessionId,
    #[error("session id is longer than {max} bytes", max = SessionId::MAX_BYTES)]
    SessionIdTooLong,
    #[error("session id must not contain control characters")]
    SessionIdControl,
    #[error("days_old must be an integer from {min} to {max}, got {0}", min = DaysOld::MIN, max = DaysOld::MAX)]
    DaysOldOutOfRange(i64),
    #[error("min_age must be at most 3650 days ({MAX_DURATION_SECS} seconds), got {0} seconds")]
    MinAgeOutOfRange(u64),
    #[error("retention must be from 1 hour to 3650 days ({MIN_RETENTION_SECS} to {MAX_DURATION_SECS} seconds), got {0} seconds")]
    RetentionOutOfRange(u64),
}

/// A session id as the application issues it: 1 to 255 bytes, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, InputError> {
        if raw.is_empty() {
            return Err(InputError::EmptySessionId);
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(InputError::SessionIdTooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(InputError::SessionIdControl);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = InputError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A retention in days, from 1 to 36500 (a hundred years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct DaysOld(u32);

impl DaysOld {
    pub const MIN: i64 = 1;
    pub const MAX: i64 = 36_500;

    pub fn new(days: i64) -> Result<Self, InputError> {
        if (Self::MIN..=Self::MAX).contains(&days) {
            Ok(Self(days as u32))
        } else {
            Err(InputError::DaysOldOutOfRange(days))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for DaysOld {
    fn default() -> Self {
        Self(DEFAULT_DAYS_OLD)
    }
}

impl TryFrom<i64> for DaysOld {
    type Error = InputError;
    fn try_from(days: i64) -> Result<Self, Self::Error> {
        Self::new(days)
    }
}

impl From<DaysOld> for i64 {
    fn from(days: DaysOld) -> Self {
        i64::from(days.0)
    }
}
