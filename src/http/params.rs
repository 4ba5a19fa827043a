//! Query parameters, validated by hand so that every refusal names its field
//! and unknown parameters are refused rather than ignored.

use std::collections::HashMap;
use std::time::Duration;

use janitor_workers::DaysOld;

use super::error::ApiError;

/// The longest `wait=true` may hold a request.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Parses a query string, refusing parameters not in `allowed` and
    /// parameters given twice.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut values = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&key.as_ref()) {
                return Err(ApiError::invalid(
                    &key,
                    format!("unknown query parameter (allowed: {})", allowed.join(", ")),
                ));
            }
            if values.insert(key.to_string(), value.into_owned()).is_some() {
                return Err(ApiError::invalid(&key, "given more than once"));
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A boolean flag: `true`/`false`/`1`/`0`, absent means false.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(_) => Err(ApiError::invalid(key, "must be true or false")),
        }
    }

    pub fn days_old(&self) -> Result<DaysOld, ApiError> {
        let Some(raw) = self.get("days_old") else {
            return Ok(DaysOld::default());
        };
        let message = "must be an integer from 1 to 36500";
        let days: i64 = raw.parse().map_err(|_| ApiError::invalid("days_old", message))?;
        DaysOld::new(days).map_err(|_| ApiError::invalid("days_old", message))
    }

    /// `min_age`, an orphan grace period in seconds (default one hour): at
    /// least `floor` (the `--min-grace` setting), at most 3650 days.
    pub fn min_age(&self, floor: Duration) -> Result<u64, ApiError> {
        let Some(raw) = self.get("min_age") else {
            return Ok(janitor_workers::job::DEFAULT_MIN_AGE.as_secs());
        };
        let max = janitor_workers::job::MAX_DURATION_SECS;
        let message =
            format!("must be a number of seconds from {} (the minimum grace period) to {max}", floor.as_secs());
        let secs: u64 = raw.parse().map_err(|_| ApiError::invalid("min_age", message.clone()))?;
        if secs < floor.as_secs() || janitor_workers::job::check_min_age(secs).is_err() {
            return Err(ApiError::invalid("min_age", message));
        }
        Ok(secs)
    }

    /// `wait=true` with its `timeout` (seconds, default 60, at most 300).
    pub fn wait(&self) -> Result<Option<Duration>, ApiError> {
        let timeout = match self.get("timeout") {
            None => Duration::from_secs(60),
            Some(raw) => {
                let message = format!("must be a number of seconds from 1 to {}", MAX_WAIT.as_secs());
                let secs: u64 = raw.parse().map_err(|_| ApiError::invalid("timeout", message.clone()))?;
                if !(1..=MAX_WAIT.as_secs()).contains(&secs) {
                    return Err(ApiError::invalid("timeout", message));
                }
                Duration::from_secs(secs)
            }
        };
        Ok(self.flag("wait")?.then_some(timeout))
    }

    /// The parameters as a JSON object, for the audit log.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.values).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: ApiError) -> String {
        match err {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn every_refusal_names_its_field() {
        let allowed = ["dry_run", "days_old", "wait", "timeout"];
        assert_eq!(field(Params::parse(Some("dry_run=1&force=1"), &allowed).unwrap_err()), "force");
        assert_eq!(field(Params::parse(Some("dry_run=1&dry_run=0"), &allowed).unwrap_err()), "dry_run");
        for bad in ["days_old=0", "days_old=-3", "days_old=36501", "days_old=ten", "days_old=1.5"] {
            let params = Params::parse(Some(bad), &allowed).unwrap();
            assert_eq!(field(params.days_old().unwrap_err()), "days_old", "{bad}");
        }
        let params = Params::parse(Some("dry_run=maybe&timeout=0&wait=true"), &allowed).unwrap();
        assert_eq!(field(params.flag("dry_run").unwrap_err()), "dry_run");
        assert_eq!(field(params.wait().unwrap_err()), "timeout");
        let ok = Params::parse(Some("days_old=7&wait=true&timeout=5"), &allowed).unwrap();
        assert_eq!(ok.days_old().unwrap().get(), 7);
        assert_eq!(ok.wait().unwrap(), Some(Duration::from_secs(5)));
        assert!(!ok.flag("dry_run").unwrap(), "dry_run defaults to false");
    }

    #[test]
    fn min_age_is_bounded_by_the_grace_floor_and_ten_years() {
        let floor = Duration::from_secs(600);
        for bad in [
            "min_age=0",
            "min_age=599",
            "min_age=-1",
            "min_age=315360001",
            "min_age=1e9",
            "min_age=99999999999999999999",
        ] {
            let params = Params::parse(Some(bad), &["min_age"]).unwrap();
            assert_eq!(field(params.min_age(floor).unwrap_err()), "min_age", "{bad}");
        }
        let params = Params::parse(Some("min_age=600"), &["min_age"]).unwrap();
        assert_eq!(params.min_age(floor).unwrap(), 600);
        assert_eq!(Params::default().min_age(floor).unwrap(), 3600);
    }
}
