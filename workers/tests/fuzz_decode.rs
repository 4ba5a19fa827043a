//! A fuzz test of the queue's payload decoding that runs on stable Rust in
//! CI: proptest feeds arbitrary bytes, arbitrary JSON and mutated valid
//! payloads to the same `serde_json` calls the worker makes.
//!
//! The property: decoding never panics, and whatever it accepts is a valid
//! job (validation lives in the types) that survives encode and decode
//! unchanged.

use janitor_workers::job::{CleanupJob, DaysOld, JobSpec, QueuedJob, SessionId, MAX_DURATION_SECS, MIN_RETENTION_SECS};
use janitor_workers::queue::wire::encode;
use janitor_workers::retention::Retention;
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const CASES: u32 = 2000;

fn check_job(job: &CleanupJob) -> Result<(), TestCaseError> {
    let days_ok = |days: &DaysOld| (DaysOld::MIN..=DaysOld::MAX).contains(&i64::from(days.get()));
    match job {
        CleanupJob::Session { session_id } => {
            let reparsed = SessionId::parse(session_id.as_str());
            prop_assert_eq!(reparsed.as_ref(), Ok(session_id));
        }
        CleanupJob::OldResults { days_old } | CleanupJob::All { days_old, .. } => {
            prop_assert!(days_ok(days_old), "days_old {}", days_old.get());
        }
        CleanupJob::Expired
        | CleanupJob::Orphaned { .. }
        | CleanupJob::PurgeTrash { .. }
        | CleanupJob::Prune { .. } => {}
    }
    // Durations are checked by decoding too: whatever decodes is in range.
    prop_assert_eq!(job.validate(), Ok(()));
    if let CleanupJob::All { min_age_secs, .. } | CleanupJob::Orphaned { min_age_secs } = job {
        prop_assert!(*min_age_secs <= MAX_DURATION_SECS);
    }
    Ok(())
}

/// Validity and round trip of whatever `text` decodes to, as a queued job
/// (what the worker reads) and as a bare job spec.
fn check_decoded(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(queued) = serde_json::from_slice::<QueuedJob>(bytes) {
        check_job(&queued.spec.job)?;
        let text = encode(&queued).unwrap();
        let back: QueuedJob = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&back, &queued);
        prop_assert_eq!(encode(&back).unwrap(), text);
    }
    if let Ok(spec) = std::str::from_utf8(bytes).map(serde_json::from_str::<JobSpec>) {
        let Ok(spec) = spec else { return Ok(()) };
        check_job(&spec.job)?;
        let text = serde_json::to_string(&spec).unwrap();
        let back: JobSpec = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&back, &spec);
        // The record form (`job_results.operation` and `params`) rebuilds it too.
        let rebuilt = JobSpec::from_record(spec.job.operation(), &spec.params(), spec.dry_run).ok();
        prop_assert_eq!(rebuilt.as_ref(), Some(&spec));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generators.

const KEYS: [&str; 10] = [
    "op",
    "session_id",
    "days_old",
    "min_age_secs",
    "retention_secs",
    "keep_jobs_secs",
    "dry_run",
    "job_id",
    "requested_by",
    "job",
];
const OPS: [&str; 8] = ["expired", "session", "old-results", "orphaned", "all", "prune", "Session", "old_results"];

/// Values around the edges the types check.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 30, 3600, 36_500, 36_501, 315_360_000, 315_360_001, i64::MIN, i64::MAX])
            .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![1.0f64, 1.5, -0.0, 1e300, 36_500.0]).prop_map(Value::from),
        prop::sample::select(OPS.to_vec()).prop_map(Value::from),
        "(?s).{0,16}".prop_map(Value::from),
        (254usize..=257).prop_map(|n| Value::from("s".repeat(n))),
        any::<u128>().prop_map(|n| Value::from(Uuid::from_u128(n).to_string())),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![3 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), 1 => ".{0,8}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object of mostly known keys, so that decoding gets past the tag often.
