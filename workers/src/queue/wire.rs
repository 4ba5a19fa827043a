//! The wire format of the job stream and the dead-letter stream.
//!
//! # Job stream `{prefix}:jobs`
//!
//! One entry per job, with a single field `job` holding the JSON payload:
//!
//! ```text
//! XADD janitor:prod:jobs * job '{"job_id":"6f1c…","op":"session","session_id":"abc","dry_run":false}'
//! ```
//!
//! Any client can enqueue with that one command. Do not add `MAXLEN`: trimming
//! would drop jobs nobody has processed yet. Consumers delete entries after
//! acknowledging them, which keeps the stream bounded.
//!
//! # Dead-letter stream `{prefix}:dead`
//!
//! Fields: `job` (the original payload, empty if it had none), `reason`,
//! `source_id` (the entry id in the job stream), `attempts`, `consumer`, and
//! `fields` (a JSON array of the original field/value pairs, only when the
//! entry had no `job` field).

use redis::streams::StreamId;
use serde::{de::DeserializeOwned, Serialize};

/// The one field of a job entry.
pub const JOB_FIELD: &str = "job";

/// Serialises a payload into the value of the `job` field.
pub fn encode<T: Serialize>(args: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(args)
}

/// Decodes a stream entry into job arguments.
///
/// The error is a human-readable reason, stored in the dead-letter stream.
pub(crate) fn decode<T: DeserializeOwned>(entry: &StreamId) -> Result<T, String> {
    let raw: String = entry.get(JOB_FIELD).ok_or_else(|| format!("entry has no `{JOB_FIELD}` field"))?;
    serde_json::from_str(&raw).map_err(|e| format!("job payload is not valid: {e}"))
}

/// Where a task came from, attached to every task as extension data.
///
/// Handlers can extract it with `Data<Delivery>`; the acknowledger reads it to
/// know which entry to settle and how many times it has been delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stream entry id, e.g. `1718000000000-0`. Also the task's `TaskId`.
    pub entry_id: String,
    /// How many times Redis has delivered this entry, including this time (1-based).
    pub delivery_count: u64,
}

/// One entry of the dead-letter stream, as read back by [`super::StreamQueue::dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Id of the entry in the dead-letter stream.
    pub id: String,
    /// The original payload (empty if the entry had no `job` field).
    pub job: String,
    /// Why the entry was dead-lettered.
    pub reason: String,
    /// The entry id it had in the job stream.
    pub source_id: String,
    /// Deliveries counted when it was dead-lettered.
    pub attempts: u64,
}

impl DeadLetter {
    pub(crate) fn from_entry(entry: &StreamId) -> Self {
        let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
        Self {
            id: entry.id.clone(),
            job: text("job"),
            reason: text("reason"),
            source_id: text("source_id"),
            attempts: text("attempts").parse().unwrap_or(0),
        }
    }
}

/// Builds a `StreamId` by hand; used by unit tests of the decoder.
#[cfg(test)]
fn entry(fields: &[(&str, &str)]) -> StreamId {
    let map: std::collections::HashMap<String, redis::Value> =
        fields.iter().map(|(k, v)| ((*k).to_owned(), redis::Value::BulkString(v.as_bytes().to_vec()))).collect();
    StreamId { id: "1-0".to_owned(), map, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_job_field() {
        let value: serde_json::Value = decode(&entry(&[("job", r#"{"op":"session"}"#)])).unwrap();
        assert_eq!(value["op"], "session");
    }

    #[test]
    fn missing_field_is_a_reason() {
        let err = decode::<serde_json::Value>(&entry(&[("other", "x")])).unwrap_err();
        assert!(err.contains("no `job` field"), "{err}");
    }

    #[test]
    fn bad_json_is_a_reason() {
        let err = decode::<serde_json::Value>(&entry(&[("job", "{nope")])).unwrap_err();
        assert!(err.starts_with("job payload is not valid"), "{err}");
    }
}
