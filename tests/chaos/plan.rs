//! The run's seed and length, read from the environment, and the command
//! that replays it. Every random choice of the run comes from RNGs derived
//! from the seed; only the timing of the processes varies between replays.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// The seeded generator every actor draws from (each its own stream).
pub type Rng = ChaCha8Rng;

/// Chaos time when `JANITOR_CHAOS_SECONDS` is not set: two rounds, so the
/// CI run (a debug build on two cores) takes one to two minutes.
const DEFAULT_SECONDS: u64 = 40;
/// The length of one round of load and faults before the queue is drained
/// and the invariants are checked.
const ROUND: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// Total seconds of load and faults, over all rounds.
    pub seconds: u64,
    /// Whether the seed came from the environment (a replay).
    pub replayed: bool,
    /// Oddities the simulator leaves out (`JANITOR_CHAOS_WITHOUT`, comma
    /// separated): an upload kind (`slash`, `alias`, `symlink`, `linked`,
    /// `outside`), `climb` (outside paths with `..`, in runs whose seed is a
    /// multiple of 4), `cp-p` (old modification times), `restore-escape`
    /// (folders swapped for symlinks before a restore), or an invariant
    /// (`I6`: its violations become notes). For looking past a known hole to
    /// the next one; the seed's other choices stay the same.
    pub without: Vec<String>,
}

impl Plan {
    pub fn from_env() -> Self {
        let (seed, replayed) = match std::env::var("JANITOR_CHAOS_SEED") {
            Ok(raw) => (raw.trim().parse().unwrap_or_else(|_| panic!("JANITOR_CHAOS_SEED={raw:?} is not a u64")), true),
            Err(_) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                // Nanoseconds mixed with the pid: two runs started at once differ.
                (now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32), false)
            }
        };
        let seconds = match std::env::var("JANITOR_CHAOS_SECONDS") {
            Ok(raw) => raw.trim().parse().unwrap_or_else(|_| panic!("JANITOR_CHAOS_SECONDS={raw:?} is not a number")),
            Err(_) => DEFAULT_SECONDS,
        };
        let without = std::env::var("JANITOR_CHAOS_WITHOUT")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Self { seed, seconds: seconds.max(1), replayed, without }
    }

    /// Whether the simulator does this oddity in this run.
    pub fn does(&self, oddity: &str) -> bool {
        !self.without.iter().any(|w| w == oddity)
    }

    /// The length of each round: whole rounds of [`ROUND`], the last one
    /// taking the remainder (a run shorter than a round is one round).
    pub fn rounds(&self) -> Vec<Duration> {
        let total = Duration::from_secs(self.seconds);
        let whole = (total.as_secs() / ROUND.as_secs()).max(1);
        let mut rounds = vec![ROUND.min(total); whole as usize];
        let rest = total.saturating_sub(ROUND * whole as u32);
        if rest >= Duration::from_secs(5) {
            rounds.push(rest);
        } else if let Some(last) = rounds.last_mut() {
            *last += rest;
        }
        rounds
    }

    /// The master generator; actors get their own streams from it.
    pub fn rng(&self) -> Rng {
        Rng::seed_from_u64(self.seed)
    }

    /// The commands that replay this run, and a long run with the same seed.
    pub fn replay(&self) -> String {
        let mut database = url::Url::parse(&std::env::var("DATABASE_URL").unwrap_or_default())
            .map(|mut url| {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            })
            .unwrap_or_default();
        if !database.is_empty() {
            database = format!("DATABASE_URL={database} ");
        }
        if !self.without.is_empty() {
            database = format!("{database}JANITOR_CHAOS_WITHOUT={} ", self.without.join(","));
        }
        format!(
            "replay: {database}JANITOR_CHAOS_SEED={seed} JANITOR_CHAOS_SECONDS={secs} cargo test --test chaos -- --nocapture\n\
             longer: {database}JANITOR_CHAOS_SEED={seed} JANITOR_CHAOS_SECONDS=600 cargo test --release --test chaos -- --nocapture",
            seed = self.seed,
            secs = self.seconds,
        )
    }
}

/// A child generator for one actor of one round, drawn from `parent` in a
/// fixed order, so each actor's choices depend only on the seed.
pub fn fork(parent: &mut Rng) -> Rng {
    Rng::seed_from_u64(parent.gen())
}

/// Picks one of `choices` with the given weights.
pub fn pick<T: Copy>(rng: &mut Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut at = rng.gen_range(0..total);
    for (choice, weight) in choices {
        if at < *weight {
            return *choice;
        }
        at -= weight;
    }
    unreachable!("weights add up")
}

/// A pause of `min..max` milliseconds: pacing of the load, not waiting.
pub fn pause(rng: &mut Rng, min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(rng.gen_range(min_ms..=max_ms))
}