fn job_like() -> impl Strategy<Value = Value> {
    let op = prop_oneof![4 => prop::sample::select(OPS.to_vec()).prop_map(Value::from), 1 => leaf()];
    let field = (prop::sample::select(KEYS[1..].to_vec()), prop_oneof![3 => leaf(), 1 => json()]);
    (op, prop::collection::vec(field, 0..5)).prop_map(|(op, fields)| {
        let mut map = serde_json::Map::new();
        map.insert("op".to_owned(), op);
        for (key, value) in fields {
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    })
}

fn valid_job() -> impl Strategy<Value = QueuedJob> {
    let session = prop_oneof!["\\PC{1,40}", "[a-z]{255}"].prop_filter_map("invalid id", |s| SessionId::parse(&s).ok());
    let days = (DaysOld::MIN..=DaysOld::MAX).prop_map(|d| DaysOld::new(d).unwrap());
    let grace = 0..=MAX_DURATION_SECS;
    let job = prop_oneof![
        Just(CleanupJob::Expired),
        session.prop_map(|session_id| CleanupJob::Session { session_id }),
        days.clone().prop_map(|days_old| CleanupJob::OldResults { days_old }),
        grace.clone().prop_map(|min_age_secs| CleanupJob::Orphaned { min_age_secs }),
        (days, grace).prop_map(|(days_old, min_age_secs)| CleanupJob::All { days_old, min_age_secs }),
        (MIN_RETENTION_SECS..=MAX_DURATION_SECS).prop_map(|retention_secs| CleanupJob::PurgeTrash { retention_secs }),
        (MIN_RETENTION_SECS..=MAX_DURATION_SECS).prop_map(|keep_jobs_secs| CleanupJob::Prune {
            retention: Retention { keep_jobs_secs, ..Retention::default() }
        }),
    ];
    let job_id = prop::option::of(any::<u128>().prop_map(Uuid::from_u128));
    (job_id, job, any::<bool>(), prop::option::of("\\PC{0,20}")).prop_map(|(job_id, job, dry_run, requested_by)| {
        QueuedJob { job_id, spec: JobSpec { job, dry_run, limit: None }, requested_by }
    })
}

/// `job_results.operation` values: the recorded names, the wire names, junk.
fn record_name() -> impl Strategy<Value = String> {
    let names = vec![
        "cleanup_expired_images",
        "cleanup_session",
        "cleanup_old_results",
        "cleanup_orphaned_files",
        "cleanup_all",
        "prune_records",
        "expired",
        "session",
        "old-results",
        "orphaned",
        "all",
    ];
    prop_oneof![4 => prop::sample::select(names).prop_map(str::to_owned), 1 => "(?s).{0,24}"]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let fragment = prop_oneof![
        prop::sample::select(vec![
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "0",
            "-1",
            "null",
            "\\u0000",
            "\\ud800",
            "\u{7f}",
            "\n",
            ",\"op\":\"session\"",
            ",\"days_old\":0",
            ",\"session_id\":\"\"",
            ",\"job_id\":1",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), fragment).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Delete(at, len)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Mutation::Insert(at, fragment) => {
                let at = at % (len + 1);
                bytes.splice(at..at, fragment.iter().copied());
            }
            Mutation::Delete(at, n) if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_bytes_decode_safely(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decoded(&bytes)?;
    }

    #[test]
    fn arbitrary_json_decodes_safely(value in prop_oneof![json(), job_like()]) {
        check_decoded(&serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn mutated_payloads_decode_safely(job in valid_job(), mutations in prop::collection::vec(mutation(), 0..4)) {
        let payload = encode(&job).unwrap();
        if mutations.is_empty() {
            prop_assert_eq!(serde_json::from_str::<QueuedJob>(&payload).ok(), Some(job));
        }
        check_decoded(&mutate(payload.into_bytes(), &mutations))?;
    }

    #[test]
    fn records_rebuild_safely(operation in record_name(), params in prop_oneof![json(), job_like()], dry_run in any::<bool>()) {
        if let Ok(spec) = JobSpec::from_record(&operation, &params, dry_run) {
            prop_assert_eq!(spec.dry_run, dry_run);
            check_decoded(serde_json::to_string(&spec).unwrap().as_bytes())?;
        }
    }
}

/// The properties above only say something about inputs that decode: the
/// generators must reach both outcomes often enough.
#[test]
fn inputs_reach_both_outcomes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut sample = |strategy: &dyn Fn(&mut proptest::test_runner::TestRunner) -> Vec<u8>| {
        (0..1000).filter(|_| serde_json::from_slice::<QueuedJob>(&strategy(&mut runner)).is_ok()).count()
    };
    let job_like = sample(&|r| serde_json::to_vec(&job_like().new_tree(r).unwrap().current()).unwrap());
    let mutated = sample(&|r| {
        let (job, mutations) = (valid_job(), prop::collection::vec(mutation(), 1..4)).new_tree(r).unwrap().current();
        mutate(encode(&job).unwrap().into_bytes(), &mutations)
    });
    assert!((100..=900).contains(&job_like), "{job_like} of 1000 objects decoded");
    assert!((10..=900).contains(&mutated), "{mutated} of 1000 mutated payloads decoded");
}
