//! A small mutation fuzzer for the inputs a hostile guest, a tenant or a stranger hands
//! ember's hosts, running on stable Rust.
//!
//! Each [`Target`] turns bytes into one call of the code under test and checks that code's
//! invariants (no panic, round trips, limits kept); it answers with an *outcome label* (say
//! `"ok:reactor"` or `"err:TooLarge"`). A campaign starts from the target's seed inputs,
//! mutates them, and keeps every input that reached an outcome not seen before, so the
//! corpus drifts toward the code's less common paths without compiler instrumentation.
//! A campaign is deterministic for a given seed and count: CI runs a fixed one
//! (`tests/campaign.rs`); `ember-fuzz` runs longer ones with fresh seeds.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod mutate;
pub mod targets;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Who hands this input to ember (for reports and docs/security.md).
    pub fed_by: &'static str,
    /// Valid or nearly valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens worth splicing into inputs (keywords, separators).
    pub dictionary: &'static [&'static [u8]],
    /// Runs one input and returns its outcome label; panics when an invariant breaks.
    pub run: fn(&[u8]) -> String,
}

/// How long a campaign runs and where it starts.
#[derive(Clone, Debug)]
pub struct Campaign {
    pub seed: u64,
    /// Stop after this many inputs…
    pub iterations: u64,
    /// …or after this long, whichever comes first.
    pub time_limit: Option<Duration>,
    /// Longest input generated.
    pub max_len: usize,
    /// Where a failing input is written, if anywhere.
    pub failures_dir: Option<PathBuf>,
}

impl Default for Campaign {
    fn default() -> Self {
        Campaign {
            seed: 1,
            iterations: 10_000,
            time_limit: None,
            max_len: 64 * 1024,
            failures_dir: None,
        }
    }
}

/// What a campaign did.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub iterations: u64,
    pub elapsed: Duration,
    /// Inputs kept because they reached a new outcome.
    pub corpus: usize,
    /// How many inputs ended in each outcome.
    pub outcomes: BTreeMap<String, u64>,
    pub failure: Option<Failure>,
}

/// An input that broke an invariant.
#[derive(Debug)]
pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
    pub saved_to: Option<PathBuf>,
}

/// The corpus never grows beyond this; new outcomes then replace random entries.
const MAX_CORPUS: usize = 512;

/// Runs `target` for `campaign`'s count or time, stopping at the first failure.
pub fn run(target: &Target, campaign: &Campaign) -> Report {
    let mut rng = StdRng::seed_from_u64(campaign.seed);
    let mut corpus = (target.seeds)();
    corpus.push(Vec::new());
    let mut outcomes = BTreeMap::new();
    let started = Instant::now();
    let mut failure = None;
    let mut iterations = 0;
    // Seeds run first, unmutated: a broken seed is a broken target.
    let mut pending: Vec<Vec<u8>> = corpus.clone();
    while iterations < campaign.iterations
        && campaign
            .time_limit
            .is_none_or(|limit| started.elapsed() < limit)
    {
        let input = pending.pop().unwrap_or_else(|| {
            let base = &corpus[rng.gen_range(0..corpus.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())];
            mutate::mutate(&mut rng, base, other, target.dictionary, campaign.max_len)
        });
        iterations += 1;
        match panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            Ok(label) => {
                let count = outcomes.entry(label).or_insert(0);
                *count += 1;
                if *count == 1 {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let at = rng.gen_range(0..corpus.len());
                        corpus[at] = input;
                    }
                }
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_owned());
                let saved_to = campaign
                    .failures_dir
                    .as_ref()
                    .and_then(|dir| save(dir, target.name, &input));
                failure = Some(Failure {
                    input,
                    message,
                    saved_to,
                });
                break;
            }
        }
    }
    Report {
        target: target.name,
        seed: campaign.seed,
        iterations,
        elapsed: started.elapsed(),
        corpus: corpus.len(),
        outcomes,
        failure,
    }
}

/// Writes a failing input where `ember-fuzz --replay` can read it back.
fn save(dir: &std::path::Path, target: &str, input: &[u8]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{target}-{:016x}.bin", fnv(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// A stable name for an input (FNV-1a), not a security property.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The outcome label of an error: its variant's name, without the fields.
pub fn error_label(err: &impl std::fmt::Debug) -> String {
    let text = format!("{err:?}");
    let end = text.find([' ', '(', '{']).unwrap_or(text.len());
    format!("err:{}", &text[..end])
}
